"""masklrp.metrics: known answers on hand-made probabilities, the perturbation rules, and the
engine runner against a forward of each perturbed input.

The faithfulness check uses a constructed model where the answer is certain: every word
embedding but one ("the trigger") is set equal to the replacement token's, so replacing
any other token changes nothing the model sees, and only the trigger moves the output.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

import masklrp
from masklrp import metrics as M
from masklrp.model import Inputs

# ---------------------------------------------------------------------------- pure metrics
P_FULL = [0.9, 0.6]
P_REMOVED = [[0.5, 0.3], [0.6, 0.2]]


def test_aopc_known_answer():
    c = M.aopc(P_FULL, P_REMOVED)
    np.testing.assert_allclose(c.per_k, [(0.4 + 0.0) / 2, (0.6 + 0.4) / 2])
    assert c.mean == pytest.approx(0.35)
    assert M.comprehensiveness(P_FULL, P_REMOVED).mean == pytest.approx(0.35)


def test_lodds_known_answer():
    c = M.lodds(P_FULL, P_REMOVED)
    k1 = (math.log(0.5 / 0.9) + math.log(0.6 / 0.6)) / 2
    k2 = (math.log(0.3 / 0.9) + math.log(0.2 / 0.6)) / 2
    np.testing.assert_allclose(c.per_k, [k1, k2])
    assert c.mean == pytest.approx((k1 + k2) / 2)
    assert np.isfinite(M.lodds([0.5], [[0.0]]).mean), "a probability of 0 is clipped, not -inf"


def test_sufficiency_and_abpc_known_answer():
    assert M.sufficiency([0.8, 0.7], [[0.8, 0.6], [0.5, 0.7]]).mean == pytest.approx((0 + 0.2 + 0.2 + 0) / 4)
    c = M.abpc([[0.9, 0.8, 0.7]], [[0.5, 0.2, 0.1]])
    np.testing.assert_allclose(c.per_k, [0.4, 0.6, 0.6])
    assert c.mean == pytest.approx(1.6 / 3)
    # a single sequence can be given as (K,)
    assert M.aopc(0.9, [0.5, 0.3]).mean == pytest.approx(0.5)


def test_precision_at_known_answer():
    scores = [0.1, 0.9, 0.5, 0.3, 0.5]
    gold = [False, True, False, True, True]
    assert M.precision_at(scores, gold, k=2) == 0.5            # tokens 1, 2
    assert M.precision_at(scores, gold, k=3) == pytest.approx(2 / 3)  # tie 2/4: the earlier first
    assert M.precision_at(scores, gold, k=2, candidates=[1, 1, 0, 1, 1]) == 1.0  # tokens 1, 4
    assert M.precision_at(scores, gold, k=20) == 3 / 5          # fewer tokens than k: over all 5


@pytest.mark.parametrize("call, match", [
    (lambda: M.aopc([0.9, 0.5], [[0.1, 0.2]]), "p_full must be"),
    (lambda: M.aopc([1.5], [[0.1]]), r"in \[0, 1\]"),
    (lambda: M.lodds([0.5], [[np.nan]]), "finite"),
    (lambda: M.abpc([[0.1, 0.2]], [[0.1]]), "one shape"),
    (lambda: M.precision_at([0.1, 0.2], [True], k=1), "one length"),
    (lambda: M.precision_at([0.1], [True], k=0), "k must be"),
    (lambda: M.precision_at([0.1], [True], candidates=[False]), "no token"),
])
def test_metrics_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------- perturbation rules
@pytest.mark.parametrize("n, k, rounding, expected", [
    (10, 0.3, "ceil", 3), (10, 0.3, "floor", 3), (10, 0.3, "round", 3),   # 0.3·10 is 3, not 3.000…04
    (5, 0.1, "ceil", 1), (5, 0.1, "round", 1), (5, 0.1, "floor", 0),
    (4, 0.1, "round", 0), (10, 0.25, "round", 3), (10, 0.25, "floor", 2),
    (7, 0.9, "ceil", 7), (7, 1.0, "floor", 7), (0, 0.5, "ceil", 0),
])
def test_n_replaced(n, k, rounding, expected):
    assert M.n_replaced(n, k, rounding) == expected


@pytest.mark.parametrize("n, k, rounding, error, match", [
    (5, -1, "ceil", ValueError, r"k must be a fraction in \[0, 1\], got -1"),
    (5, 1.5, "ceil", ValueError, "k must be a fraction"),
    (5, float("nan"), "ceil", ValueError, "k must be a finite number"),
    (-5, 0.5, "ceil", ValueError, "n must be at least 0, got -5"),
    (5.5, 0.5, "ceil", TypeError, "n must be an int"),
    (5, 0.5, "up", ValueError, "rounding must be one of"),
])
def test_n_replaced_refuses_what_is_not_a_count(n, k, rounding, error, match):
    with pytest.raises(error, match=match):
        M.n_replaced(n, k, rounding)


def _inputs() -> Inputs:
    """Two right-padded rows; token 0 and the last real token of each row are special."""
    ids = np.array([[1, 11, 12, 13, 14, 2], [1, 21, 22, 2, 0, 0]])
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    positions = np.array([[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]]) + 3
    types = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]])
    return Inputs(ids, mask, positions, types)


SPECIAL = np.array([[1, 0, 0, 0, 0, 1], [1, 0, 0, 1, 0, 0]], dtype=bool)
# real-token scores: the special tokens score highest, so a wrong rule would pick them
SCORES = [np.array([9.0, 0.1, 0.4, 0.3, 0.2, 8.0]), np.array([9.0, -1.0, 2.0, 7.0])]


@pytest.mark.parametrize("mode, k, row0, row1", [
    ("most", 0.5, [1, 11, 99, 99, 14, 2], [1, 21, 99, 2, 0, 0]),
    ("least", 0.5, [1, 99, 12, 13, 99, 2], [1, 99, 22, 2, 0, 0]),
    ("keep", 0.25, [1, 99, 12, 99, 99, 2], [1, 99, 22, 2, 0, 0]),
    ("most", 1.0, [1, 99, 99, 99, 99, 2], [1, 99, 99, 2, 0, 0]),
])
def test_perturb_replaces_by_rank_and_never_special_tokens(mode, k, row0, row1):
    inputs = _inputs()
    [out] = M.perturb(inputs, SCORES, (k,), mode, replacement=99, special_tokens_mask=SPECIAL)
    np.testing.assert_array_equal(out.input_ids, [row0, row1])
    for name in ("attention_mask", "position_ids", "token_type_ids"):  # positions kept
        np.testing.assert_array_equal(getattr(out, name), getattr(inputs, name))
    np.testing.assert_array_equal(inputs.input_ids[0], [1, 11, 12, 13, 14, 2])  # input untouched


def test_perturb_checks_scores():
    inputs = _inputs()
    with pytest.raises(ValueError, match="real tokens"):
        M.perturb(inputs, [SCORES[0], SCORES[0]])
    with pytest.raises(ValueError, match="batch of 2"):
        M.perturb(inputs, SCORES[:1])
    with pytest.raises(ValueError, match="not a padded"):
        M.perturb(inputs, np.zeros((2, 6)))
    with pytest.raises(ValueError, match="fractions"):
        M.perturb(inputs, SCORES, (0.0,))
    with pytest.raises(ValueError, match="modes"):
        M.perturb(inputs, SCORES, mode="top")
    with pytest.raises(ValueError, match="rounding"):
        M.perturb(inputs, SCORES, rounding="up")


def test_special_tokens_resolution():
    inputs = _inputs()
    bare = SimpleNamespace(tokenizer=None)
    np.testing.assert_array_equal(M.special_tokens(bare, inputs), inputs.attention_mask == 0)
    tokenized = SimpleNamespace(tokenizer=SimpleNamespace(special_ids=frozenset({1, 2})))
    np.testing.assert_array_equal(M.special_tokens(tokenized, inputs), SPECIAL | (inputs.attention_mask == 0))
    np.testing.assert_array_equal(M.special_tokens(bare, inputs, SPECIAL), SPECIAL | (inputs.attention_mask == 0))
    inputs.special_tokens_mask = np.ones_like(SPECIAL)
    assert M.special_tokens(tokenized, inputs).all()  # the Inputs' own mask comes before the tokenizer's
    with pytest.raises(ValueError, match="special_tokens_mask"):
        M.special_tokens(bare, inputs, SPECIAL[:, :3])


# ---------------------------------------------------------------------------- through the engine
@pytest.fixture(scope="module")
def tiny():
    """A tiny seeded BERT classifier (3 classes) and padded inputs of 6 sequences."""
    pytest.importorskip("torch", reason="the tiny test models are built with torch (test extra)")
    pytest.importorskip("transformers", reason="the tiny test models are built with transformers (test extra)")
    from hf_models import build, example_inputs

    module = build("bert-cls", seed=3)
    batch = example_inputs(module, batch=6, length=14, seed=3)
    model = masklrp.load(module)
    inputs = model.prepare(batch["input_ids"], batch["attention_mask"], token_type_ids=batch["token_type_ids"])
    special = np.zeros(inputs.input_ids.shape, dtype=bool)
    special[:, 0] = True  # as if [CLS]
    return module, model, inputs, special


def test_curves_match_a_forward_of_each_perturbed_input(tiny):
    _, model, inputs, special = tiny
    rng = np.random.default_rng(0)
    scores = [rng.standard_normal(int(n)) for n in inputs.attention_mask.sum(axis=1)]
    ks = (0.05, 0.3, 0.5, 0.75, 1.0)
    target = np.arange(6) % 3
    c = M.perturbation_curves(model, inputs, scores, ks, modes=M.MODES, target=target, replacement=5,
                              special_tokens_mask=special, batch_size=7)
    logits = model.forward(inputs)["logits"].astype(np.float64)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(c.p_full, p[np.arange(6), target], rtol=1e-5)
    np.testing.assert_array_equal(c.n_candidates, inputs.attention_mask.sum(axis=1) - 1)
    for mode in M.MODES:
        for j, perturbed in enumerate(M.perturb(inputs, scores, ks, mode, 5, special)):
            assert not np.any((perturbed.input_ids != inputs.input_ids) & special)
            logits = model.forward(perturbed)["logits"].astype(np.float64)
            expected = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))[np.arange(6), target]
            np.testing.assert_allclose(c.probs[mode][:, j], expected, rtol=1e-5, atol=1e-7,
                                       err_msg=f"mode {mode}, k {ks[j]}")


def test_curves_default_target_is_the_prediction(tiny):
    _, model, inputs, special = tiny
    scores = [np.arange(int(n), dtype=float) for n in inputs.attention_mask.sum(axis=1)]
    c = M.perturbation_curves(model, inputs, scores, (0.5,), special_tokens_mask=special)
    np.testing.assert_array_equal(c.target, model.forward(inputs)["logits"].argmax(axis=1))
    with pytest.raises(ValueError, match="target"):
        M.perturbation_curves(model, inputs, scores, target=[0, 1])
    with pytest.raises(ValueError, match="replacement id"):
        M.perturbation_curves(model, inputs, scores, replacement=10_000)
    with pytest.raises(TypeError, match="replacement"):
        M.perturbation_curves(model, inputs, scores, replacement=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        M.perturbation_curves(model, inputs, scores, batch_size=0)


def test_given_logits_stand_in_for_the_unperturbed_forward(tiny):
    """evaluate() shares one forward's logits between methods: the curves must not change."""
    _, model, inputs, special = tiny
    scores = [np.cos(np.arange(int(n))) for n in inputs.attention_mask.sum(axis=1)]
    own = M.perturbation_curves(model, inputs, scores, (0.2, 0.6), modes=M.MODES, special_tokens_mask=special)
    logits = model.forward(inputs)["logits"]
    given = M.perturbation_curves(model, inputs, scores, (0.2, 0.6), modes=M.MODES, special_tokens_mask=special,
                                  logits=logits)
    np.testing.assert_array_equal(given.target, own.target)
    # one engine forward of the same rows, padded differently: float32 rounding apart at most
    np.testing.assert_allclose(given.p_full, own.p_full, rtol=1e-6)
    for mode in M.MODES:
        np.testing.assert_array_equal(given.probs[mode], own.probs[mode])
    with pytest.raises(ValueError, match=r"logits must be \(batch, outputs\)"):
        M.perturbation_curves(model, inputs, scores, logits=logits[:, :2])
    with pytest.raises(ValueError, match="logits must be finite"):
        M.perturbation_curves(model, inputs, scores, logits=np.full_like(logits, np.nan))


def test_the_influential_token_first_beats_the_reversed_ranking(tiny):
    """Only the trigger token can move this model; ranking it first must win at every k."""
    module, _, inputs, special = tiny
    import torch

    pad = 0
    trigger = min(set(range(4, module.config.vocab_size)) - set(inputs.input_ids.ravel().tolist()))
    with torch.no_grad():
        table = module.get_input_embeddings().weight
        word = table.clone()
        table[:] = word[pad]                # every token looks like the replacement ...
        table[trigger] = 3 * word[trigger]  # ... but the trigger
    try:
        model = masklrp.load(module)
        ids = inputs.input_ids.copy()
        real = inputs.attention_mask.sum(axis=1)
        place = [int(n) // 2 for n in real]
        ids[np.arange(6), place] = trigger
        x = Inputs(ids, inputs.attention_mask, inputs.position_ids, inputs.token_type_ids)
        without = Inputs(np.where(ids == trigger, pad, ids), x.attention_mask, x.position_ids, x.token_type_ids)

        def probs(inputs):
            z = model.forward(inputs)["logits"].astype(np.float64)
            return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)

        # explain the class whose probability the trigger raises most: removing it must hurt
        gain = probs(x) - probs(without)
        target = gain.argmax(axis=1)
        drop = gain[np.arange(6), target]
        assert np.all(drop > 1e-3), "the constructed trigger has no effect"

        ranked = [(np.arange(n) == p).astype(float) for n, p in zip(real, place)]  # trigger first
        options = dict(target=target, replacement=pad, special_tokens_mask=special)
        good = M.perturbation_curves(model, x, ranked, **options)
        bad = M.perturbation_curves(model, x, [-r for r in ranked], **options)  # trigger last
        aopc_good, aopc_bad = (M.aopc(c.p_full, c.probs["most"]).mean for c in (good, bad))
        assert aopc_good == pytest.approx(drop.mean(), rel=1e-4)
        assert aopc_good > aopc_bad + 0.5 * drop.mean()
        assert M.lodds(good.p_full, good.probs["most"]).mean < M.lodds(bad.p_full, bad.probs["most"]).mean
        # the reversed ranking removes only inert tokens until it reaches the trigger
        n_cand = good.n_candidates
        for j, k in enumerate(M.KS):
            untouched = np.array([M.n_replaced(n, k) < n for n in n_cand])
            np.testing.assert_allclose(bad.probs["most"][untouched, j], bad.p_full[untouched], rtol=1e-5)
    finally:
        with torch.no_grad():
            module.get_input_embeddings().weight[:] = word


def test_question_answering_models_are_refused(tiny):
    pytest.importorskip("torch", reason="the tiny test models are built with torch (test extra)")
    from hf_models import build

    qa = masklrp.load(build("bert-qa", seed=0))
    inputs = qa.prepare(np.array([[5, 6, 7]]))
    with pytest.raises(ValueError, match="pooled classifier"):
        M.perturbation_curves(qa, inputs, [np.zeros(3)])
