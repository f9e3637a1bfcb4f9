"""Explain the default sentiment model's prediction for one sentence and save the heatmap.

    python examples/quickstart.py ["a sentence"] [--target negative|positive|0|1]
                                  [--method attnlrp|cp-lrp] [--words] [--out quickstart.html]

The command-line twin of notebooks/01_quickstart.ipynb. The model is all-MiniLM-L6-v2
fine-tuned on SST-2 (masklrp.load_default(), built into ~/.cache/masklrp on first use). One
forward and one relevance sweep run in C; the heatmap is written by its suffix: .html (no
matplotlib needed), .png, .pdf or .svg.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import masklrp
import masklrp.heatmap
from masklrp.default_model import LABELS

TEXT = "a gripping, funny and deeply touching film that never drags"


def label_index(value: str) -> int:
    """A class given by name (``positive``) or index (``1``)."""
    if value.isdigit() and int(value) < len(LABELS):
        return int(value)
    if value.lower() in LABELS:
        return LABELS.index(value.lower())
    raise argparse.ArgumentTypeError(f"choose from {', '.join(LABELS)} or 0..{len(LABELS) - 1}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", nargs="?", default=TEXT)
    parser.add_argument("--target", type=label_index, default=None,
                        help="the class to explain (default: the predicted one)")
    parser.add_argument("--method", choices=("attnlrp", "cp-lrp"), default="attnlrp")
    parser.add_argument("--words", action="store_true", help="merge word pieces into words")
    parser.add_argument("--out", default="quickstart.html", help=".html, .png, .pdf or .svg")
    args = parser.parse_args(argv)

    model = masklrp.load_default()
    start = time.perf_counter()
    e = masklrp.attnlrp(model, args.text, target=args.target, method=args.method)
    elapsed = time.perf_counter() - start
    logits = model.forward(model.encode(args.text))["logits"][0]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    print(f"{args.text!r}: predicted {LABELS[int(logits.argmax())]} "
          f"(p = {probs.max():.3f}); explaining {LABELS[e.target]} (logit {e.logit:+.3f}) "
          f"with {args.method} in {1e3 * elapsed:.0f} ms")
    words, scores, special = e.words()
    shown = [(w, s) for w, s, sp in zip(words, scores, special) if not sp]
    print("words by relevance (red = for, blue = against the explained class):")
    for w, s in sorted(shown, key=lambda ws: -ws[1]):
        print(f"  {w!r:>14}  {s:+.4f}")
    title = f"{args.method} relevance for {LABELS[e.target]} (logit {e.logit:+.2f})"
    path = masklrp.heatmap.save(e, args.out, merge_words=args.words, title=title)
    print(f"heatmap written to {path}")


if __name__ == "__main__":
    main()
