"""The whole-model oracle (tests/oracle/models.py) is right: it is the spec for the C engine.

For every tiny model of tests/hf_models.py (seeds 0 and 1, a right-padded batch of 3 with
unequal lengths, T = 12 or 17, longer than Mistral's window of 8):

* the patches leave the forward alone: the oracle's logits equal the *unpatched* HF model's,
  both in float64 under ``float64_only`` (1e-10 relative);
* with ``rule="gradient"`` every tap equals plain autograd through the unpatched HF model;
* CP-LRP conserves relevance on bias-free models, at the inputs and at every layer;
* AttnLRP's attention shares are the known ones (q, k ¼, v ½, A ½ of the true gradient), and a
  one-layer LLaMA worked by hand gives the oracle's relevances for attnlrp and cp;
* the attention taps are HF's ``output_attentions``; Mistral's sliding window is applied;
* a padded row explains exactly like the same sentence alone, and pads get zero relevance.

All comparisons are ``max|actual − expected| ≤ tol · max|expected|`` (:func:`check_close`).
"""
from __future__ import annotations

import contextlib
import copy
import functools

import numpy as np
import pytest
import torch
import transformers

import hf_models
from hf_models import MODELS
from oracle import models as oracle

SEEDS = (0, 1)
LENGTHS = {0: 12, 1: 17}
BATCH = 3
EXACT = 1e-10       # two float64 computations of the same function
CONSERVATION = 1e-8
LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma3_text", "mixtral", "qwen2_moe")
ROPE = LLAMA_FAMILY + ("modernbert", "gpt_neox")
# pre-norm models: HF's last hidden state is after the final norm
PRE_NORM = ("gpt2",) + ROPE
# HF's LLaMA-family code (and ModernBERT's RoPE) casts to float32 inside a float64 model
# (RMSNorm, RoPE, eager softmax); without float64_only its float64 forward is only this close
# to the oracle's.
FLOAT32_ISLANDS = 2e-6

CASES = [pytest.param(name, seed, id=f"{name}-{seed}") for name in MODELS for seed in SEEDS]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny float64 GEMMs: two OpenMP threads on a busy 2-core box stall ~20 ms per op."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def check_close(actual, expected, tol, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    diff = np.abs(actual - expected)
    scale = max(np.abs(expected).max(), 1e-300)
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    assert diff[worst] <= tol * scale, (
        f"{what}: max |diff| {diff[worst]:.3g} at {worst} (actual {actual[worst]:.12g}, "
        f"expected {expected[worst]:.12g}) > {tol:g} * max|expected| {scale:.3g}")


# ----------------------------------------------------------------------------- fixtures

@functools.lru_cache(maxsize=None)
def tiny(name, seed, zero_bias=False):
    return hf_models.build(name, seed, zero_bias)


@functools.lru_cache(maxsize=None)
def batch(name, seed):
    return hf_models.example_inputs(tiny(name, seed), BATCH, LENGTHS[seed], seed)


@functools.lru_cache(maxsize=None)
def explained(name, seed, rule, zero_bias=False):
    x = batch(name, seed)
    return oracle.explain(tiny(name, seed, zero_bias), MODELS[name].task, x["input_ids"],
                          x["attention_mask"], token_type_ids=x.get("token_type_ids"), rule=rule)


def task_output(out, task, mask):
    """The explained output, written independently of the oracle's (see its docstring)."""
    if task == "sequence-classification":
        return out.logits
    if task == "question-answering":
        return torch.stack((out.start_logits, out.end_logits), dim=-1)
    if task == "causal-lm":
        last = [int(torch.nonzero(row).max()) for row in mask]
        return torch.stack([out.logits[b, t] for b, t in enumerate(last)])
    m = mask[..., None].double()
    return (out.last_hidden_state * m).sum(1) / m.sum(1)


@functools.lru_cache(maxsize=None)
def hf_reference(name, seed, float64_context=True):
    """The unpatched HF model in float64: output, its taps, and autograd from the oracle's seed.

    The word-embedding module's output is replaced by a leaf (what ``inputs_embeds`` would be;
    passing ``inputs_embeds`` itself would lose RoBERTa's padding-aware positions and GPT-2's
    last-non-pad pooling, both computed from ``input_ids``).
    """
    model = copy.deepcopy(tiny(name, seed)).double().requires_grad_(False)
    x = batch(name, seed)
    leaf = {}

    def make_leaf(module, args, output):
        leaf["word"] = output.detach().clone().requires_grad_(True)
        return leaf["word"]

    model.get_input_embeddings().register_forward_hook(make_leaf)
    kwargs = dict(input_ids=x["input_ids"], attention_mask=x["attention_mask"],
                  output_attentions=True, output_hidden_states=True)
    if "token_type_ids" in x:
        kwargs["token_type_ids"] = x["token_type_ids"]
    if model.config.model_type in ("gpt2", "gpt_neox") + LLAMA_FAMILY:
        kwargs["use_cache"] = False
    context = oracle.float64_only() if float64_context else contextlib.nullcontext()
    with context:
        out = model(**kwargs)
        y = task_output(out, MODELS[name].task, x["attention_mask"])
    if not float64_context:
        return {"logits": y.detach().numpy()}
    seed_tensor = oracle.default_seed(y.detach(), MODELS[name].task, x["attention_mask"])
    taps = [leaf["word"], *out.attentions, *out.hidden_states]
    grads = torch.autograd.grad(y, taps, seed_tensor, allow_unused=True, materialize_grads=True)
    L = len(out.attentions)
    return {
        "logits": y.detach().numpy(),
        "embed_grad": grads[0].numpy(),
        "attentions": np.stack([a.detach().numpy() for a in out.attentions], axis=1),
        "attention_grad": np.stack([g.numpy() for g in grads[1:1 + L]], axis=1),
        "hidden": np.stack([h.detach().numpy() for h in out.hidden_states], axis=1),
        "hidden_grad": np.stack([g.numpy() for g in grads[1 + L:]], axis=1),
    }


def shared_hidden_layers(name):
    """Hidden states where HF's ``output_hidden_states`` uses our convention.

    Post-norm encoders: all L+1. Pre-norm models (GPT-2, LLaMA family, ModernBERT): HF's last
    entry is *after* the final norm, ours is the last layer's output (before it), so only
    l < L are comparable.
    """
    L = tiny(name, 0).config.num_hidden_layers
    pre_norm = tiny(name, 0).config.model_type in PRE_NORM
    return list(range(L if pre_norm else L + 1))


# ----------------------------------------------------------------------------- forward

@pytest.mark.parametrize("name,seed", CASES)
def test_patched_forward_equals_unpatched_hf(name, seed):
    want = hf_reference(name, seed)["logits"]
    for rule in oracle.RULES:
        check_close(explained(name, seed, rule)["logits"], want, EXACT, f"logits, rule={rule}")
    # Without float64_only the HF float64 forward keeps its float32 casts (LLaMA family only).
    plain = hf_reference(name, seed, float64_context=False)["logits"]
    islands = tiny(name, seed).config.model_type in ROPE + ("deberta-v2",)  # its float32 scale
    check_close(plain, want, FLOAT32_ISLANDS if islands else EXACT, "HF float64, no context")


# ----------------------------------------------------------------------------- gradient rule

@pytest.mark.parametrize("name,seed", CASES)
def test_gradient_rule_is_plain_autograd(name, seed):
    got, want = explained(name, seed, "gradient"), hf_reference(name, seed)
    check_close(got["embed_grad"], want["embed_grad"], EXACT, "g at word embeddings")
    check_close(got["attention_grad"], want["attention_grad"], EXACT, "g at attention probs")
    layers = shared_hidden_layers(name)
    check_close(got["hidden_grad"][:, layers], want["hidden_grad"][:, layers], EXACT,
                "g at hidden states")


# ----------------------------------------------------------------------------- CP-LRP

@pytest.mark.parametrize("name,seed", CASES)
def test_cp_lrp_conserves_on_bias_free_models(name, seed):
    """Σ_t R_t(all embeddings) = Σ seed ⊙ output, and so does every hidden state (DESIGN §2).

    Every CP-LRP step conserves once biases are zero: linears and residuals (true gradient),
    LayerNorm / RMSNorm with σ held constant (Σ x g_x = Σ y g_y when β = 0), the identity rule
    of GELU / SiLU / tanh (the pooler too), ReLU, A V with A constant and the gated MLP with
    its gate constant (both linear in the other operand), and linear pooling.
    """
    got = explained(name, seed, "cp", zero_bias=True)
    mask = batch(name, seed)["attention_mask"]
    seed_tensor = oracle.default_seed(torch.from_numpy(got["logits"]), MODELS[name].task, mask)
    want = (seed_tensor.numpy() * got["logits"]).reshape(BATCH, -1).sum(1)
    total = got["tokens"].copy()
    for part in ("positions", "types"):
        if got[part] is not None:
            total += got[part]
    scale = max(1.0, np.abs(want).max())
    assert np.abs(total.sum(1) - want).max() <= CONSERVATION * scale, (
        f"{name}: Σ input relevance {total.sum(1)} vs seed·output {want}")
    layers = got["hidden_relevance"].sum(axis=(2, 3))  # (B, L+1)
    for layer in range(layers.shape[1]):
        assert np.abs(layers[:, layer] - want).max() <= CONSERVATION * scale, (
            f"{name}: Σ relevance of hidden state {layer} {layers[:, layer]} vs {want}")
    assert not np.any(got["attention_grad"]), "cp: A is a constant, it gets no gradient"


# ----------------------------------------------------------------------------- AttnLRP

def plain_attention(q, k, v, mask, scaling):
    """HF's eager attention, as in modeling_llama: repeat_kv by expand + reshape."""
    B, KV, S, D = k.shape
    rep = q.shape[1] // KV
    k = k[:, :, None].expand(B, KV, rep, S, D).reshape(B, KV * rep, S, D)
    v = v[:, :, None].expand(B, KV, rep, S, D).reshape(B, KV * rep, S, D)
    probs = torch.softmax(q @ k.transpose(-1, -2) * scaling + mask, dim=-1)
    return (probs @ v).transpose(1, 2), probs


SHARES = {  # (q, k, v, A): the share of the true gradient each receives (DESIGN §2)
    "attnlrp": (0.25, 0.25, 0.5, 0.5),
    "cp": (0.0, 0.0, 1.0, 0.0),
    "gradient": (1.0, 1.0, 1.0, 1.0),
}


@pytest.mark.parametrize("rule", sorted(SHARES))
def test_attention_rule_gives_known_shares(rule):
    """AttnLRP Prop. 3.3 composed over Q Kᵀ and A V: q, k get ¼, v and A ½ of the true gradient."""
    g = torch.Generator().manual_seed(7)
    B, H, KV, T, D = 2, 4, 2, 6, 5
    q, k, v = (torch.randn(B, n, T, D, generator=g, dtype=torch.float64, requires_grad=True)
               for n in (H, KV, KV))
    mask = torch.zeros(B, 1, T, T, dtype=torch.float64)
    mask[:, :, torch.triu(torch.ones(T, T, dtype=torch.bool), 1)] = torch.finfo(torch.float64).min
    mask[1, :, :, T - 2:] = torch.finfo(torch.float64).min  # row 1: two pad keys
    g_out = torch.randn(B, T, H, D, generator=g, dtype=torch.float64)

    out, probs = oracle.attention_rule(q, k, v, mask, D ** -0.5, rule)
    want_out, want_probs = plain_attention(q, k, v, mask, D ** -0.5)
    check_close(out.detach(), want_out.detach(), EXACT, "attention output")
    check_close(probs.detach(), want_probs.detach(), EXACT, "attention probabilities")
    got = torch.autograd.grad(out, (q, k, v, probs), g_out, allow_unused=True,
                              materialize_grads=True)
    true = torch.autograd.grad(want_out, (q, k, v, want_probs), g_out)
    for name, share, a, b in zip("qkvA", SHARES[rule], got, true):
        check_close(a, share * b, EXACT, f"{rule}: g_{name} = {share} · true")


def _one_layer_llama(seed):
    config = transformers.LlamaConfig(
        vocab_size=11, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
        rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(config).eval()
    hf_models.randomize(model, seed)
    return model


def _llama_by_hand(model, ids, rule):
    """One LLaMA layer, forward and the ``rule``'s backward written out (no autograd).

    Returns the next-token logit row, embedding relevance per token, A, and R_A. Only the
    constants (weights, RoPE inverse frequencies) come from the model.
    """
    a_share, v_share = {"attnlrp": (0.5, 0.5), "cp": (0.0, 1.0)}[rule]
    gate_share, up_share = {"attnlrp": (0.5, 0.5), "cp": (0.0, 1.0)}[rule]
    p = {k: v.detach().double() for k, v in model.state_dict().items()}
    pre = "model.layers.0."
    H, KV = model.config.num_attention_heads, model.config.num_key_value_heads
    C, eps = model.config.hidden_size, model.config.rms_norm_eps
    D, rep, T = C // H, H // KV, len(ids)

    def rms(x, w):
        r = 1 / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
        return w * x * r, r

    inv_freq = model.model.rotary_emb.inv_freq.double()
    angles = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None]
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    half = D // 2

    def rope(x):  # x (n, T, D)
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin

    def rope_transpose(g):  # the transpose of rope: (x ↦ rot(x)) has transpose u ↦ [u2, −u1]
        u = g * sin
        return g * cos + torch.cat((u[..., half:], -u[..., :half]), -1)

    def heads(z, n):
        return z.reshape(T, n, D).transpose(0, 1)

    h0 = p["model.embed_tokens.weight"][ids]
    x1, r1 = rms(h0, p[pre + "input_layernorm.weight"])
    q = rope(heads(x1 @ p[pre + "self_attn.q_proj.weight"].T, H))
    k = rope(heads(x1 @ p[pre + "self_attn.k_proj.weight"].T, KV))
    v = heads(x1 @ p[pre + "self_attn.v_proj.weight"].T, KV)
    k_rep, v_rep = k[torch.arange(H) // rep], v[torch.arange(H) // rep]
    scores = q @ k_rep.transpose(1, 2) / np.sqrt(D)
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), -np.inf)
    A = torch.softmax(scores, -1)
    ctx = (A @ v_rep).transpose(0, 1).reshape(T, C)
    h1 = h0 + ctx @ p[pre + "self_attn.o_proj.weight"].T
    x2, r2 = rms(h1, p[pre + "post_attention_layernorm.weight"])
    gate = x2 @ p[pre + "mlp.gate_proj.weight"].T
    up = x2 @ p[pre + "mlp.up_proj.weight"].T
    act = gate * torch.sigmoid(gate)
    h2 = h1 + (act * up) @ p[pre + "mlp.down_proj.weight"].T
    xf, rf = rms(h2, p["model.norm.weight"])
    logits = xf[-1] @ p["lm_head.weight"].T

    g_xf = torch.zeros_like(xf)
    g_xf[-1] = p["lm_head.weight"][logits.argmax()]
    g_h2 = p["model.norm.weight"] * rf * g_xf                      # RMSNorm, r constant
    g_prod = g_h2 @ p[pre + "mlp.down_proj.weight"]
    g_gate = gate_share * g_prod * up * torch.sigmoid(gate)       # product, then SiLU(x)/x
    g_up = up_share * g_prod * act
    g_x2 = g_gate @ p[pre + "mlp.gate_proj.weight"] + g_up @ p[pre + "mlp.up_proj.weight"]
    g_h1 = g_h2 + p[pre + "post_attention_layernorm.weight"] * r2 * g_x2
    g_o = heads(g_h1 @ p[pre + "self_attn.o_proj.weight"], H)
    g_A = a_share * g_o @ v_rep.transpose(1, 2)
    g_v_rep = v_share * A.transpose(1, 2) @ g_o
    g_s = A * (g_A - (A * g_A).sum(-1, keepdim=True))             # softmax, true gradient
    g_q = a_share * g_s @ k_rep / np.sqrt(D)
    g_k_rep = a_share * g_s.transpose(1, 2) @ q / np.sqrt(D)
    g_k = g_k_rep.reshape(KV, rep, T, D).sum(1)
    g_v = g_v_rep.reshape(KV, rep, T, D).sum(1)

    def flat(g):
        return g.transpose(0, 1).reshape(T, -1)

    g_x1 = (flat(rope_transpose(g_q)) @ p[pre + "self_attn.q_proj.weight"]
            + flat(rope_transpose(g_k)) @ p[pre + "self_attn.k_proj.weight"]
            + flat(g_v) @ p[pre + "self_attn.v_proj.weight"])
    g_h0 = g_h1 + p[pre + "input_layernorm.weight"] * r1 * g_x1
    return logits, (h0 * g_h0).sum(-1), A, A * g_A


@pytest.mark.parametrize("rule", ["attnlrp", "cp"])
@pytest.mark.parametrize("seed", SEEDS)
def test_one_layer_llama_worked_by_hand(rule, seed):
    model = _one_layer_llama(seed)
    ids = torch.tensor([3, 7, 4, 9, 5, 10, 6])
    got = oracle.explain(model, "causal-lm", ids[None], rule=rule)
    logits, tokens, A, R_A = _llama_by_hand(model, ids, rule)
    check_close(got["logits"][0], logits, EXACT, "logits")
    check_close(got["tokens"][0], tokens, EXACT, f"{rule} token relevance")
    check_close(got["attentions"][0, 0], A, EXACT, "attention probabilities")
    check_close(got["attention_relevance"][0, 0], R_A, EXACT, f"{rule} relevance of A")


@pytest.mark.parametrize("name,seed", CASES)
def test_taps_equal_hf_outputs(name, seed):
    got, want = explained(name, seed, "attnlrp"), hf_reference(name, seed)
    check_close(got["attentions"], want["attentions"], EXACT, "A vs output_attentions")
    layers = shared_hidden_layers(name)
    check_close(got["hidden"][:, layers], want["hidden"][:, layers], EXACT,
                "hidden vs output_hidden_states")
    check_close(got["attention_relevance"], got["attentions"] * got["attention_grad"], EXACT,
                "R_A = A ⊙ g_A")
    check_close(got["hidden_relevance"], got["hidden"] * got["hidden_grad"], EXACT,
                "R_h = h ⊙ g_h")
    config = tiny(name, seed).config
    table = config.model_type not in ROPE and getattr(config, "position_biased_input", True)
    assert (got["positions"] is None) != table, "positions: None exactly without an absolute table"
    relative = bool(getattr(config, "relative_attention", False))
    assert (got["relative"] is None) != relative, "relative: DeBERTa's relative embeddings only"


@pytest.mark.parametrize("seed", SEEDS)
def test_mistral_sliding_window_is_applied(seed):
    """HF eager gets the window from the mask: key k is visible to query q iff 0 ≤ q − k < 8."""
    A = explained("mistral-lm", seed, "attnlrp")["attentions"]
    mask = batch("mistral-lm", seed)["attention_mask"].numpy().astype(bool)
    T = A.shape[-1]
    offset = np.arange(T)[:, None] - np.arange(T)[None, :]
    visible = (offset >= 0) & (offset < 8)
    for b in range(BATCH):
        real = np.ix_(mask[b], mask[b])
        assert not np.any(A[b][..., ~visible]), f"row {b}: attention outside the window"
        assert np.all(A[b][:, :, real[0], real[1]][..., visible[real]] > 0), (
            f"row {b}: a real key inside the window gets no attention")
    # without a window (LLaMA), keys 8 or more back are attended
    llama = explained("llama-lm", seed, "attnlrp")["attentions"]
    assert np.any(llama[0][..., offset >= 8] > 0)


@pytest.mark.parametrize("seed", SEEDS)
def test_modernbert_two_sided_window_is_applied(seed):
    """ModernBERT's sliding layer (layer 1, local_attention 8): key k is visible to query q iff
    |q − k| ≤ 4; its full layer (layer 0) attends further."""
    A = explained("modernbert-cls", seed, "attnlrp")["attentions"]
    mask = batch("modernbert-cls", seed)["attention_mask"].numpy().astype(bool)
    T = A.shape[-1]
    visible = np.abs(np.arange(T)[:, None] - np.arange(T)[None, :]) <= 4
    for b in range(BATCH):
        real = np.ix_(mask[b], mask[b])
        assert not np.any(A[b, 1][:, real[0], real[1]][..., ~visible[real]]), f"row {b}: outside"
        assert np.all(A[b, 1][:, real[0], real[1]][..., visible[real]] > 0), f"row {b}: inside"
    assert np.any(A[0, 0][..., ~visible] > 0)


# ----------------------------------------------------------------------------- padding

@pytest.mark.parametrize("name,seed", CASES)
def test_padded_rows_equal_single_sentences(name, seed):
    task = MODELS[name].task
    x = batch(name, seed)
    got = explained(name, seed, "attnlrp")
    for b in range(BATCH):
        n = int(x["attention_mask"][b].sum())
        alone = oracle.explain(tiny(name, seed), task, x["input_ids"][b:b + 1, :n],
                               token_type_ids=None if "token_type_ids" not in x
                               else x["token_type_ids"][b:b + 1, :n])
        logits = got["logits"][b, :n] if task == "question-answering" else got["logits"][b]
        check_close(logits, alone["logits"][0], EXACT, f"row {b} logits")
        for key in ("tokens", "positions", "types"):
            if alone[key] is not None:
                check_close(got[key][b, :n], alone[key][0], EXACT, f"row {b} {key}")
                assert not np.any(got[key][b, n:]), f"row {b}: pad positions have {key} relevance"
        check_close(got["attention_relevance"][b, :, :, :n, :n], alone["attention_relevance"][0],
                    EXACT, f"row {b} R_A")
        check_close(got["hidden_relevance"][b, :, :n], alone["hidden_relevance"][0], EXACT,
                    f"row {b} hidden relevance")


# ----------------------------------------------------------------------------- API

def test_explain_leaves_the_model_alone():
    model = tiny("llama-lm", 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = batch("llama-lm", 0)
    oracle.explain(model, "causal-lm", x["input_ids"], x["attention_mask"])
    assert model.config._attn_implementation == "eager"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert not any(hasattr(m, "_masklrp_oracle") for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_explain_refuses_bad_arguments():
    model = tiny("bert-cls", 0)
    ids = batch("bert-cls", 0)["input_ids"]
    with pytest.raises(ValueError, match="rule"):
        oracle.explain(model, "sequence-classification", ids, rule="lrp")
    with pytest.raises(ValueError, match="task"):
        oracle.explain(model, "classification", ids)
    with pytest.raises(ValueError, match="seed"):
        oracle.explain(model, "sequence-classification", ids, seed=np.ones((BATCH, 2)))
    with pytest.raises(ValueError, match="token-type"):
        oracle.explain(tiny("gpt2-lm", 0), "causal-lm", ids, token_type_ids=torch.zeros_like(ids))
