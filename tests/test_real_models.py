"""The engine on real weights against HF and the float64 oracle: all-MiniLM-L6-v2 (read from
its safetensors folder, no torch on masklrp's side), all-mpnet-base-v2 (12 layers, 768 wide:
the paper's BERT-base size, with MPNet's relative position bias) and SmolLM2-135M-Instruct
(GGUF → transformers → masklrp.load). Tolerances as in test_engine.py: logits ≤ 1e-5 relative to
HF's float32 forward; relevance cosine ≥ 0.99999 and max error ≤ 1e-4 · max|R|."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the oracle tests need torch (pip install '.[test]')")
tf = pytest.importorskip("transformers", reason="the oracle tests need transformers")

import masklrp  # noqa: E402
from oracle import models as oracle  # noqa: E402
from test_engine import check_relevance, hf_outputs  # noqa: E402

SENTENCES = ["The film is a gripping, funny and beautifully acted story.",
             "I would not watch it again."]


def compare(hf, model, task, batch, seed, rules=("attnlrp", "cp")):
    ref_logits = hf_outputs(hf, task, batch)
    inputs = model.prepare(batch["input_ids"], batch["attention_mask"],
                           token_type_ids=batch.get("token_type_ids"))
    out = model.run(inputs, seed, rules)
    err = np.abs(out["logits"] - ref_logits).max() / np.abs(ref_logits).max()
    assert err <= 1e-5, f"max relative logit error {err:.2e}"
    tensors = {k: torch.as_tensor(v) for k, v in batch.items()}
    for rule in rules:
        ref = oracle.explain(hf, task, tensors["input_ids"], tensors["attention_mask"],
                             token_type_ids=tensors.get("token_type_ids"), seed=torch.from_numpy(seed),
                             rule=rule)
        check_relevance(out[rule]["tokens"], ref["tokens"], batch["attention_mask"], f"{rule} tokens")
        if ref.get("positions") is not None:
            check_relevance(out[rule]["positions"], ref["positions"], batch["attention_mask"],
                            f"{rule} positions")


def test_minilm_folder_equals_oracle(minilm_dir):
    """Sentence embedding (mean-pooled last layer) of the real MiniLM, one dimension explained."""
    model = masklrp.load(minilm_dir)  # safetensors + tokenizer.json, no torch involved
    enc = model.tokenizer.encode(SENTENCES)
    batch = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask,
             "token_type_ids": enc.token_type_ids}
    hf = tf.BertModel.from_pretrained(str(minilm_dir)).eval()
    logits = model.forward(model.prepare(enc.input_ids, enc.attention_mask))["logits"]
    seed = np.zeros_like(logits)
    seed[np.arange(len(logits)), np.abs(logits).argmax(1)] = 1.0
    compare(hf, model, "base", batch, seed)


def test_minilm_with_a_classifier_head_equals_oracle(minilm_dir):
    """The real encoder under a seeded random two-class head (pooler + tanh + classifier)."""
    torch.manual_seed(0)
    hf = tf.BertForSequenceClassification.from_pretrained(str(minilm_dir), num_labels=2).eval()
    model = masklrp.load(hf, tokenizer=str(minilm_dir / "tokenizer.json"))
    enc = model.tokenizer.encode(SENTENCES)
    batch = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask,
             "token_type_ids": enc.token_type_ids}
    seed = np.tile(np.array([[0.0, 1.0]], np.float32), (len(SENTENCES), 1))
    compare(hf, model, "sequence-classification", batch, seed)


def test_mpnet_with_a_classifier_head_equals_oracle(mpnet_dir):
    """The real all-mpnet-base-v2 encoder under a seeded random two-class head (<s> → dense →
    tanh → out_proj), on one short sentence (the float64 oracle of 12 × 768 takes seconds)."""
    torch.manual_seed(0)
    hf = tf.MPNetForSequenceClassification.from_pretrained(str(mpnet_dir), num_labels=2).eval()
    model = masklrp.load(hf, tokenizer=str(mpnet_dir / "tokenizer.json"))
    assert (model.spec.n_layers, model.spec.hidden, model.spec.n_heads) == (12, 768, 12)
    enc = model.tokenizer.encode(SENTENCES[1:])
    batch = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}  # no token types
    seed = np.array([[0.0, 1.0]], np.float32)
    compare(hf, model, "sequence-classification", batch, seed)


def test_smollm2_equals_oracle(smollm2, smollm2_tokenizer):
    """Next-token relevance at the last real position of SmolLM2-135M (30 layers, GQA, RoPE)."""
    model = masklrp.load(smollm2, tokenizer=smollm2_tokenizer)
    enc = model.tokenizer.encode(["The capital of France is", "Two plus two equals"])
    batch = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}
    logits = model.forward(model.prepare(enc.input_ids, enc.attention_mask))["logits"]
    seed = np.zeros_like(logits)
    seed[np.arange(len(logits)), logits.argmax(1)] = 1.0
    compare(smollm2, model, "causal-lm", batch, seed, rules=("attnlrp",))  # CP-LRP: tiny models
    e = masklrp.attnlrp(model, "The capital of France is")
    assert e.tokens[-1].strip("Ġ▁ ") == "is" and np.isfinite(e.scores).all()
