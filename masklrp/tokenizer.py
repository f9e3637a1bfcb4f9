"""Text → token-id batches as NumPy arrays, with the token ↔ character ↔ word maps.

:class:`Tokenizer` wraps a Hugging Face ``tokenizers.Tokenizer`` (the Rust "fast" tokenizer):
given directly, as a transformers fast tokenizer (its ``backend_tokenizer``) or as a path to a
``tokenizer.json`` (or a folder holding one). Neither torch nor transformers is needed.

:meth:`Tokenizer.encode` returns a :class:`Batch`: right-padded ``(B, T)`` int64 arrays ready
for the engine, plus per-token strings, character offsets, word ids and sequence ids (0 for the
first text, 1 for the pair, ``None`` for special tokens and padding), which is how words map to
tokens for head statistics and viz (DESIGN.md §3.1) — never by walking two sequences.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._checks import integer, text

__all__ = ["Batch", "Tokenizer"]


@dataclass(frozen=True)
class Batch:
    """One tokenized batch, right-padded to the longest sequence ``T``.

    Arrays are ``(B, T)``: ``input_ids``, ``attention_mask`` (1 real token, 0 padding) and
    ``token_type_ids`` as int64; ``special_tokens_mask`` as bool (True for padding and special
    tokens, whether the template added them or the text contains them, like chat markers;
    ``[UNK]`` stands for a real word and is not special). Lists are ``[b][t]`` over the same
    ``T`` positions: ``tokens`` (str; the pad token at padding), ``offsets`` (``(start, end)``
    character span in the text the token came from: ``texts[b]`` or, where
    ``sequence_ids[b][t] == 1``, ``pairs[b]``; ``(0, 0)`` for special tokens and padding),
    ``word_ids`` (int or None) and ``sequence_ids`` (0, 1 or None). ``truncated`` (B,) bool
    marks the sequences that ``max_length`` cut short.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    special_tokens_mask: np.ndarray
    tokens: list[list[str]]
    offsets: list[list[tuple[int, int]]]
    word_ids: list[list[int | None]]
    sequence_ids: list[list[int | None]]
    texts: list[str]
    pairs: list[str] | None = None
    truncated: np.ndarray | None = None  # (B,) bool: the sequence was cut to max_length

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """(B,) int64: number of real (non-padding) tokens per sequence."""
        return self.attention_mask.sum(axis=1)


class Tokenizer:
    """A fast tokenizer that returns NumPy batches (see :meth:`encode`).

    ``source``: a ``tokenizers.Tokenizer``, a transformers fast tokenizer (anything with a
    ``backend_tokenizer``), or a path to ``tokenizer.json`` or to a folder containing one.
    The wrapper keeps its own copy of the Rust tokenizer, so the caller's object is never
    reconfigured, and it does padding and truncation itself per call.

    ``special_ids`` are the ids of the tokenizer's special added tokens except its unknown
    token. The pad id is the first of: the transformers tokenizer's ``pad_token_id``, the padding
    configured in the tokenizer itself, ``pad_token_id`` given here (e.g. the model config's),
    then 0. Padding positions are masked out by ``attention_mask``, so its value only matters
    to models that look at it (RoBERTa positions count non-pad ids).
    """

    def __init__(self, source: Any, *, pad_token_id: int | None = None) -> None:
        import tokenizers  # noqa: F401  (a clear ImportError here beats one in encode)

        backend, hf_pad_id = _backend_of(source)
        self.backend = tokenizers.Tokenizer.from_str(backend.to_str())
        padding = backend.padding
        self.backend.no_padding()
        self.backend.no_truncation()
        self._lock = threading.Lock()
        self._truncation: int | None = None

        if hf_pad_id is not None:
            self.pad_token_id = int(hf_pad_id)
        elif padding is not None and padding.get("pad_id") is not None:
            self.pad_token_id = int(padding["pad_id"])
        elif pad_token_id is not None and pad_token_id >= 0:
            self.pad_token_id = int(pad_token_id)
        else:
            self.pad_token_id = 0
        self.pad_type_id = int(padding.get("pad_type_id", 0)) if padding else 0
        self.pad_token = self.backend.id_to_token(self.pad_token_id) or ""
        unk = getattr(self.backend.model, "unk_token", None)
        self.special_ids = frozenset(
            i for i, t in self.backend.get_added_tokens_decoder().items()
            if t.special and t.content != unk)

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, pad_token_id: int | None = None) -> "Tokenizer":
        return cls(Path(path), pad_token_id=pad_token_id)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, pad_token_id={self.pad_token_id})"

    @property
    def vocab_size(self) -> int:
        """Size of the vocabulary including added tokens."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None, *,
               max_length: int | None = None, add_special_tokens: bool = True) -> Batch:
        """Tokenize ``texts`` (and optional second segments ``pairs``) into a :class:`Batch`.

        A ``str`` is a batch of one. ``max_length`` truncates each sequence (special tokens
        included; pairs longest-first, as HF does); None means no truncation. ``B`` texts give
        ``(B, T)`` arrays with ``T`` the longest encoded length.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("texts is empty: give a str or a non-empty list of str")
        if pairs is not None:
            pairs = [pairs] if isinstance(pairs, str) else list(pairs)
            if len(pairs) != len(texts):
                raise ValueError(f"pairs has {len(pairs)} entries but texts has {len(texts)}")
        for name, seq in (("texts", texts), ("pairs", pairs or [])):
            for i, s in enumerate(seq):
                text(s, f"{name}[{i}]")
        if max_length is not None:
            max_length = integer(max_length, "max_length", 1)
        inputs = texts if pairs is None else list(zip(texts, pairs))
        with self._lock:
            self._set_truncation(max_length)
            encodings = self.backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
        return self._to_batch(encodings, texts, pairs)

    __call__ = encode

    def decode(self, ids: Any, *, skip_special_tokens: bool = True) -> str | list[str]:
        """Ids back to text: one sequence (1-D) gives a str, a (B, T) array a list of str."""
        ids = np.asarray(ids)
        if ids.ndim == 2:
            return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in ids]
        return self.backend.decode([int(i) for i in ids.reshape(-1)],
                                   skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: Any) -> list[str]:
        """Token strings of ``ids`` (as the vocabulary writes them, e.g. ``Ġworld``, ``##ing``)."""
        out = []
        for i in np.asarray(ids).reshape(-1):
            token = self.backend.id_to_token(int(i))
            if token is None:
                raise ValueError(f"token id {int(i)} is outside the vocabulary "
                                 f"(size {self.vocab_size})")
            out.append(token)
        return out

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Vocabulary ids of ``tokens``; an unknown token raises ``KeyError``."""
        if isinstance(tokens, str):
            return self.convert_tokens_to_ids([tokens])[0]
        out = []
        for token in tokens:
            i = self.backend.token_to_id(token)
            if i is None:
                raise KeyError(f"token {token!r} is not in the vocabulary")
            out.append(i)
        return out

    def _set_truncation(self, max_length: int | None) -> None:
        if max_length == self._truncation:
            return
        if max_length is None:
            self.backend.no_truncation()
        else:
            self.backend.enable_truncation(int(max_length), strategy="longest_first")
        self._truncation = max_length

    def _to_batch(self, encodings, texts, pairs) -> Batch:
        n = len(encodings)
        t = max((len(e.ids) for e in encodings), default=0)
        input_ids = np.full((n, t), self.pad_token_id, dtype=np.int64)
        attention = np.zeros((n, t), dtype=np.int64)
        type_ids = np.full((n, t), self.pad_type_id, dtype=np.int64)
        special = np.ones((n, t), dtype=bool)
        truncated = np.array([len(e.overflowing) > 0 for e in encodings], dtype=bool)
        tokens, offsets, word_ids, sequence_ids = [], [], [], []
        for b, e in enumerate(encodings):
            k = len(e.ids)
            pad = t - k
            input_ids[b, :k] = e.ids
            attention[b, :k] = 1
            type_ids[b, :k] = e.type_ids
            special[b, :k] = np.asarray(e.special_tokens_mask, dtype=bool)
            tokens.append(list(e.tokens) + [self.pad_token] * pad)
            offsets.append([tuple(o) for o in e.offsets] + [(0, 0)] * pad)
            word_ids.append(list(e.word_ids) + [None] * pad)
            sequence_ids.append(list(e.sequence_ids) + [None] * pad)
        if self.special_ids:  # padding is special already, so the whole batch in one call
            special |= np.isin(input_ids, list(self.special_ids))
        return Batch(input_ids=input_ids, attention_mask=attention, token_type_ids=type_ids,
                     special_tokens_mask=special, tokens=tokens, offsets=offsets,
                     word_ids=word_ids, sequence_ids=sequence_ids, texts=list(texts),
                     pairs=None if pairs is None else list(pairs), truncated=truncated)


def _backend_of(source: Any):
    """(tokenizers.Tokenizer, transformers pad_token_id or None) for any accepted source."""
    import tokenizers

    if isinstance(source, Tokenizer):
        return source.backend, source.pad_token_id
    if isinstance(source, tokenizers.Tokenizer):
        return source, None
    backend = getattr(source, "backend_tokenizer", None)
    if isinstance(backend, tokenizers.Tokenizer):
        return backend, getattr(source, "pad_token_id", None)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {path}")
        try:
            return tokenizers.Tokenizer.from_file(str(path)), None
        except Exception as e:  # the Rust side raises a bare Exception that names no file
            raise ValueError(f"{path} is not a tokenizers tokenizer.json: {e}") from None
    raise TypeError(
        f"cannot make a Tokenizer from {type(source).__name__}: expected a tokenizers.Tokenizer, "
        "a transformers fast tokenizer (with backend_tokenizer) or a path to tokenizer.json "
        "(slow, pure-Python transformers tokenizers are not supported)")
