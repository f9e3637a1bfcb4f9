"""Masked relevance streams (Mask-LRP, DESIGN.md §3.2; paper Eq. 9) against the float64 oracle,
and the properties the masking must have whatever the model.

Tolerances: as tests/test_engine.py (per sequence, cosine ≥ 0.99999 and max error ≤ 1e-4 of
the largest oracle value), times a slack for the renormalisation's conditioning. The factor
Σ_m R_m / Σ_m M_m R_m divides by the kept heads' sum; where kept heads nearly cancel, its
relative error is κ = Σ_m |M_m R_m| / |Σ_m M_m R_m| times that of the R_m (float32 sums,
accurate to ~1e-6 of Σ|R_m|), so the bound is max(1e-4, 1e-6 κ) with κ the worst layer's, read
from the oracle (random tiny models reach κ ≈ 2000). Without renormalisation there is no
division and no slack. A wrong factor, a mask applied after ``A V`` or to the wrong head moves
relevance by tens of percent. Equalities the design makes exact (an all-ones mask, untouched
layers above the masked one, masked heads receiving nothing) are tested bitwise.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the oracle tests need torch (pip install '.[test]')")
pytest.importorskip("transformers", reason="the oracle tests need transformers (pip install '.[test]')")

from masklrp.model import Stream  # noqa: E402
from oracle import models as oracle  # noqa: E402
from test_engine import argmax_seed, case  # noqa: E402
from test_engine import check_relevance as check_engine_relevance  # noqa: E402

NAMES = ["bert-cls", "bert-qa", "distilbert-cls", "gpt2-lm", "llama-lm", "qwen2-lm"]  # llama-lm: GQA
L, H = 2, 4  # every tiny model (tests/hf_models.py)

# Two binary masks (some heads dropped in every layer) and a float one (any finite value).
MASKS = {
    "binary": np.array([[1, 0, 1, 0], [0, 1, 1, 1]], np.float32),
    "one-head": np.array([[0, 0, 1, 0], [1, 1, 1, 1]], np.float32),
    "float": np.array([[0.5, 2.0, 0.0, 1.0], [1.5, -0.5, 1.0, 0.25]], np.float32),
}


def oracle_masked(hf, model, batch, seed, head_mask, renormalize=True, rule="attnlrp"):
    types = batch.get("token_type_ids")
    return oracle.explain(hf, model.spec.task, torch.as_tensor(batch["input_ids"]),
                          torch.as_tensor(batch["attention_mask"]),
                          token_type_ids=None if types is None else torch.as_tensor(types),
                          seed=torch.from_numpy(seed), rule=rule, head_mask=head_mask,
                          renormalize=renormalize)


def conditioning(head_relevance: np.ndarray) -> np.ndarray:
    """κ per sequence: the worst layer's Σ_m |h_m| / |Σ_m h_m| (1 where every head is masked)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.abs(head_relevance).sum(-1) / np.abs(head_relevance.sum(-1))
    return np.nanmax(np.where(np.abs(head_relevance).sum(-1) == 0, 1.0, kappa), axis=1)


def check_relevance(ours, ref, keep, what, kappa=None) -> None:
    """test_engine's check, its tolerances widened by s_b = max(1, κ_b / 100) (module docstring)."""
    slack = None if kappa is None else np.maximum(1.0, np.asarray(kappa) / 100)
    check_engine_relevance(ours, ref, keep, what, slack)


def setup(name, seed=0):
    hf, model, batch, inputs = case(name, seed)
    seed_g = argmax_seed(model, model.forward(inputs)["logits"], batch["attention_mask"])
    return hf, model, batch, inputs, seed_g


@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("name", NAMES)
def test_masked_stream_equals_oracle(name, mask, renormalize):
    hf, model, batch, inputs, seed_g = setup(name)
    head_mask = MASKS[mask]
    ours = model.run(inputs, seed_g, (Stream("m", "attnlrp", head_mask, renormalize),), attentions=True)["m"]
    ref = oracle_masked(hf, model, batch, seed_g, head_mask, renormalize)
    real = batch["attention_mask"]
    what = f"{name} {mask} renormalize={renormalize}"
    kappa = conditioning(ref["head_relevance"]) if renormalize else None
    check_relevance(ours["tokens"], ref["tokens"], real, f"{what} tokens", kappa)
    check_relevance(ours["head_relevance"], ref["head_relevance"], True, f"{what} head relevance", kappa)
    # padded queries' rows differ by design (test_engine.test_taps_equal_oracle)
    check_relevance(ours["attention_relevance"], ref["attention_relevance"], real[:, None, None, :, None],
                    f"{what} relevance of A", kappa)


@pytest.mark.parametrize("name", ["bert-cls", "llama-lm"])
def test_masked_cp_stream_equals_oracle(name):
    """A mask on the CP-LRP rules: A is a constant there, so the mask reaches only V."""
    hf, model, batch, inputs, seed_g = setup(name)
    ours = model.run(inputs, seed_g, (Stream("m", "cp", MASKS["binary"]),))["m"]
    ref = oracle_masked(hf, model, batch, seed_g, MASKS["binary"], rule="cp")
    check_relevance(ours["tokens"], ref["tokens"], batch["attention_mask"], f"{name} masked cp tokens",
                    conditioning(ref["head_relevance"]))


@pytest.mark.parametrize("name", NAMES)
def test_unmasked_head_relevance_equals_oracle(name):
    hf, model, batch, inputs, seed_g = setup(name, 1)
    ours = model.run(inputs, seed_g, ("attnlrp",))["attnlrp"]
    ref = oracle_masked(hf, model, batch, seed_g, None)
    check_relevance(ours["head_relevance"], ref["head_relevance"], True, f"{name} head relevance")


@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_all_ones_mask_is_bitwise_the_unmasked_stream(name, renormalize):
    _, model, _, inputs, seed_g = setup(name)
    ones = Stream("ones", "attnlrp", np.ones((L, H), np.float32), renormalize)
    together = model.run(inputs, seed_g, ("attnlrp", ones), attentions=True, hidden=True)
    alone = model.run(inputs, seed_g, (ones,), attentions=True, hidden=True)["ones"]
    for key in ("tokens", "head_relevance", "attention_relevance", "hidden_relevance", "embed_grad"):
        np.testing.assert_array_equal(together["ones"][key], together["attnlrp"][key], err_msg=f"{name} {key}")
        np.testing.assert_array_equal(alone[key], together["attnlrp"][key], err_msg=f"{name} {key} alone")


def one_layer_mask(layer: int) -> np.ndarray:
    mask = np.ones((L, H), np.float32)
    mask[layer, [0, 2]] = 0
    return mask


@pytest.mark.parametrize("layer", range(L))
@pytest.mark.parametrize("name", NAMES)
def test_renormalisation_conserves_the_attention_branch(name, layer):
    """Heads masked in one layer only: that layer's heads pass on, in sum, what all of them
    received unmasked (Eq. 9); without renormalisation they pass the kept heads' share only.
    Layers above it are untouched (the sweep reaches them first): bitwise equal."""
    _, model, _, inputs, seed_g = setup(name)
    mask = one_layer_mask(layer)
    out = model.run(inputs, seed_g, ("attnlrp", Stream("renorm", "attnlrp", mask, True),
                                      Stream("plain", "attnlrp", mask, False)))
    full = out["attnlrp"]["head_relevance"].astype(np.float64)
    renorm = out["renorm"]["head_relevance"].astype(np.float64)
    plain = out["plain"]["head_relevance"].astype(np.float64)
    np.testing.assert_array_equal(renorm[:, layer + 1:], full[:, layer + 1:])
    np.testing.assert_array_equal(plain[:, layer + 1:], full[:, layer + 1:])
    total = full[:, layer].sum(-1)
    scale = np.abs(full[:, layer]).sum(-1)  # the sum's own size: its float32 rounding scale
    np.testing.assert_allclose(renorm[:, layer].sum(-1), total, rtol=0, atol=1e-5 * scale.max(),
                               err_msg=f"{name}: layer {layer}'s heads do not pass on what they received")
    assert (renorm[:, layer, [0, 2]] == 0).all() and (plain[:, layer, [0, 2]] == 0).all()
    # without Eq. 9 the kept heads keep exactly what they received unmasked
    np.testing.assert_allclose(plain[:, layer], full[:, layer] * mask[layer], rtol=1e-6, atol=1e-7 * scale.max())
    dropped = full[:, layer, [0, 2]].sum(-1)
    assert np.abs(dropped).max() > 1e-3 * scale.max(), "the test needs masked heads that carry relevance"
    np.testing.assert_allclose(plain[:, layer].sum(-1), total - dropped, rtol=0, atol=1e-5 * scale.max())


@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_masking_every_head_of_a_layer_leaves_only_the_residual(name, renormalize):
    """All heads of layer 0 masked: its attention passes nothing (no relevance on its heads or
    its A, whatever Eq. 9 would say), and the relevance reaches the tokens through the residual
    path (and the other layer), as in the oracle."""
    hf, model, batch, inputs, seed_g = setup(name)
    mask = np.ones((L, H), np.float32)
    mask[0] = 0
    out = model.run(inputs, seed_g, (Stream("m", "attnlrp", mask, renormalize),), attentions=True)["m"]
    assert (out["head_relevance"][:, 0] == 0).all()
    assert (out["attention_relevance"][:, 0] == 0).all() and (out["attention_grad"][:, 0] == 0).all()
    ref = oracle_masked(hf, model, batch, seed_g, mask, renormalize)
    check_relevance(out["tokens"], ref["tokens"], batch["attention_mask"], f"{name} layer 0 masked",
                    conditioning(ref["head_relevance"]) if renormalize else None)


def test_oracle_head_mask_is_checked():
    hf, model, batch, _, seed_g = setup("bert-cls")
    with pytest.raises(ValueError, match="head_mask"):
        oracle_masked(hf, model, batch, seed_g, np.ones((L, H + 1)))
