"""Masked relevance streams (Mask-LRP, DESIGN.md §3.2; paper Eq. 9) against the float64 oracle,
in both mask semantics, and the properties the masking must have whatever the model.

Tolerances. Without renormalisation: as tests/test_engine.py (per sequence, cosine ≥ 0.99999
and max error ≤ 1e-4 of the largest oracle value); a mask multiplies by fixed factors and adds
no rounding of its own. With it, Eq. 9's scale total / kept divides two double sums of float32
terms ctx ⊙ g (kept over the kept heads, total over all). If each term carries a relative
rounding error θ, a sum is off by θ κ relative, κ = Σ |terms| / |Σ terms| (its condition
number, Higham §4.2), so the scale is off by θ (κ_kept + κ_total), and every token's share
through the branch, at most ~max|R|, by that fraction. A term's factors come out of the
float32 ops between the logit and the head, 8 per layer in these 2-layer models (two norms,
three linears, the activation, the residual add, the output projection), so θ ≤ n u with
n = 16 roundings, u = 2⁻²⁴, whatever order the BLAS kernel sums in. The bound is
max(1e-4, n u κ), κ the worst layer's κ_kept + κ_total, read from the oracle's
``head_magnitude`` (the terms, not whole heads: summed within a head they hide cancellation;
bert-cls "binary" has κ_kept ≈ 15000 by terms, 1830 by heads, which a 1e-6 κ bound took for
the scale and OpenBLAS's Prescott kernels broke). Measured: errors ≤ 4.4 u κ (Prescott),
≤ 0.5 u κ (Haswell, Zen). A wrong factor, a mask applied after ``A V``, to the wrong head or
on the wrong side of a layer's taps moves relevance by tens of percent. Equalities the design
makes exact (an all-ones mask, the layers the sweep reaches before a mask, masked heads
receiving nothing) are tested bitwise.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the oracle tests need torch (pip install '.[test]')")
pytest.importorskip("transformers", reason="the oracle tests need transformers (pip install '.[test]')")

from masklrp.model import Stream  # noqa: E402
from oracle import models as oracle  # noqa: E402
from test_engine import argmax_seed, case  # noqa: E402
from test_engine import check_relevance as check_engine_relevance  # noqa: E402

NAMES = ["bert-cls", "bert-qa", "distilbert-cls", "mpnet-cls", "gpt2-lm", "llama-lm", "qwen2-lm",  # llama-lm: GQA
         "xlm-roberta-cls", "electra-cls", "albert-cls", "modernbert-cls", "deberta-v3-cls"]
L, H = 2, 4  # every tiny model (tests/hf_models.py)

# Two binary masks (some heads dropped in every layer) and a float one (any finite value).
MASKS = {
    "binary": np.array([[1, 0, 1, 0], [0, 1, 1, 1]], np.float32),
    "one-head": np.array([[0, 0, 1, 0], [1, 1, 1, 1]], np.float32),
    "float": np.array([[0.5, 2.0, 0.0, 1.0], [1.5, -0.5, 1.0, 0.25]], np.float32),
}


SEMANTICS = ("reference", "strict")


def oracle_masked(hf, model, batch, seed, head_mask, renormalize=True, rule="attnlrp", mask_semantics="reference"):
    types = batch.get("token_type_ids")
    return oracle.explain(hf, model.spec.task, torch.as_tensor(batch["input_ids"]),
                          torch.as_tensor(batch["attention_mask"]),
                          token_type_ids=None if types is None else torch.as_tensor(types),
                          seed=torch.from_numpy(seed), rule=rule, head_mask=head_mask,
                          renormalize=renormalize, mask_semantics=mask_semantics)


U = 2.0 ** -24  # float32 unit roundoff
ROUNDINGS = 16  # float32 ops between the logit and a head's terms (module docstring)
BASE = 1e-4  # test_engine's bound, relative to max|R|


def conditioning(ref: dict, head_mask: np.ndarray) -> np.ndarray:
    """κ per sequence: the worst layer's κ_kept + κ_total, the condition numbers of Eq. 9's two
    sums (0 where every head is masked: no division), from a reference-semantics oracle result,
    whose head taps are the relevance arriving at the heads."""
    arriving, size = ref["head_relevance"], ref["head_magnitude"]  # (B,L,H) Σ ctx ⊙ g, Σ |ctx ⊙ g|

    def kappa(weights):
        with np.errstate(invalid="ignore", divide="ignore"):
            return (size * np.abs(weights)).sum(-1) / np.abs((arriving * weights).sum(-1))

    dropped = (size * np.abs(head_mask)).sum(-1) == 0
    return np.where(dropped, 0.0, kappa(head_mask) + kappa(np.ones_like(head_mask))).max(axis=1)


def check_relevance(ours, ref, keep, what, kappa=None) -> None:
    """test_engine's check, its tolerances widened to max(1e-4, n u κ_b) (module docstring)."""
    slack = None if kappa is None else np.maximum(1.0, ROUNDINGS * U * np.asarray(kappa) / BASE)
    check_engine_relevance(ours, ref, keep, what, slack)


def setup(name, seed=0):
    hf, model, batch, inputs = case(name, seed)
    seed_g = argmax_seed(model, model.forward(inputs)["logits"], batch["attention_mask"])
    return hf, model, batch, inputs, seed_g


@functools.lru_cache(maxsize=None)
def oracle_case(name, mask, renormalize, mask_semantics):
    """The oracle's masked stream of setup(name) with MASKS[mask], computed once per session."""
    hf, model, batch, _, seed_g = setup(name)
    return oracle_masked(hf, model, batch, seed_g, MASKS[mask], renormalize, mask_semantics=mask_semantics)


@pytest.mark.parametrize("mask_semantics", SEMANTICS)
@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("name", NAMES)
def test_masked_stream_equals_oracle(name, mask, renormalize, mask_semantics):
    _, model, batch, inputs, seed_g = setup(name)
    head_mask = MASKS[mask]
    stream = Stream("m", "attnlrp", head_mask, renormalize, mask_semantics)
    ours = model.run(inputs, seed_g, (stream,), attentions=True)["m"]
    ref = oracle_case(name, mask, renormalize, mask_semantics)
    real = batch["attention_mask"]
    what = f"{name} {mask} renormalize={renormalize} {mask_semantics}"
    kappa = conditioning(oracle_case(name, mask, True, "reference"), head_mask) if renormalize else None
    check_relevance(ours["tokens"], ref["tokens"], real, f"{what} tokens", kappa)
    check_relevance(ours["head_relevance"], ref["head_relevance"], True, f"{what} head relevance", kappa)
    # padded queries' rows differ by design (test_engine.test_taps_equal_oracle)
    check_relevance(ours["attention_relevance"], ref["attention_relevance"], real[:, None, None, :, None],
                    f"{what} relevance of A", kappa)


@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_semantics_differ_only_in_the_masked_layers_taps(name, renormalize):
    """The two readings pass the same relevance down (tokens, hidden taps): bitwise with 0/1
    factors; with Eq. 9's, one scales a head's g before A·V and the other after, which rounds
    differently, within the bound. They differ in the taps of the layers they mask."""
    _, model, _, inputs, seed_g = setup(name)
    mask = MASKS["binary"]
    out = model.run(inputs, seed_g, tuple(Stream(s, "attnlrp", mask, renormalize, s) for s in SEMANTICS),
                    attentions=True, hidden=True)
    reference, strict = out["reference"], out["strict"]
    if renormalize:
        kappa = conditioning(oracle_case(name, "binary", True, "reference"), mask)
        check_relevance(reference["tokens"], strict["tokens"], True, f"{name} tokens", kappa)
    else:
        for key in ("tokens", "embed_grad", "hidden_relevance"):
            np.testing.assert_array_equal(reference[key], strict[key], err_msg=f"{name} {key}")
    for key in ("head_relevance", "attention_relevance"):
        assert not np.allclose(reference[key], strict[key], rtol=1e-2), f"{name} {key}: the readings agree"
    dropped = mask == 0
    assert (strict["head_relevance"][:, dropped] == 0).all() and (reference["head_relevance"][:, dropped] != 0).all()


@pytest.mark.parametrize("name", ["bert-cls", "llama-lm"])
def test_masked_cp_stream_equals_oracle(name):
    """A mask on the CP-LRP rules: A is a constant there, so the mask reaches only V."""
    hf, model, batch, inputs, seed_g = setup(name)
    ours = model.run(inputs, seed_g, (Stream("m", "cp", MASKS["binary"]),))["m"]
    ref = oracle_masked(hf, model, batch, seed_g, MASKS["binary"], rule="cp")
    check_relevance(ours["tokens"], ref["tokens"], batch["attention_mask"], f"{name} masked cp tokens",
                    conditioning(ref, MASKS["binary"]))


@pytest.mark.parametrize("name", NAMES)
def test_unmasked_head_relevance_equals_oracle(name):
    hf, model, batch, inputs, seed_g = setup(name, 1)
    ours = model.run(inputs, seed_g, ("attnlrp",))["attnlrp"]
    ref = oracle_masked(hf, model, batch, seed_g, None)
    check_relevance(ours["head_relevance"], ref["head_relevance"], True, f"{name} head relevance")


@pytest.mark.parametrize("mask_semantics", SEMANTICS)
@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_all_ones_mask_is_bitwise_the_unmasked_stream(name, renormalize, mask_semantics):
    _, model, _, inputs, seed_g = setup(name)
    ones = Stream("ones", "attnlrp", np.ones((L, H), np.float32), renormalize, mask_semantics)
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
    """Heads masked in one layer only. The layers above it are untouched (the sweep reaches
    them first): bitwise equal, and so is the masked layer's own reading under the reference
    semantics. Strictly read, its heads pass on, in sum, what all of them received unmasked
    (Eq. 9); without renormalisation exactly the kept heads' share."""
    _, model, _, inputs, seed_g = setup(name)
    mask = one_layer_mask(layer)
    out = {s: model.run(inputs, seed_g, ("attnlrp", Stream("renorm", "attnlrp", mask, True, s),
                                         Stream("plain", "attnlrp", mask, False, s))) for s in SEMANTICS}
    full = out["strict"]["attnlrp"]["head_relevance"].astype(np.float64)
    for key in ("renorm", "plain"):
        np.testing.assert_array_equal(out["strict"][key]["head_relevance"][:, layer + 1:], full[:, layer + 1:])
        np.testing.assert_array_equal(out["reference"][key]["head_relevance"][:, layer:], full[:, layer:])
    renorm = out["strict"]["renorm"]["head_relevance"].astype(np.float64)
    plain = out["strict"]["plain"]["head_relevance"].astype(np.float64)
    assert (renorm[:, layer, [0, 2]] == 0).all()
    # without Eq. 9 the kept heads keep exactly what they received unmasked
    np.testing.assert_array_equal(plain[:, layer], full[:, layer] * mask[layer])
    dropped = full[:, layer, [0, 2]].sum(-1)
    size = np.abs(full[:, layer]).sum(-1)
    assert np.abs(dropped).max() > 1e-3 * size.max(), "the test needs masked heads that carry relevance"
    # Both streams hold the same double R_m: the unmasked one as float32 R_m (one rounding), the
    # renormalised one as float32(float32(total/kept) R_m) (two), and Σ_kept (total/kept) R_m = total
    # exactly; (1 + 3u) covers the second-order terms.
    bound = U * (2 * np.abs(renorm[:, layer]).sum(-1) + np.abs(full[:, layer]).sum(-1)) * (1 + 3 * U)
    np.testing.assert_array_less(np.abs(renorm[:, layer].sum(-1) - full[:, layer].sum(-1)), bound,
                                 err_msg=f"{name}: layer {layer}'s heads do not pass on what they received")


@pytest.mark.parametrize("mask_semantics", SEMANTICS)
@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_masking_every_head_of_a_layer_leaves_only_the_residual(name, renormalize, mask_semantics):
    """All heads of layer 0 masked: its attention passes nothing, whatever Eq. 9 would say, and
    the relevance reaches the tokens through the residual path (and the other layer), as in the
    oracle. Read strictly, its heads and its A carry nothing; read as in the reference code,
    exactly what they receive in the unmasked stream (layer 1 is unmasked)."""
    hf, model, batch, inputs, seed_g = setup(name)
    mask = np.ones((L, H), np.float32)
    mask[0] = 0
    out = model.run(inputs, seed_g, ("attnlrp", Stream("m", "attnlrp", mask, renormalize, mask_semantics)),
                    attentions=True)
    ours, unmasked = out["m"], out["attnlrp"]
    for key in ("head_relevance", "attention_relevance", "attention_grad"):
        expected = np.zeros_like(ours[key][:, 0]) if mask_semantics == "strict" else unmasked[key][:, 0]
        np.testing.assert_array_equal(ours[key][:, 0], expected, err_msg=f"{name} {key}")
    ref = oracle_masked(hf, model, batch, seed_g, mask, renormalize, mask_semantics=mask_semantics)
    check_relevance(ours["tokens"], ref["tokens"], batch["attention_mask"], f"{name} layer 0 masked")


def test_oracle_options_are_checked():
    hf, model, batch, _, seed_g = setup("bert-cls")
    with pytest.raises(ValueError, match="head_mask"):
        oracle_masked(hf, model, batch, seed_g, np.ones((L, H + 1)))
    with pytest.raises(ValueError, match="mask_semantics"):
        oracle_masked(hf, model, batch, seed_g, np.ones((L, H)), mask_semantics="literal")
