"""Time every masklrp rule kernel against the equivalent PyTorch CPU op, side by side.

Run from the repository root (the C module must be built in place):

    python benchmarks/bench_kernels.py              # BERT-base sizes, T = 128 and 512, 1 thread
    python benchmarks/bench_kernels.py --threads 2  # both libraries on 2 threads
    python benchmarks/bench_kernels.py --quick      # tiny sizes, a few seconds (CI smoke run)

Each row times one ``masklrp.kernels`` call and the torch op that does the same work on the same
float32 data (``torch.from_numpy`` views of the NumPy inputs, built once outside the timed
region). A time is the median of R calls after a warm-up, R chosen so each side of a row takes
about ``budget`` seconds. ``ratio`` = masklrp ms / torch ms: below 1 masklrp is faster, above 1
torch is. GEMM rows also give the achieved GFLOP/s of each side. The masklrp time includes what
every call pays: the argument checks (a finiteness scan over each input) and a fresh, zeroed
output array for the backwards, which accumulate with ``+=``.

``--threads N`` sets both ``masklrp.set_num_threads`` (the OpenBLAS masklrp links) and
``torch.set_num_threads`` (torch's OpenMP/MKL pool), so a GEMM row compares the same core count;
masklrp's element-wise kernels are single-threaded C loops whatever N is. All masklrp calls of a
row run before all torch calls, so one library's spinning worker threads do not steal the
other's cores mid-measurement.

The torch reference for each row (g is the incoming gradient, shapes as in the table):

    linear_forward            F.linear(x, W, b)
    linear_backward           torch.matmul(g, W)
    softmax_forward           torch.softmax(x, -1)
    softmax_backward          torch._softmax_backward_data(g, s, -1, float32)
    matmul_forward qk         torch.baddbmm(0, q, kᵀ, beta=0, alpha=scale): one GEMM, scale folded in
    matmul_forward av         torch.bmm(a, v)
    matmul_backward /uniform  two baddbmm with alpha = scale/2 (g bᵀ and aᵀ g, transposed as needed)
    product_forward           torch.mul(a, b)
    product_backward /uniform torch.addcmul(0, g, b, value=0.5) and the same for a: one pass each
    activation_forward        F.gelu(x) / F.silu(x)
    activation_backward /lrp  gelu: F.gelu(x).div_(x).mul_(g), i.e. g * (gelu(x)/x) = g * Phi(x)
                              (faster in torch 2.13 than torch.special.ndtr(x) * g);
                              silu: torch.sigmoid(x).mul_(g), i.e. g * (silu(x)/x)
    activation_backward /grad torch.ops.aten.gelu_backward(g, x) / silu_backward(g, x)
    layernorm_forward         torch.native_layer_norm(x, [C], w, b, eps): returns y, mean, rstd too
    layernorm_backward /lrp   h = g * w * rstd; h - h.mean(-1, keepdim=True)
    layernorm_backward /grad  autograd.grad of F.layer_norm (graph built once, retain_graph=True)
    rmsnorm_forward           torch.ops.aten._fused_rms_norm(x, [C], w, eps): returns y and rstd
    rmsnorm_backward /lrp     g * w * rstd
    rmsnorm_backward /grad    autograd.grad of F.rms_norm (graph built once, retain_graph=True)
    rope_forward              HF LLaMA: x * cos + rotate_half(x) * sin
    rope_backward             its transpose: g * cos - rotate_half(g * sin)
    relevance                 torch.mul(x, g)

Before timing, each pair is run once and its outputs compared, so a row never times two
different computations.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Run as a script, Python puts benchmarks/ on the path, not the checkout whose in-place build we time.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import masklrp  # noqa: E402
from masklrp import kernels as K  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    """Transformer dimensions a benchmark run uses (BERT-base by default)."""

    tokens: tuple[int, ...] = (128, 512)
    hidden: int = 768
    mlp: int = 3072
    heads: int = 12
    head_dim: int = 64


FULL = Sizes()
QUICK = Sizes(tokens=(16,), hidden=64, mlp=256, heads=2, head_dim=32)


@dataclass(frozen=True)
class Case:
    """One table row: two zero-argument callables doing the same work."""

    name: str
    shape: str
    masklrp: Callable[[], object]
    torch: Callable[[], object]
    flops: float | None = None  # per call, for GEMM rows
    autograd: bool = False  # the torch side needs grad mode (times torch.autograd.grad)


class Inputs:
    """Seeded float32 arrays; ``t(a)`` is the torch tensor sharing a's memory."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def randn(self, *shape: int, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    @staticmethod
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a)


def fmt_shape(*shape: int) -> str:
    return "(" + ",".join(str(d) for d in shape) + ")"


# ----------------------------------------------------------------------------
# One function per kernel family: (sizes, token count, inputs) -> cases


def linear_cases(s: Sizes, T: int, inp: Inputs) -> list[Case]:
    """MLP up-projection hidden -> mlp; backward is the true gradient g W."""
    x, w, b = inp.randn(T, s.hidden), inp.randn(s.mlp, s.hidden, scale=0.02), inp.randn(s.mlp)
    g = inp.randn(T, s.mlp)
    xt, wt, bt, gt = map(inp.t, (x, w, b, g))
    flops = 2.0 * T * s.hidden * s.mlp
    shape = f"{fmt_shape(T, s.hidden)}x{fmt_shape(s.mlp, s.hidden)}"
    return [
        Case("linear_forward", shape, lambda: K.linear_forward(x, w, b),
             lambda: F.linear(xt, wt, bt), flops),
        Case("linear_backward", shape, lambda: K.linear_backward(g, w),
             lambda: torch.matmul(gt, wt), flops),
    ]


def softmax_cases(s: Sizes, T: int, inp: Inputs) -> list[Case]:
    """Attention probabilities over (heads, T, T) scores."""
    x, g = inp.randn(s.heads, T, T, scale=3.0), inp.randn(s.heads, T, T)
    sm = K.softmax_forward(x)
    xt, gt, st = map(inp.t, (x, g, sm))
    shape = fmt_shape(s.heads, T, T)
    return [
        Case("softmax_forward", shape, lambda: K.softmax_forward(x), lambda: torch.softmax(xt, -1)),
        Case("softmax_backward", shape, lambda: K.softmax_backward(g, sm),
             lambda: torch._softmax_backward_data(gt, st, -1, torch.float32)),
    ]


def matmul_cases(s: Sizes, T: int, inp: Inputs) -> list[Case]:
    """Q·Kᵀ (scaled) and A·V per head, uniform rule (AttnLRP Prop. 3.3) for the backward."""
    H, D = s.heads, s.head_dim
    scale = 1.0 / math.sqrt(D)
    q, k, v = inp.randn(H, T, D), inp.randn(H, T, D), inp.randn(H, T, D)
    a = K.softmax_forward(inp.randn(H, T, T))
    g_qk, g_av = inp.randn(H, T, T), inp.randn(H, T, D)
    qt, kt, vt, at, g_qkt, g_avt = map(inp.t, (q, k, v, a, g_qk, g_av))
    zero = torch.zeros(())  # baddbmm's ignored addend (beta = 0): one GEMM with alpha
    flops = 2.0 * H * T * T * D
    qk, av = f"{fmt_shape(H, T, D)}x{fmt_shape(H, T, D)}^T", f"{fmt_shape(H, T, T)}x{fmt_shape(H, T, D)}"
    half = 0.5 * scale
    return [
        Case("matmul_forward qk", qk, lambda: K.matmul_forward(q, k, transpose_b=True, scale=scale),
             lambda: torch.baddbmm(zero, qt, kt.mT, beta=0, alpha=scale), flops),
        Case("matmul_backward qk/uniform", qk,
             lambda: K.matmul_backward(g_qk, q, k, transpose_b=True, scale=scale, rule="uniform"),
             lambda: (torch.baddbmm(zero, g_qkt, kt, beta=0, alpha=half),
                      torch.baddbmm(zero, g_qkt.mT, qt, beta=0, alpha=half)), 2 * flops),
        Case("matmul_forward av", av, lambda: K.matmul_forward(a, v),
             lambda: torch.bmm(at, vt), flops),
        Case("matmul_backward av/uniform", av,
             lambda: K.matmul_backward(g_av, a, v, rule="uniform"),
             lambda: (torch.baddbmm(zero, g_avt, vt.mT, beta=0, alpha=0.5),
                      torch.baddbmm(zero, at.mT, g_avt, beta=0, alpha=0.5)), 2 * flops),
    ]


def product_cases(s: Sizes, T: int, inp: Inputs) -> list[Case]:
    """SwiGLU gating silu(gate) ⊙ up on (T, mlp), uniform rule for the backward."""
    a, b, g = inp.randn(T, s.mlp), inp.randn(T, s.mlp), inp.randn(T, s.mlp)
    at, bt, gt = map(inp.t, (a, b, g))
    zero = torch.zeros(())  # addcmul's broadcast addend: 0.5·g·b in one pass
    shape = fmt_shape(T, s.mlp)
    return [
        Case("product_forward", shape, lambda: K.product_forward(a, b), lambda: torch.mul(at, bt)),
        Case("product_backward uniform", shape, lambda: K.product_backward(g, a, b, rule="uniform"),
             lambda: (torch.addcmul(zero, gt, bt, value=0.5), torch.addcmul(zero, gt, at, value=0.5))),
    ]


def activation_cases(s: Sizes, T: int, inp: Inputs) -> list[Case]:
    """GELU (BERT) and SiLU (LLaMA) on the MLP activation (T, mlp), both backward rules."""
    x, g = inp.randn(T, s.mlp, scale=2.0), inp.randn(T, s.mlp)
    xt, gt = inp.t(x), inp.t(g)
    shape = fmt_shape(T, s.mlp)
    torch_ops = {  # kind -> (forward, lrp backward g·f(x)/x, gradient backward g·f'(x))
        "gelu": (lambda: F.gelu(xt), lambda: F.gelu(xt).div_(xt).mul_(gt),
                 lambda: torch.ops.aten.gelu_backward(gt, xt)),
        "silu": (lambda: F.silu(xt), lambda: torch.sigmoid(xt).mul_(gt),
                 lambda: torch.ops.aten.silu_backward(gt, xt)),
    }
    cases = []
    for kind, (fwd, lrp, grad) in torch_ops.items():
        cases += [
            Case(f"activation_forward {kind}", shape,
                 lambda kind=kind: K.activation_forward(x, kind), fwd),
            Case(f"activation_backward {kind}/lrp", shape,
                 lambda kind=kind: K.activation_backward(g, x, kind, rule="lrp"), lrp),
            Case(f"activation_backward {kind}/gradient", shape,
                 lambda kind=kind: K.activation_backward(g, x, kind, rule="gradient"), grad),
        ]
    return cases


def layernorm_cases(s: Sizes, T: int, inp: Inputs) -> list[Case]:
    """LayerNorm over the hidden state (T, hidden); torch's gradient row times autograd only."""
    C, eps = s.hidden, 1e-12
    x, w, b, g = inp.randn(T, C), 1.0 + inp.randn(C, scale=0.1), inp.randn(C, scale=0.1), inp.randn(T, C)
    _, mean, rstd = K.layernorm_forward(x, w, b, eps)
    xt, wt, bt, gt, rstdt = map(inp.t, (x, w, b, g, rstd))
    x_leaf = xt.clone().requires_grad_()
    y_graph = F.layer_norm(x_leaf, (C,), wt, bt, eps)

    def torch_lrp() -> torch.Tensor:
        h = (gt * wt).mul_(rstdt.unsqueeze(-1))
        return h.sub_(h.mean(-1, keepdim=True))

    shape = fmt_shape(T, C)
    return [
        Case("layernorm_forward", shape, lambda: K.layernorm_forward(x, w, b, eps),
             lambda: torch.native_layer_norm(xt, [C], wt, bt, eps)),
        Case("layernorm_backward lrp", shape,
             lambda: K.layernorm_backward(g, x, w, mean, rstd, rule="lrp"), torch_lrp),
        Case("layernorm_backward gradient", shape,
             lambda: K.layernorm_backward(g, x, w, mean, rstd, rule="gradient"),
             lambda: torch.autograd.grad(y_graph, x_leaf, gt, retain_graph=True), autograd=True),
    ]


def rmsnorm_cases(s: Sizes, T: int, inp: Inputs) -> list[Case]:
    """RMSNorm (LLaMA) over (T, hidden); torch's gradient row times autograd only."""
    C, eps = s.hidden, 1e-6
    x, w, g = inp.randn(T, C), 1.0 + inp.randn(C, scale=0.1), inp.randn(T, C)
    _, rstd = K.rmsnorm_forward(x, w, eps)
    xt, wt, gt, rstdt = map(inp.t, (x, w, g, rstd))
    x_leaf = xt.clone().requires_grad_()
    y_graph = F.rms_norm(x_leaf, (C,), wt, eps)
    shape = fmt_shape(T, C)
    return [
        Case("rmsnorm_forward", shape, lambda: K.rmsnorm_forward(x, w, eps),  # both return y, rstd
             lambda: torch.ops.aten._fused_rms_norm(xt, [C], wt, eps)),
        Case("rmsnorm_backward lrp", shape, lambda: K.rmsnorm_backward(g, x, w, rstd, rule="lrp"),
             lambda: (gt * wt).mul_(rstdt.unsqueeze(-1))),
        Case("rmsnorm_backward gradient", shape,
             lambda: K.rmsnorm_backward(g, x, w, rstd, rule="gradient"),
             lambda: torch.autograd.grad(y_graph, x_leaf, gt, retain_graph=True), autograd=True),
    ]


def rope_cases(s: Sizes, T: int, inp: Inputs) -> list[Case]:
    """Rotary embedding of per-head queries (heads, T, head_dim), HF LLaMA convention."""
    H, D = s.heads, s.head_dim
    inv_freq = 1.0 / 10000.0 ** (np.arange(0, D, 2, dtype=np.float64) / D)
    angles = np.outer(np.arange(T), inv_freq)
    emb = np.concatenate([angles, angles], axis=-1)
    cos, sin = np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)
    x, g = inp.randn(H, T, D), inp.randn(H, T, D)
    xt, gt, cost, sint = map(inp.t, (x, g, cos, sin))

    def rotate_half(y: torch.Tensor) -> torch.Tensor:
        return torch.cat((-y[..., D // 2:], y[..., : D // 2]), dim=-1)

    shape = fmt_shape(H, T, D)
    return [
        Case("rope_forward", shape, lambda: K.rope_forward(x, cos, sin),
             lambda: xt * cost + rotate_half(xt) * sint),
        Case("rope_backward", shape, lambda: K.rope_backward(g, cos, sin),
             lambda: gt * cost - rotate_half(gt * sint)),
    ]


def relevance_cases(s: Sizes, T: int, inp: Inputs) -> list[Case]:
    """R = x ⊙ g on the hidden state (T, hidden), e.g. at the embedding output."""
    x, g = inp.randn(T, s.hidden), inp.randn(T, s.hidden)
    xt, gt = inp.t(x), inp.t(g)
    return [Case("relevance", fmt_shape(T, s.hidden), lambda: K.relevance(x, g),
                 lambda: torch.mul(xt, gt))]


FAMILIES = (linear_cases, softmax_cases, matmul_cases, product_cases, activation_cases,
            layernorm_cases, rmsnorm_cases, rope_cases, relevance_cases)


def build_cases(sizes: Sizes) -> list[Case]:
    inp = Inputs(seed=0)
    return [case for T in sizes.tokens for family in FAMILIES for case in family(sizes, T, inp)]


# ----------------------------------------------------------------------------
# Checking and timing


def as_arrays(result: object) -> list[np.ndarray]:
    """Flattens a kernel or torch result (array, tensor or tuple of them) to NumPy arrays."""
    items = result if isinstance(result, (tuple, list)) else (result,)
    return [x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in items]


def check_case(case: Case) -> None:
    """Raises AssertionError if the two sides of a row do not compute the same numbers."""
    with torch.enable_grad() if case.autograd else torch.no_grad():
        ours, theirs = as_arrays(case.masklrp()), as_arrays(case.torch())
    assert len(ours) == len(theirs), f"{case.name}: {len(ours)} outputs vs torch's {len(theirs)}"
    for i, (a, b) in enumerate(zip(ours, theirs)):
        b = b.reshape(a.shape)  # torch keeps a trailing 1 on mean / rstd
        tol = 1e-3 * max(1.0, float(np.abs(a).max()))
        err = np.abs(a.astype(np.float64) - b).max()
        assert err <= tol, f"{case.name} {case.shape}: output {i} differs from torch by {err:.3g}"


def time_call(fn: Callable[[], object], budget_s: float, min_repeats: int, warmup: int = 3) -> float:
    """Median seconds per call of fn, over enough calls to fill about budget_s after warm-up."""
    first = []
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        first.append(time.perf_counter() - t0)
    repeats = max(min_repeats, min(10_000, int(budget_s / max(min(first), 1e-7))))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


@dataclass(frozen=True)
class Result:
    case: Case
    ours_s: float
    torch_s: float

    @property
    def ratio(self) -> float:
        return self.ours_s / self.torch_s


def run_case(case: Case, budget_s: float, min_repeats: int) -> Result:
    ours = time_call(case.masklrp, budget_s, min_repeats)
    with torch.enable_grad() if case.autograd else torch.no_grad():
        theirs = time_call(case.torch, budget_s, min_repeats)
    return Result(case, ours, theirs)


# ----------------------------------------------------------------------------
# Report

COLUMNS = (("kernel", "<34"), ("shape", "<28"), ("masklrp ms", ">11"), ("torch ms", ">10"),
           ("ratio", ">7"), ("masklrp GF/s", ">13"), ("torch GF/s", ">11"))


def table_row(cells: Sequence[str]) -> str:
    return " ".join(f"{c:{spec}}" for c, (_, spec) in zip(cells, COLUMNS))


def format_result(r: Result) -> str:
    def gflops(seconds: float) -> str:
        return f"{r.case.flops / seconds / 1e9:.1f}" if r.case.flops else ""

    return table_row([r.case.name, r.case.shape, f"{r.ours_s * 1e3:.4f}", f"{r.torch_s * 1e3:.4f}",
                      f"{r.ratio:.2f}", gflops(r.ours_s), gflops(r.torch_s)])


def geomean(xs: Sequence[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def print_header(args: argparse.Namespace, sizes: Sizes) -> None:
    print(f"masklrp {masklrp.__version__}: threads {masklrp.get_num_threads()}, "
          f"BLAS {masklrp.blas_info()['config']}")
    print(f"torch {torch.__version__}: threads {torch.get_num_threads()}, numpy {np.__version__}, "
          f"python {platform.python_version()}, {platform.machine()} with {os.cpu_count()} CPUs")
    print(f"sizes: tokens {sizes.tokens}, hidden {sizes.hidden}, mlp {sizes.mlp}, heads "
          f"{sizes.heads} x {sizes.head_dim}; float32; median of repeats, ~{args.budget:g} s per side")
    load = os.getloadavg()[0]
    print(f"load average (1 min) at start: {load:.2f} (near 0 on an idle machine; other busy "
          "processes steal cores and skew the ratios)")
    print("ratio = masklrp ms / torch ms (< 1: masklrp faster)\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for both masklrp's OpenBLAS and torch (default 1: the most "
                             "stable numbers on a small machine)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and few repeats: a smoke run of a few seconds")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed calls per side of a row (default 0.15, quick 0.005)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.budget is None:
        args.budget = 0.005 if args.quick else 0.15
    min_repeats = 3 if args.quick else 5

    masklrp.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    print_header(args, sizes)

    cases = build_cases(sizes)
    for case in cases:
        check_case(case)
    print(table_row([name for name, _ in COLUMNS]))
    print("-" * len(table_row([""] * len(COLUMNS))))
    results = []
    for case in cases:
        results.append(run_case(case, args.budget, min_repeats))
        print(format_result(results[-1]), flush=True)

    gemm = [r.ratio for r in results if r.case.flops]
    other = [r.ratio for r in results if not r.case.flops]
    print(f"\ngeometric mean ratio: {geomean([r.ratio for r in results]):.2f} over {len(results)} "
          f"rows (GEMM {geomean(gemm):.2f} over {len(gemm)}, "
          f"element-wise/row-wise {geomean(other):.2f} over {len(other)})")


if __name__ == "__main__":
    main()
