"""Faithfulness of attribution methods over a data set (DESIGN.md §5): :func:`evaluate`.

>>> result = masklrp.evaluate(model, "sst2-dev", ("mask-lrp", "gae", "random-mask"), head_mask=mask)
>>> print(result.table())            # mean AOPC, LOdds, ... per method; random mask: mean ± std
>>> result.compare("mask-lrp", "gae", "aopc")   # paired difference, bootstrap CI over sentences
>>> result.to_csv("eval.csv"); result.to_json("eval.json"); result.plot("curves.png")

For a classifier, each batch of sentences is explained by every method (engine methods in
one :func:`masklrp.explain_all` call, Captum methods through
:mod:`masklrp.captum_adapter`), then perturbed in score order and run through the engine
(:func:`masklrp.metrics.shared_perturbation_curves`: a perturbed sentence that several
methods ask for runs once). Every method explains, and every metric scores, the same class
per sentence: the model's prediction (``target="predicted"``) or the gold label (``"gold"``).
For a question-answering model the metric is Precision@20 of the explanation of the
predicted span (``target="both"``) against the gold answer's tokens.
"""
from __future__ import annotations

import csv
import json
import os
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import data as datasets
from ._checks import fractions, integer, number, positive_int
from ._files import replacing
from .methods import ALIASES, MASKED_METHODS, METHODS, RANDOM_METHODS, explain_all, load_head_mask
from .metrics import (ERASER_BINS, KS, Curve, abpc, aopc, comprehensiveness, lodds, precision_at,
                      resolve_replacement, shared_perturbation_curves, sufficiency)
from .model import Model, load

__all__ = ["BOOTSTRAP", "DATASETS", "DEFAULT_METHODS", "METRICS", "Comparison", "Evaluation", "evaluate"]

# The paper's table (Mask-LRP, GAE, random mask, AttCAT, RawAtt, LRP), AttnLRP standing in for LRP.
DEFAULT_METHODS = ("mask-lrp", "gae", "random-mask", "attcat", "rawatt", "attnlrp")
METRICS = ("aopc", "lodds", "comprehensiveness", "sufficiency", "abpc")
QA_METRICS = ("p@20",)
DATASETS = {"sst2-dev": lambda: datasets.sst2("dev"), "sst2-train": lambda: datasets.sst2("train"),
            "squad": datasets.squad}
TARGETS = ("predicted", "gold")
LABELS = {"aopc": "AOPC", "lodds": "LOdds", "comprehensiveness": "Comp", "sufficiency": "Suff",
          "abpc": "ABPC", "p@20": "P@20"}
LOWER_IS_BETTER = ("lodds", "sufficiency")
# the perturbation order each metric reads
MODES = {"aopc": ("most",), "lodds": ("most",), "comprehensiveness": ("most",), "sufficiency": ("keep",),
         "abpc": ("most", "least")}
QA_K = 20
# Paired comparisons: percentile bootstrap over sequences, seeded so that a table reads the same twice.
BOOTSTRAP = {"n_boot": 10000, "level": 0.95, "seed": 0}


@dataclass(frozen=True)
class Comparison:
    """Method ``a`` against ``b`` on one metric, paired over the same ``n`` sequences.

    ``mean``: the mean over sequences of ``a``'s per-sequence value minus ``b``'s (a method
    with several runs, e.g. random-mask seeds, averaged over its runs per sequence first), so
    it is the difference of the table's two numbers. ``low``, ``high``: the ``level``
    percentile bootstrap interval of that mean, from ``n_boot`` resamples of the sequences
    (with replacement, the same rows for both methods) drawn with ``seed``.
    """

    a: str
    b: str
    metric: str
    mean: float
    low: float
    high: float
    level: float
    n_boot: int
    seed: int
    n: int

    def __str__(self) -> str:
        return f"{LABELS[self.metric]} {self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


@dataclass(repr=False)
class Evaluation:
    """What :func:`evaluate` measured on ``N`` sequences.

    ``probs[method]``: one dict per run (random-mask: one per seed) mapping a perturbation
    mode (``"most"``, ``"least"``, ``"keep"``) to ``(N, G)`` probabilities of the explained
    class at the fractions ``grid``; ``p_full`` / ``target`` ``(N,)`` the unperturbed
    probability and the explained class. For QA, ``precision[method]`` holds ``(N,)``
    Precision@20 per run instead. ``info``: the settings and the data. ``compared``: the
    method pairs ``(a, b)`` whose paired differences :meth:`comparisons` reports (and the
    table, CSV and JSON with it).
    """

    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    ks: tuple[float, ...]
    eraser_bins: tuple[float, ...]
    grid: tuple[float, ...]
    p_full: np.ndarray
    target: np.ndarray
    probs: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)
    precision: dict[str, list[np.ndarray]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    compared: tuple[tuple[str, str], ...] = ()

    def curves(self, method: str, metric: str) -> list[Curve]:
        """The metric's :class:`~masklrp.metrics.Curve` of each run of ``method``."""
        if method not in self.methods or metric not in self.metrics:
            raise ValueError(f"method/metric: have {self.methods} and {self.metrics}, got {method!r}, {metric!r}")
        if metric == "p@20":
            return [Curve(np.array([p.mean()]), float(p.mean()), p) for p in self.precision[method]]
        columns = self._columns(self._metric_ks(metric))
        return [self._curve(run, metric, columns) for run in self.probs[method]]

    def _curve(self, run: dict[str, np.ndarray], metric: str, columns: list[int]) -> Curve:
        if metric == "abpc":
            return abpc(run["least"][:, columns], run["most"][:, columns])
        if metric == "sufficiency":
            return sufficiency(self.p_full, run["keep"][:, columns])
        removed = {"aopc": aopc, "lodds": lodds, "comprehensiveness": comprehensiveness}[metric]
        return removed(self.p_full, run["most"][:, columns])

    def per_sequence(self, method: str, metric: str) -> np.ndarray:
        """(N,) the metric of each sequence (its mean over ``k``), averaged over ``method``'s
        runs; its mean is the table's number."""
        return np.mean([c.per_sequence for c in self.curves(method, metric)], axis=0)

    def compare(self, a: str, b: str, metric: str, n_boot: int = BOOTSTRAP["n_boot"],
                level: float = BOOTSTRAP["level"], seed: int = BOOTSTRAP["seed"]) -> Comparison:
        """Method ``a`` minus method ``b`` on ``metric``: the mean per-sequence difference and
        its percentile bootstrap confidence interval, paired over sequences (see
        :class:`Comparison`). Deterministic for a given ``seed``."""
        n_boot = positive_int(n_boot, "n_boot")
        level = number(level, "level")
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        seed = integer(seed, "seed", 0)
        diff = self.per_sequence(a, metric) - self.per_sequence(b, metric)
        rng = np.random.default_rng(seed)
        n = len(diff)
        means = np.empty(n_boot)
        step = max(1, 2 ** 20 // n)  # resamples drawn together: bounded memory
        for lo in range(0, n_boot, step):
            rows = rng.integers(0, n, size=(min(step, n_boot - lo), n))
            means[lo:lo + len(rows)] = diff[rows].mean(axis=1)
        tail = (1 - level) / 2
        low, high = np.quantile(means, [tail, 1 - tail])
        return Comparison(a, b, metric, float(diff.mean()), float(low), float(high), level, n_boot, seed, n)

    def comparisons(self, **bootstrap) -> list[Comparison]:
        """:meth:`compare` of every pair in ``compared`` on every metric (keywords of
        :meth:`compare`, default :data:`BOOTSTRAP`)."""
        return [self.compare(a, b, metric, **bootstrap) for a, b in self.compared for metric in self.metrics]

    def summary(self) -> dict:
        """``{method: {metric: {mean, std, per_k, per_k_std, runs}}}``; ``std`` is the sample
        standard deviation over runs (None with one run), ``runs`` each run's mean."""
        out = {}
        for method in self.methods:
            out[method] = {}
            for metric in self.metrics:
                curves = self.curves(method, metric)
                means = np.array([c.mean for c in curves])
                per_k = np.array([c.per_k for c in curves])
                many = len(curves) > 1
                out[method][metric] = {
                    "mean": float(means.mean()), "std": float(means.std(ddof=1)) if many else None,
                    "per_k": [] if metric == "p@20" else per_k.mean(axis=0).tolist(),
                    "per_k_std": per_k.std(axis=0, ddof=1).tolist() if many and metric != "p@20" else None,
                    "runs": means.tolist()}
        return out

    def table(self) -> str:
        """The paper-style table: mean of each metric per method (mean ± std over seeds)."""
        summary = self.summary()
        cells = [["method"] + [LABELS[m] for m in self.metrics]]
        for method in self.methods:
            row = [method]
            for metric in self.metrics:
                s = summary[method][metric]
                row.append(f"{s['mean']:.3f}" + ("" if s["std"] is None else f" ± {s['std']:.3f}"))
            cells.append(row)
        widths = [max(len(r[j]) for r in cells) for j in range(len(cells[0]))]
        lines = ["  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths)))
                 for r in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join([self._caption(), *lines, self._legend(), *self._comparison_lines()])

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (f"Evaluation({len(self.methods)} methods, metrics {self.metrics}, "
                f"{self.info.get('n', len(self.target))} sequences of {self.info.get('data', 'data')})")

    def to_csv(self, path: str | os.PathLike) -> Path:
        """One row per method, metric and ``k`` (``k`` empty: the mean over ``k``), then one per
        compared pair ``"a - b"`` and metric: the paired difference and its bootstrap interval
        (``ci_low``, ``ci_high``)."""
        path = Path(path)
        summary = self.summary()
        with replacing(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["method", "metric", "k", "mean", "std", "runs", "ci_low", "ci_high"])
            for method, by_metric in summary.items():
                for metric, s in by_metric.items():
                    runs = len(s["runs"])
                    w.writerow([method, metric, "", _num(s["mean"]), _num(s["std"]), runs, "", ""])
                    for j, k in enumerate(self._metric_ks(metric)):
                        std = None if s["per_k_std"] is None else s["per_k_std"][j]
                        w.writerow([method, metric, k, _num(s["per_k"][j]), _num(std), runs, "", ""])
            for c in self.comparisons():  # "a - b": paired difference and its bootstrap interval
                w.writerow([f"{c.a} - {c.b}", c.metric, "", _num(c.mean), "", "", _num(c.low), _num(c.high)])
        return path

    def to_json(self, path: str | os.PathLike) -> Path:
        """Settings, the ``k`` grids, :meth:`summary` and :meth:`comparisons` as JSON."""
        path = Path(path)
        doc = {"info": self.info, "ks": list(self.ks), "eraser_bins": list(self.eraser_bins),
               "metrics": list(self.metrics), "results": self.summary(),
               "comparisons": [asdict(c) for c in self.comparisons()]}
        with replacing(path) as tmp:
            tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        return path

    def plot(self, path: str | os.PathLike | None = None):
        """Per-``k`` curves, one panel per metric (a band of ± std over seeds); saved to
        ``path`` when given. Returns the matplotlib Figure (needs the ``viz`` extra)."""
        try:
            from matplotlib.figure import Figure
        except ImportError as e:
            raise ImportError(f"plotting needs matplotlib: pip install 'masklrp[viz]' ({e})") from e
        panels = [m for m in self.metrics if m != "p@20"]
        if not panels:
            raise ValueError("plot: no per-k curves to draw (question answering has P@20 only)")
        summary = self.summary()
        fig = Figure(figsize=(4.2 * len(panels), 3.4), layout="constrained")
        for ax, metric in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
            x = 100 * np.array(self._metric_ks(metric))
            for i, method in enumerate(self.methods):
                s = summary[method][metric]
                y = np.array(s["per_k"])
                # ten colours, then the same colours dashed: every method stays distinguishable
                (line,) = ax.plot(x, y, marker="os"[i // 10 % 2], markersize=3, color=f"C{i % 10}",
                                  linestyle="-" if i < 10 else "--", label=method)
                if s["per_k_std"] is not None:
                    std = np.array(s["per_k_std"])
                    ax.fill_between(x, y - std, y + std, color=line.get_color(), alpha=0.2)
            better = "lower" if metric in LOWER_IS_BETTER else "higher"
            ax.set(title=f"{LABELS[metric]} ({better} is better)", xlabel="tokens replaced (%)")
            ax.grid(alpha=0.3)
        fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize="small")
        fig.suptitle(textwrap.fill(self._caption(), int(36 * len(panels))), fontsize="small")
        if path is not None:
            with replacing(path) as tmp:
                fig.savefig(tmp, dpi=120)
        return fig

    def _columns(self, ks) -> list[int]:
        return [self.grid.index(k) for k in ks]

    def _metric_ks(self, metric: str) -> tuple[float, ...]:
        if metric == "p@20":
            return ()
        return self.eraser_bins if metric in ("comprehensiveness", "sufficiency") else self.ks

    def _caption(self) -> str:
        i = self.info
        text = f"{i.get('data', 'data')}: {i.get('n', len(self.target))} sequences, model {i.get('model', '?')}"
        if "accuracy" in i:
            text += f" (accuracy {i['accuracy']:.3f})"
        if i.get("task") == "question-answering":
            return text + ", explaining the predicted span"
        return (text + f"; target {i.get('target')}, replacement {i.get('replacement_token')!r} "
                       f"(id {i.get('replacement')}), rounding {i.get('rounding')}")

    def _comparison_lines(self) -> list[str]:
        if not self.compared:
            return []
        found = self.comparisons()
        c = found[0]
        lines = [f"paired differences a − b, mean over the {c.n} sequences [{100 * c.level:g}% percentile "
                 f"bootstrap CI, {c.n_boot} resamples, seed {c.seed}; several runs averaged per sequence]:"]
        for i, (a, b) in enumerate(self.compared):
            row = found[i * len(self.metrics):(i + 1) * len(self.metrics)]
            lines.append(f"  {a} − {b}: " + ", ".join(str(c) for c in row))
        return lines

    def _legend(self) -> str:
        higher = [LABELS[m] for m in self.metrics if m not in LOWER_IS_BETTER]
        lower = [LABELS[m] for m in self.metrics if m in LOWER_IS_BETTER]
        text = f"higher is better: {', '.join(higher)}"
        if lower:
            text += f"; lower is better: {', '.join(lower)}"
        for grid in (self.ks, self.eraser_bins):
            over = [LABELS[m] for m in self.metrics if m != "p@20" and self._metric_ks(m) is grid]
            if over:
                text += f"; {'/'.join(over)} over k = {_percent(grid)}"
        return text


def evaluate(model, data, methods: str | Sequence[str] | None = None, head_mask=None, *,
             ks: Sequence[float] = KS, eraser_bins: Sequence[float] = ERASER_BINS,
             metrics: Sequence[str] | None = None, target: str = "predicted", replacement: int | str | None = None,
             random_seeds: int = 5, batch_size: int = 32, rounding: str = "ceil", limit: int | None = None,
             progress: bool = True, captum: Sequence[str] = (), captum_model=None,
             captum_options: dict | None = None, compare: Sequence[tuple[str, str]] = (),
             threads: int | None = None, client=None, shard_size: int | None = None,
             cache: str | os.PathLike | None = None) -> Evaluation:
    """Explain ``data`` with every method and score the explanations (see the module docstring).

    ``model``: a :class:`Model` or a folder for :func:`masklrp.load`. ``data``: a name in
    :data:`DATASETS`, texts, ``(text, label)`` pairs (e.g. :func:`masklrp.data.sst2`) or, for a
    QA model, :class:`~masklrp.data.QAExample` s; ``limit`` keeps the first ``limit``.
    ``methods``: engine method names (:data:`masklrp.METHODS`) and Captum names
    (``"captum-ig"``, ...; or list those in ``captum``); default :data:`DEFAULT_METHODS`, less
    the masked ones without a ``head_mask`` (a HeadMask, an (L, H) array or a saved ``.npz``).
    "random-mask" and "random-mask-strict" run ``random_seeds`` times (seeds 0, 1, …).
    ``metrics``: default all of :data:`METRICS` (Precision@20 for QA). ``ks`` (AOPC, LOdds, ABPC) and ``eraser_bins``
    (comprehensiveness, sufficiency) are fractions of the real non-special tokens, counted
    with ``rounding`` (:func:`masklrp.metrics.n_replaced`); ``replacement``: a token id or
    string (default the pad id). ``batch_size`` sentences are explained together;
    ``captum_model`` (default: loaded from the model's folder) and ``captum_options``
    (``n_steps``, ...) go to the Captum adapter. ``compare``: method pairs ``(a, b)`` whose
    paired differences ``a − b`` (bootstrap CIs over sentences, :meth:`Evaluation.compare`)
    the table, CSV and JSON report.

    ``client``: a ``dask.distributed.Client``; the data are then scored in shards of
    ``shard_size`` sentences (whole batches) on its workers, with the same numbers
    (:func:`masklrp.distributed.evaluate`; ``cache``: a folder of finished shards, reused on
    a rerun).
    """
    settings = dict(ks=ks, eraser_bins=eraser_bins, metrics=metrics, target=target, replacement=replacement,
                    random_seeds=random_seeds, batch_size=batch_size, rounding=rounding, limit=limit,
                    captum=captum, captum_options=captum_options, compare=compare)
    if client is not None:
        from .distributed import evaluate as on_cluster  # dask only when asked for

        return on_cluster(client, model, data, methods, head_mask, progress=progress, threads=threads,
                          captum_model=captum_model, shard_size=shard_size, cache=cache, **settings)
    if shard_size is not None or cache is not None:
        raise ValueError("shard_size, cache: shards are for a cluster; give client= too")
    model = model if isinstance(model, Model) else load(model)
    job, examples = plan(model, data, methods, head_mask, **settings)
    start = time.perf_counter()
    runner = _Runner(model, job, _torch_model(model, captum_model) if job.captum else None, threads)
    found = Found(job, len(examples))
    bar = _progress(len(examples), progress)
    for rows in _chunks(examples, job.batch_size, job.qa):
        found.put(rows, runner.batch([examples[i] for i in rows]))
        bar.update(len(rows))
    bar.close()
    return found.evaluation(model, examples, start)


@dataclass(frozen=True)
class Job:
    """An evaluation's validated settings: all a batch needs besides the model and the data
    (small and picklable: :mod:`masklrp.distributed` sends it with each shard)."""

    qa: bool
    data_name: str
    names: tuple[str, ...]
    engine: tuple[str, ...]
    captum: tuple[str, ...]
    mask: object        # what load_head_mask gave: a HeadMask, an (L, H) array or None
    given_mask: object  # as the caller gave it (a path is reported as such)
    runs: dict[str, int]
    metrics: tuple[str, ...]
    compared: tuple[tuple[str, str], ...]
    ks: tuple[float, ...]
    bins: tuple[float, ...]
    grid: tuple[float, ...]
    modes: tuple[str, ...]
    target: str
    replacement: int | None  # the resolved token id (None for QA)
    rounding: str
    batch_size: int
    captum_options: dict


def plan(model: Model, data, methods=None, head_mask=None, *, ks=KS, eraser_bins=ERASER_BINS, metrics=None,
         target="predicted", replacement=None, random_seeds=5, batch_size=32, rounding="ceil", limit=None,
         captum=(), captum_options=None, compare=()) -> tuple[Job, list]:
    """:func:`evaluate`'s arguments checked: the :class:`Job` and the examples."""
    qa = model.spec.pool == "none"
    examples, data_name = _examples(data, limit, qa)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if qa and target != "predicted":
        raise ValueError("target: question answering explains the predicted span only")
    if not qa:
        _labels(examples, target)
    mask = load_head_mask(head_mask)
    names, engine, captum_names = _methods(methods, captum, mask)
    if qa and captum_names:
        raise ValueError("captum: the Captum adapter explains sequence classifiers, not QA")
    metrics = _metrics(metrics, qa)
    compared = _pairs(compare, names)
    random_seeds = positive_int(random_seeds, "random_seeds")
    batch_size = positive_int(batch_size, "batch_size")
    ks, bins = (tuple(dict.fromkeys(fractions(x, name))) for x, name in ((ks, "ks"), (eraser_bins, "eraser_bins")))
    grid = tuple(sorted(set(ks) | (set(bins) if {"comprehensiveness", "sufficiency"} & set(metrics) else set())))
    runs = {name: random_seeds if ALIASES.get(name, name) in RANDOM_METHODS else 1 for name in names}
    modes = tuple(m for m in ("most", "least", "keep") if any(m in MODES.get(x, ()) for x in metrics))
    replacement_id = None if qa else resolve_replacement(model, replacement)
    job = Job(qa, data_name, names, engine, captum_names, mask, head_mask, runs, metrics, compared, ks, bins, grid,
              modes, target, replacement_id, rounding, batch_size, dict(captum_options or {}))
    return job, examples


class Found:
    """Per-sentence results, filled batch by batch in any order, then made an :class:`Evaluation`."""

    def __init__(self, job: Job, n: int) -> None:
        self.job, self.n = job, n
        if job.qa:
            self.precision = {name: [np.full(n, np.nan) for _ in range(job.runs[name])] for name in job.names}
            return
        self.p_full, self.targets = np.zeros(n), np.zeros(n, dtype=np.int64)
        self.predicted = np.zeros(n, dtype=np.int64)
        self.probs = {name: [{m: np.zeros((n, len(job.grid))) for m in job.modes} for _ in range(job.runs[name])]
                      for name in job.names}

    def put(self, rows: np.ndarray, part: dict) -> None:
        """Store what :meth:`_Runner.batch` gave for the sentences ``rows`` (indices into the data)."""
        if self.job.qa:
            for name, values in part["precision"].items():
                for r, v in enumerate(values):
                    self.precision[name][r][rows] = v
            return
        self.p_full[rows], self.targets[rows] = part["p_full"], part["target"]
        self.predicted[rows] = part["predicted"]
        for name, runs in part["probs"].items():
            for r, run in enumerate(runs):
                for m, values in run.items():
                    self.probs[name][r][m][rows] = values

    def evaluation(self, model: Model, examples, start: float) -> Evaluation:
        job = self.job
        if job.qa:
            kept = ~np.isnan(self.precision[job.names[0]][0])  # NaN: the answer did not survive truncation
            info = {"target": "both (predicted span)", "k": QA_K, "skipped_truncated": int(self.n - kept.sum())}
            return Evaluation(job.names, job.metrics, (), (), (), np.zeros(0), np.zeros(0, dtype=np.int64),
                              precision={name: [p[kept] for p in ps] for name, ps in self.precision.items()},
                              compared=job.compared, info=_info(model, job, int(kept.sum()), start, info))
        token = model.tokenizer.backend.id_to_token(job.replacement) if model.tokenizer is not None else None
        info = {"target": job.target, "replacement": job.replacement, "replacement_token": token,
                "rounding": job.rounding}
        if _has_labels(examples):
            info["accuracy"] = float((self.predicted == np.array([e[1] for e in examples])).mean())
        return Evaluation(job.names, job.metrics, job.ks, job.bins, job.grid, self.p_full, self.targets,
                          probs=self.probs, compared=job.compared, info=_info(model, job, self.n, start, info))


class _Runner:
    """Explains and scores one batch with every method: engine methods in one explain_all call,
    the random-mask methods (both readings) in one more call per further seed, Captum methods
    through the adapter."""

    def __init__(self, model: Model, job: Job, torch_model, threads):
        self.model, self.job, self.torch_model, self.threads = model, job, torch_model, threads
        self.engine, self.captum, self.mask, self.runs = job.engine, job.captum, job.mask, job.runs

    def batch(self, examples) -> dict:
        """The per-sentence results of one batch of ``examples``, for :meth:`Found.put`."""
        if self.job.qa:
            return {"precision": self.qa_batch(examples)}
        job, model, threads = self.job, self.model, self.threads
        inputs = model.encode([e[0] for e in examples])
        logits = model.forward(inputs, threads=threads)["logits"]  # shared by every method's curves
        predicted = logits.argmax(axis=1)
        labels = _labels(examples, job.target)
        targets = predicted if labels is None else labels
        explained = [(name, r, run) for name, runs in self.explain(inputs, targets).items()
                     for r, run in enumerate(runs)]
        # one call for every method and seed: a perturbed sentence they share runs once
        curves = shared_perturbation_curves(model, inputs, [run for _, _, run in explained], job.grid,
                                            modes=job.modes, target=targets, replacement=job.replacement,
                                            rounding=job.rounding, logits=logits, threads=threads)
        probs = {name: [{} for _ in range(job.runs[name])] for name in job.names}
        for (name, r, _), c in zip(explained, curves):
            probs[name][r] = {m: c.probs[m] for m in job.modes}
        return {"p_full": curves[-1].p_full, "target": targets, "predicted": predicted, "probs": probs}

    def explain(self, inputs, target) -> dict[str, list[list]]:
        """method -> one list of Explanations per run."""
        target = [int(t) for t in target] if not isinstance(target, str) else target
        out: dict[str, list] = {}
        if self.engine:
            first = explain_all(self.model, inputs, self.engine, target, self.mask, seed=0, threads=self.threads)
            out = {name: [first[name]] for name in self.engine}
        random = [name for name in self.engine if name in RANDOM_METHODS]
        for seed in range(1, max((self.runs[name] for name in random), default=1)):
            again = explain_all(self.model, inputs, random, target, self.mask, seed=seed, threads=self.threads)
            for name in random:
                out[name].append(again[name])
        if self.captum:
            from .captum_adapter import captum_explain

            found = captum_explain(self.torch_model, inputs, self.captum, target, **self.job.captum_options)
            out.update({name: [found[name]] for name in self.captum})
        return {name: out[name] for name in self.runs}

    def qa_batch(self, examples) -> dict[str, list[np.ndarray]]:
        """method -> per run, (B,) Precision@20 of the predicted span's explanation (NaN where
        truncation cut the gold answer off)."""
        inputs, gold = _qa_inputs(self.model, examples)
        out = {}
        for name, runs in self.explain(inputs, "both").items():
            out[name] = []
            for explanations in runs:
                values = np.full(len(examples), np.nan)
                for b, e in enumerate(explanations):
                    real = inputs.attention_mask[b].astype(bool)
                    if gold[b].any():
                        values[b] = precision_at(e.scores, gold[b, real], QA_K,
                                                 candidates=~inputs.special_tokens_mask[b, real])
                out[name].append(values)
        return out


def _info(model, job: Job, n, start, extra) -> dict:
    return {"model": model.source, "data": job.data_name, "n": n, "task": model.spec.task,
            "methods": list(job.names),
            "random_seeds": max((r for name, r in job.runs.items() if ALIASES.get(name, name) in RANDOM_METHODS),
                                default=0),
            "head_mask": _describe_mask(job.given_mask, job.mask),
            "seconds": round(time.perf_counter() - start, 2), **extra}


# ---------------------------------------------------------------------------- helpers
def _examples(data, limit, qa: bool) -> tuple[list, str]:
    name = "data"
    if isinstance(data, str):
        if data not in DATASETS:
            raise ValueError(f"data: unknown data set {data!r}; choose from {tuple(DATASETS)} or pass examples")
        name, data = data, DATASETS[data]()
    if isinstance(data, (bytes, dict)) or not isinstance(data, Sequence):
        raise TypeError(f"data must be a data set name or a sequence of examples, got {type(data).__name__}")
    if limit is not None:
        data = data[:positive_int(limit, "limit")]
        name += f"[:{limit}]"
    if not data:
        raise ValueError("data: no examples")
    if qa:
        if not all(isinstance(e, datasets.QAExample) for e in data):
            raise TypeError("data: a question-answering model takes masklrp.data.QAExample s (e.g. 'squad')")
        return list(data), name
    examples = []
    for e in data:
        if isinstance(e, str):
            examples.append((e, None))
        elif isinstance(e, Sequence) and len(e) == 2 and isinstance(e[0], str):
            label = None if e[1] is None else integer(e[1], f"data[{len(examples)}] label", 0,
                                                      integral_floats=True)
            examples.append((e[0], label))
        else:
            raise TypeError(f"data: expected texts or (text, label) pairs, got {e!r}")
    return examples, name


def _has_labels(examples) -> bool:
    return all(len(e) == 2 and e[1] is not None for e in examples)


def _labels(examples, target: str) -> np.ndarray | None:
    if target == "predicted":
        return None
    if not _has_labels(examples):
        raise ValueError("target='gold' needs labels: give (text, label) examples")
    return np.array([e[1] for e in examples], dtype=np.int64)


def _describe_mask(given, mask) -> str | None:
    if mask is None:
        return None
    if isinstance(given, (str, os.PathLike)):
        return str(given)
    array = np.asarray(getattr(mask, "array", mask))
    return f"{int((array != 0).sum())} of {array.size} heads kept"


def _methods(methods, captum, mask) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(all methods, engine methods, Captum methods), validated, in the order given."""
    if methods is None:
        methods = DEFAULT_METHODS if mask is not None else tuple(
            m for m in DEFAULT_METHODS if m not in MASKED_METHODS)
    methods = [methods] if isinstance(methods, str) else list(methods)
    captum = [captum] if isinstance(captum, str) else list(captum)
    names = methods + [c if c.lower().startswith("captum-") else f"captum-{c}" for c in captum]
    if not all(isinstance(m, str) for m in names):
        raise TypeError(f"methods must be method names, got {names!r}")
    engine, external, ordered = [], [], []
    for name in names:
        key = name.lower()
        if key.startswith("captum-"):
            from .captum_adapter import canonical_name

            key = canonical_name(key)
            external.append(key)
        elif key in METHODS or key in ALIASES:
            engine.append(key)
        else:
            raise ValueError(f"methods: unknown {name!r}; choose from {tuple(METHODS) + tuple(ALIASES)} "
                             f"or captum-ig, captum-lig, captum-saliency, captum-ixg")
        ordered.append(key)
    if not names:
        raise ValueError("methods: none given")
    masked = [m for m in engine if ALIASES.get(m, m) in MASKED_METHODS]
    if masked and mask is None:
        raise ValueError(f"head_mask: methods {masked} need a head mask (HeadMask, (layers, heads) array "
                         f"or .npz path)")
    return tuple(dict.fromkeys(ordered)), tuple(dict.fromkeys(engine)), tuple(dict.fromkeys(external))


def _pairs(compare, names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``compare`` as (a, b) pairs of evaluated methods, in the order given."""
    if isinstance(compare, (str, bytes)) or not isinstance(compare, Sequence):
        raise TypeError(f"compare must be a sequence of (method, method) pairs, got {compare!r}")
    pairs = []
    for pair in compare:
        if (isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2
                or not all(isinstance(m, str) for m in pair)):
            raise TypeError(f"compare: expected (method, method) pairs, got {pair!r}")
        a, b = (m.lower() for m in pair)
        missing = [m for m in (a, b) if m not in names]
        if missing:
            raise ValueError(f"compare: {missing} not among the evaluated methods {tuple(names)}")
        if a == b:
            raise ValueError(f"compare: {a!r} against itself")
        pairs.append((a, b))
    return tuple(dict.fromkeys(pairs))


def _metrics(metrics, qa: bool) -> tuple[str, ...]:
    allowed = QA_METRICS if qa else METRICS
    if metrics is None:
        return allowed
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    wrong = [m for m in metrics if m not in allowed]
    if wrong or not metrics:
        raise ValueError(f"metrics: {wrong or 'none given'} not available; choose from {allowed}")
    return tuple(dict.fromkeys(metrics))


def _chunks(examples, batch_size: int, qa: bool):
    """Row indices in batches of similar length (less padding per engine call)."""
    length = (lambda e: len(e.question) + len(e.context)) if qa else (lambda e: len(e[0]))
    order = sorted(range(len(examples)), key=lambda i: length(examples[i]))
    for lo in range(0, len(order), batch_size):
        yield np.array(order[lo:lo + batch_size])


def _torch_model(model: Model, given):
    """The transformers torch model for Captum: ``given``, or loaded from the model's folder."""
    from .captum_adapter import load_torch_model

    if given is None:
        if not Path(model.source).is_dir():
            raise ValueError("captum_model: give the transformers torch model (this Model was not "
                             "loaded from a folder)")
        given = model.source
    return load_torch_model(given) if isinstance(given, (str, os.PathLike)) else given


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="evaluate", unit="seq", disable=not enabled)


def _qa_inputs(model: Model, examples) -> tuple:
    """Engine inputs of (question, context) pairs and the (B, T) gold-answer token mask
    (context tokens overlapping the first gold answer's characters)."""
    if model.tokenizer is None:
        raise ValueError("model: question answering needs the model's tokenizer")
    batch = model.tokenizer.encode([e.question for e in examples], [e.context for e in examples],
                                   max_length=model.spec.max_positions)
    inputs = model.prepare(batch.input_ids, batch.attention_mask, token_type_ids=batch.token_type_ids)
    inputs.tokens, inputs.special_tokens_mask = batch.tokens, batch.special_tokens_mask
    gold = np.zeros(batch.input_ids.shape, dtype=bool)
    for b, e in enumerate(examples):
        lo, hi = e.answer_start, e.answer_start + len(e.answer)
        for t, ((s, end), seq) in enumerate(zip(batch.offsets[b], batch.sequence_ids[b])):
            gold[b, t] = seq == 1 and s < hi and end > lo
    return inputs, gold


def _num(x) -> str:
    return "" if x is None else f"{x:.6g}"


def _percent(ks) -> str:
    return ", ".join(f"{100 * k:g}" for k in ks) + "%"
