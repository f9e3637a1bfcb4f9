"""Generate an answer with a real model and explain every answer token by every token before it.

    python examples/explain_generation.py ["prompt"] [--max-new-tokens 10] [--target TEXT]
                                          [--contrastive] [--out generation.html|.png|.pdf|.svg]

SmolLM2-135M-Instruct (see explain_next_token.py for how it is loaded) generates greedily in the
C engine; one forward over prompt + answer and one relevance sweep per answer token then give
the (answer × context) matrix of masklrp.attribute_generation. The .html page holds the matrix
and each answer token's prompt heatmap; an image holds the matrix (the README's figure:
``make figures``).
"""
from __future__ import annotations

import argparse
import time

import masklrp
from explain_next_token import load_smollm2  # beside this script


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="Marie Curie was born in Warsaw. She is famous for her work in")
    parser.add_argument("--max-new-tokens", type=int, default=10)
    parser.add_argument("--target", help="explain this answer instead of generating one")
    parser.add_argument("--contrastive", action="store_true")
    parser.add_argument("--out", default="generation.html", help=".html, .png, .pdf or .svg")
    args = parser.parse_args(argv)

    model = load_smollm2()
    t0 = time.perf_counter()
    g = masklrp.attribute_generation(model, args.prompt, args.max_new_tokens, target=args.target,
                                     contrastive=args.contrastive)
    print(f"{g}\nin {time.perf_counter() - t0:.1f} s")
    for i, token in enumerate(masklrp.heatmap.texts(g.answer_tokens)):
        e = g.step(i)
        best = int(e.scores.argmax())
        print(f"  {token!r:>12} <- most relevant {masklrp.heatmap.texts(e.tokens)[best]!r} ({e.scores[best]:+.3g})")
    print(f"written to {g.save(args.out)}")


if __name__ == "__main__":
    main()
