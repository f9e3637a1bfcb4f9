"""ModelSpec: everything the C engine needs to know about a model except its weights.

A :class:`ModelSpec` plus a dict of canonical float32 weights (below) is the whole
contract between the exporter (``masklrp.load``) and the C engine (``csrc/engine*.c``).
Nothing in the engine reads a Hugging Face name or a ``config.json`` key.

Canonical weights
-----------------
All arrays are C-contiguous ``float32``; every linear weight is stored ``(out, in)``
(GPT-2's Conv1D ``(in, out)`` is transposed once at export). ``C`` hidden size, ``H``
query heads, ``KV`` key/value heads, ``D`` head size, ``F`` intermediate size,
``V`` vocabulary, ``P`` position-table length, ``TT`` token-type vocabulary,
``NO`` head outputs. Names marked *opt* may be absent (no bias, no table).

=============================  ====================  =======================================
name                           shape                 meaning
=============================  ====================  =======================================
embed.word                     (V, E)                word embeddings; E = embedding_size, or C
embed.position                 (P, E)        *opt*   absolute positions (BERT, GPT-2)
embed.type                     (TT, E)       *opt*   token types (BERT)
embed.norm.weight / .bias      (E,)          *opt*   embedding LayerNorm (encoders, ModernBERT)
embed.project.weight / .bias   (C, E)        *opt*   ELECTRA / ALBERT: the normed embeddings to
                                                     C; required iff ``embedding_size``
layers.{i}.attn_norm.weight    (C,)                  encoder: LN after the attention residual;
layers.{i}.attn_norm.bias      (C,)          *opt*   decoder: norm before attention (absent
                                                     in layer 0 iff not ``first_attn_norm``)
layers.{i}.qkv.weight          ((H+2KV)·D, C)        rows: all q heads, then k, then v
layers.{i}.qkv.bias            ((H+2KV)·D,)  *opt*
layers.{i}.out.weight          (C, H·D)              attention output projection
layers.{i}.out.bias            (C,)          *opt*
layers.{i}.mlp_norm.weight     (C,)                  encoder: LN after the MLP residual;
layers.{i}.mlp_norm.bias       (C,)          *opt*   decoder: norm before the MLP
layers.{i}.attn_post_norm.weight (C,)        *opt*   Gemma 3: norms of the attention and MLP
layers.{i}.mlp_post_norm.weight  (C,)        *opt*   outputs; required iff ``post_norms``
layers.{i}.up.weight           (F, C)/(2F, C)        gated MLP: rows [0, F) gate, [F, 2F) up
layers.{i}.up.bias             (F,)/(2F,)    *opt*
layers.{i}.down.weight         (C, F)
layers.{i}.down.bias           (C,)          *opt*
final_norm.weight / .bias      (C,)          *opt*   decoders: norm after the last layer
head.dense.weight / .bias      (C, C)        *opt*   pooler / pre-classifier, then head_activation
head.norm.weight / .bias       (C,)          *opt*   ModernBERT: norm after it; iff ``head_norm``
head.out.weight                (NO, C)       *opt*   classifier, QA outputs, LM head (may be
head.out.bias                  (NO,)         *opt*   the very array ``embed.word`` when tied)
layers.{i}.router.weight       (X, C)        *opt*   mixture of experts: the router; required
                                                     iff ``n_experts`` (X)
layers.{i}.experts.up.weight   (X·2XF, C)    *opt*   expert e's [gate; up] rows at [2XF·e, 2XF·(e+1));
layers.{i}.experts.down.weight (X·C, XF)     *opt*   its down rows at [C·e, C·(e+1)); XF =
                                                     ``expert_intermediate``; both iff n_experts
layers.{i}.shared_gate.weight  (1, C)        *opt*   the shared expert's sigmoid gate; with
                                                     experts, up / down are the shared expert
                                                     (F wide), present iff ``shared_expert``
layers.{i}.q_norm.weight       (D,)          *opt*   RMSNorm of every query / key head before
layers.{i}.k_norm.weight       (D,)          *opt*   RoPE (Qwen3); required iff ``qk_norm``
rope.inv_freq                  (R/2,)        *opt*   RoPE inverse frequencies, scaling applied;
                                                     R = rotary_dim (or D when it is 0)
rope.inv_freq_long             (R/2,)        *opt*   LongRoPE's long_factor frequencies, taken by
                                                     a sequence longer than rope_long_after
rope.inv_freq_local            (R/2,)        *opt*   Gemma 3: the sliding_layers' frequencies
attn.relative_bias             (H, 2P'-1)    *opt*   MPNet: every layer's score bias by key −
                                                     query offset, P' = max_positions
                                                     (masklrp/relative_position.py)
attn.relative_index            (2P'-1,)      *opt*   DeBERTa: the relative embedding row of each
                                                     query − key offset (whole numbers)
relative.embeddings            (2S, C)       *opt*   DeBERTa: relative embeddings, S =
                                                     relative_span; iff ``disentangled``
relative.norm.weight / .bias   (C,)          *opt*   their LayerNorm (norm_rel_ebd)
layers.{i}.pos_key.weight      (H·D, C)      *opt*   DeBERTa c2p: the embeddings' key projection
layers.{i}.pos_query.weight    (H·D, C)      *opt*   p2c: their query projection (both + .bias)
patch.weight                   (C, ch·p·p)   *opt*   ViT: each flattened (channel, row, column)
patch.bias                     (C,)          *opt*   patch to C; required iff ``patch_size``.
                                                     The engine never reads it: masklrp.vision
                                                     passes the patches as ``embeds``, and
                                                     ``embed.word`` (1, C) is the [CLS] token
=============================  ====================  =======================================

Outputs
-------
Several layers may hold the very same arrays: ALBERT shares one layer's weights across its
layers, and the engine reads them in place for each (no copies).

``pool`` picks the positions the head reads: ``"first"`` ([CLS] / <s>), ``"last"`` (last
real token: GPT-2 sequence classification, causal-LM next token), ``"mean"`` (mean over
real tokens: sentence embeddings of a base encoder) or ``"none"`` (every position: QA; the head's
dense, activation and norm then apply at every position, as ModernBERT's QA head does).
The engine's logits are ``(B, NO)`` when pooled and ``(B, T, NO)`` for ``"none"``; a
base encoder with no ``head.out`` has ``NO = C`` (its output is the pooled hidden state).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np

from ._checks import INT32_MAX, integer, number

FAMILIES = ("encoder", "decoder")
NORMS = ("layernorm", "rmsnorm")
POOLS = ("first", "last", "mean", "none")
POSITION_KINDS = ("absolute", "roberta", "rope", "relative")
# int fields -> their least valid value
_SIZES = {"n_layers": 1, "n_heads": 1, "n_kv_heads": 1, "head_dim": 1, "hidden": 1,
          "intermediate": 1, "vocab": 1, "max_positions": 1, "type_vocab": 0, "sliding_window": 0,
          "n_outputs": 1, "pad_token_id": -1, "rotary_dim": 0, "rope_long_after": 0,
          "embedding_size": 0, "relative_span": 0, "n_experts": 0, "experts_per_token": 0,
          "expert_intermediate": 0, "image_size": 0, "patch_size": 0, "num_channels": 0}


@dataclass(frozen=True)
class ModelSpec:
    """Sizes and options of one exported model (see the module docstring for weights)."""

    architecture: str          # the HF class it came from, e.g. "BertForSequenceClassification"
    model_type: str            # config.model_type: bert, gpt2, llama, qwen3, ... (export.ARCHITECTURES)
    task: str                  # "base", "sequence-classification", "question-answering", "causal-lm",
                               # "image-classification"
    family: str                # "encoder" (post-norm) or "decoder" (pre-norm; causal unless
                               # causal=False: ModernBERT, a pre-norm encoder)
    norm: str                  # "layernorm" or "rmsnorm"
    activation: str            # one of masklrp.kernels.ACTIVATIONS
    gated_mlp: bool            # SwiGLU: act(gate) * up
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    max_positions: int         # longest sequence the position table / RoPE config allows
    type_vocab: int            # 0 when the model has no token types
    norm_eps: float
    attn_scale: float          # multiplies Q Kᵀ (1/sqrt(D); Gemma 3: query_pre_attn_scalar^-1/2)
    causal: bool
    sliding_window: int        # 0 = none; else key k is visible to query q iff q - k < window
    positions: str             # "absolute", "roberta" (offset by padding_idx + 1), "rope" or
                               # "relative" (DeBERTa-v3: only its disentangled attention)
    rope_attention_scaling: float  # multiplies cos and sin (YaRN); 1.0 otherwise
    pool: str                  # "first", "last", "mean" or "none"
    head_activation: str       # activation after head.dense: "tanh", "relu" or "" (no dense)
    n_outputs: int             # NO
    pad_token_id: int          # -1 when the config names none
    labels: tuple[str, ...] = ()  # id2label, when the config has one
    relative_bias: bool = False   # MPNet: attn.relative_bias added to every layer's scores
    qk_norm: bool = False         # Qwen3: each q / k head RMSNorm-ed over head_dim before RoPE
    rotary_dim: int = 0           # RoPE rotates the first rotary_dim values of a head; 0: all D
    rope_long_after: int = 0      # LongRoPE: a sequence longer than this (its last real position
                                  # + 1) takes rope.inv_freq_long; 0: one table for all
    sliding_layers: tuple[bool, ...] = ()  # layers with the sliding window (and, given
                                  # rope.inv_freq_local, that table); (): every layer
    post_norms: bool = False      # Gemma 3: each branch's output normed before the residual add
    embed_scale: float = 1.0      # multiplies the word embeddings (Gemma 3: sqrt(hidden))
    final_softcap: float = 0.0    # logits = c·tanh(logits / c) (Gemma 3); 0: none
    embedding_size: int = 0       # ELECTRA / ALBERT: E, the embedding tables' width, projected to
                                  # hidden by embed.project; 0: the tables are hidden wide
    first_attn_norm: bool = True  # False: layer 0 has no pre-attention norm (ModernBERT)
    head_norm: bool = False       # ModernBERT: head.norm after head.dense's activation
    disentangled: tuple[str, ...] = ()  # DeBERTa's score terms besides q·k: "c2p" (q·pk),
                                  # "p2c" (k·pq), pk / pq projections of relative embeddings
    relative_span: int = 0        # DeBERTa: S, the relative embeddings having 2S rows
    parallel_residual: bool = False  # GPT-NeoX: both branches read the layer's input,
                                  # x' = x + attention(attn_norm(x)) + mlp(mlp_norm(x))
    n_experts: int = 0            # mixture of experts (Mixtral, Qwen2-MoE): X gated experts in
                                  # every layer instead of the dense MLP; 0: none
    experts_per_token: int = 0    # K: each token's K most probable experts under the router
    expert_intermediate: int = 0  # XF: an expert's intermediate size
    norm_topk_prob: bool = False  # the K routing weights renormalised to sum to 1
    shared_expert: bool = False   # Qwen2-MoE: a dense gated MLP beside the experts, scaled by
                                  # sigmoid(shared_gate x)
    eos_token_ids: tuple[int, ...] = ()  # the config's end-of-sequence ids: generation stops there
    image_size: int = 0           # ViT: the side of the square input image in pixels; 0: text
    patch_size: int = 0           # ViT: the side of a patch; the sequence is [CLS] and the
                                  # (image_size / patch_size)² patches in row-major order
    num_channels: int = 0         # ViT: the image's channels

    def __post_init__(self) -> None:
        for name, allowed in (("family", FAMILIES), ("norm", NORMS), ("pool", POOLS),
                              ("positions", POSITION_KINDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ModelSpec.{name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        # the exporter names the config key first; this guards a spec built by hand
        for name, minimum in _SIZES.items():
            integer(getattr(self, name), f"ModelSpec.{name}", minimum, maximum=INT32_MAX)
        for name in ("norm_eps", "attn_scale", "rope_attention_scaling"):
            number(getattr(self, name), f"ModelSpec.{name}", positive=True, float32=True)
        number(self.embed_scale, "ModelSpec.embed_scale", positive=True, float32=True)
        number(self.final_softcap, "ModelSpec.final_softcap", float32=True)
        if self.final_softcap < 0:
            raise ValueError(f"ModelSpec.final_softcap must be >= 0, got {self.final_softcap}")
        if len(self.sliding_layers) not in (0, self.n_layers) or not all(
                isinstance(x, bool) for x in self.sliding_layers):
            raise ValueError(f"ModelSpec.sliding_layers must be () or {self.n_layers} bools")
        if self.rotary_dim % 2 or self.rotary_dim > self.head_dim:
            raise ValueError(f"rotary_dim ({self.rotary_dim}) must be even and at most "
                             f"head_dim ({self.head_dim})")
        if not set(self.disentangled) <= {"c2p", "p2c"} or bool(self.disentangled) != bool(
                self.relative_span):
            raise ValueError("ModelSpec.disentangled must hold 'c2p' and / or 'p2c', exactly "
                             "when relative_span > 0")
        if self.n_experts and not (1 <= self.experts_per_token <= self.n_experts
                                   and self.expert_intermediate >= 1 and self.gated_mlp):
            raise ValueError("a mixture of experts needs 1 <= experts_per_token <= n_experts, "
                             "expert_intermediate >= 1 and gated_mlp")
        if self.shared_expert and not self.n_experts:
            raise ValueError("ModelSpec.shared_expert needs n_experts > 0")
        if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < self.vocab
                   for i in self.eos_token_ids) or not isinstance(self.eos_token_ids, tuple):
            raise ValueError(f"ModelSpec.eos_token_ids must be a tuple of token ids in [0, {self.vocab}), "
                             f"got {self.eos_token_ids!r}")
        if self.patch_size and not (self.image_size % self.patch_size == 0 and self.num_channels
                                    and self.vocab == 1 and self.max_positions
                                    == (self.image_size // self.patch_size) ** 2 + 1):
            raise ValueError("a ViT spec needs image_size a multiple of patch_size, num_channels "
                             ">= 1, vocab 1 (the [CLS] token) and max_positions patches + 1")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of "
                             f"n_kv_heads ({self.n_kv_heads})")

    def to_dict(self) -> dict:
        return asdict(self)

    def weight_shapes(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        """Every canonical weight name this spec allows -> ``(shape, required)``.

        Required: the embeddings and position table its ``positions`` needs, every layer's
        norms and matrices (but layer 0's attention norm without ``first_attn_norm``),
        ``embed.norm`` (encoders) and / or ``final_norm`` (decoders; both for a non-causal
        one, but ViT), ``patch.weight`` with ``patch_size``, ``embed.project.weight`` with ``embedding_size``, ``head.dense.weight`` when
        ``head_activation`` is set, ``head.norm.weight`` with ``head_norm``,
        ``head.out.weight`` unless ``task == "base"``. Biases are always optional.
        """
        C, H, KV, D = self.hidden, self.n_heads, self.n_kv_heads, self.head_dim
        E = self.embedding_size or C
        F = self.intermediate * (2 if self.gated_mlp else 1)
        qkv = (H + 2 * KV) * D
        out: dict[str, tuple[tuple[int, ...], bool]] = {"embed.word": ((self.vocab, E), True)}
        if self.positions == "absolute":
            out["embed.position"] = ((self.max_positions, E), True)
        elif self.positions == "roberta":
            out["embed.position"] = ((self.max_positions + self.pad_token_id + 1, E), True)
        elif self.positions == "rope":
            half = (self.rotary_dim or D) // 2
            out["rope.inv_freq"] = ((half,), True)
            if self.rope_long_after:
                out["rope.inv_freq_long"] = ((half,), True)
            if self.sliding_layers:
                out["rope.inv_freq_local"] = ((half,), False)
        if self.type_vocab > 0:
            out["embed.type"] = ((self.type_vocab, E), True)
        if self.relative_bias:
            out["attn.relative_bias"] = ((H, 2 * self.max_positions - 1), True)
        if self.disentangled:
            out["attn.relative_index"] = ((2 * self.max_positions - 1,), True)
            out["relative.embeddings"] = ((2 * self.relative_span, C), True)
            out["relative.norm.weight"] = ((C,), False)
            out["relative.norm.bias"] = ((C,), False)
        # encoders norm their embeddings, decoders their last layer's output, ModernBERT both
        # (ViT's patches go into layer 0 unnormed)
        norms = [("embed.norm", E)] if self.family == "encoder" else [("final_norm", C)]
        if self.family == "decoder" and not self.causal and not self.patch_size:
            norms.append(("embed.norm", E))
        if self.patch_size:
            out["patch.weight"] = ((C, self.num_channels * self.patch_size ** 2), True)
            out["patch.bias"] = ((C,), False)
        if self.head_norm:
            norms.append(("head.norm", C))
        for norm, width in norms:
            out[f"{norm}.weight"] = ((width,), True)
            out[f"{norm}.bias"] = ((width,), False)
        if self.embedding_size:
            out["embed.project.weight"] = ((C, E), True)
            out["embed.project.bias"] = ((C,), False)
        for i in range(self.n_layers):
            p = f"layers.{i}."
            for name, shape in (("attn_norm", (C,)), ("mlp_norm", (C,))):
                if name == "attn_norm" and i == 0 and not self.first_attn_norm:
                    continue
                out[p + name + ".weight"] = (shape, True)
                out[p + name + ".bias"] = (shape, False)
            if self.qk_norm:
                out[p + "q_norm.weight"] = ((D,), True)
                out[p + "k_norm.weight"] = ((D,), True)
            for term, name in (("c2p", "pos_key"), ("p2c", "pos_query")):
                if term in self.disentangled:
                    out[p + name + ".weight"] = ((H * D, C), True)
                    out[p + name + ".bias"] = ((H * D,), False)
            if self.post_norms:
                out[p + "attn_post_norm.weight"] = ((C,), True)
                out[p + "mlp_post_norm.weight"] = ((C,), True)
            dense = not self.n_experts or self.shared_expert
            for name, rows, cols in (("qkv", qkv, C), ("out", C, H * D), ("up", F, C),
                                     ("down", C, self.intermediate)):
                if name in ("up", "down") and not dense:
                    continue
                out[p + name + ".weight"] = ((rows, cols), True)
                out[p + name + ".bias"] = ((rows,), False)
            if self.n_experts:
                X, XF = self.n_experts, self.expert_intermediate
                out[p + "router.weight"] = ((X, C), True)
                out[p + "experts.up.weight"] = ((X * 2 * XF, C), True)
                out[p + "experts.down.weight"] = ((X * C, XF), True)
            if self.shared_expert:
                out[p + "shared_gate.weight"] = ((1, C), True)
        if self.head_activation:
            out["head.dense.weight"] = ((C, C), True)
            out["head.dense.bias"] = ((C,), False)
        if self.task != "base":
            out["head.out.weight"] = ((self.n_outputs, C), True)
            out["head.out.bias"] = ((self.n_outputs,), False)
        return out


def check_weights(spec: ModelSpec, weights: Mapping[str, np.ndarray]) -> None:
    """Raise ``ValueError`` naming the first weight that breaks the contract above.

    Checks: no unknown names, every required name present, exact shapes, C-contiguous
    float32 ``numpy.ndarray``.
    """
    shapes = spec.weight_shapes()
    for name in weights:
        if name not in shapes:
            raise ValueError(f"unexpected weight {name!r} for this {spec.architecture} spec")
    for name, (shape, required) in shapes.items():
        if name not in weights:
            if required:
                raise ValueError(f"missing weight {name!r} (shape {shape})")
            continue
        w = weights[name]
        if not isinstance(w, np.ndarray):
            raise ValueError(f"weight {name!r} must be a numpy.ndarray, got {type(w).__name__}")
        if w.dtype != np.float32:
            raise ValueError(f"weight {name!r} must be float32, got {w.dtype}")
        if w.shape != shape:
            raise ValueError(f"weight {name!r} has shape {w.shape}, expected {shape}")
        if not w.flags.c_contiguous:
            raise ValueError(f"weight {name!r} must be C-contiguous")
