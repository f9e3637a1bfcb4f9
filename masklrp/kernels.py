"""The C rule kernels, one forward/backward pair per row of DESIGN.md §2.

Every function here is implemented in ``csrc/rules.c`` and exposed unchanged by
``csrc/module.c``: there is no Python between the caller and the C loop, and the
GIL is released while the kernel runs.

Conventions shared by all kernels
---------------------------------
* Arrays are ``numpy.ndarray`` of dtype ``float32``. Any other dtype (float64,
  float16, int, object) or a non-array (list, scalar, torch tensor) raises
  ``TypeError`` naming the argument: we never cast silently, because a hidden
  float64→float32 cast changes the numbers the caller is checking.
* Non-contiguous, misaligned or byte-swapped float32 arrays are **accepted by
  copying** into an aligned C-contiguous buffer; the result is identical to
  passing a contiguous array.
* Wrong ndim, a mismatched shape, an empty array, NaN or ±Inf where not allowed
  raise ``ValueError`` naming the argument and what was expected. The only
  place a non-finite value is allowed is ``-inf`` in the scores given to
  :func:`softmax_forward` (the additive attention mask).
* Every call returns new arrays; inputs are never written.
* ``g`` is the quantity flowing backward (the "modified gradient" of DESIGN.md
  §2). Relevance of a tensor is ``R = x * g`` (:func:`relevance`).
* Backward functions take ``g`` first, then what the forward used or cached.

Rules
-----
``rule`` selects the backward of the relevance stream or the true gradient:

* single-operand ops (activations, LayerNorm, RMSNorm): ``"lrp"`` (the AttnLRP
  rule, which CP-LRP shares) or ``"gradient"`` (the true Jacobian);
* two-operand products (``matmul_backward``, ``product_backward``):
  ``"uniform"`` (AttnLRP Prop. 3.3: half the true gradient to each operand),
  ``"cp"`` (CP-LRP: the first operand is held constant, so it receives nothing
  and the second receives the full true gradient) or ``"gradient"``.

Linear maps, the softmax (AttnLRP Prop. 3.1), the ``1/sqrt(d)`` scale and RoPE
use the true gradient in both streams, so they have no ``rule`` argument.
Residual adds and dropout are the identity in both streams: they need no kernel.

Functions (shapes: ``...`` is any number of leading dimensions)
----------------------------------------------------------------
linear_forward(x, weight, bias=None, *, weight_layout="out_in", threads=1) -> z
    x (..., IN); weight (OUT, IN) as nn.Linear stores it, or (IN, OUT) with
    ``weight_layout="in_out"`` (GPT-2 Conv1D); bias (OUT,) or None.
    z (..., OUT) = x Wᵀ + b, one cblas_sgemm, cut into one piece per thread
    when ``threads`` > 1, as the engine cuts its GEMMs (the other kernels run
    on the calling thread: masklrp's OpenBLAS is always single-threaded).
linear_backward(g, weight, *, weight_layout="out_in") -> g_x
    g (..., OUT) -> g_x (..., IN) = g W. True gradient; the bias absorbs b ⊙ g.

softmax_forward(x) -> s
    Softmax over the last axis, computed with a double-precision sum.
    ``-inf`` entries (masked scores) get probability exactly 0; a row that is
    entirely ``-inf`` (a query with no visible key) returns all zeros instead of
    NaN. NaN and ``+inf`` raise ValueError.
softmax_backward(g, s) -> g_x
    g_x = s ⊙ (g − Σ s ⊙ g) over the last axis (AttnLRP Prop. 3.1). s must be
    finite; use :func:`relevance` on the *unmasked* scores.

matmul_forward(a, b, *, transpose_b=False, scale=1.0) -> out
    a (..., M, K); b (..., K, N), or (..., N, K) with ``transpose_b=True``
    (Q·Kᵀ); identical leading dims (no broadcasting).
    out (..., M, N) = scale · a b  (or scale · a bᵀ).
matmul_backward(g, a, b, *, transpose_b=False, scale=1.0, rule="uniform") -> (g_a, g_b)
    The true gradients scale·g bᵀ and scale·aᵀ g (transposed as needed), times
    the rule's share: uniform ½/½, cp 0/1, gradient 1/1.

product_forward(a, b) -> a ⊙ b
    Element-wise product of two activations (SwiGLU ``silu(gate) ⊙ up``).
    a and b have the same shape.
product_backward(g, a, b, *, rule="uniform") -> (g_a, g_b)
    g_a = share_a · g ⊙ b, g_b = share_b · g ⊙ a, shares as for matmul.

activation_forward(x, kind) -> y
    kind in {"gelu", "gelu_tanh", "silu", "tanh", "relu"}; "gelu" is the erf
    form (BERT), "gelu_tanh" the tanh approximation (GPT-2 "gelu_new").
activation_backward(g, x, kind, *, rule="lrp") -> g_x
    "lrp": identity rule g_x = g ⊙ f(x)/x, where f(x)/x is evaluated in closed
    form (Φ(x) for GELU, σ(x) for SiLU, step for ReLU) and for tanh by its
    series below |x| < 1e-4, so x = 0 gives the exact limit f'(0)
    (GELU ½, SiLU ½, tanh 1, ReLU 0 as torch defines relu'(0)).
    "gradient": g_x = g ⊙ f'(x).

layernorm_forward(x, weight, bias, eps) -> (y, mean, rstd)
    x (..., C); weight (C,); bias (C,) or None; eps > 0.
    y = weight ⊙ (x − μ)·rstd + bias with rstd = 1/sqrt(var + eps), biased
    variance, statistics in double. mean and rstd have shape x.shape[:-1].
layernorm_backward(g, x, weight, mean, rstd, *, rule="lrp") -> g_x
    "lrp" (identity on the scale, σ held constant): h = weight ⊙ g · rstd,
    g_x = h − mean(h). "gradient": the full LayerNorm Jacobian.

rmsnorm_forward(x, weight, eps) -> (y, rstd)
    y = weight ⊙ x · rstd, rstd = 1/sqrt(mean(x²) + eps); rstd x.shape[:-1].
rmsnorm_backward(g, x, weight, rstd, *, rule="lrp") -> g_x
    "lrp" (rstd held constant): g_x = weight ⊙ rstd ⊙ g. "gradient": the full
    RMSNorm Jacobian.

rope_forward(x, cos, sin) -> y
    x (..., T, D) with D even; cos, sin (T, D) as HF's rotary embedding returns
    them (one row per position). y = x ⊙ cos + rotate_half(x) ⊙ sin, with
    rotate_half(x) = concat(−x[D/2:], x[:D/2]) as in HF LLaMA.
rope_backward(g, cos, sin) -> g_x
    The transpose of the rotation (true gradient; cos and sin are constants).

relevance(x, g) -> R
    R = x ⊙ g, same shape; both finite.

head_counts(attentions, queries, keys, arcs, n_relations) -> dict
    The head statistics of DESIGN.md §3.1 (csrc/headstats.c) from given attention
    probabilities (B, L, H, T, T): for each query token (``queries``, bool (B, T))
    ``k*`` is the most attended candidate key (``keys``, bool (B, T); ties go to
    the lowest index). Returns int64 ``positional`` (L, H, 2T−1), counting offset
    ``k* − q`` at index ``k* − q + T − 1``, and ``syntactic`` (L, H, n_relations),
    +1 for each arc (int64 rows ``(sequence, query, head_lo, head_hi, relation)``,
    sorted by sequence) whose query's ``k*`` lies in ``[head_lo, head_hi)``.
    ``Model.head_stats`` counts the same inside the forward, without the taps.
"""
from ._core import (  # noqa: F401  (the option names come from the C tables)
    ACTIVATIONS,
    PRODUCT_RULES,
    SINGLE_OPERAND_RULES,
    WEIGHT_LAYOUTS,
    activation_backward,
    activation_forward,
    head_counts,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
    matmul_backward,
    matmul_forward,
    product_backward,
    product_forward,
    relevance,
    rmsnorm_backward,
    rmsnorm_forward,
    rope_backward,
    rope_forward,
    softmax_backward,
    softmax_forward,
)

__all__ = [
    "activation_backward",
    "activation_forward",
    "head_counts",
    "layernorm_backward",
    "layernorm_forward",
    "linear_backward",
    "linear_forward",
    "matmul_backward",
    "matmul_forward",
    "product_backward",
    "product_forward",
    "relevance",
    "rmsnorm_backward",
    "rmsnorm_forward",
    "rope_backward",
    "rope_forward",
    "softmax_backward",
    "softmax_forward",
]
