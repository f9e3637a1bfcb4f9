"""Malformed input, generated: every case ends in a documented exception or a finite result.

Five families, each drawn by hypothesis (derandomized: the same cases every run) and each
case run in its own ``python -c`` subprocess, so that a crash in the C engine is a failed
case, not a dead test process:

* ``config.json`` with keys changed, removed or replaced by any JSON value;
* ``model.safetensors`` truncated, with its header length or header JSON changed, its data
  bytes flipped, or split into shards by a wrong ``weight_map``;
* head-mask ``.npz`` files with arrays of other shapes, dtypes and values, or other metadata;
* CoNLL-U files with any number of columns and any ids and heads, counted by
  ``head_statistics`` on a tiny model;
* call arguments to the explainers: inputs, targets, methods, options.

A case passes when its process exits normally having either returned (every number it
produced finite) or raised one of :data:`ALLOWED`; never a signal, another exception type or
a NaN. The subprocesses inherit the environment (``ASAN_OPTIONS``, ``LD_PRELOAD``, ...), so
under an ASan build the same cases run sanitized.
"""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (the test extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from test_export import tiny_llama_folder  # noqa: E402  (a NumPy-only LLaMA checkpoint)

REPO = Path(__file__).resolve().parents[1]
ALLOWED = ("TypeError", "ValueError", "FileNotFoundError", "NotImplementedError")
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# Runs in the subprocess: argv = family, model folder, case folder, case (JSON).
RUNNER = r"""
import json, math, sys
import numpy as np
import masklrp
from masklrp.explain import Explanation

ALLOWED = (TypeError, ValueError, FileNotFoundError, NotImplementedError)

def finite(x):
    if isinstance(x, Explanation):
        return finite(x.scores) and math.isfinite(x.logit)
    if isinstance(x, dict):
        return all(finite(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return all(finite(v) for v in x)
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        return bool(np.isfinite(x).all())
    if isinstance(x, float):
        return math.isfinite(x)
    return True

def forward(folder):
    model = masklrp.load(folder)
    ids = np.array([[2, 5, 6, 7, 3]])
    return model.forward(model.prepare(ids))["logits"]

def run(family, model_dir, case_dir, case):
    if family in ("config", "safetensors"):
        return forward(case_dir)
    if family == "npz":
        mask = masklrp.HeadMask.load(case_dir + "/heads.npz")
        mask.summary()
        return [mask.array, mask.a_o, mask.lambda_r]
    if family == "conllu":
        model = masklrp.load(model_dir)
        stats = masklrp.head_statistics(model, case_dir + "/corpus.conllu", progress=False, batch_size=2)
        stats.summary()
        return [stats.array, stats.a_o]
    model = masklrp.load(model_dir)
    inputs, target = eval(case["inputs"], {"np": np}), eval(case["target"], {"np": np})
    L, H = model.spec.n_layers, model.spec.n_heads
    return masklrp.explain_all(model, inputs, [case["method"]], target, np.ones((L, H)),
                               truncation=case["truncation"])

family, model_dir, case_dir, case = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
try:
    out = run(family, model_dir, case_dir, case)
except ALLOWED as e:
    print("RAISED", type(e).__name__, " ".join(str(e).split())[:300])
else:
    print("OK", "finite" if finite(out) else "NOT FINITE")
"""


def run_case(family: str, model_dir: Path, case_dir: Path, case: dict | None = None) -> str:
    """One case in a fresh interpreter; the environment is inherited whole (ASAN_OPTIONS,
    LD_PRELOAD, ...), with this checkout first on PYTHONPATH. Returns its report line."""
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", RUNNER, family, str(model_dir), str(case_dir),
                           json.dumps(case or {})], capture_output=True, text=True, env=env, timeout=120)
    if done.returncode < 0:
        raise AssertionError(f"{family} case killed by {signal.Signals(-done.returncode).name}: "
                             f"{case}\n{done.stderr[-3000:]}")
    assert done.returncode == 0, f"{family} case ended by an undocumented error: {case}\n{done.stderr[-3000:]}"
    report = done.stdout.strip().splitlines()[-1]
    kind = report.split()[:2]
    assert kind == ["OK", "finite"] or (kind[0] == "RAISED" and kind[1] in ALLOWED), (case, report)
    return report


# ----------------------------------------------------------------------------- the tiny models
V, C, L, H, F, P, TT = 40, 8, 2, 2, 12, 16, 2


def tiny_bert_folder(folder: Path) -> Path:
    """A BertForSequenceClassification checkpoint (3 labels) and a WordLevel tokenizer, written
    with NumPy and tokenizers only: w0..w34 are words, ids 0-4 [PAD] [UNK] [CLS] [SEP] [MASK]."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    rng = np.random.default_rng(0)
    shapes = {"embeddings.word_embeddings.weight": (V, C), "embeddings.position_embeddings.weight": (P, C),
              "embeddings.token_type_embeddings.weight": (TT, C), "embeddings.LayerNorm.weight": (C,),
              "embeddings.LayerNorm.bias": (C,), "pooler.dense.weight": (C, C), "pooler.dense.bias": (C,),
              "classifier.weight": (3, C), "classifier.bias": (3,)}
    for i in range(L):
        p = f"encoder.layer.{i}."
        for name, shape in (("attention.self.query", (C, C)), ("attention.self.key", (C, C)),
                            ("attention.self.value", (C, C)), ("attention.output.dense", (C, C)),
                            ("intermediate.dense", (F, C)), ("output.dense", (C, F))):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = shape, shape[:1]
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (C,), (C,)
    folder.mkdir(parents=True)
    save_file({k: (0.3 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()},
              str(folder / "model.safetensors"))
    config = dict(architectures=["BertForSequenceClassification"], model_type="bert", vocab_size=V,
                  hidden_size=C, num_hidden_layers=L, num_attention_heads=H, intermediate_size=F,
                  max_position_embeddings=P, type_vocab_size=TT, layer_norm_eps=1e-12, pad_token_id=0,
                  hidden_act="gelu", id2label={"0": "neg", "1": "neu", "2": "pos"})
    (folder / "config.json").write_text(json.dumps(config))
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(special + [f"w{i}" for i in range(V - len(special))])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.add_special_tokens(special)
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    return {"bert": tiny_bert_folder(root / "bert"), "llama": tiny_llama_folder(root / "llama")}


def test_the_tiny_models_run_and_the_environment_is_passed_on(models, monkeypatch):
    for name, folder in models.items():
        assert run_case("config", folder, folder).startswith("OK finite"), name
    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=0")  # what an ASan run sets: it must reach the child
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    seen = subprocess.run([sys.executable, "-c", "import os; print(os.environ['ASAN_OPTIONS'])"], env=env,
                          capture_output=True, text=True).stdout.strip()
    assert seen == "detect_leaks=0"


def case_folder(models: dict, name: str) -> tempfile.TemporaryDirectory:
    """A fresh folder holding a copy of the model ``name`` (its files, not links)."""
    tmp = tempfile.TemporaryDirectory(prefix="fuzz-")
    for f in models[name].iterdir():
        (Path(tmp.name) / f.name).write_bytes(f.read_bytes())
    return tmp


# ----------------------------------------------------------------------------- value strategies
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70),
    st.sampled_from([0, -1, 1, 2, 3, 4, 8, 16, 2**31, 2**63, -(2**40)]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e-50, 1e-12, 1e300, -0.0, 0.5]),
    st.text(max_size=6))
json_values = st.one_of(
    json_scalars, st.lists(json_scalars, max_size=3),
    st.dictionaries(st.sampled_from(["rope_type", "type", "factor", "rope_theta", "low_freq_factor",
                                     "high_freq_factor", "short_factor", "0", "1", "weight_map"]),
                    st.one_of(json_scalars, st.sampled_from(["linear", "llama3", "yarn", "longrope", "dynamic"])),
                    max_size=4))
CONFIG_KEYS = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "rms_norm_eps", "pad_token_id",
               "hidden_act", "id2label", "num_labels", "architectures", "model_type", "num_key_value_heads",
               "head_dim", "rope_theta", "rope_scaling", "rope_parameters", "sliding_window",
               "tie_word_embeddings", "position_embedding_type", "is_decoder", "attention_bias"]


@FUZZ
@given(model=st.sampled_from(["bert", "llama"]),
       changes=st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), st.one_of(st.just("<delete>"), json_values)),
                        min_size=1, max_size=3),
       whole=st.one_of(st.none(), st.none(), st.none(), json_scalars, st.lists(json_scalars, max_size=2)))
def test_fuzz_config_json(models, model, changes, whole):
    with case_folder(models, model) as tmp:
        path = Path(tmp) / "config.json"
        config = json.loads(path.read_text())
        for key, value in changes:
            if value == "<delete>":
                config.pop(key, None)
            else:
                config[key] = value
        path.write_text(json.dumps(config if whole is None else whole))
        run_case("config", models[model], tmp, {"changes": changes, "whole": whole})


# ----------------------------------------------------------------------------- safetensors
DTYPES = ["F32", "F16", "BF16", "F64", "I32", "I64", "BOOL", "U8", "F8_E4M3", "X"]


def _split(raw: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _join(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


@FUZZ
@given(model=st.sampled_from(["bert", "llama"]), op=st.sampled_from(["truncate", "length", "header", "bytes", "shards"]),
       where=st.floats(0, 1), value=st.integers(0, 2**64 - 1), dtype=st.sampled_from(DTYPES),
       shape=st.lists(st.integers(-1, 50), max_size=3), offsets=st.lists(st.integers(-5, 10**6), min_size=0, max_size=3),
       noise=st.binary(min_size=1, max_size=16), weight_map=json_values)
def test_fuzz_safetensors(models, model, op, where, value, dtype, shape, offsets, noise, weight_map):
    with case_folder(models, model) as tmp:
        path = Path(tmp) / "model.safetensors"
        raw = path.read_bytes()
        header, data = _split(raw)
        keys = sorted(k for k in header if k != "__metadata__")
        key = keys[int(where * (len(keys) - 1))]
        if op == "truncate":
            raw = raw[:int(where * len(raw))]
        elif op == "length":
            raw = struct.pack("<Q", value) + raw[8:]
        elif op == "header":
            entry = header[key]
            entry.update(dtype=dtype, **({"shape": shape} if where < 0.5 else {"data_offsets": offsets}))
            raw = _join(header, data)
        elif op == "bytes":  # flipped data bytes: NaN / inf weights are possible
            start = int(where * (len(data) - len(noise)))
            raw = _join(header, data[:start] + noise + data[start + len(noise):])
        else:  # sharded, with a weight_map from the strategy for one tensor
            path.unlink()
            from safetensors.numpy import load_file, save_file

            (Path(tmp) / "a.safetensors").write_bytes(raw)
            tensors = load_file(str(Path(tmp) / "a.safetensors"))
            save_file({key: tensors[key]}, str(Path(tmp) / "b.safetensors"))
            index = {"weight_map": {**{k: "a.safetensors" for k in keys}, key: weight_map}}
            (Path(tmp) / "model.safetensors.index.json").write_text(json.dumps(index))
            raw = None
        if raw is not None:
            path.write_bytes(raw)
        run_case("safetensors", models[model], tmp, {"op": op, "key": key, "where": where})


# ----------------------------------------------------------------------------- head-mask .npz
def _hand_mask_arrays() -> dict:
    pos = np.zeros((2, 2, 5), np.int64)
    pos[..., 2] = 4
    return {"positional": pos, "syntactic": np.ones((2, 2, 1), np.int64), "queries": np.int64(4),
            "arcs": np.array([2]), "baseline": np.ones((1, 5), np.int64), "skipped": np.zeros((1, 1), np.int64)}


arrays = st.tuples(st.sampled_from(["int64", "uint64", "int8", "float32", "bool", "object", "U3"]),
                   st.lists(st.integers(0, 3), max_size=3),
                   st.sampled_from([0, 1, -1, 7, 2**63 + 5, 10**9]))


@FUZZ
@given(changed=st.just({}) | st.dictionaries(st.sampled_from(["positional", "syntactic", "queries", "arcs", "baseline", "skipped"]),
                               st.one_of(st.none(), arrays), max_size=3),
       meta_changes=st.just({}) | st.dictionaries(st.sampled_from(["format", "version", "relations", "skipped_reasons", "model",
                                                     "n_sentences", "xi_pos", "xi_synt", "extra"]),
                                    st.one_of(st.just("<delete>"), json_values), max_size=3),
       meta_whole=st.one_of(st.none(), st.none(), json_values))
def test_fuzz_head_mask_npz(models, changed, meta_changes, meta_whole):
    arrays_ = _hand_mask_arrays()
    for name, spec in changed.items():
        if spec is None:
            del arrays_[name]
            continue
        dtype, shape, fill = spec
        if dtype == "object":
            arrays_[name] = np.full(shape, {"x": fill}, dtype=object)
        elif dtype == "U3":
            arrays_[name] = np.full(shape, str(fill)[:3])
        else:
            arrays_[name] = np.full(shape, fill % 2**64 if dtype == "uint64" else fill).astype(dtype)
    meta = {"format": "masklrp.HeadMask", "version": 1, "relations": ["nsubj"], "skipped_reasons": ["no_token"],
            "model": "m", "corpus": "c", "n_sentences": 1, "queries": 4, "arcs": [2], "xi_pos": 0.8,
            "xi_synt": 0.1, "layers": 2, "heads": 2}
    for key, value in meta_changes.items():
        if value == "<delete>":
            meta.pop(key, None)
        else:
            meta[key] = value
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        with open(Path(tmp) / "heads.npz", "wb") as f:
            np.savez(f, **arrays_, metadata=np.array(json.dumps(meta if meta_whole is None else meta_whole)))
        run_case("npz", models["bert"], tmp, {"changed": repr(changed), "meta": meta_changes, "whole": meta_whole})


# ----------------------------------------------------------------------------- CoNLL-U
# Mostly well-formed (so that head_statistics runs), with every kind of damage mixed in.
conllu_lines = st.lists(
    st.tuples(st.sampled_from(["next"] * 8 + ["1", "0", "-1", "1-2", "2-3", "1.1", "x", "", "10"]),
              st.sampled_from(["w5", "w6", "w7", "w9"] * 3 + ["w5 w6", "", "_", "é", "w8,"]),
              st.sampled_from(["0", "1", "2"] * 5 + ["3", "9", "-1", "_", "x", ""]),
              st.sampled_from(["nsubj", "obj", "amod:x", "advmod", "root", "_", "", "dobj"]),
              st.sampled_from(["_", "_", "SpaceAfter=No", "SpaceAfter=No|x=y", ""]),
              st.sampled_from([10] * 8 + [1, 3, 9, 11, 12])),
    min_size=0, max_size=5)


# A well-formed tree: word 1 the root, every later word headed by an earlier one.
clean_lines = st.lists(st.tuples(st.sampled_from(["w5", "w6", "w7", "w9", "é"]), st.integers(0, 10**6),
                                 st.sampled_from(["nsubj", "obj", "amod", "advmod", "dep", "nsubj:pass"]),
                                 st.sampled_from(["_", "SpaceAfter=No"])),
                       min_size=1, max_size=6).map(
    lambda words: [("next", form, str(0 if i == 0 else 1 + pick % i), rel, misc, 10)
                   for i, (form, pick, rel, misc) in enumerate(words)])


@FUZZ
@given(sentences=st.lists(clean_lines | conllu_lines, min_size=1, max_size=3), comment=st.booleans())
def test_fuzz_conllu(models, sentences, comment):
    blocks = []
    for lines in sentences:
        rows = ["# text = fuzz"] if comment else []
        for n, (tid, form, head, rel, misc, columns) in enumerate(lines, 1):
            fields = [str(n) if tid == "next" else tid, form, form, "X", "X", "_", head, rel, "_", misc]
            rows.append("\t".join((fields + ["_"] * 12)[:columns]))
        blocks.append("\n".join(rows))
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        (Path(tmp) / "corpus.conllu").write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
        run_case("conllu", models["bert"], tmp, {"sentences": sentences})


# ----------------------------------------------------------------------------- call arguments
# (batch, length) ids, mostly in every vocabulary here ([0, 40)), sometimes ragged or out of range
token_rows = st.one_of(
    st.integers(1, 6).flatmap(lambda n: st.lists(st.lists(st.integers(0, 39), min_size=n, max_size=n),
                                                 min_size=1, max_size=3)),
    st.lists(st.lists(st.integers(-3, 45), min_size=0, max_size=6), min_size=0, max_size=3))
inputs_exprs = st.one_of(
    st.sampled_from(["'w5 w6 w7'", "'ab\\ud800c'", "''", "['w5', 'w6 w7']", "('w5 w6', 'w7')", "[('w5', 'w6')]",
                     "[]", "()", "(t for t in ['w5'])", "None", "3.5", "{'input_ids': [[2, 5, 3]]}",
                     "{'input_ids': [[2, 5, 3]], 'attention_mask': [[1, 1, 0]]}", "{'input_ids': [[2, 5]], 'x': 1}",
                     "' '.join(['w5'] * 40)", "['w5', 3]", "np.zeros((0, 5), np.int64)"]),
    st.builds(lambda rows, dtype: f"np.array({rows!r}, dtype={dtype!r})", token_rows,
              st.sampled_from(["int64"] * 4 + ["int32", "uint8", "uint64", "bool", "float32", "int8", "object"])),
    st.builds(lambda rows, mask: f"{{'input_ids': {rows!r}, 'attention_mask': {mask!r}}}", token_rows, token_rows))
target_exprs = st.sampled_from(["None"] * 6 + ["0", "1", "2", "3", "-1", "'pos'", "'nope'", "np.array(1)", "np.array([1])",
                                "np.array(1.0)", "('start', 1)", "('start',)", "[0]", "[0, 1]", "1.0", "True", "'both'"])


@FUZZ
@given(model=st.sampled_from(["bert", "llama"]), inputs=inputs_exprs, target=target_exprs,
       method=st.sampled_from(["attnlrp", "cp-lrp", "gae", "rawatt", "mask-lrp", "attcat", "rollout"]),
       truncation=st.booleans())
def test_fuzz_call_arguments(models, model, inputs, target, method, truncation):
    run_case("call", models[model], models[model],
             {"inputs": inputs, "target": target, "method": method, "truncation": truncation})
