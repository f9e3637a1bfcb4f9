"""Find the default model's positional and syntactic heads on UD English-EWT (Mask-LRP).

    python examples/head_masks.py [--sentences 200] [--conllu file.conllu]
                                  [--xi-pos 0.8] [--xi-synt 0.1] [--out head_masks/]

The command-line twin of notebooks/02_head_masks.ipynb. One forward pass over the first
``--sentences`` sentences (0: all 2001 of UD EWT dev, about 10 s on 2 cores) counts, per head,
where each token's most attended token lies (offsets) and how often a dependent attends to
its head word (nsubj, obj, amod, advmod). Prints the summary; writes into ``--out``:
``heads.npz`` (the counters: HeadMask.load), ``heads.png`` (the layers x heads grid) and
``offsets.png`` (the offset histograms of the positional heads).
"""
from __future__ import annotations

import argparse
import time
from itertools import islice
from pathlib import Path

import masklrp
from masklrp.headmask import XI_POS, XI_SYNT


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=200, help="first N sentences (0: all)")
    parser.add_argument("--conllu", type=Path, default=None,
                        help="a CoNLL-U treebank (default: the shipped UD EWT dev)")
    parser.add_argument("--xi-pos", type=float, default=XI_POS)
    parser.add_argument("--xi-synt", type=float, default=XI_SYNT)
    parser.add_argument("--max-offset", type=int, default=4, help="offsets shown in offsets.png")
    parser.add_argument("--out", type=Path, default=Path("head_masks"), help="output folder")
    args = parser.parse_args(argv)
    if args.sentences < 0:
        parser.error("--sentences must be 0 (all) or more")

    path = args.conllu or masklrp.data.ud_ewt("dev")
    corpus = masklrp.read_conllu(path)
    name = path.name
    if args.sentences:
        corpus, name = list(islice(corpus, args.sentences)), f"{path.name}[:{args.sentences}]"
    model = masklrp.load_default()
    start = time.perf_counter()
    mask = masklrp.head_statistics(model, corpus, corpus_name=name, progress=False,
                                   xi_pos=args.xi_pos, xi_synt=args.xi_synt)
    print(f"counted in {time.perf_counter() - start:.1f} s")
    print(mask.summary())

    args.out.mkdir(parents=True, exist_ok=True)
    mask.save(args.out / "heads.npz")
    figures = {"heads.png": mask.plot(), "offsets.png": mask.plot_offsets(max_offset=args.max_offset)}
    for file, fig in figures.items():
        fig.savefig(args.out / file, dpi=150, bbox_inches="tight")
    print(f"written to {args.out}/: heads.npz (HeadMask.load), heads.png, offsets.png")


if __name__ == "__main__":
    main()
