"""Readers for the evaluation data shipped beside the project (``../shared/data``).

* :func:`sst2`: the binary Stanford Sentiment Treebank (Socher et al., 2013) as
  ``(sentence, label)`` pairs, 6920 train and 872 dev sentences, label 0 negative / 1 positive.
* :func:`squad`: SQuAD v1.1 dev, first two articles (1057 questions), as :class:`QAExample`.
* :func:`ud_ewt`: the path of the UD English EWT dev treebank (CoNLL-U, 2001 sentences), the
  gold dependency trees head statistics count on.
* :func:`corpus`: a named corpus of dependency trees (:data:`CORPORA`): UD EWT dev's gold
  trees, or SST-2 train parsed by spaCy (the task's own data, as the paper counted).

The folder is found by :func:`data_dir`: ``$MASKLRP_DATA`` if set, else ``shared/data`` beside
the repository (``<repo>/../shared/data``). ``../shared/data/SOURCES.md`` cites every file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, NamedTuple

__all__ = ["CORPORA", "QAExample", "SentimentExample", "corpus", "data_dir", "squad", "sst2", "ud_ewt"]

SST2_SPLITS = ("train", "dev")
UD_EWT_SPLITS = ("dev",)  # the one split shipped
CORPORA = ("ud-ewt-dev", "sst2-train")
PTB_ESCAPES = (("-lrb-", "("), ("-rrb-", ")"), ("\\/", "/"), ("\\*", "*"))


class SentimentExample(NamedTuple):
    sentence: str
    label: int  # 0 negative, 1 positive


class QAExample(NamedTuple):
    """One SQuAD question. ``answer``/``answer_start`` are the first gold answer (the one
    SQuAD tools train on); ``answers`` holds every annotator's ``(text, char start)``."""

    id: str
    question: str
    context: str
    answer: str
    answer_start: int
    answers: tuple[tuple[str, int], ...]


def data_dir() -> Path:
    """The data folder: ``$MASKLRP_DATA``, else ``<repo>/../shared/data``."""
    env = os.environ.get("MASKLRP_DATA")
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not folder.is_dir():
        where = "$MASKLRP_DATA" if env else "beside the repository (../shared/data)"
        raise FileNotFoundError(f"no data folder at {folder} ({where}); set MASKLRP_DATA to the "
                                "folder holding sst2/ and squad/")
    return folder


def sst2(split: str = "dev") -> list[SentimentExample]:
    """SST-2 sentences of ``split`` (``"train"``: 6920, ``"dev"``: 872), in file order.

    Read from ``stsa.binary.*`` (lower-cased, tokens split by spaces), the one source with both
    splits, with the treebank's escapes undone (``-lrb-`` ``-rrb-`` ``\\/`` ``\\*`` become
    ``( ) / *``): a WordPiece tokenizer would cut ``-lrb-`` into four pieces the pretrained model
    never saw as a bracket. The dev split is then exactly GLUE's SST-2 validation set
    (``sst2/dev.tsv``, the paper's test set), sentence for sentence and label for label.
    """
    if split not in SST2_SPLITS:
        raise ValueError(f"split must be one of {SST2_SPLITS}, got {split!r}")
    path = data_dir() / "sst2" / f"stsa.binary.{split}"
    examples = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            label, _, sentence = line.strip().partition(" ")
            if label not in ("0", "1") or not sentence:
                raise ValueError(f"{path}:{n}: expected '<0|1> <sentence>', got {line[:60]!r}")
            for escaped, text in PTB_ESCAPES:
                sentence = sentence.replace(escaped, text)
            examples.append(SentimentExample(sentence, int(label)))
    return examples


def squad(path: str | os.PathLike | None = None) -> list[QAExample]:
    """The questions of a SQuAD v1.1 JSON file (default: the shipped first two dev articles).

    Every gold answer is checked to be the context's text at its character start.
    """
    path = Path(path) if path is not None else data_dir() / "squad" / "dev-v1.1-first2articles.json"
    with open(path, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    examples = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                answers = tuple((a["text"], int(a["answer_start"])) for a in qa["answers"])
                if not answers:
                    raise ValueError(f"{path}: question {qa['id']} has no answer (SQuAD 2.0?)")
                for text, start in answers:
                    if context[start:start + len(text)] != text:
                        raise ValueError(f"{path}: question {qa['id']}: answer {text!r} is not "
                                         f"at character {start} of its context")
                examples.append(QAExample(qa["id"], qa["question"], context,
                                          answers[0][0], answers[0][1], answers))
    return examples


def ud_ewt(split: str = "dev") -> Path:
    """The CoNLL-U file of UD English EWT ``split`` (read it with :func:`masklrp.read_conllu`)."""
    if split not in UD_EWT_SPLITS:
        raise ValueError(f"split must be one of {UD_EWT_SPLITS}, got {split!r}")
    path = data_dir() / "ud_ewt" / f"en_ewt-ud-{split}.conllu"
    if not path.is_file():
        raise FileNotFoundError(f"no UD EWT {split} treebank at {path}")
    return path


def corpus(name: str, nlp=None) -> tuple[Iterable, str]:
    """The dependency trees of corpus ``name`` (one of :data:`CORPORA`) and a label for them.

    ``"ud-ewt-dev"``: the gold trees of :func:`ud_ewt` (streamed); ``"sst2-train"``: the 6920
    SST-2 train sentences parsed by ``nlp`` (a spaCy pipeline or its name; default
    :data:`masklrp.corpus.SPACY_MODEL`), which the label names with its version.
    """
    from .corpus import SPACY_MODEL, parse, read_conllu

    if name == "ud-ewt-dev":
        if nlp is not None:
            raise ValueError("nlp: UD EWT dev has gold trees; a parser applies to sst2-train only")
        return read_conllu(ud_ewt("dev")), ud_ewt("dev").name
    if name == "sst2-train":
        nlp = SPACY_MODEL if nlp is None else nlp
        return parse([e.sentence for e in sst2("train")], nlp), f"sst2-train parsed by {_pipeline_name(nlp)}"
    raise ValueError(f"corpus must be one of {CORPORA}, got {name!r}")


def _pipeline_name(nlp) -> str:
    """A spaCy pipeline's name and version, for the head mask's record of its corpus."""
    if isinstance(nlp, str):
        from importlib.metadata import PackageNotFoundError, version
        try:
            return f"{nlp} {version(nlp)}"
        except PackageNotFoundError:  # a pipeline folder, not an installed package: its name
            return nlp
    meta = getattr(nlp, "meta", {})
    return f"{meta.get('lang', '?')}_{meta.get('name', '?')} {meta.get('version', '?')}"
