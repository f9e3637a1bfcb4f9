"""The Mask-LRP head mask and the raw counters it is computed from (DESIGN.md §3.1).

A :class:`HeadMask` keeps integer counters from :func:`masklrp.head_statistics`, never
frequencies, so that shards of a corpus merge by addition (``a + b``) and thresholds change
without recounting (:meth:`HeadMask.with_thresholds`). Counters, for ``L`` layers, ``H`` heads,
``R`` relations and ``W`` the longest sequence counted (offsets ``o`` in ``[-(W-1), W-1]`` at
index ``o + W - 1``):

* ``positional`` (L, H, 2W-1): queries whose argmax key ``k*`` lies at offset ``o = k* - q``;
* ``syntactic`` (L, H, R): relation-``r`` arcs whose dependent's argmax key is in the head word;
* ``queries``: queries counted; ``arcs`` (R,): arcs counted per relation;
* ``baseline`` (R, 2W-1): relation-``r`` arcs whose head word's token span contains ``q + o``.

Frequencies and masks (paper Eq. 6–8): ``a_o = positional / queries``, ``a_r = syntactic / arcs``,
``λ_r(o) = baseline / arcs``; ``M_pos = max_{o≠0} a_o > ξ_pos``;
``M_synt = any_r a_r > max_o λ_r(o) + ξ_synt``; ``mask = M_pos | M_synt`` (True = keep the head).
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Iterable, Mapping, Sequence

import numpy as np

from ._checks import integer, positive_int
from ._files import replacing

__all__ = ["HeadMask", "random_head_mask"]

FORMAT = "masklrp.HeadMask"
FORMAT_VERSION = 1
XI_POS = 0.8
XI_SYNT = 0.1
_ARRAYS = ("positional", "syntactic", "queries", "arcs", "baseline", "skipped")
_METADATA = ("format", "version", "relations", "skipped_reasons", "model", "corpus", "n_sentences",
             "xi_pos", "xi_synt")


class HeadMask:
    """Head statistics of one model over a corpus, and the binary head mask they define.

    Build one with :func:`masklrp.head_statistics` or :meth:`load`; the engine takes
    :attr:`array` (float32 ``(L, H)``, 1 = keep) as a stream's ``head_mask``.
    ``skipped`` maps a reason (see :data:`masklrp.corpus.SKIP_REASONS`) to ``(R,)`` counts of
    arcs that could not be placed on tokens.
    """

    def __init__(self, positional, syntactic, queries, arcs, baseline, *,
                 relations: Sequence[str], skipped: Mapping[str, Sequence[int]] | None = None,
                 model: str = "", corpus: str = "", n_sentences: int = 0,
                 xi_pos: float = XI_POS, xi_synt: float = XI_SYNT, min_per_layer: int = 0) -> None:
        if isinstance(relations, str):
            raise TypeError(f"relations must be a sequence of names, got the str {relations!r}")
        self.relations = tuple(str(r) for r in relations)
        R = len(self.relations)
        if R == 0 or len(set(self.relations)) != R:
            raise ValueError(f"relations must be distinct names, got {relations!r}")
        self.positional = _counter(positional, "positional", 3)
        L, H, P = self.positional.shape
        if P % 2 == 0:
            raise ValueError(f"positional must have an odd last axis (offsets -(W-1)..W-1), got {P}")
        self.syntactic = _counter(syntactic, "syntactic", 3, (L, H, R))
        self.queries = int(_counter(queries, "queries", 0))
        self.arcs = _counter(arcs, "arcs", 1, (R,))
        self.baseline = _counter(baseline, "baseline", 2, (R, P))
        self.skipped = {str(k): _counter(v, f"skipped[{k!r}]", 1, (R,))
                        for k, v in (skipped or {}).items()}
        self.model, self.corpus = str(model), str(corpus)
        self.n_sentences = integer(n_sentences, "n_sentences", 0)
        self.xi_pos, self.xi_synt = _threshold(xi_pos, "xi_pos"), _threshold(xi_synt, "xi_synt")
        self.min_per_layer = integer(min_per_layer, "min_per_layer", 0)
        if self.min_per_layer > H:
            raise ValueError(f"min_per_layer must be at most the {H} heads of a layer, got {min_per_layer}")
        _check_totals(self)

    # ------------------------------------------------------------------ frequencies
    @property
    def shape(self) -> tuple[int, int]:
        """(layers, heads)."""
        return self.positional.shape[:2]

    @property
    def offsets(self) -> np.ndarray:
        """(2W-1,) int64: the offset ``o`` of each index of the last axis of :attr:`a_o`."""
        w = self.positional.shape[2] // 2
        return np.arange(-w, w + 1)

    @property
    def a_o(self) -> np.ndarray:
        """(L, H, 2W-1) float64: share of queries whose argmax key is at offset ``o``."""
        return self.positional / max(self.queries, 1)

    @property
    def a_r(self) -> np.ndarray:
        """(L, H, R) float64: share of relation-``r`` arcs whose argmax key is in the head word
        (NaN for a relation with no arcs)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.arcs > 0, self.syntactic / np.maximum(self.arcs, 1), np.nan)

    @property
    def lambda_r(self) -> np.ndarray:
        """(R, 2W-1) float64: share of relation-``r`` arcs whose head span contains ``q + o``."""
        return self.baseline / np.maximum(self.arcs, 1)[:, None]

    # ------------------------------------------------------------------ masks
    @property
    def m_pos(self) -> np.ndarray:
        """(L, H) bool: positional heads, ``max_{o≠0} a_o > xi_pos`` (Eq. 6); none when no
        query was counted (a head never seen is no evidence of anything)."""
        return self._positional_margin() > 0

    @property
    def m_synt(self) -> np.ndarray:
        """(L, H) bool: syntactic heads, some ``r`` with ``a_r > max_o λ_r(o) + xi_synt`` (Eq. 7)."""
        return (self._syntactic_margin() > 0).any(axis=-1)

    @property
    def margins(self) -> np.ndarray:
        """(L, H) float64: how far a head clears its best test, Eq. 6 (``max_{o≠0} a_o −
        xi_pos``) or Eq. 7 (``max_r a_r − max_o λ_r(o) − xi_synt``); > 0 exactly for the heads
        of ``m_pos | m_synt``, −inf for a head never counted."""
        return np.maximum(self._positional_margin(), self._syntactic_margin().max(axis=-1))

    def _positional_margin(self) -> np.ndarray:
        """(L, H): ``max_{o≠0} a_o − xi_pos``, −inf where no query was counted."""
        a = self.a_o.copy()
        a[..., a.shape[-1] // 2] = 0.0
        return np.where(self.queries > 0, a.max(axis=-1) - self.xi_pos, -np.inf)

    def _syntactic_margin(self) -> np.ndarray:
        """(L, H, R): ``a_r − max_o λ_r(o) − xi_synt``, −inf for a relation with no arcs."""
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(self.a_r - self.lambda_r.max(axis=1) - self.xi_synt, nan=-np.inf)

    @property
    def mask(self) -> np.ndarray:
        """(L, H) bool: ``m_pos | m_synt`` (Eq. 8), True = the head is kept; with
        ``min_per_layer`` = k, a layer that keeps fewer than k heads also keeps its best
        :attr:`margins` up to k (a variant, not the paper's: see README, "Mask-LRP variants")."""
        kept = self.m_pos | self.m_synt
        if self.min_per_layer:
            # stable: ties go to the lower head index, so the mask is the same on every machine
            best = np.argsort(-self.margins, axis=1, kind="stable")[:, :self.min_per_layer]
            kept[np.arange(len(kept))[:, None], best] = True
        return kept

    @property
    def array(self) -> np.ndarray:
        """(L, H) float32 of :attr:`mask` (1 keep, 0 drop): the engine's ``head_mask``."""
        return self.mask.astype(np.float32)

    def with_thresholds(self, *, xi_pos: float | None = None, xi_synt: float | None = None,
                        min_per_layer: int | None = None) -> "HeadMask":
        """The same counters under other thresholds (no recount)."""
        return self._like(xi_pos=self.xi_pos if xi_pos is None else xi_pos,
                          xi_synt=self.xi_synt if xi_synt is None else xi_synt,
                          min_per_layer=self.min_per_layer if min_per_layer is None else min_per_layer)

    def random_like(self, seed: int) -> np.ndarray:
        """(L, H) float32: a random mask with as many ones as :attr:`mask` (the paper's Random
        baseline), the same for the same ``seed``."""
        return random_head_mask(self.mask, seed)

    # ------------------------------------------------------------------ merging
    def __add__(self, other: "HeadMask") -> "HeadMask":
        if not isinstance(other, HeadMask):
            return NotImplemented
        if other.shape != self.shape:
            raise ValueError(f"cannot merge head statistics of a {self.shape} model with a "
                             f"{other.shape} one (layers, heads)")
        if other.relations != self.relations:
            raise ValueError(f"cannot merge relations {self.relations} with {other.relations}")
        width = max(self.positional.shape[2], other.positional.shape[2])
        skipped = {k: self.skipped.get(k, 0) + other.skipped.get(k, 0)
                   for k in {**self.skipped, **other.skipped}}
        names = [n for n in dict.fromkeys((self.corpus, other.corpus)) if n]
        models = [n for n in dict.fromkeys((self.model, other.model)) if n]
        return HeadMask(_widen(self.positional, width) + _widen(other.positional, width),
                        self.syntactic + other.syntactic, self.queries + other.queries,
                        self.arcs + other.arcs,
                        _widen(self.baseline, width) + _widen(other.baseline, width),
                        relations=self.relations, skipped=skipped, model=" + ".join(models),
                        corpus=" + ".join(names), n_sentences=self.n_sentences + other.n_sentences,
                        xi_pos=self.xi_pos, xi_synt=self.xi_synt, min_per_layer=self.min_per_layer)

    @classmethod
    def merge(cls, masks: Iterable["HeadMask"]) -> "HeadMask":
        """The sum of several shards' statistics (thresholds of the first)."""
        masks = list(masks)
        if not masks:
            raise ValueError("masks: nothing to merge")
        out = masks[0]
        for m in masks[1:]:
            out = out + m
        return out

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """One ``.npz``: the integer counters and a JSON ``metadata`` string (no pickles)."""
        reasons = sorted(self.skipped)
        skipped = (np.stack([self.skipped[k] for k in reasons]) if reasons
                   else np.zeros((0, len(self.relations)), np.int64))
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "relations": list(self.relations),
                "skipped_reasons": reasons, "model": self.model, "corpus": self.corpus,
                "n_sentences": self.n_sentences, "queries": self.queries,
                "arcs": self.arcs.tolist(), "xi_pos": self.xi_pos, "xi_synt": self.xi_synt,
                "min_per_layer": self.min_per_layer, "layers": self.shape[0], "heads": self.shape[1]}
        # a file object: np.savez would append ".npz" to a name
        with replacing(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, positional=self.positional, syntactic=self.syntactic,
                     queries=np.int64(self.queries), arcs=self.arcs, baseline=self.baseline,
                     skipped=skipped, metadata=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HeadMask":
        """Read what :meth:`save` wrote (never unpickling: ``allow_pickle=False``).

        A file that is not such an ``.npz`` raises ValueError naming it and what is wrong;
        counters and metadata are checked as :class:`HeadMask` checks its arguments.
        """
        not_ours = f"{path} is not a masklrp head-mask .npz (written by HeadMask.save)"
        try:
            f = np.load(path, allow_pickle=False)
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise ValueError(f"{not_ours}: it holds a single array")
            with f:
                missing = [k for k in (*_ARRAYS, "metadata") if k not in f.files]
                if missing:
                    raise ValueError(f"{not_ours}: missing {missing}")
                arrays = {k: f[k] for k in _ARRAYS}
                text = f["metadata"]
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise ValueError(f"{not_ours}: {e}") from None
        except ValueError as e:
            if str(e).startswith(not_ours):
                raise
            # NumPy's own message here suggests allow_pickle=True: never do that for a file
            raise ValueError(f"{not_ours}: it is not an .npz of plain arrays") from None
        meta = _metadata(text, not_ours)
        if meta["format"] != FORMAT or meta["version"] != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported format {meta['format']!r} version "
                             f"{meta['version']!r} (this masklrp reads {FORMAT} v{FORMAT_VERSION})")
        reasons = meta["skipped_reasons"]
        if (not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons)
                or len(reasons) != len(arrays["skipped"])):
            raise ValueError(f"{path}: metadata skipped_reasons must name each row of 'skipped' "
                             f"({len(arrays['skipped'])}), got {reasons!r}")
        skipped = dict(zip(reasons, arrays.pop("skipped")))
        return cls(**arrays, relations=meta["relations"], skipped=skipped, model=meta["model"],
                   corpus=meta["corpus"], n_sentences=meta["n_sentences"],
                   xi_pos=meta["xi_pos"], xi_synt=meta["xi_synt"],
                   min_per_layer=meta.get("min_per_layer", 0))  # absent from files before it existed

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        L, H = self.shape
        return (f"HeadMask({L} layers x {H} heads: {int(self.m_pos.sum())} positional, "
                f"{int(self.m_synt.sum())} syntactic, {int(self.mask.sum())} kept; "
                f"model {self.model!r}, corpus {self.corpus!r}, {self.n_sentences} sentences, "
                f"xi_pos={self.xi_pos:g}, xi_synt={self.xi_synt:g}"
                + (f", min_per_layer={self.min_per_layer}" if self.min_per_layer else "") + ")")

    def summary(self) -> str:
        """The positional and syntactic heads of each layer, with what makes them so."""
        lines = [repr(self),
                 "arcs: " + ", ".join(f"{r} {n}" for r, n in zip(self.relations, self.arcs)),
                 "best fixed offset: " + ", ".join(
                     f"{r} {lam.max():.2f} (o={self.offsets[lam.argmax()]:+d})"
                     for r, lam in zip(self.relations, self.lambda_r))]
        if any(v.sum() for v in self.skipped.values()):
            lines.append("skipped arcs: " + ", ".join(
                f"{k} {int(v.sum())}" for k, v in sorted(self.skipped.items()) if v.sum()))
        a_o, a_r, lam = self.a_o, self.a_r, self.lambda_r.max(axis=1)
        centre = a_o.shape[-1] // 2
        for layer in range(self.shape[0]):
            pos = []
            for h in np.flatnonzero(self.m_pos[layer]):
                row = a_o[layer, h].copy()
                row[centre] = 0.0
                pos.append(f"h{h} (o={self.offsets[row.argmax()]:+d} {row.max():.2f})")
            synt = []
            for h in np.flatnonzero(self.m_synt[layer]):
                with np.errstate(invalid="ignore"):
                    beats = np.flatnonzero(a_r[layer, h] > lam + self.xi_synt)
                synt.append(f"h{h} (" + ", ".join(
                    f"{self.relations[r]} {a_r[layer, h, r]:.2f}" for r in beats) + ")")
            added = [f"h{h} (margin {self.margins[layer, h]:+.2f})" for h in np.flatnonzero(
                self.mask[layer] & ~self.m_pos[layer] & ~self.m_synt[layer])]
            lines.append(f"layer {layer}: positional {', '.join(pos) or '-'}; "
                         f"syntactic {', '.join(synt) or '-'}"
                         + (f"; best of the layer {', '.join(added)}" if added else ""))
        return "\n".join(lines)

    def plot(self, ax=None):
        """The layers x heads grid coloured positional / syntactic / both / neither (paper
        Fig. 5); returns the matplotlib Figure."""
        try:
            import matplotlib.pyplot as plt
            from matplotlib.colors import ListedColormap
            from matplotlib.patches import Patch
        except ImportError as e:
            raise ImportError("HeadMask.plot needs matplotlib: pip install 'masklrp[viz]'") from e
        L, H = self.shape
        kinds = ("neither", "positional", "syntactic", "both", "best of its layer")
        colours = ("#eeeeee", "#4c72b0", "#dd8452", "#55a868", "#8172b3")
        grid = self.m_pos.astype(int) + 2 * self.m_synt.astype(int)
        grid[self.mask & (grid == 0)] = 4  # kept by min_per_layer only
        if not self.min_per_layer:
            kinds, colours = kinds[:4], colours[:4]
        if ax is None:
            _, ax = plt.subplots(figsize=(0.45 * H + 2.5, 0.45 * L + 1))
        ax.imshow(grid, cmap=ListedColormap(colours), vmin=0, vmax=len(colours) - 1, aspect="equal")
        ax.set_xticks(range(H), [str(h) for h in range(H)])
        ax.set_yticks(range(L), [str(layer) for layer in range(L)])
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(np.arange(-0.5, H), minor=True)
        ax.set_yticks(np.arange(-0.5, L), minor=True)
        ax.grid(which="minor", color="white", linewidth=1)
        ax.tick_params(which="minor", length=0)
        ax.set_title(f"heads over {self.n_sentences} sentences of {self.corpus or 'a corpus'}")
        ax.legend(handles=[Patch(color=c, label=k) for k, c in zip(kinds, colours)],
                  loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
        return ax.figure

    def plot_offsets(self, heads=None, *, max_offset: int | None = None, ax=None):
        """Per-head bar charts of :attr:`a_o` over ``o = -max_offset..max_offset``, with the
        ``xi_pos`` line a positional head must cross at some ``o ≠ 0``; returns the Figure.

        ``max_offset``: at most the widest offset counted (``W - 1``: beyond it every bar is
        0); default 4, or that width if smaller.

        ``heads``: ``(layer, head)`` pairs, default the positional heads (all kept heads if
        none is positional). One panel per head, titled ``"L1 h8"``; the bar at ``o = 0``
        (grey) never makes a head positional; the share of queries beyond ``±max_offset`` is
        printed in the panel when non-zero. ``ax``: an Axes for one head, or one Axes per head;
        default a new grid of them.
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:
            raise ImportError("HeadMask.plot_offsets needs matplotlib: "
                              "pip install 'masklrp[viz]'") from e
        chosen = self._heads(heads)
        widest = self.positional.shape[2] // 2
        if max_offset is None:
            max_offset = max(1, min(4, widest))
        max_offset = positive_int(max_offset, "max_offset")
        if max_offset > max(widest, 1):
            raise ValueError(f"max_offset must be at most {max(widest, 1)}, the widest offset "
                             f"counted, got {max_offset}")
        axes = _offset_axes(plt, ax, len(chosen))
        # a counter of width 1 (only one-token sequences) is padded to show o = -1..1
        counts = _widen(self.positional, max(2 * max_offset + 1, self.positional.shape[2]))
        queries = max(self.queries, 1)
        centre = counts.shape[-1] // 2
        window = slice(centre - max_offset, centre + max_offset + 1)
        offsets = np.arange(-max_offset, max_offset + 1)
        colours = np.where(offsets == 0, "#aaaaaa", "#4c72b0")
        for panel, (layer, head) in zip(axes, chosen):
            row = counts[layer, head]
            panel.bar(offsets, row[window] / queries, color=colours, width=0.8)
            panel.axhline(self.xi_pos, color="#c44e52", linestyle="--", linewidth=1,
                          label=rf"$\xi_\mathrm{{pos}}$ = {self.xi_pos:g}")
            beyond = int(row.sum() - row[window].sum())  # in counts: no rounding residue
            if beyond:
                panel.text(0.02, 0.97, f"|o| > {max_offset}: {beyond / queries:.2g}", ha="left",
                           va="top", transform=panel.transAxes, fontsize="x-small", color="#555555")
            panel.set_title(f"L{layer} h{head}")
            panel.set_xticks(offsets[:: max(1, max_offset // 4)])
            panel.set_ylim(0, 1.05)
            if ax is not None:
                panel.set(xlabel="offset $o = k^* - q$", ylabel="$a_o$")
        axes[0].legend(loc="upper right", fontsize="x-small", frameon=False)
        fig = axes[0].figure
        if ax is None:  # one label per axis for the whole grid
            fig.supxlabel("offset $o = k^* - q$ (argmax key − query)", fontsize="small")
            fig.supylabel("$a_o$ (share of queries)", fontsize="small")
            fig.suptitle(f"argmax-key offsets over {self.n_sentences} sentences of "
                         f"{self.corpus or 'a corpus'}", fontsize="medium")
        return fig

    # ------------------------------------------------------------------ helpers
    def _heads(self, heads) -> list[tuple[int, int]]:
        """``heads`` as checked ``(layer, head)`` int pairs (default: the positional heads,
        else the kept ones)."""
        L, H = self.shape
        if heads is None:
            chosen = np.argwhere(self.m_pos if self.m_pos.any() else self.mask)
            if not len(chosen):
                raise ValueError("heads: the mask keeps no head to show; "
                                 "pass heads=[(layer, head), ...]")
            return [(int(layer), int(head)) for layer, head in chosen]
        expected = f"heads must be (layer, head) pairs with layer in [0, {L}) and head in [0, {H})"
        if isinstance(heads, (str, bytes)) or not hasattr(heads, "__iter__"):
            raise ValueError(f"{expected}, got {heads!r}")
        out = []
        for pair in heads:
            listed = hasattr(pair, "__iter__") and not isinstance(pair, (str, bytes))
            items = tuple(pair) if listed else ()
            ints = all(isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))
                       for i in items)
            if len(items) != 2 or not ints or not (0 <= items[0] < L and 0 <= items[1] < H):
                raise ValueError(f"{expected}, got {pair!r}")
            out.append((int(items[0]), int(items[1])))
        if not out:
            raise ValueError(f"{expected}, got none")
        return out

    def _like(self, **changes) -> "HeadMask":
        args = dict(relations=self.relations, skipped=self.skipped, model=self.model,
                    corpus=self.corpus, n_sentences=self.n_sentences, xi_pos=self.xi_pos,
                    xi_synt=self.xi_synt, min_per_layer=self.min_per_layer)
        args.update(changes)
        return HeadMask(self.positional, self.syntactic, self.queries, self.arcs, self.baseline,
                        **args)


def random_head_mask(head_mask, seed: int = 0) -> np.ndarray:
    """A 0/1 float32 mask shaped like ``head_mask`` (a HeadMask or an array) with as many
    ones as it has non-zero entries, placed by ``numpy.random.default_rng(seed)``: the
    paper's Random baseline (the reference code's "random" mask was all ones)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    mask = np.asarray(getattr(head_mask, "array", head_mask))
    keep = np.random.default_rng(seed).permutation(mask.size) < np.count_nonzero(mask)
    return keep.reshape(mask.shape).astype(np.float32)


def _metadata(text: np.ndarray, not_ours: str) -> dict:
    """The JSON metadata string of a saved HeadMask, with every key :meth:`HeadMask.load` reads."""
    try:
        meta = json.loads(str(text)) if text.dtype.kind == "U" and text.ndim == 0 else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict):
        raise ValueError(f"{not_ours}: its metadata is not a JSON object")
    missing = [k for k in _METADATA if k not in meta]
    if missing:
        raise ValueError(f"{not_ours}: its metadata misses {missing}")
    return meta


def _counter(x, name: str, ndim: int, shape: tuple[int, ...] | None = None) -> np.ndarray:
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise TypeError(f"{name} must hold integer counts, got dtype {a.dtype}")
    if a.ndim != ndim or (shape is not None and a.shape != shape):
        want = shape if shape is not None else f"{ndim} dimensions"
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    if (a < 0).any():
        raise ValueError(f"{name} holds negative counts")
    if a.size and a.max() > np.iinfo(np.int64).max:  # uint64 beyond int64 would wrap to negative
        raise ValueError(f"{name} holds a count beyond int64 ({a.max()})")
    return np.array(a, dtype=np.int64)  # a copy: counters are never shared between masks


def _check_totals(m: "HeadMask") -> None:
    """Counts cannot exceed what they are counted out of: each head sees each query once,
    each arc once, and an arc's head span covers an offset at most once."""
    for name, counts, total in (("positional", m.positional.sum(axis=-1), m.queries),
                                ("syntactic", m.syntactic, m.arcs),
                                ("baseline", m.baseline, m.arcs[:, None])):
        over = np.argwhere(counts > total)
        if len(over):
            where = tuple(int(i) for i in over[0])
            raise ValueError(f"{name}{list(where)} counts {counts[where]}, more than the "
                             f"{np.broadcast_to(total, counts.shape)[where]} "
                             f"{'queries' if name == 'positional' else 'arcs'} counted")


def _threshold(x, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(x).__name__}")
    if not np.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    return float(x)


def _offset_axes(plt, ax, n: int) -> list:
    """``n`` Axes for :meth:`HeadMask.plot_offsets`: a new grid (at most 4 across, shared y,
    no spare panels) or the ones given."""
    if ax is None:
        cols = min(n, 4)
        rows = -(-n // cols)
        fig, grid = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.2 * rows + 0.5), sharey=True,
                                 squeeze=False, layout="constrained")
        for spare in grid.flat[n:]:
            fig.delaxes(spare)
        return list(grid.flat[:n])
    given = [ax] if hasattr(ax, "bar") else list(np.ravel(np.asarray(ax, dtype=object)))
    if len(given) != n or not all(hasattr(a, "bar") for a in given):
        raise ValueError(f"ax must be one matplotlib Axes per head ({n}), got {ax!r}")
    return given


def _widen(a: np.ndarray, width: int) -> np.ndarray:
    """Pad the centred offset axis (last) of ``a`` symmetrically to ``width``."""
    pad = (width - a.shape[-1]) // 2
    return np.pad(a, [(0, 0)] * (a.ndim - 1) + [(pad, pad)])
