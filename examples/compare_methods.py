"""Compare attribution methods on one sentence, side by side, then score them on SST-2 dev.

    python examples/compare_methods.py ["a sentence"] [--methods mask-lrp,attnlrp,gae,...]
        [--head-mask heads.npz | --sentences 200] [--captum ig] [--n-steps 16]
        [--limit 16] [--metrics aopc,lodds] [--seeds 2] [--out compare_methods/]

The command-line twin of notebooks/03_compare_captum.ipynb, on the default model
(masklrp.load_default()). The Mask-LRP head mask is read from ``--head-mask`` (e.g. what
examples/head_masks.py wrote) or counted over the first ``--sentences`` of UD EWT dev. Every
engine method comes from one masklrp.explain_all call; the Captum methods (``--captum``, needs
the ``compare`` extra and torch; ``--captum ''`` for none) run on the transformers model.
Writes into ``--out``: ``methods.html`` and ``methods.png`` (one heatmap row per method) and,
unless ``--limit 0``, the faithfulness scores of the first ``--limit`` SST-2 dev sentences:
``evaluation.csv``, ``evaluation.json``, ``curves.png``.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from itertools import islice
from pathlib import Path

import numpy as np

import masklrp
import masklrp.heatmap
from masklrp.default_model import LABELS

TEXT = "the acting is superb , but the plot is a tired , predictable mess ."
METHODS = "mask-lrp,attnlrp,gae,attcat,rawatt,random-mask"


def names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def captum_missing() -> str | None:
    """Why the Captum baselines cannot run here, or None."""
    absent = [m for m in ("captum", "torch", "transformers") if importlib.util.find_spec(m) is None]
    return f"{', '.join(absent)} not installed (pip install 'masklrp[compare]')" if absent else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", nargs="?", default=TEXT)
    parser.add_argument("--methods", type=names, default=names(METHODS), help=f"default {METHODS}")
    parser.add_argument("--head-mask", type=Path, help="a saved HeadMask (.npz)")
    parser.add_argument("--sentences", type=int, default=200,
                        help="without --head-mask: count the mask over the first N UD EWT dev sentences")
    parser.add_argument("--captum", type=names, default=["ig"], help="Captum methods: ig, lig, saliency, "
                                                                     "ixg (default ig; '' for none)")
    parser.add_argument("--n-steps", type=int, default=16, help="integration steps of IG / LIG")
    parser.add_argument("--limit", type=int, default=16, help="SST-2 dev sentences to score (0: none)")
    parser.add_argument("--metrics", type=names, default=["aopc", "lodds"],
                        help="of aopc, lodds, comprehensiveness, sufficiency, abpc")
    parser.add_argument("--seeds", type=int, default=2, help="random masks drawn for random-mask")
    parser.add_argument("--out", type=Path, default=Path("compare_methods"), help="output folder")
    args = parser.parse_args(argv)

    model = masklrp.load_default()
    if args.head_mask:
        mask = masklrp.HeadMask.load(args.head_mask)
    else:
        path = masklrp.data.ud_ewt("dev")
        sentences = list(islice(masklrp.read_conllu(path), args.sentences))
        mask = masklrp.head_statistics(model, sentences, corpus_name=f"{path.name}[:{len(sentences)}]",
                                       progress=False)
    print(mask)

    start = time.perf_counter()
    out = masklrp.explain_all(model, args.text, args.methods, head_mask=mask)
    rows = {method: explained[0] for method, explained in out.items()}
    print(f"{len(rows)} engine methods in {1e3 * (time.perf_counter() - start):.0f} ms")
    torch_model = None
    why_not = captum_missing() if args.captum else "no Captum method asked for"
    if why_not is None:
        from masklrp.captum_adapter import captum_explain, load_torch_model

        torch_model = load_torch_model(masklrp.default_model_dir())
        start = time.perf_counter()
        found = captum_explain(torch_model, model.encode(args.text), [f"captum-{c}" for c in args.captum],
                               n_steps=args.n_steps)
        rows.update({method: explained[0] for method, explained in found.items()})
        print(f"{len(found)} Captum methods in {1e3 * (time.perf_counter() - start):.0f} ms")
    else:
        print(f"Captum baselines skipped: {why_not}")

    target = next(iter(rows.values())).target
    print(f"{args.text!r}: explaining {LABELS[target]}; the three most relevant words per method:")
    for method, e in rows.items():
        words, scores, special = e.words()
        top = [words[i] for i in np.argsort(-np.where(special, -np.inf, scores))[:3]]
        print(f"  {method:>16}: {', '.join(top)}")
    args.out.mkdir(parents=True, exist_ok=True)
    title = f"relevance for {LABELS[target]}"
    for file in ("methods.html", "methods.png"):
        masklrp.heatmap.save(rows, args.out / file, title=title)

    if args.limit:
        result = masklrp.evaluate(model, "sst2-dev", args.methods, head_mask=mask, limit=args.limit,
                                  metrics=args.metrics, random_seeds=args.seeds, progress=False,
                                  captum=args.captum if why_not is None else (),
                                  captum_model=torch_model, captum_options={"n_steps": args.n_steps})
        print(result.table())
        result.to_csv(args.out / "evaluation.csv")
        result.to_json(args.out / "evaluation.json")
        result.plot(args.out / "curves.png")
    print(f"written to {args.out}/")


if __name__ == "__main__":
    main()
