"""Explain one pre-LN attention block with masklrp's C rule kernels.

Until the whole-model engine lands, this is the demo: it composes the kernels of
``masklrp.kernels`` by hand into LayerNorm -> multi-head self-attention ->
output projection -> residual, reads a logit off the first token, and sends
AttnLRP relevance back to the input tokens. Every backward step below is one
row of DESIGN.md §2. The weights are random (seeded), so the point is the
mechanics and the conservation check, not the meaning of the scores.

    python examples/attention_block_lrp.py
"""
import numpy as np

from masklrp import kernels as k

TOKENS = ["[CLS]", "the", "movie", "was", "not", "bad", "at", "all", "."]
WIDTH, HEADS = 32, 4


def random_block(rng, width):
    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    return {
        "ln_w": (1 + 0.1 * rng.standard_normal(width)).astype(np.float32),
        "ln_b": (0.1 * rng.standard_normal(width)).astype(np.float32),
        **{name: mat(width, width) for name in ("wq", "wk", "wv", "wo")},
        "readout": mat(1, width)[0],
    }


def split_heads(x, heads):  # (T, C) -> (H, T, D)
    t, c = x.shape
    return np.ascontiguousarray(x.reshape(t, heads, c // heads).transpose(1, 0, 2))


def merge_heads(x):  # (H, T, D) -> (T, C)
    h, t, d = x.shape
    return np.ascontiguousarray(x.transpose(1, 0, 2).reshape(t, h * d))


def explain(x, p, heads=HEADS):
    """Logit of token 0 and the AttnLRP relevance of every input token."""
    scale = 1.0 / np.sqrt(x.shape[1] // heads)
    # forward, keeping what the backward needs
    ln, mean, rstd = k.layernorm_forward(x, p["ln_w"], p["ln_b"], 1e-5)
    q, kk, v = (split_heads(k.linear_forward(ln, p[w]), heads) for w in ("wq", "wk", "wv"))
    scores = k.matmul_forward(q, kk, transpose_b=True, scale=scale)
    attn = k.softmax_forward(scores)
    context = merge_heads(k.matmul_forward(attn, v))
    y = x + k.linear_forward(context, p["wo"])
    logit = float(y[0] @ p["readout"])

    # backward of the relevance stream, seeded with the readout (g = e_c)
    g_y = np.zeros_like(y)
    g_y[0] = p["readout"]
    g_context = split_heads(k.linear_backward(g_y, p["wo"]), heads)
    g_attn, g_v = k.matmul_backward(g_context, attn, v)  # ½ / ½, AttnLRP Prop. 3.3
    g_scores = k.softmax_backward(g_attn, attn)  # AttnLRP Prop. 3.1
    g_q, g_k = k.matmul_backward(g_scores, q, kk, transpose_b=True, scale=scale)
    g_ln = sum(k.linear_backward(merge_heads(g), p[w]) for g, w in ((g_q, "wq"), (g_k, "wk"), (g_v, "wv")))
    g_x = g_y + k.layernorm_backward(g_ln, x, p["ln_w"], mean, rstd)  # residual + LN identity rule
    return logit, k.relevance(x, g_x).sum(axis=1)


def main():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((len(TOKENS), WIDTH)).astype(np.float32)
    logit, relevance = explain(x, random_block(rng, WIDTH))
    peak = np.abs(relevance).max()
    print(f"logit of token 0: {logit:+.4f}   sum of input relevance: {relevance.sum():+.4f}")
    print("(the gap is what LayerNorm's bias and the softmax absorb; see DESIGN.md §2)\n")
    for token, r in zip(TOKENS, relevance):
        bar = ("+" if r > 0 else "-") * int(round(20 * abs(r) / peak))
        print(f"{token:>6} {r:+.4f} {bar}")


if __name__ == "__main__":
    main()
