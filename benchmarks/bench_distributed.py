"""Head statistics and evaluation on a Dask LocalCluster of 1 and 2 workers, beside the
single-process run: wall time, speedup, and what the cluster costs.

Run from the repository root (the C module built in place, the default model built, the
``distributed`` extra installed):

    python benchmarks/bench_distributed.py                     # UD EWT dev heads + 200 SST-2 dev sentences
    python benchmarks/bench_distributed.py --limit 50 --skip-heads    # a quick look

Each job runs three ways on the same machine, one engine thread per process:

    single      ``head_statistics(model, path)`` / ``evaluate(model, "sst2-dev", ...)``
    1 worker    the same call with ``client=`` a LocalCluster of one worker process
    2 workers   ... of two worker processes

The cluster's start (worker processes, imports) is timed apart ("start"); a run's time
includes loading the model in every worker, sending shards and merging. Every cluster result
is checked equal to the single-process one (counters bit for bit, per-sentence curves exactly).
``speedup`` = single / run; ``overhead`` = 1-worker run / single - 1 (what sharding and Dask
cost when nothing runs in parallel). On a machine shared with other jobs the ratios move with
the load average printed in the header.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

# Run as a script, Python puts benchmarks/ on the path, not the checkout whose in-place build we time.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import masklrp  # noqa: E402
from masklrp import distributed as D  # noqa: E402
from machine import cpu_model  # noqa: E402  (benchmarks/ is on a script's path)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def same_counters(a, b) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("positional", "syntactic", "baseline", "arcs"))


def same_curves(a, b) -> bool:
    return np.array_equal(a.p_full, b.p_full) and all(
        np.array_equal(ra[m], rb[m]) for name in a.methods for ra, rb in zip(a.probs[name], b.probs[name]) for m in ra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=200, help="SST-2 dev sentences evaluated (default 200)")
    ap.add_argument("--methods", default="mask-lrp,gae,attnlrp,rawatt", help="evaluated methods")
    ap.add_argument("--metrics", default="aopc,lodds")
    ap.add_argument("--threads", type=int, default=1, help="engine threads per process (default 1)")
    ap.add_argument("--skip-heads", action="store_true")
    ap.add_argument("--skip-evaluate", action="store_true")
    args = ap.parse_args()

    folder = masklrp.default_model_dir(build=False)
    model = masklrp.load(folder)
    corpus = masklrp.data.ud_ewt("dev")
    blas = masklrp.blas_info()
    import dask

    print(f"CPU {cpu_model()}, {os.cpu_count()} CPUs; BLAS {blas['library']} {blas['version']} core "
          f"{blas['core']}; engine threads {args.threads} per process")
    print(f"masklrp {masklrp.__version__}, dask {dask.__version__}, numpy {np.__version__}, python "
          f"{platform.python_version()}; load average at start {os.getloadavg()[0]:.2f}")
    print(f"model {folder}")

    jobs = {}
    if not args.skip_heads:
        jobs["heads"] = (f"UD EWT dev head statistics ({len(masklrp.read_conllu(corpus))} sentences, batch 32, "
                         f"shards of {D.HEADS_SHARD})",
                         lambda client: masklrp.head_statistics(model, corpus, threads=args.threads, progress=False,
                                                                client=client),
                         same_counters, len(masklrp.read_conllu(corpus)))
    if not args.skip_evaluate:
        mask = masklrp.default_head_mask()
        methods, metrics = args.methods.split(","), args.metrics.split(",")
        jobs["evaluate"] = (f"SST-2 dev evaluation (first {args.limit} sentences, {','.join(methods)}; "
                            f"{','.join(metrics)}; batch 32, one batch per shard)",
                            lambda client: masklrp.evaluate(folder, "sst2-dev", methods, mask, metrics=metrics,
                                                            limit=args.limit, threads=args.threads,
                                                            progress=False, client=client),
                            same_curves, args.limit)

    rows = []
    for name, (title, run, same, n) in jobs.items():
        print(f"\n{title}", flush=True)
        single_s, ref = timed(lambda: run(None))
        print(f"  single     {single_s:8.1f} s", flush=True)
        rows.append((name, "single", 0.0, single_s, n, True))
        for workers in (1, 2):
            start = time.perf_counter()
            with D.cluster(workers=workers) as client:
                start_s = time.perf_counter() - start
                run_s, out = timed(lambda: run(client))
            ok = same(out, ref)
            print(f"  {workers} worker{'s' if workers > 1 else ' '}  {run_s:8.1f} s (start {start_s:.1f} s), "
                  f"identical: {ok}", flush=True)
            rows.append((name, f"{workers} worker{'s' if workers > 1 else ''}", start_s, run_s, n, ok))

    print(f"\nload average at the end {os.getloadavg()[0]:.2f}\n")
    print("| job | run | start (s) | run (s) | speedup | overhead | sentences/s per worker | identical |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    single = {name: s for name, how, _, s, _, _ in rows if how == "single"}
    for name, how, start_s, run_s, n, ok in rows:
        workers = 1 if how == "single" else int(how.split()[0])
        overhead = f"{100 * (run_s / single[name] - 1):+.0f} %" if how == "1 worker" else ""
        speedup = "" if how == "single" else f"{single[name] / run_s:.2f}x"
        print(f"| {name} | {how} | {start_s:.1f} | {run_s:.1f} | {speedup} | {overhead} | "
              f"{n / run_s / workers:.1f} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
