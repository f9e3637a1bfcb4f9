"""Head statistics and Mask-LRP run end to end on every encoder family (issue K).

For each tiny encoder of tests/hf_models.py, loaded with a WordLevel tokenizer over its
vocabulary: ``masklrp.head_statistics`` counts a hand-written treebank into an (L, H) mask,
and ``masklrp.explain_all`` explains texts with "mask-lrp" under it, giving one finite score
per token. Their numbers are tested elsewhere (test_headstats.py, test_mask_lrp.py against
the oracle); this checks that the encoder's load → tokenize → count → explain path holds.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="the tiny models are built with torch (pip install '.[test]')")
pytest.importorskip("transformers", reason="the tiny models need transformers (pip install '.[test]')")

import masklrp  # noqa: E402
from hf_models import MODELS, VOCAB, build  # noqa: E402
from masklrp.corpus import Sentence  # noqa: E402

ENCODERS = ["bert-cls", "xlm-roberta-cls", "electra-cls", "albert-cls", "modernbert-cls",
            "modernbert-mean", "deberta-v3-cls"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]  # ids 0-3: never a tiny model's real token
WORDS = [f"w{i}" for i in range(VOCAB - len(SPECIAL))]

# (words, heads, relations): small dependency trees over the tokenizer's words
TREES = [
    (("w4", "w9", "w5", "w12"), (2, 0, 4, 2), ("nsubj", "root", "amod", "obj")),
    (("w20", "w7", "w31", "w8", "w40"), (2, 0, 2, 5, 3), ("nsubj", "root", "obj", "advmod", "amod")),
    (("w11", "w50", "w13"), (2, 0, 2), ("nsubj", "root", "obj")),
]


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.add_special_tokens(SPECIAL)
    return tok


@pytest.mark.parametrize("name", ENCODERS)
def test_head_statistics_and_mask_lrp_run(name):
    model = masklrp.load(build(name, seed=0), tokenizer=word_tokenizer())
    L, H = model.spec.n_layers, model.spec.n_heads
    corpus = [Sentence(words=w, heads=h, deprels=r, spaces=(True,) * (len(w) - 1) + (False,))
              for w, h, r in TREES]
    heads = masklrp.head_statistics(model, corpus, progress=False)
    assert heads.mask.shape == (L, H)
    assert heads.queries == sum(len(w) for w, _, _ in TREES)
    assert heads.positional.sum() == L * H * heads.queries
    texts = [" ".join(w) for w, _, _ in TREES]
    for mask in (heads.mask, np.eye(L, H, dtype=np.float32)):  # the counted one, and a fixed one
        [*explained] = masklrp.explain_all(model, texts, "mask-lrp", head_mask=mask)["mask-lrp"]
        assert len(explained) == len(texts)
        for e, words in zip(explained, TREES):
            assert len(e.tokens) == len(words[0]) + 2 and np.isfinite(e.scores).all(), name
    assert MODELS[name].task == "sequence-classification"


def test_deberta_relative_index_and_length_are_checked():
    """The engine re-checks what would read out of bounds: DeBERTa's row index must hold whole
    rows of the relative table, and a sequence may not outrun the offsets it covers."""
    from masklrp.model import Model

    model = masklrp.load(build("deberta-v3-cls", seed=0))
    rows = len(model.weights["relative.embeddings"])
    for bad in (2.5, -1.0, float(rows)):
        weights = dict(model.weights)
        weights["attn.relative_index"] = weights["attn.relative_index"].copy()
        weights["attn.relative_index"][3] = bad
        with pytest.raises(ValueError, match=r"attn.relative_index\]\[3\]"):
            Model(model.spec, weights, None, "test")
    weights = dict(model.weights, **{"attn.relative_index": model.weights["attn.relative_index"][2:-2]})
    short = Model(model.spec, weights, None, "test")
    ids = np.full((1, model.spec.max_positions), 5)
    with pytest.raises(ValueError, match="relative position index"):
        short.forward(short.prepare(ids))
