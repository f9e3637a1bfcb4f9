"""masklrp.attribute_generation (issue I item 4): greedy generation by the engine, and the
relevance matrix of one forward + one sweep per answer token.

* Greedy tokens equal transformers' ``generate(do_sample=False)``: a tiny random LLaMA loaded
  from a safetensors folder (the path that needs no torch), and SmolLM2 for a few tokens.
* Row i of the matrix equals the prefix ``prompt + answer[:i]`` explained alone with
  ``AttnLRP.attribute`` for ``answer[i]``: to 1e-5 of the row's largest |score| (the prefix
  runs GEMMs of other shapes, so float32 rounding differs; test_seeds.py says why).
* Entries at and after a token's own position are exactly 0.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the oracle (transformers' generate) needs torch")
pytest.importorskip("transformers", reason="the oracle (transformers' generate) needs transformers")

import masklrp  # noqa: E402
from hf_models import build  # noqa: E402
from masklrp import generation_heatmap  # noqa: E402

TOLERANCE = 1e-5
PROMPT = [5, 17, 33, 8, 60, 41]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random LLaMA as HF writes it (config.json + model.safetensors), loaded without torch,
    and the torch module for the oracle; eos is id 2."""
    hf = build("llama-lm", seed=3)
    folder = tmp_path_factory.mktemp("llama")
    hf.save_pretrained(folder)
    return hf, masklrp.load(folder)


def hf_greedy(hf, prompt, n: int) -> list[int]:
    ids = torch.tensor([list(prompt)])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                          pad_token_id=hf.config.pad_token_id)
    return out[0, len(prompt):].tolist()


def test_greedy_equals_transformers_generate(tiny):
    hf, model = tiny
    assert model.spec.eos_token_ids == (2,)
    for prompt in (PROMPT, PROMPT[:2], [70, 3, 3, 3, 9, 11, 80, 81, 2, 44]):
        g = masklrp.attribute_generation(model, prompt, max_new_tokens=12)
        assert g.answer_ids.tolist() == hf_greedy(hf, prompt, 12)
        assert not g.teacher_forced and g.prompt_ids.tolist() == prompt


def test_generation_stops_at_eos(tiny):
    """A model whose argmax is always the eos id: one token, the eos, is generated."""
    hf, model = tiny
    weights = dict(model.weights)
    bias = np.zeros(model.spec.n_outputs, np.float32)
    bias[2] = 1e4
    weights["head.out.bias"] = bias
    always_eos = masklrp.Model(model.spec, weights)
    g = masklrp.attribute_generation(always_eos, PROMPT, max_new_tokens=5)
    assert g.answer_ids.tolist() == [2] and g.relevance.shape == (1, len(PROMPT) + 1)


@pytest.mark.parametrize("method, contrastive", [("attnlrp", False), ("cp-lrp", True)])
def test_matrix_equals_each_prefix_explained_alone(tiny, method, contrastive):
    _, model = tiny
    g = masklrp.attribute_generation(model, PROMPT, max_new_tokens=7, method=method, contrastive=contrastive)
    T0, n = len(PROMPT), len(g.answer_ids)
    assert g.relevance.shape == (n, T0 + n) and g.relevance.dtype == np.float32
    sequence = np.concatenate([g.prompt_ids, g.answer_ids])
    explainer = masklrp.AttnLRP(model, method)
    for i in range(n):
        [alone] = explainer.attribute(sequence[None, :T0 + i], target=int(g.answer_ids[i]), contrastive=contrastive)
        row = g.relevance[i, :T0 + i]
        assert np.abs(row - alone.scores).max() <= TOLERANCE * np.abs(alone.scores).max(), i
        assert g.logits[i] == pytest.approx(alone.logit, rel=1e-5)
        assert not g.relevance[i, T0 + i:].any()
        assert np.isnan(g.masked()[i, T0 + i:]).all() and not np.isnan(g.masked()[i, :T0 + i]).any()
        step = g.step(i)
        assert step.target == g.answer_ids[i] and len(step.tokens) == T0 + i
        np.testing.assert_array_equal(step.scores, row)


def test_teacher_forced_target(tiny):
    _, model = tiny
    answer = [9, 2, 77]  # an eos in a given answer is just a token
    g = masklrp.attribute_generation(model, PROMPT, target=answer)
    assert g.teacher_forced and g.answer_ids.tolist() == answer and g.relevance.shape == (3, len(PROMPT) + 3)
    alone = masklrp.AttnLRP(model).attribute([PROMPT + answer[:2]], target=77)[0]
    assert np.abs(g.relevance[2, :-1] - alone.scores).max() <= TOLERANCE * np.abs(alone.scores).max()


def test_bad_arguments(tiny):
    hf, model = tiny
    for kw, error, message in [
        ({"prompt": PROMPT, "max_new_tokens": 0}, ValueError, "max_new_tokens must be at least 1"),
        ({"prompt": PROMPT, "max_new_tokens": 2.0}, TypeError, "max_new_tokens must be an int"),
        ({"prompt": PROMPT, "max_new_tokens": model.spec.max_positions}, ValueError,
         "max_new_tokens: the prompt and answer need"),
        ({"prompt": PROMPT, "method": "gae"}, ValueError, "method must be one of ('attnlrp', 'cp-lrp')"),
        ({"prompt": PROMPT, "contrastive": 1}, TypeError, "contrastive must be a bool"),
        ({"prompt": [], "max_new_tokens": 2}, ValueError, "prompt has no tokens"),
        ({"prompt": [1.5, 2.0]}, TypeError, "prompt must be a text or 1-d integer token ids"),
        ({"prompt": [[1, 2], [3, 4]]}, TypeError, "prompt must be a text or 1-d integer token ids"),
        ({"prompt": [1, 10_000]}, ValueError, "prompt: token ids must be in [0, 97)"),
        ({"prompt": "a text"}, ValueError, "loaded without a tokenizer"),
        ({"prompt": PROMPT, "target": "the answer"}, ValueError, "target: this model was loaded without a tokenizer"),
        ({"prompt": PROMPT, "target": [-1]}, ValueError, "target: token ids must be in"),
    ]:
        with pytest.raises(error, match=_literal(message)):
            masklrp.attribute_generation(model, **kw)
    with pytest.raises(TypeError, match="model must be a masklrp.Model"):
        masklrp.attribute_generation(hf, PROMPT)
    with pytest.raises(ValueError, match="needs a causal LM, got a sequence-classification model"):
        masklrp.attribute_generation(masklrp.load(build("gpt2-cls", seed=0)), PROMPT)


def test_views(tiny, tmp_path):
    _, model = tiny
    g = masklrp.attribute_generation(model, PROMPT, max_new_tokens=4)
    page = g.to_html()
    assert page.startswith("<!doctype html>") and "<script>" in page and "http" not in page.split("<body")[1]
    assert page.count("data-step-view=") == len(g.answer_ids) and page.count("<option") == len(g.answer_ids)
    assert "masklrp-heatmap" in page  # each answer token's prompt heatmap
    for suffix in (".html", ".png", ".svg"):
        path = g.save(tmp_path / f"g{suffix}")
        assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="unknown suffix '.txt'"):
        g.save(tmp_path / "g.txt")
    with pytest.raises(TypeError, match="g must be a masklrp GenerationExplanation"):
        generation_heatmap.to_html(g.step(0))
    with pytest.raises(ValueError, match="i = 4 is out of range"):
        g.step(4)


def test_escapes_tokens():
    g = masklrp.GenerationExplanation(
        prompt_ids=np.array([1, 2]), answer_ids=np.array([3]), tokens=["<b>", "&", "</script>"],
        relevance=np.array([[1.0, -1.0, 0.0]], np.float32), logits=np.array([1.0], np.float32), method="attnlrp")
    page = generation_heatmap.document(g)
    assert "<b>" not in page and "&lt;b&gt;" in page and "&lt;/script&gt;" in page
    assert page.count("</script>") == 1  # the page's own


def test_smollm2_greedy_equals_transformers(smollm2, smollm2_tokenizer):
    model = masklrp.load(smollm2, tokenizer=smollm2_tokenizer)
    prompt = "The capital of France is"
    g = masklrp.attribute_generation(model, prompt, max_new_tokens=4)
    ids = smollm2_tokenizer(prompt).input_ids
    assert g.prompt_ids.tolist() == ids
    assert g.answer_ids.tolist() == hf_greedy(smollm2, ids, 4)
    assert g.answer_text == smollm2_tokenizer.decode(g.answer_ids)
    given = masklrp.attribute_generation(model, prompt, target=" Paris.")
    assert given.answer_ids.tolist() == smollm2_tokenizer(" Paris.", add_special_tokens=False).input_ids


def _literal(message: str) -> str:
    import re

    return re.escape(message)
