"""Every attribution method of masklrp.methods against a PyTorch reference, and the planning of
engine calls.

The reference is built independently of masklrp: the HF model's own eager attention maps
(``output_attentions=True``) and block inputs (``output_hidden_states=True``), in float64,
with ``retain_grad`` and autograd for the true gradients ∇A and ∇h; the relevance of A (masked
or not) from the float64 oracle (tests/oracle/models.py). Each method is then written the way
its paper or reference code writes it (Chefer's ``R += Ā R`` loops, Abnar & Zuidema's
``0.5 A + 0.5 I``), not as masklrp's product form; target rows are found from the seed
and the attention mask.

Tolerances: as tests/test_mask_lrp.py — per sequence, cosine ≥ 0.99999 and max error ≤ 1e-4
of the largest reference score, with the renormalisation slack max(1, κ/100) for methods on
a renormalised masked stream. The engine is float32 and the rollouts multiply L factors of
O(1) entries, which adds float32 rounding of the same size as the streams'. Where a clamp
(CAM, GradCAM) leaves a sequence's reference all zero, the error is measured against the
size of the unclamped map instead.
"""
from __future__ import annotations

import copy
import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the oracle tests need torch (pip install '.[test]')")
pytest.importorskip("transformers", reason="the oracle tests need transformers (pip install '.[test]')")

import masklrp  # noqa: E402
from masklrp.methods import (ALIASES, MASKED_METHODS, METHODS, RANDOM_METHODS, MaskLRP, explain_all,  # noqa: E402
                             random_head_mask)
from masklrp.model import MASK_SEMANTICS  # noqa: E402
from oracle import models as oracle  # noqa: E402
from test_engine import case  # noqa: E402
from test_mask_lrp import check_relevance, conditioning  # noqa: E402

NAMES = ["bert-cls", "bert-qa", "bert-base", "gpt2-cls", "gpt2-lm", "llama-lm"]
HEAD_MASK = np.array([[1, 0, 1, 1], [0, 1, 1, 0]], np.float32)
RANDOM_SEED = 7
ALL = tuple(METHODS)


# ----------------------------------------------------------------------------- reference

def hf_reference(hf, task, batch, seed) -> dict[str, np.ndarray]:
    """A, ∇A (B,L,H,T,T) and the block inputs h, ∇h (B,L,T,C) from HF's own float64 forward."""
    model = copy.deepcopy(hf).double().eval()
    ids, mask = torch.as_tensor(batch["input_ids"]), torch.as_tensor(batch["attention_mask"])
    types = batch.get("token_type_ids")
    kwargs = oracle.model_inputs(model, ids, mask, None if types is None else torch.as_tensor(types))
    with oracle.float64_only():  # HF's float32 casts (LLaMA softmax, RoPE) stay float64
        out = model(**kwargs, output_attentions=True, output_hidden_states=True)
    attentions, hidden = out.attentions, out.hidden_states[:-1]  # hidden_states[l]: block l's input
    for t in (*attentions, *hidden):
        t.retain_grad()
    oracle.task_output(out, task, mask).backward(torch.as_tensor(seed, dtype=torch.float64))
    stack = lambda ts, grad: torch.stack([t.grad if grad else t.detach() for t in ts], 1).numpy()  # noqa: E731
    return {"A": stack(attentions, False), "gA": stack(attentions, True),
            "h": stack(hidden, False), "gh": stack(hidden, True)}


def target_rows(pool: str, seed_b: np.ndarray, n: int):
    """Rows of a token map to read: (row indices summed, or None for the mean of all rows)."""
    if pool == "first":
        return [0]
    if pool == "last":
        return [n - 1]
    if pool == "mean":
        return None
    start, end = np.argmax(seed_b[:n, 0]), np.argmax(seed_b[:n, 1])  # QA target "both"
    return [start, end]


def chefer_rollout(cams, normalize_rows=False):
    """Chefer et al.: ``R = I; R += Ā R`` per block (CVPR'21 / ICCV'21 code); with
    ``normalize_rows`` their ``compute_rollout_attention`` (Ā + I, rows normalised, product)."""
    eye = torch.eye(cams.shape[-1], dtype=torch.float64)
    if normalize_rows:
        joint = None
        for cam in cams:
            factor = cam + eye
            factor = factor / factor.sum(-1, keepdim=True)
            joint = factor if joint is None else factor @ joint
        return joint
    R = eye
    for cam in cams:
        R = R + cam @ R
    return R


def reference_scores(method, d, rows, normalize_rows=False):
    """(scores, scale) of one method on one sequence's real tokens; ``d`` torch float64
    tensors A, gA (L,H,n,n), h, gh (L,n,C), R_masked / R_random / R_plain (L,H,n,n) (the
    first two also ``_strict``: read the strict way whatever the call's option), the oracle's
    input relevance attnlrp / cp (n,)."""
    A, gA = d["A"], d["gA"]
    pick = (lambda M: M.mean(0)) if rows is None else (lambda M: M[rows].sum(0))
    if method in ("attnlrp", "cp-lrp"):
        s = d[method.removesuffix("-lrp")]
        return s, s.abs().max()

    def lrp_rollout(R):
        return pick(chefer_rollout((gA * R).clamp(min=0).mean(1), normalize_rows))

    if method == "rawatt":
        s = pick(A[-1].mean(0))
    elif method == "rollout":  # Abnar & Zuidema: 0.5 A + 0.5 I, re-normalised, product
        joint = torch.eye(A.shape[-1], dtype=torch.float64)
        for a in A.mean(1):
            a = 0.5 * a + 0.5 * torch.eye(len(a), dtype=torch.float64)
            joint = (a / a.sum(-1, keepdim=True)) @ joint
        s = pick(joint)
    elif method == "mask-lrp":
        s = lrp_rollout(d["R_masked"])
    elif method == "random-mask":
        s = lrp_rollout(d["R_random"])
    elif method == "mask-lrp-strict":
        s = lrp_rollout(d["R_masked_strict"])
    elif method == "random-mask-strict":
        s = lrp_rollout(d["R_random_strict"])
    elif method == "rel-rollout":
        s = lrp_rollout(d["R_plain"])
    elif method == "partial-lrp":
        s = pick(d["R_plain"][-1].clamp(min=0).mean(0))
    elif method == "gae":
        s = pick(chefer_rollout((gA * A).clamp(min=0).mean(1)))
    elif method == "cam":
        unclamped = gA[-1].mean(0).mean(0)
        return unclamped.clamp(min=0), unclamped.abs().max()
    elif method == "gradcam":
        weights = gA[-1].mean((1, 2))
        heat = pick((weights[:, None, None] * A[-1]).mean(0))
        per_row = pick((weights[:, None, None] * A[-1]).mean(0).clamp(min=0))
        return per_row, heat.abs().max()
    elif method == "attcat":
        s = sum((d["gh"][b] * d["h"][b]).sum(-1) * A[b].mean(0).mean(0) for b in range(len(A)))
    else:
        raise KeyError(method)
    return s, s.abs().max()


@functools.lru_cache(maxsize=None)
def computed(name, renormalize=True, normalize_rows=False, mask_semantics="reference"):
    """explain_all of every method on one tiny model, and the per-sequence references."""
    hf, model, batch, inputs = case(name, 0)
    target = "both" if model.spec.pool == "none" else None
    ours = explain_all(model, inputs, ALL, target, HEAD_MASK, seed=RANDOM_SEED, renormalize=renormalize,
                       mask_semantics=mask_semantics, normalize_rows=normalize_rows)
    seed = seed_of(model, inputs, ours["attnlrp"])
    types = batch.get("token_type_ids")

    def run_oracle(head_mask, rule="attnlrp", semantics=mask_semantics):
        return oracle.explain(hf, model.spec.task, torch.as_tensor(batch["input_ids"]),
                              torch.as_tensor(batch["attention_mask"]),
                              token_type_ids=None if types is None else torch.as_tensor(types),
                              seed=torch.from_numpy(seed), rule=rule, head_mask=head_mask,
                              renormalize=renormalize, mask_semantics=semantics)

    ref = hf_reference(hf, model.spec.task, batch, seed)
    random_mask = random_head_mask(HEAD_MASK, RANDOM_SEED)
    masks = {"masked": HEAD_MASK, "random": random_mask}
    read = {(kind, s): run_oracle(m, semantics=s) for kind, m in masks.items() for s in MASK_SEMANTICS}
    plain, cp = run_oracle(None), run_oracle(None, "cp")
    ref.update(R_plain=plain["attention_relevance"], attnlrp=plain["tokens"], cp=cp["tokens"])
    for kind in masks:
        ref[f"R_{kind}"] = read[kind, mask_semantics]["attention_relevance"]
        ref[f"R_{kind}_strict"] = read[kind, "strict"]["attention_relevance"]
    kappa = {}
    if renormalize:  # read from the heads' arriving relevance, the reference reading
        for method in MASKED_METHODS:
            kind = "random" if method in RANDOM_METHODS else "masked"
            kappa[method] = conditioning(read[kind, "reference"], masks[kind])
    references = {}
    for method in ALL:
        scores, scales = [], []
        for b, n in enumerate(batch["attention_mask"].sum(1)):
            d = {k: torch.from_numpy(v[b])[..., :n, :n] if v.ndim == 5 else torch.from_numpy(v[b])[..., :n, :]
                 if v.ndim == 4 else torch.from_numpy(v[b])[:n] for k, v in ref.items()}
            s, scale = reference_scores(method, d, target_rows(model.spec.pool, seed[b], n), normalize_rows)
            scores.append(s.numpy())
            scales.append(float(scale))
        references[method] = scores, scales
    return model, batch, ours, references, kappa


def seed_of(model, inputs, explanations) -> np.ndarray:
    """The seed explain_all used, rebuilt from the targets its Explanations report."""
    seed = np.zeros(model.logits_shape(inputs), np.float32)
    for b, e in enumerate(explanations):
        if model.spec.pool == "none":
            start, end = e.target[1]
            seed[b, start, 0] = seed[b, end, 1] = 1.0
        else:
            seed[b, e.target] = 1.0
    return seed


def check_method(method, ours, reference, kappa=None):
    scores, scales = reference
    for b, (e, ref, scale) in enumerate(zip(ours, scores, scales)):
        assert e.scores.shape == ref.shape, f"{method}[{b}]: {e.scores.shape} scores, {ref.shape} tokens"
        if np.abs(ref).max() == 0:  # clamped to nothing: compare with the unclamped size
            assert np.abs(e.scores).max() <= 1e-4 * scale, f"{method}[{b}]: {e.scores} where 0 is expected"
            continue
        check_relevance(e.scores[None], ref[None], True, f"{method}[{b}]",
                        None if kappa is None else kappa[b:b + 1])


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("name", NAMES)
def test_method_equals_reference(name, method):
    _, _, ours, references, kappa = computed(name)
    check_method(method, ours[method], references[method], kappa.get(method))
    assert all(e.method == method for e in ours[method])


@pytest.mark.parametrize("option", [dict(renormalize=False), dict(normalize_rows=True),
                                    dict(mask_semantics="strict")])
@pytest.mark.parametrize("name", ["bert-cls", "llama-lm"])
def test_rollout_options_equal_reference(name, option):
    """renormalize=False (the reference code's Mask-LRP), Chefer's row normalisation and the
    strict reading of Eq. 10 (R_A of block b after b's own mask)."""
    _, _, ours, references, kappa = computed(name, **option)
    for method in MASKED_METHODS + ("rel-rollout",):
        check_method(method, ours[method], references[method], kappa.get(method))


def test_options_change_the_result():
    """The options are wired: each changes Mask-LRP on a model where they matter."""
    base = computed("bert-cls")[2]["mask-lrp"][0].scores
    for option in (dict(renormalize=False), dict(normalize_rows=True), dict(mask_semantics="strict")):
        other = computed("bert-cls", **option)[2]["mask-lrp"][0].scores
        assert not np.allclose(base, other, rtol=1e-3), option


@pytest.mark.parametrize("name", ["bert-cls", "llama-lm"])
def test_strict_variants_are_the_strict_reading_bitwise(name):
    """"mask-lrp-strict" / "random-mask-strict" beside the reference-reading methods in one
    call are bitwise explain_all(..., mask_semantics="strict") of "mask-lrp" / "random-mask"
    (same masks, same seed); with mask_semantics="strict" both names share one stream."""
    _, model, _, inputs = case(name, 0)
    both = explain_all(model, inputs, ("mask-lrp", "mask-lrp-strict", "random-mask", "random-mask-strict"),
                       head_mask=HEAD_MASK, seed=RANDOM_SEED)
    strict = explain_all(model, inputs, ("mask-lrp", "random-mask"), head_mask=HEAD_MASK, seed=RANDOM_SEED,
                         mask_semantics="strict")
    reference = explain_all(model, inputs, ("mask-lrp", "random-mask"), head_mask=HEAD_MASK, seed=RANDOM_SEED)
    for method in ("mask-lrp", "random-mask"):
        for b, (s, t, r, x) in enumerate(zip(both[f"{method}-strict"], strict[method], reference[method],
                                             both[method])):
            np.testing.assert_array_equal(s.scores, t.scores, err_msg=f"{method}-strict[{b}]")
            np.testing.assert_array_equal(x.scores, r.scores, err_msg=f"{method}[{b}]")
            assert s.method == f"{method}-strict" and s.target == t.target
        assert not np.allclose(both[method][0].scores, both[f"{method}-strict"][0].scores, rtol=1e-3)

    counting = CountingModel(model)
    shared = explain_all(counting, inputs, ("mask-lrp", "mask-lrp-strict"), head_mask=HEAD_MASK,
                         mask_semantics="strict")
    assert counting.calls == [(2, True, False)]  # the gradient and one masked stream
    for a, b in zip(shared["mask-lrp"], shared["mask-lrp-strict"]):
        np.testing.assert_array_equal(a.scores, b.scores)


def test_masked_and_random_method_lists():
    assert set(MASKED_METHODS) == {"mask-lrp", "random-mask", "mask-lrp-strict", "random-mask-strict"}
    assert set(RANDOM_METHODS) == {"random-mask", "random-mask-strict"}


@pytest.mark.parametrize("name", ["bert-qa", "distilbert-qa"])
def test_qa_rows_are_the_start_plus_the_end_row(name):
    """QA target "both": the map's start row plus its end row (RawAtt needs no backward, so
    the three targets share one attention map)."""
    _, model, _, inputs = case(name, 0)
    both = explain_all(model, inputs, ("rawatt",), target="both")["rawatt"]
    starts = explain_all(model, inputs, ("rawatt",), target=[("start", e.target[1][0]) for e in both])["rawatt"]
    ends = explain_all(model, inputs, ("rawatt",), target=[("end", e.target[1][1]) for e in both])["rawatt"]
    for e, start, end in zip(both, starts, ends):
        np.testing.assert_allclose(e.scores, start.scores + end.scores, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["bert-cls", "gpt2-lm"])
def test_padding_does_not_change_a_sequence(name):
    """A sequence inside a padded batch gets the same explanation as alone (padding dropped)."""
    _, model, batch, inputs = case(name, 0)
    together = explain_all(model, inputs, ALL, head_mask=HEAD_MASK)
    b = int(np.argmin(batch["attention_mask"].sum(1)))
    n = int(batch["attention_mask"][b].sum())
    alone = explain_all(model, {k: v[b:b + 1, :n] for k, v in batch.items()}, ALL, head_mask=HEAD_MASK)
    for method in ALL:
        np.testing.assert_allclose(alone[method][0].scores, together[method][b].scores, rtol=1e-4,
                                   atol=1e-5 * np.abs(together[method][b].scores).max(), err_msg=method)


@pytest.mark.parametrize("name", ["bert-cls", "bert-qa", "llama-lm"])
def test_many_methods_in_one_call_equal_one_at_a_time(name):
    """Equal to float32 rounding, not bitwise: a call without taps lets the engine compute only
    the pooled rows of the last layer, a call with taps all rows (other GEMM shapes)."""
    _, model, _, inputs = case(name, 1)
    target = "both" if model.spec.pool == "none" else None
    together = explain_all(model, inputs, ALL, target, HEAD_MASK, seed=3)
    for method in ALL:
        alone = explain_all(model, inputs, method, target, HEAD_MASK, seed=3)[method]
        for a, b in zip(alone, together[method]):
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-5 * np.abs(b.scores).max(),
                                       err_msg=method)
            assert a.target == b.target
            np.testing.assert_allclose(a.logit, b.logit, rtol=1e-6)


class CountingModel:
    """A Model whose engine calls are recorded: (number of streams, attentions, hidden)."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def run(self, inputs, seed=None, streams=(), **kw):
        self.calls.append((len(streams), kw.get("attentions", False), kw.get("hidden", False)))
        return self.model.run(inputs, seed, streams, **kw)

    def forward(self, inputs, **kw):
        return self.run(inputs, **kw)


@pytest.mark.parametrize("methods, target, calls", [
    # gradient, attnlrp, masked, masked-strict + random, random-strict, cp
    (ALL, None, [(4, True, True), (3, True, False)]),
    (("mask-lrp", "gae", "cam", "gradcam", "attcat", "rawatt", "rollout", "partial-lrp", "rel-rollout",
      "attnlrp"), None, [(3, True, True)]),
    (("rawatt", "rollout"), None, [(0, True, False)]),
    (("attnlrp", "lrp"), None, [(1, False, False)]),
    (("mask-lrp",), "both", [(0, False, False), (2, True, False)]),  # QA: the argmax needs a forward
    (("rawatt",), "both", [(0, True, False)]),
])
def test_engine_calls_are_shared(methods, target, calls):
    name = "bert-qa" if target == "both" else "bert-cls"
    model = CountingModel(case(name, 0)[1])
    explain_all(model, case(name, 0)[3], methods, target, HEAD_MASK)
    assert model.calls == calls


def test_an_all_ones_mask_shares_the_unmasked_stream():
    _, model, _, inputs = case("bert-cls", 0)
    counting = CountingModel(model)
    ones = np.ones_like(HEAD_MASK)
    out = explain_all(counting, inputs, ("mask-lrp", "mask-lrp-strict", "rel-rollout"), head_mask=ones)
    assert counting.calls == [(2, True, False)]
    for a, b, c in zip(out["mask-lrp"], out["mask-lrp-strict"], out["rel-rollout"]):
        np.testing.assert_array_equal(a.scores, c.scores)
        np.testing.assert_array_equal(b.scores, c.scores)


def test_random_mask_is_seeded_and_keeps_the_count():
    first, again, other = (random_head_mask(HEAD_MASK, s) for s in (5, 5, 6))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    for m in (first, other):
        assert m.dtype == np.float32 and m.shape == HEAD_MASK.shape
        assert set(np.unique(m)) <= {0.0, 1.0} and m.sum() == np.count_nonzero(HEAD_MASK)
    _, model, _, inputs = case("bert-cls", 0)
    run = lambda seed: explain_all(model, inputs, ("random-mask",), head_mask=HEAD_MASK, seed=seed)  # noqa: E731
    a, b, c = run(5)["random-mask"], run(5)["random-mask"], run(6)["random-mask"]
    explicit = explain_all(model, inputs, ("mask-lrp",), head_mask=first)["mask-lrp"]
    for x, y, z, w in zip(a, b, c, explicit):
        np.testing.assert_array_equal(x.scores, y.scores)
        np.testing.assert_array_equal(x.scores, w.scores)
        assert not np.allclose(x.scores, z.scores)


def test_a_head_statistics_mask_is_accepted_and_drawn_alike():
    """masklrp.headmask.HeadMask: its .array is the mask; its random_like the same draw."""
    from masklrp.headmask import HeadMask

    positional = np.zeros((2, 4, 3), np.int64)
    positional[..., 0] = 10 * HEAD_MASK  # heads kept by the mask always look one token back
    stats = HeadMask(positional, np.zeros((2, 4, 1), np.int64), 10, [1], np.zeros((1, 3), np.int64),
                     relations=["nsubj"])
    np.testing.assert_array_equal(stats.array, HEAD_MASK)
    for seed in range(5):
        np.testing.assert_array_equal(random_head_mask(stats, seed), stats.random_like(seed))
    _, model, _, inputs = case("bert-cls", 0)
    a = explain_all(model, inputs, ("mask-lrp",), head_mask=stats)["mask-lrp"]
    b = explain_all(model, inputs, ("mask-lrp",), head_mask=HEAD_MASK)["mask-lrp"]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.scores, y.scores)


def test_aliases_and_captum_style_explainers_agree():
    _, model, _, inputs = case("gpt2-lm", 0)
    out = explain_all(model, inputs, ("lrp", "attnlrp", "mask-lrp"), head_mask=HEAD_MASK)
    assert list(out) == ["lrp", "attnlrp", "mask-lrp"] and ALIASES["lrp"] == "attnlrp"
    direct = masklrp.AttnLRP(model).attribute(inputs)

    class HeadMaskLike:  # what masklrp.headmask.HeadMask offers
        array = HEAD_MASK

    masked = MaskLRP(model, HeadMaskLike()).attribute(inputs)
    strict = MaskLRP(model, HEAD_MASK, mask_semantics="strict").attribute(inputs)
    mine_strict = explain_all(model, inputs, ("mask-lrp",), head_mask=HEAD_MASK, mask_semantics="strict")
    for lrp, attn, d, m, mine in zip(out["lrp"], out["attnlrp"], direct, masked, out["mask-lrp"]):
        assert lrp is attn  # computed once
        np.testing.assert_allclose(lrp.scores, d.scores, rtol=1e-5, atol=1e-5 * np.abs(d.scores).max())
        np.testing.assert_array_equal(m.scores, mine.scores)
        assert lrp.method == "attnlrp" and m.method == "mask-lrp" and m.tokens == d.tokens
    for m, mine in zip(strict, mine_strict["mask-lrp"]):
        np.testing.assert_array_equal(m.scores, mine.scores)


def test_contrastive_seed_reaches_every_method():
    """A contrastive causal-LM seed is resolved once and used by every stream."""
    _, model, _, inputs = case("gpt2-lm", 0)
    out = explain_all(model, inputs, ("attnlrp", "mask-lrp"), target=5, head_mask=HEAD_MASK, contrastive=True)
    direct = masklrp.AttnLRP(model).attribute(inputs, target=5, contrastive=True)
    plain = explain_all(model, inputs, ("mask-lrp",), target=5, head_mask=HEAD_MASK)["mask-lrp"]
    logits = model.forward(inputs)["logits"]
    for a, d, m, p, z in zip(out["attnlrp"], direct, out["mask-lrp"], plain, logits):
        np.testing.assert_allclose(a.scores, d.scores, rtol=1e-5, atol=1e-5 * np.abs(d.scores).max())
        # The contrastive logit z_5 − mean_{j≠5} z_j cancels: two calls' float32 logits differ by
        # their rounding noise (1e-5 of their size, as in test_engine.py), which enters with
        # |z_5| + mean|z_j|, not with the much smaller margin (a relative bound failed at 1.2e-6).
        noise = 1e-5 * float(abs(z[5]) + np.abs(np.delete(z, 5)).mean())
        assert a.target == 5
        assert a.logit == pytest.approx(d.logit, rel=0, abs=noise)
        assert m.logit == pytest.approx(d.logit, rel=0, abs=noise)
        assert not np.allclose(m.scores, p.scores)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(methods=("nope",)), ValueError, "methods"),
    (dict(methods=()), ValueError, "methods"),
    (dict(methods=5), TypeError, "methods"),
    (dict(methods=("mask-lrp",), head_mask=None), ValueError, "head_mask"),
    (dict(methods=("random-mask",), head_mask=None), ValueError, "head_mask"),
    (dict(head_mask=np.ones((2, 5))), ValueError, "head_mask"),
    (dict(head_mask=np.full((2, 4), np.nan)), ValueError, "head_mask"),
    (dict(head_mask=np.full((2, 4), "x")), TypeError, "head_mask"),
    (dict(seed="0"), TypeError, "seed"),
    (dict(seed=True), TypeError, "seed"),
    (dict(renormalize="yes"), TypeError, "renormalize"),
    (dict(normalize_rows=1), TypeError, "normalize_rows"),
    (dict(mask_semantics="literal"), ValueError, "mask_semantics"),
    (dict(target=99), ValueError, "target"),
])
def test_bad_input_names_the_argument(kwargs, error, match):
    _, model, _, inputs = case("bert-cls", 0)
    kwargs = {"methods": ("mask-lrp",), "head_mask": HEAD_MASK, **kwargs}
    with pytest.raises(error, match=match):
        explain_all(model, inputs, **kwargs)


def test_mask_lrp_explainer_checks_its_mask():
    _, model, _, _ = case("bert-cls", 0)
    with pytest.raises(ValueError, match="head_mask"):
        MaskLRP(model, np.ones((3, 4)))
    with pytest.raises(TypeError, match="head_mask"):
        MaskLRP(model, object())


def test_tap_methods_run_in_row_batches_that_give_one_calls_results(monkeypatch):
    """Methods that read taps ((B, L, H, T, T) per stream) run over row batches sized by
    TAP_BUDGET_BYTES, so peak memory does not grow with B (issue G.8). One row per batch gives
    what one call gives, up to float32 rounding (GEMMs with fewer rows: 1e-5 of the largest
    score, as for the engine's own chunks in test_engine.py); targets follow their rows."""
    import masklrp.methods as methods_module

    _, model, _, inputs = case("bert-cls", 0)
    names = ("gae", "mask-lrp", "attcat", "attnlrp")
    B = len(inputs.input_ids)
    targets = [b % 3 for b in range(B)]
    whole = explain_all(model, inputs, names, target=targets, head_mask=HEAD_MASK)
    taps, chosen = {"attnlrp": methods_module._Taps(attentions=True)}, {"gae": METHODS["gae"]}
    assert methods_module._row_batches(model, inputs, taps, chosen) == [slice(0, B)]
    monkeypatch.setattr(methods_module, "TAP_BUDGET_BYTES", 1)
    assert methods_module._row_batches(model, inputs, taps, chosen) == [slice(b, b + 1) for b in range(B)]
    for target in (targets, None, 1):
        rows = explain_all(model, inputs, names, target=target, head_mask=HEAD_MASK)
        want = whole if target is targets else explain_all(model, inputs, names, target=target,
                                                            head_mask=HEAD_MASK)
        for name in names:
            assert len(rows[name]) == B
            for a, b in zip(rows[name], want[name]):
                assert a.target == b.target and a.tokens == b.tokens
                np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-5 * np.abs(b.scores).max())
    with pytest.raises(ValueError, match="got 2 targets for a batch of"):
        explain_all(model, inputs, names, target=[0, 1], head_mask=HEAD_MASK)
