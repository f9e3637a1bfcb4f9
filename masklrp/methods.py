"""Attribution methods (DESIGN.md §3.2, §4) from as few engine calls as possible.

>>> out = masklrp.explain_all(model, texts, ("mask-lrp", "attnlrp", "gae"), head_mask=mask)
>>> out["mask-lrp"][0]            # an Explanation per sequence and method

:func:`explain_all` works out which backward streams (AttnLRP, CP-LRP, true gradient,
masked AttnLRP) and which taps (attention maps, hidden states) the methods need together,
runs them in engine calls of at most ``MAX_STREAMS`` streams each (one call for up to four),
and computes every method from the shared results. :class:`MaskLRP` is the Captum-style
single-method explainer, like :class:`masklrp.explain.AttnLRP`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import rollout
from .explain import Explanation, as_inputs, explanations, needs_logits, per_row, seed_for
from .headmask import HeadMask, random_head_mask
from .model import MASK_SEMANTICS, Inputs, Model, Stream

MAX_STREAMS = 4  # the engine's limit per call
# Taps are full (B, L, H, T, T) arrays per stream (issue G.8: GAE on 512 tokens took 1.2 GiB per
# sequence). Methods that read them run over batches of rows whose taps fit this budget and are
# reduced to scores before the next batch, so peak memory does not grow with B.
TAP_BUDGET_BYTES = 256 << 20


class _Sequence:
    """One sequence's real tokens of an engine result, in float64: what methods read.

    ``stream`` arguments are roles: ``"attnlrp"``, ``"cp"``, ``"gradient"`` or a
    :class:`_Masked` role. ``query``: the rows that explain the output
    (:func:`rollout.query_weights`); ``normalize_rows``: the LRP rollouts' option.
    """

    def __init__(self, out: dict, keys: dict[Role, str], b: int, real: np.ndarray, query: np.ndarray,
                 normalize_rows: bool):
        self._out, self._keys, self._b, self._real = out, keys, b, real
        self.query, self.normalize_rows = query, normalize_rows

    @property
    def attentions(self) -> np.ndarray:
        """(L,H,n,n) attention probabilities."""
        return self._square(self._out["attentions"])

    @property
    def grad(self) -> np.ndarray:
        """(L,H,n,n) ∇A: the true gradient of the explained logit w.r.t. A."""
        return self._square(self._stream("gradient")["attention_grad"])

    def relevance(self, stream: Role) -> np.ndarray:
        """(L,H,n,n) R_A = A ⊙ g of ``stream``."""
        return self._square(self._stream(stream)["attention_relevance"])

    @property
    def hidden(self) -> np.ndarray:
        """(L,n,C) the input of each block."""
        return self._blocks(self._out["hidden"])

    @property
    def hidden_grad(self) -> np.ndarray:
        """(L,n,C) the true gradient at each block's input."""
        return self._blocks(self._stream("gradient")["hidden_grad"])

    def _stream(self, role: Role) -> dict:
        return self._out[self._keys[role]]

    def _square(self, taps: np.ndarray) -> np.ndarray:
        r = self._real
        return np.asarray(taps[self._b][:, :, r][:, :, :, r], dtype=np.float64)

    def _blocks(self, taps: np.ndarray) -> np.ndarray:
        # taps (B, L+1, T, C): entry l < L is block l's input, entry L the last block's output
        return np.asarray(taps[self._b, :-1][:, self._real], dtype=np.float64)


@dataclass(frozen=True)
class _Masked:
    """The stream role of a masked AttnLRP sweep (DESIGN.md §3.2): the given head mask
    (``mask="given"``) or a random one with as many ones (``"random"``, drawn with the call's
    seed), read with ``semantics`` (None: the call's ``mask_semantics``)."""

    mask: str
    semantics: str | None = None

    def __str__(self) -> str:  # the engine key: "masked", "random-strict", ...
        kind = "masked" if self.mask == "given" else self.mask
        return kind if self.semantics in (None, "reference") else f"{kind}-{self.semantics}"


Role = str | _Masked  # "attnlrp", "cp", "gradient" or a masked sweep


@dataclass(frozen=True)
class _Method:
    """The stream roles and taps a method reads, and how it scores one sequence
    (``score`` None: the input relevance of its one stream, with its extras)."""

    streams: tuple[Role, ...] = ()
    attentions: bool = False
    hidden: bool = False
    score: Callable[[_Sequence], np.ndarray] | None = None


def _lrp_rollout(role: Role) -> _Method:
    """Mask-LRP's rollout on the relevance of stream ``role`` (unmasked: Chefer CVPR'21)."""
    return _Method(("gradient", role), attentions=True, score=lambda s: rollout.mask_lrp(
        s.query, s.grad, s.relevance(role), s.normalize_rows))


METHODS: dict[str, _Method] = {
    "attnlrp": _Method(("attnlrp",)),
    "cp-lrp": _Method(("cp",)),
    "mask-lrp": _lrp_rollout(_Masked("given")),
    "random-mask": _lrp_rollout(_Masked("random")),
    # The same masks read the literal Eq. 10 way whatever the call's mask_semantics, so that one
    # call (one evaluation) compares both readings.
    "mask-lrp-strict": _lrp_rollout(_Masked("given", "strict")),
    "random-mask-strict": _lrp_rollout(_Masked("random", "strict")),
    "rel-rollout": _lrp_rollout("attnlrp"),
    "rawatt": _Method(attentions=True, score=lambda s: rollout.raw_attention(s.query, s.attentions)),
    "rollout": _Method(attentions=True, score=lambda s: rollout.attention_rollout(s.query, s.attentions)),
    "partial-lrp": _Method(("attnlrp",), attentions=True,
                           score=lambda s: rollout.partial_lrp(s.query, s.relevance("attnlrp"))),
    "gae": _Method(("gradient",), attentions=True, score=lambda s: rollout.gae(s.query, s.grad, s.attentions)),
    "cam": _Method(("gradient",), attentions=True, score=lambda s: rollout.cam(s.grad)),
    "gradcam": _Method(("gradient",), attentions=True,
                       score=lambda s: rollout.gradcam(s.query, s.grad, s.attentions)),
    "attcat": _Method(("gradient",), attentions=True, hidden=True,
                      score=lambda s: rollout.attcat(s.hidden, s.hidden_grad, s.attentions)),
}
# Other names for the same method: the paper's "LRP" is the relevance sweep, AttnLRP rules here.
ALIASES = {"lrp": "attnlrp"}
# The methods that need a head mask, and those that draw a random one (seeded: runs differ by seed).
MASKED_METHODS = tuple(name for name, m in METHODS.items() if any(isinstance(r, _Masked) for r in m.streams))
RANDOM_METHODS = tuple(name for name, m in METHODS.items()
                       if any(isinstance(r, _Masked) and r.mask == "random" for r in m.streams))


def explain_all(model: Model, inputs, methods: str | Sequence[str] = ("mask-lrp",), target=None,
                head_mask=None, *, seed: int = 0, renormalize: bool = True, mask_semantics: str = "reference",
                normalize_rows: bool = False, contrastive: bool = False, truncation: bool = False,
                threads: int | None = None) -> dict[str, list[Explanation]]:
    """Explain ``inputs`` (text(s), text pairs, a tokenizer's output, Inputs, token ids:
    :func:`masklrp.explain.as_inputs`, with ``truncation``) with every method in ``methods``.

    ``target`` as in :func:`masklrp.attnlrp` (default: each row's argmax). ``head_mask``
    (a HeadMask or an (L, H) array) is needed by the masked methods (:data:`MASKED_METHODS`);
    "random-mask" draws, with ``seed``, a 0/1 mask with as many non-zero entries
    (:func:`random_head_mask`). ``renormalize`` (paper Eq. 9; False reproduces the reference
    code) applies to every masked method; ``mask_semantics`` (which relevance block b's R_A
    reads: ``"reference"`` what arrives at its heads, before its own mask, as the reference
    code does; ``"strict"`` what is left after it, the literal Eq. 10; see
    :class:`masklrp.model.Stream`) to "mask-lrp" and "random-mask", while "mask-lrp-strict"
    and "random-mask-strict" (the same masks) always read strictly. ``normalize_rows`` (rows
    of each rollout factor sum to 1) applies to the LRP rollouts ("mask-lrp", "random-mask",
    their strict variants, "rel-rollout").
    Returns ``{name: [Explanation per sequence]}`` in the order asked; scores cover the real
    tokens of each sequence.
    """
    names = _method_names(methods)
    _check_options(seed=seed, renormalize=renormalize, normalize_rows=normalize_rows, contrastive=contrastive)
    if mask_semantics not in MASK_SEMANTICS:
        raise ValueError(f"mask_semantics must be one of {MASK_SEMANTICS}, got {mask_semantics!r}")
    canonical = {name: ALIASES.get(name, name) for name in names}
    chosen = {method: METHODS[method] for method in dict.fromkeys(canonical.values())}
    masks = _masks(model, chosen, head_mask, seed)
    inputs = as_inputs(model, inputs, truncation=truncation)
    keys, items, taps = _plan(chosen, masks, renormalize, mask_semantics)
    results: dict[str, list[Explanation]] = {method: [] for method in chosen}
    for rows in _row_batches(model, inputs, taps, chosen):
        part, part_target = _take_rows(inputs, rows), _target_rows(target, rows, len(inputs.input_ids))
        out, seed_g, targets = _run(model, part, items, taps, chosen, part_target, contrastive, threads)
        scored = _score(model, part, out, keys, seed_g, chosen, normalize_rows)
        for method, m in chosen.items():
            results[method] += explanations(model, part, out, out[keys[m.streams[0]]] if m.score is None
                                            else {"tokens": scored[method]}, seed_g, targets, method)
        del out, scored  # this batch's taps go before the next batch's come
    return {name: results[method] for name, method in canonical.items()}


def _row_batches(model: Model, inputs: Inputs, taps: dict[str, "_Taps"], chosen: dict[str, "_Method"]):
    """Row slices of the batch whose taps fit TAP_BUDGET_BYTES (all rows when none are needed)."""
    B, T = inputs.input_ids.shape
    s = model.spec
    attention = s.n_layers * s.n_heads * T * T
    hidden = (s.n_layers + 1) * T * s.hidden
    att_streams = sum(t.attentions for t in taps.values())
    hid_streams = sum(t.hidden for t in taps.values())
    any_att = att_streams > 0 or any(m.attentions for m in chosen.values())
    any_hid = hid_streams > 0 or any(m.hidden for m in chosen.values())
    # per row: each stream's gradient and relevance taps, plus the forward's own maps / states
    per_row = 4 * (attention * (2 * att_streams + any_att) + hidden * (2 * hid_streams + any_hid))
    step = B if per_row == 0 else max(1, min(B, TAP_BUDGET_BYTES // per_row))
    return [slice(i, min(i + step, B)) for i in range(0, B, step)]


def _take_rows(inputs: Inputs, rows: slice) -> Inputs:
    if rows == slice(0, len(inputs.input_ids)):
        return inputs
    return Inputs(**{name: None if value is None else value[rows] for name, value in vars(inputs).items()})


def _target_rows(target, rows: slice, B: int):
    """The targets of ``rows`` (:func:`masklrp.explain.per_row` reads ``target`` row by row);
    None stays None, so the engine may still seed each row's argmax itself."""
    return None if target is None else per_row(target, B)[rows]


class MaskLRP:
    """Mask-LRP (DESIGN.md §3.2) token attributions, Captum-style.

    >>> explainer = MaskLRP(model, head_mask)          # a HeadMask or an (L, H) array
    >>> [e] = explainer.attribute("a gripping, funny film", target=1)
    """

    def __init__(self, model: Model, head_mask, renormalize: bool = True, normalize_rows: bool = False,
                 mask_semantics: str = "reference"):
        self.model = model
        self.head_mask = as_head_mask(model, head_mask)
        self.renormalize = renormalize
        self.normalize_rows = normalize_rows
        self.mask_semantics = mask_semantics

    def attribute(self, inputs, target=None, *, contrastive: bool = False, truncation: bool = False,
                  threads: int | None = None) -> list[Explanation]:
        """Explain each sequence of ``inputs`` (see :func:`masklrp.explain.as_inputs`)."""
        return explain_all(self.model, inputs, ("mask-lrp",), target, self.head_mask,
                           renormalize=self.renormalize, mask_semantics=self.mask_semantics,
                           normalize_rows=self.normalize_rows, contrastive=contrastive,
                           truncation=truncation, threads=threads)["mask-lrp"]


def load_head_mask(head_mask):
    """A saved HeadMask file (str or path) loaded; anything else as it is."""
    if isinstance(head_mask, (str, os.PathLike)):
        return HeadMask.load(head_mask)
    return head_mask


def as_head_mask(model: Model, head_mask) -> np.ndarray:
    """A HeadMask (its ``.array``), its saved ``.npz`` or an array-like as a finite float32
    (L, H) array."""
    head_mask = load_head_mask(head_mask)
    array = np.asarray(getattr(head_mask, "array", head_mask))
    if array.dtype.kind not in "biuf":
        raise TypeError(f"head_mask must be a HeadMask or a (layers, heads) array of numbers, "
                        f"got {type(head_mask).__name__} of dtype {array.dtype}")
    shape = (model.spec.n_layers, model.spec.n_heads)
    if array.shape != shape:
        raise ValueError(f"head_mask must have shape (layers, heads) {shape}, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("head_mask must be finite")
    return np.ascontiguousarray(array, dtype=np.float32)


def _method_names(methods) -> list[str]:
    if isinstance(methods, str):
        methods = (methods,)
    if not isinstance(methods, Sequence) or not all(isinstance(m, str) for m in methods):
        raise TypeError(f"methods must be a method name or a sequence of names, got {methods!r}")
    names = list(dict.fromkeys(m.lower() for m in methods))
    known = tuple(METHODS) + tuple(ALIASES)
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise ValueError(f"methods: unknown {unknown or 'none given'}; choose from {known}")
    return names


def _check_options(seed, **flags) -> None:
    for name, flag in flags.items():
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")


def _masks(model: Model, chosen: dict[str, _Method], head_mask, seed: int) -> dict[str, np.ndarray]:
    """The head masks the masked roles read: ``_Masked.mask`` ("given", "random") -> float32 (L, H)."""
    users = [name for name in chosen if name in MASKED_METHODS]
    if not users:
        return {}
    if head_mask is None:
        raise ValueError(f"head_mask: methods {users} need a head mask (HeadMask or (layers, heads) array)")
    mask = as_head_mask(model, head_mask)
    return {"given": mask, "random": random_head_mask(mask, seed)}


@dataclass
class _Taps:
    attentions: bool = False
    hidden: bool = False


def _plan(chosen: dict[str, _Method], masks: dict[str, np.ndarray], renormalize: bool,
          mask_semantics: str) -> tuple[dict[Role, str], dict[str, object], dict[str, _Taps]]:
    """Engine streams for the methods' stream roles: role -> engine key, key -> stream item
    (a rule name or a masked :class:`Stream`), key -> the taps it must carry.

    A masked role takes the call's ``mask_semantics`` unless it names its own, so roles that
    come to the same sweep ("mask-lrp" with ``mask_semantics="strict"`` and "mask-lrp-strict")
    share one stream. A mask of all ones gives bitwise the unmasked stream under either
    reading (the engine's contract), so such a role shares the plain "attnlrp" stream instead
    of costing a stream of its own.
    """
    keys, items, taps = {}, {}, {}
    for role in sorted({role for m in chosen.values() for role in m.streams}, key=str):
        key, item = str(role), str(role)
        if isinstance(role, _Masked):
            resolved = _Masked(role.mask, role.semantics or mask_semantics)
            key, mask = str(resolved), masks[role.mask]
            item = Stream(key, "attnlrp", mask, renormalize, resolved.semantics)
            if np.all(mask == 1):
                key = item = "attnlrp"
        keys[role] = key
        items[key] = item
        taps.setdefault(key, _Taps())
    for m in chosen.values():
        for role in m.streams:
            taps[keys[role]].attentions |= m.attentions
            taps[keys[role]].hidden |= m.hidden
    return keys, items, taps


def _run(model: Model, inputs: Inputs, items: dict, taps: dict[str, _Taps], chosen: dict[str, _Method],
         target, contrastive: bool, threads) -> tuple[dict, np.ndarray, list]:
    """Run the planned streams in as few engine calls as the engine allows; merge the results.

    Streams that need taps go together (taps are per call); forward-only taps (A, hidden
    states) ride on the first call. With a default target on a pooled model the first call
    lets the engine seed each row's argmax itself, saving a forward pass.
    """
    order = sorted(items, key=lambda k: (not taps[k].hidden, not taps[k].attentions, k))
    groups = [order[i:i + MAX_STREAMS] for i in range(0, len(order), MAX_STREAMS)] or [[]]
    calls = [[[items[k] for k in group], any(taps[k].attentions for k in group),
              any(taps[k].hidden for k in group)] for group in groups]
    calls[0][1] |= any(m.attentions for m in chosen.values())
    calls[0][2] |= any(m.hidden for m in chosen.values())

    engine_seeds = not groups[0] or (target is None and model.spec.pool != "none" and not contrastive)
    seed = None
    if not engine_seeds:
        logits = model.forward(inputs, threads=threads)["logits"] if needs_logits(model, target) else None
        seed, targets = seed_for(model, logits, model.logits_shape(inputs), target,
                                 contrastive=contrastive, mask=inputs.attention_mask)
    out: dict = {}
    for streams, attentions, hidden in calls:
        result = model.run(inputs, seed, streams, attentions=attentions, hidden=hidden, threads=threads)
        if seed is None:  # the first call resolved the target: the others use its seed
            seed, targets = seed_for(model, result["logits"], result["logits"].shape, target,
                                     contrastive=contrastive, mask=inputs.attention_mask)
        for k, v in result.items():
            out.setdefault(k, v)
    return out, seed, targets


def _score(model: Model, inputs: Inputs, out: dict, keys: dict[Role, str], seed: np.ndarray,
           chosen: dict[str, _Method], normalize_rows: bool) -> dict[str, np.ndarray]:
    """(B, T) float32 scores of every map-based method; padding gets 0 (and is cut later)."""
    B, T = inputs.input_ids.shape
    scored = {name: np.zeros((B, T), np.float32) for name, m in chosen.items() if m.score is not None}
    for b in range(B):
        real = np.flatnonzero(inputs.attention_mask[b])
        query = rollout.query_weights(model.spec.pool, len(real),
                                      seed[b, real] if model.spec.pool == "none" else None)
        sequence = _Sequence(out, keys, b, real, query, normalize_rows)
        for name in scored:
            scored[name][b, real] = chosen[name].score(sequence)
    return scored
