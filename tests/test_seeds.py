"""Several seeds per engine call (issue I item 3): one forward, K backward sweeps.

Each seed's numbers must be what a call with that seed (and rows) alone gives, **bit for
bit**: the layers run once with the same shapes and the same code as in the lone call, and
each seed's head and sweeps then run exactly as the lone call's do, so nothing differs but
which seed comes first. The lone call that reads the pool's own row with no taps prunes its
last layer to that row (Workspace.pruned), a shorter GEMM, and a prefix or a sequence of a
padded batch explained alone runs shorter GEMMs too: those hold to float32 rounding, 1e-5 of
the largest score (test_engine's padded-vs-alone bound; seen: up to 2e-6).
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="the tiny models are built with torch (pip install '.[test]')")
pytest.importorskip("transformers", reason="the tiny models are built with transformers")

import masklrp  # noqa: E402
from hf_models import build, example_inputs  # noqa: E402

STREAMS = ("attnlrp", "cp", "gradient")
K = 4
TOLERANCE = 1e-5  # relative to the largest |score|: float32 rounding of GEMMs of other shapes


def case(name: str, seed: int = 0):
    hf = build(name, seed=seed)
    model = masklrp.load(hf)
    batch = {k: v.numpy() for k, v in example_inputs(hf, 3, 11, seed=seed).items() if v is not None}
    inputs = model.prepare(batch["input_ids"], batch["attention_mask"], token_type_ids=batch.get("token_type_ids"))
    return model, inputs


def random_rows(inputs, rng) -> np.ndarray:
    """(K, B) real tokens: row 0 of each sequence's last, the others drawn."""
    lengths = inputs.attention_mask.sum(axis=1)
    return np.stack([lengths - 1] + [rng.integers(0, lengths) for _ in range(K - 1)]).astype(np.int64)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("name", ["llama-lm", "gemma3-lm", "gpt2-lm", "bert-cls", "bert-qa"])
def test_k_seeds_equal_k_calls_bit_for_bit(name):
    """attnlrp, cp and gradient streams, a padded batch; rows for pooled heads (Gemma 3:
    soft-capped logits, whose backward reads the seed's own raw logits)."""
    model, inputs = case(name)
    rng = np.random.default_rng(0)
    pooled = model.spec.pool != "none"
    rows = random_rows(inputs, rng) if pooled else None
    seeds = rng.standard_normal((K,) + model.logits_shape(inputs)).astype(np.float32)
    together = model.run(inputs, seeds, STREAMS, rows=rows)
    assert together["logits"].shape == ((K,) if pooled else ()) + model.logits_shape(inputs)
    for k in range(K):
        alone = model.run(inputs, seeds[k:k + 1], STREAMS, rows=None if rows is None else rows[k:k + 1])
        np.testing.assert_array_equal(together["logits"][k] if pooled else together["logits"],
                                      alone["logits"][0] if pooled else alone["logits"])
        for stream in STREAMS:
            for key, value in together[stream].items():
                np.testing.assert_array_equal(value[k], alone[stream][key][0], err_msg=f"{name} {stream} {key} k={k}")


def test_k_seeds_with_taps():
    """Attention and hidden taps: the forward's once, each stream's per seed."""
    model, inputs = case("llama-lm", seed=1)
    rng = np.random.default_rng(1)
    rows = random_rows(inputs, rng)
    seeds = rng.standard_normal((K,) + model.logits_shape(inputs)).astype(np.float32)
    together = model.run(inputs, seeds, ("attnlrp",), rows=rows, attentions=True, hidden=True)
    B, T = inputs.input_ids.shape
    assert together["attentions"].shape[0] == B
    assert together["attnlrp"]["attention_relevance"].shape[:2] == (K, B)
    for k in (0, K - 1):
        alone = model.run(inputs, seeds[k][None], ("attnlrp",), rows=rows[k][None], attentions=True, hidden=True)
        np.testing.assert_array_equal(together["attentions"], alone["attentions"])
        for key in ("attention_relevance", "hidden_relevance", "tokens"):
            np.testing.assert_array_equal(together["attnlrp"][key][k], alone["attnlrp"][key][0])


def test_default_rows_are_the_pools_own():
    """Seeds without rows read the last real token, as a one-seed call does (pruned, bit for
    bit); rows naming that token give the unpruned last layer, equal to float32 rounding."""
    model, inputs = case("llama-lm")
    rng = np.random.default_rng(2)
    seeds = rng.standard_normal((2,) + model.logits_shape(inputs)).astype(np.float32)
    one = model.run(inputs, seeds[1], ("attnlrp",))
    default = model.run(inputs, seeds, ("attnlrp",))
    np.testing.assert_array_equal(default["attnlrp"]["tokens"][1], one["attnlrp"]["tokens"])
    np.testing.assert_array_equal(default["logits"][1], one["logits"])
    last = np.broadcast_to(inputs.attention_mask.sum(axis=1) - 1, (2, 3))
    unpruned = model.run(inputs, seeds, ("attnlrp",), rows=last)
    assert relative(unpruned["attnlrp"]["tokens"][1], one["attnlrp"]["tokens"]) < TOLERANCE
    assert relative(unpruned["logits"][1], one["logits"]) < TOLERANCE
    forward = model.run(inputs, rows=last)  # no stream: the head at each seed's rows
    np.testing.assert_array_equal(forward["logits"], unpruned["logits"])


def test_targets_at_positions_equal_prefixes_explained_alone():
    """attnlrp(targets=[(position, token), ...]): each equals the prefix up to `position`
    explained alone for `token`; later tokens get exactly 0 (causal attention)."""
    model, inputs = case("llama-lm")
    ids = inputs.input_ids[:1]
    explainer = masklrp.AttnLRP(model)
    for method, contrastive in (("attnlrp", False), ("cp-lrp", True)):
        explainer = masklrp.AttnLRP(model, method)
        [many] = explainer.attribute(ids, targets=[[(3, 5), (6, None), (10, 40), 7]], contrastive=contrastive)
        assert [e.target[0] for e in many[:3]] == [3, 6, 10] and many[3].target == 7
        for e in many[:3]:
            position, token = e.target
            [alone] = explainer.attribute(ids[:, :position + 1], target=token, contrastive=contrastive)
            assert relative(e.scores[:position + 1], alone.scores) < TOLERANCE, (method, position)
            assert e.logit == pytest.approx(alone.logit, rel=TOLERANCE)
            assert not e.scores[position + 1:].any()
        [alone] = explainer.attribute(ids, target=7, contrastive=contrastive)
        assert relative(many[3].scores, alone.scores) < TOLERANCE


def test_targets_of_a_padded_batch_and_a_single_text():
    model, inputs = case("llama-lm")
    lengths = inputs.attention_mask.sum(axis=1)
    many = masklrp.AttnLRP(model).attribute(inputs, targets=[[(0, 1), None], [(2, 3), 4], [(int(lengths[2]) - 1, 5), 6]])
    assert [len(row) for row in many] == [2, 2, 2]
    for b, row in enumerate(many):
        [alone] = masklrp.AttnLRP(model).attribute(inputs.input_ids[b:b + 1, :lengths[b]], target=row[1].target)
        assert len(row[1].tokens) == lengths[b]
        assert relative(row[1].scores, alone.scores) < TOLERANCE
    classifier, cls_inputs = case("bert-cls")
    [row] = masklrp.AttnLRP(classifier).attribute(cls_inputs.input_ids[:1], targets=[[0, 1, 2]])
    assert [e.target for e in row] == [0, 1, 2]


@pytest.mark.parametrize("rows, seed_shape, error, message", [
    ([[1, 2, 40]], None, ValueError, "rows[0, 2] = 40 is out of range"),
    ([[1, 2, -1]], None, ValueError, "rows[0, 2] = -1 is out of range"),
    ([[1, 2, 10]], None, ValueError, "rows[0, 2] = 10 is padding"),
    ([[1, 2]], None, ValueError, "rows must have shape (seeds, batch)"),
    ([1, 2, 3], None, ValueError, "rows must have shape (seeds, batch)"),
    ([[1.0, 2.0, 3.0]], None, TypeError, "rows must hold integers"),
    ([[1, 2, 3]] * 2, (3, 3, 97), ValueError, "seed must have shape (2, *(3, 97)): one seed per row of rows"),
    (None, (3, 96), ValueError, "seed must have shape (3, 97) (the logits'), or (K, *(3, 97))"),
    (None, (2, 3, 3, 97), ValueError, "seed must have shape"),
])
def test_bad_rows_and_seeds(rows, seed_shape, error, message):
    model, inputs = case("llama-lm")
    seed = None if seed_shape is None else np.zeros(seed_shape, np.float32)
    with pytest.raises(error, match=_literal(message)):
        model.run(inputs, seed, "attnlrp", rows=rows)


def test_bad_rows_in_the_engine_itself():
    """The C glue re-checks what would otherwise read out of bounds."""
    model, inputs = case("llama-lm")
    args = (inputs.input_ids, inputs.attention_mask, inputs.position_ids, None)
    run = model._engine.run
    for kw, error, message in [
        ({"rows": np.array([[0, 0, 11]])}, ValueError, "rows[0, 2] = 11 is out of range"),
        ({"rows": np.array([[0, 0, 9]])}, ValueError, "rows[0, 2] = 9 is padding"),
        ({"rows": np.array([[0, 0]])}, ValueError, "rows must have shape (seeds, batch)"),
        ({"rows": np.array([[0, 0, 0]], np.int32)}, TypeError, "rows must be a numpy.ndarray of dtype int64"),
        ({"rows": np.zeros((1, 3), np.int64), "seed": np.zeros((2, 3, 97), np.float32)}, ValueError,
         "seed must have shape (seeds, batch, outputs), one seed per row of rows"),
        ({"seed": np.zeros((2, 3, 96), np.float32)}, ValueError, "seed must have the logits' shape"),
    ]:
        with pytest.raises(error, match=_literal(message)):
            run(*args, streams=("attnlrp",), **kw)


def test_rows_need_a_head_that_reads_one_row():
    for name in ("bert-qa", "modernbert-mean"):
        model, inputs = case(name)
        with pytest.raises(ValueError, match="rows: only a first- or last-pooled head"):
            model.run(inputs, None, "attnlrp", rows=[[0, 0, 0]])
        with pytest.raises(ValueError, match="rows: only a first- or last-pooled head"):
            model._engine.run(inputs.input_ids, inputs.attention_mask, inputs.position_ids, inputs.token_type_ids,
                              rows=np.zeros((1, 3), np.int64))


def test_bad_targets():
    model, inputs = case("llama-lm")
    explainer = masklrp.AttnLRP(model)
    for kw, error, message in [
        ({"targets": [[1], [2]]}, TypeError, "targets must hold one list of targets per sequence (3 lists)"),
        ({"targets": [1, 2, 3]}, TypeError, "targets must hold one list of targets per sequence"),
        ({"targets": [[1], [2, 3], [4]]}, ValueError, "the same number (>= 1) of targets, got [1, 2, 1]"),
        ({"targets": [[], [], []]}, ValueError, "the same number (>= 1) of targets"),
        ({"targets": [[(0, 1)], [(10, 1)], [(0, 1)]]}, ValueError, "position 10 of sequence 1 is not one of its"),
            ({"targets": [[(11, 1)], [(0, 1)], [(0, 1)]]}, ValueError, "position 11 of sequence 0 is not one of its"),
        ({"targets": [[(1.5, 1)], [(0, 1)], [(0, 1)]]}, TypeError, "a position must be an int"),
        ({"targets": [[(1, 97)], [(0, 1)], [(0, 1)]]}, ValueError, "target 97 is out of range"),
        ({"targets": [[1]] * 3, "target": 1}, ValueError, "give target (one output per sequence) or targets"),
    ]:
        with pytest.raises(error, match=_literal(message)):
            explainer.attribute(inputs, **kw)
    classifier, cls_inputs = case("bert-cls")
    with pytest.raises(ValueError, match="pairs are for causal LMs"):
        masklrp.AttnLRP(classifier).attribute(cls_inputs.input_ids[:1], targets=[[(1, 0)]])


def _literal(message: str) -> str:
    import re

    return re.escape(message)
