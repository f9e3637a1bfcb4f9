"""Hugging Face model → :class:`~masklrp.spec.ModelSpec` + canonical float32 NumPy weights.

:func:`export` reads either

* a transformers torch module (``model.config`` and ``model.state_dict()``; torch is imported
  by transformers, never by this module), or
* a folder with ``config.json`` and ``model.safetensors`` (or a sharded
  ``model.safetensors.index.json``) and optionally ``tokenizer.json``: this path needs
  neither torch nor transformers,

and returns an :class:`Exported`. Both paths go through the same reader of the config dict
(``config.to_dict()`` for a module, ``config.json`` for a folder, with the config class
defaults of transformers 5.23 filled in), so they give the same spec and weights.

Weights follow the table in :mod:`masklrp.spec`: q/k/v fused into ``layers.{i}.qkv`` (q rows,
then k, then v), gate+up fused into ``layers.{i}.up`` (gate rows first), GPT-2's Conv1D
``(in, out)`` transposed to ``(out, in)``, and a tied LM head stored as the very array object
of ``embed.word``. From a module, float32 contiguous tensors are shared, not copied: the
arrays view the module's memory (fused and transposed weights are new arrays).

What the engine cannot express is refused with ``NotImplementedError`` naming the
architecture or config option; malformed input raises ``ValueError`` (or ``TypeError`` for a
config value of the wrong type) naming the file, the config field or the tensor: a config that
is not a JSON object, a size that is not a positive int, an epsilon or RoPE parameter that is
not a finite number > 0, heads that do not divide the hidden size, a truncated or corrupt
safetensors file, a shard index whose ``weight_map`` does not match its shards.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ._checks import INT32_MAX, integer, number
from . import relative_position
from .rope import max_rope_positions, rope_config, rope_long_inv_freq, rope_parameters, rotary_dim
from .spec import ModelSpec, check_weights
from .tokenizer import Tokenizer

__all__ = ["ARCHITECTURES", "Exported", "export"]


@dataclass(frozen=True)
class Exported:
    """An exported model: everything the engine needs, and the tokenizer if one was found."""

    spec: ModelSpec
    weights: dict[str, np.ndarray]
    tokenizer: Tokenizer | None
    source: str


# HF class name -> (config model_type, task). The architecture picks the head.
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "BertModel": ("bert", "base"),
    "BertForSequenceClassification": ("bert", "sequence-classification"),
    "BertForQuestionAnswering": ("bert", "question-answering"),
    "RobertaModel": ("roberta", "base"),
    "RobertaForSequenceClassification": ("roberta", "sequence-classification"),
    "RobertaForQuestionAnswering": ("roberta", "question-answering"),
    "XLMRobertaModel": ("xlm-roberta", "base"),
    "XLMRobertaForSequenceClassification": ("xlm-roberta", "sequence-classification"),
    "XLMRobertaForQuestionAnswering": ("xlm-roberta", "question-answering"),
    "MPNetModel": ("mpnet", "base"),
    "MPNetForSequenceClassification": ("mpnet", "sequence-classification"),
    "MPNetForQuestionAnswering": ("mpnet", "question-answering"),
    "ElectraModel": ("electra", "base"),
    "ElectraForSequenceClassification": ("electra", "sequence-classification"),
    "ElectraForQuestionAnswering": ("electra", "question-answering"),
    "AlbertModel": ("albert", "base"),
    "AlbertForSequenceClassification": ("albert", "sequence-classification"),
    "AlbertForQuestionAnswering": ("albert", "question-answering"),
    "DistilBertModel": ("distilbert", "base"),
    "DistilBertForSequenceClassification": ("distilbert", "sequence-classification"),
    "DistilBertForQuestionAnswering": ("distilbert", "question-answering"),
    "GPT2Model": ("gpt2", "base"),
    "GPT2LMHeadModel": ("gpt2", "causal-lm"),
    "GPT2ForSequenceClassification": ("gpt2", "sequence-classification"),
    "GPT2ForQuestionAnswering": ("gpt2", "question-answering"),
    **{f"{name}{suffix}": (model_type, task)
       for name, model_type in (("Llama", "llama"), ("Mistral", "mistral"), ("Qwen2", "qwen2"),
                                ("Qwen3", "qwen3"))
       for suffix, task in (("Model", "base"), ("ForCausalLM", "causal-lm"),
                            ("ForSequenceClassification", "sequence-classification"),
                            ("ForQuestionAnswering", "question-answering"))},
    **{f"{name}{suffix}": (model_type, task)
       for name, model_type in (("Mixtral", "mixtral"), ("Qwen2Moe", "qwen2_moe"))
       for suffix, task in (("Model", "base"), ("ForCausalLM", "causal-lm"),
                            ("ForSequenceClassification", "sequence-classification"),
                            ("ForQuestionAnswering", "question-answering"))},
    "Phi3Model": ("phi3", "base"),
    "Phi3ForCausalLM": ("phi3", "causal-lm"),
    "Phi3ForSequenceClassification": ("phi3", "sequence-classification"),
    "DebertaV2Model": ("deberta-v2", "base"),
    "DebertaV2ForSequenceClassification": ("deberta-v2", "sequence-classification"),
    "DebertaV2ForQuestionAnswering": ("deberta-v2", "question-answering"),
    "ModernBertModel": ("modernbert", "base"),
    "ModernBertForSequenceClassification": ("modernbert", "sequence-classification"),
    "ModernBertForQuestionAnswering": ("modernbert", "question-answering"),
    "GPTNeoXModel": ("gpt_neox", "base"),
    "GPTNeoXForCausalLM": ("gpt_neox", "causal-lm"),
    "GPTNeoXForSequenceClassification": ("gpt_neox", "sequence-classification"),
    "GPTNeoXForQuestionAnswering": ("gpt_neox", "question-answering"),
    "Gemma3TextModel": ("gemma3_text", "base"),
    "Gemma3ForCausalLM": ("gemma3_text", "causal-lm"),
    "Gemma3TextForSequenceClassification": ("gemma3_text", "sequence-classification"),
    "ViTModel": ("vit", "base"),
    "ViTForImageClassification": ("vit", "image-classification"),
}

# Heads of supported families that the engine cannot express, and why.
_REFUSED_HEADS = {
    "ElectraForPreTraining": "the replaced-token discriminator gives one logit per token, not an "
                             "output the engine explains (a class, a QA span or the next token); "
                             "architecture='ElectraModel' exports its encoder",
}

# When config.json names no architecture: the base model of its model_type.
_BASE_ARCHITECTURE = {model_type: arch for arch, (model_type, task) in ARCHITECTURES.items()
                      if task == "base"}

# The config keys we read that config.json may omit, with transformers 5.23's class defaults
# (tests/test_export.py checks this table against the config classes).
CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "bert": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, hidden_act="gelu", max_position_embeddings=512,
                 type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0, is_decoder=False,
                 add_cross_attention=False, tie_word_embeddings=True),
    "roberta": dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                    num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
                    max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
                    pad_token_id=1, is_decoder=False, add_cross_attention=False,
                    tie_word_embeddings=True),
    "xlm-roberta": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                        num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
                        max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
                        pad_token_id=1, is_decoder=False, add_cross_attention=False,
                        tie_word_embeddings=True),
    "electra": dict(vocab_size=30522, embedding_size=128, hidden_size=256, num_hidden_layers=12,
                    num_attention_heads=4, intermediate_size=1024, hidden_act="gelu",
                    max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
                    pad_token_id=0, is_decoder=False, add_cross_attention=False,
                    tie_word_embeddings=True),
    "albert": dict(vocab_size=30000, embedding_size=128, hidden_size=4096, num_hidden_layers=12,
                   num_hidden_groups=1, num_attention_heads=64, intermediate_size=16384,
                   inner_group_num=1, hidden_act="gelu_new", max_position_embeddings=512,
                   type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0,
                   tie_word_embeddings=True),
    "mpnet": dict(vocab_size=30527, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, hidden_act="gelu", max_position_embeddings=512,
                  layer_norm_eps=1e-12, pad_token_id=1, relative_attention_num_buckets=32,
                  tie_word_embeddings=True),
    "distilbert": dict(vocab_size=30522, max_position_embeddings=512, n_layers=6, n_heads=12,
                       dim=768, hidden_dim=3072, activation="gelu", pad_token_id=0,
                       tie_word_embeddings=True),
    "gpt2": dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                 n_inner=None, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                 scale_attn_weights=True, pad_token_id=None,
                 scale_attn_by_inverse_layer_idx=False, add_cross_attention=False,
                 tie_word_embeddings=True),
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=None,
                  hidden_act="silu", max_position_embeddings=2048, rms_norm_eps=1e-6,
                  pad_token_id=None, tie_word_embeddings=False, attention_bias=False,
                  mlp_bias=False, head_dim=None),
    "mistral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                    head_dim=None, hidden_act="silu", max_position_embeddings=4096 * 32,
                    rms_norm_eps=1e-6, pad_token_id=None, tie_word_embeddings=False,
                    sliding_window=4096),
    "qwen2": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                  hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6,
                  tie_word_embeddings=False, use_sliding_window=False, sliding_window=4096,
                  max_window_layers=28, layer_types=None, pad_token_id=None),
    "qwen3": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                  head_dim=128, hidden_act="silu", max_position_embeddings=32768,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False,
                  use_sliding_window=False, sliding_window=4096, max_window_layers=28,
                  layer_types=None, pad_token_id=None),
    "mixtral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                    head_dim=None, hidden_act="silu", max_position_embeddings=4096 * 32,
                    rms_norm_eps=1e-5, pad_token_id=None, tie_word_embeddings=False,
                    sliding_window=None, num_local_experts=8, num_experts_per_tok=2),
    "qwen2_moe": dict(vocab_size=151936, hidden_size=2048, intermediate_size=5632,
                      num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
                      hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6,
                      tie_word_embeddings=False, use_sliding_window=False, sliding_window=4096,
                      max_window_layers=28, layer_types=None, pad_token_id=None,
                      decoder_sparse_step=1, moe_intermediate_size=1408,
                      shared_expert_intermediate_size=5632, num_experts_per_tok=4,
                      num_experts=60, norm_topk_prob=False, mlp_only_layers=None, qkv_bias=True),
    "phi3": dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=None, hidden_act="silu",
                 max_position_embeddings=4096, original_max_position_embeddings=4096,
                 rms_norm_eps=1e-5, tie_word_embeddings=False, pad_token_id=32000,
                 sliding_window=None),
    "deberta-v2": dict(vocab_size=128100, hidden_size=1536, num_hidden_layers=24,
                       num_attention_heads=24, intermediate_size=6144, hidden_act="gelu",
                       max_position_embeddings=512, type_vocab_size=0, layer_norm_eps=1e-7,
                       relative_attention=False, max_relative_positions=-1, pad_token_id=0,
                       position_biased_input=True, pos_att_type=None, pooler_hidden_act="gelu",
                       tie_word_embeddings=True),
    "modernbert": dict(vocab_size=50368, hidden_size=768, intermediate_size=1152,
                       num_hidden_layers=22, num_attention_heads=12, hidden_activation="gelu",
                       max_position_embeddings=8192, norm_eps=1e-5, norm_bias=False,
                       pad_token_id=50283, attention_bias=False, layer_types=None,
                       local_attention=128, mlp_bias=False, classifier_pooling="cls",
                       classifier_bias=False, classifier_activation="gelu",
                       tie_word_embeddings=True),
    "gpt_neox": dict(vocab_size=50432, hidden_size=6144, num_hidden_layers=44,
                     num_attention_heads=64, intermediate_size=24576, hidden_act="gelu",
                     max_position_embeddings=2048, layer_norm_eps=1e-5, pad_token_id=None,
                     tie_word_embeddings=False, use_parallel_residual=True, attention_bias=True),
    "gemma3_text": dict(vocab_size=262_208, hidden_size=2304, intermediate_size=9216,
                        num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                        head_dim=256, hidden_activation="gelu_pytorch_tanh",
                        max_position_embeddings=131_072, rms_norm_eps=1e-6, pad_token_id=0,
                        tie_word_embeddings=True, attention_bias=False, query_pre_attn_scalar=256,
                        sliding_window=4096, layer_types=None, final_logit_softcapping=None,
                        attn_logit_softcapping=None, use_bidirectional_attention=False),
    "vit": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, hidden_act="gelu", layer_norm_eps=1e-12, image_size=224,
                patch_size=16, num_channels=3, qkv_bias=True),
}

# HF activation names (ACT2FN keys) -> masklrp.kernels.ACTIVATIONS. Only exact matches:
# gelu_fast / quick_gelu / gelu_10 etc. are different functions and are refused.
ACTIVATIONS = {
    "gelu": "gelu", "gelu_python": "gelu",
    "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
    "silu": "silu", "swish": "silu",
    "relu": "relu", "tanh": "tanh",
}


def export(model_or_path: Any, *, tokenizer: Any = None,
           architecture: str | None = None) -> Exported:
    """Export a transformers model or a safetensors folder (see the module docstring).

    ``tokenizer``: anything :class:`~masklrp.tokenizer.Tokenizer` accepts; by default a
    folder's own ``tokenizer.json`` is used, a module gets none. ``architecture`` overrides
    the HF class name that picks the head (e.g. ``"BertModel"`` for a checkpoint whose
    ``config.json`` says ``BertForMaskedLM``).
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        folder = _model_folder(model_or_path)
        config = _read_config(folder)
        arch = architecture or _architecture_of(config)
        with _SafetensorsFolder(folder) as tensors:
            spec, weights = _convert(arch, config, tensors)
        source = str(folder.resolve())
        if tokenizer is None and (folder / "tokenizer.json").is_file():
            tokenizer = folder / "tokenizer.json"
    elif _is_torch_module(model_or_path):
        config = _module_config(model_or_path)
        arch = architecture or type(model_or_path).__name__
        spec, weights = _convert(arch, config, _TorchStateDict(model_or_path))
        name = config.get("_name_or_path") or ""
        source = f"torch:{type(model_or_path).__name__}" + (f" ({name})" if name else "")
    else:
        raise TypeError(
            f"export() takes a transformers torch module or a path to a folder with config.json "
            f"and model.safetensors, got {type(model_or_path).__name__}")
    spec = replace(spec, eos_token_ids=_eos_ids(config, spec.vocab))
    tok = None
    if tokenizer is not None:
        tok = Tokenizer(tokenizer, pad_token_id=spec.pad_token_id)
    return Exported(spec=spec, weights=weights, tokenizer=tok, source=source)


# ----------------------------------------------------------------------------- reading


def _is_torch_module(obj: Any) -> bool:
    """Duck-typed ``isinstance(obj, torch.nn.Module)`` that never imports torch."""
    return (any(c.__name__ == "Module" and c.__module__.startswith("torch.nn")
                for c in type(obj).__mro__)
            and hasattr(obj, "state_dict") and hasattr(obj, "config"))


def _module_config(model: Any) -> dict[str, Any]:
    config = model.config
    if not hasattr(config, "to_dict"):
        raise TypeError(f"{type(model).__name__}.config has no to_dict(): not a transformers model")
    return config.to_dict()


def _model_folder(given: str | os.PathLike) -> Path:
    """The folder ``given`` names; a missing one that looks like a hub id gets a hint."""
    folder = Path(given)
    if folder.is_dir():
        return folder
    if folder.exists():
        raise ValueError(f"{folder} is a file: load() takes the model's folder (config.json + "
                         "model.safetensors)")
    name = str(given)
    hint = ""
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) and not name.startswith("."):
        hint = (f"; if {name!r} is a Hugging Face hub id, download the model first "
                f"(huggingface-cli download {name} --local-dir DIR, then masklrp.load(DIR)), "
                f"or load it with transformers and pass the module: masklrp.load("
                f"AutoModelForSequenceClassification.from_pretrained({name!r}), tokenizer=...)")
    raise FileNotFoundError(f"no model folder at {folder}{hint}")


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json")
    config = _read_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object (the model config), "
                         f"got a {type(config).__name__}")
    return config


def _read_json(path: Path, **options) -> Any:
    """A JSON file, or a ValueError naming it (never a bare JSONDecodeError)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, **options)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def _architecture_of(config: Mapping[str, Any]) -> str:
    archs = config.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise TypeError(f"config architectures must be a list of class names, e.g. "
                        f"[\"BertForSequenceClassification\"], got {archs!r}")
    if archs:
        return archs[0]
    model_type = config.get("model_type")
    if model_type in _BASE_ARCHITECTURE:
        return _BASE_ARCHITECTURE[model_type]
    raise NotImplementedError(
        f"config.json names no architecture and model_type {model_type!r} is not supported "
        f"(supported: {', '.join(sorted(_BASE_ARCHITECTURE))})")


class _Tensors:
    """Named source tensors, read lazily and checked: shape first, then dtype, then float32."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = set(keys)
        self.prefixes: tuple[str, ...] = ()

    def key(self, name: str) -> str | None:
        """The source key of ``name``, with or without a base-model prefix."""
        for prefix in self.prefixes + ("",):
            if prefix + name in self.keys:
                return prefix + name
        return None

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        key = self.key(name)
        if key is None:
            where = " or ".join(repr(p + name) for p in self.prefixes + ("",))
            raise ValueError(f"missing tensor {where}")
        got = tuple(self.shape(key))
        if got != tuple(shape):
            raise ValueError(f"tensor {key!r} has shape {got}, expected {tuple(shape)}")
        array = self.array(key)
        if not np.isfinite(array).all():  # the engine would turn it into NaN logits
            raise ValueError(f"tensor {key!r} holds NaN or infinite values")
        return array

    def same_storage(self, a: str, b: str) -> bool:
        return False

    def shape(self, key: str) -> tuple[int, ...]:
        raise NotImplementedError

    def array(self, key: str) -> np.ndarray:
        raise NotImplementedError


class _TorchStateDict(_Tensors):
    def __init__(self, model: Any) -> None:
        self.state = model.state_dict()
        super().__init__(list(self.state))

    def shape(self, key):
        return tuple(self.state[key].shape)

    def array(self, key):
        t = self.state[key]
        if not t.is_floating_point():
            raise ValueError(f"tensor {key!r} has dtype {t.dtype}, expected a floating type")
        return t.detach().cpu().float().contiguous().numpy()

    def same_storage(self, a, b):
        ka, kb = self.key(a), self.key(b)
        return (ka is not None and kb is not None
                and self.state[ka].data_ptr() == self.state[kb].data_ptr())


class _SafetensorsFolder(_Tensors):
    """``model.safetensors`` or a sharded ``model.safetensors.index.json``, opened lazily.

    A shard index is honoured as written: each tensor is read from the shard its
    ``weight_map`` names, and a tensor that is not in that shard, or that another shard
    holds too, is refused (which copy is meant would be a guess).
    """

    def __init__(self, folder: Path) -> None:
        single = folder / "model.safetensors"
        index = folder / "model.safetensors.index.json"
        self.handles = {}
        self.file_of: dict[str, Path] = {}
        if single.is_file():
            self.file_of = {key: single for key in self._open(single).keys()}
        elif index.is_file():
            self.file_of = self._sharded(folder, index)
        else:
            raise FileNotFoundError(
                f"{folder}: no model.safetensors or model.safetensors.index.json "
                "(pytorch_model.bin needs torch: load it with transformers and export the module)")
        super().__init__(list(self.file_of))

    def _open(self, path: Path):
        from safetensors import SafetensorError, safe_open

        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such safetensors file")
        try:
            handle = safe_open(str(path), framework="np")
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{path} is not a readable safetensors file ({e})") from None
        self.handles[path] = handle
        return handle

    def _sharded(self, folder: Path, index: Path) -> dict[str, Path]:
        content = _read_json(index, object_pairs_hook=_no_duplicate_keys(index))
        weight_map = content.get("weight_map") if isinstance(content, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} must hold a non-empty \"weight_map\" object "
                             "(tensor name -> shard file name)")
        file_of, shards = {}, {}
        for key, name in weight_map.items():
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise ValueError(f"{index}: weight_map[{key!r}] must be a shard file name in "
                                 f"the same folder, got {name!r}")
            file_of[key] = folder / name
            shards.setdefault(folder / name, set()).add(key)
        owner: dict[str, Path] = {}
        for path in sorted(shards):
            for key in self._open(path).keys():
                if key in owner:
                    raise ValueError(f"tensor {key!r} is in both {owner[key].name} and {path.name}")
                owner[key] = path
        for key, path in file_of.items():
            if owner.get(key) != path:
                raise ValueError(f"{index}: weight_map puts {key!r} in {path.name}, but "
                                 f"{path.name} does not hold it")
        return file_of

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handles.clear()

    def shape(self, key):
        return tuple(self.handles[self.file_of[key]].get_slice(key).get_shape())

    def array(self, key):
        path = self.file_of[key]
        dtype = self.handles[path].get_slice(key).get_dtype()
        if dtype == "BF16":  # NumPy has no bfloat16: widen the raw bits
            return _read_bf16(path, key)
        if dtype not in ("F16", "F32", "F64"):
            raise ValueError(f"tensor {key!r} has dtype {dtype}, expected a floating type")
        return np.ascontiguousarray(self.handles[path].get_tensor(key), dtype=np.float32)


def _no_duplicate_keys(path: Path):
    """A json ``object_pairs_hook`` refusing a key given twice (json keeps the last silently)."""
    def pairs(items):
        seen = {}
        for key, value in items:
            if key in seen:
                raise ValueError(f"{path}: the key {key!r} appears twice")
            seen[key] = value
        return seen
    return pairs


def _read_bf16(path: Path, key: str) -> np.ndarray:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        info = json.loads(f.read(n))[key]
    start, end = info["data_offsets"]
    raw = np.fromfile(path, dtype="<u2", count=(end - start) // 2, offset=8 + n + start)
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


# ----------------------------------------------------------------------------- converting


class _Config:
    """A config dict with the class defaults of its model_type; ``cfg[key]`` or a clear error.

    :meth:`size` and :meth:`epsilon` read the numbers the engine relies on, checked here so
    that a bad value is named by its config key (not met later as a ZeroDivisionError or
    NaN logits).
    """

    def __init__(self, raw: Mapping[str, Any], model_type: str) -> None:
        self.values = {**CONFIG_DEFAULTS[model_type], **raw}

    def __getitem__(self, key: str) -> Any:
        if key not in self.values:
            raise ValueError(f"config has no {key!r}")
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        value = self.values.get(key, default)
        return default if value is None else value

    def size(self, key: str, minimum: int = 1, default: Any = None) -> int:
        """An int >= ``minimum``; ``default`` when the key is absent or null (if given)."""
        value = self[key] if default is None else self.get(key, default)
        return integer(value, f"config {key}", minimum, maximum=INT32_MAX)

    def epsilon(self, key: str) -> float:
        return number(self[key], f"config {key}", positive=True, float32=True)


def _convert(arch: str, raw_config: Mapping[str, Any],
             tensors: _Tensors) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    if arch in _REFUSED_HEADS:
        raise NotImplementedError(f"architecture {arch!r} is not supported: {_REFUSED_HEADS[arch]}")
    if arch not in ARCHITECTURES:
        raise NotImplementedError(
            f"architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)}); "
            "pass architecture=... to export a supported head of the same model_type")
    model_type, task = ARCHITECTURES[arch]
    if raw_config.get("model_type", model_type) != model_type:
        raise ValueError(f"architecture {arch} expects model_type {model_type!r}, "
                         f"config says {raw_config.get('model_type')!r}")
    cfg = _Config(raw_config, model_type)
    spec_fields, weights = _FAMILIES[model_type](arch, model_type, task, cfg, tensors)
    spec = ModelSpec(architecture=arch, model_type=model_type, task=task, **spec_fields)
    check_weights(spec, weights)
    return spec, weights


def _activation(cfg: _Config, key: str) -> str:
    name = cfg[key]
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise NotImplementedError(
            f"{key}={name!r} is not supported (supported: {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]


def _pad_id(cfg: _Config) -> int:
    """The pad id, -1 when the config names none (some LLaMA conversions write -1 for that)."""
    pad = cfg.get("pad_token_id")
    return -1 if pad is None else integer(pad, "config pad_token_id", -1, maximum=INT32_MAX)


def _eos_ids(cfg: dict[str, Any], vocab: int) -> tuple[int, ...]:
    """The config's ``eos_token_id`` (an id, a list of them or none) as a tuple; ids outside the
    vocabulary (-1 for "none" in some conversions) are dropped: no token could match them."""
    eos = cfg.get("eos_token_id")
    ids = eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError(f"config eos_token_id must be an int or a list of ints, got {eos!r}")
    return tuple(dict.fromkeys(i for i in ids if 0 <= i < vocab))


def _head_size(hidden: int, heads: int, names: tuple[str, str]) -> int:
    if hidden % heads:
        raise ValueError(f"config {names[0]} ({hidden}) must be a multiple of {names[1]} ({heads})")
    return hidden // heads


def _n_labels(cfg: _Config) -> tuple[int, tuple[str, ...]]:
    """(num_labels, labels) as PretrainedConfig derives them from id2label / num_labels."""
    id2label = cfg.get("id2label")
    if id2label is not None and not isinstance(id2label, Mapping):
        raise TypeError(f"config id2label must be an object mapping class indices to label names, "
                        f"e.g. {{\"0\": \"negative\", \"1\": \"positive\"}}, got {id2label!r}")
    if id2label:
        labels = {}
        for k, v in id2label.items():
            if not (isinstance(k, int) or (isinstance(k, str) and k.strip().isdigit())):
                raise ValueError(f"config id2label keys must be class indices 0, 1, ..., got {k!r}")
            labels[int(k)] = str(v)
        n = len(labels)
        if sorted(labels) != list(range(n)):
            raise ValueError(f"config id2label keys must be 0..{n - 1}, got {sorted(labels)}")
        return n, tuple(labels[i] for i in range(n))
    n = cfg.size("num_labels", default=2)
    return n, tuple(f"LABEL_{i}" for i in range(n))


def _linear(tensors: _Tensors, weights: dict, out: str, src: str, rows: int, cols: int,
            bias: bool = True, transpose: bool = False) -> None:
    """weights[out.weight/.bias] = the source linear ``src`` (transposed from Conv1D if asked)."""
    if transpose:
        weights[out + ".weight"] = np.ascontiguousarray(
            tensors.get(src + ".weight", (cols, rows)).T)
    else:
        weights[out + ".weight"] = tensors.get(src + ".weight", (rows, cols))
    if bias:
        weights[out + ".bias"] = tensors.get(src + ".bias", (rows,))


def _fused(tensors: _Tensors, weights: dict, out: str, srcs: list[tuple[str, int]], cols: int,
           bias: bool) -> None:
    """weights[out] = the source linears ``srcs`` (name, rows) stacked by rows, in order."""
    weights[out + ".weight"] = np.concatenate(
        [tensors.get(name + ".weight", (rows, cols)) for name, rows in srcs], axis=0)
    if bias:
        weights[out + ".bias"] = np.concatenate(
            [tensors.get(name + ".bias", (rows,)) for name, rows in srcs], axis=0)


def _norm(tensors: _Tensors, weights: dict, out: str, src: str, size: int, bias: bool) -> None:
    weights[out + ".weight"] = tensors.get(src + ".weight", (size,))
    if bias:
        weights[out + ".bias"] = tensors.get(src + ".bias", (size,))


def _classifier_head(task: str, cfg: _Config, hidden: int, vocab: int):
    """(n_outputs, labels) for a task; base models output the hidden state."""
    if task in ("sequence-classification", "image-classification"):
        return _n_labels(cfg)
    if task == "question-answering":
        return 2, ()
    if task == "causal-lm":
        return vocab, ()
    return hidden, ()


def _post_ln_layer(tensors: _Tensors, w: dict, o: str, names: dict, C: int, F: int,
                   HD: int | None = None) -> None:
    """A BERT-like layer ``o`` from the source linears and norms ``names`` (q, k, v, out,
    attn_norm, up, down, mlp_norm); HD: the heads' width when it is not C (DeBERTa)."""
    HD = HD or C
    _fused(tensors, w, o + ".qkv", [(names[x], HD) for x in "qkv"], C, bias=True)
    _linear(tensors, w, o + ".out", names["out"], C, HD)
    _norm(tensors, w, o + ".attn_norm", names["attn_norm"], C, True)
    _linear(tensors, w, o + ".up", names["up"], F, C)
    _linear(tensors, w, o + ".down", names["down"], C, F)
    _norm(tensors, w, o + ".mlp_norm", names["mlp_norm"], C, True)


# The attribute (and key prefix) of the base model where it is not the model_type.
_BASE_PREFIX = {"xlm-roberta": "roberta"}


def _encoder(arch, model_type, task, cfg, tensors):
    """BERT, RoBERTa, XLM-RoBERTa, DistilBERT, MPNet, ELECTRA and ALBERT: post-LN encoders
    with absolute position tables. MPNet adds a relative position bias to every layer's
    scores; ELECTRA and ALBERT project E-wide embeddings to the hidden size; ALBERT's layers
    share the weights of their group (``num_hidden_groups``, usually one for all)."""
    distil, mpnet, albert = model_type == "distilbert", model_type == "mpnet", model_type == "albert"
    if distil:
        C, L, H, F = (cfg.size(k) for k in ("dim", "n_layers", "n_heads", "hidden_dim"))
        names = ("dim", "n_heads")
        act = _activation(cfg, "activation")
        eps = 1e-12  # hard-coded in transformers' DistilBERT (nn.LayerNorm(dim, eps=1e-12))
        type_vocab = 0
        tensors.prefixes = ("distilbert.",)
    else:
        if cfg.get("add_cross_attention", False):
            raise NotImplementedError(f"{arch} with add_cross_attention=True (cross-attention "
                                      "to an encoder) is not supported")
        if cfg.get("is_decoder", False):
            raise NotImplementedError(f"{arch} with is_decoder=True (a causal {model_type}) "
                                      "is not supported")
        pos_type = cfg.get("position_embedding_type", "absolute")
        if pos_type != "absolute":
            raise NotImplementedError(
                f"{arch} with position_embedding_type={pos_type!r} is not supported "
                "(only 'absolute'; transformers 5 ignores this option, so a relative-position "
                "checkpoint would also load wrongly there)")
        C, L = cfg.size("hidden_size"), cfg.size("num_hidden_layers")
        H, F = cfg.size("num_attention_heads"), cfg.size("intermediate_size")
        names = ("hidden_size", "num_attention_heads")
        act = _activation(cfg, "hidden_act")
        eps = cfg.epsilon("layer_norm_eps")
        type_vocab = 0 if mpnet else cfg.size("type_vocab_size", 0)  # MPNet has no token types
        tensors.prefixes = (f"{_BASE_PREFIX.get(model_type, model_type)}.",)
    # ELECTRA and ALBERT: embeddings E wide, LayerNorm-ed, then a linear to C (ELECTRA's only
    # when E != C; ALBERT's always)
    E = cfg.size("embedding_size") if model_type in ("electra", "albert") else C
    project = {"electra": "embeddings_project" if E != C else None,
               "albert": "encoder.embedding_hidden_mapping_in"}.get(model_type)
    if albert and cfg.size("inner_group_num") != 1:
        raise NotImplementedError(
            f"{arch} with inner_group_num={cfg.get('inner_group_num')} (several layers in each "
            "shared group) is not supported; only inner_group_num=1")
    groups = cfg.size("num_hidden_groups") if albert else L
    if groups > L:
        raise ValueError(f"config num_hidden_groups ({groups}) must be at most "
                         f"num_hidden_layers ({L})")
    D = _head_size(C, H, names)
    V, P = cfg.size("vocab_size"), cfg.size("max_position_embeddings")
    pad = _pad_id(cfg)
    if model_type in ("roberta", "xlm-roberta", "mpnet"):  # positions after padding_idx
        if pad < 0:
            raise ValueError("RoBERTa positions need config.pad_token_id (padding_idx)")
        if P - pad - 1 < 1:
            raise ValueError(f"config max_position_embeddings ({P}) leaves no position after "
                             f"RoBERTa's padding_idx (pad_token_id {pad})")
        positions, max_positions = "roberta", P - pad - 1
    else:
        positions, max_positions = "absolute", P
    n_out, labels = _classifier_head(task, cfg, C, V)

    w: dict[str, np.ndarray] = {}
    w["embed.word"] = tensors.get("embeddings.word_embeddings.weight", (V, E))
    w["embed.position"] = tensors.get("embeddings.position_embeddings.weight", (P, E))
    if type_vocab:
        w["embed.type"] = tensors.get("embeddings.token_type_embeddings.weight", (type_vocab, E))
    _norm(tensors, w, "embed.norm", "embeddings.LayerNorm", E, True)
    if project:
        _linear(tensors, w, "embed.project", project, C, E)
    first_of_group: dict[int, int] = {}
    for i in range(L):
        o = f"layers.{i}"
        group = int(i / (L / groups))  # as AlbertTransformer picks it; i itself elsewhere
        if group in first_of_group:  # ALBERT: the group's arrays themselves, never copies
            j = first_of_group[group]
            for name in [k for k in w if k.startswith(f"layers.{j}.")]:
                w[f"{o}.{name[len(f'layers.{j}.'):]}"] = w[name]
            continue
        first_of_group[group] = i
        if albert:
            s = f"encoder.albert_layer_groups.{group}.albert_layers.0."
            names = dict(q=s + "attention.query", k=s + "attention.key", v=s + "attention.value",
                         out=s + "attention.dense", attn_norm=s + "attention.LayerNorm",
                         up=s + "ffn", down=s + "ffn_output", mlp_norm=s + "full_layer_layer_norm")
        elif distil:
            s = f"transformer.layer.{i}."
            names = dict(q=s + "attention.q_lin", k=s + "attention.k_lin",
                         v=s + "attention.v_lin", out=s + "attention.out_lin",
                         attn_norm=s + "sa_layer_norm", up=s + "ffn.lin1", down=s + "ffn.lin2",
                         mlp_norm=s + "output_layer_norm")
        elif mpnet:
            s = f"encoder.layer.{i}."
            names = dict(q=s + "attention.attn.q", k=s + "attention.attn.k", v=s + "attention.attn.v",
                         out=s + "attention.attn.o", attn_norm=s + "attention.LayerNorm",
                         up=s + "intermediate.dense", down=s + "output.dense", mlp_norm=s + "output.LayerNorm")
        else:
            s = f"encoder.layer.{i}."
            names = dict(q=s + "attention.self.query", k=s + "attention.self.key",
                         v=s + "attention.self.value", out=s + "attention.output.dense",
                         attn_norm=s + "attention.output.LayerNorm",
                         up=s + "intermediate.dense", down=s + "output.dense",
                         mlp_norm=s + "output.LayerNorm")
        _post_ln_layer(tensors, w, o, names, C, F)
    if mpnet:
        buckets = cfg.size("relative_attention_num_buckets")
        table = tensors.get("encoder.relative_attention_bias.weight", (buckets, H))
        w["attn.relative_bias"] = relative_position.bias_by_offset(table, max_positions)

    pool, head_act = "mean", ""
    if task == "sequence-classification":
        pool = "first"
        dense, out, head_act = {
            "bert": ("pooler.dense", "classifier", "tanh"),
            "roberta": ("classifier.dense", "classifier.out_proj", "tanh"),
            "xlm-roberta": ("classifier.dense", "classifier.out_proj", "tanh"),
            "electra": ("classifier.dense", "classifier.out_proj", "gelu"),
            "albert": ("pooler", "classifier", "tanh"),
            "mpnet": ("classifier.dense", "classifier.out_proj", "tanh"),
            "distilbert": ("pre_classifier", "classifier", "relu"),
        }[model_type]
        _linear(tensors, w, "head.dense", dense, C, C)
        _linear(tensors, w, "head.out", out, n_out, C)
    elif task == "question-answering":
        pool = "none"
        _linear(tensors, w, "head.out", "qa_outputs", n_out, C)

    fields = dict(family="encoder", norm="layernorm", activation=act, gated_mlp=False,
                  n_layers=L, n_heads=H, n_kv_heads=H, head_dim=D, hidden=C, intermediate=F,
                  vocab=V, max_positions=max_positions, type_vocab=type_vocab, norm_eps=eps,
                  attn_scale=D ** -0.5, causal=False, sliding_window=0, positions=positions,
                  rope_attention_scaling=1.0, pool=pool, head_activation=head_act,
                  n_outputs=n_out, pad_token_id=pad, labels=labels, relative_bias=mpnet,
                  embedding_size=E if project else 0)
    return fields, w


def _decoder_head(task, cfg, tensors, w, C, V, n_out, embed_key, lm_key="lm_head.weight") -> str:
    """LM / score / QA head of a decoder; returns the pool. ``lm_key``: the LM head's name.

    A tied LM head is ``w["embed.word"]`` itself. From a module, tied means what the module
    computes (lm_head and the embeddings share storage); from a folder, what HF does on
    loading (``tie_word_embeddings``; the saved file then usually has no ``lm_head``).
    """
    if task == "causal-lm":
        tied = (tensors.same_storage(lm_key, embed_key)
                if isinstance(tensors, _TorchStateDict) else bool(cfg["tie_word_embeddings"]))
        w["head.out.weight"] = w["embed.word"] if tied else tensors.get(lm_key, (V, C))
        return "last"
    if task == "sequence-classification":
        w["head.out.weight"] = tensors.get("score.weight", (n_out, C))
        return "last"
    if task == "question-answering":
        _linear(tensors, w, "head.out", "qa_outputs", n_out, C)
        return "none"
    return "last"


def _gpt2(arch, model_type, task, cfg, tensors):
    """GPT-2: pre-LN decoder, Conv1D weights stored (in, out), learned positions."""
    if cfg.get("scale_attn_by_inverse_layer_idx", False):
        raise NotImplementedError(f"{arch} with scale_attn_by_inverse_layer_idx=True "
                                  "(a per-layer attention scale) is not supported")
    if cfg.get("add_cross_attention", False):
        raise NotImplementedError(f"{arch} with add_cross_attention=True is not supported")
    C, L, H = cfg.size("n_embd"), cfg.size("n_layer"), cfg.size("n_head")
    F = cfg.size("n_inner", default=4 * C)
    D = _head_size(C, H, ("n_embd", "n_head"))
    V, P = cfg.size("vocab_size"), cfg.size("n_positions")
    act = _activation(cfg, "activation_function")
    eps = cfg.epsilon("layer_norm_epsilon")
    n_out, labels = _classifier_head(task, cfg, C, V)
    tensors.prefixes = ("transformer.",)

    w: dict[str, np.ndarray] = {}
    w["embed.word"] = tensors.get("wte.weight", (V, C))
    w["embed.position"] = tensors.get("wpe.weight", (P, C))
    for i in range(L):
        o, s = f"layers.{i}", f"h.{i}."
        _norm(tensors, w, o + ".attn_norm", s + "ln_1", C, True)
        _linear(tensors, w, o + ".qkv", s + "attn.c_attn", 3 * C, C, transpose=True)
        _linear(tensors, w, o + ".out", s + "attn.c_proj", C, C, transpose=True)
        _norm(tensors, w, o + ".mlp_norm", s + "ln_2", C, True)
        _linear(tensors, w, o + ".up", s + "mlp.c_fc", F, C, transpose=True)
        _linear(tensors, w, o + ".down", s + "mlp.c_proj", C, F, transpose=True)
    _norm(tensors, w, "final_norm", "ln_f", C, True)
    pool = _decoder_head(task, cfg, tensors, w, C, V, n_out, "wte.weight")

    fields = dict(family="decoder", norm="layernorm", activation=act, gated_mlp=False,
                  n_layers=L, n_heads=H, n_kv_heads=H, head_dim=D, hidden=C, intermediate=F,
                  vocab=V, max_positions=P, type_vocab=0,
                  norm_eps=eps,
                  attn_scale=D ** -0.5 if cfg.get("scale_attn_weights", True) else 1.0,
                  causal=True, sliding_window=0, positions="absolute",
                  rope_attention_scaling=1.0, pool=pool, head_activation="",
                  n_outputs=n_out, pad_token_id=_pad_id(cfg), labels=labels)
    return fields, w


def _sliding_window(arch: str, model_type: str, cfg: _Config) -> int:
    """One window for every layer, or 0; per-layer windows are refused."""
    if model_type == "llama":
        return 0
    if model_type in ("mistral", "phi3", "mixtral"):
        return cfg.size("sliding_window", 0, default=0)
    # qwen2, qwen3: the config drops the window unless use_sliding_window, then layer_types decides
    if not cfg.get("use_sliding_window", False) or not cfg.get("sliding_window"):
        return 0
    n = cfg.size("num_hidden_layers")
    layer_types = cfg.get("layer_types") or [
        "sliding_attention" if i >= cfg.size("max_window_layers", 0) else "full_attention"
        for i in range(n)]
    if not isinstance(layer_types, list) or not all(isinstance(t, str) for t in layer_types):
        raise TypeError(f"config layer_types must be a list of names, got {layer_types!r}")
    kinds = set(layer_types)
    if kinds == {"full_attention"}:
        return 0
    if kinds == {"sliding_attention"}:
        return cfg.size("sliding_window")
    raise NotImplementedError(
        f"{arch} with use_sliding_window=True and a window on only some layers "
        f"(max_window_layers={cfg.get('max_window_layers')}, layer_types={layer_types}) is not "
        "supported: the engine has one sliding_window for all layers")


def _two_kinds_of_layers(arch: str, cfg: _Config, kinds: list, params: Mapping,
                         ) -> tuple[tuple[bool, ...], dict, dict]:
    """Interleaved sliding-window and full layers, each kind with its own RoPE (Gemma 3,
    ModernBERT): which layers slide, and a config view of each kind's RoPE parameters.

    ``kinds``: ``layer_types``, one name per layer; ``params``: ``rope_parameters`` keyed by
    kind (the caller reads older keys into this form as the model's config class does).
    """
    L = cfg.size("num_hidden_layers")
    if (not isinstance(kinds, list) or len(kinds) != L
            or not set(kinds) <= {"sliding_attention", "full_attention"}):
        raise ValueError(f"config layer_types must list 'sliding_attention' or 'full_attention' "
                         f"for each of the {L} layers, got {kinds!r}")
    views = []
    for kind in ("full_attention", "sliding_attention"):
        own = params.get(kind) or {}
        if not isinstance(own, Mapping):
            raise TypeError(f"config rope_parameters.{kind} must be an object, got {own!r}")
        own = {"rope_type": own.get("type", "default"), **own}
        if own["rope_type"] == "longrope":
            raise NotImplementedError(f"{arch} with rope_type 'longrope' ({kind}) is not supported")
        views.append({**cfg.values, "rope_parameters": own, "rope_scaling": None,
                      "layer_types": None, "partial_rotary_factor": None})
    return tuple(k == "sliding_attention" for k in kinds), views[0], views[1]


def _rope_by_kind(cfg: _Config) -> Mapping:
    """``rope_parameters`` (an object), which may be keyed by layer kind."""
    params = cfg.get("rope_parameters") or {}
    if not isinstance(params, Mapping):
        raise TypeError(f"config rope_parameters must be an object, got {params!r}")
    return params


def _gemma3_layers(arch: str, cfg: _Config) -> tuple[tuple[bool, ...], dict, dict]:
    """Gemma 3's layer kinds and RoPE, as ``Gemma3TextConfig`` standardises them:
    ``layer_types`` or, in older files, every ``sliding_window_pattern``-th layer full; nested
    ``rope_parameters`` or, in older files, ``rope_theta`` + ``rope_scaling`` (full layers)
    and ``rope_local_base_freq`` (sliding)."""
    L = cfg.size("num_hidden_layers")
    pattern = cfg.size("sliding_window_pattern", default=6)
    kinds = cfg.get("layer_types") or [
        "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(L)]
    params = _rope_by_kind(cfg)
    if "full_attention" not in params and "sliding_attention" not in params:
        params = {"full_attention": dict(params, **(cfg.get("rope_scaling") or {})),
                  "sliding_attention": {"rope_theta": cfg.get("rope_local_base_freq", 10_000.0)}}
        params["full_attention"].setdefault("rope_theta", cfg.get("rope_theta", 1_000_000.0))
    return _two_kinds_of_layers(arch, cfg, kinds, params)


def _modernbert_layers(arch: str, cfg: _Config) -> tuple[tuple[bool, ...], dict, dict]:
    """ModernBERT's layer kinds and RoPE, as ``ModernBertConfig`` standardises them:
    ``layer_types`` or, in older files, every ``global_attn_every_n_layers``-th layer full
    (from layer 0); nested ``rope_parameters`` or ``global_rope_theta`` / ``local_rope_theta``,
    ``rope_scaling`` applying to both."""
    L = cfg.size("num_hidden_layers")
    every = cfg.size("global_attn_every_n_layers", default=3)
    kinds = cfg.get("layer_types") or [
        "sliding_attention" if i % every else "full_attention" for i in range(L)]
    given = _rope_by_kind(cfg)
    scaling = cfg.get("rope_scaling") or {}
    params = {}
    for kind, key, theta in (("full_attention", "global_rope_theta", 160_000.0),
                             ("sliding_attention", "local_rope_theta", 10_000.0)):
        own = given.get(kind) or {}
        params[kind] = {"rope_type": "default", **own, **scaling}
        params[kind].setdefault("rope_theta", cfg.get(key, theta))
    return _two_kinds_of_layers(arch, cfg, kinds, params)


def _finite_angles(inv_freq: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
    """``inv_freq``, checked to give float32 angles up to the config's max positions."""
    if not np.isfinite(inv_freq * np.float32(max_rope_positions(config))).all():
        raise ValueError("config RoPE parameters give rotation angles beyond float32 "
                         f"(largest inverse frequency {inv_freq.max():g})")
    return inv_freq


def _rope_table(config: Mapping[str, Any], R: int) -> tuple[np.ndarray, float]:
    """``rope_parameters`` of a config, checked to stay finite up to its max_positions."""
    inv_freq, scaling = rope_parameters(config, R)
    return _finite_angles(inv_freq, config), scaling


def _two_rope_tables(arch: str, full: dict, local: dict, R: int):
    """``(inv_freq, inv_freq_local, attention scaling, max positions)`` of the full and the
    sliding layers' config views (:func:`_two_kinds_of_layers`)."""
    inv_freq, scaling = _rope_table(full, R)
    inv_freq_local, local_scaling = _rope_table(local, R)
    if local_scaling != scaling:
        raise NotImplementedError(f"{arch} with different RoPE attention scalings for full "
                                  f"({scaling}) and sliding ({local_scaling}) layers is not "
                                  "supported")
    return inv_freq, inv_freq_local, scaling, min(max_rope_positions(full), max_rope_positions(local))


def _unit_offset(w: dict, name: str) -> None:
    """Gemma's RMSNorm scales by (1 + weight): stored as that float32 sum, as HF computes it."""
    w[name] = np.add(np.float32(1.0), w[name], dtype=np.float32)


def _llama(arch, model_type, task, cfg, tensors):
    """LLaMA, Mistral, Qwen2, Qwen3, Phi-3, Gemma 3, Mixtral, Qwen2-MoE: RMSNorm, RoPE, gated
    MLP, grouped-query attention. Mixtral and Qwen2-MoE replace the MLP by a mixture of experts
    (:func:`_experts`). Qwen3 and Gemma 3 RMSNorm each q / k head before RoPE; Phi-3 stores q/k/v and
    gate/up fused (in the canonical row order already), LongRoPE, partial RoPE; Gemma 3 norms
    each branch's output too (RMSNorm by 1 + weight), scales the embeddings by √C, interleaves
    sliding-window layers (with their own RoPE table) with full ones, scales scores by
    query_pre_attn_scalar^-1/2 and may soft-cap the final logits."""
    moe = model_type in ("mixtral", "qwen2_moe")
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        if cfg.get(key) and not moe:
            raise NotImplementedError(f"{arch} with {key}={cfg.get(key)} (mixture of experts) "
                                      "is not supported")
    phi3, gemma = model_type == "phi3", model_type == "gemma3_text"
    C, L = cfg.size("hidden_size"), cfg.size("num_hidden_layers")
    H, F = cfg.size("num_attention_heads"), cfg.size("intermediate_size")
    experts = _moe_fields(arch, model_type, cfg) if moe else {}
    if experts.get("shared_expert"):  # the dense MLP beside the experts
        F = cfg.size("shared_expert_intermediate_size")
    KV = cfg.size("num_key_value_heads", default=H)
    if H % KV:
        raise ValueError(f"config num_key_value_heads ({KV}) must divide num_attention_heads ({H})")
    D = (cfg.size("head_dim") if cfg.get("head_dim") is not None
         else _head_size(C, H, ("hidden_size", "num_attention_heads")))
    V = cfg.size("vocab_size")
    cfg.size("max_position_embeddings")  # checked here: the RoPE code reads it as it is
    act = _activation(cfg, "hidden_activation" if gemma else "hidden_act")
    attention_bias = (model_type in ("llama", "qwen3", "gemma3_text")
                      and bool(cfg.get("attention_bias", False)))
    qkv_bias = (model_type == "qwen2" or attention_bias
                or model_type == "qwen2_moe" and bool(cfg.get("qkv_bias", True)))
    out_bias = attention_bias
    qk_norm = model_type in ("qwen3", "gemma3_text")
    mlp_bias = model_type == "llama" and bool(cfg.get("mlp_bias", False))
    R = D if gemma else rotary_dim(cfg.values, D, partial=phi3)  # Gemma's views: full heads
    inv_freq_local = None
    sliding_layers: tuple[bool, ...] = ()
    if gemma:
        if cfg.get("use_bidirectional_attention", False):
            raise NotImplementedError(f"{arch} with use_bidirectional_attention=True is not "
                                      "supported (the engine's decoders are causal)")
        if cfg.get("attn_logit_softcapping") is not None:
            raise NotImplementedError(
                f"{arch} with attn_logit_softcapping={cfg.get('attn_logit_softcapping')} is not "
                "supported: transformers 5.23's Gemma 3 never applies it, so there is no "
                "reference to match")
        sliding_layers, full, local = _gemma3_layers(arch, cfg)
        inv_freq, inv_freq_local, rope_scaling, max_positions = _two_rope_tables(arch, full, local, R)
        window = cfg.size("sliding_window", 0, default=0) if any(sliding_layers) else 0
        if not window:
            sliding_layers = ()
        inv_freq_long = None
    else:
        window = _sliding_window(arch, model_type, cfg)
        inv_freq, rope_scaling = _rope_table(cfg.values, R)
        inv_freq_long = rope_long_inv_freq(cfg.values, R)
        if inv_freq_long is not None:
            _finite_angles(inv_freq_long, cfg.values)
        max_positions = max_rope_positions(cfg.values)
    eps = cfg.epsilon("rms_norm_eps")
    n_out, labels = _classifier_head(task, cfg, C, V)
    tensors.prefixes = ("model.", "transformer.")
    # the norms' HF names: before attention, after it, before the MLP, after it
    norms = (("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
              "post_feedforward_layernorm") if gemma else
             ("input_layernorm", None, "post_attention_layernorm", None))

    w: dict[str, np.ndarray] = {}
    w["embed.word"] = tensors.get("embed_tokens.weight", (V, C))
    for i in range(L):
        o, s = f"layers.{i}", f"layers.{i}."
        for out, src in zip(("attn_norm", "attn_post_norm", "mlp_norm", "mlp_post_norm"), norms):
            if src is not None:
                _norm(tensors, w, f"{o}.{out}", s + src, C, False)
        if phi3:
            _linear(tensors, w, o + ".qkv", s + "self_attn.qkv_proj", (H + 2 * KV) * D, C,
                    bias=False)
        else:
            _fused(tensors, w, o + ".qkv", [(s + "self_attn.q_proj", H * D),
                                            (s + "self_attn.k_proj", KV * D),
                                            (s + "self_attn.v_proj", KV * D)], C, bias=qkv_bias)
        _linear(tensors, w, o + ".out", s + "self_attn.o_proj", C, H * D, bias=out_bias)
        if qk_norm:
            _norm(tensors, w, o + ".q_norm", s + "self_attn.q_norm", D, False)
            _norm(tensors, w, o + ".k_norm", s + "self_attn.k_norm", D, False)
        if experts:
            _experts(tensors, w, o, s, experts, C, F)
            continue
        if phi3:
            _linear(tensors, w, o + ".up", s + "mlp.gate_up_proj", 2 * F, C, bias=False)
        else:
            _fused(tensors, w, o + ".up", [(s + "mlp.gate_proj", F), (s + "mlp.up_proj", F)], C,
                   bias=mlp_bias)
        _linear(tensors, w, o + ".down", s + "mlp.down_proj", C, F, bias=mlp_bias)
    _norm(tensors, w, "final_norm", "norm", C, False)
    if gemma:
        for name in [k for k in w if k.endswith("norm.weight")]:
            _unit_offset(w, name)
    w["rope.inv_freq"] = inv_freq
    long_after = 0
    if inv_freq_long is not None:
        w["rope.inv_freq_long"] = inv_freq_long
        long_after = integer(rope_config(cfg.values)["original_max_position_embeddings"],
                             "config original_max_position_embeddings", 1, maximum=INT32_MAX)
    if sliding_layers:
        w["rope.inv_freq_local"] = inv_freq_local
    pool = _decoder_head(task, cfg, tensors, w, C, V, n_out, "embed_tokens.weight")

    fields = dict(family="decoder", norm="rmsnorm", activation=act, gated_mlp=True,
                  n_layers=L, n_heads=H, n_kv_heads=KV, head_dim=D, hidden=C, intermediate=F,
                  vocab=V, max_positions=max_positions, type_vocab=0,
                  norm_eps=eps, attn_scale=D ** -0.5, causal=True,
                  sliding_window=window, positions="rope",
                  rope_attention_scaling=float(rope_scaling), pool=pool, head_activation="",
                  n_outputs=n_out, pad_token_id=_pad_id(cfg), labels=labels, qk_norm=qk_norm,
                  rotary_dim=R if R != D else 0, rope_long_after=long_after, **experts)
    if gemma:
        softcap = cfg.get("final_logit_softcapping")
        fields.update(attn_scale=number(cfg["query_pre_attn_scalar"],
                                        "config query_pre_attn_scalar", positive=True) ** -0.5,
                      sliding_layers=sliding_layers, post_norms=True, embed_scale=C ** 0.5,
                      final_softcap=0.0 if softcap is None or task != "causal-lm" else
                      number(softcap, "config final_logit_softcapping", positive=True))
    return fields, w


def _moe_fields(arch: str, model_type: str, cfg: _Config) -> dict:
    """The spec fields of Mixtral's or Qwen2-MoE's mixture of experts. Mixtral always
    renormalises the top-k weights; Qwen2-MoE does with ``norm_topk_prob`` and adds a shared
    expert. Qwen2-MoE's dense layers between sparse ones are refused (the engine has one MLP
    width per model)."""
    if model_type == "mixtral":
        X, XF = cfg.size("num_local_experts"), cfg.size("intermediate_size")
        norm, shared = True, False
    else:
        step, dense = cfg.get("decoder_sparse_step", 1), cfg.get("mlp_only_layers") or []
        if step != 1 or dense:
            option = f"decoder_sparse_step={step}" if step != 1 else f"mlp_only_layers={dense}"
            raise NotImplementedError(f"{arch} with {option} (dense MLP layers between the sparse "
                                      "ones) is not supported")
        X, XF = cfg.size("num_experts"), cfg.size("moe_intermediate_size")
        norm, shared = bool(cfg.get("norm_topk_prob", False)), True
    K = cfg.size("num_experts_per_tok")
    if K > X:
        raise ValueError(f"config num_experts_per_tok ({K}) must be at most the number of "
                         f"experts ({X})")
    return dict(n_experts=X, experts_per_token=K, expert_intermediate=XF, norm_topk_prob=norm,
                shared_expert=shared)


def _experts(tensors: _Tensors, w: dict, o: str, s: str, fields: dict, C: int, F: int) -> None:
    """Layer ``o``'s router, experts and shared expert from the layer ``s`` of a transformers 5
    module (3-D ``experts.gate_up_proj`` / ``down_proj``) or of a checkpoint (one linear per
    expert and projection: Mixtral's ``block_sparse_moe.experts.{e}.w1`` (gate) / ``w3`` (up) /
    ``w2`` (down), Qwen2-MoE's ``mlp.experts.{e}.gate_proj`` / ``up_proj`` / ``down_proj``); F:
    the shared expert's width."""
    X, XF = fields["n_experts"], fields["expert_intermediate"]
    block = s + ("mlp." if tensors.key(s + "mlp.gate.weight") is not None else "block_sparse_moe.")
    w[o + ".router.weight"] = tensors.get(block + "gate.weight", (X, C))
    if tensors.key(block + "experts.gate_up_proj") is not None:
        up = tensors.get(block + "experts.gate_up_proj", (X, 2 * XF, C))
        down = tensors.get(block + "experts.down_proj", (X, C, XF))
    else:
        gate_name, up_name, down_name = (("w1", "w3", "w2") if block.endswith("block_sparse_moe.")
                                         else ("gate_proj", "up_proj", "down_proj"))
        each = [f"{block}experts.{e}." for e in range(X)]
        up = np.stack([np.concatenate([tensors.get(p + gate_name + ".weight", (XF, C)),
                                       tensors.get(p + up_name + ".weight", (XF, C))]) for p in each])
        down = np.stack([tensors.get(p + down_name + ".weight", (C, XF)) for p in each])
    w[o + ".experts.up.weight"] = up.reshape(X * 2 * XF, C)
    w[o + ".experts.down.weight"] = down.reshape(X * C, XF)
    if fields["shared_expert"]:
        shared = block + "shared_expert."
        _fused(tensors, w, o + ".up", [(shared + "gate_proj", F), (shared + "up_proj", F)], C,
               bias=False)
        _linear(tensors, w, o + ".down", shared + "down_proj", C, F, bias=False)
        _linear(tensors, w, o + ".shared_gate", block + "shared_expert_gate", 1, C, bias=False)


def _deberta_v2(arch, model_type, task, cfg, tensors):
    """DeBERTa-v2 / v3: a post-LN encoder whose attention adds to q·k the disentangled terms
    of ``pos_att_type``, q·pk (c2p) and k·pq (p2c), pk / pq projections (their own, or the
    key / query ones with ``share_att_key``) of the relative embedding row δ(i − j) that
    :func:`relative_position.deberta_index` tabulates (log buckets beyond ±position_buckets/2),
    LayerNorm-ed with ``norm_rel_ebd="layer_norm"``; scores scaled by (D·(1 + terms))^-1/2.
    Absolute positions only with ``position_biased_input``; pooler dense + pooler_hidden_act."""
    for key, ok in (("conv_kernel_size", 0), ("embedding_size", cfg.get("hidden_size")),
                    ("pooler_hidden_size", cfg.get("hidden_size"))):
        if cfg.get(key, ok) != ok:
            raise NotImplementedError(f"{arch} with {key}={cfg.get(key)!r} is not supported"
                                      + (" (only hidden_size)" if ok else ""))
    C, L = cfg.size("hidden_size"), cfg.size("num_hidden_layers")
    H, F = cfg.size("num_attention_heads"), cfg.size("intermediate_size")
    D = (cfg.size("attention_head_size") if cfg.get("attention_head_size") is not None
         else _head_size(C, H, ("hidden_size", "num_attention_heads")))
    V, P = cfg.size("vocab_size"), cfg.size("max_position_embeddings")
    act, eps = _activation(cfg, "hidden_act"), cfg.epsilon("layer_norm_eps")
    type_vocab = cfg.size("type_vocab_size", 0)
    terms: tuple[str, ...] = ()
    if cfg.get("relative_attention", False):
        kinds = cfg.get("pos_att_type") or []
        if isinstance(kinds, str):
            kinds = [x.strip() for x in kinds.lower().split("|")]
        unknown = [k for k in kinds if k not in ("c2p", "p2c")]
        if unknown:
            raise NotImplementedError(f"{arch} with pos_att_type {unknown} is not supported "
                                      "(only 'c2p' and 'p2c')")
        terms = tuple(k for k in ("c2p", "p2c") if k in kinds)
    n_out, labels = _classifier_head(task, cfg, C, V)
    tensors.prefixes = ("deberta.",)

    w: dict[str, np.ndarray] = {}
    w["embed.word"] = tensors.get("embeddings.word_embeddings.weight", (V, C))
    positions = "absolute" if cfg.get("position_biased_input", True) else "relative"
    if positions == "absolute":
        w["embed.position"] = tensors.get("embeddings.position_embeddings.weight", (P, C))
    if type_vocab:
        w["embed.type"] = tensors.get("embeddings.token_type_embeddings.weight", (type_vocab, C))
    _norm(tensors, w, "embed.norm", "embeddings.LayerNorm", C, True)
    share = bool(cfg.get("share_att_key", False))
    for i in range(L):
        o, s = f"layers.{i}", f"encoder.layer.{i}."
        names = dict(q=s + "attention.self.query_proj", k=s + "attention.self.key_proj",
                     v=s + "attention.self.value_proj", out=s + "attention.output.dense",
                     attn_norm=s + "attention.output.LayerNorm", up=s + "intermediate.dense",
                     down=s + "output.dense", mlp_norm=s + "output.LayerNorm")
        _post_ln_layer(tensors, w, o, names, C, F, H * D)
        for term, out, own, shared in (("c2p", "pos_key", "pos_key_proj", "k"),
                                       ("p2c", "pos_query", "pos_query_proj", "q")):
            if term in terms:
                src = names[shared] if share else s + "attention.self." + own
                _linear(tensors, w, f"{o}.{out}", src, H * D, C)
    span = 0
    if terms:
        buckets = cfg.get("position_buckets", -1)
        max_relative = cfg.get("max_relative_positions", -1)
        max_relative = max_relative if max_relative >= 1 else P
        span = buckets if buckets > 0 else max_relative
        w["relative.embeddings"] = tensors.get("encoder.rel_embeddings.weight", (2 * span, C))
        norm_rel = [x.strip() for x in str(cfg.get("norm_rel_ebd", "none")).lower().split("|")]
        if "layer_norm" in norm_rel:
            _norm(tensors, w, "relative.norm", "encoder.LayerNorm", C, True)
        w["attn.relative_index"] = relative_position.deberta_index(span, P, buckets, max_relative)
    pool, head_act = "mean", ""
    if task == "sequence-classification":
        pool, head_act = "first", _activation(cfg, "pooler_hidden_act")
        _linear(tensors, w, "head.dense", "pooler.dense", C, C)
        _linear(tensors, w, "head.out", "classifier", n_out, C)
    elif task == "question-answering":
        pool = "none"
        _linear(tensors, w, "head.out", "qa_outputs", n_out, C)
    if positions == "relative" and not terms:
        raise NotImplementedError(f"{arch} with position_biased_input=False and no relative "
                                  "attention (no positions at all) is not supported")

    fields = dict(family="encoder", norm="layernorm", activation=act, gated_mlp=False,
                  n_layers=L, n_heads=H, n_kv_heads=H, head_dim=D, hidden=C, intermediate=F,
                  vocab=V, max_positions=P, type_vocab=type_vocab, norm_eps=eps,
                  attn_scale=(D * (1 + len(terms))) ** -0.5, causal=False, sliding_window=0,
                  positions=positions, rope_attention_scaling=1.0, pool=pool,
                  head_activation=head_act, n_outputs=n_out, pad_token_id=_pad_id(cfg),
                  labels=labels, disentangled=terms, relative_span=span)
    return fields, w


def _modernbert(arch, model_type, task, cfg, tensors):
    """ModernBERT: a pre-norm encoder (the "decoder" family, not causal). LayerNorm-ed
    embeddings and no norm before layer 0's attention, fused q/k/v, GeGLU (Wi rows: the
    activated half, then the gate), optional biases (attention_bias, mlp_bias, norm_bias), a
    final norm, RoPE with a global and a local theta, full layers every
    ``global_attn_every_n_layers`` and bidirectional sliding windows of ``local_attention``
    tokens between them. Heads: dense → activation → norm (pooled "cls" or "mean" for
    classification; at every position for QA), then the classifier."""
    C, L = cfg.size("hidden_size"), cfg.size("num_hidden_layers")
    H, F = cfg.size("num_attention_heads"), cfg.size("intermediate_size")
    D = _head_size(C, H, ("hidden_size", "num_attention_heads"))
    V = cfg.size("vocab_size")
    cfg.size("max_position_embeddings")  # checked here: the RoPE code reads it as it is
    act = _activation(cfg, "hidden_activation")
    eps = cfg.epsilon("norm_eps")
    attn_bias, mlp_bias, norm_bias = (bool(cfg.get(k, False))
                                      for k in ("attention_bias", "mlp_bias", "norm_bias"))
    sliding_layers, full, local = _modernbert_layers(arch, cfg)
    inv_freq, inv_freq_local, rope_scaling, max_positions = _two_rope_tables(arch, full, local, D)
    # HF's bidirectional window: |q - k| <= local_attention // 2, i.e. < that + 1
    window = cfg.size("local_attention") // 2 + 1 if any(sliding_layers) else 0
    n_out, labels = _classifier_head(task, cfg, C, V)
    pooling = cfg.get("classifier_pooling", "cls")
    if task == "sequence-classification" and pooling not in ("cls", "mean"):
        raise NotImplementedError(f"{arch} with classifier_pooling={pooling!r} is not supported "
                                  "(only 'cls' and 'mean')")
    pool = {"base": "mean", "question-answering": "none"}.get(task) or {"cls": "first",
                                                                         "mean": "mean"}[pooling]
    tensors.prefixes = ("model.",)

    w: dict[str, np.ndarray] = {}
    w["embed.word"] = tensors.get("embeddings.tok_embeddings.weight", (V, C))
    _norm(tensors, w, "embed.norm", "embeddings.norm", C, norm_bias)
    for i in range(L):
        o, s = f"layers.{i}", f"layers.{i}."
        if i > 0:  # layer 0's attn_norm is nn.Identity
            _norm(tensors, w, o + ".attn_norm", s + "attn_norm", C, norm_bias)
        _linear(tensors, w, o + ".qkv", s + "attn.Wqkv", 3 * C, C, bias=attn_bias)
        _linear(tensors, w, o + ".out", s + "attn.Wo", C, C, bias=attn_bias)
        _norm(tensors, w, o + ".mlp_norm", s + "mlp_norm", C, norm_bias)
        _linear(tensors, w, o + ".up", s + "mlp.Wi", 2 * F, C, bias=mlp_bias)
        _linear(tensors, w, o + ".down", s + "mlp.Wo", C, F, bias=mlp_bias)
    _norm(tensors, w, "final_norm", "final_norm", C, norm_bias)
    w["rope.inv_freq"] = inv_freq
    if window:
        w["rope.inv_freq_local"] = inv_freq_local
    head_act = ""
    if task != "base":
        head_act = _activation(cfg, "classifier_activation")
        _linear(tensors, w, "head.dense", "head.dense", C, C, bias=bool(cfg.get("classifier_bias")))
        _norm(tensors, w, "head.norm", "head.norm", C, norm_bias)
        _linear(tensors, w, "head.out", "classifier", n_out, C)

    fields = dict(family="decoder", norm="layernorm", activation=act, gated_mlp=True,
                  n_layers=L, n_heads=H, n_kv_heads=H, head_dim=D, hidden=C, intermediate=F,
                  vocab=V, max_positions=max_positions, type_vocab=0, norm_eps=eps,
                  attn_scale=D ** -0.5, causal=False, sliding_window=window, positions="rope",
                  rope_attention_scaling=float(rope_scaling), pool=pool, head_activation=head_act,
                  n_outputs=n_out, pad_token_id=_pad_id(cfg), labels=labels,
                  sliding_layers=sliding_layers if window else (), first_attn_norm=False,
                  head_norm=task != "base")
    return fields, w


def _gpt_neox(arch, model_type, task, cfg, tensors):
    """GPT-NeoX / Pythia: pre-LN layers (LayerNorms with biases), partial RoPE, GELU MLP with
    biases, an untied LM head (``embed_out``; ``lm_head`` in a transformers 5 module), and with
    ``use_parallel_residual`` both branches reading the layer's input. The fused
    ``query_key_value`` stores each head's q, k, v rows together ((H, 3, D) rows); they are
    reordered into the canonical all-q, all-k, all-v rows."""
    C, L = cfg.size("hidden_size"), cfg.size("num_hidden_layers")
    H, F = cfg.size("num_attention_heads"), cfg.size("intermediate_size")
    D = _head_size(C, H, ("hidden_size", "num_attention_heads"))
    V = cfg.size("vocab_size")
    act, eps = _activation(cfg, "hidden_act"), cfg.epsilon("layer_norm_eps")
    attn_bias = bool(cfg.get("attention_bias", True))
    # older config.json keys, read as GPTNeoXConfig does: rotary_pct (default 0.25) and
    # rotary_emb_base fill what rope_parameters / rope_scaling leave out
    params = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    if not isinstance(params, Mapping):
        raise TypeError(f"config rope_parameters must be an object, got {params!r}")
    params = {"rope_theta": cfg.get("rotary_emb_base", 10_000.0),
              "partial_rotary_factor": cfg.get("rotary_pct", 0.25), **params}
    rope_view = {**cfg.values, "rope_parameters": params, "rope_scaling": None}
    R = rotary_dim(rope_view, D, partial=True)
    inv_freq, rope_scaling = _rope_table(rope_view, R)
    n_out, labels = _classifier_head(task, cfg, C, V)
    tensors.prefixes = ("gpt_neox.",)

    w: dict[str, np.ndarray] = {}
    w["embed.word"] = tensors.get("embed_in.weight", (V, C))
    for i in range(L):
        o, s = f"layers.{i}", f"layers.{i}."
        _norm(tensors, w, o + ".attn_norm", s + "input_layernorm", C, True)
        qkv = s + "attention.query_key_value"
        w[o + ".qkv.weight"] = np.ascontiguousarray(
            tensors.get(qkv + ".weight", (3 * C, C)).reshape(H, 3, D, C).transpose(1, 0, 2, 3)
            .reshape(3 * C, C))
        if attn_bias:
            w[o + ".qkv.bias"] = np.ascontiguousarray(
                tensors.get(qkv + ".bias", (3 * C,)).reshape(H, 3, D).transpose(1, 0, 2).reshape(-1))
        _linear(tensors, w, o + ".out", s + "attention.dense", C, C, bias=attn_bias)
        _norm(tensors, w, o + ".mlp_norm", s + "post_attention_layernorm", C, True)
        _linear(tensors, w, o + ".up", s + "mlp.dense_h_to_4h", F, C)
        _linear(tensors, w, o + ".down", s + "mlp.dense_4h_to_h", C, F)
    _norm(tensors, w, "final_norm", "final_layer_norm", C, True)
    w["rope.inv_freq"] = inv_freq
    # the checkpoints' LM head is embed_out, which transformers 5 renames lm_head on loading
    lm_key = "embed_out.weight" if tensors.key("lm_head.weight") is None else "lm_head.weight"
    pool = _decoder_head(task, cfg, tensors, w, C, V, n_out, "embed_in.weight", lm_key)

    fields = dict(family="decoder", norm="layernorm", activation=act, gated_mlp=False,
                  n_layers=L, n_heads=H, n_kv_heads=H, head_dim=D, hidden=C, intermediate=F,
                  vocab=V, max_positions=max_rope_positions(rope_view), type_vocab=0,
                  norm_eps=eps, attn_scale=D ** -0.5, causal=True, sliding_window=0,
                  positions="rope", rope_attention_scaling=float(rope_scaling), pool=pool,
                  head_activation="", n_outputs=n_out, pad_token_id=_pad_id(cfg), labels=labels,
                  rotary_dim=R if R != D else 0,
                  parallel_residual=bool(cfg.get("use_parallel_residual", True)))
    return fields, w


def _square(cfg: _Config, key: str) -> int:
    """A size HF allows as an int or an (h, w) pair; only square ones are supported."""
    value = cfg[key]
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise NotImplementedError(f"{key}={list(value)!r} is not supported (only square "
                                      "images and patches)")
        value = value[0]
    return integer(value, f"config {key}", 1, maximum=INT32_MAX)


def _vit(arch, model_type, task, cfg, tensors):
    """ViT: the pre-LN "decoder" family with causal=False over [CLS] and the image's patches.
    The patch embedding (a Conv2d with kernel = stride = patch_size) is a linear map of each
    flattened patch, exported as ``patch`` for masklrp.vision, which hands the engine the
    patch rows as ``embeds``; the [CLS] token is the one-row word table. Learned positions,
    layernorm_before → attention → residual, layernorm_after → MLP → residual, a final
    LayerNorm; the classifier reads [CLS], the base model's output is the mean of the last
    hidden states (as every base model here; its pooler is not exported). Checkpoint keys
    of transformers 5 (``layers.{i}.attention.q_proj``) or the original ones
    (``encoder.layer.{i}.attention.attention.query``)."""
    C, L = cfg.size("hidden_size"), cfg.size("num_hidden_layers")
    H, F = cfg.size("num_attention_heads"), cfg.size("intermediate_size")
    D = _head_size(C, H, ("hidden_size", "num_attention_heads"))
    act, eps = _activation(cfg, "hidden_act"), cfg.epsilon("layer_norm_eps")
    side, patch, ch = _square(cfg, "image_size"), _square(cfg, "patch_size"), cfg.size("num_channels")
    if side % patch:
        raise ValueError(f"config image_size ({side}) must be a multiple of patch_size ({patch})")
    T = (side // patch) ** 2 + 1
    qkv_bias = bool(cfg.get("qkv_bias", True))
    n_out, labels = _classifier_head(task, cfg, C, 1)
    tensors.prefixes = ("vit.",)
    new = tensors.key("layers.0.attention.q_proj.weight") is not None
    names = ({"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj",
              "out": "attention.o_proj", "up": "mlp.fc1", "down": "mlp.fc2"} if new else
             {"q": "attention.attention.query", "k": "attention.attention.key",
              "v": "attention.attention.value", "out": "attention.output.dense",
              "up": "intermediate.dense", "down": "output.dense"})
    layer = "layers.{}." if new else "encoder.layer.{}."

    w: dict[str, np.ndarray] = {}
    w["embed.word"] = tensors.get("embeddings.cls_token", (1, 1, C)).reshape(1, C)
    w["embed.position"] = tensors.get("embeddings.position_embeddings", (1, T, C)).reshape(T, C)
    w["patch.weight"] = tensors.get("embeddings.patch_embeddings.projection.weight",
                                    (C, ch, patch, patch)).reshape(C, ch * patch * patch)
    w["patch.bias"] = tensors.get("embeddings.patch_embeddings.projection.bias", (C,))
    for i in range(L):
        o, s = f"layers.{i}", layer.format(i)
        _norm(tensors, w, o + ".attn_norm", s + "layernorm_before", C, True)
        _fused(tensors, w, o + ".qkv", [(s + names[x], C) for x in "qkv"], C, bias=qkv_bias)
        _linear(tensors, w, o + ".out", s + names["out"], C, C)
        _norm(tensors, w, o + ".mlp_norm", s + "layernorm_after", C, True)
        _linear(tensors, w, o + ".up", s + names["up"], F, C)
        _linear(tensors, w, o + ".down", s + names["down"], C, F)
    _norm(tensors, w, "final_norm", "layernorm", C, True)
    if task != "base":
        _linear(tensors, w, "head.out", "classifier", n_out, C)

    fields = dict(family="decoder", norm="layernorm", activation=act, gated_mlp=False,
                  n_layers=L, n_heads=H, n_kv_heads=H, head_dim=D, hidden=C, intermediate=F,
                  vocab=1, max_positions=T, type_vocab=0, norm_eps=eps, attn_scale=D ** -0.5,
                  causal=False, sliding_window=0, positions="absolute",
                  rope_attention_scaling=1.0, pool="mean" if task == "base" else "first",
                  head_activation="", n_outputs=n_out, pad_token_id=-1, labels=labels,
                  image_size=side, patch_size=patch, num_channels=ch)
    return fields, w


_FAMILIES: dict[str, Callable] = {
    "mixtral": _llama, "qwen2_moe": _llama,
    "bert": _encoder, "roberta": _encoder, "xlm-roberta": _encoder, "distilbert": _encoder,
    "mpnet": _encoder, "electra": _encoder, "albert": _encoder,
    "gpt2": _gpt2, "llama": _llama, "mistral": _llama, "qwen2": _llama, "qwen3": _llama,
    "phi3": _llama, "gemma3_text": _llama, "modernbert": _modernbert, "deberta-v2": _deberta_v2,
    "gpt_neox": _gpt_neox, "vit": _vit,
}
