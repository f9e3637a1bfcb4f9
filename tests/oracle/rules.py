"""PyTorch reference for every rule of DESIGN.md §2, written the way LXT writes them.

Each function is a forward pass in torch whose *autograd* backward is the rule:
``vjp(f(x), [x], g)`` is the modified gradient ``g_x`` of DESIGN.md §2. Rules
that are not the true gradient are made with ``.detach()`` or a small
``torch.autograd.Function``, never by reusing a formula from ``csrc/``. Call
everything in float64: the oracle must be the more accurate side.

``rule`` follows ``masklrp/kernels.py``: ``"lrp"`` / ``"gradient"`` for single
operand ops, ``"uniform"`` / ``"cp"`` / ``"gradient"`` for two-operand products.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# f'(0) per activation, as torch's autograd defines it (relu'(0) = 0).
SLOPE_AT_ZERO = {"gelu": 0.5, "gelu_tanh": 0.5, "silu": 0.5, "tanh": 1.0, "relu": 0.0}

_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "tanh": torch.tanh,
    "relu": F.relu,
}


def vjp(out: torch.Tensor, inputs: list, g: torch.Tensor) -> list:
    """``g`` pulled back through ``out``; an input the rule detached gets zeros."""
    return list(torch.autograd.grad(out, inputs, g, allow_unused=True, materialize_grads=True))


class _HalfGrad(torch.autograd.Function):
    """Identity forward; backward passes half the gradient (AttnLRP Prop. 3.3)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return 0.5 * g


def _operands(a: torch.Tensor, b: torch.Tensor, rule: str) -> tuple:
    """The two operands of a product as the rule sees them (DESIGN.md §2, bilinear rows).

    uniform: each operand gets ½ of its true gradient (AttnLRP Prop. 3.3);
    cp: the first operand is a constant, the second gets the full gradient (CP-LRP);
    gradient: both get the true gradient.
    """
    if rule == "uniform":
        return _HalfGrad.apply(a), _HalfGrad.apply(b)
    if rule == "cp":
        return a.detach(), b
    if rule == "gradient":
        return a, b
    raise ValueError(f"unknown product rule {rule!r}")


def linear(x, weight, bias=None, weight_layout="out_in"):
    """z = x Wᵀ + b, true gradient (DESIGN.md §2, linear / Conv1D row)."""
    w = weight if weight_layout == "out_in" else weight.T
    return F.linear(x, w, bias)


def softmax(x):
    """s = softmax(x) over the last axis; its true gradient is AttnLRP Prop. 3.1."""
    return torch.softmax(x, dim=-1)


def matmul(a, b, transpose_b=False, scale=1.0, rule="gradient"):
    """scale · a b (or a bᵀ) with the bilinear rule (AttnLRP Prop. 3.3 / CP-LRP)."""
    a, b = _operands(a, b, rule)
    return scale * (a @ (b.transpose(-1, -2) if transpose_b else b))


def product(a, b, rule="gradient"):
    """a ⊙ b with the bilinear rule (DESIGN.md §2, element-wise product row)."""
    a, b = _operands(a, b, rule)
    return a * b


def activation(x, kind, rule="gradient"):
    """y = f(x); lrp: identity rule y = x · (f(x)/x).detach() (DESIGN.md §2, GELU… row).

    The ratio is taken in float64 with its limit f'(0) at x = 0 exactly; in float64
    f(x)/x is accurate for every nonzero float32 x, so no threshold is needed.
    """
    f = _ACTIVATIONS[kind]
    if rule == "gradient":
        return f(x)
    if rule != "lrp":
        raise ValueError(f"unknown activation rule {rule!r}")
    x64 = x.detach().double()
    zero = x64 == 0
    ratio = torch.where(zero, SLOPE_AT_ZERO[kind], f(x64) / torch.where(zero, 1.0, x64))
    return x * ratio.to(x.dtype)


def layernorm(x, weight, bias=None, eps=1e-5, rule="gradient"):
    """(y, mean, rstd); lrp holds σ constant: std ``.detach()``ed (DESIGN.md §2, LayerNorm row)."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    if rule == "lrp":
        rstd = rstd.detach()
    elif rule != "gradient":
        raise ValueError(f"unknown layernorm rule {rule!r}")
    y = weight * (x - mean) * rstd
    if bias is not None:
        y = y + bias
    return y, mean.squeeze(-1), rstd.squeeze(-1)


def rmsnorm(x, weight, eps=1e-6, rule="gradient"):
    """(y, rstd); lrp holds rstd constant (DESIGN.md §2, RMSNorm row)."""
    rstd = torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + eps)
    if rule == "lrp":
        rstd = rstd.detach()
    elif rule != "gradient":
        raise ValueError(f"unknown rmsnorm rule {rule!r}")
    return weight * x * rstd, rstd.squeeze(-1)


def softcap(x, cap, rule="gradient"):
    """y = cap · tanh(x / cap); lrp: identity rule y = x · (y/x).detach(), ratio 1 at x = 0."""
    if rule == "gradient":
        return cap * torch.tanh(x / cap)
    if rule != "lrp":
        raise ValueError(f"unknown softcap rule {rule!r}")
    x64 = x.detach().double()
    zero = x64 == 0
    ratio = torch.where(zero, 1.0, cap * torch.tanh(x64 / cap) / torch.where(zero, 1.0, x64))
    return x * ratio.to(x.dtype)


def rotate_half(x):
    """HF LLaMA: concat(−x[D/2:], x[:D/2])."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope(x, cos, sin):
    """y = x ⊙ cos + rotate_half(x) ⊙ sin (HF apply_rotary_pos_emb); true gradient."""
    return x * cos + rotate_half(x) * sin


def relevance(x, g):
    """R = x ⊙ g (DESIGN.md §2, notation)."""
    return x * g
