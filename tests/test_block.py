"""The kernels composed into one attention block equal the LXT-style torch oracle.

The demo (examples/attention_block_lrp.py) chains LayerNorm, Q/K/V projections,
Q·Kᵀ, softmax, A·V, the output projection and the residual, and sends AttnLRP
relevance back to the input tokens by hand. Here the same block is written once
in torch with the rules of tests/oracle/rules.py (float64) and its autograd
relevance is compared with the demo's: this checks that the kernels compose —
operand order, shares, transposes, the residual — not only that each is right.

Tolerance: max|C − oracle| ≤ 1e-5 · max|oracle|. Every stage is a float32 kernel
whose own error is ~1e-7 relative (the per-kernel tests); seven stages in a row
stay well inside 1e-5 of the largest relevance.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from oracle import rules as oracle

DEMO = Path(__file__).resolve().parents[1] / "examples" / "attention_block_lrp.py"
TOLERANCE = 1e-5


def load_demo():
    spec = importlib.util.spec_from_file_location("attention_block_lrp", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def oracle_block(x, p, heads):
    """Logit of token 0 and per-token relevance, by torch autograd through the oracle rules."""
    t = {name: torch.from_numpy(np.asarray(v)).double() for name, v in p.items()}
    x = torch.from_numpy(x).double().requires_grad_(True)
    tokens, width = x.shape
    d = width // heads

    def split(z):  # (T, C) -> (H, T, D)
        return z.reshape(tokens, heads, d).transpose(0, 1)

    ln, _, _ = oracle.layernorm(x, t["ln_w"], t["ln_b"], eps=1e-5, rule="lrp")
    q, k, v = (split(oracle.linear(ln, t[w])) for w in ("wq", "wk", "wv"))
    attn = oracle.softmax(oracle.matmul(q, k, transpose_b=True, scale=d ** -0.5, rule="uniform"))
    context = oracle.matmul(attn, v, rule="uniform").transpose(0, 1).reshape(tokens, width)
    y = x + oracle.linear(context, t["wo"])
    logit = y[0] @ t["readout"]
    (g_x,) = oracle.vjp(logit, [x], torch.ones_like(logit))
    return float(logit.detach()), oracle.relevance(x, g_x).sum(dim=1).detach().numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tokens,width,heads", [(9, 32, 4), (1, 16, 2), (17, 48, 6)])
def test_demo_block_relevance_equals_oracle(seed, tokens, width, heads):
    demo = load_demo()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, width)).astype(np.float32)
    params = demo.random_block(rng, width)

    logit, relevance = demo.explain(x, params, heads=heads)
    want_logit, want = oracle_block(x, params, heads)

    assert abs(logit - want_logit) <= TOLERANCE * max(1.0, abs(want_logit)), (logit, want_logit)
    diff = np.abs(relevance - want)
    worst = int(np.argmax(diff))
    assert diff[worst] <= TOLERANCE * np.abs(want).max(), (
        f"token {worst}: masklrp {relevance[worst]:.9g} vs oracle {want[worst]:.9g}, "
        f"max |diff| {diff[worst]:.3g} > {TOLERANCE} * {np.abs(want).max():.3g}")


def test_demo_runs_and_prints_every_token(capsys):
    demo = load_demo()
    demo.main()
    out = capsys.readouterr().out
    assert "logit of token 0" in out
    for token in demo.TOKENS:
        assert token in out
