"""masklrp.rope: NumPy RoPE frequencies against transformers' own initialisers.

Two checks per case: (1) within 2 ulp of HF's ``inv_freq`` and the same attention scaling;
(2) with torch's ``pow`` substituted for ours, bitwise equal — which shows that every other
float32 step (order, scalar rounding, ``x / t`` as ``reciprocal(t) * x``) is HF's, and that
the only difference is torch's vectorised powf being 1 ulp off the correctly rounded value.
"""
from __future__ import annotations

import numpy as np
import pytest

from masklrp import rope
from masklrp.rope import (max_rope_positions, rope_config, rope_long_inv_freq, rope_parameters,
                          rotary_dim)

MAX_POS = 16384

CASES = [
    {"rope_type": "default"},
    {"rope_type": "linear", "factor": 2.5},
    {"rope_type": "dynamic", "factor": 3.7},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192},
    {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 2.0, "high_freq_factor": 3.0,
     "original_max_position_embeddings": 64},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
     "beta_fast": 16, "beta_slow": 2, "truncate": False},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
     "mscale": 1.0, "mscale_all_dim": 0.7},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
     "attention_factor": 1.25},
    {"rope_type": "longrope", "original_max_position_embeddings": 4096, "short": True},
]
THETAS = [10000.0, 500000.0, 12345.6]
HEAD_DIMS = [8, 64, 128]


def _hf_config(case: dict, theta: float, head_dim: int):
    tf = pytest.importorskip("transformers", reason="the reference is transformers' RoPE code")
    params = {k: v for k, v in case.items() if k != "short"}
    params["rope_theta"] = theta
    if case.get("short"):
        params["short_factor"] = np.linspace(1.0, 2.0, head_dim // 2).tolist()
        params["long_factor"] = np.linspace(1.0, 5.0, head_dim // 2).tolist()
    return tf.LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, head_dim=head_dim,
                          max_position_embeddings=MAX_POS, rope_parameters=params)


def _hf_rope(config):
    pytest.importorskip("torch", reason="the reference is transformers' RoPE code")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    kind = config.rope_parameters["rope_type"]
    if kind == "default":
        inv_freq, scaling = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    else:
        inv_freq, scaling = ROPE_INIT_FUNCTIONS[kind](config)
    return inv_freq.numpy(), scaling


def _ulps(a, b) -> int:
    return int(np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64)).max())


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("theta", THETAS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_matches_transformers(case, theta, head_dim, monkeypatch):
    config = _hf_config(case, theta, head_dim)
    want, want_scaling = _hf_rope(config)
    got, scaling = rope_parameters(config.to_dict(), head_dim)
    assert got.dtype == np.float32 and got.shape == (head_dim // 2,)
    assert scaling == want_scaling
    assert _ulps(got, want) <= 2, f"{_ulps(got, want)} ulp: {got} vs {want}"

    import torch

    monkeypatch.setattr(rope, "_pow", lambda base, e: (base ** torch.from_numpy(e.copy())).numpy())
    exact, _ = rope_parameters(config.to_dict(), head_dim)
    np.testing.assert_array_equal(exact, want)


def test_old_style_rope_scaling_and_default_theta():
    new = {"max_position_embeddings": 2048,
           "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}}
    old = {"max_position_embeddings": 2048, "rope_theta": 5e5,
           "rope_scaling": {"type": "linear", "factor": 2.0}}
    np.testing.assert_array_equal(rope_parameters(new, 64)[0], rope_parameters(old, 64)[0])
    bare = rope_parameters({"max_position_embeddings": 2048}, 64)[0]
    explicit = rope_parameters({"max_position_embeddings": 2048, "rope_theta": 10000.0}, 64)[0]
    np.testing.assert_array_equal(bare, explicit)
    assert bare[0] == 1.0 and bare[-1] < 1e-3


def test_dynamic_equals_default_within_max_positions():
    base = {"max_position_embeddings": 1000, "rope_theta": 10000.0}
    dynamic = dict(base, rope_scaling={"type": "dynamic", "factor": 1.7})
    np.testing.assert_array_equal(rope_parameters(dynamic, 64)[0], rope_parameters(base, 64)[0])
    assert max_rope_positions(dynamic) == 1000


def test_longrope_positions_reach_the_long_factor_range():
    config = {"max_position_embeddings": 131072,
              "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 4,
                               "long_factor": [2.0] * 4, "original_max_position_embeddings": 4096}}
    assert max_rope_positions(config) == 131072
    assert rope_config(config)["original_max_position_embeddings"] == 4096
    _, scaling = rope_parameters(config, 8)
    assert scaling == pytest.approx(np.sqrt(1 + np.log(32) / np.log(4096)))
    np.testing.assert_array_equal(rope_long_inv_freq(config, 8), rope_parameters(config, 8)[0] / 2)
    # without long factors, only the short range is what HF computes
    del config["rope_scaling"]["long_factor"]
    assert max_rope_positions(config) == 4096 and rope_long_inv_freq(config, 8) is None


@pytest.mark.parametrize("partial", [1.0, 0.75, 0.5])
@pytest.mark.parametrize("head_dim", [8, 64])
def test_phi3_longrope_and_partial_rotary_match_transformers(partial, head_dim):
    """Short and long tables of HF's LongRoPE initialiser for a Phi-3 config, partial RoPE too."""
    tf = pytest.importorskip("transformers", reason="the reference is transformers' RoPE code")
    pytest.importorskip("torch", reason="the reference is transformers' RoPE code")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    dim = int(head_dim * partial)
    config = tf.Phi3Config(hidden_size=4 * head_dim, num_attention_heads=4,
                           max_position_embeddings=MAX_POS, original_max_position_embeddings=512,
                           rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                            "partial_rotary_factor": partial,
                                            "short_factor": np.linspace(1, 2, dim // 2).tolist(),
                                            "long_factor": np.linspace(1, 9, dim // 2).tolist()})
    raw = config.to_dict()
    assert rotary_dim(raw, head_dim, partial=True) == dim
    short, scaling = rope_parameters(raw, dim)
    want_short, want_scaling = ROPE_INIT_FUNCTIONS["longrope"](config)
    want_long, _ = ROPE_INIT_FUNCTIONS["longrope"](config, seq_len=513)
    assert scaling == pytest.approx(want_scaling, rel=1e-15)
    assert _ulps(short, want_short.numpy()) <= 2
    assert _ulps(rope_long_inv_freq(raw, dim), want_long.numpy()) <= 2
    assert max_rope_positions(raw) == MAX_POS


def test_partial_rotary_factor_is_refused_outside_phi3():
    config = {"max_position_embeddings": 512, "partial_rotary_factor": 0.5}
    with pytest.raises(NotImplementedError, match="partial_rotary_factor"):
        rotary_dim(config, 8)
    assert rotary_dim(config, 8, partial=True) == 4
    with pytest.raises(ValueError, match="even count"):
        rotary_dim(dict(config, partial_rotary_factor=0.3), 10, partial=True)


def test_top_level_original_max_position_embeddings_wins():
    config = {"max_position_embeddings": 8192, "original_max_position_embeddings": 2048,
              "rope_scaling": {"type": "yarn", "factor": 4.0,
                               "original_max_position_embeddings": 4096}}
    assert rope_config(config)["original_max_position_embeddings"] == 2048


@pytest.mark.parametrize("config,head_dim,error,message", [
    ({"rope_parameters": {"rope_type": "proportional"}}, 8, NotImplementedError, "proportional"),
    ({"rope_parameters": {"rope_type": "whatever"}}, 8, NotImplementedError, "'whatever'"),
    ({"rope_parameters": {"rope_type": "default", "mrope_section": [2, 1, 1]}}, 8,
     NotImplementedError, "mrope_section"),
    ({"layer_types": ["full_attention", "sliding_attention"],
      "rope_parameters": {"full_attention": {"rope_type": "default"},
                          "sliding_attention": {"rope_type": "default"}}}, 8,
     NotImplementedError, "per-layer-type"),
    ({}, 7, ValueError, "even head_dim"),
    ({"rope_parameters": {"rope_type": "longrope", "short_factor": [1.0] * 3,
                          "long_factor": [1.0] * 3}}, 8, ValueError, "short_factor"),
])
def test_refusals(config, head_dim, error, message):
    config = dict(config, max_position_embeddings=512)
    with pytest.raises(error, match=message):
        rope_parameters(config, head_dim)
