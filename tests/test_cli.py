"""``python -m masklrp explain``, ``generate`` and ``heads`` end to end, in a subprocess as a
user runs them.

``evaluate`` is tested with the evaluation (tests/test_evaluate.py). Models: real MiniLM
weights with a seeded random head (pipeline tests), a tiny random LLaMA with a word-level
tokenizer (``generate``), and the default fine-tuned model for the README's demo command
(built on first use, about 2 minutes).
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pytest

import masklrp
from masklrp.__main__ import DEMO_TEXT

from command_line import run_masklrp

SAMPLE = Path(__file__).parent / "data" / "dependency_sample.conllu"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_explain_writes_one_row_per_method(tmp_path, classifier_dir):
    out = tmp_path / "heat.html"
    done = run_masklrp("explain", "a gripping <b>funny</b> film", "--model", str(classifier_dir),
                       "--method", "attnlrp,rawatt", "--target", "1", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("'a gripping <b>funny</b> film' -> target 1 (positive), logit ")
    assert [line.split(":")[0].strip() for line in done.stdout.splitlines()[1:3]] == ["attnlrp", "rawatt"]
    page = out.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "<b>" not in page and html.escape("<") in page, "tokens are escaped"
    assert page.count("attnlrp") >= 1 and page.count("rawatt") >= 1
    assert f"wrote {out}" in done.stdout


def test_explain_png_with_a_head_mask_file(tmp_path, classifier_dir):
    pytest.importorskip("matplotlib", reason="PNG heatmaps need the viz extra (matplotlib)")
    mask = np.zeros((6, 12), np.float32)
    mask[:, :3] = 1
    np.savez(tmp_path / "unused.npz", mask=mask)  # a plain array file is not a HeadMask
    heads = masklrp.HeadMask(np.zeros((6, 12, 3), np.int64), np.zeros((6, 12, 1), np.int64), 10,
                             np.ones(1, np.int64), np.zeros((1, 3), np.int64), relations=("nsubj",))
    heads.positional[mask == 1, 2] = 10
    heads.save(tmp_path / "heads.npz")
    out = tmp_path / "heat.png"
    done = run_masklrp("explain", "dull and far too long", "--model", str(classifier_dir), "--method",
                       "mask-lrp,attnlrp", "--head-mask", str(tmp_path / "heads.npz"), "--out", str(out),
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 5000

    bad = run_masklrp("explain", "dull", "--model", str(classifier_dir), "--head-mask",
                      str(tmp_path / "unused.npz"), "--method", "mask-lrp", "--out", str(out), cwd=tmp_path)
    assert bad.returncode == 2 and "error:" in bad.stderr


def test_explain_mask_lrp_needs_a_head_mask_for_a_given_model(tmp_path, classifier_dir):
    done = run_masklrp("explain", "dull", "--model", str(classifier_dir), "--method", "mask-lrp",
                       "--out", str(tmp_path / "x.html"), cwd=tmp_path)
    assert done.returncode == 2
    assert "--head-mask" in done.stderr and "python -m masklrp heads" in done.stderr
    assert not (tmp_path / "x.html").exists()


def test_explain_unknown_method_is_an_error(tmp_path, classifier_dir):
    done = run_masklrp("explain", "dull", "--model", str(classifier_dir), "--method", "nonsense",
                       "--out", str(tmp_path / "x.html"), cwd=tmp_path)
    assert done.returncode != 0 and "nonsense" in done.stderr


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    """A tiny random LlamaForCausalLM folder with a tokenizer.json: words w0 … w96 are its ids,
    <pad>, <s>, </s> (the eos) ids 0-2."""
    pytest.importorskip("torch", reason="the tiny LLaMA is built with torch")
    from hf_models import VOCAB, build
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path_factory.mktemp("llama")
    build("llama-lm", seed=5).save_pretrained(folder)
    special = ["<pad>", "<s>", "</s>"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(special + [f"w{i}" for i in range(3, VOCAB)])},
                                     unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(special)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_generate_writes_the_page(tmp_path, llama_dir):
    out = tmp_path / "gen.html"
    done = run_masklrp("generate", "w5 w17 w33 w8", "--model", str(llama_dir), "--max-new-tokens", "5",
                       "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = out.read_text(encoding="utf-8")
    model = masklrp.load(llama_dir)
    g = masklrp.attribute_generation(model, "w5 w17 w33 w8", max_new_tokens=5)
    assert f"-> {g.answer_text!r} ({len(g.answer_ids)} tokens)" in done.stdout
    assert page.count("<option") == len(g.answer_ids) and "w33" in page
    png = tmp_path / "gen.png"
    done = run_masklrp("generate", "w5 w17", "--model", str(llama_dir), "--target", "w40 w41", "--contrastive",
                       "--method", "cp-lrp", "--out", str(png), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "-> 'w40 w41' (2 tokens, given)" in done.stdout and png.read_bytes()[:8] == PNG_MAGIC


def test_generate_user_errors(tmp_path, llama_dir, classifier_dir):
    for args, message in [(("--max-new-tokens", "0"), "--max-new-tokens must be at least 1"),
                          (("--out", "x.txt"), "--out: unknown suffix '.txt'"),
                          (("--model", str(classifier_dir)), "needs a causal LM")]:
        done = run_masklrp("generate", "w5", "--model", str(llama_dir), *args, cwd=tmp_path)
        one_line_error(done, message)
    bare = model_copy(llama_dir, tmp_path / "bare")  # no tokenizer.json to read the prompt
    one_line_error(run_masklrp("generate", "w5", "--model", str(bare), cwd=tmp_path), "has no tokenizer.json")
    assert not (tmp_path / "generation.html").exists()


def test_heads_counts_a_treebank_and_saves_the_mask(tmp_path, minilm_dir):
    out = tmp_path / "heads.npz"
    done = run_masklrp("heads", "--model", str(minilm_dir), "--corpus", str(SAMPLE), "--out", str(out),
                       "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    saved = masklrp.HeadMask.load(out)
    direct = masklrp.head_statistics(masklrp.load(str(minilm_dir)), SAMPLE, progress=False)
    assert saved.n_sentences == 4 and saved.corpus == SAMPLE.name
    for counter in ("positional", "syntactic", "arcs", "baseline"):
        np.testing.assert_array_equal(getattr(saved, counter), getattr(direct, counter))
    assert "layer 0:" in done.stdout and f"wrote {out}" in done.stdout

    done = run_masklrp("heads", "--model", str(minilm_dir), "--corpus", str(SAMPLE), "--limit", "2",
                       "--out", str(out), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert masklrp.HeadMask.load(out).n_sentences == 2


def test_heads_plot(tmp_path, minilm_dir):
    pytest.importorskip("matplotlib", reason="the mask figure needs the viz extra (matplotlib)")
    done = run_masklrp("heads", "--model", str(minilm_dir), "--corpus", str(SAMPLE), "--out",
                       str(tmp_path / "h.npz"), "--plot", str(tmp_path / "h.png"), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "h.png").read_bytes()[:8] == PNG_MAGIC


def test_heads_on_sst2_train_parsed_by_spacy(tmp_path, minilm_dir):
    from masklrp.corpus import SPACY_MODEL
    from conftest import missing
    if missing(("spacy", SPACY_MODEL)):
        pytest.skip(f"sst2-train is parsed by spaCy (the spacy extra, {SPACY_MODEL})")
    out = tmp_path / "heads.npz"
    done = run_masklrp("heads", "--model", str(minilm_dir), "--corpus", "sst2-train", "--limit", "5",
                       "--out", str(out), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    saved = masklrp.HeadMask.load(out)
    assert saved.n_sentences == 5 and saved.corpus.startswith(f"sst2-train parsed by {SPACY_MODEL}")
    assert saved.arcs.sum() > 0


@pytest.mark.parametrize("args, message", [
    (("--corpus", "missing.conllu"), "--corpus"),
    (("--corpus", "ud-ewt-dev", "--spacy-model", "en_core_web_sm"), "--spacy-model"),
    (("--corpus", str(SAMPLE), "--limit", "0"), "--limit"),
])
def test_heads_bad_arguments(tmp_path, minilm_dir, args, message):
    done = run_masklrp("heads", "--model", str(minilm_dir), *args, "--out", str(tmp_path / "h.npz"),
                       "--no-progress", cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "h.npz").exists()


def test_readme_demo_command(tmp_path, default_model_dir):
    """The README's first command (``make demo``) on the real default model."""
    pytest.importorskip("matplotlib", reason="the demo's PNG needs the viz extra (matplotlib)")
    try:
        masklrp.data.ud_ewt("dev")
    except FileNotFoundError as e:
        pytest.skip(f"the default head mask counts over UD EWT dev, not shipped here: {e}")
    out = tmp_path / "heatmap.png"
    done = run_masklrp("explain", "--method", "attnlrp,mask-lrp", "--out", str(out), cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{DEMO_TEXT!r} -> target 1 (positive)"), "the default model calls it positive"
    attnlrp = done.stdout.splitlines()[1]
    assert "'charming'" in attnlrp, f"the most relevant words should include 'charming': {attnlrp}"
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 10000


def test_demo_mask_lrp_scores_are_not_negligible(default_model_dir):
    """Mask-LRP on the demo sentence, read as the reference code reads it (DESIGN.md §3.2): the
    words carry a visible share of the rollout, whose top is [CLS]'s identity path. Read
    strictly, the top block's mask left them all ~1e-8 of it."""
    try:
        masklrp.data.ud_ewt("dev")
    except FileNotFoundError as e:
        pytest.skip(f"the default head mask counts over UD EWT dev, not shipped here: {e}")
    model = masklrp.load(default_model_dir)
    [e] = masklrp.explain_all(model, DEMO_TEXT, "mask-lrp", head_mask=masklrp.default_head_mask())["mask-lrp"]
    words = np.abs(e.scores[~np.asarray(e.special, bool)])
    assert words.max() >= 1e-6 * np.abs(e.scores).max(), f"negligible word scores: {dict(zip(e.tokens, e.scores))}"


# ----------------------------------------------------------------------------- user errors
def one_line_error(done, *expected: str) -> str:
    """The run failed as a user error: exit 2, one ``error:`` line naming ``expected``, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def model_copy(source: Path, folder: Path, config_change: dict | None = None, weights: bytes | None = None) -> Path:
    """``source``'s config (changed) and weights (or ``weights`` as the file) in ``folder``."""
    import json

    folder.mkdir()
    config = json.loads((source / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **(config_change or {})}))
    if weights is None:
        (folder / "model.safetensors").symlink_to(source / "model.safetensors")
    else:
        (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_bad_models_are_one_line_errors(tmp_path, classifier_dir):
    unsupported = model_copy(classifier_dir, tmp_path / "t5", {"architectures": ["T5ForConditionalGeneration"]})
    one_line_error(run_masklrp("explain", "dull", "--model", str(unsupported), "--out", "x.html", cwd=tmp_path),
                   "architecture 'T5ForConditionalGeneration' is not supported")
    truncated = model_copy(classifier_dir, tmp_path / "cut",
                           weights=(classifier_dir / "model.safetensors").read_bytes()[:4096])
    one_line_error(run_masklrp("explain", "dull", "--model", str(truncated), "--out", "x.html", cwd=tmp_path),
                   "model.safetensors is not a readable safetensors file")
    one_line_error(run_masklrp("explain", "dull", "--model", "bert-base-uncased", "--out", "x.html", cwd=tmp_path),
                   "hub id", "huggingface-cli download bert-base-uncased")
    assert not (tmp_path / "x.html").exists()


def test_bad_outputs_are_refused_before_any_work(tmp_path):
    """--model names no model: an error about the output proves it was checked first."""
    (tmp_path / "taken").write_text("not a folder")
    for command, out, message in [("explain", tmp_path, "is a directory, expected a file name"),
                                  ("explain", tmp_path / "no" / "x.html", "does not exist"),
                                  ("explain", tmp_path / "x.txt", "unknown suffix '.txt'"),
                                  ("heads", tmp_path, "is a directory"),
                                  ("evaluate", tmp_path / "taken", "is a file; expected a folder")]:
        done = run_masklrp(command, "--model", str(tmp_path / "no-model"), "--out", str(out), cwd=tmp_path)
        one_line_error(done, "--out", message)
    debug = run_masklrp("--debug", "evaluate", "--model", "x", "--out", str(tmp_path / "taken"), cwd=tmp_path)
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "is a file" in debug.stderr
    after = run_masklrp("evaluate", "--out", str(tmp_path / "taken"), "--debug", cwd=tmp_path)
    assert after.returncode == 2 and "Traceback" in after.stderr


def test_heads_on_malformed_conllu(tmp_path, minilm_dir):
    bad = tmp_path / "bad.conllu"
    bad.write_text("# text = I ran\n1\tI\tI\n2\tran\trun\n\n")
    done = run_masklrp("heads", "--model", str(minilm_dir), "--corpus", str(bad), "--out",
                       str(tmp_path / "h.npz"), "--no-progress", cwd=tmp_path)
    one_line_error(done, "bad.conllu: sentence 1: a word line has 3 columns")
    assert not (tmp_path / "h.npz").exists()


def test_explain_a_text_longer_than_the_model(tmp_path, classifier_dir):
    text = " ".join(["good"] * 600)
    refused = run_masklrp("explain", text, "--model", str(classifier_dir), "--out", "x.html", cwd=tmp_path)
    one_line_error(refused, "has 602 tokens, more than the model's 512 positions")
    done = run_masklrp("explain", text, "--model", str(classifier_dir), "--truncate", "--target", "positive",
                       "--out", "x.html", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(truncated to 512 tokens) -> target 1 (positive)" in done.stdout
    assert "truncated to 512 tokens" in (tmp_path / "x.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory, minilm_dir) -> Path:
    from random_head import with_random_head

    return with_random_head(minilm_dir, tmp_path_factory.mktemp("qa") / "model", "BertForQuestionAnswering")


def test_explain_question_answering(tmp_path, qa_dir):
    """--question/--context: the pair explained for the predicted span (start + end logit), the
    same scores as the Python API's explanation of that pair, and the answer's text printed."""
    question, context = "who wrote the play ?", "the play was written by anton chekhov in 1895 ."
    out = tmp_path / "qa.html"
    done = run_masklrp("explain", "--question", question, "--context", context, "--model", str(qa_dir),
                       "--method", "attnlrp", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    model = masklrp.load(qa_dir)
    e = masklrp.attnlrp(model, (question, context), target="both")
    kind, (start, end) = e.target
    head = done.stdout.splitlines()[0]
    assert head.startswith(f"Q: {question!r} C: {context!r} -> both tokens {start}..{end}")
    assert f"logit {e.logit:.3f}" in head
    if start <= end:
        assert f"answer {model.tokenizer.decode(e.input_ids[start:end + 1])!r}" in head
    top = done.stdout.splitlines()[1]
    best = max(zip(*e.words()[:2]), key=lambda wv: wv[1])
    assert top.split(":", 1)[1].strip().startswith(f"{best[0]!r} {best[1]:+.3g}")
    page = out.read_text(encoding="utf-8")
    assert "chekhov" in page and "who" in page

    only_start = run_masklrp("explain", "--question", question, "--context", context, "--model", str(qa_dir),
                             "--target", "start", "--out", str(out), cwd=tmp_path)
    assert only_start.returncode == 0, only_start.stderr
    s = masklrp.attnlrp(model, (question, context), target="start")
    assert only_start.stdout.startswith(f"Q: {question!r} C: {context!r} -> start token {s.target[1]},")


@pytest.mark.parametrize("args, message", [
    (("--question", "who ?"), "--context is missing"),
    (("--context", "it was me ."), "--question is missing"),
    (("a text", "--question", "who ?", "--context", "me ."), "not both"),
    (("--question", "who ?", "--context", "me .", "--target", "1"), "--target: question answering"),
    (("a text",), "this is a question-answering model"),
])
def test_explain_question_answering_bad_arguments(tmp_path, qa_dir, args, message):
    done = run_masklrp("explain", *args, "--model", str(qa_dir), "--out", str(tmp_path / "x.html"), cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "x.html").exists()


def test_explain_question_needs_a_qa_model(tmp_path, classifier_dir):
    done = run_masklrp("explain", "--question", "who ?", "--context", "me .", "--model", str(classifier_dir),
                       "--out", str(tmp_path / "x.html"), cwd=tmp_path)
    assert done.returncode == 2 and "ForQuestionAnswering" in done.stderr, done.stderr
