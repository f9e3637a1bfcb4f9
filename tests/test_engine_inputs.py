"""Bad input to the model API and to the C engine: a clear TypeError / ValueError naming the
argument, never a crash, a hang or a silent NaN. Python checks first with a friendly message
(masklrp/model.py, explain.py); the C engine re-checks what would otherwise read out of bounds
(csrc/module_engine.c), so both layers are tested."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="the test models are built with torch (pip install '.[test]')")
pytest.importorskip("transformers", reason="the test models come from transformers configs")

import masklrp  # noqa: E402
from hf_models import build  # noqa: E402


@pytest.fixture(scope="module")
def bert():
    return masklrp.load(build("bert-cls", seed=0))


@pytest.fixture(scope="module")
def llama():
    return masklrp.load(build("llama-lm", seed=0))


@pytest.fixture(scope="module")
def qa():
    return masklrp.load(build("bert-qa", seed=0))


def ids_for(model, batch=2, length=6):
    return np.random.default_rng(0).integers(5, model.spec.vocab, size=(batch, length))


# ----------------------------------------------------------------------------- Python API
@pytest.mark.parametrize("bad, error, match", [
    (lambda m: [[1, 2, m.spec.vocab]], ValueError, r"input_ids\[0, 2\] = .* not in the vocabulary"),
    (lambda m: [[1, -1, 3]], ValueError, r"input_ids\[0, 1\] = -1"),
    (lambda m: np.ones((1, 4), np.float32), TypeError, "input_ids must hold integers"),
    (lambda m: np.ones((2, 2, 2), np.int64), ValueError, "input_ids must have shape"),
    (lambda m: np.ones((1, 0), np.int64), ValueError, "input_ids must have shape"),
    (lambda m: np.ones((1, m.spec.max_positions + 1), np.int64), ValueError, "longer than the model's"),
])
def test_bad_token_ids(bert, llama, bad, error, match):
    for model in (bert, llama):
        with pytest.raises(error, match=match):
            masklrp.attnlrp(model, bad(model), target=0)


def test_bad_attention_mask(bert):
    ids = ids_for(bert)
    with pytest.raises(ValueError, match="attention_mask must have the shape of input_ids"):
        bert.prepare(ids, np.ones((2, 5), np.int64))
    with pytest.raises(ValueError, match="only 0 and 1"):
        bert.prepare(ids, np.full(ids.shape, 2))
    with pytest.raises(ValueError, match=r"attention_mask\[1\] masks every token"):
        bert.prepare(ids, np.stack([np.ones(6, int), np.zeros(6, int)]))
    with pytest.raises(TypeError, match="attention_mask must hold integers"):
        bert.prepare(ids, np.ones(ids.shape, np.float32))


def test_bad_token_types_and_positions(bert):
    ids = ids_for(bert)
    with pytest.raises(ValueError, match="token_type_ids must be in"):
        bert.prepare(ids, token_type_ids=np.full(ids.shape, 2))
    with pytest.raises(ValueError, match="position_ids reach .* beyond the position table"):
        bert.prepare(ids, position_ids=np.full(ids.shape, 10_000))
    with pytest.raises(ValueError, match="position_ids must be >= 0"):
        bert.prepare(ids, position_ids=np.full(ids.shape, -1))


@pytest.mark.parametrize("target, error, match", [
    (3, ValueError, "target 3 is out of range: the model has 3 outputs"),
    (-1, ValueError, "target -1 is out of range"),
    (1.5, TypeError, "target must be an int"),
    ([0, 1, 2], ValueError, "got 3 targets for a batch of 2"),
])
def test_bad_classification_target(bert, target, error, match):
    with pytest.raises(error, match=match):
        masklrp.attnlrp(bert, ids_for(bert), target=target)


def test_bad_lm_and_qa_targets(llama, qa, bert):
    with pytest.raises(ValueError, match="out of range: the model has"):
        masklrp.attnlrp(llama, ids_for(llama), target=llama.spec.vocab)
    with pytest.raises(ValueError, match="contrastive seeds are for causal LMs"):
        masklrp.attnlrp(bert, ids_for(bert), target=0, contrastive=True)
    with pytest.raises(ValueError, match="target for question answering must be one of"):
        masklrp.attnlrp(qa, ids_for(qa), target="middle")
    with pytest.raises(ValueError, match="target position 6 is out of range"):
        masklrp.attnlrp(qa, ids_for(qa), target=("start", 6))


def test_bad_method_and_stream(bert):
    with pytest.raises(ValueError, match="method must be one of"):
        masklrp.AttnLRP(bert, method="lrp-epsilon")
    with pytest.raises(ValueError, match="unknown stream"):
        bert.run(bert.prepare(ids_for(bert)), np.zeros((2, 3), np.float32), ("relevance",))
    with pytest.raises(ValueError, match="unknown mask_semantics 'literal'"):
        bert.run(bert.prepare(ids_for(bert)), np.zeros((2, 3), np.float32),
                 (masklrp.model.Stream("m", mask_semantics="literal"),))


def test_text_without_a_tokenizer(bert):
    with pytest.raises(ValueError, match="loaded without a tokenizer"):
        masklrp.attnlrp(bert, "no tokenizer here", target=0)


# ----------------------------------------------------------------------------- C engine
def engine_args(model, **change):
    inputs = model.prepare(ids_for(model))
    args = dict(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                position_ids=inputs.position_ids, token_type_ids=inputs.token_type_ids,
                seed=np.zeros((2, model.spec.n_outputs), np.float32), streams=("attnlrp",))
    args.update(change)
    return args


@pytest.mark.parametrize("change, error, match", [
    (dict(input_ids=np.full((2, 6), 10**9)), ValueError, r"input_ids\[0, 0\] = 1000000000 is out of range"),
    (dict(input_ids=np.ones((2, 6), np.int32)), TypeError, "input_ids must be a numpy.ndarray of dtype int64"),
    (dict(input_ids=[[1, 2]]), TypeError, "input_ids must be a numpy.ndarray"),
    (dict(attention_mask=np.ones((2, 5), np.int64)), ValueError, "attention_mask must have shape"),
    (dict(attention_mask=np.zeros((2, 6), np.int64)), ValueError, "has no real token"),
    (dict(attention_mask=np.full((2, 6), 3)), ValueError, "must be 0 or 1"),
    (dict(position_ids=np.full((2, 6), 10**6)), ValueError, "the position table"),
    (dict(token_type_ids=None), ValueError, "token_type_ids is required"),
    (dict(token_type_ids=np.full((2, 6), 7)), ValueError, "token types must be in"),
    (dict(seed=np.zeros((2, 4), np.float32)), ValueError, "seed must have the logits' shape"),
    (dict(seed=np.zeros((2, 3))), TypeError, "seed must have dtype float32"),
    (dict(seed=np.full((2, 3), np.nan, np.float32)), ValueError, "seed must be finite"),
    (dict(streams=("attnlrp", "attnlrp")), ValueError, "must not repeat"),
    (dict(streams=("attnlrp", "cp", "gradient", ("a", "cp", None, True), ("b", "cp", None, True))),
     ValueError, "at most 4"),
    (dict(streams=(1,)), TypeError, "must be a rule name or a tuple"),
    (dict(streams=(("masked", "attnlrp", None),)), TypeError, "streams"),
    (dict(streams=(("masked", "lrp", None, True),)), ValueError, "rules must be one of"),
    (dict(streams=(("masked", "attnlrp", None, True, "literal"),)), ValueError, "semantics must be one of"),
    (dict(streams=(("masked", "attnlrp", None, True, 1),)), TypeError, "streams"),
    (dict(streams=(("attnlrp", "cp", None, True), "attnlrp")), ValueError, "must not repeat a key"),
    (dict(streams=(("m", "attnlrp", np.ones((2, 3), np.float32), True),)), ValueError,
     r"head_mask must have shape \(2, 4\) \(layers, heads\)"),
    (dict(streams=(("m", "attnlrp", np.full((2, 4), np.nan, np.float32), True),)), ValueError,
     "head_mask must be finite"),
    (dict(streams=(("m", "attnlrp", np.ones((2, 4)), True),)), TypeError, "head_mask must have dtype float32"),
    (dict(threads=0), ValueError, "threads must be in"),
    # a stream under a forward output's key would replace (and free) an array being written
    (dict(streams=(("logits", "cp", None, True),)), ValueError, "taken by the forward's output"),
    (dict(streams=("attnlrp", ("hidden", "attnlrp", None, True)), hidden=True), ValueError,
     "taken by the forward's output"),
])
def test_engine_rechecks_its_inputs(bert, change, error, match):
    with pytest.raises(error, match=match):
        bert._engine.run(**engine_args(bert, **change))


def test_engine_needs_a_seed_for_per_position_outputs(qa):
    inputs = qa.prepare(ids_for(qa))
    with pytest.raises(ValueError, match="seed is required for per-position outputs"):
        qa._engine.run(inputs.input_ids, inputs.attention_mask, inputs.position_ids,
                       inputs.token_type_ids, None, ("attnlrp",))


def test_engine_refuses_bad_weights(bert):
    spec, weights = bert.spec.to_dict(), dict(bert.weights)
    cases = [
        ("embed.word", None, ValueError, "weights is missing embed.word"),
        ("layers.0.qkv.weight", weights["layers.0.qkv.weight"].astype(np.float64), TypeError, "dtype float32"),
        ("layers.0.qkv.weight", np.asfortranarray(weights["layers.0.qkv.weight"]), ValueError, "C-contiguous"),
        ("layers.1.up.weight", weights["layers.1.up.weight"][:-1], ValueError, r"layers.1.up.weight must have shape"),
        ("head.out.bias", np.full(3, np.inf, np.float32), ValueError, "contains NaN or Inf"),
    ]
    for key, value, error, match in cases:
        bad = dict(weights)
        if value is None:
            del bad[key]
        else:
            bad[key] = value
        with pytest.raises(error, match=match):
            masklrp._core.Engine(spec, bad)
    with pytest.raises(ValueError, match="must be one of"):
        masklrp._core.Engine({**spec, "family": "rnn"}, weights)
    for eps in (0.0, -1.0):
        with pytest.raises(ValueError, match=r"spec\[norm_eps\] must be > 0"):
            masklrp._core.Engine({**spec, "norm_eps": eps}, weights)
    with pytest.raises(KeyError, match="spec is missing n_layers"):
        masklrp._core.Engine({k: v for k, v in spec.items() if k != "n_layers"}, weights)
    engine = masklrp._core.Engine(spec, weights)
    with pytest.raises(RuntimeError, match="already initialised"):
        engine.__init__(spec, weights)


def head_stats_args(model, **change):
    inputs = model.prepare(ids_for(model))
    flags = np.ones(inputs.input_ids.shape, bool)
    args = dict(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                position_ids=inputs.position_ids, token_type_ids=inputs.token_type_ids,
                queries=flags, keys=flags, arcs=np.array([[0, 1, 2, 3, 0], [1, 4, 0, 2, 1]], np.int64),
                n_relations=2)
    args.update(change)
    return args


@pytest.mark.parametrize("change, error, match", [
    (dict(queries=np.ones((2, 6), np.int64)), TypeError, "queries must be a numpy.ndarray of dtype bool or uint8"),
    (dict(keys=np.ones((2, 5), bool)), ValueError, r"keys must have shape \(2, 6\)"),
    (dict(keys=np.full((2, 6), 2, np.uint8)), ValueError, r"keys\[0, 0\] must be 0 or 1"),
    (dict(n_relations=0), ValueError, "n_relations must be in"),
    (dict(arcs=np.zeros((2, 4), np.int64)), ValueError, r"arcs must have shape \(n, 5\)"),
    (dict(arcs=np.zeros((1, 5), np.int32)), TypeError, "arcs must be a numpy.ndarray of dtype int64"),
    (dict(arcs=np.array([[2, 1, 2, 3, 0]])), ValueError, "its sequence is not in the batch"),
    (dict(arcs=np.array([[1, 1, 2, 3, 0], [0, 1, 2, 3, 0]])), ValueError, "sorted by sequence"),
    (dict(arcs=np.array([[0, 6, 2, 3, 0]])), ValueError, "its query is not a query token"),
    (dict(queries=np.zeros((2, 6), bool)), ValueError, "its query is not a query token"),
    (dict(arcs=np.array([[0, 1, 3, 3, 0]])), ValueError, r"head span \[lo, hi\) is empty"),
    (dict(arcs=np.array([[0, 1, 3, 7, 0]])), ValueError, r"head span \[lo, hi\) is empty or outside"),
    (dict(arcs=np.array([[0, 1, 2, 3, 2]])), ValueError, r"relation is not in \[0, n_relations\)"),
    (dict(input_ids=np.full((2, 6), -1)), ValueError, r"input_ids\[0, 0\] = -1 is out of range"),
    (dict(threads=0), ValueError, "threads must be in"),
])
def test_head_stats_rechecks_its_inputs(bert, change, error, match):
    with pytest.raises(error, match=match):
        bert._engine.head_stats(**head_stats_args(bert, **change))
    if "input_ids" in change or "threads" in change:
        return
    args = head_stats_args(bert, **change)
    attentions = bert.forward(bert.prepare(args["input_ids"]), attentions=True)["attentions"]
    with pytest.raises(error, match=match):  # the kernel shares the checks
        masklrp.kernels.head_counts(attentions, args["queries"], args["keys"], args["arcs"], args["n_relations"])


def test_head_counts_rejects_bad_attentions(bert):
    args = head_stats_args(bert)
    for bad, error, match in [(np.zeros((2, 2, 2, 6, 5), np.float32), ValueError, "attentions must have shape"),
                              (np.zeros((2, 2, 2, 6), np.float32), ValueError, "attentions must have"),
                              (np.zeros((2, 2, 2, 6, 6)), TypeError, "attentions must have dtype float32"),
                              (np.full((2, 2, 2, 6, 6), np.nan, np.float32), ValueError, "finite")]:
        with pytest.raises(error, match=match):
            masklrp.kernels.head_counts(bad, args["queries"], args["keys"], args["arcs"], 2)


# ----------------------------------------------------------------------------- ownership (issue G.1, G.2)
@pytest.mark.parametrize("key", ["hidden", "attentions", "logits"])
def test_a_stream_never_takes_an_output_key(bert, key):
    """Stream("hidden") beside hidden=True once freed the array the engine was writing."""
    inputs = bert.prepare(ids_for(bert))
    with pytest.raises(ValueError, match="taken by the forward's output"):
        bert.run(inputs, None, [masklrp.Stream(key), masklrp.Stream("attentions2", "cp")], attentions=True,
                 hidden=True)


def test_changing_the_weights_never_reaches_the_engine():
    """The engine keeps its own mapping and the model shows a read-only one: replacing or deleting
    an entry of the dict given to Engine changes nothing it computes."""
    model = masklrp.load(build("bert-cls", seed=0))
    inputs = model.prepare(ids_for(model))
    before = model.run(inputs, None, ("attnlrp",), threads=1)
    with pytest.raises(TypeError):
        model.weights["embed.word"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="read-only"):
        model.weights["embed.word"][0, 0] = 1.0
    given = dict(model.weights)
    engine = masklrp._core.Engine(model.spec.to_dict(), given)
    given["embed.word"] = np.zeros((3, 3), np.float32)
    for key in [k for k in given if k.startswith("layers.")]:
        del given[key]
    import gc
    gc.collect()
    after = engine.run(inputs.input_ids, inputs.attention_mask, inputs.position_ids, inputs.token_type_ids,
                       None, ("attnlrp",))
    np.testing.assert_array_equal(after["logits"], before["logits"])
    np.testing.assert_array_equal(after["attnlrp"]["tokens"], before["attnlrp"]["tokens"])


# ----------------------------------------------------------------------------- input policy
@pytest.mark.parametrize("bad, error, match", [
    (np.ones((1, 4), bool), TypeError, "input_ids must hold integers, got dtype bool"),
    (np.ones((0, 5), np.int64), ValueError, r"with at least one token, got \(0, 5\)"),
    ([], ValueError, "inputs is empty"),
    ((t for t in ["a", "b"]), TypeError, "inputs is a generator: give a list"),
    (["a text", [1, 2, 3]], TypeError, "a list must hold only texts"),
    ({"attention_mask": [[1, 1]]}, ValueError, "a mapping needs 'input_ids'"),
    ({"input_ids": [[5, 6]], "labels": [1]}, ValueError, r"got unknown keys \['labels'\]"),
    ([[5, 6, 7], [5, 6]], ValueError, "input_ids must be a rectangular array of ints"),
])
def test_refused_inputs_name_what_was_expected(bert, bad, error, match):
    with pytest.raises(error, match=match):
        masklrp.attnlrp(bert, bad, target=0)


def test_bool_masks_are_accepted_but_bool_ids_are_not(bert):
    ids = ids_for(bert)
    np.testing.assert_array_equal(bert.prepare(ids, np.ones(ids.shape, bool)).attention_mask, 1)
    with pytest.raises(TypeError, match="token_type_ids must hold integers, got dtype bool"):
        bert.prepare(ids, token_type_ids=np.zeros(ids.shape, bool))


def test_targets_as_arrays_and_label_names(bert):
    ids = ids_for(bert)
    want = [e.scores for e in masklrp.attnlrp(bert, ids, target=2)]
    for target in (np.array(2), np.int64(2), "pos", [2, "pos"], np.array([2, 2])):
        got = masklrp.attnlrp(bert, ids, target=target)
        assert [e.target for e in got] == [2, 2], target
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a.scores, b)
    with pytest.raises(ValueError, match=r"target 'positive' is not a label of this model \(labels: neg, neu, pos\)"):
        masklrp.attnlrp(bert, ids, target="positive")
    with pytest.raises(TypeError, match="target must be an int"):
        masklrp.attnlrp(bert, ids, target=np.array(2.0))


def test_qa_targets_are_checked(qa):
    ids = ids_for(qa)
    mask = np.ones(ids.shape, np.int64)
    mask[:, -2:] = 0
    with pytest.raises(ValueError, match=r"\(kind, position\), got \('start',\)"):
        masklrp.attnlrp(qa, ids, target=("start",))
    with pytest.raises(ValueError, match="target position 5 is padding"):
        masklrp.attnlrp(qa, {"input_ids": ids, "attention_mask": mask}, target=("end", 5))
    [e, _] = masklrp.attnlrp(qa, {"input_ids": ids, "attention_mask": mask}, target=("end", 3))
    assert e.target == ("end", 3)


def test_a_bare_stream_name_is_one_stream(bert):
    inputs = bert.prepare(ids_for(bert))
    seed = np.zeros((2, 3), np.float32)
    seed[:, 1] = 1
    one = bert.run(inputs, seed, "attnlrp")
    np.testing.assert_array_equal(one["attnlrp"]["tokens"], bert.run(inputs, seed, ("attnlrp",))["attnlrp"]["tokens"])
    with pytest.raises(ValueError, match="unknown stream 'relevance'"):
        bert.run(inputs, seed, "relevance")


def test_out_of_memory_names_the_size_and_the_purpose(bert, monkeypatch):
    class Engine:  # stands in for the C engine failing to allocate
        def run(self, *args):
            raise MemoryError()

    monkeypatch.setattr(bert, "_engine", Engine())
    inputs = bert.prepare(ids_for(bert))
    s = bert.spec
    want = 4 * (2 * s.n_layers * s.n_heads * 6 * 6) / 1024  # the attention taps alone, in KiB
    with pytest.raises(MemoryError, match=r"out of memory: .* KiB for the engine's outputs for a batch of "
                                          r"2 x 6 tokens, 0 stream\(s\) with attention maps") as err:
        bert.run(inputs, attentions=True)
    assert float(str(err.value).split()[3]) >= want


# ----------------------------------------------------------------------------- real tokenizer
@pytest.fixture(scope="module")
def classifier(classifier_dir):
    return masklrp.load(classifier_dir)


def test_long_text_is_refused_or_truncated_explicitly(classifier):
    limit = classifier.spec.max_positions
    text = " ".join(["good"] * (limit + 1000))
    with pytest.raises(ValueError, match=f"text 0 has {limit + 1002} tokens, more than the model's {limit} "
                                         "positions: shorten it, or pass truncation=True"):
        masklrp.attnlrp(classifier, text)
    with pytest.warns(masklrp.model.TruncationWarning, match=f"1 of 2 texts truncated to the model's {limit}"):
        cut, short = masklrp.attnlrp(classifier, [text, "fine"], truncation=True)
    assert cut.truncated and not short.truncated
    assert len(cut.tokens) == limit and cut.tokens[-1] == "[SEP]"
    assert "(truncated)" in cut.title and "(truncated)" in repr(cut) and "(truncated)" in cut._repr_html_()
    assert "(truncated)" not in short.title


def test_tokenizer_outputs_pairs_and_bad_text(classifier, classifier_dir):
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(classifier_dir))
    text = "a gripping, funny film"
    want = masklrp.attnlrp(classifier, text, target="positive")
    for encoded in (tok(text, return_tensors="np"), tok(text, return_tensors="pt"), tok(text),
                    tok(text, return_special_tokens_mask=True, return_offsets_mapping=True)):
        got = masklrp.attnlrp(classifier, encoded, target=1)
        np.testing.assert_array_equal(got[0].scores, want.scores)
    assert got[0].special.tolist() == want.special.tolist()

    pair = masklrp.attnlrp(classifier, ("the film", "was funny"), target=1)
    assert isinstance(pair, masklrp.Explanation)
    np.testing.assert_array_equal(pair.scores, masklrp.attnlrp(
        classifier, tok("the film", "was funny", return_tensors="np"), target=1)[0].scores)
    [again] = masklrp.attnlrp(classifier, [("the film", "was funny")], target=1)
    np.testing.assert_array_equal(again.scores, pair.scores)

    with pytest.raises(ValueError, match=r"texts\[0\] is not valid Unicode: a lone surrogate '\\ud800' at character 2"):
        masklrp.attnlrp(classifier, "ab\ud800c")
