"""Token attributions: seeds (DESIGN.md §2), the AttnLRP / CP-LRP explainer and Explanation.

``masklrp.attnlrp(model, "a sentence", target=1)`` or, Captum-style,
``masklrp.AttnLRP(model).attribute(inputs, target=1)``. Both run one forward and one
relevance sweep in the C engine and return an :class:`Explanation` per sequence.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .model import Inputs, Model

# method name -> engine stream (DESIGN.md §2)
METHODS = {"attnlrp": "attnlrp", "cp-lrp": "cp"}
QA_TARGETS = ("start", "end", "both")
# Mapping inputs (a transformers BatchEncoding): the keys read, and those a tokenizer adds that
# the engine has no use for. Any other key is refused rather than silently dropped.
MAPPING_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "special_tokens_mask")
IGNORED_KEYS = ("offset_mapping", "length")


@dataclass
class Explanation:
    """Relevance of each (real) token of one sequence for one explained logit.

    ``scores[t]`` is the relevance at token ``t``'s word embedding, ``Σ_d e_td g_td``
    (DESIGN.md §2); position and token-type embeddings take their own shares, kept in
    ``extras`` (``"positions"``, ``"types"``). Padding is dropped. ``special`` flags special
    tokens ([CLS], [SEP], <s>: bool per token) and ``word_ids`` gives each token's word
    (None for specials), when the inputs came from a tokenizer. ``truncated``: the text was
    longer than the model's positions and only its first part is explained
    (``truncation=True``; heatmap titles say so).

    In a notebook an Explanation shows as a token heatmap; :meth:`plot` and :meth:`save`
    draw it (see :mod:`masklrp.heatmap`, which also puts several side by side).
    """

    tokens: list[str]
    scores: np.ndarray
    target: Any
    logit: float
    method: str
    input_ids: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    special: np.ndarray | None = None
    word_ids: list | None = None
    truncated: bool = False

    def __repr__(self) -> str:
        top = np.argsort(-self.scores)[:3]
        best = ", ".join(f"{self.tokens[i]!r}: {self.scores[i]:+.3g}" for i in top)
        cut = " (truncated)" if self.truncated else ""
        return (f"Explanation({self.method}, target={self.target!r}, logit={self.logit:.4g}, "
                f"{len(self.tokens)} tokens{cut}; top {best})")

    @property
    def title(self) -> str:
        """``"method: target 1, logit 2.2"``, with ``" (truncated)"`` when it is."""
        return (f"{self.method}: target {self.target!r}, logit {self.logit:.4g}"
                + (" (truncated)" if self.truncated else ""))

    # Heatmaps live in masklrp.heatmap, imported on use: it sits above this module.
    def words(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Word pieces merged into words: ``(words, summed scores, special flags)``."""
        from . import heatmap
        return heatmap.words(self)

    def to_html(self, **kw) -> str:
        """The heatmap as an HTML fragment (keywords of :func:`masklrp.heatmap.to_html`)."""
        from . import heatmap
        return heatmap.to_html(self, **kw)

    def _repr_html_(self) -> str | None:
        from . import heatmap
        try:
            return heatmap.to_html(self, title=self.title)
        except (TypeError, ValueError):  # e.g. non-finite scores: the notebook shows __repr__ instead
            return None

    def plot(self, **kw):
        """The heatmap as a matplotlib Figure (keywords of :func:`masklrp.heatmap.plot`)."""
        from . import heatmap
        return heatmap.plot(self, **kw)

    def save(self, path, **kw) -> Path:
        """Write the heatmap to ``path`` (.html, .png, .pdf, .svg; :func:`masklrp.heatmap.save`)."""
        from . import heatmap
        return heatmap.save(self, path, **kw)


def seed_for(model: Model, logits: np.ndarray | None, shape: tuple[int, ...], target=None, *,
             contrastive: bool = False, mask: np.ndarray | None = None) -> tuple[np.ndarray, list]:
    """The backward's starting g (DESIGN.md §2 "Seeds") and the resolved target per row.

    * classification / base encoder: ``e_c`` for class (or dimension) ``c``, given as an
      int, a 0-d integer array or a label name of ``spec.labels``; default argmax;
    * question answering: ``target`` is ``"start"``, ``"end"``, ``"both"`` or a pair
      ``(kind, position)``; the position defaults to the argmax of that logit column over
      the real positions (``mask``, the attention mask, when given; a given position must
      be real too);
    * causal LM: the next-token logit at the last real position; default argmax. With
      ``contrastive``: ``+1`` on the target and ``−1/(V−1)`` on every other token, so the
      explained quantity is the target's margin over the mean of the others.

    ``logits`` (of ``shape``) is needed only where a default is an argmax; pass None when
    :func:`needs_logits` says no, and the explainer saves a forward pass.
    """
    B = shape[0]
    targets = per_row(target, B)
    seed = np.zeros(shape, dtype=np.float32)
    resolved = []
    for b, tgt in enumerate(targets):
        if model.spec.pool == "none":
            row = None if logits is None else logits[b]
            if row is not None and mask is not None:  # padding is never the answer
                row = np.where(mask[b][:, None] == 1, row, -np.inf)
            resolved.append(_qa_seed(seed[b], row, tgt, None if mask is None else mask[b]))
            continue
        n = shape[1]
        c = int(np.argmax(logits[b])) if tgt is None else _label_index(model, tgt)
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)):
            raise TypeError(f"target must be an int class / token id or a label name, "
                            f"got {type(c).__name__} {c!r}")
        if not 0 <= c < n:
            raise ValueError(f"target {c} is out of range: the model has {n} outputs")
        if contrastive:
            if model.spec.task != "causal-lm":
                raise ValueError("contrastive seeds are for causal LMs")
            seed[b] = -1.0 / (n - 1)
        seed[b, c] = 1.0
        resolved.append(int(c))
    return seed, resolved


def needs_logits(model: Model, target) -> bool:
    """Whether resolving ``target`` takes an argmax over the logits."""
    targets = per_row(target)
    if model.spec.pool != "none":
        return any(t is None for t in targets)
    return any(not (isinstance(t, tuple) and len(t) == 2 and t[1] is not None) for t in targets)


def per_row(target, B: int | None = None) -> list:
    """``target`` row by row: a list, tuple or 1-d array gives one per row (``B`` of them, when
    given); anything else is every row's. A tuple whose first item is a str is one QA target
    ``(kind, position)``; a 0-d array stands for its value."""
    if isinstance(target, np.ndarray) and target.ndim == 0:
        target = target.item()
    if isinstance(target, (list, tuple, np.ndarray)) and not _is_qa_target(target):
        rows = [t.item() if isinstance(t, np.generic) else t for t in target]
        if B is not None and len(rows) != B:
            raise ValueError(f"target: got {len(rows)} targets for a batch of {B}")
        return rows
    return [target] * (1 if B is None else B)


def _is_qa_target(target) -> bool:
    return isinstance(target, tuple) and len(target) > 0 and isinstance(target[0], str)


def _label_index(model: Model, target):
    """A label name of ``spec.labels`` as its class index; anything else as it is."""
    if not isinstance(target, str):
        return target
    if target not in model.spec.labels:
        raise ValueError(f"target {target!r} is not a label of this model "
                         f"(labels: {', '.join(model.spec.labels) or 'none'}); give a class index")
    return model.spec.labels.index(target)


def _qa_seed(seed: np.ndarray, logits: np.ndarray | None, target,
             mask: np.ndarray | None) -> tuple[str, Any]:
    """seed, logits (T, 2) for one sequence: start logits [:, 0], end logits [:, 1]; mask
    (T,) the attention mask (a given position must be a real token)."""
    if isinstance(target, tuple) and len(target) != 2:
        raise ValueError(f"target for question answering must be one of {QA_TARGETS} or "
                         f"(kind, position), got {target!r}")
    kind, pos = (target, None) if not isinstance(target, tuple) else target
    kind = "start" if kind is None else kind
    if kind not in QA_TARGETS:
        raise ValueError(f"target for question answering must be one of {QA_TARGETS} or "
                         f"(kind, position), got {target!r}")
    T = seed.shape[0]
    columns = {"start": (0,), "end": (1,), "both": (0, 1)}[kind]
    chosen = []
    for col in columns:
        p = int(np.argmax(logits[:, col])) if pos is None else pos
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not 0 <= p < T:
            raise ValueError(f"target position {p!r} is out of range for a sequence of {T} tokens")
        if mask is not None and not mask[p]:
            raise ValueError(f"target position {p} is padding (attention_mask 0): "
                             "explain a real token")
        seed[p, col] = 1.0
        chosen.append(int(p))
    return kind, chosen[0] if len(chosen) == 1 else tuple(chosen)


class AttnLRP:
    """AttnLRP (or CP-LRP) input attributions from the C engine, Captum-style.

    >>> explainer = AttnLRP(model)
    >>> [e] = explainer.attribute("a gripping, funny film", target=1)
    """

    def __init__(self, model: Model, method: str = "attnlrp"):
        if method not in METHODS:
            raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}")
        self.model = model
        self.method = method

    def attribute(self, inputs, target=None, *, targets=None, contrastive: bool = False,
                  truncation: bool = False, threads: int | None = None) -> list:
        """Explain each sequence of ``inputs`` (see :func:`as_inputs`; ``truncation`` there):
        one Explanation per sequence for ``target`` (see :func:`seed_for`).

        ``targets`` explains several outputs of each sequence from one forward and one
        backward sweep each: a list per sequence, all of one length K, of what ``target``
        takes or, for a causal LM, ``(position, token)`` pairs: the logit of ``token`` (None:
        the argmax there) predicted after the token at ``position`` (0-based). Returns a list
        per sequence of K Explanations; a pair's ``target`` is the resolved
        ``(position, token)``. Each equals that target explained alone: bit for bit where the
        lone call runs the same shapes, to float32 rounding otherwise (tests/test_seeds.py).
        """
        model = self.model
        inputs = as_inputs(model, inputs, truncation=truncation)
        stream = METHODS[self.method]
        if targets is not None:
            if target is not None:
                raise ValueError("give target (one output per sequence) or targets (several), not both")
            return self._attribute_many(inputs, targets, stream, contrastive, threads)
        if target is None and model.spec.pool != "none" and not contrastive:
            # The engine seeds each row's argmax itself: one forward instead of two.
            out = model.run(inputs, None, (stream,), threads=threads)
            seed, targets = seed_for(model, out["logits"], out["logits"].shape)
        else:
            logits = model.forward(inputs, threads=threads)["logits"] if needs_logits(model, target) else None
            seed, targets = seed_for(model, logits, model.logits_shape(inputs), target, contrastive=contrastive,
                                     mask=inputs.attention_mask)
            out = model.run(inputs, seed, (stream,), threads=threads)
        return explanations(model, inputs, out, out[stream], seed, targets, self.method)


    def _attribute_many(self, inputs: Inputs, targets, stream: str, contrastive: bool,
                        threads: int | None) -> list[list[Explanation]]:
        """K targets per sequence: one forward, K backward sweeps (``Model.run``'s K seeds)."""
        model = self.model
        B = inputs.input_ids.shape[0]
        if not isinstance(targets, (list, tuple)) or len(targets) != B or not all(
                isinstance(t, (list, tuple)) and not _is_qa_target(t) for t in targets):
            raise TypeError(f"targets must hold one list of targets per sequence ({B} lists); "
                            "for a single text, a list of targets")
        K = len(targets[0])
        if K == 0 or any(len(t) != K for t in targets):
            raise ValueError(f"targets: every sequence needs the same number (>= 1) of targets, got "
                             f"{[len(t) for t in targets]}")
        # each target as (row of the pooled head or None for the pool's own, what seed_for takes)
        split = [[_at_position(model, inputs, b, t) for t in row] for b, row in enumerate(targets)]
        rows = None
        if any(r is not None for row in split for r, _ in row):
            default = _pool_rows(model, inputs)
            rows = np.array([[default[b] if split[b][k][0] is None else split[b][k][0] for b in range(B)]
                             for k in range(K)], dtype=np.int64)
        # an argmax default needs the logits first: at each seed's rows (K,B,NO) when given
        logits = None
        if any(needs_logits(model, [t for _, t in row]) for row in split):
            logits = model.run(inputs, None, (), rows=rows, threads=threads)["logits"]
        shape = model.logits_shape(inputs)
        seeds, resolved = np.zeros((K,) + shape, dtype=np.float32), []
        for k in range(K):
            at_k = logits[k] if logits is not None and rows is not None else logits
            seeds[k], chosen = seed_for(model, at_k, shape, [split[b][k][1] for b in range(B)],
                                        contrastive=contrastive, mask=inputs.attention_mask)
            resolved.append([c if split[b][k][0] is None else (split[b][k][0], c) for b, c in enumerate(chosen)])
        out = model.run(inputs, seeds, (stream,), rows=rows, threads=threads)
        pooled = model.spec.pool != "none"  # a pooled head's logits are per seed, (K,B,NO)
        per_seed = [explanations(model, inputs, {"logits": out["logits"][k] if pooled else out["logits"]},
                                 {key: v[k] for key, v in out[stream].items()}, seeds[k], resolved[k], self.method)
                    for k in range(K)]
        return [[per_seed[k][b] for k in range(K)] for b in range(B)]


def _at_position(model: Model, inputs: Inputs, b: int, target) -> tuple[int | None, Any]:
    """A target of sequence ``b`` as (the row its logit is read at, or None for the pool's own;
    the class / token): a causal LM's ``(position, token)`` pair names the row."""
    if not (isinstance(target, tuple) and len(target) == 2 and not _is_qa_target(target)):
        return None, target
    if model.spec.task != "causal-lm":
        raise ValueError(f"targets: (position, token) pairs are for causal LMs, got {target!r} "
                         f"for a {model.spec.task} model")
    position, token = target
    length = int(inputs.attention_mask[b].sum())
    if isinstance(position, (bool, np.bool_)) or not isinstance(position, (int, np.integer)):
        raise TypeError(f"targets: a position must be an int, got {type(position).__name__} {position!r}")
    if not 0 <= position < inputs.input_ids.shape[1] or not inputs.attention_mask[b, position]:
        raise ValueError(f"targets: position {position} of sequence {b} is not one of its {length} "
                         "real tokens")
    return int(position), token


def _pool_rows(model: Model, inputs: Inputs) -> np.ndarray:
    """(B,) the row a first/last-pooled head reads in each sequence."""
    mask = inputs.attention_mask
    if model.spec.pool == "first":
        return np.zeros(len(mask), dtype=np.int64)
    return (mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)).astype(np.int64)


def attnlrp(model: Model, inputs, target=None, *, targets=None, method: str = "attnlrp",
            contrastive: bool = False, truncation: bool = False,
            threads: int | None = None) -> Explanation | list:
    """One-call AttnLRP: an Explanation for a single text (or text pair), a list for a batch.

    ``targets`` (see :meth:`AttnLRP.attribute`) explains several outputs from one forward:
    for a single text a list of targets, giving a list of Explanations, e.g. the tokens a
    causal LM predicts after positions 3 and 4: ``targets=[(3, token_a), (4, token_b)]``.
    """
    single = is_single_text(inputs)
    if targets is not None and single:
        targets = [targets]
    result = AttnLRP(model, method).attribute(inputs, target, targets=targets, contrastive=contrastive,
                                              truncation=truncation, threads=threads)
    return result[0] if single else result


def is_single_text(inputs) -> bool:
    """A text or a ``(text, text_pair)`` tuple: one sequence, explained as one Explanation."""
    return isinstance(inputs, str) or _is_text_pair(inputs)


def _is_text_pair(x) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and all(isinstance(t, str) for t in x)


def as_inputs(model: Model, inputs, *, truncation: bool = False) -> Inputs:
    """Engine inputs from what a user holds (README "Input policy"):

    * :class:`~masklrp.model.Inputs`, as they are;
    * a text, a ``(text, text_pair)`` tuple (a sentence pair, as tokenizers reads it), or a
      non-empty list of either (tokenized by :meth:`Model.encode`, with ``truncation``);
    * a mapping (a transformers ``BatchEncoding``, NumPy or torch) with ``input_ids`` and
      optionally the other keys of :data:`MAPPING_KEYS`;
    * token ids: ints of shape (length,) or (batch, length), e.g. a NumPy array or torch tensor.
    """
    if isinstance(inputs, Inputs):
        return inputs
    if is_single_text(inputs):
        texts, pairs = ([inputs], None) if isinstance(inputs, str) else ([inputs[0]], [inputs[1]])
        return model.encode(texts, pairs, truncation=truncation)
    if isinstance(inputs, Mapping):
        return _from_mapping(model, inputs)
    if isinstance(inputs, Iterator):
        raise TypeError(f"inputs is a {type(inputs).__name__}: give a list (e.g. list(...)) of "
                        "texts, token ids or a tokenizer's output")
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise ValueError("inputs is empty: give a text, a list of texts or token ids")
        if all(isinstance(x, str) for x in inputs):
            return model.encode(list(inputs), truncation=truncation)
        if all(_is_text_pair(x) for x in inputs):
            return model.encode([a for a, _ in inputs], [b for _, b in inputs], truncation=truncation)
        if any(isinstance(x, str) or _is_text_pair(x) for x in inputs):
            raise TypeError("inputs: a list must hold only texts, only (text, text_pair) tuples "
                            "or only token ids")
    return model.prepare(inputs)


def _from_mapping(model: Model, inputs: Mapping) -> Inputs:
    unknown = [k for k in inputs if k not in MAPPING_KEYS + IGNORED_KEYS]
    if "input_ids" not in inputs or unknown:
        raise ValueError(f"inputs: a mapping needs 'input_ids' and may hold {MAPPING_KEYS[1:]}; "
                         + (f"got unknown keys {unknown}" if unknown else f"got keys {list(inputs)}"))
    prepared = model.prepare(inputs["input_ids"], inputs.get("attention_mask"),
                             token_type_ids=inputs.get("token_type_ids"),
                             position_ids=inputs.get("position_ids"))
    if inputs.get("special_tokens_mask") is not None:
        special = np.asarray(inputs["special_tokens_mask"]).reshape(prepared.input_ids.shape[0], -1)
        if special.shape != prepared.input_ids.shape or special.dtype.kind not in "biu":
            raise ValueError(f"inputs['special_tokens_mask'] must be 0/1 of the shape of input_ids "
                             f"{prepared.input_ids.shape}, got {special.dtype} {special.shape}")
        prepared.special_tokens_mask = special.astype(bool)
    return prepared


def explanations(model: Model, inputs: Inputs, out: dict, stream: dict, seed: np.ndarray,
                 targets: list, method: str) -> list[Explanation]:
    """Cut one engine result into per-sequence Explanations (real tokens only)."""
    result = []
    logits = out["logits"]
    special = special_flags(inputs, model.tokenizer)
    for b, tgt in enumerate(targets):
        real = inputs.attention_mask[b].astype(bool)
        ids = inputs.input_ids[b, real]
        tokens = (list(np.asarray(inputs.tokens[b], dtype=object)[real]) if inputs.tokens is not None
                  else _token_strings(model, ids))
        extras = {k: stream[k][b, real] for k in ("positions", "types") if k in stream}
        result.append(Explanation(tokens=tokens, scores=stream["tokens"][b, real].copy(), target=tgt,
                                  logit=float(np.sum(seed[b] * logits[b])), method=method,
                                  input_ids=ids, extras=extras, **token_fields(inputs, special, b, real)))
    return result


def special_flags(inputs: Inputs, tokenizer=None) -> np.ndarray | None:
    """(B, T) bool special-token flags: the tokenizer batch's mask, else the tokenizer's
    special ids (for inputs given as token ids), else None (unknown)."""
    if inputs.special_tokens_mask is not None:
        return np.asarray(inputs.special_tokens_mask, dtype=bool)
    if tokenizer is not None and tokenizer.special_ids:
        return np.isin(inputs.input_ids, list(tokenizer.special_ids))
    return None


def token_fields(inputs: Inputs, special: np.ndarray | None, b: int, real: np.ndarray) -> dict:
    """An Explanation's ``special``, ``word_ids`` and ``truncated`` for row ``b``'s real
    tokens (bool mask ``real``)."""
    return {"special": None if special is None else special[b, real].copy(),
            "word_ids": None if inputs.word_ids is None else
            [inputs.word_ids[b][t] for t in np.flatnonzero(real)],
            "truncated": bool(inputs.truncated is not None and inputs.truncated[b])}


def _token_strings(model: Model, ids: np.ndarray) -> list[str]:
    if model.tokenizer is not None:
        return model.tokenizer.convert_ids_to_tokens(ids)
    return [str(int(i)) for i in ids]
