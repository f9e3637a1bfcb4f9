"""A loaded model: its spec, its borrowed weights, its tokenizer and the C engine over them.

``masklrp.load(model_or_path)`` is the one entry point: a transformers torch module or a
folder with ``config.json`` + ``model.safetensors`` (read without torch). The returned
:class:`Model` validates token arrays with friendly messages (the C engine re-checks what
would otherwise crash) and runs the engine: :meth:`Model.forward` for logits and
:meth:`Model.run` for the backward streams the explainers need.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np

from . import _core
from ._checks import allocating, nbytes
from .export import export
from .spec import ModelSpec

STREAMS = ("attnlrp", "cp", "gradient")
MASK_SEMANTICS = ("reference", "strict")
# The forward's outputs in Model.run's result: no stream may be found under these keys.
OUTPUTS = ("logits", "attentions", "hidden")


class TruncationWarning(UserWarning):
    """A text was cut to the model's positions (``truncation=True``): its explanation covers
    only the tokens the model saw."""


@dataclass(frozen=True)
class Stream:
    """A backward stream with a head mask (Mask-LRP, DESIGN.md §3.2).

    ``rules`` is one of :data:`STREAMS`; ``head_mask`` (layers, heads) multiplies the
    relevance arriving at each head's output (1 keeps, 0 drops); ``renormalize``
    scales the kept heads so each block's heads pass on what they received before
    masking (paper Eq. 9). ``mask_semantics`` says which relevance a block's own taps
    (``head_relevance``, ``attention_grad``, ``attention_relevance``) read:
    ``"reference"`` what arrives at its heads, before its own mask, which then only
    filters what the block passes down (the reference code; the default), or
    ``"strict"`` what is left after it (the literal Eq. 10). The result is found
    under ``key``.
    """

    key: str
    rules: str = "attnlrp"
    head_mask: np.ndarray | None = None
    renormalize: bool = True
    mask_semantics: str = "reference"


@dataclass
class Inputs:
    """Validated engine inputs, all int64 ``(B, T)``."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    position_ids: np.ndarray
    token_type_ids: np.ndarray | None
    tokens: list[list[str]] | None = None      # when made by the tokenizer
    special_tokens_mask: np.ndarray | None = None
    word_ids: list[list[int | None]] | None = None  # [b][t]: the word of each token, None for specials
    truncated: np.ndarray | None = None        # (B,) bool: the text was cut to the model's positions


class Model:
    """An exported model and the C engine that borrows its weights (no copies)."""

    def __init__(self, spec: ModelSpec, weights: dict[str, np.ndarray], tokenizer=None, source: str = ""):
        self.spec = spec
        self.tokenizer = tokenizer
        self.source = source
        self._engine = _core.Engine(spec.to_dict(), weights)
        # The engine reads these arrays in place for its whole life: a read-only view of them,
        # so a change (which the engine would never see, or would see half-way) is an error.
        for array in weights.values():
            array.flags.writeable = False
        self.weights: Mapping[str, np.ndarray] = MappingProxyType(dict(weights))

    def __repr__(self) -> str:
        s = self.spec
        return (f"masklrp.Model({s.architecture}: {s.n_layers} layers, {s.n_heads} heads, "
                f"hidden {s.hidden}, task {s.task!r}, from {self.source!r})")

    # ------------------------------------------------------------------ inputs
    def encode(self, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None, *,
               truncation: bool = False) -> Inputs:
        """Tokenize text(s) (and their second segments ``pairs``) into a right-padded batch.

        A text longer than the model's ``spec.max_positions`` tokens (special tokens
        included) raises ValueError naming the limit: an explanation of its first part would
        look complete. ``truncation=True`` cuts it to the limit instead, warns
        (:class:`TruncationWarning`) and marks it in ``Inputs.truncated``.
        """
        if self.tokenizer is None:
            raise ValueError("this model was loaded without a tokenizer: pass token ids, or "
                             "load(model, tokenizer=...)")
        if not isinstance(truncation, (bool, np.bool_)):
            raise TypeError(f"truncation must be a bool, got {type(truncation).__name__}")
        limit = self.spec.max_positions
        batch = self.tokenizer.encode(texts, pairs)
        lengths = batch.attention_mask.sum(axis=1)
        long = np.flatnonzero(lengths > limit)
        if len(long):
            which = f"text {long[0]}" + (" with its pair" if pairs is not None else "")
            if not truncation:
                raise ValueError(f"{which} has {lengths[long[0]]} tokens, more than the model's "
                                 f"{limit} positions: shorten it, or pass truncation=True to "
                                 f"explain its first {limit} tokens")
            warnings.warn(f"{len(long)} of {len(lengths)} texts truncated to the model's {limit} "
                          f"tokens ({which} had {lengths[long[0]]}): their explanations cover the "
                          "first part only", TruncationWarning, stacklevel=2)
            batch = self.tokenizer.encode(texts, pairs, max_length=limit)
        inputs = self.prepare(batch.input_ids, batch.attention_mask,
                              token_type_ids=batch.token_type_ids)
        inputs.tokens = batch.tokens
        inputs.special_tokens_mask = batch.special_tokens_mask
        inputs.word_ids = batch.word_ids
        inputs.truncated = lengths > limit
        return inputs

    def prepare(self, input_ids, attention_mask=None, *, token_type_ids=None,
                position_ids=None) -> Inputs:
        """Check token arrays and fill in what HF would default (mask, positions, types)."""
        s = self.spec
        ids = _index_array(input_ids, "input_ids")
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2 or 0 in ids.shape:
            raise ValueError(f"input_ids must have shape (length,) or (batch, length) with at least "
                             f"one token, got {ids.shape}")
        B, T = ids.shape
        bad = np.argwhere((ids < 0) | (ids >= s.vocab))
        if len(bad):
            b, t = bad[0]
            raise ValueError(f"input_ids[{b}, {t}] = {ids[b, t]} is not in the vocabulary "
                             f"(ids must be in [0, {s.vocab}))")
        if T > s.max_positions:
            raise ValueError(f"input_ids has length {T}, longer than the model's "
                             f"{s.max_positions} positions (max_position_embeddings)")
        mask = (np.ones_like(ids) if attention_mask is None
                else _shaped(_index_array(attention_mask, "attention_mask", bool_ok=True),
                             "attention_mask", (B, T)))
        if not np.isin(mask, (0, 1)).all():
            raise ValueError("attention_mask must contain only 0 and 1")
        empty = np.flatnonzero(mask.sum(axis=1) == 0)
        if len(empty):
            raise ValueError(f"attention_mask[{empty[0]}] masks every token: nothing to explain")
        if position_ids is None:
            position_ids = self._default_positions(ids)
        positions = _shaped(_index_array(position_ids, "position_ids"), "position_ids", (B, T))
        if positions.min() < 0:
            raise ValueError("position_ids must be >= 0")
        table = self.weights.get("embed.position")
        if table is not None and positions.max() >= len(table):
            raise ValueError(f"position_ids reach {positions.max()}, beyond the position table "
                             f"({len(table)} rows): the sequence is too long for this model")
        types = None
        if s.type_vocab > 0:
            types = (np.zeros_like(ids) if token_type_ids is None else
                     _shaped(_index_array(token_type_ids, "token_type_ids"), "token_type_ids", (B, T)))
            if types.min() < 0 or types.max() >= s.type_vocab:
                raise ValueError(f"token_type_ids must be in [0, {s.type_vocab})")
        return Inputs(ids, mask, positions, types)

    def _default_positions(self, ids: np.ndarray) -> np.ndarray:
        if self.spec.positions == "roberta":
            # RoBERTa numbers real tokens from padding_idx + 1 and gives padding padding_idx.
            pad = self.spec.pad_token_id
            real = (ids != pad).astype(np.int64)
            return np.cumsum(real, axis=1) * real + pad
        return np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape).copy()

    # ------------------------------------------------------------------ engine
    def forward(self, inputs: Inputs, *, attentions: bool = False, hidden: bool = False,
                threads: int | None = None, embeds: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Logits (``(B, NO)``, or ``(B, T, NO)`` for QA) and the optional forward taps.

        ``attentions=True`` returns every layer's attention probabilities, ``(B, L, H, T, T)``
        float32: quadratic in T (SmolLM2-135M at T = 8192: 67.5 GiB), while the engine itself
        keeps no (T, T) array (its workspace is linear in T). ``hidden=True``: ``(B, L+1, T, C)``.
        """
        return self.run(inputs, attentions=attentions, hidden=hidden, threads=threads, embeds=embeds)

    def run(self, inputs: Inputs, seed: np.ndarray | None = None, streams: Sequence[str | Stream] = (), *,
            rows=None, attentions: bool = False, hidden: bool = False,
            threads: int | None = None, embeds: np.ndarray | None = None) -> dict[str, Any]:
        """One forward, then one backward sweep per stream in ``streams`` from ``seed``.

        A stream is a rule-set name (``"attnlrp"``, ``"cp"`` for CP-LRP, ``"gradient"``),
        found in the result under that name, or a :class:`Stream` with a head mask, found
        under its key; at most four per call (a single name or Stream is one stream).

        Several seeds share one forward: ``seed`` of shape ``(K, *logits_shape)`` runs K
        sweeps per stream over the same cache, and for a first/last-pooled head (a causal
        LM's next token) ``rows`` ``(K, B)`` ints name the real token whose output seed k
        explains (default: the pool's own, e.g. the last real token). The logits of such a
        K-seed call are the head's at each seed's rows, ``(K, B, NO)``, and every stream
        output gains the same leading K axis; each seed's numbers are bit for bit those of
        a call with that seed (and rows) alone.

        ``embeds`` ``(B, T, E)`` floats are the word embeddings themselves, read in place of the
        table rows of ``input_ids`` (which must still be valid ids, e.g. zeros): a vision model's
        patch embeddings (:mod:`masklrp.vision`). A stream's ``tokens`` is then
        ``Σ_d embeds ⊙ g`` per row and its ``embed_grad`` the ``g`` at them.

        A MemoryError says how many bytes the outputs needed and what they were. The result
        is the engine's dict (see ``masklrp._core.Engine.run``).

        Memory: the outputs, plus one workspace per thread working on a chunk of the batch (the
        forward cache and the sweeps' scratch, ``Engine._workspace_bytes(sequences, T)``: linear
        in T, as attention runs in blocks of query rows and keeps no (T, T) array). The attention
        taps are the exception: ``attentions=True`` costs ``(B, L, H, T, T)`` floats for the maps
        and twice that again per stream (``attention_grad``, ``attention_relevance``), e.g.
        3 × 67.5 GiB for one stream of SmolLM2-135M at T = 8192. Head statistics
        (:meth:`head_stats`) need no maps.
        """
        if isinstance(streams, (str, Stream)):  # one stream, not a sequence of characters
            streams = (streams,)
        specs = tuple(self._stream_spec(s) for s in streams)
        rows = None if rows is None else self._rows(inputs, rows)
        if seed is not None:
            seed = self._seed(inputs, seed, rows)
        many = seed is not None and seed.ndim > len(self.logits_shape(inputs))
        seeds = len(rows) if rows is not None else len(seed) if many else 0
        if embeds is not None:
            embeds = self._embeds(inputs, embeds)
        size, what = self._output_size(inputs, len(specs), attentions, hidden, seeds)
        with allocating(what, size):
            return self._engine.run(inputs.input_ids, inputs.attention_mask, inputs.position_ids,
                                    inputs.token_type_ids, seed, specs, attentions, hidden,
                                    self._threads(threads), rows, embeds)

    def _embeds(self, inputs: Inputs, embeds) -> np.ndarray:
        """``embeds`` as C-contiguous float32 ``(B, T, E)``, finite."""
        if not isinstance(embeds, np.ndarray) or not (np.issubdtype(embeds.dtype, np.floating)
                                                      or np.issubdtype(embeds.dtype, np.integer)):
            raise TypeError(f"embeds must be a numpy float array, got "
                            f"{getattr(embeds, 'dtype', type(embeds).__name__)}")
        shape = (*inputs.input_ids.shape, self.spec.embedding_size or self.spec.hidden)
        if embeds.shape != shape:
            raise ValueError(f"embeds must have shape {shape} (batch, length, embedding width), "
                             f"got {embeds.shape}")
        embeds = np.ascontiguousarray(embeds, dtype=np.float32)
        if not np.isfinite(embeds).all():
            raise ValueError("embeds must be finite (found NaN or inf)")
        return embeds

    def _rows(self, inputs: Inputs, rows) -> np.ndarray:
        """``rows`` as int64 (K, B), every one a real token of its sequence."""
        if self.spec.pool not in ("first", "last"):
            raise ValueError(f"rows: only a first- or last-pooled head (a causal LM's next token, "
                             f"[CLS]) reads one row per sequence; this model's pool is {self.spec.pool!r}")
        rows = _index_array(rows, "rows")
        B, T = inputs.input_ids.shape
        if rows.ndim != 2 or rows.shape[1] != B or rows.shape[0] == 0:
            raise ValueError(f"rows must have shape (seeds, batch) = (K, {B}) with K >= 1, got {rows.shape}")
        outside = np.argwhere((rows < 0) | (rows >= T))
        if len(outside):
            k, b = outside[0]
            raise ValueError(f"rows[{k}, {b}] = {rows[k, b]} is out of range: sequences have {T} positions")
        padding = np.argwhere(inputs.attention_mask[np.arange(B), rows] == 0)
        if len(padding):
            k, b = padding[0]
            raise ValueError(f"rows[{k}, {b}] = {rows[k, b]} is padding (attention_mask 0): "
                             "the head must read a real token")
        return rows

    def _seed(self, inputs: Inputs, seed, rows: np.ndarray | None) -> np.ndarray:
        """``seed`` as float32 of the logits' shape, or with a leading K axis (K seeds; K of
        ``rows`` when given)."""
        seed = np.asarray(seed)
        if not (np.issubdtype(seed.dtype, np.floating) or np.issubdtype(seed.dtype, np.integer)):
            raise TypeError(f"seed must be a float array, got dtype {seed.dtype}")
        shape = self.logits_shape(inputs)
        one = seed.shape == shape and rows is None
        many = seed.ndim == len(shape) + 1 and seed.shape[1:] == shape and len(seed) > 0 and (
            rows is None or len(seed) == len(rows))
        if not (one or many):
            want = (f"({len(rows)}, *{shape}): one seed per row of rows" if rows is not None else
                    f"{shape} (the logits'), or (K, *{shape}) for K seeds")
            raise ValueError(f"seed must have shape {want}, got {seed.shape}")
        return np.ascontiguousarray(seed, dtype=np.float32)

    def _output_size(self, inputs: Inputs, n_streams: int, attentions: bool,
                     hidden: bool, seeds: int = 0) -> tuple[int, str]:
        """Bytes of the float32 arrays one :meth:`run` returns (``seeds``: K of a K-seed
        call, 0 for one seed), and what they are."""
        s = self.spec
        B, T = inputs.input_ids.shape
        att = nbytes((B, s.n_layers, s.n_heads, T, T), 4) * attentions
        hid = nbytes((B, s.n_layers + 1, T, s.hidden), 4) * hidden
        per_stream = max(seeds, 1) * (nbytes((B, T, s.embedding_size or s.hidden), 4) + 2 * att + 2 * hid)
        logits = nbytes(self.logits_shape(inputs), 4) * (max(seeds, 1) if s.pool != "none" else 1)
        size = logits + att + hid + n_streams * per_stream
        taps = [name for name, on in (("attention maps (B, L, H, T, T)", attentions),
                                      ("hidden states (B, L+1, T, C)", hidden)) if on]
        return size, (f"the engine's outputs for a batch of {B} x {T} tokens, {n_streams} "
                      f"stream(s)" + (f", {seeds} seeds" if seeds else "")
                      + (" with " + " and ".join(taps) if taps else ""))

    def head_stats(self, inputs: Inputs, queries: np.ndarray, keys: np.ndarray, arcs: np.ndarray,
                   n_relations: int, *, threads: int | None = None) -> dict[str, np.ndarray]:
        """One forward that counts where each head looks (DESIGN.md §3.1).

        The counters of :func:`masklrp.kernels.head_counts` (same arguments, see there),
        taken from the engine's attention cache without copying it out, plus ``logits``.
        """
        return self._engine.head_stats(inputs.input_ids, inputs.attention_mask, inputs.position_ids,
                                       inputs.token_type_ids, queries, keys, arcs, n_relations,
                                       self._threads(threads))

    def _stream_spec(self, stream: str | Stream):
        if isinstance(stream, str):
            if stream not in STREAMS:
                raise ValueError(f"streams: unknown stream {stream!r}; expected one of {STREAMS}")
            return stream
        if not isinstance(stream, Stream):
            raise TypeError(f"streams: expected a rule name or a masklrp.model.Stream, got {type(stream).__name__}")
        if stream.key in OUTPUTS:
            raise ValueError(f"Stream {stream.key!r}: the key is taken by the forward's output of that name; "
                             f"name the stream otherwise (not one of {OUTPUTS})")
        if stream.rules not in STREAMS:
            raise ValueError(f"Stream {stream.key!r}: unknown rules {stream.rules!r}; expected one of {STREAMS}")
        mask = None
        if stream.head_mask is not None:
            mask = np.asarray(stream.head_mask)
            if not (mask.dtype == bool or np.issubdtype(mask.dtype, np.number)):
                raise TypeError(f"Stream {stream.key!r}: head_mask must be a numeric or bool array, got {mask.dtype}")
            mask = mask.astype(np.float32)  # 0/1 weights: exact in float32
            shape = (self.spec.n_layers, self.spec.n_heads)
            if mask.shape != shape:
                raise ValueError(f"Stream {stream.key!r}: head_mask must have shape {shape} (layers, heads), "
                                 f"got {mask.shape}")
        if stream.mask_semantics not in MASK_SEMANTICS:
            raise ValueError(f"Stream {stream.key!r}: unknown mask_semantics {stream.mask_semantics!r}; "
                             f"expected one of {MASK_SEMANTICS}")
        return (stream.key, stream.rules, mask, bool(stream.renormalize), stream.mask_semantics)

    @staticmethod
    def _threads(threads: int | None) -> int:
        return _core.get_num_threads() if threads is None else int(threads)

    def logits_shape(self, inputs: Inputs) -> tuple[int, ...]:
        B, T = inputs.input_ids.shape
        return (B, T, self.spec.n_outputs) if self.spec.pool == "none" else (B, self.spec.n_outputs)


def load(model_or_path, *, tokenizer=None, architecture: str | None = None) -> Model:
    """Export a HF model (torch module, or folder read without torch) and build its engine.

    ``tokenizer``: a ``tokenizers.Tokenizer``, a transformers fast tokenizer or a path to
    ``tokenizer.json`` (a folder's own is found by itself). ``architecture`` overrides the
    head named in ``config.json`` (e.g. ``"BertModel"`` for a masked-LM checkpoint).
    """
    exported = export(model_or_path, tokenizer=tokenizer, architecture=architecture)
    return Model(exported.spec, exported.weights, exported.tokenizer, exported.source)


def _index_array(x, name: str, bool_ok: bool = False) -> np.ndarray:
    """``x`` as int64; bools only where they mean 0/1 (a mask), never as token ids."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor: read it without importing torch
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x)
    except ValueError:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular array of ints: pad the batch "
                         "(e.g. tokenizer(..., padding=True))") from None
    if a.dtype == bool and bool_ok:
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.size and a.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds {a.max()}, beyond int64")
    return np.ascontiguousarray(a, dtype=np.int64)


def _shaped(a: np.ndarray, name: str, shape: tuple[int, int]) -> np.ndarray:
    if a.ndim == 1 and shape[0] == 1:
        a = a[None, :]
    if a.shape != shape:
        raise ValueError(f"{name} must have the shape of input_ids {shape}, got {a.shape}")
    return a
