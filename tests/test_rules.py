"""Every C rule kernel against the PyTorch oracle (tests/oracle/rules.py), plus known answers.

The oracle writes each rule of DESIGN.md §2 as an autograd forward (LXT style) and
runs it in float64 on the same float32 inputs, so it is the more accurate side:
``g_x = vjp(rule_forward(x), x, g)``.

Tolerance: ``max|c − oracle| ≤ 1e-5 · max|oracle|`` over each output (or over a
stated scale, for sums). The C side rounds every input and output to float32
(unit roundoff 6e-8) and accumulates in double or in BLAS sgemm (float32, error
~ √K · 6e-8 relative for the sizes here, K ≤ 33). 1e-5 leaves room for that and
for the float32 statistics (mean, rstd) a backward is handed, yet is far below
any rule error (a wrong share is 50 %, a missing term is O(1)). Where an answer
is exact in floating point (a limit at x = 0, a zero share) it is checked exactly.

Inputs are float32 from a numpy Generator seeded by the test's own name, so every
case is deterministic and independent of test order.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from masklrp import kernels
from oracle import rules as O

RTOL = 1e-5

SHAPES = [(1,), (7,), (33,), (1, 1), (4, 7), (2, 3, 33), (2, 2, 3, 7)]
EDGE_SHAPES = [(33,), (4, 33), (2, 3, 7)]
TINY = (1e-30, 3e-20, 1e-6, 9.9e-5, 1.01e-4, 1e-3)  # around tanh's series switch at 1e-4 too
ACTIVATIONS = kernels.ACTIVATIONS
UNARY_RULES = kernels.SINGLE_OPERAND_RULES
PRODUCT_RULES = kernels.PRODUCT_RULES
SHARES = {"uniform": (0.5, 0.5), "cp": (0.0, 1.0), "gradient": (1.0, 1.0)}  # (a, b) share of the true gradient
# (lead, M, K, N) for matmul; (lead, IN, OUT) for linear; (lead, T, D) for RoPE.
MATMUL_SHAPES = [((), 1, 1, 1), ((), 7, 33, 5), ((3,), 1, 7, 33), ((2, 3), 5, 1, 7), ((2, 1, 3), 33, 7, 4)]
LINEAR_SHAPES = [((), 1, 1), ((), 7, 33), ((1,), 33, 7), ((3,), 7, 1), ((2, 3), 33, 5), ((2, 2, 3), 7, 7)]
ROPE_SHAPES = [((), 1, 2), ((), 7, 8), ((3,), 33, 2), ((2, 3), 7, 34)]
MATMUL_IDS = [f"lead{'x'.join(map(str, lead)) or '0'}-M{m}K{k}N{n}" for lead, m, k, n in MATMUL_SHAPES]
LINEAR_IDS = [f"lead{'x'.join(map(str, lead)) or '0'}-in{i}out{o}" for lead, i, o in LINEAR_SHAPES]
ROPE_IDS = [f"lead{'x'.join(map(str, lead)) or '0'}-T{t}D{d}" for lead, t, d in ROPE_SHAPES]


# ----------------------------------------------------------------------------
# helpers


@pytest.fixture
def rng(request) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


def sid(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


def rand(rng, shape, lo=-2.0, hi=2.0) -> np.ndarray:
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def sign(rng, shape) -> np.ndarray:
    return rng.choice([-1.0, 1.0], size=shape)


def where(flat_index: int, shape: tuple) -> tuple:
    return tuple(int(i) for i in np.unravel_index(flat_index, shape))


def check_tensor(name: str, got, want, scale: float | None = None) -> None:
    """llm.c's check_tensor: max|got − want| ≤ RTOL · scale (default max|want|), else say where."""
    got = np.asarray(got, dtype=np.float64)
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape}, oracle {want.shape}"
    bad = ~np.isfinite(got)
    if bad.any():
        i = where(int(np.argmax(bad)), got.shape)
        raise AssertionError(f"{name}: {int(bad.sum())} non-finite values, first at {i}: "
                             f"c = {got[i]:.9g}, oracle = {want[i]:.9g}")
    diff = np.abs(got - want)
    ref = float(np.abs(want).max()) if scale is None else float(scale)
    i = where(int(np.argmax(diff)), diff.shape)
    assert diff[i] <= RTOL * ref, (f"{name}: max|c - oracle| = {diff[i]:.3e} > {RTOL:g} * {ref:.3e} "
                                   f"at index {i}: c = {got[i]:.9g}, oracle = {want[i]:.9g}")


def t64(arr: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(np.asarray(arr, dtype=np.float64), requires_grad=grad)


def oracle(f, *arrays):
    """The oracle's forward on float32 arrays (None passes through), as float64 numpy."""
    out = f(*(None if a is None else t64(a) for a in arrays))
    return tuple(o.detach().numpy() for o in out) if isinstance(out, tuple) else out.detach().numpy()


def oracle_grad(f, g: np.ndarray, *arrays) -> list:
    """vjp of the oracle's forward (its first output) with upstream g, w.r.t. every array."""
    ts = [t64(a, grad=True) for a in arrays]
    out = f(*ts)
    out = out[0] if isinstance(out, tuple) else out
    return [t.numpy() for t in O.vjp(out, ts, t64(g))]


def inputs(regimes, shapes=SHAPES, edge_shapes=EDGE_SHAPES) -> list:
    """(regime, shape) params: the first regime named on every shape, the others on a few."""
    first, *edges = regimes
    return ([pytest.param(first, s, id=f"{first}-{sid(s)}") for s in shapes]
            + [pytest.param(r, s, id=f"{r}-{sid(s)}") for r in edges for s in edge_shapes])


# ----------------------------------------------------------------------------
# input regimes


def _masked_scores(rng, shape):
    """Half the scores -inf (an additive mask), one random key per row kept visible."""
    x = rng.uniform(-5, 5, shape)
    mask = rng.random(shape) < 0.5
    keep = rng.integers(shape[-1], size=shape[:-1] + (1,))
    np.put_along_axis(mask, keep, False, axis=-1)
    x[mask] = -np.inf
    return x


SCORES = {
    "uniform": lambda rng, shape: rng.uniform(-5, 5, shape),
    # two clusters 2e4 apart: exp overflows unless the row max is subtracted
    "large": lambda rng, shape: sign(rng, shape) * 1e4 + rng.uniform(-8, 8, shape),
    "masked": _masked_scores,
}

ACT_INPUTS = {
    "uniform": lambda rng, shape: rng.uniform(-4, 4, shape),
    # +0.0 and -0.0 among ordinary values: f(x)/x must be its limit, not 0/0
    "zeros": lambda rng, shape: np.where(rng.random(shape) < 0.4, sign(rng, shape) * 0.0,
                                         rng.uniform(-4, 4, shape)),
    "tiny": lambda rng, shape: sign(rng, shape) * rng.choice(TINY, size=shape),
    "large": lambda rng, shape: sign(rng, shape) * 10.0 ** rng.uniform(1, 4, shape),
}

NORM_INPUTS = {
    "uniform": lambda rng, shape: rng.uniform(-2, 2, shape),
    # a large common offset: only statistics taken in double keep (x - mean) accurate
    "offset": lambda rng, shape: 1e3 + rng.uniform(-1, 1, shape),
    "constant": lambda rng, shape: np.broadcast_to(rng.uniform(-2, 2, shape[:-1] + (1,)), shape),
    "zero": lambda rng, shape: np.zeros(shape),
}


def make(regimes: dict, regime: str, rng, shape) -> np.ndarray:
    return np.ascontiguousarray(regimes[regime](rng, shape), dtype=np.float32)


def cos_sin(rng, t: int, d: int, style: str) -> tuple:
    """HF rotary tables (angles pos · θ_i, halves repeated) or arbitrary (T, D) values."""
    if style == "hf":
        inv_freq = 10000.0 ** (-np.arange(0, d, 2) / d)
        ang = np.arange(t)[:, None] * inv_freq[None, :]
        ang = np.concatenate([ang, ang], axis=-1)
        return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    return rand(rng, (t, d)), rand(rng, (t, d))


# ----------------------------------------------------------------------------
# linear


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("layout", ["out_in", "in_out"])
@pytest.mark.parametrize("lead,n_in,n_out", LINEAR_SHAPES, ids=LINEAR_IDS)
def test_linear_forward(rng, lead, n_in, n_out, layout, with_bias):
    x = rand(rng, lead + (n_in,))
    w = rand(rng, (n_out, n_in) if layout == "out_in" else (n_in, n_out))
    b = rand(rng, (n_out,)) if with_bias else None
    got = kernels.linear_forward(x, w, b, weight_layout=layout)
    check_tensor("z", got, oracle(lambda x, w, b: O.linear(x, w, b, layout), x, w, b))


@pytest.mark.parametrize("layout", ["out_in", "in_out"])
@pytest.mark.parametrize("lead,n_in,n_out", LINEAR_SHAPES, ids=LINEAR_IDS)
def test_linear_backward(rng, lead, n_in, n_out, layout):
    x = rand(rng, lead + (n_in,))
    w = rand(rng, (n_out, n_in) if layout == "out_in" else (n_in, n_out))
    g = rand(rng, lead + (n_out,))
    (want,) = oracle_grad(lambda x: O.linear(x, t64(w), None, layout), g, x)
    check_tensor("g_x", kernels.linear_backward(g, w, weight_layout=layout), want)


# ----------------------------------------------------------------------------
# softmax (AttnLRP Prop. 3.1)


@pytest.mark.parametrize("regime,shape", inputs(SCORES))
def test_softmax_forward(rng, regime, shape):
    x = make(SCORES, regime, rng, shape)
    s = kernels.softmax_forward(x)
    check_tensor("s", s, oracle(O.softmax, x))
    assert np.all(s[np.isneginf(x)] == 0.0), "a -inf score must get probability exactly 0"


@pytest.mark.parametrize("regime,shape", inputs(SCORES))
def test_softmax_backward(rng, regime, shape):
    x = make(SCORES, regime, rng, shape)
    g = rand(rng, shape)
    s = oracle(O.softmax, x).astype(np.float32)
    (want,) = oracle_grad(O.softmax, g, x)
    check_tensor("g_x", kernels.softmax_backward(g, s), want)


def test_softmax_fully_masked_row_is_zero(rng):
    """A query that sees no key: C returns zeros where torch returns NaN (kernels.py)."""
    x = make(SCORES, "masked", rng, (3, 7))
    x[1] = -np.inf
    s = kernels.softmax_forward(x)
    assert np.array_equal(s[1], np.zeros(7, np.float32)), f"fully masked row: got {s[1]}"
    check_tensor("s (visible rows)", s[[0, 2]], oracle(O.softmax, x[[0, 2]]))
    one_row = kernels.softmax_forward(np.full(5, -np.inf, np.float32))
    assert np.array_equal(one_row, np.zeros(5, np.float32)), f"1-D fully masked: got {one_row}"


@pytest.mark.parametrize("regime,shape", inputs(("uniform", "masked")))
def test_softmax_relevance_is_prop_3_1(rng, regime, shape):
    """R_x = x ⊙ (R_s − s ΣR_s) with R_s = s ⊙ g; the additive mask is not a receiver."""
    mask = np.isneginf(make(SCORES, regime, rng, shape))  # no masked key for "uniform"
    x = rand(rng, shape, -5.0, 5.0)  # the unmasked scores
    g = rand(rng, shape)
    s = kernels.softmax_forward(np.where(mask, np.float32(-np.inf), x))
    r_x = kernels.relevance(x, kernels.softmax_backward(g, s))
    r_s = kernels.relevance(s, g).astype(np.float64)
    want = x * (r_s - s * r_s.sum(axis=-1, keepdims=True))
    check_tensor("R_x", r_x, want)


# ----------------------------------------------------------------------------
# matmul and element-wise product (AttnLRP Prop. 3.3, CP-LRP)


def _matmul_args(rng, lead, m, k, n, transpose_b):
    a = rand(rng, lead + (m, k))
    b = rand(rng, lead + ((n, k) if transpose_b else (k, n)))
    return a, b, rand(rng, lead + (m, n))


@pytest.mark.parametrize("scale", [1.0, -0.125])
@pytest.mark.parametrize("transpose_b", [False, True], ids=["plain", "transpose_b"])
@pytest.mark.parametrize("lead,m,k,n", MATMUL_SHAPES, ids=MATMUL_IDS)
def test_matmul_forward(rng, lead, m, k, n, transpose_b, scale):
    a, b, _ = _matmul_args(rng, lead, m, k, n, transpose_b)
    got = kernels.matmul_forward(a, b, transpose_b=transpose_b, scale=scale)
    check_tensor("out", got, oracle(lambda a, b: O.matmul(a, b, transpose_b, scale), a, b))


@pytest.mark.parametrize("rule", PRODUCT_RULES)
@pytest.mark.parametrize("scale", [1.0, -0.125])
@pytest.mark.parametrize("transpose_b", [False, True], ids=["plain", "transpose_b"])
@pytest.mark.parametrize("lead,m,k,n", MATMUL_SHAPES, ids=MATMUL_IDS)
def test_matmul_backward(rng, lead, m, k, n, transpose_b, scale, rule):
    a, b, g = _matmul_args(rng, lead, m, k, n, transpose_b)
    want_a, want_b = oracle_grad(lambda a, b: O.matmul(a, b, transpose_b, scale, rule), g, a, b)
    got_a, got_b = kernels.matmul_backward(g, a, b, transpose_b=transpose_b, scale=scale, rule=rule)
    check_tensor("g_a", got_a, want_a)
    check_tensor("g_b", got_b, want_b)


@pytest.mark.parametrize("shape", SHAPES, ids=sid)
def test_product_forward(rng, shape):
    a, b = rand(rng, shape), rand(rng, shape)
    check_tensor("a*b", kernels.product_forward(a, b), oracle(O.product, a, b))


@pytest.mark.parametrize("rule", PRODUCT_RULES)
@pytest.mark.parametrize("shape", SHAPES, ids=sid)
def test_product_backward(rng, shape, rule):
    a, b, g = rand(rng, shape), rand(rng, shape), rand(rng, shape)
    want_a, want_b = oracle_grad(lambda a, b: O.product(a, b, rule), g, a, b)
    got_a, got_b = kernels.product_backward(g, a, b, rule=rule)
    check_tensor("g_a", got_a, want_a)
    check_tensor("g_b", got_b, want_b)


def _matmul_op(transpose_b):
    def op(rng, rule):
        a, b, g = _matmul_args(rng, (2, 3), 5, 7, 4, transpose_b)
        out = kernels.matmul_forward(a, b, transpose_b=transpose_b, scale=0.5)
        return a, b, g, out, kernels.matmul_backward(g, a, b, transpose_b=transpose_b, scale=0.5, rule=rule)
    return op


def _product_op(rng, rule):
    a, b, g = (rand(rng, (3, 33)) for _ in range(3))
    return a, b, g, kernels.product_forward(a, b), kernels.product_backward(g, a, b, rule=rule)


@pytest.mark.parametrize("rule", PRODUCT_RULES)
@pytest.mark.parametrize("op", [_matmul_op(False), _matmul_op(True), _product_op],
                         ids=["matmul", "matmul_transpose_b", "product"])
def test_product_rules_split_relevance(rng, op, rule):
    """ΣR_a = share_a·ΣR_out and ΣR_b = share_b·ΣR_out, R = x ⊙ g.

    Exact identity: Σ a ⊙ (g bᵀ) = Σ b ⊙ (aᵀ g) = Σ (a b) ⊙ g (and a ⊙ g ⊙ b for the
    element-wise product), so uniform splits 50/50 and cp gives the second operand all.
    """
    a, b, g, out, (g_a, g_b) = op(rng, rule)
    r_out = kernels.relevance(out, g).astype(np.float64)
    size = np.abs(r_out).sum()
    share_a, share_b = SHARES[rule]
    check_tensor("sum R_a", kernels.relevance(a, g_a).astype(np.float64).sum(), share_a * r_out.sum(), size)
    check_tensor("sum R_b", kernels.relevance(b, g_b).astype(np.float64).sum(), share_b * r_out.sum(), size)
    if share_a == 0.0:
        assert not g_a.any(), f"cp: the first operand must receive exactly 0, max |g_a| = {np.abs(g_a).max()}"


# ----------------------------------------------------------------------------
# activations (identity rule)


@pytest.mark.parametrize("regime,shape", inputs(ACT_INPUTS))
@pytest.mark.parametrize("kind", ACTIVATIONS)
def test_activation_forward(rng, kind, regime, shape):
    x = make(ACT_INPUTS, regime, rng, shape)
    check_tensor("y", kernels.activation_forward(x, kind), oracle(lambda x: O.activation(x, kind), x))


@pytest.mark.parametrize("regime,shape", inputs(ACT_INPUTS))
@pytest.mark.parametrize("rule", UNARY_RULES)
@pytest.mark.parametrize("kind", ACTIVATIONS)
def test_activation_backward(rng, kind, rule, regime, shape):
    x = make(ACT_INPUTS, regime, rng, shape)
    g = rand(rng, shape)
    (want,) = oracle_grad(lambda x: O.activation(x, kind, rule), g, x)
    check_tensor("g_x", kernels.activation_backward(g, x, kind, rule=rule), want)


@pytest.mark.parametrize("kind", ACTIVATIONS)
def test_identity_rule_at_zero_is_the_limit(rng, kind):
    """x = ±0 gives f'(0)·g exactly: Φ(0) = σ(0) = ½, tanh's series 1, relu'(0) = 0."""
    x = np.where(rng.random((2, 5)) < 0.5, -0.0, 0.0).astype(np.float32)
    g = rand(rng, (2, 5))
    got = kernels.activation_backward(g, x, kind, rule="lrp")
    want = (g * np.float32(O.SLOPE_AT_ZERO[kind])).astype(np.float32)
    assert np.array_equal(got, want), f"{kind} at x=0: got {got.ravel()}, want {want.ravel()}"


# ----------------------------------------------------------------------------
# LayerNorm and RMSNorm


RMS_INPUTS = {**NORM_INPUTS, "large": lambda rng, shape: 1e3 * rng.uniform(-1, 1, shape)}


@pytest.mark.parametrize("eps", [1e-5, 0.5])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("regime,shape", inputs(NORM_INPUTS))
def test_layernorm_forward(rng, regime, shape, with_bias, eps):
    x = make(NORM_INPUTS, regime, rng, shape)
    w = rand(rng, shape[-1:])
    b = rand(rng, shape[-1:]) if with_bias else None
    got = kernels.layernorm_forward(x, w, b, eps)
    want = oracle(lambda x, w, b: O.layernorm(x, w, b, eps), x, w, b)
    for name, c, o in zip(("y", "mean", "rstd"), got, want):
        check_tensor(name, c, o)


@pytest.mark.parametrize("regime,shape", inputs(("uniform", "constant")))
@pytest.mark.parametrize("rule", UNARY_RULES)
def test_layernorm_backward(rng, rule, regime, shape):
    """Statistics are the oracle's, rounded to float32 as a caller would hand them over.

    No large-offset rows here: a float32 mean of such a row is off by half an ulp of
    the offset, which the full Jacobian amplifies beyond the tolerance by design of
    the API, not by an error of the kernel.
    """
    x = make(NORM_INPUTS, regime, rng, shape)
    w, g = rand(rng, shape[-1:]), rand(rng, shape)
    _, mean, rstd = (o.astype(np.float32) for o in oracle(lambda x, w: O.layernorm(x, w), x, w))
    (want,) = oracle_grad(lambda x: O.layernorm(x, t64(w), None, 1e-5, rule), g, x)
    check_tensor("g_x", kernels.layernorm_backward(g, x, w, mean, rstd, rule=rule), want)


@pytest.mark.parametrize("shape", [(33,), (4, 7), (2, 3, 33)], ids=sid)
def test_layernorm_lrp_conserves_through_the_normalised_part(rng, shape):
    """Per row Σ x ⊙ g_x = Σ (y − β) ⊙ g_y for the lrp rule.

    g_x = h − mean(h) with h = γ ⊙ g_y · rstd; Σ(h − mean h) = 0 gives
    Σ x (h − mean h) = Σ (x − μ) h = Σ γ (x − μ) rstd g_y = Σ (y − β) g_y.
    The rows have a nonzero mean, so dropping the centring of h breaks it.
    """
    x = rand(rng, shape, -1.0, 3.0)
    w, b, g = rand(rng, shape[-1:]), rand(rng, shape[-1:]), rand(rng, shape)
    y, mean, rstd = kernels.layernorm_forward(x, w, b, 1e-5)
    g_x = kernels.layernorm_backward(g, x, w, mean, rstd, rule="lrp")
    r_x = kernels.relevance(x, g_x).astype(np.float64)
    r_y = (y.astype(np.float64) - b) * g
    size = max(np.abs(r_x).sum(axis=-1).max(), np.abs(r_y).sum(axis=-1).max())
    check_tensor("row sums of x*g_x", r_x.sum(axis=-1), r_y.sum(axis=-1), size)


@pytest.mark.parametrize("eps", [1e-6, 0.5])
@pytest.mark.parametrize("regime,shape", inputs(RMS_INPUTS))
def test_rmsnorm_forward(rng, regime, shape, eps):
    x = make(RMS_INPUTS, regime, rng, shape)
    w = rand(rng, shape[-1:])
    got = kernels.rmsnorm_forward(x, w, eps)
    for name, c, o in zip(("y", "rstd"), got, oracle(lambda x, w: O.rmsnorm(x, w, eps), x, w)):
        check_tensor(name, c, o)


# One channel under the full Jacobian is left out: there g_x = w·g·eps/(x² + eps)^1.5, two
# terms cancelling to eps/x² of their size, so the float32 rstd a caller hands over alone
# puts a relative error of 6e-8·x²/eps (~1e-1 here) on any kernel's answer.
RMS_BACKWARD = [pytest.param(rule, *p.values, id=f"{rule}-{p.id}")
                for rule in UNARY_RULES for p in inputs(RMS_INPUTS)
                if not (rule == "gradient" and p.values[1][-1] == 1)]


@pytest.mark.parametrize("rule,regime,shape", RMS_BACKWARD)
def test_rmsnorm_backward(rng, rule, regime, shape):
    x = make(RMS_INPUTS, regime, rng, shape)
    w, g = rand(rng, shape[-1:]), rand(rng, shape)
    _, rstd = oracle(lambda x, w: O.rmsnorm(x, w), x, w)
    (want,) = oracle_grad(lambda x: O.rmsnorm(x, t64(w), 1e-6, rule), g, x)
    check_tensor("g_x", kernels.rmsnorm_backward(g, x, w, rstd.astype(np.float32), rule=rule), want)


# ----------------------------------------------------------------------------
# RoPE


ROPE_STYLES = ["hf", "general"]


@pytest.mark.parametrize("style", ROPE_STYLES)
@pytest.mark.parametrize("lead,t,d", ROPE_SHAPES, ids=ROPE_IDS)
def test_rope_forward(rng, lead, t, d, style):
    x = rand(rng, lead + (t, d))
    cos, sin = cos_sin(rng, t, d, style)
    check_tensor("y", kernels.rope_forward(x, cos, sin), oracle(O.rope, x, cos, sin))


@pytest.mark.parametrize("style", ROPE_STYLES)
@pytest.mark.parametrize("lead,t,d", ROPE_SHAPES, ids=ROPE_IDS)
def test_rope_backward(rng, lead, t, d, style):
    x, g = rand(rng, lead + (t, d)), rand(rng, lead + (t, d))
    cos, sin = cos_sin(rng, t, d, style)
    (want,) = oracle_grad(lambda x: O.rope(x, t64(cos), t64(sin)), g, x)
    check_tensor("g_x", kernels.rope_backward(g, cos, sin), want)


@pytest.mark.parametrize("style", ROPE_STYLES)
@pytest.mark.parametrize("lead,t,d", ROPE_SHAPES, ids=ROPE_IDS)
def test_rope_backward_is_the_transpose(rng, lead, t, d, style):
    """⟨rope_forward(x), g⟩ = ⟨x, rope_backward(g)⟩ for any cos, sin tables."""
    x, g = rand(rng, lead + (t, d)), rand(rng, lead + (t, d))
    cos, sin = cos_sin(rng, t, d, style)
    lhs = kernels.rope_forward(x, cos, sin).astype(np.float64) * g
    rhs = x.astype(np.float64) * kernels.rope_backward(g, cos, sin)
    check_tensor("<x, rope_backward(g)>", rhs.sum(), lhs.sum(), np.abs(lhs).sum())


# ----------------------------------------------------------------------------
# relevance


@pytest.mark.parametrize("shape", SHAPES, ids=sid)
def test_relevance(rng, shape):
    x, g = rand(rng, shape), rand(rng, shape)
    check_tensor("R", kernels.relevance(x, g), oracle(O.relevance, x, g))
