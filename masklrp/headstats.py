"""One forward pass over a dependency-parsed corpus, counting what each head attends to.

:func:`head_statistics` streams sentences in batches through the C engine's
``Model.head_stats`` (a forward with the argmax counters fused in, DESIGN.md §3.1) and sums its
integer counters into a :class:`~masklrp.headmask.HeadMask`. Memory does not grow with the
corpus: only counters are kept, and the offset axis grows to the longest sequence seen.
Per sequence the model sees the sentence text; queries are its real tokens, keys its real
tokens too (special tokens are never ``k*``); an arc's query is the first token of the
dependent word and its target the head word's token span, both found from character offsets.
The fixed-offset baseline ``λ_r(o)``, the arcs and the queries do not depend on the model and
are counted here in NumPy.
"""
from __future__ import annotations

import os
from itertools import islice
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ._checks import positive_int
from .corpus import (ALIASES, RELATIONS, SKIP_REASONS, ConlluFile, Sentence, from_spacy,
                     read_conllu, token_spans)
from .headmask import XI_POS, XI_SYNT, HeadMask
from .tokenizer import Batch

__all__ = ["head_statistics"]

WINDOW_BATCHES = 64  # sentences are sorted by length within this many batches, to limit padding


def head_statistics(model, corpus, relations: Sequence[str] = RELATIONS, *, batch_size: int = 32,
                    threads: int | None = None, progress: bool = True,
                    max_length: int | None = None, corpus_name: str | None = None,
                    aliases: Mapping[str, str] = ALIASES, xi_pos: float = XI_POS,
                    xi_synt: float = XI_SYNT, client=None, shard_size: int | None = None,
                    cache: str | os.PathLike | None = None) -> HeadMask:
    """Count positional and syntactic heads of ``model`` over ``corpus``.

    ``corpus``: a CoNLL-U path, a :func:`~masklrp.corpus.read_conllu` result, a spaCy ``Doc``
    (its sentences), or an iterable of :class:`~masklrp.corpus.Sentence` / spaCy ``Doc`` /
    ``Span``. ``relations``: the relation set ``K`` (labels folded by
    :func:`~masklrp.corpus.fold_relation` with ``aliases``). ``max_length`` truncates
    sequences (default: the model's positions); arcs that fall outside are counted in
    ``HeadMask.skipped``. ``threads`` goes to the engine; ``progress`` shows a tqdm bar.

    ``client``: a ``dask.distributed.Client``; the corpus is then counted in shards of
    ``shard_size`` sentences on its workers and summed, with the same counters bit for bit
    (:func:`masklrp.distributed.head_statistics`; ``cache``: a folder of finished shards,
    reused on a rerun).
    """
    if client is not None:
        from .distributed import head_statistics as on_cluster  # dask only when asked for

        return on_cluster(client, model, corpus, relations, batch_size=batch_size, threads=threads,
                          progress=progress, max_length=max_length, corpus_name=corpus_name,
                          aliases=aliases, xi_pos=xi_pos, xi_synt=xi_synt, shard_size=shard_size,
                          cache=cache)
    if shard_size is not None or cache is not None:
        raise ValueError("shard_size, cache: shards are for a cluster; give client= too")
    if not hasattr(model, "head_stats") or not hasattr(model, "spec"):
        raise TypeError(f"model must be a masklrp.Model (masklrp.load(...)), got {type(model).__name__}")
    if model.tokenizer is None:
        raise ValueError("model: loaded without a tokenizer; load(model, tokenizer=...)")
    relations = _relations(relations)
    batch_size = positive_int(batch_size, "batch_size")
    limit = model.spec.max_positions
    if max_length is not None:
        limit = min(positive_int(max_length, "max_length"), limit)
    if isinstance(corpus, (str, os.PathLike)):
        corpus = read_conllu(corpus)
    if corpus_name is None:
        corpus_name = corpus.name if isinstance(corpus, ConlluFile) else ""
    total = _length(corpus)

    counts = _Counts(model.spec.n_layers, model.spec.n_heads, len(relations))
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError as e:
            raise ImportError("progress=True shows a tqdm bar: pip install tqdm, or pass "
                              "progress=False") from e
        bar = tqdm(total=total, unit="sent", desc="head statistics")
    try:
        for sentences, tok in _batches(model, _sentences(corpus), batch_size, limit):
            batch = _prepare_batch(model, sentences, tok, relations, aliases, limit)
            _count_batch(model, batch, len(relations), threads, counts)
            if bar is not None:
                bar.update(len(sentences))
    finally:
        if bar is not None:
            bar.close()
    return counts.head_mask(relations, _model_name(model), corpus_name, xi_pos, xi_synt)


class _Counts:
    """The running sums; the offset axis (centred, odd) widens to the longest batch."""

    def __init__(self, L: int, H: int, R: int) -> None:
        self.positional = np.zeros((L, H, 1), np.int64)
        self.baseline = np.zeros((R, 1), np.int64)
        self.syntactic = np.zeros((L, H, R), np.int64)
        self.arcs = np.zeros(R, np.int64)
        self.skipped = np.zeros((len(SKIP_REASONS), R), np.int64)
        self.queries = 0
        self.sentences = 0

    def head_mask(self, relations, model: str, corpus: str, xi_pos: float, xi_synt: float) -> HeadMask:
        return HeadMask(self.positional, self.syntactic, self.queries, self.arcs, self.baseline,
                        relations=relations, skipped=dict(zip(SKIP_REASONS, self.skipped)), model=model,
                        corpus=corpus, n_sentences=self.sentences, xi_pos=xi_pos, xi_synt=xi_synt)

    def add_offsets(self, name: str, counts: np.ndarray) -> None:
        """Add a centred offset counter (last axis 2T-1) to ``name``, widening it if needed."""
        have, width = getattr(self, name), counts.shape[-1]
        if width > have.shape[-1]:
            pad = (width - have.shape[-1]) // 2
            have = np.pad(have, [(0, 0)] * (have.ndim - 1) + [(pad, pad)])
            setattr(self, name, have)
        start = (have.shape[-1] - width) // 2
        have[..., start:start + width] += counts


def _count_batch(model, batch, R: int, threads, counts: _Counts) -> None:
    inputs, queries, keys, arcs, skipped = batch
    out = model.head_stats(inputs, queries, keys, arcs, R, threads=threads)
    counts.add_offsets("positional", out["positional"])
    counts.syntactic += out["syntactic"]
    counts.queries += int(queries[keys.any(axis=1)].sum())  # a query with no key is not counted
    counts.arcs += np.bincount(arcs[:, 4], minlength=R)
    counts.add_offsets("baseline", _baseline(arcs, queries.shape[1], R))
    counts.skipped += skipped
    counts.sentences += len(queries)


def _prepare_batch(model, sentences: list[Sentence], tok: Batch, relations, aliases, limit):
    """Engine inputs, queries and keys (uint8 (B, T)), arcs (int64 (n, 5): sequence, q, head
    span lo, hi, relation) and skipped-arc counts (len(SKIP_REASONS), R) of one batch."""
    real = (tok.attention_mask == 1) & ~tok.special_tokens_mask
    skipped = np.zeros((len(SKIP_REASONS), len(relations)), np.int64)
    truncated, no_token, same_span = map(SKIP_REASONS.index, ("truncated", "no_token", "same_span"))
    arcs = []
    for b, sentence in enumerate(sentences):
        lo, hi = token_spans(sentence, tok.offsets[b], real[b])
        first_cut = _truncated_from(sentence, tok, b, real[b], limit)
        for d, h, r in sentence.arcs(relations, aliases):
            if d >= first_cut or h >= first_cut:
                skipped[truncated, r] += 1
            elif lo[d] < 0 or lo[h] < 0:
                skipped[no_token, r] += 1
            elif lo[h] <= lo[d] < hi[h]:
                skipped[same_span, r] += 1
            else:
                arcs.append((b, lo[d], lo[h], hi[h], r))
    inputs = model.prepare(tok.input_ids, tok.attention_mask, token_type_ids=tok.token_type_ids)
    real = real.astype(np.uint8)
    return inputs, real, real, np.array(arcs, dtype=np.int64).reshape(-1, 5), skipped


def _baseline(arcs: np.ndarray, T: int, R: int) -> np.ndarray:
    """(R, 2T-1): for each relation, arcs whose head span [lo, hi) contains q + o."""
    out = np.zeros((R, 2 * T - 1), np.int64)
    q, lo, hi, r = arcs[:, 1], arcs[:, 2], arcs[:, 3], arcs[:, 4]
    width = hi - lo
    # one entry per (arc, head token): offset (lo - q) + j for j in [0, width)
    within = np.arange(width.sum()) - np.repeat(np.cumsum(width) - width, width)
    offset = np.repeat(lo - q, width) + within
    np.add.at(out, (np.repeat(r, width), offset + T - 1), 1)
    return out


def _truncated_from(sentence: Sentence, tok, b: int, real: np.ndarray, limit: int) -> int:
    """Index of the first word the truncated sequence does not fully hold (len if none)."""
    if tok.attention_mask[b].sum() < limit or not real.any():
        return len(sentence)
    covered = max(e for (s, e), r in zip(tok.offsets[b], real) if r)
    ends = np.array([e for _, e in sentence.spans])
    beyond = np.flatnonzero(ends > covered)
    return int(beyond[0]) if len(beyond) else len(sentence)


# ----------------------------------------------------------------------------- corpus plumbing
def _sentences(corpus) -> Iterator[Sentence]:
    if _is_spacy_doc(corpus):
        corpus = corpus.sents
    for i, item in enumerate(corpus):
        if isinstance(item, Sentence):
            yield item
        elif hasattr(item, "__iter__") and hasattr(item, "text") and hasattr(item, "vocab"):
            yield from_spacy(item)
        else:
            raise TypeError(f"corpus[{i}] must be a masklrp.corpus.Sentence or a spaCy Doc/Span, "
                            f"got {type(item).__name__}")


def _batches(model, sentences: Iterator[Sentence], batch_size: int,
             limit: int) -> Iterator[tuple[list[Sentence], Batch]]:
    """Tokenized batches in token-length order within windows of WINDOW_BATCHES batches.

    Sorting by tokens, not characters: web text (URLs, "-----") tokenizes far from its length.
    """
    while True:
        window = list(islice(sentences, batch_size * WINDOW_BATCHES))
        if not window:
            return
        for rows, tok in window_batches(model, window, batch_size, limit):
            yield [window[j] for j in rows], tok


def window_batches(model, window: list[Sentence], batch_size: int,
                   limit: int) -> Iterator[tuple[np.ndarray, Batch]]:
    """The batches of one window: (rows of ``window``, their tokens), shortest first.

    Every window but the corpus's last holds ``batch_size * WINDOW_BATCHES`` sentences; a
    shard of the work is a range of these batches (:mod:`masklrp.distributed`).
    """
    tok = model.tokenizer.encode([s.text for s in window], max_length=limit)
    order = np.argsort(tok.attention_mask.sum(axis=1), kind="stable")
    for i in range(0, len(order), batch_size):
        rows = order[i:i + batch_size]
        yield rows, _take(tok, rows)


def _take(tok: Batch, rows: np.ndarray) -> Batch:
    """The sequences ``rows`` of a right-padded batch, padded only to their own longest."""
    T = int(tok.attention_mask[rows].sum(axis=1).max())
    return Batch(input_ids=tok.input_ids[rows, :T], attention_mask=tok.attention_mask[rows, :T],
                 token_type_ids=tok.token_type_ids[rows, :T],
                 special_tokens_mask=tok.special_tokens_mask[rows, :T],
                 tokens=[tok.tokens[j][:T] for j in rows], offsets=[tok.offsets[j][:T] for j in rows],
                 word_ids=[tok.word_ids[j][:T] for j in rows],
                 sequence_ids=[tok.sequence_ids[j][:T] for j in rows],
                 texts=[tok.texts[j] for j in rows])


def _is_spacy_doc(x: Any) -> bool:
    return hasattr(x, "sents") and hasattr(x, "vocab") and hasattr(x, "to_array")


def _length(corpus) -> int | None:
    if _is_spacy_doc(corpus):
        return None
    try:
        return len(corpus)
    except TypeError:
        return None


def _relations(relations) -> tuple[str, ...]:
    if isinstance(relations, str) or not isinstance(relations, Iterable):
        raise TypeError(f"relations must be a sequence of relation names, got {relations!r}")
    out = tuple(relations)
    if not out or not all(isinstance(r, str) and r for r in out) or len(set(out)) != len(out):
        raise ValueError(f"relations must be distinct non-empty names, got {out!r}")
    return tuple(r.lower() for r in out)


def _model_name(model) -> str:
    return str(getattr(model, "source", "") or model.spec.architecture)
