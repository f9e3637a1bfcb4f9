"""Whole-model AttnLRP / CP-LRP / gradient oracle: a Hugging Face torch model, patched LXT-style.

:func:`explain` runs the HF model's own forward in float64 with the rules of DESIGN.md §2
patched into its pieces, so that torch autograd computes the modified gradient ``g`` of every
tensor; relevance is ``R = x ⊙ g``. It is the reference the C engine is tested against.

What is patched (everything else — linears, Conv1D, residuals, the embedding sum, RoPE, the
1/√d scale, GQA head repetition, pooling, dropout — is the model's own code, true gradient):

=================================  =====================  =================================
piece                              how                    rule (DESIGN.md §2 row)
=================================  =====================  =================================
attention (every architecture)     an ``AttentionInterface``  softmax true gradient (AttnLRP
                                   function "masklrp_oracle",  Prop. 3.1); ``Q Kᵀ`` and ``A V``:
                                   HF's eager additive mask   uniform ½/½ (Prop. 3.3), cp 0/1
nn.LayerNorm                       instance ``forward``   σ held constant, mean keeps its grad
*RMSNorm (LLaMA family; Qwen3's    instance ``forward``   rsqrt factor held constant
per-head q_norm / k_norm too)
GELU / gelu_new / SiLU / tanh      instance ``forward``   identity rule ``x · (f(x)/x)``
modules; RoBERTa head's torch.tanh (head ``forward``)     detached, ``f'(0)`` at ``x = 0``
and DeBERTa pooler's ACT2FN
DeBERTa's disentangled attention   instance ``forward``   q·kᵀ, q·pkᵀ (c2p), k·pqᵀ (p2c):
(MPNet's attention likewise)                              each a product under the rule;
                                                          bias, mask: constants
DeBERTa's relative embeddings      ``get_rel_embedding``  a per-sequence leaf (``relative``)
gated MLP ``act(gate) ⊙ up``       instance ``forward``   uniform ½/½; cp: gate detached
(Phi-3's fused ``gate_up_proj``,
ModernBERT's ``Wi`` too)
mixture of experts (Mixtral,       instance ``forward``   routing weight ⊙ expert output and
Qwen2-MoE's sparse block)                                 sigmoid gate ⊙ shared expert: the
                                                          gate's rule; router softmax, top-k
                                                          renormalisation, sigmoid: true
                                                          gradient; top-k indices constant
=================================  =====================  =================================

``head_mask`` (Mask-LRP, DESIGN.md §3.2): an (L, H) array; :class:`HeadMask` multiplies the g
arriving at each head's output (before ``A V``) by its entry, renormalised per sequence and
layer (paper Eq. 9) unless ``renormalize=False``. ``mask_semantics="strict"`` taps each
layer after its own mask; ``"reference"`` (the default) taps the relevance arriving at its
heads, by definition: layer l's taps come from a run whose mask keeps every head of l (the
layers above, which the sweep reaches first, are unchanged), the rest from the masked run.

``rule``: ``"attnlrp"`` (the table), ``"cp"`` (CP-LRP: norms and activations as AttnLRP, but
``A`` and the gate branch are constants, so q, k and the gate receive nothing and v, up receive
the full gradient), ``"gradient"`` (every patch reduces to the true Jacobian) or ``None``
(forward only). The rules themselves live in :mod:`oracle.rules` (the kernel-level oracle);
this module only decides where each one applies.

Float64, everywhere: the caller's model is deep-copied and ``.double()``-ed (never mutated),
and the forward runs under :func:`float64_only`, which turns HF's explicit float32 casts
(LLaMA-family RMSNorm, RoPE cos/sin and eager softmax upcast to float32, harmless in bf16 but
an accuracy floor in float64) into no-ops. The tests compare against the *unpatched* HF model
run under the same context.

Outputs ("task", as in :mod:`masklrp.spec`), ``B`` batch, ``T`` length, ``C`` hidden size:

* ``"sequence-classification"``: ``out.logits`` (B, NO)
* ``"question-answering"``: ``stack(start_logits, end_logits, -1)`` (B, T, 2)
* ``"causal-lm"``: ``out.logits[b, last_b]`` (B, V), ``last_b`` the last position whose
  attention mask is 1
* ``"base"``: the mean of ``last_hidden_state`` over real tokens (B, C)

The backward starts from ``g = seed`` (same shape as the output; DESIGN.md §2), by default a
one-hot at each row's argmax; for QA one one-hot per channel, at the argmax over the row's real
positions of the start logits and of the end logits.
"""
from __future__ import annotations

import copy
import functools
import inspect
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from transformers import activations as hf_activations
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.modeling_utils import AttentionInterface

from . import rules

RULES = ("attnlrp", "cp", "gradient", None)
MASK_SEMANTICS = ("reference", "strict")
# the outputs mask_semantics changes: a layer's own taps
LAYER_TAPS = ("head_relevance", "head_magnitude", "attention_grad", "attention_relevance")
TASKS = ("base", "sequence-classification", "question-answering", "causal-lm")
ATTENTION = "masklrp_oracle"

# oracle rule -> rule name of the two-operand and single-operand ops in oracle.rules
_PRODUCT = {"attnlrp": "uniform", "cp": "cp", "gradient": "gradient", None: "gradient"}
_SINGLE = {"attnlrp": "lrp", "cp": "lrp", "gradient": "gradient", None: "gradient"}

# Element-wise activation modules -> oracle.rules kind. ReLU's identity rule equals its
# gradient (f(x)/x is the step), so it is listed only to be recognised, not patched.
_ACTIVATION_KINDS = {
    hf_activations.GELUActivation: "gelu",
    hf_activations.NewGELUActivation: "gelu_tanh",
    hf_activations.GELUTanh: "gelu_tanh",
    hf_activations.SiLUActivation: "silu",
    nn.SiLU: "silu",
    nn.Tanh: "tanh",
    nn.ReLU: "relu",
}
_DECODERS = ("gpt2", "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma3_text", "gpt_neox",
             "mixtral", "qwen2_moe")  # use_cache


# ----------------------------------------------------------------------------- float64

class float64_only(TorchFunctionMode):
    """Context manager: inside it, a torch call asking for float32 gets float64.

    HF's LLaMA-family code casts to float32 on purpose (``RMSNorm`` ``.to(torch.float32)``,
    eager ``softmax(..., dtype=torch.float32)``, RoPE ``.float()``); for a float64 reference
    those casts only lose precision. ``Tensor.float()`` becomes ``Tensor.double()`` and any
    ``torch.float32`` argument becomes ``torch.float64``; nothing else changes.
    """

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        if func is torch.Tensor.float:
            func = torch.Tensor.double
        args = tuple(torch.float64 if a is torch.float32 else a for a in args)
        kwargs = {k: torch.float64 if v is torch.float32 else v for k, v in (kwargs or {}).items()}
        return func(*args, **kwargs)


# ----------------------------------------------------------------------------- rules

def attention_rule(query, key, value, attention_mask, scaling, rule):
    """(out (B,T,H,D), A (B,H,T,S)) of softmax(q kᵀ·scaling + mask) v with ``rule``'s products.

    query (B,H,T,D); key, value (B,KV,S,D), repeated to H heads (GQA: plain autograd sums the
    repeats). DESIGN.md §2: softmax keeps its true gradient (AttnLRP Prop. 3.1); ``Q Kᵀ`` and
    ``A V`` use the uniform rule (Prop. 3.3: ½ of the true gradient to each operand, so q and
    k get ¼ overall) for attnlrp; for cp ``A`` is a constant of ``A V``, so ``A``, q and k get
    nothing and v the full gradient. ``attention_mask`` is HF's additive eager mask (0 or the
    dtype's min, never -inf: a fully masked row is uniform, as in HF, not NaN) or a boolean
    "may attend" mask, converted the same way.
    """
    repeats = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(repeats, dim=1)
    value = value.repeat_interleave(repeats, dim=1)
    product = _PRODUCT[rule]
    scores = rules.matmul(query, key, transpose_b=True, scale=scaling, rule=product)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            attention_mask = torch.zeros((), dtype=scores.dtype).masked_fill(
                ~attention_mask, torch.finfo(scores.dtype).min)
        scores = scores + attention_mask
    probs = rules.softmax(scores)
    out = rules.matmul(probs, value, rule=product)
    return out.transpose(1, 2).contiguous(), probs


class HeadMask(torch.autograd.Function):
    """Mask-LRP at the heads (DESIGN.md §3.2): identity forward on ctx (B,T,H,D), the heads'
    outputs before the output projection; the backward multiplies head m's g by ``mask[m]``.

    With ``renormalize`` the kept heads are also scaled, per sequence, by
    Σ_m R_m / Σ_m M_m R_m, R_m = Σ_{t,d} ctx ⊙ g the relevance head m received before masking
    (paper Eq. 9), so the branch hands on what it received; a kept sum of 0 leaves them as
    they are (and with every head masked the branch passes nothing).
    """

    @staticmethod
    def forward(ctx, x, mask, renormalize):
        ctx.save_for_backward(x, mask)
        ctx.renormalize = renormalize
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        x, mask = ctx.saved_tensors
        kept = g * mask[:, None]
        if ctx.renormalize:
            total = (x * g).sum((1, 2, 3))
            part = (x * kept).sum((1, 2, 3))
            scale = torch.where(part != 0, total / torch.where(part != 0, part, 1.0), 1.0)
            kept = kept * scale[:, None, None, None]
        return kept, None, None


def _attention_interface(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                         **kwargs):
    """The "masklrp_oracle" attention: :func:`attention_rule`, recording A and each head's
    output for the taps, with the run's head mask (if any) applied to the heads' g."""
    taps = getattr(module, "_masklrp_oracle", None)
    if taps is None:
        raise RuntimeError("attention 'masklrp_oracle' runs only inside oracle.models.explain")
    if module.training and dropout:
        raise RuntimeError("the oracle needs eval mode (attention dropout is on)")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    out, probs = attention_rule(query, key, value, attention_mask, scaling, taps.rule)
    layer = len(taps.attentions)  # layers attend in order (ALBERT's one module, many times)
    taps.attentions[layer] = probs
    taps.contexts[layer] = out
    if taps.head_mask is not None:
        out = HeadMask.apply(out, taps.head_mask[layer], taps.renormalize)
    return out, probs


AttentionInterface.register(ATTENTION, _attention_interface)
AttentionMaskInterface.register(ATTENTION, eager_mask)  # HF's additive float mask


def _mpnet_attention_forward(module, hidden_states, attention_mask=None, position_bias=None,
                             output_attentions=False, **kwargs):
    """MPNetSelfAttention, which calls no attention interface, through the oracle's attention:
    its relative position bias is a constant added to the scores, like the padding mask."""
    shape = (*hidden_states.shape[:-1], -1, module.attention_head_size)
    q, k, v = (proj(hidden_states).view(shape).transpose(1, 2) for proj in (module.q, module.k, module.v))
    constant = position_bias if attention_mask is None else position_bias + attention_mask
    out, probs = _attention_interface(module, q, k, v, constant, scaling=module.attention_head_size ** -0.5)
    o = module.o(out.reshape(*hidden_states.shape[:-1], -1))
    return (o, probs) if output_attentions else (o,)


def _deberta_attention_forward(module, hidden_states, attention_mask, output_attentions=False,
                               query_states=None, relative_pos=None, rel_embeddings=None):
    """DisentangledSelfAttention (DeBERTa-v2), which calls no attention interface, through the
    oracle's attention. Its scores add to q·kᵀ the c2p term q·pkᵀ and the p2c term k·pqᵀ,
    gathered at each (query, key)'s relative row: both products of two activations under the
    run's rule (:func:`oracle.rules.matmul`), scaled like q·kᵀ, and added to the scores as
    the mask is (an add: true gradient to both); the boolean mask is the constant."""
    if query_states is not None:
        raise NotImplementedError("DeBERTa with query_states (EMD) is not supported")
    taps = module._masklrp_oracle
    product = _PRODUCT[taps.rule]
    H, D = module.num_attention_heads, module.attention_head_size

    def heads(x):
        return x.view(*x.shape[:-1], H, D).transpose(1, 2)  # (B, H, rows, D)

    q, k, v = (heads(proj(hidden_states)) for proj in (module.query_proj, module.key_proj, module.value_proj))
    terms = module.pos_att_type if module.relative_attention else []
    scale = (D * (1 + len(terms))) ** -0.5
    mask = attention_mask.bool()
    constant = torch.zeros((), dtype=q.dtype).masked_fill(~mask, torch.finfo(q.dtype).min)
    span = module.pos_ebd_size
    rows = torch.clamp(relative_pos.view(relative_pos.shape[-2:]) + span, 0, 2 * span - 1)  # (T, T)
    index = rows.expand(*q.shape[:2], *rows.shape)
    if "c2p" in terms:
        pk = heads((module.key_proj if module.share_att_key else module.pos_key_proj)(rel_embeddings))
        c2p = rules.matmul(q, pk, transpose_b=True, scale=scale, rule=product)
        constant = constant + torch.gather(c2p, -1, index)
    if "p2c" in terms:  # HF gathers at -relative_pos + span for (key, query), then transposes:
        # the same row, since DeBERTa's buckets are odd in the offset
        pq = heads((module.query_proj if module.share_att_key else module.pos_query_proj)(rel_embeddings))
        p2c = rules.matmul(k, pq, transpose_b=True, scale=scale, rule=product)
        back = torch.clamp(-relative_pos.view(relative_pos.shape[-2:]) + span, 0, 2 * span - 1)
        constant = constant + torch.gather(p2c, -1, back.expand_as(index)).transpose(-1, -2)
    out, probs = _attention_interface(module, q, k, v, constant, scaling=scale)
    out = out.reshape(*hidden_states.shape[:-1], -1)
    return (out, probs) if output_attentions else (out, None)


def _context_pooler_forward(module, rule, hidden_states):
    """DeBERTa's ContextPooler: [CLS] → dense → ACT2FN[pooler_hidden_act], an activation made
    afresh at each call (no submodule to patch), here with the identity rule."""
    kind = _ACTIVATION_KINDS.get(type(hf_activations.ACT2FN[module.config.pooler_hidden_act]))
    if kind is None:
        raise NotImplementedError(f"no AttnLRP rule for pooler_hidden_act {module.config.pooler_hidden_act!r}")
    return rules.activation(module.dense(hidden_states[:, 0]), kind, rule=_SINGLE[rule])


def _deberta_relative_embeddings(encoder, taps):
    """DebertaV2Encoder.get_rel_embedding with the table as a per-sequence leaf (B, 2S, C) whose
    gradient gives each row's relevance (``relative``), then its LayerNorm (patched as all)."""
    leaf = encoder.rel_embeddings.weight.detach().expand(taps.batch, -1, -1).clone().requires_grad_(True)
    taps.embeds["relative"] = leaf
    return encoder.LayerNorm(leaf) if "layer_norm" in encoder.norm_rel_ebd else leaf


def _layernorm_forward(module: nn.LayerNorm, rule, x):
    """nn.LayerNorm with σ held constant for attnlrp / cp (DESIGN.md §2, LayerNorm row)."""
    y, _, _ = rules.layernorm(x, module.weight, module.bias, module.eps, rule=_SINGLE[rule])
    return y


def _rmsnorm_forward(module, rule, x):
    """HF *RMSNorm with its rsqrt factor held constant (DESIGN.md §2, RMSNorm row)."""
    y, _ = rules.rmsnorm(x, module.weight, module.variance_epsilon, rule=_SINGLE[rule])
    return y


def _gemma_rmsnorm_forward(module, rule, x):
    """Gemma3RMSNorm: the same rule, the scale being 1 + weight."""
    y, _ = rules.rmsnorm(x, 1.0 + module.weight, module.eps, rule=_SINGLE[rule])
    return y


def _softcapped_head_forward(module, cap, rule, x):
    """The LM head followed by Gemma's final soft-capping c·tanh(z/c): identity rule, as for
    tanh (DESIGN.md §2), so relevance passes it unchanged (the model's own capping is off)."""
    return rules.softcap(module.__class__.forward(module, x), cap, rule=_SINGLE[rule])


def _activation_forward(kind, rule, x):
    """Identity rule y = x · (f(x)/x).detach(), f'(0) at 0 (DESIGN.md §2, GELU… row)."""
    return rules.activation(x, kind, rule=_SINGLE[rule])


def _gated_mlp_forward(module, rule, x):
    """down(act(gate(x)) ⊙ up(x)) with the product rule (DESIGN.md §2, element-wise product row).

    attnlrp: ½ of the true gradient to each factor; cp: the gate branch is a constant and
    up gets the full gradient; gradient: plain. ``act_fn`` is itself patched (identity rule).
    """
    gate = module.act_fn(module.gate_proj(x))
    return module.down_proj(rules.product(gate, module.up_proj(x), rule=_PRODUCT[rule]))


def _moe_forward(module, rule, hidden_states):
    """Mixtral's / Qwen2-MoE's sparse block: router softmax, top-k, experts, shared expert.

    The routing weights are computed as HF computes them (softmax of the router logits, the
    top k, renormalised to sum to 1 unless ``norm_topk_prob`` is false) and keep their true
    gradient (AttnLRP Prop. 3.1); the selection (the top-k indices) is a constant. A weight
    times its expert's output, and sigmoid(shared_expert_gate) times the shared expert's, are
    products of two activations: uniform ½/½ (attnlrp), the weight a constant (cp), plain
    (gradient). Each expert is a gated MLP under the same product rule, act_fn patched.
    """
    product = _PRODUCT[rule]
    x = hidden_states.reshape(-1, hidden_states.shape[-1])
    router, experts = module.gate, module.experts
    probs = rules.softmax(nn.functional.linear(x, router.weight))
    weights, index = torch.topk(probs, router.top_k, dim=-1)
    if getattr(router, "norm_topk_prob", True):  # Mixtral's router always renormalises
        weights = weights / weights.sum(dim=-1, keepdim=True)
    out = torch.zeros_like(x)
    for e in range(experts.num_experts):
        rows, k = torch.where(index == e)
        if len(rows):
            gate, up = nn.functional.linear(x[rows], experts.gate_up_proj[e]).chunk(2, dim=-1)
            y = nn.functional.linear(rules.product(experts.act_fn(gate), up, rule=product),
                                    experts.down_proj[e])
            out = out.index_add(0, rows, rules.product(weights[rows, k, None], y, rule=product))
    if hasattr(module, "shared_expert"):
        gate = torch.sigmoid(module.shared_expert_gate(x))
        out = out + rules.product(gate, module.shared_expert(x), rule=product)
    return out.reshape(hidden_states.shape)


def _phi3_mlp_forward(module, rule, x):
    """Phi3MLP: gate and up from one fused projection, then as :func:`_gated_mlp_forward`."""
    gate, up = module.gate_up_proj(x).chunk(2, dim=-1)
    return module.down_proj(rules.product(module.activation_fn(gate), up, rule=_PRODUCT[rule]))


def _modernbert_mlp_forward(module, rule, x):
    """ModernBertMLP: Wi gives [input | gate], then Wo(act(input) ⊙ gate) with the product rule
    (the GeGLU's activated half is the one CP-LRP detaches, as a SwiGLU's gate)."""
    activated, gate = module.Wi(x).chunk(2, dim=-1)
    return module.Wo(rules.product(module.act(activated), gate, rule=_PRODUCT[rule]))


def _roberta_head_forward(module, rule, features, **kwargs):
    """RobertaClassificationHead (and XLM-R's and MPNet's copies): <s> → dense → tanh (identity rule) → out_proj."""
    x = module.dense(features[:, 0, :])
    return module.out_proj(rules.activation(x, "tanh", rule=_SINGLE[rule]))


# Source lines a patched forward replaces: if transformers changes them, fail loudly.
_EXPECTED_SOURCE = {
    "gated_mlp": "self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))",
    "phi3_mlp": "up_states = up_states * self.activation_fn(gate)",
    "moe_router": "router_probs, self.top_k, dim=-1)",
    "moe_experts": "current_hidden_states * top_k_weights[token_idx, top_k_pos, None]",
    "modernbert_mlp": "self.Wo(self.drop(self.act(input) * gate))",
    "gemma_norm": "output * (1.0 + self.weight.float())",
    "gemma_softcap": "logits = torch.tanh(logits)",
    "roberta_head": "x = torch.tanh(x)",
    "mpnet_attention": "attention_scores += position_bias",
    "deberta_attention": "attention_scores = attention_scores + rel_att",
    "context_pooler": "ACT2FN[self.config.pooler_hidden_act](pooled_output)",
    "deberta_encoder": "rel_embeddings = self.LayerNorm(rel_embeddings)",
}


def _check_source(module, key):
    source = inspect.getsource(type(module).forward)
    if _EXPECTED_SOURCE[key] not in source:
        raise NotImplementedError(
            f"{type(module).__name__}.forward no longer contains {_EXPECTED_SOURCE[key]!r}; "
            "update the oracle's patch for this transformers version")


# ----------------------------------------------------------------------------- patching

class _Taps:
    """Per-run state: the rule and the tapped tensors, each layer's by the order layers run."""

    def __init__(self, rule, n_layers: int, batch: int, head_mask=None, renormalize=True):
        self.rule = rule
        self.head_mask = head_mask
        self.renormalize = renormalize
        self.n_layers = n_layers
        self.layers_entered = 0
        self.batch = batch
        self.attentions: dict[int, torch.Tensor] = {}
        self.contexts: dict[int, torch.Tensor] = {}  # each head's output (B,T,H,D), pre-mask
        self.hidden: dict[int, torch.Tensor] = {}
        self.embeds: dict[str, torch.Tensor] = {}


def _layers(model) -> list[nn.Module]:
    """The modules that each run one layer; ALBERT's shared layers run once per layer they serve."""
    groups = [m for m in model.modules() if type(m).__name__ == "AlbertLayerGroup"]
    if groups:
        return [layer for group in groups for layer in group.albert_layers]
    n = model.config.num_hidden_layers
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise NotImplementedError(f"no ModuleList of {n} layers in {type(model).__name__}")


def _bind(module, function, *args):
    """Replace this instance's ``forward`` by ``function(*args, <the call's arguments>)``."""
    module.forward = functools.partial(function, *args)


def _patch(model, rule, batch: int, head_mask=None, renormalize=True) -> _Taps:
    """Patch the rules into ``model`` (a private float64 copy) and install the taps."""
    layers = _layers(model)
    taps = _Taps(rule, model.config.num_hidden_layers, batch, head_mask, renormalize)
    if any(type(m).__name__ in ("MPNetSelfAttention", "DisentangledSelfAttention") for m in model.modules()):
        pass  # call no attention interface: their forwards are patched below
    else:
        model.set_attn_implementation(ATTENTION)
        if model.config._attn_implementation != ATTENTION:
            raise NotImplementedError(f"{type(model).__name__} cannot switch attention implementation")
    for _, module in model.named_modules():
        module._masklrp_oracle = taps
        kind = type(module)
        if kind is nn.LayerNorm:
            _bind(module, _layernorm_forward, module, rule)
        elif kind.__name__ == "Gemma3RMSNorm":
            _check_source(module, "gemma_norm")
            _bind(module, _gemma_rmsnorm_forward, module, rule)
        elif kind.__name__.endswith("RMSNorm"):
            _bind(module, _rmsnorm_forward, module, rule)
        elif kind in _ACTIVATION_KINDS:
            if _ACTIVATION_KINDS[kind] != "relu":
                _bind(module, _activation_forward, _ACTIVATION_KINDS[kind], rule)
        elif kind.__module__ in (hf_activations.__name__, nn.modules.activation.__name__):
            raise NotImplementedError(f"no AttnLRP rule for activation {kind.__name__}")
        elif all(hasattr(module, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            _check_source(module, "gated_mlp")
            _bind(module, _gated_mlp_forward, module, rule)
        elif kind.__name__ == "ModernBertMLP":
            _check_source(module, "modernbert_mlp")
            _bind(module, _modernbert_mlp_forward, module, rule)
        elif kind.__name__ in ("MixtralSparseMoeBlock", "Qwen2MoeSparseMoeBlock"):
            _check_source(module.gate, "moe_router")
            _check_source(module.experts, "moe_experts")
            _bind(module, _moe_forward, module, rule)
        elif kind.__name__ == "Phi3MLP":
            _check_source(module, "phi3_mlp")
            _bind(module, _phi3_mlp_forward, module, rule)
        elif kind.__name__ in ("RobertaClassificationHead", "XLMRobertaClassificationHead",
                               "MPNetClassificationHead"):
            _check_source(module, "roberta_head")
            _bind(module, _roberta_head_forward, module, rule)
        elif kind.__name__ == "MPNetSelfAttention":
            _check_source(module, "mpnet_attention")
            _bind(module, _mpnet_attention_forward, module)
        elif kind.__name__ == "ContextPooler":
            _check_source(module, "context_pooler")
            _bind(module, _context_pooler_forward, module, rule)
        elif kind.__name__ == "DisentangledSelfAttention":
            _check_source(module, "deberta_attention")
            _bind(module, _deberta_attention_forward, module)
        elif kind.__name__ == "DebertaV2Encoder" and module.relative_attention:
            if inspect.getsource(type(module).get_rel_embedding).find(
                    _EXPECTED_SOURCE["deberta_encoder"]) < 0:
                raise NotImplementedError("DebertaV2Encoder.get_rel_embedding changed; update the oracle")
            module.get_rel_embedding = functools.partial(_deberta_relative_embeddings, module, taps)

    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap is not None and hasattr(model, "lm_head"):  # Gemma: the capping, as part of the head
        _check_source(model, "gemma_softcap")
        model.config.final_logit_softcapping = None
        _bind(model.lm_head, _softcapped_head_forward, model.lm_head, cap, rule)

    def capture_input(module, args, kwargs):
        taps.hidden[taps.layers_entered] = args[0] if args else kwargs["hidden_states"]
        taps.layers_entered += 1

    def capture_output(module, args, output):  # the last call's output stays
        taps.hidden[taps.n_layers] = output[0] if isinstance(output, tuple) else output

    for layer in layers:
        layer.register_forward_pre_hook(capture_input, with_kwargs=True)
        layer.register_forward_hook(capture_output)
    for name, module in _embedding_modules(model).items():
        module.register_forward_hook(_leaf_hook(taps, name))
    return taps


def _embedding_modules(model) -> dict[str, nn.Module]:
    """The word, absolute-position and token-type embedding modules the model has."""
    found = {"word": model.get_input_embeddings()}
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.Embedding) and leaf in ("position_embeddings", "wpe"):
            found["position"] = module
        elif isinstance(module, nn.Embedding) and leaf == "token_type_embeddings":
            found["type"] = module
    return found


def _leaf_hook(taps: _Taps, name: str):
    """Replace an embedding module's output by a leaf (B, T, C) whose gradient we read.

    A (1, T, C) output (BERT / GPT-2 positions without explicit ids) is expanded to the batch
    first, so each row gets its own gradient; the broadcast sum the model does is unchanged.
    """
    def hook(module, args, output):
        if name in taps.embeds:
            raise RuntimeError(f"{name} embedding module called twice in one forward")
        leaf = output.detach().expand(taps.batch, -1, -1).clone().requires_grad_(True)
        taps.embeds[name] = leaf
        return leaf
    return hook


# ----------------------------------------------------------------------------- explain

def _real_mask(input_ids, attention_mask):
    if attention_mask is None:
        return torch.ones_like(input_ids)
    return attention_mask.to(torch.int64)


def task_output(out, task, mask):
    """The explained output of an HF model output object (module docstring, "task")."""
    if task == "sequence-classification":
        return out.logits
    if task == "question-answering":
        return torch.stack((out.start_logits, out.end_logits), dim=-1)
    if task == "causal-lm":
        last = _last_real(mask)
        return out.logits[torch.arange(len(last)), last]
    if task == "base":
        weights = mask.to(out.last_hidden_state.dtype)[..., None]
        return (out.last_hidden_state * weights).sum(1) / weights.sum(1)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _last_real(mask):
    """Index of the last position whose mask is 1, per row (B,)."""
    positions = torch.arange(mask.shape[1]).expand_as(mask)
    return torch.where(mask.bool(), positions, -1).max(dim=1).values


def default_seed(output: torch.Tensor, task: str, mask: torch.Tensor) -> torch.Tensor:
    """One-hot at each row's argmax; QA: per channel, argmax over the row's real positions."""
    seed = torch.zeros_like(output)
    if task == "question-answering":
        masked = output.masked_fill(~mask.bool()[..., None], -torch.inf)
        best = masked.argmax(dim=1)  # (B, 2)
        for b in range(output.shape[0]):
            for channel in range(2):
                seed[b, best[b, channel], channel] = 1.0
        return seed
    seed[torch.arange(output.shape[0]), output.argmax(dim=1)] = 1.0
    return seed


def model_inputs(model, input_ids, attention_mask=None, token_type_ids=None,
                 position_ids=None) -> dict[str, Any]:
    """Keyword arguments for ``model(**...)``; refuses token types a model does not embed."""
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        if "type" not in _embedding_modules(model):
            raise ValueError(f"{type(model).__name__} has no token-type embeddings")
        kwargs["token_type_ids"] = token_type_ids
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if model.config.model_type in _DECODERS:
        kwargs["use_cache"] = False
    return kwargs


def explain(model, task: str, input_ids, attention_mask=None, *, token_type_ids=None,
            position_ids=None, seed=None, rule="attnlrp", head_mask=None,
            renormalize=True, mask_semantics="reference") -> dict[str, np.ndarray | None]:
    """Forward (and, unless ``rule is None``, the rule's backward) of ``model`` in float64.

    ``input_ids`` (B, T) int; ``attention_mask`` (B, T) 0/1 (default all ones); ``seed`` a
    tensor or array shaped like the output (default :func:`default_seed`). ``L`` layers,
    ``H`` heads; ``head_mask`` (L,H), ``renormalize`` and ``mask_semantics``: Mask-LRP
    (:class:`HeadMask`, module docstring).
    Returns NumPy float64 arrays:

    ``logits``               the output (module docstring, "task")
    ``embed_grad``           (B,T,C) g at the word embeddings e
    ``tokens``               (B,T) Σ_d e ⊙ g: input relevance per token
    ``positions``            (B,T) relevance of the absolute position embeddings, or None (RoPE)
    ``types``                (B,T) relevance of the token-type embeddings (BERT, RoBERTa) or None
    ``relative``             (B,2S) relevance of DeBERTa's relative embedding rows, or None
    ``attentions``           (B,L,H,T,T) attention probabilities A
    ``attention_grad``       (B,L,H,T,T) g at A (cp: 0, A is a constant there)
    ``attention_relevance``  A ⊙ g_A
    ``head_relevance``       (B,L,H) Σ_{t,d} ctx ⊙ g at each head's output (see mask_semantics)
    ``head_magnitude``       (B,L,H) Σ_{t,d} |ctx ⊙ g|: the size of that sum's terms
    ``hidden``               (B,L+1,T,C) the input of layer l for l < L, the output of the
                             last layer for l = L (encoders: layer 0's input is the embedding
                             LayerNorm's output; decoders: l = L is before the final norm)
    ``hidden_grad``, ``hidden_relevance`` (B,L+1,T,C) g and hidden ⊙ g

    With ``rule=None`` only ``logits`` is returned.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if mask_semantics not in MASK_SEMANTICS:
        raise ValueError(f"mask_semantics must be one of {MASK_SEMANTICS}, got {mask_semantics!r}")
    input_ids = torch.as_tensor(input_ids)
    mask = _real_mask(input_ids, None if attention_mask is None else torch.as_tensor(attention_mask))
    if head_mask is not None:
        head_mask = torch.as_tensor(np.asarray(head_mask), dtype=torch.float64)
        shape = (model.config.num_hidden_layers, model.config.num_attention_heads)
        if tuple(head_mask.shape) != shape:
            raise ValueError(f"head_mask must have shape (layers, heads) {shape}, got {tuple(head_mask.shape)}")
        if rule is not None and mask_semantics == "reference":  # by definition (module docstring)
            strict = functools.partial(explain, model, task, input_ids, attention_mask, token_type_ids=token_type_ids,
                                       position_ids=position_ids, seed=seed, rule=rule, renormalize=renormalize,
                                       mask_semantics="strict")
            result = strict(head_mask=head_mask)
            for layer in range(shape[0]):
                lifted = head_mask.clone()
                lifted[layer] = 1.0
                arriving = strict(head_mask=lifted)
                for key in LAYER_TAPS:
                    result[key][:, layer] = arriving[key][:, layer]
            return result
    work = copy.deepcopy(model).double().eval().requires_grad_(False)
    taps = _patch(work, rule, input_ids.shape[0], head_mask, renormalize)
    kwargs = model_inputs(work, input_ids, mask, token_type_ids, position_ids)
    with float64_only(), torch.set_grad_enabled(rule is not None):
        output = task_output(work(**kwargs), task, mask)
    missing = [i for i in range(taps.n_layers) if i not in taps.attentions]
    if missing:  # e.g. GPT-2 with reorder_and_upcast_attn bypasses the AttentionInterface
        raise NotImplementedError(f"the attention of layers {missing} did not go through the "
                                  f"{ATTENTION!r} AttentionInterface function")
    result: dict[str, Any] = {"logits": output.detach().numpy()}
    if rule is None:
        return result
    if seed is None:
        seed = default_seed(output.detach(), task, mask)
    seed = torch.as_tensor(seed, dtype=torch.float64)
    if seed.shape != output.shape:
        raise ValueError(f"seed has shape {tuple(seed.shape)}, the output {tuple(output.shape)}")

    L = taps.n_layers
    names = list(taps.embeds)
    tensors = ([taps.embeds[n] for n in names] + [taps.attentions[i] for i in range(L)]
               + [taps.hidden[i] for i in range(L + 1)] + [taps.contexts[i] for i in range(L)])
    grads = torch.autograd.grad(output, tensors, seed, allow_unused=True, materialize_grads=True)
    embed_grads = dict(zip(names, grads[:len(names)]))
    attn_grads = grads[len(names):len(names) + L]
    hidden_grads = grads[len(names) + L:len(names) + 2 * L + 1]
    context_grads = grads[len(names) + 2 * L + 1:]
    head_terms = [taps.contexts[i] * context_grads[i] for i in range(L)]
    head_relevance = torch.stack([t.sum((1, 3)) for t in head_terms], 1)
    head_magnitude = torch.stack([t.abs().sum((1, 3)) for t in head_terms], 1)

    def relevance(name):
        if name not in names:
            return None
        return (taps.embeds[name] * embed_grads[name]).sum(-1).detach().numpy()

    attentions = torch.stack([taps.attentions[i] for i in range(L)], dim=1).detach()
    attention_grad = torch.stack(attn_grads, dim=1)
    hidden = torch.stack([taps.hidden[i] for i in range(L + 1)], dim=1).detach()
    hidden_grad = torch.stack(hidden_grads, dim=1)
    result.update(
        embed_grad=embed_grads["word"].numpy(),
        tokens=relevance("word"),
        positions=relevance("position"),
        types=relevance("type"),
        relative=relevance("relative"),
        attentions=attentions.numpy(),
        attention_grad=attention_grad.numpy(),
        attention_relevance=(attentions * attention_grad).numpy(),
        head_relevance=head_relevance.detach().numpy(),
        head_magnitude=head_magnitude.detach().numpy(),
        hidden=hidden.numpy(),
        hidden_grad=hidden_grad.numpy(),
        hidden_relevance=(hidden * hidden_grad).numpy(),
    )
    return result


def forward_logits(model, task: str, input_ids, attention_mask=None, **kwargs) -> np.ndarray:
    """The output of :func:`explain` with ``rule=None``: float64 NumPy, no backward."""
    return explain(model, task, input_ids, attention_mask, rule=None, **kwargs)["logits"]
