"""Head statistics and faithfulness evaluation on a Dask cluster (``dask.distributed``).

>>> from distributed import Client, LocalCluster
>>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))   # or Client("tcp://host:8786")
>>> mask = masklrp.head_statistics(model, "en_ewt-ud-dev.conllu", client=client)
>>> result = masklrp.evaluate(model, "sst2-dev", ["mask-lrp", "gae"], mask, client=client)

Both jobs are data-parallel. The work is cut into **shards**, each a run of whole batches of the
single-process run, so every batch holds the same sentences padded the same way and a shard's
numbers are those of the single-process run: head counters bit for bit, evaluation curves per
sentence bit for bit (hence every table, mean and bootstrap interval too).

* Head statistics batch within windows of ``batch_size * WINDOW_BATCHES`` sentences
  (:func:`masklrp.headstats.window_batches`); a shard is a range of one window's batches. A
  CoNLL-U file is read by the workers themselves (the shard names a sentence index range
  and the file's SHA-256, which the worker checks); sentences in memory travel with their
  shard (its window). Shards return :class:`~masklrp.headmask.HeadMask` counters, summed by
  :meth:`HeadMask.merge`.
* Evaluation sorts all sentences by length and batches them (``evaluate``'s ``_chunks``); a
  shard is a run of those batches, named by sentence indices. A named data set
  (``"sst2-dev"``) is loaded by the workers themselves (checked against the client's by a
  digest of the shard's examples); examples given in memory travel with their shard. Shards
  return per-sentence probabilities, which the client puts back in sentence order
  (:class:`masklrp.evaluate.Found`), so every mean is the sentence-weighted mean.
* Random-mask seeds are the run number (0, 1, ...) and Captum's baselines fixed, in every
  batch: nothing depends on where a shard runs.

Each worker process loads the model once from its folder (safetensors, no torch; the folder
must be readable by the workers at the same path: checked before any shard is sent), and
counts or scores with the C engine on ``threads`` threads. Run one task per worker
(``threads_per_worker=1``, ``dask worker --nthreads 1``) and give the cores to ``threads``.

Faults: a worker that dies loses only its running shards, which the scheduler sends elsewhere
(deterministic, so the result is unchanged). A shard that raises is retried sentence by
sentence to name the culprit (:class:`ShardError`), the other shards are cancelled, nothing
is returned. With ``cache`` (a folder), each finished shard is written there as one ``.npz``
(no pickles) named by its index and a hash of everything that determines it (model files,
data, settings), so a rerun with the same ``cache`` skips the shards already done.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from . import headstats as hs
from ._checks import positive_int
from ._files import replacing
from .corpus import ALIASES, RELATIONS, ConlluFile, read_conllu
from .evaluate import DATASETS, Found, Job, _chunks, _examples, _Runner, plan
from .headmask import XI_POS, XI_SYNT, HeadMask
from .model import Model, load

__all__ = ["HEADS_SHARD", "ShardError", "cluster", "evaluate", "head_statistics"]

HEADS_SHARD = 256        # sentences per head-statistics shard (about a second of engine time)
CACHE_FORMAT = 1         # bump when a shard file's layout or meaning changes
WORKER_WAIT_S = 120      # how long a scheduler may take to get its first worker
MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


class ShardError(ValueError):
    """A shard failed: ``sentence`` is the index (in the corpus or data) of the sentence that
    fails on its own, or None when only the whole batch fails."""

    def __init__(self, message: str, sentence: int | None = None) -> None:
        super().__init__(message)
        self.sentence = sentence

    def __reduce__(self):  # travels from the worker to the client
        return type(self), (str(self), self.sentence)


# ----------------------------------------------------------------------------- the cluster
@contextlib.contextmanager
def cluster(scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A ``dask.distributed.Client``: of the scheduler at ``scheduler`` (``"tcp://host:8786"``),
    or of a ``LocalCluster`` of ``workers`` processes (one task each, loopback only) started
    here and closed when the block ends."""
    distributed = _dask()
    if (scheduler is None) == (workers is None):
        raise ValueError("give exactly one of scheduler (an address) and workers (a number)")
    if scheduler is not None:
        if not isinstance(scheduler, str) or not scheduler:
            raise TypeError(f"scheduler must be an address such as 'tcp://host:8786', got {scheduler!r}")
        with distributed.Client(scheduler) as client:
            yield client
        return
    workers = positive_int(workers, "workers")
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0") as local, distributed.Client(local) as client:
        yield client


def _dask():
    try:
        import distributed
    except ImportError as e:
        raise ImportError(f"a cluster run needs dask.distributed: pip install 'masklrp[distributed]' ({e})") from e
    return distributed


def _check_client(client) -> None:
    distributed = _dask()
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a dask.distributed.Client, got {type(client).__name__}")
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        raise ValueError(f"client: no worker joined the scheduler {client.scheduler.address} in "
                         f"{WORKER_WAIT_S} s (start some: dask worker {client.scheduler.address})") from None


def _check_readable(client, paths: Sequence[str], what: str) -> None:
    """Every worker can read every path (a model folder's files, a corpus file)."""
    found = client.run(_unreadable, list(paths))
    bad = {worker: missing for worker, missing in found.items() if missing}
    if bad:
        worker, missing = next(iter(bad.items()))
        raise ValueError(f"{what}: {len(bad)} of {len(found)} workers cannot read {missing[0]} (e.g. {worker}); "
                         "put it on storage every worker mounts at the same path, or copy it there")


def _unreadable(paths: Sequence[str]) -> list[str]:
    return [p for p in paths if not os.access(p, os.R_OK)]


# ----------------------------------------------------------------------------- the model
def _model_folder(model, client, cache: Path | None, stack: contextlib.ExitStack) -> tuple[Path, Model]:
    """The folder the workers load the model from, checked readable by them, and the model
    loaded here (the client checks arguments against it)."""
    if isinstance(model, (str, os.PathLike)):
        folder = Path(model)
        if not folder.is_dir():
            raise ValueError(f"model: no model folder at {folder}")
    elif isinstance(model, Model):
        folder = Path(model.source)
        if not model.source or not folder.is_dir():
            raise ValueError(f"model: this Model was not loaded from a folder ({model.source!r}), and the "
                             "workers load theirs from one: save the transformers model and its tokenizer "
                             "(save_pretrained) where the workers can read it and pass that folder")
    elif hasattr(model, "save_pretrained") and hasattr(model, "config"):
        folder = _save_module(model, cache, stack)
    else:
        raise TypeError(f"model must be a masklrp.Model, a model folder or a transformers model, "
                        f"got {type(model).__name__}")
    folder = folder.resolve()
    _check_readable(client, [str(folder / f) for f in _model_files(folder)], "model")
    return folder, model if isinstance(model, Model) else load(folder)


def _save_module(module, cache: Path | None, stack: contextlib.ExitStack) -> Path:
    """A transformers module saved as safetensors (with its tokenizer files, found in the folder
    it was loaded from) into ``cache``/model, or a temporary folder removed at the end."""
    origin = Path(str(getattr(module.config, "_name_or_path", "") or ""))
    if not (origin / "tokenizer.json").is_file():
        raise ValueError("model: the workers need a tokenizer beside the weights, and this torch module was "
                         f"not loaded from a folder holding tokenizer.json ({str(origin)!r}); save the model "
                         "and its tokenizer (save_pretrained) into one folder the workers read and pass it")
    if cache is not None:
        folder = cache / "model"
        shutil.rmtree(folder, ignore_errors=True)
    else:
        folder = Path(tempfile.mkdtemp(prefix="masklrp-model-"))
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
    module.save_pretrained(str(folder), safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (origin / name).is_file():
            shutil.copy(origin / name, folder / name)
    return folder


def _model_files(folder: Path) -> list[str]:
    return sorted(f for f in MODEL_FILES if (folder / f).is_file()) + sorted(
        p.name for p in folder.glob("model-*.safetensors"))


def _model_fingerprint(folder: Path) -> str:
    """Names, sizes and modification times of the model's files: a rebuilt model invalidates
    cached shards without reading gigabytes."""
    return _digest([(f, (folder / f).stat().st_size, (folder / f).stat().st_mtime_ns) for f in _model_files(folder)])


_LOADED: dict[tuple[str, str], Any] = {}  # per worker process: (folder, fingerprint) -> Model, torch model
_LOCK = threading.Lock()


def _worker_model(folder: str, fingerprint: str, torch: bool = False):
    """The model of ``folder``, loaded once per worker process; ``torch``: the transformers
    module (for Captum) instead. A task holds the lock while it uses the model: one task per
    worker at a time."""
    key = (folder, fingerprint, torch)
    if key not in _LOADED:
        if torch:
            from .captum_adapter import load_torch_model

            _LOADED[key] = load_torch_model(folder)
        else:
            _LOADED[key] = load(folder)
    return _LOADED[key]


# ----------------------------------------------------------------------------- head statistics
@dataclass(frozen=True)
class _HeadsShard:
    index: int
    folder: str
    fingerprint: str
    window: tuple[int, int]            # sentences [lo, hi) of the corpus
    batches: tuple[int, int]           # batches [lo, hi) of that window
    path: str | None                   # the CoNLL-U file the worker reads ...
    file_digest: str | None            # ... and its SHA-256
    sentences: tuple | None            # or the window's sentences, sent along
    relations: tuple[str, ...]
    aliases: Mapping[str, str]
    batch_size: int
    limit: int
    threads: int | None
    model_name: str
    corpus_name: str
    xi: tuple[float, float]


def head_statistics(client, model, corpus, relations: Sequence[str] = RELATIONS, *, batch_size: int = 32,
                    threads: int | None = None, progress: bool = True, max_length: int | None = None,
                    corpus_name: str | None = None, aliases: Mapping[str, str] = ALIASES,
                    xi_pos: float = XI_POS, xi_synt: float = XI_SYNT, shard_size: int | None = None,
                    cache: str | os.PathLike | None = None, limit: int | None = None) -> HeadMask:
    """:func:`masklrp.head_statistics` on the workers of ``client``: the same
    :class:`HeadMask`, counted in shards of ``shard_size`` sentences (default
    :data:`HEADS_SHARD`, rounded up to whole batches, at most one window each). ``limit``:
    count the first ``limit`` sentences of a CoNLL-U file (the workers read them there)."""
    _check_client(client)
    relations = hs._relations(relations)
    batch_size = positive_int(batch_size, "batch_size")
    per_shard = -(-positive_int(HEADS_SHARD if shard_size is None else shard_size, "shard_size") // batch_size)
    cache = _cache_folder(cache)
    with contextlib.ExitStack() as stack:
        folder, local = _model_folder(model, client, cache, stack)
        if local.tokenizer is None:
            raise ValueError(f"model: no tokenizer.json in {folder}")
        max_positions = local.spec.max_positions
        if max_length is not None:
            max_positions = min(positive_int(max_length, "max_length"), max_positions)
        path, sentences = _corpus(corpus, limit)
        if corpus_name is None:
            corpus_name = Path(path).name if path else (corpus.name if isinstance(corpus, ConlluFile) else "")
        n = _count(path, limit) if path else len(sentences)
        file_digest = _file_digest(path) if path else None
        if path:
            _check_readable(client, [path], "corpus")
        common = dict(folder=str(folder), fingerprint=_model_fingerprint(folder), path=path,
                      file_digest=file_digest, relations=relations, aliases=dict(aliases),
                      batch_size=batch_size, limit=max_positions, threads=threads,
                      model_name=hs._model_name(local), corpus_name=corpus_name, xi=(xi_pos, xi_synt))
        width = batch_size * hs.WINDOW_BATCHES
        shards = []
        for lo in range(0, n, width):
            hi = min(lo + width, n)
            window = None if path else tuple(sentences[lo:hi])
            n_batches = -(-(hi - lo) // batch_size)
            for b in range(0, n_batches, per_shard):
                shards.append(_HeadsShard(index=len(shards), window=(lo, hi), batches=(b, min(b + per_shard, n_batches)),
                                          sentences=window, **common))
        found = _run(client, shards, _heads_shard, cache, "heads", _heads_key, progress, "head statistics",
                     save=lambda mask, path: mask.save(path), read=HeadMask.load)
    if not found:
        counts = hs._Counts(local.spec.n_layers, local.spec.n_heads, len(relations))
        return counts.head_mask(relations, hs._model_name(local), corpus_name, xi_pos, xi_synt)
    return HeadMask.merge(found)


def _corpus(corpus, limit) -> tuple[str | None, list | None]:
    """(a CoNLL-U file the workers read, None) or (None, the sentences, here)."""
    if isinstance(corpus, (str, os.PathLike)):
        return str(Path(corpus).resolve()), None
    if isinstance(corpus, ConlluFile) and corpus._is_path():
        return str(Path(corpus.source).resolve()), None
    sentences = list(hs._sentences(corpus))
    if limit is not None:
        sentences = sentences[:positive_int(limit, "limit")]
    return None, sentences


def _count(path: str, limit: int | None) -> int:
    n = len(read_conllu(path))
    return n if limit is None else min(n, positive_int(limit, "limit"))


def _heads_key(shard: _HeadsShard) -> str:
    content = shard.file_digest if shard.path else _digest([repr(s) for s in shard.sentences])
    return _digest(["heads", CACHE_FORMAT, shard.fingerprint, content, shard.window, shard.batches, shard.relations,
                    sorted(shard.aliases.items()), shard.batch_size, shard.limit, shard.model_name,
                    shard.corpus_name, shard.xi])


_WINDOWS: dict[tuple, list] = {}  # per worker process: the last corpus window read


def _heads_shard(shard: _HeadsShard) -> HeadMask:
    """One shard's counters (runs on a worker)."""
    with _LOCK:
        model = _worker_model(shard.folder, shard.fingerprint)
        lo, hi = shard.window
        window = list(shard.sentences) if shard.sentences is not None else _read_window(shard)
        R = len(shard.relations)
        counts = hs._Counts(model.spec.n_layers, model.spec.n_heads, R)

        def count(sentences, tok, into):
            batch = hs._prepare_batch(model, sentences, tok, shard.relations, shard.aliases, shard.limit)
            hs._count_batch(model, batch, R, shard.threads, into)

        def alone(j):
            one = window[j]
            count([one], model.tokenizer.encode([one.text], max_length=shard.limit),
                  hs._Counts(model.spec.n_layers, model.spec.n_heads, R))

        rows = range(len(window))  # the window is tokenized first: all of it is suspect until then
        try:
            for rows, tok in islice(hs.window_batches(model, window, shard.batch_size, shard.limit), *shard.batches):
                count([window[j] for j in rows], tok, counts)
        except Exception as e:
            raise _blame(shard.index, [lo + int(j) for j in rows], [window[j].text for j in rows],
                         lambda i: alone(i - lo), e) from e
        return counts.head_mask(shard.relations, shard.model_name, shard.corpus_name, *shard.xi)


def _read_window(shard: _HeadsShard) -> list:
    key = (shard.path, shard.file_digest, shard.window)
    if key not in _WINDOWS:
        digest = _file_digest(shard.path)
        if digest != shard.file_digest:
            raise ValueError(f"corpus: {shard.path} on this worker differs from the client's (SHA-256 "
                             f"{digest[:12]} vs {shard.file_digest[:12]})")
        _WINDOWS.clear()
        _WINDOWS[key] = list(islice(read_conllu(shard.path), *shard.window))
    return _WINDOWS[key]


# ----------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class _EvalShard:
    index: int
    folder: str
    fingerprint: str
    job: Job
    batches: tuple[tuple[int, ...], ...]  # sentence indices of each batch, in the single-process order
    data: tuple[str, int | None] | None   # a named data set the worker loads (name, limit) ...
    examples: tuple | None                # ... or this shard's examples, in batch order, sent along
    digest: str                           # of this shard's examples
    threads: int | None


def evaluate(client, model, data, methods=None, head_mask=None, *, progress: bool = True,
             threads: int | None = None, captum_model=None, shard_size: int | None = None,
             cache: str | os.PathLike | None = None, **settings):
    """:func:`masklrp.evaluate` on the workers of ``client`` (``settings``: its keywords): the
    same :class:`~masklrp.evaluate.Evaluation`, scored in shards of ``shard_size`` sentences
    (default one batch; rounded up to whole batches)."""
    _check_client(client)
    if captum_model is not None:
        raise ValueError("captum_model: on a cluster each worker loads the torch model from the model folder; "
                         "leave captum_model out")
    cache = _cache_folder(cache)
    with contextlib.ExitStack() as stack:
        folder, local = _model_folder(model, client, cache, stack)
        job, examples = plan(local, data, methods, head_mask, **settings)
        per_shard = -(-positive_int(job.batch_size if shard_size is None else shard_size, "shard_size") // job.batch_size)
        batches = [tuple(int(i) for i in rows) for rows in _chunks(examples, job.batch_size, job.qa)]
        named = isinstance(data, str)
        fingerprint = _model_fingerprint(folder)
        shards = []
        for s in range(0, len(batches), per_shard):
            part = tuple(batches[s:s + per_shard])
            mine = tuple(examples[i] for rows in part for i in rows)
            shards.append(_EvalShard(len(shards), str(folder), fingerprint, job, part,
                                     (data, settings.get("limit")) if named else None, None if named else mine,
                                     _digest([repr(tuple(e)) for e in mine]), threads))
        start = time.perf_counter()
        parts = _run(client, shards, _evaluate_shard, cache, "evaluate", _evaluate_key, progress, "evaluate",
                     save=_save_parts, read=_read_parts)
        found = Found(job, len(examples))
        for shard, shard_parts in zip(shards, parts):
            for rows, part in zip(shard.batches, shard_parts):
                found.put(np.array(rows), part)
        return found.evaluation(local, examples, start)


def _evaluate_key(shard: _EvalShard) -> str:
    job = {k: v for k, v in vars(shard.job).items() if k not in ("mask", "given_mask")}
    mask = getattr(shard.job.mask, "array", shard.job.mask)
    return _digest(["evaluate", CACHE_FORMAT, shard.fingerprint, shard.digest, shard.batches, sorted(job.items()),
                    None if mask is None else np.asarray(mask)])


_DATA: dict[tuple, list] = {}  # per worker process: the last named data set loaded


def _evaluate_shard(shard: _EvalShard) -> list[dict]:
    """One shard's per-sentence results, one dict per batch (runs on a worker)."""
    with _LOCK:
        model = _worker_model(shard.folder, shard.fingerprint)
        torch_model = _worker_model(shard.folder, shard.fingerprint, torch=True) if shard.job.captum else None
        if shard.examples is not None:
            mine = dict(zip((i for rows in shard.batches for i in rows), shard.examples))
        else:
            if shard.data not in _DATA:
                name, limit = shard.data
                _DATA.clear()
                _DATA[shard.data] = _examples(DATASETS[name](), limit, shard.job.qa)[0]
            every = _DATA[shard.data]
            mine = {i: every[i] for rows in shard.batches for i in rows}
            digest = _digest([repr(tuple(mine[i])) for rows in shard.batches for i in rows])
            if digest != shard.digest:
                raise ValueError(f"data: the worker's {shard.data[0]!r} differs from the client's "
                                 f"(shard {shard.index}); give both the same data folder ($MASKLRP_DATA)")
        runner = _Runner(model, shard.job, torch_model, shard.threads)
        out = []
        for rows in shard.batches:
            try:
                out.append(runner.batch([mine[i] for i in rows]))
            except Exception as e:
                texts = [_text(mine[i]) for i in rows]
                raise _blame(shard.index, list(rows), texts, lambda i: runner.batch([mine[i]]), e) from e
        return out


def _text(example) -> str:
    return example.question if hasattr(example, "question") else example[0]


def _save_parts(parts: list[dict], path: Path) -> None:
    """A shard's per-batch results as one .npz: ``"0:probs:gae:0:most"`` -> array."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **dict(_flatten(parts)))


def _read_parts(path: Path) -> list[dict]:
    """What :func:`_save_parts` wrote (never unpickling)."""
    tree: dict = {}
    with np.load(path, allow_pickle=False) as f:
        for name in f.files:
            *inner, last = (int(k) if k.isdigit() else k for k in name.split(":"))
            node = tree
            for k in inner:
                node = node.setdefault(k, {})
            node[last] = f[name]
    return _lists(tree)


def _lists(node):
    """Nested dicts whose keys are 0, 1, ... as lists."""
    if not isinstance(node, dict):
        return node
    node = {k: _lists(v) for k, v in node.items()}
    if node and all(isinstance(k, int) for k in node):
        return [node[i] for i in range(len(node))]
    return node


def _flatten(value, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    """``{"probs": {"gae": [{"most": a}]}}`` -> ``("probs:gae:0:most", a)``."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, (dict, list)):
            yield from _flatten(v, key + ":")
        else:
            yield key, np.asarray(v)


# ----------------------------------------------------------------------------- shared machinery
def _run(client, shards: list, task: Callable, cache: Path | None, kind: str, key_of: Callable,
         progress: bool, desc: str, *, save: Callable, read: Callable) -> list:
    """Every shard's result, in shard order: from ``cache`` when there, else from the cluster
    (saved to ``cache`` as it arrives). A shard that fails raises its error: at once, cancelling
    the others, without a cache; with one, once the others are done and saved (a rerun then
    has only the failed shards to do)."""
    from tqdm.auto import tqdm

    distributed = _dask()
    results: list = [None] * len(shards)
    files = {}
    for shard in shards:
        files[shard.index] = None if cache is None else cache / f"{kind}-{shard.index:05d}-{key_of(shard)[:20]}.npz"
        if files[shard.index] is not None and files[shard.index].is_file():
            results[shard.index] = read(files[shard.index])
    pending = [s for s in shards if results[s.index] is None]
    run = uuid.uuid4().hex[:8]
    futures = {client.submit(task, s, key=f"masklrp-{kind}-{run}-{s.index}", retries=0): s
               for s in pending}
    bar = tqdm(total=len(shards), initial=len(shards) - len(pending), unit="shard", desc=desc, disable=not progress)
    failed: list[tuple[int, BaseException]] = []
    try:
        for future in distributed.as_completed(futures):
            shard = futures[future]
            if future.status == "error" and cache is not None:
                failed.append((shard.index, future.exception()))
                continue
            results[shard.index] = future.result()  # without a cache, a failed shard raises here
            if files[shard.index] is not None:
                save(results[shard.index], files[shard.index])
            bar.update(1)
    finally:
        bar.close()
        client.cancel(list(futures))
    if failed:
        raise min(failed, key=lambda f: f[0])[1]
    return results


def _blame(index: int, sentences: list[int], texts: list[str], alone: Callable[[int], Any],
           error: Exception) -> ShardError:
    """The error of a failed batch, naming the first of its sentences that fails alone."""
    for i, text in sorted(zip(sentences, texts)):
        try:
            alone(i)
        except Exception as e:
            return ShardError(f"shard {index}: sentence {i} ({text[:80]!r}) fails: {type(e).__name__}: {e}", i)
    return ShardError(f"shard {index}: the batch of sentences {sorted(sentences)} fails (each passes alone): "
                      f"{type(error).__name__}: {error}")


def _cache_folder(cache) -> Path | None:
    if cache is None:
        return None
    if not isinstance(cache, (str, os.PathLike)):
        raise TypeError(f"cache must be a folder path, got {type(cache).__name__}")
    cache = Path(cache)
    if cache.exists() and not cache.is_dir():
        raise ValueError(f"cache: {cache} is a file; expected a folder for the finished shards")
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digest(value) -> str:
    """SHA-256 of a nested value of str / numbers / tuples / lists / arrays, the same in every
    process (no ``hash()``, which is salted per process)."""
    h = hashlib.sha256()

    def feed(v):
        if isinstance(v, np.ndarray):
            h.update(f"array{v.dtype.str}{v.shape}".encode())
            h.update(np.ascontiguousarray(v).tobytes())
        elif isinstance(v, (list, tuple)):
            h.update(f"[{len(v)}".encode())
            for x in v:
                feed(x)
            h.update(b"]")
        elif isinstance(v, dict):
            feed(sorted(v.items()))
        else:
            h.update(json.dumps(v).encode() if isinstance(v, (str, int, float, bool, type(None))) else repr(v).encode())
            h.update(b"|")

    feed(value)
    return h.hexdigest()
