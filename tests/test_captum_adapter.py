"""masklrp.captum_adapter: the adapter's Explanations equal a direct Captum call, IG and LIG
agree, IG is complete, and the Captum methods score in evaluate() next to the engine's."""
from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the Captum baselines run on torch (compare extra)")
pytest.importorskip("transformers", reason="the Captum baselines run on transformers models")
captum_attr = pytest.importorskip("captum.attr", reason="captum is not installed (compare extra)")

import masklrp  # noqa: E402
from masklrp.captum_adapter import CAPTUM_METHODS, CaptumExplainer, captum_explain  # noqa: E402
from masklrp.evaluate import evaluate  # noqa: E402
from masklrp.model import Inputs  # noqa: E402

from hf_models import build, example_inputs  # noqa: E402


@pytest.fixture(scope="module")
def bert():
    """A tiny BERT classifier, its engine Model and 4 padded sequences ([CLS]-like token 0 special)."""
    module = build("bert-cls", seed=5)
    batch = example_inputs(module, batch=4, length=10, seed=5)
    model = masklrp.load(module)
    inputs = model.prepare(batch["input_ids"], batch["attention_mask"], token_type_ids=batch["token_type_ids"])
    inputs.special_tokens_mask = np.zeros(inputs.input_ids.shape, dtype=bool)
    inputs.special_tokens_mask[:, 0] = True
    inputs.special_tokens_mask |= inputs.attention_mask == 0
    return module, model, inputs


def _direct(module, inputs: Inputs, method: str, target: list[int], n_steps: int = 16) -> np.ndarray:
    """The same attribution written straight against captum (B, T)."""
    ids = torch.as_tensor(inputs.input_ids)
    mask, types = torch.as_tensor(inputs.attention_mask), torch.as_tensor(inputs.token_type_ids)
    embedding = module.bert.embeddings.word_embeddings
    pad = module.config.pad_token_id
    base_ids = torch.where(torch.as_tensor(inputs.special_tokens_mask), ids, torch.full_like(ids, pad))

    def from_embeds(e, m, t):
        return module(inputs_embeds=e, attention_mask=m, token_type_ids=t).logits

    def from_ids(i, m, t):
        return module(input_ids=i, attention_mask=m, token_type_ids=t).logits

    embeds = embedding(ids).detach().requires_grad_(True)
    args = (mask, types)
    if method == "captum-ig":
        a = captum_attr.IntegratedGradients(from_embeds).attribute(
            embeds, baselines=embedding(base_ids).detach(), target=target, additional_forward_args=args,
            n_steps=n_steps)
    elif method == "captum-lig":
        a = captum_attr.LayerIntegratedGradients(from_ids, embedding).attribute(
            ids, baselines=base_ids, target=target, additional_forward_args=args, n_steps=n_steps)
    elif method == "captum-saliency":
        a = captum_attr.Saliency(from_embeds).attribute(embeds, target=target, additional_forward_args=args)
    else:
        a = captum_attr.InputXGradient(from_embeds).attribute(embeds, target=target, additional_forward_args=args)
    return a.sum(dim=-1).detach().numpy()


@pytest.mark.parametrize("method", list(CAPTUM_METHODS))
def test_adapter_equals_a_direct_captum_call(bert, method):
    module, model, inputs = bert
    [explanations] = captum_explain(module, inputs, method, n_steps=16).values()
    predicted = model.forward(inputs)["logits"].argmax(axis=1).tolist()
    expected = _direct(module, inputs, method, predicted)
    for b, e in enumerate(explanations):
        real = inputs.attention_mask[b].astype(bool)
        assert e.method == method and e.target == predicted[b]
        assert e.tokens == [str(i) for i in inputs.input_ids[b, real]]
        np.testing.assert_array_equal(e.input_ids, inputs.input_ids[b, real])
        np.testing.assert_allclose(e.scores, expected[b, real], rtol=1e-4, atol=1e-6, err_msg=f"row {b}")
        assert e.logit == pytest.approx(float(model.forward(inputs)["logits"][b, e.target]), abs=1e-4)


def test_ig_and_lig_agree_and_ig_is_complete(bert):
    module, model, inputs = bert
    target = [1, 0, 2, 1]
    out = captum_explain(module, inputs, ("captum-ig", "captum-lig"), target, n_steps=200)
    baseline_ids = np.where(inputs.special_tokens_mask, inputs.input_ids, module.config.pad_token_id)
    base_logits = model.forward(Inputs(baseline_ids, inputs.attention_mask, inputs.position_ids,
                                       inputs.token_type_ids))["logits"]
    for b, (ig, lig) in enumerate(zip(out["captum-ig"], out["captum-lig"])):
        np.testing.assert_allclose(ig.scores, lig.scores, rtol=1e-4, atol=1e-5)
        # completeness: the scores add up to logit(x) - logit(baseline)
        assert ig.scores.sum() == pytest.approx(ig.logit - base_logits[b, target[b]], abs=2e-2)
        assert ig.scores[0] == 0, "a special token keeps its embedding in the baseline"


@pytest.mark.parametrize("name", ["roberta-cls", "distilbert-cls"])
def test_torch_logits_match_the_engine_for_other_encoders(name):
    """Positions (RoBERTa counts from the pad id) and absent token types reach torch as the engine saw them."""
    module = build(name, seed=2)
    batch = example_inputs(module, batch=3, length=9, seed=2)
    model = masklrp.load(module)
    inputs = model.prepare(batch["input_ids"], batch["attention_mask"])
    engine = model.forward(inputs)["logits"]
    for e, row in zip(CaptumExplainer(module, "captum-ixg").attribute(inputs), engine):
        assert e.logit == pytest.approx(float(row[e.target]), abs=1e-4)
        assert e.target == int(row.argmax())


def test_captum_methods_in_evaluate(minilm_dir, tmp_path):
    """On real MiniLM weights with a seeded random head (a pipeline test, not a result)."""
    from random_head import with_random_head

    folder = with_random_head(minilm_dir, tmp_path / "model", "BertForSequenceClassification")
    texts = [("a gripping , funny film", 1), ("dull and far too long", 0), ("not bad at all", 1)]
    r = evaluate(str(folder), texts, "attnlrp", captum=("saliency",), metrics=("aopc", "lodds"),
                 progress=False)
    assert r.methods == ("attnlrp", "captum-saliency")
    assert "captum-saliency" in r.table()
    assert np.isfinite(r.summary()["captum-saliency"]["aopc"]["mean"])


def test_bad_input(bert):
    module, model, inputs = bert
    with pytest.raises(ValueError, match="unknown Captum method"):
        CaptumExplainer(module, "captum-deeplift")
    with pytest.raises(TypeError, match="torch model"):
        CaptumExplainer(model, "captum-ig")
    with pytest.raises(ValueError, match="n_steps"):
        CaptumExplainer(module, "captum-ig", n_steps=0)
    with pytest.raises(TypeError, match="Inputs"):
        CaptumExplainer(module, "captum-ixg").attribute(inputs.input_ids)
    with pytest.raises(ValueError, match="out of range"):
        CaptumExplainer(module, "captum-ixg").attribute(inputs, target=7)
    with pytest.raises(ValueError, match="targets for a batch"):
        CaptumExplainer(module, "captum-ixg").attribute(inputs, target=[0, 1])


def test_missing_captum_is_a_clear_import_error(bert, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # import captum.attr now fails
    with pytest.raises(ImportError, match=r"masklrp\[compare\]"):
        CaptumExplainer(bert[0], "captum-ig")
