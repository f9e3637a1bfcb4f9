"""Real MiniLM weights with a seeded random head: pipeline tests of classifiers and QA without
fine-tuning (their numbers are not results)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def with_random_head(base: Path, out: Path, architecture: str, seed: int = 0) -> Path:
    """``base`` (a BertModel folder) plus a seeded random 2-output head, saved as ``architecture``."""
    safetensors = pytest.importorskip("safetensors.numpy", reason="reading safetensors needs the hf extra")
    weights = safetensors.load_file(str(base / "model.safetensors"))
    head = "qa_outputs" if architecture == "BertForQuestionAnswering" else "classifier"
    rng = np.random.default_rng(seed)
    hidden = weights["embeddings.word_embeddings.weight"].shape[1]
    weights[f"{head}.weight"] = (0.2 * rng.standard_normal((2, hidden))).astype(np.float32)
    weights[f"{head}.bias"] = np.zeros(2, np.float32)
    out.mkdir(parents=True)
    safetensors.save_file(weights, str(out / "model.safetensors"))
    config = json.loads((base / "config.json").read_text())
    config.update(architectures=[architecture], id2label={"0": "negative", "1": "positive"},
                  label2id={"negative": 0, "positive": 1})
    (out / "config.json").write_text(json.dumps(config))
    for name in TOKENIZER_FILES:
        shutil.copy(base / name, out / name)
    return out
