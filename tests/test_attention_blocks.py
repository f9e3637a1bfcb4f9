"""Attention in blocks of query rows (csrc/engine.c, issue I): nothing (T,T) is kept.

With a block of 4 rows, a sequence of 3·4 + 5 tokens runs 5 blocks per head, the last one
short; the relevance, the gradient and the taps must still equal the float64 oracle with
test_engine.py's tolerances, on each kind of mask and score bias: padding, causal (whose
blocks skip the upper triangle), grouped-query heads, sliding windows (causal and two-sided),
MPNet's relative bias and DeBERTa's disentangled terms; with the MLP's pre-activations cached
and recomputed. And the workspace grows linearly in T.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="the oracle tests need torch (pip install '.[test]')")
pytest.importorskip("transformers", reason="the oracle tests need transformers (pip install '.[test]')")

import masklrp  # noqa: E402
from hf_models import build, example_inputs  # noqa: E402
from masklrp import _core  # noqa: E402
from masklrp.kernels import head_counts  # noqa: E402
from test_engine import argmax_seed, check_relevance, run_oracle  # noqa: E402

BLOCK = 4
LENGTH = 3 * BLOCK + 5  # 5 blocks, the last one short
# causal, GQA, sliding windows (Mistral's causal one, ModernBERT's two-sided, Gemma 3's mix
# of local and global layers), MPNet's bias, DeBERTa's disentangled terms, qk-norm, QA
BLOCKED = ["bert-cls", "gpt2-lm", "llama-lm", "mistral-lm", "qwen3-lm", "gemma3-lm", "modernbert-qa",
           "mpnet-cls", "deberta-v3-cls", "deberta-v2-qa"]


@pytest.fixture
def small_blocks():
    previous = _core._set_attention_block(BLOCK)
    yield
    _core._set_attention_block(previous)


@pytest.fixture(params=["cached", "recomputed"])
def mlp_cache(request):
    """The MLP's pre-activations kept from the forward, or recomputed from its input."""
    previous = _core._set_mlp_cache(0 if request.param == "recomputed" else -1)
    yield
    _core._set_mlp_cache(previous)


def case(name: str, seed: int = 0):
    hf = build(name, seed=seed)
    model = masklrp.load(hf)
    batch = {k: v.numpy() for k, v in example_inputs(hf, 3, LENGTH, seed=seed).items() if v is not None}
    inputs = model.prepare(batch["input_ids"], batch["attention_mask"], token_type_ids=batch.get("token_type_ids"))
    return hf, model, batch, inputs


@pytest.mark.parametrize("name", BLOCKED)
def test_many_blocks_equal_the_oracle(name, small_blocks, mlp_cache):
    hf, model, batch, inputs = case(name)
    mask = batch["attention_mask"]
    seed_g = argmax_seed(model, model.forward(inputs)["logits"], mask)
    # without taps a pooled head's last layer computes one query row (Workspace.pruned)
    out = model.run(inputs, seed_g, ("attnlrp", "cp", "gradient"))
    taps = model.run(inputs, seed_g, ("attnlrp", "gradient"), attentions=True)
    real_query = mask[:, None, None, :, None] * mask[:, None, None, None, :]
    for rule in ("attnlrp", "cp"):
        ref = run_oracle(hf, model, batch, seed_g, rule)
        check_relevance(out[rule]["tokens"], ref["tokens"], mask, f"{name} {rule} tokens")
        if rule == "attnlrp":
            check_relevance(taps[rule]["tokens"], ref["tokens"], mask, f"{name} {rule} tokens, taps on")
            check_relevance(taps["attentions"], ref["attentions"], real_query, f"{name} attentions")
            check_relevance(taps[rule]["attention_relevance"], ref["attention_relevance"], real_query,
                            f"{name} relevance of A")
    grad = run_oracle(hf, model, batch, seed_g, "gradient")
    check_relevance(out["gradient"]["embed_grad"], grad["embed_grad"], mask[..., None], f"{name} dlogit/de")
    check_relevance(taps["gradient"]["attention_grad"], grad["attention_grad"], real_query, f"{name} dlogit/dA")


@pytest.mark.parametrize("name", ["gpt2-lm", "llama-lm", "mistral-lm", "gemma3-cls", "bert-cls", "deberta-v3-cls"])
def test_block_size_changes_nothing_but_rounding(name):
    """Blocks of 3 and 4 rows and one block of every row: the same explanation and taps; the
    causal skip leaves exact zeros above the diagonal, and g at A keeps the masked keys'."""
    _, model, batch, inputs = case(name, 1)
    seed_g = argmax_seed(model, model.forward(inputs)["logits"], batch["attention_mask"])
    runs = {}
    for block in (3, BLOCK, 0):  # 0: the default, longer than the sequence
        previous = _core._set_attention_block(block)
        try:
            runs[block] = model.run(inputs, seed_g, ("attnlrp", "gradient"), attentions=True)
        finally:
            _core._set_attention_block(previous)
    whole = runs[0]
    for block in (3, BLOCK):
        got = runs[block]
        for what, ours, ref in [("attentions", got["attentions"], whole["attentions"]),
                                ("tokens", got["attnlrp"]["tokens"], whole["attnlrp"]["tokens"]),
                                ("dlogit/dA", got["gradient"]["attention_grad"], whole["gradient"]["attention_grad"]),
                                ("relevance of A", got["attnlrp"]["attention_relevance"],
                                 whole["attnlrp"]["attention_relevance"])]:
            # Other blocks are other GEMM shapes, so float32 sums in another order: measured up
            # to 1.8e-6·max under OpenBLAS's Haswell kernels and 3.6e-6·max under Prescott's
            # (gemma3 g at A). A blocking bug moves whole rows, errors of the order of max|ref|.
            np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=2e-5 * np.abs(ref).max(),
                                       err_msg=f"{name} {what}: block {block} vs one block")
    if model.spec.causal:
        upper = np.triu(np.ones((LENGTH, LENGTH), bool), 1)
        assert not runs[BLOCK]["attentions"][..., upper].any()
        assert runs[BLOCK]["gradient"]["attention_grad"][..., upper].any()


@pytest.mark.parametrize("name", ["bert-cls", "llama-lm", "mistral-lm", "deberta-v2-qa"])
def test_head_stats_counted_block_by_block_equal_the_taps(name, small_blocks):
    _, model, batch, inputs = case(name)
    rng = np.random.default_rng(3)
    real = batch["attention_mask"].astype(bool)
    keys = (real & (rng.random(real.shape) < 0.7)).astype(np.uint8)
    queries = (real & (rng.random(real.shape) < 0.8)).astype(np.uint8)
    arcs = np.array([(b, q, lo, lo + 3, rng.integers(4)) for b in range(3) for q in np.flatnonzero(queries[b])
                     for lo in [int(rng.integers(0, LENGTH - 3))]], np.int64)
    fused = model.head_stats(inputs, queries, keys, arcs, 4)
    tapped = head_counts(model.forward(inputs, attentions=True)["attentions"], queries, keys, arcs, 4)
    for counter in ("positional", "syntactic"):
        np.testing.assert_array_equal(fused[counter], tapped[counter], err_msg=f"{name} {counter}")


@pytest.mark.parametrize("name", ["llama-lm", "bert-cls", "deberta-v3-cls"])
def test_workspace_grows_linearly_in_length(name, mlp_cache):
    """Doubling T doubles the workspace (plus what does not depend on T): no (T,T) buffer."""
    model = masklrp.load(build(name, seed=0))
    size = {T: model._engine._workspace_bytes(1, T) for T in (256, 512, 1024)}
    growth = (size[1024] - size[512]) / (size[512] - size[256])
    assert 1.9 < growth < 2.1, f"{name}: workspace {size}, growth {growth:.2f} per doubling (T² would give 4)"


def test_mlp_cache_limit_trades_the_pre_activations_for_the_input():
    model = masklrp.load(build("llama-lm", seed=0))
    s = model.spec
    rows = 2 * 256
    cached = model._engine._workspace_bytes(2, 256)
    previous = _core._set_mlp_cache(0)
    try:
        recomputed = model._engine._workspace_bytes(2, 256)
    finally:
        _core._set_mlp_cache(previous)
    # (L,N,2F) cached -> (N,2F) scratch + (L,N,C) inputs, up to 64-byte alignment
    saved = 4 * rows * ((s.n_layers - 1) * 2 * s.intermediate - s.n_layers * s.hidden)
    assert abs(cached - recomputed - saved) <= 256, (cached, recomputed, saved)
