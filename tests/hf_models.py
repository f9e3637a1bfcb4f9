"""Tiny seeded random-init Hugging Face models, built offline from configs (test fixtures).

``build(name, seed)`` returns a transformers torch model in eval mode, float32, with
``attn_implementation="eager"`` (and eager MoE experts), every parameter drawn from a
``torch.Generator`` seeded with ``seed``: matrices ~ N(0, 0.25²), biases ~ N(0, 0.2²), norm weights ~ 1 + N(0, 0.25²).
HF's own init (zero biases, unit norms, std 0.02) would leave biases untested and attention
nearly uniform; these values give peaked attention and O(1) logits. ``zero_bias=True`` then
zeroes every parameter named ``*.bias`` (linear biases, LayerNorm β, classifier biases): the
CP-LRP conservation test (DESIGN.md §2) needs a bias-free model.

``MODELS`` lists every name with its HF class and its output convention (``task``, as in
:mod:`masklrp.spec` and ``tests/oracle/models.py``). Sizes: 2 layers, 4 query heads,
hidden 32–48, vocab 97, 64 positions (66 table rows for RoBERTa and MPNet, whose positions
start after ``pad_token_id``), intermediate 2–4× hidden.

``example_inputs(model, batch, length, seed)`` gives right-padded inputs of unequal lengths
(row 0 has ``length`` real tokens), pad positions holding the pad id, real tokens never a
special id; BERT-likes with two token types (``TYPED``) also get ``token_type_ids`` (the
second half of each sentence is type 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import transformers as tf

VOCAB = 97
LAYERS = 2
HEADS = 4
POSITIONS = 64
INIT_STD = 0.25
BIAS_STD = 0.2
NORM_STD = 0.25


@dataclass(frozen=True)
class ModelDef:
    """One tiny model: its HF class name, output convention and config factory."""

    architecture: str
    task: str  # "base", "sequence-classification", "question-answering", "causal-lm"
    config: Callable[[], Any]


def _bert(**extra):
    return tf.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, intermediate_size=128, hidden_act="gelu",
                         max_position_embeddings=POSITIONS, type_vocab_size=2,
                         layer_norm_eps=1e-12, pad_token_id=0, initializer_range=INIT_STD, **extra)


def _roberta(**extra):
    return tf.RobertaConfig(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, intermediate_size=96, hidden_act="gelu",
                            max_position_embeddings=POSITIONS + 2, type_vocab_size=1,
                            layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                            initializer_range=INIT_STD, **extra)


def _xlm_roberta(**extra):
    # RoBERTa's layout under another model_type and key prefix; token types as BERT's.
    return tf.XLMRobertaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=LAYERS,
                               num_attention_heads=HEADS, intermediate_size=64,
                               hidden_act="gelu_new", max_position_embeddings=POSITIONS + 2,
                               type_vocab_size=2, layer_norm_eps=1e-5, pad_token_id=1,
                               bos_token_id=0, eos_token_id=2, initializer_range=INIT_STD, **extra)


def _electra(embedding_size=24, **extra):
    # embedding_size != hidden_size: the embeddings are projected (embeddings_project)
    return tf.ElectraConfig(vocab_size=VOCAB, embedding_size=embedding_size, hidden_size=32,
                            num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                            intermediate_size=64, hidden_act="gelu",
                            max_position_embeddings=POSITIONS, type_vocab_size=2,
                            layer_norm_eps=1e-12, pad_token_id=0, initializer_range=INIT_STD,
                            **extra)


def _albert(**extra):
    # 16-wide embeddings mapped to 32; with one hidden group every layer runs the same weights
    return tf.AlbertConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=32,
                           num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                           intermediate_size=64, hidden_act="gelu_new",
                           max_position_embeddings=POSITIONS, type_vocab_size=2,
                           layer_norm_eps=1e-12, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                           initializer_range=INIT_STD, **extra)


def _modernbert(**extra):
    # a full layer, then a sliding one: |q - k| <= 4 < the test lengths; global and local
    # RoPE thetas; no biases unless asked
    extra.setdefault("layer_types", ["full_attention", "sliding_attention"])
    return tf.ModernBertConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                               num_hidden_layers=len(extra["layer_types"]),
                               num_attention_heads=HEADS, hidden_activation="gelu",
                               max_position_embeddings=POSITIONS, local_attention=8,
                               norm_eps=1e-5, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                               cls_token_id=2, sep_token_id=3, initializer_range=INIT_STD,
                               rope_parameters={"full_attention": {"rope_type": "default",
                                                                   "rope_theta": 160_000.0},
                                                "sliding_attention": {"rope_type": "default",
                                                                      "rope_theta": 10_000.0}},
                               **extra)


def _deberta(**extra):
    # DeBERTa-v3 by default: relative positions only (no absolute table, no token types), both
    # disentangled terms through the shared key / query projections, log buckets beyond ±4
    # (position_buckets 8 < the test lengths), LayerNorm-ed relative embeddings
    options = dict(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8,
                   max_relative_positions=POSITIONS, position_biased_input=False,
                   share_att_key=True, norm_rel_ebd="layer_norm", type_vocab_size=0)
    options.update(extra)
    return tf.DebertaV2Config(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=LAYERS,
                              num_attention_heads=HEADS, intermediate_size=64, hidden_act="gelu",
                              max_position_embeddings=POSITIONS, layer_norm_eps=1e-7,
                              pad_token_id=0, initializer_range=INIT_STD, **options)


def _distilbert(**extra):
    return tf.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=LAYERS, n_heads=HEADS,
                               hidden_dim=64, activation="gelu", max_position_embeddings=POSITIONS,
                               pad_token_id=0, initializer_range=INIT_STD, **extra)


def _mpnet(**extra):
    # Positions as RoBERTa's (after pad_token_id); the relative position bias has 32 buckets,
    # the number HF's MPNetEncoder.compute_position_bias always uses.
    return tf.MPNetConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=LAYERS,
                          num_attention_heads=HEADS, intermediate_size=64, hidden_act="gelu",
                          max_position_embeddings=POSITIONS + 2, layer_norm_eps=1e-5,
                          relative_attention_num_buckets=32, pad_token_id=1, bos_token_id=0,
                          eos_token_id=2, initializer_range=INIT_STD, **extra)


def _gpt2(**extra):
    return tf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=LAYERS, n_head=HEADS, n_inner=None,
                         n_positions=POSITIONS, activation_function="gelu_new",
                         layer_norm_epsilon=1e-5, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
                         initializer_range=INIT_STD, **extra)


def _llama(rope_type="default", **extra):
    rope = {"rope_type": rope_type, "rope_theta": 10000.0}
    rope.update({
        "default": {},
        "linear": {"factor": 2.0},
        "dynamic": {"factor": 2.0},
        "llama3": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 16},
        "yarn": {"factor": 4.0, "original_max_position_embeddings": 16},
    }[rope_type])
    return tf.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=96,
                          num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                          num_key_value_heads=2, max_position_embeddings=POSITIONS,
                          rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                          initializer_range=INIT_STD, rope_parameters=rope, **extra)


def _mistral():
    # sliding_window 8 < the test lengths: key k is visible to query q iff 0 <= q - k < 8.
    return tf.MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                            num_key_value_heads=1, max_position_embeddings=POSITIONS,
                            sliding_window=8, rms_norm_eps=1e-5, pad_token_id=0, bos_token_id=1,
                            eos_token_id=2, initializer_range=INIT_STD)


def _qwen2():
    # q/k/v projections always carry biases in Qwen2; no GQA here (4 kv heads).
    return tf.Qwen2Config(vocab_size=VOCAB, hidden_size=48, intermediate_size=96,
                          num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                          num_key_value_heads=HEADS, max_position_embeddings=POSITIONS,
                          rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                          initializer_range=INIT_STD)


def _qwen3(**extra):
    # head_dim 12 is not hidden/heads: q and k heads are RMSNorm-ed over it (q_norm, k_norm).
    return tf.Qwen3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, head_dim=12,
                          num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                          num_key_value_heads=2, max_position_embeddings=POSITIONS,
                          rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                          initializer_range=INIT_STD, **extra)


# Phi-3's LongRoPE takes its long factors past ORIGINAL_POSITIONS tokens: the shared tests'
# lengths (up to 17) stay short; tests/test_engine.py runs longer batches too.
ORIGINAL_POSITIONS = 20


def _phi3(**extra):
    # hidden 48 / 4 heads: head_dim 12, so partial_rotary_factor 0.5 rotates 6 values.
    partial = extra.pop("partial_rotary_factor", 1.0)
    half = int(12 * partial) // 2
    rope = {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": partial,
            "factor": POSITIONS / ORIGINAL_POSITIONS,
            "short_factor": [1.0 + 0.1 * i for i in range(half)],
            "long_factor": [1.5 + 0.7 * i for i in range(half)]}
    return tf.Phi3Config(vocab_size=VOCAB, hidden_size=48, intermediate_size=80,
                         num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                         num_key_value_heads=2, max_position_embeddings=POSITIONS,
                         original_max_position_embeddings=ORIGINAL_POSITIONS, rms_norm_eps=1e-5,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         initializer_range=INIT_STD, rope_parameters=rope, **extra)


def _gemma3(**extra):
    # Layer 0 slides (window 8 < the test lengths, local RoPE table), layer 1 is full (linear
    # RoPE scaling); query_pre_attn_scalar 10 != head_dim 8; final logits soft-capped at 3.
    return tf.Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=10,
        max_position_embeddings=POSITIONS, rms_norm_eps=1e-6, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"], final_logit_softcapping=3.0,
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0,
                                            "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
        pad_token_id=0, bos_token_id=2, eos_token_id=1, initializer_range=INIT_STD, **extra)


def _gpt_neox(**extra):
    # head_dim 8: the default rotary_pct 0.25 rotates 2 values of each head; GELU, LayerNorm
    # biases, an untied embed_out
    return tf.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                            max_position_embeddings=POSITIONS, layer_norm_eps=1e-5,
                            pad_token_id=0, bos_token_id=1, eos_token_id=2,
                            initializer_range=INIT_STD, **extra)


def _mixtral(**extra):
    # 4 experts of width 24, each token's top 2, renormalised (always, in Mixtral)
    return tf.MixtralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=24,
                            num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                            num_key_value_heads=2, max_position_embeddings=POSITIONS,
                            num_local_experts=4, num_experts_per_tok=2, rms_norm_eps=1e-5,
                            pad_token_id=0, bos_token_id=1, eos_token_id=2,
                            initializer_range=INIT_STD, **extra)


def _qwen2_moe(**extra):
    # 4 experts of width 16 and a shared expert of width 40 behind its sigmoid gate
    extra.setdefault("num_experts_per_tok", 2)
    return tf.Qwen2MoeConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                             moe_intermediate_size=16, shared_expert_intermediate_size=40,
                             num_experts=4, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                             num_key_value_heads=2, max_position_embeddings=POSITIONS,
                             rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                             initializer_range=INIT_STD, **extra)


_LABELS = {"id2label": {0: "neg", 1: "neu", 2: "pos"}, "label2id": {"neg": 0, "neu": 1, "pos": 2}}

MODELS: dict[str, ModelDef] = {
    "bert-base": ModelDef("BertModel", "base", _bert),
    "bert-cls": ModelDef("BertForSequenceClassification", "sequence-classification",
                         lambda: _bert(**_LABELS)),
    "bert-qa": ModelDef("BertForQuestionAnswering", "question-answering", _bert),
    "roberta-cls": ModelDef("RobertaForSequenceClassification", "sequence-classification",
                            lambda: _roberta(**_LABELS)),
    "roberta-qa": ModelDef("RobertaForQuestionAnswering", "question-answering", _roberta),
    "xlm-roberta-cls": ModelDef("XLMRobertaForSequenceClassification", "sequence-classification",
                                lambda: _xlm_roberta(**_LABELS)),
    "xlm-roberta-qa": ModelDef("XLMRobertaForQuestionAnswering", "question-answering",
                               _xlm_roberta),
    "electra-cls": ModelDef("ElectraForSequenceClassification", "sequence-classification",
                            lambda: _electra(**_LABELS)),
    # embedding_size = hidden_size: no projection
    "electra-qa": ModelDef("ElectraForQuestionAnswering", "question-answering",
                           lambda: _electra(embedding_size=32)),
    "albert-cls": ModelDef("AlbertForSequenceClassification", "sequence-classification",
                           lambda: _albert(**_LABELS)),
    # a group per layer: no sharing
    "albert-qa": ModelDef("AlbertForQuestionAnswering", "question-answering",
                          lambda: _albert(num_hidden_groups=LAYERS)),
    "modernbert-cls": ModelDef("ModernBertForSequenceClassification", "sequence-classification",
                               lambda: _modernbert(**_LABELS)),
    "modernbert-mean": ModelDef("ModernBertForSequenceClassification", "sequence-classification",
                                lambda: _modernbert(classifier_pooling="mean",
                                                    classifier_activation="silu", **_LABELS)),
    # every bias, three layers (sliding, full, sliding), the head at every position
    "modernbert-qa": ModelDef("ModernBertForQuestionAnswering", "question-answering",
                              lambda: _modernbert(attention_bias=True, mlp_bias=True,
                                                  norm_bias=True, classifier_bias=True,
                                                  layer_types=["sliding_attention",
                                                               "full_attention",
                                                               "sliding_attention"])),
    "deberta-v3-cls": ModelDef("DebertaV2ForSequenceClassification", "sequence-classification",
                               lambda: _deberta(**_LABELS)),
    # DeBERTa-v2 style: absolute positions and token types too, c2p only through its own
    # projection, no buckets (offsets clamped to ±64), no norm of the relative embeddings
    "deberta-v2-qa": ModelDef("DebertaV2ForQuestionAnswering", "question-answering",
                              lambda: _deberta(pos_att_type=["c2p"], position_buckets=-1,
                                               position_biased_input=True, share_att_key=False,
                                               norm_rel_ebd="none", type_vocab_size=2)),
    # p2c only, its own projection
    "deberta-v2-base": ModelDef("DebertaV2Model", "base",
                                lambda: _deberta(pos_att_type=["p2c"], share_att_key=False)),
    "distilbert-cls": ModelDef("DistilBertForSequenceClassification", "sequence-classification",
                               lambda: _distilbert(**_LABELS)),
    "distilbert-qa": ModelDef("DistilBertForQuestionAnswering", "question-answering",
                              _distilbert),
    "mpnet-base": ModelDef("MPNetModel", "base", _mpnet),
    "mpnet-cls": ModelDef("MPNetForSequenceClassification", "sequence-classification",
                          lambda: _mpnet(**_LABELS)),
    "mpnet-qa": ModelDef("MPNetForQuestionAnswering", "question-answering", _mpnet),
    "gpt2-lm": ModelDef("GPT2LMHeadModel", "causal-lm", _gpt2),
    "gpt2-cls": ModelDef("GPT2ForSequenceClassification", "sequence-classification",
                         lambda: _gpt2(pad_token_id=VOCAB - 1, **_LABELS)),
    "llama-lm": ModelDef("LlamaForCausalLM", "causal-lm", _llama),
    "llama-lm-tied": ModelDef("LlamaForCausalLM", "causal-lm",
                              lambda: _llama(tie_word_embeddings=True)),
    "llama-lm-linear": ModelDef("LlamaForCausalLM", "causal-lm", lambda: _llama("linear")),
    "llama-lm-llama3": ModelDef("LlamaForCausalLM", "causal-lm", lambda: _llama("llama3")),
    "llama-lm-yarn": ModelDef("LlamaForCausalLM", "causal-lm", lambda: _llama("yarn")),
    "llama-lm-dynamic": ModelDef("LlamaForCausalLM", "causal-lm", lambda: _llama("dynamic")),
    "llama-lm-bias": ModelDef("LlamaForCausalLM", "causal-lm",
                              lambda: _llama(attention_bias=True, mlp_bias=True)),
    "mistral-lm": ModelDef("MistralForCausalLM", "causal-lm", _mistral),
    "qwen2-lm": ModelDef("Qwen2ForCausalLM", "causal-lm", _qwen2),
    "qwen3-lm": ModelDef("Qwen3ForCausalLM", "causal-lm", _qwen3),
    # every layer windowed (8 < the test lengths), biased projections, tied LM head
    "qwen3-lm-options": ModelDef("Qwen3ForCausalLM", "causal-lm",
                                 lambda: _qwen3(attention_bias=True, tie_word_embeddings=True,
                                                use_sliding_window=True, sliding_window=8,
                                                max_window_layers=0)),
    "qwen3-cls": ModelDef("Qwen3ForSequenceClassification", "sequence-classification",
                          lambda: _qwen3(**_LABELS)),
    "phi3-lm": ModelDef("Phi3ForCausalLM", "causal-lm", _phi3),
    # half of each head rotated, a window of 8 on every layer, tied LM head
    "phi3-lm-options": ModelDef("Phi3ForCausalLM", "causal-lm",
                                lambda: _phi3(partial_rotary_factor=0.5, sliding_window=8,
                                              tie_word_embeddings=True)),
    "phi3-cls": ModelDef("Phi3ForSequenceClassification", "sequence-classification",
                         lambda: _phi3(**_LABELS)),
    "neox-lm": ModelDef("GPTNeoXForCausalLM", "causal-lm", _gpt_neox),
    # the sequential residual, half of each head rotated, no attention biases
    "neox-cls": ModelDef("GPTNeoXForSequenceClassification", "sequence-classification",
                         lambda: _gpt_neox(use_parallel_residual=False, attention_bias=False,
                                           rope_parameters={"rope_type": "default",
                                                            "rope_theta": 10000.0,
                                                            "partial_rotary_factor": 0.5},
                                           **_LABELS)),
    "mixtral-lm": ModelDef("MixtralForCausalLM", "causal-lm", _mixtral),
    # the top 2 of 4 not renormalised (norm_topk_prob false, Qwen2-MoE's default)
    "qwen2-moe-lm": ModelDef("Qwen2MoeForCausalLM", "causal-lm", _qwen2_moe),
    # the top 3, renormalised
    "qwen2-moe-cls": ModelDef("Qwen2MoeForSequenceClassification", "sequence-classification",
                              lambda: _qwen2_moe(norm_topk_prob=True, num_experts_per_tok=3,
                                                 **_LABELS)),
    "gemma3-lm": ModelDef("Gemma3ForCausalLM", "causal-lm", _gemma3),
    "gemma3-cls": ModelDef("Gemma3TextForSequenceClassification", "sequence-classification",
                           lambda: _gemma3(attention_bias=True, **_LABELS)),
}


def _vit(**extra):
    sizes = {"image_size": 16, "patch_size": 4, "num_channels": 3, **extra}
    return tf.ViTConfig(hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=80, hidden_act="gelu", layer_norm_eps=1e-12, **sizes)


# Image models (4 x 4 patches of 4 x 4 pixels, 3 channels): apart from MODELS, whose every
# entry reads token ids (test_engine.py runs them all on text).
VISION_MODELS: dict[str, ModelDef] = {
    "vit-cls": ModelDef("ViTForImageClassification", "image-classification",
                        lambda: _vit(**_LABELS)),
    # no q/k/v biases, one channel, 8 x 8 pixel patches of a 16 x 16 image
    "vit-cls-gray": ModelDef("ViTForImageClassification", "image-classification",
                             lambda: _vit(qkv_bias=False, num_channels=1, patch_size=8, **_LABELS)),
    "vit-base": ModelDef("ViTModel", "base", _vit),
}


def build(name: str, seed: int = 0, zero_bias: bool = False) -> torch.nn.Module:
    """The tiny model ``name`` (a key of ``MODELS`` or ``VISION_MODELS``), eval mode, float32,
    eager attention."""
    if name not in MODELS and name not in VISION_MODELS:
        raise KeyError(f"unknown tiny model {name!r}; choose from {sorted(MODELS) + sorted(VISION_MODELS)}")
    spec = MODELS.get(name) or VISION_MODELS[name]
    config = spec.config()
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"  # MoE: the per-expert loop (grouped_mm has no float64)
    with torch.random.fork_rng(devices=[]):  # HF's own init must not move the global RNG
        torch.manual_seed(seed)
        model = getattr(tf, spec.architecture)(config)
    model = model.float().eval()
    randomize(model, seed, zero_bias)
    return model


def randomize(model: torch.nn.Module, seed: int, zero_bias: bool = False) -> None:
    """Overwrite every parameter (tied ones once) from a generator seeded with ``seed``.

    Matrices ~ N(0, INIT_STD²); 1-D non-bias parameters (norm weights) ~ 1 + N(0, NORM_STD²);
    ``*.bias`` ~ N(0, BIAS_STD²), or 0 with ``zero_bias``.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied weights are listed once
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith(".bias"):
                p.copy_(torch.zeros_like(p) if zero_bias else BIAS_STD * noise)
            elif p.ndim == 1:  # LayerNorm γ, RMSNorm weight
                p.copy_(1.0 + NORM_STD * noise)
            else:
                p.copy_(INIT_STD * noise)


def pad_id(config) -> int:
    """The id that fills pad positions: ``config.pad_token_id``, else 0."""
    pad = getattr(config, "pad_token_id", None)
    return 0 if pad is None else int(pad)


def _special_ids(config) -> set[int]:
    ids = {0, 1, 2, 3, pad_id(config)}
    for key in ("bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            ids.add(value)
    return ids


# model types whose tiny configs embed two token types (the others have one or none)
TYPED = ("bert", "xlm-roberta", "electra", "albert", "deberta-v2")


def example_inputs(model: torch.nn.Module, batch: int, length: int, seed: int,
                   pad: bool = True) -> dict[str, torch.Tensor]:
    """Right-padded inputs: ``input_ids``, ``attention_mask`` (int64, (B, T)), BERT types.

    Row 0 has ``length`` real tokens; with ``pad=True`` the others have distinct shorter
    lengths in ``[max(2, length // 2), length)`` (as many as fit), pad positions hold the pad
    id and have mask 0. Real tokens are drawn from the vocabulary minus ids 0–3, pad, bos,
    eos. ``token_type_ids`` (``TYPED`` models) are 1 on the second half of each sentence's real tokens.
    """
    config = model.config
    g = torch.Generator().manual_seed(10_000 + seed)
    specials = _special_ids(config)
    allowed = torch.tensor([i for i in range(config.vocab_size) if i not in specials])
    lengths = [length] * batch
    if pad and batch > 1:
        low = max(2, length // 2)
        choices = torch.randperm(length - low, generator=g)[: batch - 1] + low
        lengths[1:] = [int(c) for c in choices] + [low] * (batch - 1 - len(choices))
    ids = allowed[torch.randint(len(allowed), (batch, length), generator=g)]
    mask = torch.zeros(batch, length, dtype=torch.int64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, pad_id(config)))
    out = {"input_ids": ids, "attention_mask": mask}
    if config.model_type in TYPED and getattr(config, "type_vocab_size", 0) > 1:
        types = torch.zeros_like(ids)
        for b, n in enumerate(lengths):
            types[b, n // 2: n] = 1
        out["token_type_ids"] = types
    return out
