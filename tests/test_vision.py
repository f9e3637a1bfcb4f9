"""ViT (masklrp.vision and the engine's ``embeds`` input) against HF and the float64 oracle.

* logits: the engine over the NumPy patch embeddings equals HF's float32 forward
  (``ViTForImageClassification``, ``ViTModel`` as the mean of its last hidden states),
  max |ours − HF| ≤ 1e-5 max |HF|, several seeds, a batch of 2 images;
* relevance per patch, of [CLS], of the position embeddings, g at the embeddings and per pixel
  (``x ⊙ Wᵀ g``), AttnLRP, CP-LRP and the gradient stream, against tests/oracle/vision.py:
  per image cosine ≥ 0.99999 and max error ≤ 1e-4 max |R| (test_engine.check_relevance);
* CP-LRP conserves the logit on a bias-free ViT (DESIGN.md §2);
* bad images, pixel arrays, targets and ``embeds`` are refused naming the argument; the figure
  renders (PNG); the safetensors folder (the checkpoints' original key names) loads the same.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the oracle needs torch (pip install '.[test]')")
pytest.importorskip("transformers", reason="the tiny models need transformers (pip install '.[test]')")

import masklrp  # noqa: E402
from hf_models import VISION_MODELS, build  # noqa: E402
from masklrp import vision  # noqa: E402
from masklrp.export import export  # noqa: E402
from oracle import vision as oracle  # noqa: E402
from test_engine import check_relevance  # noqa: E402

SEEDS = (0, 1, 2)
BATCH = 2


def case(name: str, seed: int, zero_bias: bool = False):
    hf = build(name, seed=seed, zero_bias=zero_bias)
    model = masklrp.load(hf)
    s = model.spec
    pixels = np.random.default_rng(seed).normal(
        size=(BATCH, s.num_channels, s.image_size, s.image_size)).astype(np.float32)
    return hf, model, pixels


def hf_logits(hf, pixels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = hf(pixel_values=torch.from_numpy(pixels))
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state.mean(1)).numpy()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", VISION_MODELS)
def test_logits_equal_hf(name, seed):
    hf, model, pixels = case(name, seed)
    ref, ours = hf_logits(hf, pixels), vision.classify(model, pixels)
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert ours.shape == ref.shape and err <= 1e-5, f"{name} seed {seed}: relative error {err:.2e}"


@pytest.mark.parametrize("rule", ["attnlrp", "cp", "gradient"])
@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize("name", VISION_MODELS)
def test_relevance_equals_oracle(name, seed, rule):
    hf, model, pixels = case(name, seed)
    logits = vision.classify(model, pixels)
    target = np.zeros_like(logits)
    target[np.arange(BATCH), np.argsort(logits, axis=1)[:, -2]] = 1.0  # the runner-up: not the default
    ours = vision.image_relevance(model, pixels, rule, target)
    ref = oracle.explain(hf, pixels, seed=target, rule=rule)
    keep = np.array(True)
    for key in ("patches", "positions", "embed_grad", "pixels"):
        check_relevance(ours[key], ref[key], keep, f"{name} seed {seed} {rule} {key}")
    check_relevance(ours["cls"][:, None], ref["cls"][:, None], keep, f"{name} {rule} cls")


def test_cp_lrp_conserves_the_logit_without_biases():
    """Σ patches + [CLS] + positions = the explained logit for CP-LRP with every bias 0."""
    _, model, pixels = case("vit-cls", 0, zero_bias=True)
    r = vision.image_relevance(model, pixels, "cp")
    total = r["patches"].sum(1) + r["cls"] + r["positions"].sum(1)
    np.testing.assert_allclose(total, r["logits"].max(1), rtol=1e-4)
    # without a conv bias, each patch's pixels hold exactly its relevance
    np.testing.assert_allclose(r["pixels"].reshape(BATCH, 3, 4, 4, 4, 4).sum((1, 3, 5)).reshape(BATCH, -1),
                               r["patches"], rtol=1e-4, atol=1e-5)


def test_explain_image_preprocesses_like_the_processor():
    hf, model, _ = case("vit-cls", 0)
    image = (np.random.default_rng(5).random((16, 16, 3)) * 255).astype(np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    e = masklrp.explain_image(model, image, target=2, method="cp-lrp", mean=mean, std=std)
    x = ((image / 255.0 - np.array(mean)) / np.array(std)).transpose(2, 0, 1)[None].astype(np.float32)
    seed = np.zeros((1, 3), dtype=np.float32)
    seed[0, 2] = 1
    ref = oracle.explain(hf, x, seed=seed, rule="cp")
    check_relevance(e.pixels[None], ref["pixels"], np.array(True), "explain_image pixels")
    check_relevance(e.patches.reshape(1, -1), ref["patches"], np.array(True), "explain_image patches")
    assert e.target == 2 and e.label == "pos" and e.method == "cp-lrp"
    by_name = masklrp.explain_image(model, image, target="pos", method="cp-lrp", mean=mean, std=std)
    assert by_name.target == 2 and np.array_equal(by_name.pixels, e.pixels)  # a label name, as for text
    assert e.pixel_map.shape == (16, 16) and e.image.max() <= 1.0
    np.testing.assert_allclose(e.logits, hf_logits(hf, x)[0], rtol=1e-5, atol=1e-5)
    predicted = masklrp.explain_image(model, image / 255.0, mean=mean, std=std)  # floats as they are
    assert predicted.target == int(np.argmax(e.logits))


def test_figure_renders(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    _, model, _ = case("vit-cls-gray", 0)
    e = masklrp.explain_image(model, np.random.default_rng(0).random((16, 16, 1)))
    png = e.png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 1.5 * height > 200  # two square panels side by side
    assert e.save(tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    assert e.png(kind="patches")[:4] == b"\x89PNG"
    page = e.save(tmp_path / "e.html").read_text()
    assert "data:image/png;base64," in page and "data:image/png;base64," in e._repr_html_()
    with pytest.raises(ValueError, match="kind"):
        e.plot(kind="rows")
    with pytest.raises(ValueError, match="suffix"):
        e.save(tmp_path / "e.txt")


@pytest.mark.parametrize("image,error,message", [
    (np.zeros((16, 16, 3), dtype=np.int32), TypeError, "image must have dtype uint8"),
    ([[0.0]], TypeError, "image must be a numpy array"),
    (np.zeros((16, 15, 3), dtype=np.uint8), ValueError, r"image must have shape \(16, 16, 3\)"),
    (np.zeros((3, 16, 16), dtype=np.float32), ValueError, "image must have shape"),
    (np.full((16, 16, 3), np.nan), ValueError, "image must be finite"),
])
def test_bad_images_are_named(image, error, message):
    _, model, _ = case("vit-cls", 0)
    with pytest.raises(error, match=message):
        masklrp.explain_image(model, image)


def test_bad_arguments_are_named():
    _, model, pixels = case("vit-cls", 0)
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    for kw, message in ((dict(target=3), "target"), (dict(target="neutral"), "target"),
                        (dict(method="gae"), "method"), (dict(std=(1.0, 0.0, 1.0)), "std"),
                        (dict(mean=(0.5, 0.5)), "mean")):
        with pytest.raises(ValueError, match=message):
            masklrp.explain_image(model, image, **kw)
    with pytest.raises(TypeError, match="target"):  # a bool is not a class index (as for text)
        masklrp.explain_image(model, image, target=True)
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 3, 16, 16\)"):
        vision.classify(model, pixels[:, :2])
    with pytest.raises(TypeError, match="pixel_values must be a float"):
        vision.classify(model, pixels.astype(np.int64))
    text = masklrp.load(build("bert-cls", seed=0))
    with pytest.raises(ValueError, match="not a vision model"):
        masklrp.explain_image(text, image)
    with pytest.raises(TypeError, match="model must be a masklrp.Model"):
        masklrp.explain_image("vit", image)


def test_bad_embeds_are_named():
    """The engine's ``embeds``: Model.run's friendly checks, and the C module's own."""
    _, model, pixels = case("vit-cls", 0)
    inputs = vision.image_inputs(model, BATCH)
    embeds = vision.patch_embeddings(model, pixels)
    with pytest.raises(ValueError, match=r"embeds must have shape \(2, 17, 32\)"):
        model.run(inputs, embeds=embeds[:, 1:])
    with pytest.raises(TypeError, match="embeds must be a numpy float array"):
        model.run(inputs, embeds=embeds.tolist())
    bad = embeds.copy()
    bad[1, 3, 4] = np.inf
    with pytest.raises(ValueError, match="embeds must be finite"):
        model.run(inputs, embeds=bad)
    engine = model._engine
    args = (inputs.input_ids, inputs.attention_mask, inputs.position_ids)
    with pytest.raises(ValueError, match=r"embeds must have shape \(2, 17, 32\)"):
        engine.run(*args, embeds=np.ascontiguousarray(embeds[:, :, :16]))
    with pytest.raises(TypeError, match="embeds must have dtype float32"):
        engine.run(*args, embeds=embeds.astype(np.float64))
    with pytest.raises(ValueError, match="embeds must be finite"):
        engine.run(*args, embeds=bad)
    with pytest.raises(ValueError, match="embeds"):
        engine.run(*args, embeds=embeds[0])


def test_embeds_replace_the_word_rows_of_a_text_model():
    """Any model: ``embeds`` equal to the table rows of the ids give the very same numbers."""
    model = masklrp.load(build("bert-cls", seed=0))
    ids = np.array([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]])
    inputs = model.prepare(ids, (ids != 0).astype(np.int64))
    plain = model.run(inputs, streams="attnlrp")
    given = model.run(model.prepare(np.zeros_like(ids), inputs.attention_mask), streams="attnlrp",
                      embeds=model.weights["embed.word"][ids])
    for key in ("tokens", "embed_grad", "positions", "types"):
        np.testing.assert_array_equal(given["attnlrp"][key], plain["attnlrp"][key], err_msg=key)
    np.testing.assert_array_equal(given["logits"], plain["logits"])


@pytest.mark.parametrize("name", VISION_MODELS)
def test_folder_equals_module(name, tmp_path):
    hf = build(name, seed=0)
    hf.save_pretrained(tmp_path)
    module, folder = export(hf), export(tmp_path)
    assert folder.spec == module.spec
    assert set(folder.weights) == set(module.weights)
    for key, value in module.weights.items():
        np.testing.assert_array_equal(folder.weights[key], value, err_msg=key)


@pytest.mark.parametrize("change,message", [
    ({"image_size": [16, 8]}, "image_size"),
    ({"patch_size": [4, 2]}, "patch_size"),
    ({"hidden_act": "gelu_fast"}, "hidden_act"),
])
def test_refusals_name_the_option(change, message, tmp_path):
    build("vit-cls", seed=0).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(change)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(NotImplementedError, match=message):
        export(tmp_path)
