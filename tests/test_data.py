"""masklrp.data: the SST-2 and SQuAD readers over ../shared/data, and where that folder is found."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from masklrp import data
from masklrp.corpus import read_conllu
from masklrp.data import QAExample, SentimentExample, data_dir, squad, sst2

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (SHARED / "sst2").is_dir(), reason=f"no data at {SHARED} "
                                "(../shared/data, shipped beside the project)")


@pytest.fixture(autouse=True)
def default_data_dir(monkeypatch):
    monkeypatch.delenv("MASKLRP_DATA", raising=False)


@needs_data
def test_data_dir_is_shared_beside_the_repo():
    assert data_dir().resolve() == SHARED.resolve()  # ../shared may be a link


def test_data_dir_override_and_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("MASKLRP_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.setenv("MASKLRP_DATA", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="MASKLRP_DATA"):
        data_dir()


@needs_data
@pytest.mark.parametrize("split, n, n_positive", [("train", 6920, 3610), ("dev", 872, 444)])
def test_sst2_counts_and_labels(split, n, n_positive):
    examples = sst2(split)
    assert len(examples) == n
    assert all(isinstance(e, SentimentExample) and e.label in (0, 1) for e in examples)
    assert sum(e.label for e in examples) == n_positive
    assert all(e.sentence == e.sentence.strip() and e.sentence for e in examples)


@needs_data
def test_sst2_dev_is_glue_dev():
    """With the treebank escapes undone, stsa.binary.dev is GLUE's SST-2 validation set."""
    glue = {}
    for line in (SHARED / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        sentence, label = line.rsplit("\t", 1)
        glue[sentence.strip()] = int(label)
    assert {e.sentence: e.label for e in sst2("dev")} == glue
    sentence, label = sst2("dev")[0]  # unpacks like a (sentence, label) tuple
    assert (sentence, label) == ("one long string of cliches .", 0)


@needs_data
def test_sst2_train_has_no_treebank_escapes():
    text = " ".join(e.sentence for e in sst2("train"))
    assert not any(escaped in text for escaped in ("-lrb-", "-rrb-", "\\/", "\\*"))
    assert text.count("(") == 286 and text.count(")") == 287  # as many as the file's escapes


def test_sst2_bad_input(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="split"):
        sst2("test")
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "stsa.binary.dev").write_text("1 fine .\npositive not a label\n")
    monkeypatch.setenv("MASKLRP_DATA", str(tmp_path))
    with pytest.raises(ValueError, match=r"stsa.binary.dev:2"):
        sst2("dev")


@needs_data
def test_squad_first_two_articles():
    examples = squad()
    assert len(examples) == 1057
    assert len({e.id for e in examples}) == 1057
    assert len({e.context for e in examples}) == 103
    for e in examples:
        assert isinstance(e, QAExample)
        assert e.context[e.answer_start:e.answer_start + len(e.answer)] == e.answer
        assert (e.answer, e.answer_start) == e.answers[0]
    first = examples[0]
    assert first.question == "Which NFL team represented the AFC at Super Bowl 50?"
    assert (first.answer, first.answer_start) == ("Denver Broncos", 177)


def test_squad_rejects_a_misplaced_answer(tmp_path):
    path = tmp_path / "bad.json"
    qa = {"id": "q1", "question": "Who?", "answers": [{"text": "Bob", "answer_start": 1}]}
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "Bob ran.", "qas": [qa]}]}]}))
    with pytest.raises(ValueError, match="q1.*'Bob'.*character 1"):
        squad(path)
    qa["answers"][0]["answer_start"] = 0
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "Bob ran.", "qas": [qa]}]}]}))
    assert squad(path) == [QAExample("q1", "Who?", "Bob ran.", "Bob", 0, (("Bob", 0),))]


def test_module_exports():
    assert set(data.__all__) == {"CORPORA", "QAExample", "SentimentExample", "corpus", "data_dir", "squad", "sst2",
                                 "ud_ewt"}


@needs_data
def test_ud_ewt_dev_path():
    path = data.ud_ewt("dev")
    assert path.name == "en_ewt-ud-dev.conllu" and path.parent.parent == data_dir()
    assert sum(1 for _ in read_conllu(path)) == 2001  # SOURCES.md


def test_ud_ewt_unknown_split():
    with pytest.raises(ValueError, match="split"):
        data.ud_ewt("train")


def test_ud_ewt_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKLRP_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="UD EWT"):
        data.ud_ewt("dev")
