"""Command line: ``python -m masklrp <command>``.

``evaluate``: faithfulness of attribution methods on a data set (:func:`masklrp.evaluate`),
printing the paper-style table and writing ``results.csv``, ``results.json`` and
``curves.png`` (per-k curves) into ``--out``::

    python -m masklrp evaluate --data sst2-dev --limit 100 --methods mask-lrp,gae,random-mask \\
        --head-mask heads.npz --out eval/

Without ``--model`` the default fine-tuned MiniLM (:mod:`masklrp.default_model`) is used
when it is built. Each command is one ``_<name>`` function registered in :func:`parser`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


def parser() -> argparse.ArgumentParser:
    from .evaluate import DATASETS, METRICS
    from .metrics import ROUNDINGS

    top = argparse.ArgumentParser(prog="python -m masklrp", description="masklrp: LRP explanations "
                                  "for Hugging Face transformers")
    commands = top.add_subparsers(dest="command", required=True, metavar="command")

    ev = commands.add_parser("evaluate", help="faithfulness (AOPC, LOdds, ...) of attribution methods",
                             description="Explain a data set with each method and score the explanations "
                                         "by perturbation (AOPC, LOdds, ERASER comprehensiveness / "
                                         "sufficiency, ABPC) or, for a QA model, Precision@20.")
    ev.add_argument("--model", help="model folder (config.json + model.safetensors); default: the "
                                    "default fine-tuned MiniLM when built (python -m masklrp.default_model)")
    ev.add_argument("--data", default="sst2-dev", choices=tuple(DATASETS), help="data set (default sst2-dev)")
    ev.add_argument("--limit", type=int, help="evaluate the first N examples only")
    ev.add_argument("--methods", type=_names, help="comma-separated methods: engine methods (mask-lrp, "
                    "gae, random-mask, attcat, rawatt, attnlrp, ...) and captum-ig, captum-lig, "
                    "captum-saliency, captum-ixg; default: the paper's set (masked ones need --head-mask)")
    ev.add_argument("--head-mask", type=Path, help="HeadMask file (.npz, HeadMask.save) for mask-lrp and random-mask")
    ev.add_argument("--metrics", type=_names, help=f"comma-separated, from {', '.join(METRICS)} (default all)")
    ev.add_argument("--ks", type=_fractions, help="fractions for AOPC/LOdds/ABPC (default 0.1,...,0.9)")
    ev.add_argument("--target", default="predicted", choices=("predicted", "gold"),
                    help="the class explained and scored (default: the prediction)")
    ev.add_argument("--replacement", type=_token, help="replacement token id or string, e.g. 0 or "
                                                       "[MASK] (default: the pad id)")
    ev.add_argument("--rounding", default="ceil", choices=ROUNDINGS, help="how k%% of n tokens is counted")
    ev.add_argument("--random-seeds", type=int, default=5, help="runs of the random mask (default 5)")
    ev.add_argument("--batch-size", type=int, default=32, help="sentences explained together (default 32)")
    ev.add_argument("--captum-steps", type=int, default=50, help="integration steps of captum-ig/-lig")
    ev.add_argument("--threads", type=int, help="engine threads (default: masklrp.get_num_threads())")
    ev.add_argument("--out", type=Path, default=Path("masklrp-evaluation"),
                    help="folder for results.csv, results.json and curves.png (default ./masklrp-evaluation)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(run=_evaluate)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate
    from .metrics import KS

    model = args.model
    if model is None:
        from .default_model import default_model_dir

        model = default_model_dir(build=False)
    result = evaluate(str(model), args.data, args.methods, args.head_mask, metrics=args.metrics,
                      ks=args.ks or KS, target=args.target, replacement=args.replacement,
                      random_seeds=args.random_seeds, batch_size=args.batch_size, rounding=args.rounding,
                      limit=args.limit, progress=not args.no_progress,
                      captum_options={"n_steps": args.captum_steps}, threads=args.threads)
    print(result.table())
    args.out.mkdir(parents=True, exist_ok=True)
    written = [result.to_csv(args.out / "results.csv"), result.to_json(args.out / "results.json")]
    if any(m != "p@20" for m in result.metrics):
        try:
            written.append(args.out / "curves.png")
            result.plot(written[-1])
        except ImportError as e:
            written.pop()
            print(f"no plot: {e}", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return names


def _fractions(text: str) -> list[float]:
    try:
        return [float(k) for k in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from None


def _token(text: str) -> int | str:
    return int(text) if text.isdigit() else text


if __name__ == "__main__":
    raise SystemExit(main())
