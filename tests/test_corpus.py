"""masklrp.corpus: dependency trees from CoNLL-U, spaCy and arrays, and word -> token spans.

The CoNLL-U file is hand-written (tests/data/dependency_sample.conllu); spaCy Docs are built
from words and heads, with no pipeline. Alignment is checked on the MiniLM WordPiece tokenizer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from masklrp.corpus import (RELATIONS, Sentence, fold_relation, from_arrays, from_spacy,
                            read_conllu, token_spans)

SAMPLE = Path(__file__).parent / "data" / "dependency_sample.conllu"
INDEX = {r: i for i, r in enumerate(RELATIONS)}


def test_conllu_multiword_token_spacing_subtypes_and_empty_nodes():
    corpus = read_conllu(SAMPLE)
    assert len(corpus) == 4 and corpus.name == "dependency_sample.conllu"
    mwt, ellipsis, passive, same = list(corpus)
    assert mwt.sent_id == "mwt"
    assert mwt.text == "The cat didn't eat fresh fish. "
    assert mwt.words == ("The", "cat", "did", "n't", "eat", "fresh", "fish", ".")
    assert mwt.heads == (2, 5, 5, 5, 0, 7, 5, 5)
    # both parts of "didn't" get its span; the space after it belongs to the last part
    assert mwt.spans[2] == mwt.spans[3] == (8, 14) and mwt.text[8:14] == "didn't"
    assert mwt.spaces[2:4] == (False, True)
    assert mwt.spans[6:] == ((25, 29), (29, 30))  # SpaceAfter=No: "fish."
    assert ellipsis.words == ("Kim", "bought", "apples", "and", "Lee", "pears", ".")  # no 5.1
    assert ellipsis.heads[5] == 5
    assert passive.deprels[0] == "nsubj:pass"
    assert same.text.rstrip() == "They didn't."
    # the arcs of the default relations, nsubj:pass folded into nsubj
    assert mwt.arcs() == [(1, 4, INDEX["nsubj"]), (3, 4, INDEX["advmod"]),
                          (5, 6, INDEX["amod"]), (6, 4, INDEX["obj"])]
    assert passive.arcs() == [(0, 2, INDEX["nsubj"]), (3, 2, INDEX["advmod"])]
    assert passive.arcs(("nsubj:pass",)) == [(0, 2, 0)]
    # the same sentences from a string, and read twice (the file streams anew)
    assert list(read_conllu(SAMPLE.read_text())) == list(corpus)


def test_conllu_bad_input():
    with pytest.raises(FileNotFoundError, match="path_or_text"):
        read_conllu("no/such/file.conllu")
    with pytest.raises(TypeError, match="path_or_text"):
        read_conllu(42)


def test_fold_relation():
    assert fold_relation("nsubj:pass", INDEX) == INDEX["nsubj"]
    assert fold_relation("obl:tmod", INDEX) is None
    # spaCy's ClearNLP labels
    assert fold_relation("dobj", INDEX) == INDEX["obj"]
    assert fold_relation("nsubjpass", INDEX) == INDEX["nsubj"]
    assert fold_relation("ROOT", INDEX) is None
    # the aliases can be replaced
    assert fold_relation("dobj", INDEX, aliases={}) is None
    assert fold_relation("iobj", INDEX, aliases={"iobj": "obj"}) == INDEX["obj"]


def test_from_arrays():
    s = from_arrays(["Dogs", "bark", "loudly", "!"], [2, 0, 2, 2],
                    ["nsubj", "root", "advmod", "punct"], [True, True, False, False])
    assert s.text == "Dogs bark loudly!"
    assert s.spans == ((0, 4), (5, 9), (10, 16), (16, 17))
    assert s.arcs() == [(0, 1, INDEX["nsubj"]), (2, 1, INDEX["advmod"])]
    assert from_arrays(["a", "b"], [0, 1], ["root", "dep"]).text == "a b"


@pytest.mark.parametrize("kwargs, match", [
    (dict(heads=(0, 5)), "heads\\[1\\]"),
    (dict(heads=(0, 2)), "heads\\[1\\]"),      # its own head
    (dict(heads=(0,)), "heads has 1"),
    (dict(words=("a", "")), "words\\[1\\]"),
    (dict(text="a b"), "spans"),
    (dict(text="a b", spans=((0, 1), (2, 4))), "spans\\[1\\]"),
])
def test_sentence_rejects_bad_trees(kwargs, match):
    args = dict(words=("a", "b"), heads=(0, 1), deprels=("root", "dep"), spaces=(True, False))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Sentence(**args)


def test_from_spacy_doc_without_a_model():
    spacy = pytest.importorskip("spacy", reason="from_spacy reads spaCy Docs")
    from spacy.tokens import Doc

    words = ["Mary", "was", "given", "a", "book", ".", "She", "reads", "it", "."]
    doc = Doc(spacy.vocab.Vocab(), words=words,
              spaces=[True, True, True, True, False, True, True, True, False, False],
              heads=[2, 2, 2, 4, 2, 2, 7, 7, 7, 7],
              deps=["nsubjpass", "auxpass", "ROOT", "det", "dobj", "punct",
                    "nsubj", "ROOT", "dobj", "punct"])
    s = from_spacy(doc)
    assert s.text == "Mary was given a book. She reads it." == doc.text
    assert s.heads == (3, 3, 0, 5, 3, 3, 8, 0, 8, 8)
    assert s.arcs() == [(0, 2, INDEX["nsubj"]), (4, 2, INDEX["obj"]),
                        (6, 7, INDEX["nsubj"]), (8, 7, INDEX["obj"])]
    second = from_spacy(doc[6:])  # a Span: heads and spans relative to it
    assert second.text == "She reads it." and second.heads == (2, 0, 2, 2)
    assert second.spans == ((0, 3), (4, 9), (10, 12), (12, 13))
    with pytest.raises(ValueError, match="outside this span"):
        from_spacy(doc[3:6])  # "book" is headed by "given", outside
    with pytest.raises(TypeError, match="doc"):
        from_spacy(["not", "a", "doc"])


def test_token_spans_through_minilm_offsets(minilm_dir):
    from masklrp.tokenizer import Tokenizer

    tokenizer = Tokenizer(minilm_dir / "tokenizer.json")
    s = from_arrays(["The", "unaffordable", "hyperparameters", "."], [3, 3, 0, 3],
                    ["det", "amod", "root", "punct"], [True, True, False, False])
    batch = tokenizer.encode([s.text, "a longer second text pads the first one"])
    assert batch.tokens[0][:11] == ["[CLS]", "the", "una", "##ff", "##ord", "##able", "hyper",
                                    "##para", "##meter", "##s", "."]
    real = (batch.attention_mask[0] == 1) & ~batch.special_tokens_mask[0]
    lo, hi = token_spans(s, batch.offsets[0], real)
    assert lo.tolist() == [1, 2, 6, 10] and hi.tolist() == [2, 6, 10, 11]
    # a multi-word token's parts share its tokens
    mwt = next(iter(read_conllu(SAMPLE)))
    batch = tokenizer.encode(mwt.text)
    real = (batch.attention_mask[0] == 1) & ~batch.special_tokens_mask[0]
    lo, hi = token_spans(mwt, batch.offsets[0], real)
    assert batch.tokens[0][3:6] == ["didn", "'", "t"]
    assert (lo[2], hi[2]) == (lo[3], hi[3]) == (3, 6)
    # a word the tokenizer drops (a zero-width space) overlaps no token
    odd = from_arrays(["go", "\u200b", "now"], [0, 1, 1], ["root", "dep", "advmod"])
    batch = tokenizer.encode(odd.text)
    real = (batch.attention_mask[0] == 1) & ~batch.special_tokens_mask[0]
    lo, hi = token_spans(odd, batch.offsets[0], real)
    assert lo.tolist() == [1, -1, 2] and hi.tolist() == [2, -1, 3]
    assert np.all((lo < 0) == (hi < 0))


WORD = "{id}\t{form}\t{form}\tX\tX\t_\t{head}\t{rel}\t_\t_"


@pytest.mark.parametrize("lines, match", [
    (["1\tI\tI"], r"<conllu text>: sentence 1: a word line has 3 columns, CoNLL-U needs 10 \(missing head, deprel, misc\)"),
    ([WORD.format(id=0, form="I", head=0, rel="root")], "sentence 1: word id 0 where 1 was expected"),
    ([WORD.format(id=1, form="I", head=0, rel="root"), WORD.format(id=3, form="ran", head=1, rel="dep")],
     "word id 3 where 2 was expected"),
    ([WORD.format(id=1, form="I", head="x", rel="root")], "sentence 1: Failed parsing field 'head'"),
    ([WORD.format(id=1, form="I", head=5, rel="root")], r"sentence 1: heads\[0\] = 5"),
    (["2-3\tab\t_\t_\t_\t_\t_\t_\t_\t_"], "word id 2-3 where 1 was expected"),
    (["2-1\tab\t_\t_\t_\t_\t_\t_\t_\t_"], "sentence 1: Failed parsing field 'id'"),
])
def test_malformed_conllu_names_the_sentence(lines, match):
    text = "# text = x\n" + "\n".join(lines) + "\n\n"
    with pytest.raises(ValueError, match=match):
        list(read_conllu(text))


def test_malformed_conllu_file_names_the_file(tmp_path):
    path = tmp_path / "bad.conllu"
    path.write_text(WORD.format(id=1, form="ok", head=0, rel="root") + "\n\n" + "1\tI\tI\n\n")
    with pytest.raises(ValueError, match="bad.conllu: sentence 2: a word line has 3 columns"):
        list(read_conllu(path))
    path.write_bytes(b"1\t\xff\n\n")
    with pytest.raises(ValueError, match="bad.conllu is not UTF-8 text"):
        list(read_conllu(path))


# ----------------------------------------------------------------------------- spaCy parsing

def _spacy_pipeline():
    from masklrp.corpus import SPACY_MODEL
    from conftest import missing
    gone = missing(("spacy", SPACY_MODEL))
    if gone:
        pytest.skip(f"parsing needs the spacy extra ({', '.join(gone)} not installed)")
    return SPACY_MODEL


def test_parse_gives_one_sentence_per_text_with_its_arcs():
    from masklrp.corpus import parse
    name = _spacy_pipeline()
    texts = ["the movie is a charming journey .", "it drags . then it ends ."]
    first, second = parse(texts, name)
    assert first.words == tuple(texts[0].split()) and first.text == texts[0]
    assert first.heads.count(0) == 1
    # "movie" is the subject of "is", "charming" modifies "journey" (spaCy's sm parse)
    arcs = {(first.words[d], first.words[h], RELATIONS[r]) for d, h, r in first.arcs()}
    assert ("movie", "is", "nsubj") in arcs and ("charming", "journey", "amod") in arcs
    # two sentences in one text stay one example, with a root each
    assert second.text == texts[1] and second.heads.count(0) == 2
    for s, text in zip((first, second), texts):
        assert [text[a:b] for a, b in s.spans] == list(s.words)


def test_parse_rejects_bad_input():
    from masklrp.corpus import parse
    name = _spacy_pipeline()
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        parse(["fine", "  "], name)
    with pytest.raises(ValueError, match="no installed spaCy pipeline"):
        parse(["fine"], "en_no_such_pipeline")
    with pytest.raises(TypeError, match="spaCy pipeline"):
        parse(["fine"], object())


def test_named_corpora():
    from masklrp import data
    from masklrp.corpus import parse
    name = _spacy_pipeline()
    sentences, label = data.corpus("sst2-train")
    first = next(iter(sentences))
    assert first == next(parse([data.sst2("train")[0].sentence], name))
    assert label.startswith(f"sst2-train parsed by {name} ")  # with the pipeline's version
    ud, ud_label = data.corpus("ud-ewt-dev")
    assert ud_label == "en_ewt-ud-dev.conllu" and len(ud) == 2001
    with pytest.raises(ValueError, match="corpus must be one of"):
        data.corpus("sst2-dev")
    with pytest.raises(ValueError, match="nlp: UD EWT dev has gold trees"):
        data.corpus("ud-ewt-dev", name)
