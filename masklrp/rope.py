"""RoPE inverse frequencies from a ``config.json``, in NumPy, as transformers 5.23 computes them.

:func:`rope_parameters` returns the ``rope.inv_freq`` weight of :mod:`masklrp.spec` (``(D/2,)``
float32, scaling applied) and the attention scaling that multiplies cos and sin. It reimplements
the initialisers of ``transformers/modeling_rope_utils.py`` (and ``LlamaRotaryEmbedding.
compute_default_rope_parameters``) step by step in float32, in the same order, so that the
results agree with HF's to within one ulp:

* every float32 operation torch does is done here in float32 in the same order, with Python
  scalars rounded to float32 first as torch's CPU kernels do; ``x / tensor`` is computed as
  torch's ``Tensor.__rtruediv__`` does it: ``reciprocal(tensor) * x`` (two roundings);
* ``base ** e`` is rounded correctly here (computed in float64), while torch's vectorised
  ``powf`` (SLEEF, 1-ulp accurate) is not always: about one element in 150 differs by 1 ulp.
  That is the only source of difference; the tests measure it.

Supported ``rope_type`` values:

``default``   ``1 / theta ** (2i / D)``.
``linear``    default divided by ``factor``.
``dynamic``   NTK-aware scaling. HF recomputes the frequencies on the fly only for sequences
              longer than ``max_position_embeddings``; at or below that length they equal
              ``default`` (the init-time base correction ``(factor·L/L − (factor−1))`` is 1).
              The exporter caps ``max_positions`` there, so the static table is exact.
``llama3``    Llama 3.1 wavelength-dependent smoothing.
``yarn``      YaRN ramp between interpolation and extrapolation, plus its attention factor
              (``attention_factor``, else ``0.1·ln(factor)+1`` or the ``mscale`` ratio).
``longrope``  the ``short_factor`` frequencies and LongRoPE's attention factor; HF switches to
              the ``long_factor`` frequencies (:func:`rope_long_inv_freq`) for a sequence
              longer than ``original_max_position_embeddings``. Without a ``long_factor``
              the exporter caps ``max_positions`` there (see :func:`max_rope_positions`).

``partial_rotary_factor`` (Phi-3 only, ``partial=True``): frequencies for the first
``int(head_dim · factor)`` values of a head, as HF's Phi-3 computes them; elsewhere, and for
anything else (``proportional``, multimodal ``mrope_section``, per-layer-type RoPE),
``NotImplementedError`` names it.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ._checks import INT32_MAX, integer, number

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn", "longrope")
DEFAULT_THETA = 10_000.0

_f32 = np.float32


def rope_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The standardised RoPE parameter dict of a model config (a ``config.json`` dict).

    Accepts transformers 5's ``rope_parameters`` and the older top-level ``rope_theta`` +
    ``rope_scaling`` (``type`` or ``rope_type``), as ``RotaryEmbeddingConfigMixin`` does:
    ``rope_scaling`` wins over ``rope_parameters``, a missing ``rope_theta`` is 10000, and for
    llama3 / yarn / longrope a missing ``original_max_position_embeddings`` is
    ``max_position_embeddings`` (a top-level ``original_max_position_embeddings`` wins, as
    for Phi-3).
    """
    params = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if not isinstance(params, Mapping):
        raise TypeError(f"config rope_parameters / rope_scaling must be an object, got {params!r}")
    params = dict(params)
    labels = config.get("layer_types") or ()
    nested = [key for key in params if key in labels]
    if nested:
        raise NotImplementedError(
            f"per-layer-type RoPE parameters (rope_parameters keyed by {nested}) are not supported")
    params.setdefault("rope_type", params.get("type", "default"))
    params.setdefault("rope_theta", config.get("rope_theta", DEFAULT_THETA))
    if params.get("rope_theta") is None:
        params["rope_theta"] = DEFAULT_THETA
    if config.get("partial_rotary_factor") is not None:
        params.setdefault("partial_rotary_factor", config["partial_rotary_factor"])
    if params["rope_type"] in ("llama3", "yarn", "longrope"):
        if config.get("original_max_position_embeddings") is not None:
            params["original_max_position_embeddings"] = config["original_max_position_embeddings"]
        else:
            params.setdefault("original_max_position_embeddings", config["max_position_embeddings"])
    return params


def max_rope_positions(config: Mapping[str, Any]) -> int:
    """Longest sequence for which the static table of :func:`rope_parameters` is what HF uses."""
    params = rope_config(config)
    limit = int(config["max_position_embeddings"])
    if params["rope_type"] == "longrope" and params.get("long_factor") is None:
        limit = min(limit, int(params["original_max_position_embeddings"]))
    return limit


def rotary_dim(config: Mapping[str, Any], head_dim: int, partial: bool = False) -> int:
    """How many values of each head RoPE rotates: ``int(head_dim · partial_rotary_factor)``.

    ``partial=False`` (every family but Phi-3) refuses a factor other than 1.
    """
    factor = rope_config(config).get("partial_rotary_factor", 1.0)
    if factor is None or float(factor) == 1.0:
        return int(head_dim)
    if not partial:
        raise NotImplementedError(
            f"partial_rotary_factor={factor} is not supported (RoPE must rotate the whole head)")
    number(factor, "rope_parameters.partial_rotary_factor", positive=True)
    dim = int(head_dim * factor)
    if not 0 < dim <= head_dim or dim % 2:
        raise ValueError(f"partial_rotary_factor={factor} rotates {dim} of head_dim {head_dim} "
                         "values: RoPE needs an even count in [2, head_dim]")
    return dim


def rope_long_inv_freq(config: Mapping[str, Any], head_dim: int) -> np.ndarray | None:
    """LongRoPE's ``long_factor`` frequencies (like :func:`rope_parameters`' inv_freq), or None
    when the config has none (not longrope, or no ``long_factor``)."""
    params = rope_config(config)
    if params["rope_type"] != "longrope" or params.get("long_factor") is None:
        return None
    _check_numbers(params)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # checked just below
        inv_freq = _longrope_inv_freq(params, "long_factor", int(head_dim))
    if not np.isfinite(inv_freq).all():
        raise ValueError(f"RoPE long_factor gives inverse frequencies beyond float32: {inv_freq}")
    return inv_freq


def rope_parameters(config: Mapping[str, Any], head_dim: int) -> tuple[np.ndarray, float]:
    """``(inv_freq, attention_scaling)`` for a LLaMA-family ``config.json`` dict.

    ``inv_freq`` is float32, shape ``(head_dim // 2,)``; ``attention_scaling`` multiplies cos and
    sin (1.0 except for yarn and longrope). ``head_dim`` is the rotated part of a head
    (:func:`rotary_dim`) when RoPE is partial.
    """
    params = rope_config(config)
    rope_type = params["rope_type"]
    if rope_type not in ROPE_TYPES:
        raise NotImplementedError(
            f"rope_type {rope_type!r} is not supported (supported: {', '.join(ROPE_TYPES)})")
    if params.get("mrope_section"):
        raise NotImplementedError(
            "multimodal RoPE (rope_parameters.mrope_section) is not supported")
    head_dim = int(head_dim)
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    _check_numbers(params)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # checked just below
        inv_freq, scaling = _INIT[rope_type](params, config, head_dim)
    if not np.isfinite(inv_freq).all():
        raise ValueError(f"RoPE parameters give inverse frequencies beyond float32: {inv_freq}")
    return inv_freq, scaling


# Parameters that divide, scale a logarithm or an exponent: each must be a finite number > 0.
_POSITIVE = ("rope_theta", "factor", "low_freq_factor", "high_freq_factor", "attention_factor",
             "beta_fast", "beta_slow", "mscale", "mscale_all_dim")


def _check_numbers(params: Mapping[str, Any]) -> None:
    """ValueError / TypeError naming the first RoPE parameter the initialisers cannot use."""
    for key in _POSITIVE:
        if params.get(key) is not None:
            number(params[key], f"rope_parameters.{key}", positive=True, float32=True)
    if params["rope_type"] != "default" and params.get("factor") is not None and params["factor"] < 1:
        # transformers' own validation: scaling stretches the context, never shrinks it
        raise ValueError(f"rope_parameters.factor must be >= 1, got {params['factor']}")
    if "original_max_position_embeddings" in params:
        integer(params["original_max_position_embeddings"],
                "rope_parameters.original_max_position_embeddings", 1, maximum=INT32_MAX)
    if params["rope_type"] == "llama3":
        for key in ("factor", "low_freq_factor", "high_freq_factor"):
            if params.get(key) is None:
                raise ValueError(f"rope_parameters.{key} is required for rope_type 'llama3'")
        if not params["high_freq_factor"] > params["low_freq_factor"]:
            raise ValueError(f"rope_parameters.high_freq_factor ({params['high_freq_factor']}) must "
                             f"exceed low_freq_factor ({params['low_freq_factor']})")
    if params["rope_type"] in ("linear", "dynamic") and params.get("factor") is None:
        raise ValueError(f"rope_parameters.factor is required for rope_type {params['rope_type']!r}")
    if params["rope_type"] == "longrope":
        for key in ("short_factor", "long_factor"):
            factors = params.get(key)
            if factors is None and key == "long_factor":
                continue
            if not isinstance(factors, (list, tuple)) or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                    and x > 0 for x in factors):
                raise ValueError(f"rope_parameters.{key} must be a list of finite numbers > 0, "
                                 f"got {factors!r}")


def _pow(base: float, exponent: np.ndarray) -> np.ndarray:
    """float32(base) ** exponent (float32), correctly rounded."""
    return (np.float64(_f32(base)) ** exponent.astype(np.float64)).astype(_f32)


def _rdiv(x: float, t: np.ndarray) -> np.ndarray:
    """torch's ``x / t`` for a Python scalar x: ``reciprocal(t) * x`` in float32."""
    return (_f32(1.0) / t) * _f32(x)


def _default_inv_freq(base: float, dim: int) -> np.ndarray:
    # 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    exponent = np.arange(0, dim, 2, dtype=_f32) / _f32(dim)
    return _rdiv(1.0, _pow(base, exponent))


def _init_default(params, config, dim):
    return _default_inv_freq(params["rope_theta"], dim), 1.0


def _init_linear(params, config, dim):
    inv_freq = _default_inv_freq(params["rope_theta"], dim)
    return inv_freq / _f32(params["factor"]), 1.0


def _init_dynamic(params, config, dim):
    # HF's init-time value (seq_len = max_position_embeddings), Python float arithmetic as in HF.
    factor = params["factor"]
    max_pos = config["max_position_embeddings"]
    seq_len = max_pos
    base = params["rope_theta"] * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
    return _default_inv_freq(base, dim), 1.0


def _init_llama3(params, config, dim):
    inv_freq = _default_inv_freq(params["rope_theta"], dim)
    factor = params["factor"]
    low_freq_factor = params["low_freq_factor"]
    high_freq_factor = params["high_freq_factor"]
    old_context_len = params["original_max_position_embeddings"]
    low_freq_wavelen = _f32(old_context_len / low_freq_factor)
    high_freq_wavelen = _f32(old_context_len / high_freq_factor)

    wavelen = _rdiv(2 * math.pi, inv_freq)
    inv_freq_llama = np.where(wavelen > low_freq_wavelen, inv_freq / _f32(factor), inv_freq)
    smooth_factor = ((_rdiv(old_context_len, wavelen) - _f32(low_freq_factor))
                     / _f32(high_freq_factor - low_freq_factor))
    smoothed = ((_f32(1) - smooth_factor) * inv_freq_llama / _f32(factor)
                + smooth_factor * inv_freq_llama)
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, inv_freq_llama).astype(_f32), 1.0


def _yarn_mscale(scale: float, mscale: float = 1) -> float:
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def _init_yarn(params, config, dim):
    base = params["rope_theta"]
    factor = params.get("factor")
    original_max = params["original_max_position_embeddings"]
    if factor is None:
        factor = config["max_position_embeddings"] / original_max
    attention_factor = params.get("attention_factor")
    mscale = params.get("mscale")
    mscale_all_dim = params.get("mscale_all_dim")
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(_yarn_mscale(factor, mscale)
                                     / _yarn_mscale(factor, mscale_all_dim))
        else:
            attention_factor = _yarn_mscale(factor)
    beta_fast = params.get("beta_fast") or 32
    beta_slow = params.get("beta_slow") or 1
    truncate = params.get("truncate", True)

    def correction_dim(num_rotations):
        return (dim * math.log(original_max / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # HF: prevent singularity
    ramp = (np.arange(dim // 2, dtype=_f32) - _f32(low)) / _f32(high - low)
    extrapolation_factor = _f32(1) - np.clip(ramp, _f32(0), _f32(1))

    pos_freqs = _pow(base, np.arange(0, dim, 2, dtype=_f32) / _f32(dim))
    inv_freq_extrapolation = _rdiv(1.0, pos_freqs)
    inv_freq_interpolation = _rdiv(1.0, _f32(factor) * pos_freqs)
    inv_freq = (inv_freq_interpolation * (_f32(1) - extrapolation_factor)
                + inv_freq_extrapolation * extrapolation_factor)
    return inv_freq.astype(_f32), float(attention_factor)


def _init_longrope(params, config, dim):
    original_max = params["original_max_position_embeddings"]
    factor = params.get("factor")
    attention_factor = params.get("attention_factor")
    if factor is None:
        factor = config["max_position_embeddings"] / original_max
    if attention_factor is None:
        if factor <= 1.0:
            attention_factor = 1.0
        else:
            attention_factor = math.sqrt(1 + math.log(factor) / math.log(original_max))
    return _longrope_inv_freq(params, "short_factor", dim), float(attention_factor)


def _longrope_inv_freq(params, key, dim):
    # 1.0 / (ext_factors * base ** (torch.arange(0, dim, 2).float() / dim))
    factors = np.asarray(params[key], dtype=_f32)
    if factors.shape != (dim // 2,):
        raise ValueError(f"rope_parameters.{key} has {factors.size} entries, "
                         f"expected head_dim/2 = {dim // 2}")
    exponent = np.arange(0, dim, 2, dtype=_f32) / _f32(dim)
    return _rdiv(1.0, factors * _pow(params["rope_theta"], exponent))


_INIT = {
    "default": _init_default,
    "linear": _init_linear,
    "dynamic": _init_dynamic,
    "llama3": _init_llama3,
    "yarn": _init_yarn,
    "longrope": _init_longrope,
}
