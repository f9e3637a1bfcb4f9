"""The C engine on every architecture: logits against HF's own float32 forward, and the
relevance / gradient streams and taps against the float64 PyTorch oracle (tests/oracle/models.py).

Tolerances (issue B):
* logits: max |ours − HF| ≤ 1e-5 · max |HF|, both float32. Different summation orders in
  two float32 programs differ by a few ulps per op; 1e-5 leaves room for ~2 layers × ~10 ops
  of such noise at 2^-24 ≈ 6e-8 each, with margin, and is far below any real bug.
* relevance: per sequence, cosine ≥ 0.99999 and max |ours − oracle| ≤ 1e-4 · max |oracle|.
  The oracle runs in float64, so this bounds the float32 engine's accumulated rounding; a
  wrong rule (a missing ½, a detached norm) moves relevance by tens of percent.
* CP-LRP conservation on a zero-bias model: Σ_t R_t = explained logit to 1e-5 relative.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the oracle tests need torch (pip install '.[test]')")
pytest.importorskip("transformers", reason="the oracle tests need transformers (pip install '.[test]')")

import masklrp  # noqa: E402
from hf_models import MODELS, ORIGINAL_POSITIONS, build, example_inputs  # noqa: E402
from oracle import models as oracle  # noqa: E402

SEEDS = (0, 1)
BATCH, LENGTH = 3, 14


def hf_outputs(model, task, batch) -> np.ndarray:
    """HF's own float32 forward, in the engine's logits convention (see masklrp/spec.py)."""
    kw = {k: torch.as_tensor(v) for k, v in batch.items() if v is not None}
    with torch.no_grad():
        return oracle.task_output(model(**kw), task, kw["attention_mask"]).numpy()


def case(name: str, seed: int, zero_bias: bool = False):
    hf = build(name, seed=seed, zero_bias=zero_bias)
    model = masklrp.load(hf)
    batch = {k: v.numpy() for k, v in example_inputs(hf, BATCH, LENGTH, seed=seed).items() if v is not None}
    inputs = model.prepare(batch["input_ids"], batch["attention_mask"],
                           token_type_ids=batch.get("token_type_ids"))
    return hf, model, batch, inputs


def run_oracle(hf, model, batch, seed: np.ndarray, rule: str) -> dict:
    types = batch.get("token_type_ids")
    return oracle.explain(hf, model.spec.task, torch.as_tensor(batch["input_ids"]),
                          torch.as_tensor(batch["attention_mask"]),
                          token_type_ids=None if types is None else torch.as_tensor(types),
                          seed=torch.from_numpy(seed), rule=rule)


def argmax_seed(model, logits: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """One-hot on each row's largest output (for QA: the largest logit at a real position, given
    ``mask``: a pad position's logits differ from HF's by design where HF zeroes pad tokens,
    as DeBERTa does, and explaining them means nothing)."""
    seed = np.zeros_like(logits, dtype=np.float32)
    for b in range(len(logits)):
        row = logits[b] if mask is None or logits.ndim == 2 else np.where(mask[b][:, None] == 1, logits[b], -np.inf)
        seed[b][np.unravel_index(np.argmax(row), row.shape)] = 1.0
    return seed


def check_relevance(ours: np.ndarray, ref: np.ndarray, keep: np.ndarray, what: str,
                    slack: np.ndarray | None = None) -> None:
    """Per sequence b, over the entries where ``keep`` (broadcast to ours' shape) is true:
    cosine ≥ 1 − 1e-5 s_b and max error ≤ 1e-4 s_b max|ref| (see the module docstring);
    s_b = ``slack[b]``, 1 by default (test_mask_lrp.py widens it where Eq. 9 amplifies rounding)."""
    keep = np.broadcast_to(keep, np.shape(ours)).astype(bool)
    for b in range(len(ref)):
        s = 1.0 if slack is None else float(slack[b])
        o = np.asarray(ours[b], np.float64)[keep[b]]
        r = np.asarray(ref[b], np.float64)[keep[b]]
        scale = np.abs(r).max()
        assert scale > 0, f"{what}[{b}]: the oracle's relevance is all zero"
        err = np.abs(o - r)
        cos = o @ r / (np.linalg.norm(o) * np.linalg.norm(r))
        worst = np.argmax(err)
        assert cos >= 1 - 1e-5 * s and err.max() <= 1e-4 * s * scale, (
            f"{what}[{b}]: cosine {cos:.8f}, max error {err.max():.3e} = {err.max() / scale:.2e} of "
            f"max|R| (slack {s:.3g}) at {worst} (ours {o[worst]:.6g}, oracle {r[worst]:.6g})")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", MODELS)
def test_logits_equal_hf_float32(name, seed):
    hf, model, batch, inputs = case(name, seed)
    ref = hf_outputs(hf, model.spec.task, batch)
    ours = model.forward(inputs)["logits"]
    if model.spec.pool == "none":  # QA: padding positions are not compared (HF's differ by design)
        keep = batch["attention_mask"].astype(bool)
        ours, ref = ours[keep], ref[keep]
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err <= 1e-5, f"{name}: max relative logit error {err:.2e}"


@pytest.mark.parametrize("rule", ["attnlrp", "cp"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", MODELS)
def test_relevance_equals_oracle(name, seed, rule):
    hf, model, batch, inputs = case(name, seed)
    seed_g = argmax_seed(model, model.forward(inputs)["logits"], batch["attention_mask"])
    ref = run_oracle(hf, model, batch, seed_g, rule)
    ours = model.run(inputs, seed_g, (rule,))[rule]
    mask = batch["attention_mask"]
    check_relevance(ours["tokens"], ref["tokens"], mask, f"{name} {rule} tokens")
    for table in ("positions", "types"):
        if ref.get(table) is not None:
            check_relevance(ours[table], ref[table], mask, f"{name} {rule} {table}")
    if ref.get("relative") is not None:  # DeBERTa's relative embedding rows
        if rule == "cp":  # the scores, and so the rows, receive nothing
            assert not np.any(ours["relative"]) and not np.any(ref["relative"])
        else:
            check_relevance(ours["relative"], ref["relative"], True, f"{name} {rule} relative")
    else:
        assert "relative" not in ours


@pytest.mark.parametrize("name", MODELS)
def test_gradient_stream_equals_autograd(name):
    hf, model, batch, inputs = case(name, 0)
    seed_g = argmax_seed(model, model.forward(inputs)["logits"], batch["attention_mask"])
    ref = run_oracle(hf, model, batch, seed_g, "gradient")
    ours = model.run(inputs, seed_g, ("gradient",))["gradient"]
    check_relevance(ours["embed_grad"], ref["embed_grad"], batch["attention_mask"][..., None],
                    f"{name} dlogit/de")


@pytest.mark.parametrize("name", MODELS)
def test_cp_lrp_conserves_on_a_zero_bias_model(name):
    """CP-LRP on a model without biases: Σ_t R_t over every embedding table = the logit."""
    _, model, batch, inputs = case(name, 0, zero_bias=True)
    logits = model.forward(inputs)["logits"]
    seed_g = argmax_seed(model, logits)
    out = model.run(inputs, seed_g, ("cp",))["cp"]
    total = sum(out[k].astype(np.float64).sum(axis=1) for k in ("tokens", "positions", "types") if k in out)
    explained = (seed_g * logits).reshape(len(logits), -1).sum(axis=1)
    np.testing.assert_allclose(total, explained, rtol=1e-5, atol=1e-5 * np.abs(explained).max(),
                               err_msg=f"{name}: CP-LRP relevance does not sum to the logit")


@pytest.mark.parametrize("name", MODELS)
def test_taps_equal_oracle(name):
    """Attention maps, d(logit)/dA, relevance of A and of every hidden state."""
    hf, model, batch, inputs = case(name, 1)
    seed_g = argmax_seed(model, model.forward(inputs)["logits"], batch["attention_mask"])
    mask = batch["attention_mask"]
    out = model.run(inputs, seed_g, ("attnlrp", "gradient"), attentions=True, hidden=True)
    lrp = run_oracle(hf, model, batch, seed_g, "attnlrp")
    grad = run_oracle(hf, model, batch, seed_g, "gradient")
    # Padded queries' rows differ by design (HF's finfo.min mask gives them uniform rows, ours
    # zeros), and so do padded tokens' hidden states where a padded query sees no real key
    # (ModernBERT's two-sided window), hence their values and g at A in padded key columns:
    # compare real (query, key) pairs and real tokens only.
    real_query = mask[:, None, None, :, None] * mask[:, None, None, None, :]  # (B,L,H,T,T)
    real_token = mask[:, None, :, None]          # (B,L+1,T,C)
    pairs = [("attentions", out["attentions"], lrp["attentions"], real_query),
             ("d(logit)/dA", out["gradient"]["attention_grad"], grad["attention_grad"], real_query),
             ("relevance of A", out["attnlrp"]["attention_relevance"], lrp["attention_relevance"], real_query),
             ("hidden states", out["hidden"], lrp["hidden"], real_token),
             ("hidden relevance", out["attnlrp"]["hidden_relevance"], lrp["hidden_relevance"], real_token)]
    for what, ours, ref, keep in pairs:
        check_relevance(ours, ref, keep, f"{name} {what}")


@pytest.mark.parametrize("name", MODELS)
def test_padding_does_not_change_a_sequence(name):
    """A sequence explained inside a padded batch equals the same sequence alone."""
    _, model, batch, inputs = case(name, 0)
    seed_g = argmax_seed(model, model.forward(inputs)["logits"], batch["attention_mask"])
    together = model.run(inputs, seed_g, ("attnlrp",))
    b = int(np.argmin(batch["attention_mask"].sum(1)))  # the most padded one
    n = int(batch["attention_mask"][b].sum())
    alone_inputs = model.prepare(batch["input_ids"][b:b + 1, :n], batch["attention_mask"][b:b + 1, :n],
                                 token_type_ids=None if batch.get("token_type_ids") is None
                                 else batch["token_type_ids"][b:b + 1, :n])
    seed_alone = seed_g[b:b + 1, :n] if model.spec.pool == "none" else seed_g[b:b + 1]
    alone = model.run(alone_inputs, seed_alone, ("attnlrp",))
    check_relevance(alone["attnlrp"]["tokens"], together["attnlrp"]["tokens"][b:b + 1, :n], True,
                    f"{name} padded vs alone")


@pytest.mark.parametrize("name", ["bert-cls", "gpt2-lm", "llama-lm"])
def test_default_seed_is_the_argmax(name):
    """seed=None: the engine seeds each row's largest logit itself, in the same forward."""
    _, model, batch, inputs = case(name, 0)
    implicit = model.run(inputs, None, ("attnlrp",))
    explicit = model.run(inputs, argmax_seed(model, implicit["logits"]), ("attnlrp",))
    np.testing.assert_array_equal(implicit["attnlrp"]["tokens"], explicit["attnlrp"]["tokens"])
    [e] = masklrp.attnlrp(model, {k: v[:1] for k, v in batch.items()})
    assert e.target == int(np.argmax(implicit["logits"][0]))
    # alone, the sequence runs in a shorter GEMM: equal up to float32 rounding
    np.testing.assert_allclose(e.scores, implicit["attnlrp"]["tokens"][0][batch["attention_mask"][0] == 1],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["bert-cls", "llama-lm"])
def test_threads_and_concurrent_calls_give_serial_results(name):
    """Parallel chunks (threads=3) and four Python threads at once equal one serial call."""
    _, model, batch, _ = case(name, 0)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, model.spec.vocab, size=(7, 11))
    mask = np.ones_like(ids)
    mask[2, 6:] = 0
    inputs = model.prepare(ids, mask)
    seed_g = argmax_seed(model, model.forward(inputs, threads=1)["logits"])
    serial = model.run(inputs, seed_g, ("attnlrp", "gradient"), threads=1)
    parallel = model.run(inputs, seed_g, ("attnlrp", "gradient"), threads=3)
    # threads=3 cuts the batch into smaller chunks, so its GEMMs have fewer rows and OpenBLAS
    # rounds differently: equal to float32 noise (1e-5 of the largest relevance), not bitwise.
    for stream in ("attnlrp", "gradient"):
        np.testing.assert_allclose(parallel[stream]["tokens"], serial[stream]["tokens"], rtol=1e-5,
                                   atol=1e-5 * np.abs(serial[stream]["tokens"]).max())
    results = [None] * 4

    def work(i):
        results[i] = model.run(inputs, seed_g, ("attnlrp", "gradient"), threads=1 + 2 * (i % 2))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, r in enumerate(results):
        reference = serial if i % 2 == 0 else parallel
        for stream in ("attnlrp", "gradient"):
            np.testing.assert_array_equal(r[stream]["tokens"], reference[stream]["tokens"],
                                          err_msg=f"concurrent call {i} differs from its serial twin")


@pytest.mark.parametrize("name", ["bert-cls", "llama-lm"])
def test_reused_workspaces_give_fresh_results(name):
    """Workspaces are pooled and re-carved for other sizes: no stale value may leak through."""
    hf = build(name, seed=0)
    rng = np.random.default_rng(1)
    long_ids, short_ids = rng.integers(5, 90, size=(5, 23)), rng.integers(5, 90, size=(2, 6))
    used = masklrp.load(hf)
    for ids in (long_ids, short_ids, long_ids[:3, :17]):
        used.run(used.prepare(ids), None, ("attnlrp", "gradient"), attentions=True, hidden=True, threads=2)
    for ids in (short_ids, long_ids[:1, :9]):
        fresh = masklrp.load(hf)
        a = used.run(used.prepare(ids), None, ("attnlrp", "gradient"), threads=2)
        b = fresh.run(fresh.prepare(ids), None, ("attnlrp", "gradient"), threads=2)
        for stream in ("attnlrp", "gradient"):
            np.testing.assert_array_equal(a[stream]["tokens"], b[stream]["tokens"])


def test_qa_default_target_is_a_real_position():
    """In a padded batch the default start/end positions are argmaxes over real tokens only."""
    hf, model, batch, inputs = case("bert-qa", 0)
    logits = model.forward(inputs)["logits"]
    mask = batch["attention_mask"]
    for kind, column in (("start", 0), ("end", 1)):
        explanations = masklrp.attnlrp(model, batch, target=kind)
        for b, e in enumerate(explanations):
            real = np.flatnonzero(mask[b])
            assert e.target == (kind, int(real[np.argmax(logits[b, real, column])]))


# ----------------------------------------------------------------------------- LongRoPE regimes

def longrope_case(name: str, seed: int, length: int):
    hf = build(name, seed=seed)
    model = masklrp.load(hf)
    batch = {k: v.numpy() for k, v in example_inputs(hf, BATCH, length, seed=seed).items()}
    return hf, model, batch, model.prepare(batch["input_ids"], batch["attention_mask"])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", ["phi3-lm", "phi3-lm-options"])
def test_longrope_long_regime_equals_hf_and_oracle(name, seed):
    """Every row longer than original_max_position_embeddings: the long_factor table, as in HF.

    Rows have 22 to 44 tokens (> 20), so HF (which picks by the padded length) and the engine
    (which picks per sequence) agree; with the short table alone the logits would be far off.
    """
    hf, model, batch, inputs = longrope_case(name, seed, 2 * ORIGINAL_POSITIONS + 4)
    assert model.spec.rope_long_after == ORIGINAL_POSITIONS
    assert batch["attention_mask"].sum(1).min() > ORIGINAL_POSITIONS
    ref = hf_outputs(hf, "causal-lm", batch)
    logits = model.forward(inputs)["logits"]
    err = np.abs(logits - ref).max() / np.abs(ref).max()
    assert err <= 1e-5, f"{name}: max relative logit error {err:.2e} (long regime)"
    weights = dict(model.weights)
    weights["rope.inv_freq_long"] = weights["rope.inv_freq"]
    short = masklrp.Model(model.spec, weights).forward(inputs)["logits"]
    assert np.abs(short - ref).max() / np.abs(ref).max() > 1e-3, "the regimes are not told apart"
    seed_g = argmax_seed(model, logits)
    mask = batch["attention_mask"]
    for rule, key in (("attnlrp", "tokens"), ("cp", "tokens"), ("gradient", "embed_grad")):
        ref_r = run_oracle(hf, model, batch, seed_g, rule)[key]
        ours = model.run(inputs, seed_g, (rule,))[rule][key]
        keep = mask if key == "tokens" else mask[..., None]
        check_relevance(ours, ref_r, keep, f"{name} {rule} {key} (long regime)")


@pytest.mark.parametrize("name", ["phi3-lm", "phi3-lm-options"])
def test_longrope_regime_is_chosen_per_sequence(name):
    """A batch mixing a long and a short sequence explains each as it is explained alone, and
    alone each equals HF. (HF picks one table per batch by its padded length, so HF's own
    padded batch would give the short row the long table.)"""
    hf = build(name, seed=0)
    model = masklrp.load(hf)
    rng = np.random.default_rng(3)
    lengths = (ORIGINAL_POSITIONS + 9, ORIGINAL_POSITIONS - 6)
    T = max(lengths)
    ids = rng.integers(5, model.spec.vocab, size=(2, T))
    mask = (np.arange(T)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, 0)
    together = model.run(model.prepare(ids, mask), None, ("attnlrp",))
    for b, n in enumerate(lengths):
        alone_ids, alone_mask = ids[b:b + 1, :n], mask[b:b + 1, :n]
        alone = model.run(model.prepare(alone_ids, alone_mask), None, ("attnlrp",))
        ref = hf_outputs(hf, "causal-lm", {"input_ids": alone_ids, "attention_mask": alone_mask})
        err = np.abs(alone["logits"] - ref).max() / np.abs(ref).max()
        assert err <= 1e-5, f"{name}: row {b} ({n} tokens) alone: relative logit error {err:.2e}"
        np.testing.assert_allclose(together["logits"][b], alone["logits"][0], rtol=1e-5,
                                   atol=1e-5 * np.abs(alone["logits"]).max())
        check_relevance(together["attnlrp"]["tokens"][b:b + 1, :n], alone["attnlrp"]["tokens"], True,
                        f"{name} row {b} in a mixed batch vs alone")
