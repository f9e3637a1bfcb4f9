"""Faithfulness metrics (DESIGN.md §5) and the perturbation runner that feeds them.

Pure functions on probabilities; ``p_full`` is ``(N,)`` (the explained class's probability
on each unperturbed sequence), ``p_*`` are ``(N, K)`` (the same after perturbation at each
of ``K`` fractions ``k``). Each returns a :class:`Curve`: ``per_k`` (the mean over sequences
at each ``k``), ``mean`` (the mean of ``per_k``) and ``per_sequence`` (each sequence's mean
over ``k``, whose mean is ``mean`` too: what paired comparisons resample).

* :func:`aopc` ``mean_k (p(x) − p(x̃_k))`` and :func:`lodds` ``mean_k log(p(x̃_k) / p(x))``,
  ``x̃_k`` with the top ``k`` of the tokens replaced (paper App. D; higher AOPC, lower LOdds
  is better);
* ERASER (DeYoung et al., 2020) :func:`comprehensiveness` ``p(x) − p(x \\ r_k)`` (top ``k``
  removed) and :func:`sufficiency` ``p(x) − p(r_k)`` (only the top ``k`` kept), over
  :data:`ERASER_BINS`;
* :func:`abpc`, the area between the least- and the most-relevant-first perturbation curves
  (AttnLRP, Achtibat et al., 2024): ``mean_k (p(x̃ᴸᵉᴿᶠ_k) − p(x̃ᴹᵒᴿᶠ_k))``;
* :func:`precision_at`, Precision@20 for QA: the share of gold answer tokens among the ``k``
  highest-scored tokens.

:func:`perturbation_curves` builds the perturbed inputs (token ids replaced in place, so
positions, token types and the attention mask stay as they were) and runs them batched
through the C engine; :func:`shared_perturbation_curves` does so for several methods at once,
running a perturbed sequence that two of them share only once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from ._checks import fractions, integer, number, positive_int
from .explain import special_flags
from .model import Inputs, Model

__all__ = ["ERASER_BINS", "KS", "MODES", "Curve", "PerturbationCurves", "abpc", "aopc",
           "comprehensiveness", "lodds", "n_replaced", "perturb", "perturbation_curves",
           "precision_at", "shared_perturbation_curves", "special_tokens", "sufficiency"]

KS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # paper App. D
ERASER_BINS = (0.01, 0.05, 0.1, 0.2, 0.5)          # DeYoung et al. (2020), §4.2
# "most": replace the highest-scored k; "least": the lowest-scored k; "keep": all but the highest k.
MODES = ("most", "least", "keep")
ROUNDINGS = ("ceil", "round", "floor")
_TINY = np.finfo(np.float64).tiny


class Curve(NamedTuple):
    """A metric at each ``k`` (mean over sequences), its mean over ``k`` and, when known,
    ``(N,)`` each sequence's mean over ``k``."""

    per_k: np.ndarray
    mean: float
    per_sequence: np.ndarray | None = None


# ---------------------------------------------------------------------------- pure metrics
def aopc(p_full, p_removed) -> Curve:
    """Area over the perturbation curve: ``mean_k (p(x) − p(x̃_k))``."""
    p_full, p_removed = _probabilities(p_full, p_removed, "p_removed")
    return _curve(p_full[:, None] - p_removed)


def lodds(p_full, p_removed) -> Curve:
    """Log-odds: ``mean_k log(p(x̃_k) / p(x))`` (probabilities clipped at the smallest float64)."""
    p_full, p_removed = _probabilities(p_full, p_removed, "p_removed")
    return _curve(np.log(np.maximum(p_removed, _TINY)) - np.log(np.maximum(p_full, _TINY))[:, None])


def comprehensiveness(p_full, p_removed) -> Curve:
    """ERASER comprehensiveness: ``p(x) − p(x \\ r_k)``, the top ``k`` removed (higher is better)."""
    return aopc(p_full, p_removed)


def sufficiency(p_full, p_kept) -> Curve:
    """ERASER sufficiency: ``p(x) − p(r_k)``, only the top ``k`` kept (lower is better)."""
    p_full, p_kept = _probabilities(p_full, p_kept, "p_kept")
    return _curve(p_full[:, None] - p_kept)


def abpc(p_least, p_most) -> Curve:
    """Area between the perturbation curves: ``mean_k (p(x̃ᴸᵉᴿᶠ_k) − p(x̃ᴹᵒᴿᶠ_k))``.

    ``p_least`` / ``p_most``: ``(N, K)`` probabilities with the least / most relevant ``k``
    replaced. The area is the mean over the ``k`` grid (a uniform grid's rectangle rule),
    so it is on AOPC's scale; higher is better.
    """
    p_least, p_most = np.atleast_2d(_array(p_least, "p_least")), np.atleast_2d(_array(p_most, "p_most"))
    if p_least.shape != p_most.shape:
        raise ValueError(f"p_least and p_most must have one shape, got {p_least.shape} and {p_most.shape}")
    return _curve(p_least - p_most)


def precision_at(scores, gold_mask, k: int = 20, candidates=None) -> float:
    """Share of gold tokens among the ``k`` highest-scored tokens of one sequence.

    ``scores``, ``gold_mask`` (bool) and ``candidates`` (bool, default all) are ``(n,)``;
    only candidates are ranked (ties: the earlier token first). The denominator is ``k``,
    or the number of candidates when there are fewer.
    """
    scores = _array(scores, "scores")
    gold = np.asarray(gold_mask, dtype=bool)
    cand = np.ones_like(gold) if candidates is None else np.asarray(candidates, dtype=bool)
    if scores.ndim != 1 or gold.shape != scores.shape or cand.shape != scores.shape:
        raise ValueError(f"scores, gold_mask and candidates must be (n,) of one length, got "
                         f"{scores.shape}, {gold.shape}, {cand.shape}")
    k = positive_int(k, "k")
    index = np.flatnonzero(cand)
    if len(index) == 0:
        raise ValueError("candidates: no token to rank")
    top = index[np.argsort(-scores[index], kind="stable")[:k]]
    return float(gold[top].sum() / len(top))


def _array(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite")
    return a


def _probabilities(p_full, p, name: str) -> tuple[np.ndarray, np.ndarray]:
    p_full, p = np.atleast_1d(_array(p_full, "p_full")), np.atleast_2d(_array(p, name))
    if p_full.ndim != 1 or p.ndim != 2 or len(p_full) != len(p):
        raise ValueError(f"p_full must be (N,) and {name} (N, K), got {p_full.shape} and {p.shape}")
    for label, a in (("p_full", p_full), (name, p)):
        if a.min(initial=0) < 0 or a.max(initial=0) > 1:
            raise ValueError(f"{label} must hold probabilities in [0, 1]")
    return p_full, p


def _curve(diff: np.ndarray) -> Curve:
    per_k = diff.mean(axis=0)
    return Curve(per_k, float(per_k.mean()), diff.mean(axis=1))


# ---------------------------------------------------------------------------- perturbation
def n_replaced(n: int, k: float, rounding: str = "ceil") -> int:
    """How many of ``n`` candidate tokens make up the fraction ``k``.

    ``"ceil"`` (default) replaces at least one token at every ``k > 0``, so short sentences
    are perturbed at 10% too; ``"round"`` rounds half up, ``"floor"`` rounds down. ``k·n``
    is first rounded to 9 decimals so that 0.3·10 counts as 3, not 3.0000000000000004.
    """
    n = integer(n, "n", 0)
    k = number(k, "k")
    if not 0 <= k <= 1:
        raise ValueError(f"k must be a fraction in [0, 1], got {k!r}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    x = round(k * n, 9)
    count = {"ceil": np.ceil(x), "round": np.floor(x + 0.5), "floor": np.floor(x)}[rounding]
    return int(min(count, n))


def special_tokens(model: Model, inputs: Inputs, special_tokens_mask=None) -> np.ndarray:
    """(B, T) bool: the tokens never replaced (padding always is one).

    The first of: ``special_tokens_mask`` given here, the one :meth:`Model.encode` made,
    the tokenizer's special ids; without any of them only padding counts as special.
    """
    if special_tokens_mask is None:
        special_tokens_mask = inputs.special_tokens_mask
    if special_tokens_mask is not None:
        special = np.asarray(special_tokens_mask, dtype=bool)
        if special.shape != inputs.input_ids.shape:
            raise ValueError(f"special_tokens_mask must have the shape of input_ids "
                             f"{inputs.input_ids.shape}, got {special.shape}")
    else:
        special = special_flags(inputs, model.tokenizer)
        if special is None:
            special = np.zeros(inputs.input_ids.shape, dtype=bool)
    return special | (inputs.attention_mask == 0)


def perturb(inputs: Inputs, scores, ks: Sequence[float] = KS, mode: str = "most", replacement: int = 0,
            special_tokens_mask=None, rounding: str = "ceil") -> list[Inputs]:
    """The perturbed copies of ``inputs``, one :class:`Inputs` per ``k``.

    ``scores``: per sequence, the scores of its real tokens (Explanations or arrays, as
    :attr:`Explanation.scores`). Among the real non-special tokens (``special_tokens_mask``,
    (B, T) bool; default none but padding) the ``n_replaced(n, k, rounding)`` highest-scored
    (``"most"``) or lowest-scored (``"least"``) get ``replacement`` as their id; ``"keep"``
    replaces every candidate except the highest-scored ones. Of tied scores the earlier token
    ranks higher. Positions, token types and the attention mask are copied unchanged.
    """
    ks, (mode,), rounding = _check_plan(ks, (mode,), rounding)
    special = (np.zeros(inputs.input_ids.shape, dtype=bool) if special_tokens_mask is None
               else np.asarray(special_tokens_mask, dtype=bool)) | (inputs.attention_mask == 0)
    ranked = _rankings(inputs, scores, special)
    out = []
    for k in ks:
        ids = inputs.input_ids.copy()
        for b, (order, index) in enumerate(ranked):
            ids[b, _positions(order, index, *_plan_row(len(index), k, mode, rounding))] = replacement
        out.append(_with_ids(inputs, ids))
    return out


@dataclass
class PerturbationCurves:
    """What :func:`perturbation_curves` measured, for ``B`` sequences and ``K`` fractions.

    ``p_full`` (B,): probability of ``target`` (B,) on the unperturbed inputs; ``probs``:
    mode -> (B, K) the same on each perturbed input; ``n_candidates`` (B,): the real
    non-special tokens that could be replaced.
    """

    ks: tuple[float, ...]
    target: np.ndarray
    p_full: np.ndarray
    probs: dict[str, np.ndarray]
    n_candidates: np.ndarray


def perturbation_curves(model: Model, inputs: Inputs, scores, ks: Sequence[float] = KS, *,
                        modes: Sequence[str] = ("most",), target=None, replacement: int | str | None = None,
                        special_tokens_mask=None, rounding: str = "ceil", logits=None, batch_size: int = 256,
                        threads: int | None = None) -> PerturbationCurves:
    """Probabilities of the explained class as the tokens are replaced in score order.

    ``scores`` as in :func:`perturb`; ``target``: None (each sequence's predicted class),
    an int, or (B,) ints (e.g. the gold labels); ``replacement``: a token id or token string
    (default: the pad id, 0 for BERT); special tokens as in :func:`special_tokens`;
    ``logits``: the unperturbed inputs' ``(B, outputs)`` logits when the caller has them
    already (one forward fewer; :func:`masklrp.evaluate` shares them between methods).
    Every distinct perturbed sequence runs once, ``batch_size`` rows per engine forward:
    "keep the top m" is "replace the lowest n − m", and small fractions of short sequences
    often replace the same number of tokens.
    """
    return shared_perturbation_curves(model, inputs, [scores], ks, modes=modes, target=target,
                                      replacement=replacement, special_tokens_mask=special_tokens_mask,
                                      rounding=rounding, logits=logits, batch_size=batch_size, threads=threads)[0]


def shared_perturbation_curves(model: Model, inputs: Inputs, runs: Sequence, ks: Sequence[float] = KS, *,
                               modes: Sequence[str] = ("most",), target=None, replacement: int | str | None = None,
                               special_tokens_mask=None, rounding: str = "ceil", logits=None, batch_size: int = 256,
                               threads: int | None = None) -> list[PerturbationCurves]:
    """:func:`perturbation_curves` of several score sets for the same ``inputs`` (one per
    method or seed; each as ``scores`` there), one :class:`PerturbationCurves` per run.

    A perturbed sequence is keyed by the set of positions it replaces, so one that several
    runs ask for (methods that agree on the top tokens, e.g. a rollout and its masked variants)
    runs through the engine once for all of them.
    """
    ks, modes, rounding = _check_plan(ks, modes, rounding)
    if model.spec.pool == "none":
        raise ValueError("model: perturbation metrics need a pooled classifier (one distribution per "
                         "sequence); for question answering use precision_at")
    batch_size = positive_int(batch_size, "batch_size")
    replacement = resolve_replacement(model, replacement)
    special = special_tokens(model, inputs, special_tokens_mask)
    rankings = [_rankings(inputs, scores, special) for scores in runs]

    B = inputs.input_ids.shape[0]
    full = _softmax(_forward(model, inputs, batch_size, threads) if logits is None
                    else _given_logits(logits, (B, model.spec.n_outputs)))
    target = _targets(target, full)
    # (sequence, replaced positions) -> its row among the perturbed inputs, each distinct one once
    rows: dict[tuple[int, tuple[int, ...]], int] = {}
    where = [{mode: np.zeros((B, len(ks)), dtype=np.int64) for mode in modes} for _ in rankings]
    for ranked, found in zip(rankings, where):
        for b, (order, index) in enumerate(ranked):
            for mode in modes:
                for j, k in enumerate(ks):
                    positions = _positions(order, index, *_plan_row(len(index), k, mode, rounding))
                    found[mode][b, j] = rows.setdefault((b, tuple(sorted(positions.tolist()))), len(rows))
    picks = [b for b, _ in rows]
    ids = inputs.input_ids[picks].copy()
    for r, (_, positions) in enumerate(rows):
        ids[r, list(positions)] = replacement
    probs = _softmax(_forward(model, _with_ids(inputs, ids, picks), batch_size, threads))
    p_row = probs[np.arange(len(rows)), target[picks]]
    return [PerturbationCurves(ks=ks, target=target, p_full=full[np.arange(B), target],
                               probs={mode: p_row[found[mode]] for mode in modes},
                               n_candidates=np.array([len(index) for _, index in ranked], dtype=np.int64))
            for ranked, found in zip(rankings, where)]


def resolve_replacement(model: Model, replacement: int | str | None) -> int:
    """A replacement token id: None -> the pad id (0 when the model names none); a token
    string (``"[MASK]"``) through the tokenizer."""
    vocab = model.spec.vocab
    if replacement is None:
        return model.spec.pad_token_id if 0 <= model.spec.pad_token_id < vocab else 0
    if isinstance(replacement, str):
        token_id = None if model.tokenizer is None else model.tokenizer.backend.token_to_id(replacement)
        if token_id is None:
            raise ValueError(f"replacement: token {replacement!r} is not in the model's vocabulary")
        return int(token_id)
    if isinstance(replacement, (bool, np.bool_)) or not isinstance(replacement, (int, np.integer)):
        raise TypeError(f"replacement must be a token id, a token string or None, got {type(replacement).__name__}")
    if not 0 <= replacement < vocab:
        raise ValueError(f"replacement id {replacement} is not in the vocabulary [0, {vocab})")
    return int(replacement)


def _check_plan(ks, modes, rounding):
    ks_ = fractions(ks, "ks")
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    if not modes or any(m not in MODES for m in modes):
        raise ValueError(f"modes must be among {MODES}, got {modes!r}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return ks_, modes, rounding


def _rankings(inputs: Inputs, scores, special: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per sequence: the candidate positions and their order, highest score first."""
    B = inputs.input_ids.shape[0]
    if isinstance(scores, np.ndarray) and scores.ndim == 2 and scores.shape == inputs.input_ids.shape:
        raise ValueError("scores: give one array per sequence over its real tokens (as "
                         "Explanation.scores), not a padded (B, T) array")
    if len(scores) != B:
        raise ValueError(f"scores: got {len(scores)} score arrays for a batch of {B}")
    ranked = []
    for b, s in enumerate(scores):
        s = np.asarray(getattr(s, "scores", s), dtype=np.float64)
        real = np.flatnonzero(inputs.attention_mask[b])
        if s.shape != real.shape:
            raise ValueError(f"scores[{b}] has shape {s.shape}, but sequence {b} has {len(real)} real tokens")
        if not np.isfinite(s).all():
            raise ValueError(f"scores[{b}] must be finite")
        keep = ~special[b, real]
        index, s = real[keep], s[keep]
        ranked.append((np.argsort(-s, kind="stable"), index))
    return ranked


def _plan_row(n: int, k: float, mode: str, rounding: str) -> tuple[str, int]:
    """(order, count) of a perturbation: replace the ``count`` highest- (``"most"``) or
    lowest-scored (``"least"``) candidates. Keeping the top m of n is replacing the lowest
    n − m, and replacing none is one row whatever the order."""
    count = n_replaced(n, k, rounding)
    order, count = ("least", n - count) if mode == "keep" else (mode, count)
    return ("none", 0) if count == 0 else (order, count)


def _positions(order: np.ndarray, index: np.ndarray, kind: str, count: int) -> np.ndarray:
    """The positions of the ``count`` highest- (``"most"``) or lowest-scored candidates."""
    return index[order[:count]] if kind == "most" else index[order[::-1][:count]]


def _with_ids(inputs: Inputs, ids: np.ndarray, rows=None) -> Inputs:
    take = (lambda a: a) if rows is None else (lambda a: None if a is None else a[rows])
    return Inputs(ids, take(inputs.attention_mask), take(inputs.position_ids), take(inputs.token_type_ids))


def _forward(model: Model, inputs: Inputs, batch_size: int, threads) -> np.ndarray:
    """Logits of every row, ``batch_size`` rows per engine call.

    Rows run shortest first and each call is cut to its last real column, so a call pads
    its rows only to the longest among similar lengths.
    """
    mask = inputs.attention_mask
    ends = mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)  # one past each row's last real token
    order = np.argsort(ends, kind="stable")
    out = np.empty((len(order), model.spec.n_outputs), dtype=np.float64)
    for lo in range(0, len(order), batch_size):
        rows = order[lo:lo + batch_size]
        T = int(ends[rows].max())
        part = Inputs(inputs.input_ids[rows, :T], mask[rows, :T], inputs.position_ids[rows, :T],
                      None if inputs.token_type_ids is None else inputs.token_type_ids[rows, :T])
        out[rows] = model.forward(part, threads=threads)["logits"]
    return out


def _given_logits(logits, shape: tuple[int, int]) -> np.ndarray:
    a = np.asarray(logits, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"logits must be (batch, outputs) = {shape}, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("logits must be finite")
    return a


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _targets(target, probs: np.ndarray) -> np.ndarray:
    B, n = probs.shape
    if target is None:
        return probs.argmax(axis=1)
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must be None, an int or (batch,) ints, got {target!r}")
    t = np.broadcast_to(t, (B,)).astype(np.int64) if t.ndim == 0 else t.astype(np.int64)
    if t.shape != (B,):
        raise ValueError(f"target: got {t.shape[0]} targets for a batch of {B}")
    if t.min() < 0 or t.max() >= n:
        raise ValueError(f"target: classes must be in [0, {n}), got {t.min()}..{t.max()}")
    return t
