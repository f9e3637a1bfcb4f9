"""masklrp.distributed: head statistics and evaluation on a Dask LocalCluster of two worker
processes (loopback only) give the single-process numbers exactly, survive a killed worker,
name a bad sentence, resume from cached shards; the CLI's --workers and --scheduler.

The model is all-MiniLM-L6-v2 with a seeded random classifier head (pipeline tests: the
numbers are not results); the corpora are the first sentences of UD EWT dev and SST-2 dev.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import threading
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="the cluster tests need dask.distributed "
                                                       "(pip install 'masklrp[distributed]')")

import masklrp  # noqa: E402
from masklrp import distributed as D  # noqa: E402
from masklrp.headmask import HeadMask  # noqa: E402

from command_line import run_masklrp  # noqa: E402

UD_DEV = Path(__file__).parents[1] / ".." / "shared" / "data" / "ud_ewt" / "en_ewt-ud-dev.conllu"
METHODS = ("attnlrp", "rawatt", "random-mask")
COUNTERS = ("positional", "syntactic", "baseline", "arcs")


@pytest.fixture(scope="module")
def client():
    with D.cluster(workers=2) as c:
        yield c


@pytest.fixture(scope="module")
def ud_dev() -> Path:
    if not UD_DEV.is_file():
        pytest.skip(f"UD EWT dev is not shipped beside the project ({UD_DEV})")
    return UD_DEV.resolve()


@pytest.fixture(scope="module")
def single(classifier, sst2_slice, head_mask):
    """The single-process evaluation the cluster runs must reproduce (batches of 5: 3 batches)."""
    return masklrp.evaluate(classifier, sst2_slice, METHODS, head_mask, random_seeds=3, batch_size=5,
                            progress=False, compare=[("attnlrp", "rawatt")])


def assert_same_counters(ours: HeadMask, ref: HeadMask) -> None:
    for name in COUNTERS:
        a, b = getattr(ours, name), getattr(ref, name)
        assert a.shape == b.shape, f"{name}: shape {a.shape}, single process {b.shape}"
        diff = np.argwhere(a != b)
        assert not len(diff), f"{name}: {len(diff)} cells differ, first at {tuple(diff[0])}"
    assert ours.queries == ref.queries and ours.n_sentences == ref.n_sentences
    assert sorted(ours.skipped) == sorted(ref.skipped)
    for k in ref.skipped:
        np.testing.assert_array_equal(ours.skipped[k], ref.skipped[k], err_msg=f"skipped[{k}]")


def assert_same_evaluation(ours, ref) -> None:
    np.testing.assert_array_equal(ours.p_full, ref.p_full)
    np.testing.assert_array_equal(ours.target, ref.target)
    for method in ref.methods:
        assert len(ours.probs[method]) == len(ref.probs[method])
        for r, run in enumerate(ref.probs[method]):
            for mode, values in run.items():
                np.testing.assert_array_equal(ours.probs[method][r][mode], values, err_msg=f"{method} run {r} {mode}")
    assert ours.summary() == ref.summary()
    assert ours.comparisons() == ref.comparisons()


# ----------------------------------------------------------------------------- head statistics
def test_head_statistics_on_two_workers_equals_one_process(client, classifier, ud_dev):
    """150 sentences in batches of 2: two windows of 128 (the second short), shards of 8 batches
    read from the file by the workers, and the same sentences sent from memory."""
    ref = masklrp.head_statistics(classifier, list(islice(masklrp.read_conllu(ud_dev), 150)), batch_size=2,
                                  progress=False)
    from_file = D.head_statistics(client, classifier, ud_dev, batch_size=2, limit=150, shard_size=16, progress=False)
    assert_same_counters(from_file, ref)
    assert from_file.corpus == "en_ewt-ud-dev.conllu" and from_file.model == ref.model
    in_memory = masklrp.head_statistics(classifier, list(islice(masklrp.read_conllu(ud_dev), 150)), batch_size=2,
                                        progress=False, client=client, shard_size=16)
    assert_same_counters(in_memory, ref)


def test_bad_sentence_is_named_and_a_rerun_resumes(client, classifier, ud_dev, tmp_path):
    sentences = list(islice(masklrp.read_conllu(ud_dev), 40))
    good = sentences[17]
    bad = masklrp.Sentence(words=("good", "\ud800"), heads=(0, 1), deprels=("root", "nsubj"), spaces=(True, False))
    sentences[17] = bad
    cache = tmp_path / "shards"
    with pytest.raises(D.ShardError, match=r"sentence 17 .*lone surrogate") as caught:
        masklrp.head_statistics(classifier, sentences, batch_size=4, progress=False, client=client,
                                shard_size=4, cache=cache)
    assert caught.value.sentence == 17
    # one window: every shard tokenizes it, so every shard fails; none is cached
    assert not list(cache.iterdir())

    # evaluation: the bad text fails only its own batch's shard; the others are cached
    data = masklrp.data.sst2("dev")[:9]
    broken = list(data)
    broken[4] = ("\ud800" * len(data[4][0]), data[4][1])  # the same length: the same batches
    with pytest.raises(D.ShardError, match=r"sentence 4 .*lone surrogate"):
        masklrp.evaluate(classifier, broken, ("rawatt",), batch_size=3, progress=False, client=client, cache=cache)
    done = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len(done) == 2, f"the two good shards are kept, got {sorted(done)}"
    resumed = masklrp.evaluate(classifier, data, ("rawatt",), batch_size=3, progress=False, client=client,
                               cache=cache)
    after = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len(after) == 3 and all(after[name] == t for name, t in done.items()), "cached shards were redone"
    assert_same_evaluation(resumed, masklrp.evaluate(classifier, data, ("rawatt",), batch_size=3, progress=False))
    assert good is not bad


def test_killed_worker_is_replaced_and_the_results_are_unchanged(classifier, sst2_slice, tmp_path):
    """Kill one of two worker processes once a shard is done (six shards of about a second):
    its shards run elsewhere and the evaluation is the single-process one, bit for bit."""
    options = dict(methods=("attnlrp", "rawatt"), batch_size=2, metrics=("aopc",), progress=False)
    ref = masklrp.evaluate(classifier, sst2_slice, **options)
    cache = tmp_path / "shards"
    with D.cluster(workers=2) as client:
        pids = client.run(os.getpid)
        found, errors = [], []

        def run():
            try:
                found.append(masklrp.evaluate(classifier, sst2_slice, client=client, cache=cache, **options))
            except Exception as e:  # reported below
                errors.append(e)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 120
        while (not cache.is_dir() or not any(cache.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.02)
        done_at_kill = len(list(cache.iterdir()))
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        thread.join(timeout=300)
        assert not errors, errors
        assert done_at_kill < 6, "the kill came after every shard was done"
        assert set(client.run(os.getpid).values()) != set(pids.values()), "no worker was replaced"
    assert len(list(cache.iterdir())) == 6
    assert_same_evaluation(found[0], ref)


# ----------------------------------------------------------------------------- evaluation
def test_evaluate_on_two_workers_equals_one_process(client, classifier, classifier_dir, sst2_slice, head_mask,
                                                    single):
    """Examples sent with their shards, and a named data set the workers load themselves; one
    batch per shard and two (the second shard short). The random mask's three seeds included:
    seed r is run r's, in every batch, wherever it runs."""
    sent = masklrp.evaluate(classifier, sst2_slice, METHODS, head_mask, random_seeds=3, batch_size=5,
                            progress=False, compare=[("attnlrp", "rawatt")], client=client)
    assert_same_evaluation(sent, single)
    assert sent.table() == single.table()
    named = masklrp.evaluate(str(classifier_dir), "sst2-dev", METHODS, head_mask, random_seeds=3, batch_size=5,
                             limit=12, progress=False, compare=[("attnlrp", "rawatt")], client=client, shard_size=10)
    assert_same_evaluation(named, single)
    assert named.info["data"] == "sst2-dev[:12]" and named.info["random_seeds"] == 3


def test_bad_arguments(client, classifier, ud_dev, tmp_path):
    with pytest.raises(TypeError, match="client must be a dask.distributed.Client"):
        D.head_statistics("tcp://nowhere", classifier, ud_dev)
    with pytest.raises(ValueError, match="shard_size, cache: shards are for a cluster"):
        masklrp.head_statistics(classifier, ud_dev, shard_size=8)
    with pytest.raises(ValueError, match="shard_size must be"):
        D.head_statistics(client, classifier, ud_dev, shard_size=0, progress=False)
    with pytest.raises(ValueError, match="model: no model folder"):
        D.head_statistics(client, tmp_path / "missing", ud_dev, progress=False)
    exported = copy.copy(classifier)
    exported.source = "torch:BertForSequenceClassification"  # what load(hf_module, tokenizer=...) gives
    with pytest.raises(ValueError, match="this Model was not loaded from a folder"):
        D.head_statistics(client, exported, ud_dev, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cache: .* is a file"):
        D.head_statistics(client, classifier, ud_dev, cache=tmp_path / "file", progress=False)
    with pytest.raises(ValueError, match="give exactly one of scheduler"):
        with D.cluster():
            pass


# ----------------------------------------------------------------------------- command line
def test_cli_workers_and_scheduler_give_the_single_process_results(client, classifier_dir, ud_dev, tmp_path):
    """`heads` and `evaluate` alone, with --workers 2 and against the running cluster's
    scheduler address: the same head mask file and the same results.json numbers."""
    address = client.scheduler.address
    assert address.startswith("tcp://127.0.0.1:")
    runs = {"single": [], "workers": ["--workers", "2"], "scheduler": ["--scheduler", address]}
    heads, results = {}, {}
    for name, where in runs.items():
        out = tmp_path / f"heads-{name}.npz"
        done = run_masklrp("heads", "--model", str(classifier_dir), "--corpus", str(ud_dev), "--limit", "40",
                           "--batch-size", "4", "--no-progress", "--out", str(out),
                           *(where + ["--shard-size", "8"] if where else []), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert not out.with_name(out.name + ".shards").exists(), "the shard cache outlived a finished run"
        heads[name] = HeadMask.load(out)
        folder = tmp_path / f"eval-{name}"
        done = run_masklrp("evaluate", "--model", str(classifier_dir), "--data", "sst2-dev", "--limit", "6",
                           "--methods", "rawatt,attnlrp", "--metrics", "aopc,lodds", "--batch-size", "3",
                           "--compare", "attnlrp:rawatt", "--no-progress", "--out", str(folder), *where, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert not (folder / "shards").exists()
        doc = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        results[name] = (doc["results"], doc["comparisons"])
    for name in ("workers", "scheduler"):
        assert_same_counters(heads[name], heads["single"])
        assert results[name] == results["single"], name


def test_cli_sst2_train_is_parsed_on_the_client_and_counted_on_the_cluster(client, classifier_dir, tmp_path):
    """The spaCy-parsed corpus is not a file the workers can read: the client parses it and
    the trees travel with their shards; the counters equal one process's."""
    from masklrp.corpus import SPACY_MODEL
    from conftest import missing
    if missing(("spacy", SPACY_MODEL)):
        pytest.skip(f"sst2-train is parsed by spaCy (the spacy extra, {SPACY_MODEL})")
    masks = {}
    for name, where in {"single": [], "scheduler": ["--scheduler", client.scheduler.address]}.items():
        out = tmp_path / f"heads-{name}.npz"
        done = run_masklrp("heads", "--model", str(classifier_dir), "--corpus", "sst2-train", "--limit", "12",
                           "--batch-size", "4", "--no-progress", "--out", str(out), *where, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        masks[name] = HeadMask.load(out)
    assert masks["single"].n_sentences == 12 and masks["single"].corpus.startswith("sst2-train parsed by")
    assert masks["scheduler"].corpus == masks["single"].corpus
    assert_same_counters(masks["scheduler"], masks["single"])


def test_cli_resume_reuses_finished_shards(client, classifier_dir, ud_dev, tmp_path):
    out = tmp_path / "heads.npz"
    cache = tmp_path / "heads.npz.shards"
    # what an interrupted run leaves: the shards it finished (here: all of them, via the API)
    D.head_statistics(client, str(classifier_dir), ud_dev, batch_size=4, limit=24, shard_size=8, progress=False,
                      cache=cache, corpus_name=ud_dev.name)
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len(before) == 3
    args = ("heads", "--model", str(classifier_dir), "--corpus", str(ud_dev), "--limit", "24", "--batch-size", "4",
            "--shard-size", "8", "--no-progress", "--workers", "2")
    # a cached shard is read, not recomputed: spoil one (1000 more arcs) and the result shows it
    spoiled = HeadMask.load(cache / sorted(before)[0])
    spoiled.arcs[0] += 1000
    spoiled.save(cache / sorted(before)[0])
    done = run_masklrp(*args, "--resume", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    resumed = HeadMask.load(out)
    assert not cache.exists()
    fresh = run_masklrp(*args, "--out", str(tmp_path / "fresh.npz"), cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    fresh = HeadMask.load(tmp_path / "fresh.npz")
    assert resumed.arcs[0] == fresh.arcs[0] + 1000
    np.testing.assert_array_equal(resumed.syntactic, fresh.syntactic)

    bad = run_masklrp("heads", "--corpus", str(ud_dev), "--resume", "--out", str(out), cwd=tmp_path)
    assert bad.returncode == 2 and "--resume, --shard-size: shards are for a cluster run" in bad.stderr
