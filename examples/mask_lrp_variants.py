"""Variants of Mask-LRP that try to make the head mask matter (issue F.7; README, "Mask-LRP
variants"), scored by AOPC and LOdds on SST-2 dev, with paired bootstrap intervals.

The engine runs once per batch with every masked stream the variants read (both readings, the
default model's two masks and their per-layer-best versions, random counterparts); every
variant's rollout is computed from those taps, and all variants of a sentence share one set of
perturbation forwards (masklrp.metrics.shared_perturbation_curves). ``run`` writes per-sentence
AOPC and LOdds to an .npz; ``report`` reads one or more of them (the same sentences) and prints
each variant against its unmasked and random counterparts, per range of sentences (tune on one
half of dev, report the other).

    python examples/mask_lrp_variants.py run --model minilm-sst2 --sentences 0:872 --out minilm.npz
    python examples/mask_lrp_variants.py report minilm.npz --ranges 0:436 436:872

Variants (keys ``MASK|READING|ROLLOUT``): MASK ``ud`` / ``sst`` (the UD EWT dev and the spaCy
SST-2 train masks of masklrp.default_head_mask), ``+best`` (HeadMask.min_per_layer = 1),
``~rS`` a uniform random mask with as many heads (seed S), ``~lS`` a random mask with as many
heads in every layer; READING ``reference`` / ``strict``; ROLLOUT ``plain`` (Eq. 10–11) or
``scaled`` (each block's term scaled so its query row sums to 1). ``attnlrp`` is the unmasked
stream (``attnlrp|plain`` = rel-rollout).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import masklrp
from masklrp import rollout
from masklrp.data import sst2
from masklrp.explain import seed_for
from masklrp.headmask import random_head_mask
from masklrp.metrics import KS, aopc, lodds, shared_perturbation_curves
from masklrp.model import Stream

MASKS = ("ud", "sst", "ud+best", "sst+best")
CORPUS = {"ud": "ud-ewt-dev", "sst": "sst2-train"}
# which readings each mask is studied under, and its random counterparts'
ALL = ({"ud": ("reference", "strict"), "sst": ("reference", "strict"), "ud+best": ("strict",),
        "sst+best": ("strict",)},
       {"ud": ("reference",), "sst": ("reference",), "ud+best": ("strict",), "sst+best": ("strict",)})
# the variant kept on MiniLM's first half (per-layer best, strict), its counterparts, and the defaults
KEPT = ({"ud": ("reference", "strict"), "sst": (), "ud+best": ("strict",), "sst+best": ("strict",)},
        {"ud": (), "sst": (), "ud+best": ("strict",), "sst+best": ("strict",)})


def layer_matched(mask: np.ndarray, seed: int) -> np.ndarray:
    """A random mask with as many kept heads as ``mask`` in every layer."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(mask.shape[1]) < int(row.sum()) for row in mask]).astype(np.float32)


def study_masks(name: str, seeds: int, kinds: tuple[str, ...]) -> tuple[dict, dict]:
    """(the four masks, every mask including the random ones), name -> float32 (L, H)."""
    masks = {}
    for short, corpus in CORPUS.items():
        heads = masklrp.default_head_mask(name, corpus=corpus)
        masks[short] = heads.array
        masks[short + "+best"] = heads.with_thresholds(min_per_layer=1).array
    everything = dict(masks)
    for k, m in masks.items():
        for s in range(seeds):
            if "uniform" in kinds:
                everything[f"{k}~r{s}"] = random_head_mask(m, s)
            if "layer" in kinds:
                everything[f"{k}~l{s}"] = layer_matched(m, s)
    return masks, everything


def streams_for(everything: dict, plan, random_only: bool) -> list:
    readings, random_readings = plan
    out = ["gradient", "attnlrp"]
    for k, m in everything.items():
        base, is_random = k.split("~")[0], "~" in k
        if not is_random and random_only:
            continue
        for reading in (random_readings if is_random else readings)[base]:
            out.append(Stream(f"{k}|{reading}", "attnlrp", m, True, reading))
    return out


def block_terms(grad: np.ndarray, relevance: np.ndarray, scaled: bool, pool: str) -> np.ndarray:
    """(L, n, n) ``mean_m (∇A ⊙ R_A)⁺`` per block (Eq. 10), optionally each scaled so the query
    row ([CLS]) sums to 1: every block then weighs alike in the product."""
    terms = rollout.positive_head_mean(grad * relevance)
    if scaled:
        total = terms[:, 0, :].sum(-1) if pool == "first" else terms.sum((-1, -2)) / terms.shape[-1]
        terms = terms / np.where(total > 0, total, 1.0)[:, None, None]
    return terms


def run(args) -> int:
    model = masklrp.load_default(args.model)
    masks, everything = study_masks(args.model, args.seeds, tuple(args.random.split(",")))
    for k, m in masks.items():
        print(f"{k}: {int(m.sum())} heads, per layer {m.sum(1).astype(int).tolist()}")
    streams = streams_for(everything, KEPT if args.variants == "kept" else ALL, args.random_only)
    scales = (False,) if args.variants == "kept" else (False, True)
    keys = [s if isinstance(s, str) else s.key for s in streams[1:]]
    lo, hi = (int(x) for x in args.sentences.split(":"))
    texts = [e.sentence for e in sst2("dev")[lo:hi]]
    per_sentence: dict[str, dict[str, list]] = {}
    start = time.perf_counter()
    for i in range(0, len(texts), args.batch_size):
        inputs = model.encode(texts[i:i + args.batch_size])
        out = model.run(inputs, None, streams[:4], attentions=True)  # the engine seeds the argmax
        seed, _ = seed_for(model, out["logits"], out["logits"].shape)
        for j in range(4, len(streams), 4):
            out.update({k: v for k, v in model.run(inputs, seed, streams[j:j + 4], attentions=True).items()
                        if k not in out})
        scores: dict[str, list] = {}
        for b in range(inputs.input_ids.shape[0]):
            real = np.flatnonzero(inputs.attention_mask[b])
            square = lambda x: np.asarray(x[b][:, :, real][:, :, :, real], np.float64)  # noqa: E731
            grad, query = square(out["gradient"]["attention_grad"]), rollout.query_weights(model.spec.pool, len(real))
            for key in keys:
                if key != "attnlrp" and args.random_only and "~" not in key:
                    continue
                relevance = square(out[key]["attention_relevance"])
                for scaled in (scales if not key.endswith("strict") else (False,)):
                    if args.random_only and key == "attnlrp" and scaled:
                        continue
                    terms = block_terms(grad, relevance, scaled, model.spec.pool)
                    name = f"{key}|{'scaled' if scaled else 'plain'}"
                    scores.setdefault(name, []).append(query @ rollout.rollout(terms))
        curves = shared_perturbation_curves(model, inputs, list(scores.values()), KS, logits=out["logits"])
        for name, c in zip(scores, curves):
            got = per_sentence.setdefault(name, {"aopc": [], "lodds": []})
            got["aopc"].append(aopc(c.p_full, c.probs["most"]).per_sequence)
            got["lodds"].append(lodds(c.p_full, c.probs["most"]).per_sequence)
        print(f"{i + len(inputs.input_ids)}/{len(texts)} sentences, {time.perf_counter() - start:.0f} s", flush=True)
    names = list(per_sentence)
    np.savez(args.out, keys=np.array(names), sentences=np.array([lo, hi]),
             aopc=np.stack([np.concatenate(per_sentence[k]["aopc"]) for k in names]),
             lodds=np.stack([np.concatenate(per_sentence[k]["lodds"]) for k in names]))
    print(f"wrote {args.out} ({len(names)} variants, {time.perf_counter() - start:.0f} s)")
    return 0


def bootstrap(diff: np.ndarray, n_boot: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95 % percentile interval over sentences (as masklrp.Evaluation.compare)."""
    rows = np.random.default_rng(seed).integers(0, len(diff), size=(n_boot, len(diff)))
    low, high = np.quantile(diff[rows].mean(axis=1), [0.025, 0.975])
    return float(diff.mean()), float(low), float(high)


def report(args) -> int:
    files = [np.load(f) for f in args.files]
    if len({tuple(f["sentences"]) for f in files}) != 1:
        raise SystemExit("report: the files hold different sentences")
    keys = [str(k) for f in files for k in f["keys"]]
    table = {m: np.concatenate([f[m] for f in files]) for m in ("aopc", "lodds")}

    def values(key: str, metric: str, rows: slice):
        """Per-sentence values; a random key (``~r*`` / ``~l*``) is averaged over its seeds."""
        if "*" in key:
            head, tail = key.split("*")
            found = [table[metric][keys.index(k)] for k in keys if k.startswith(head) and k.endswith(tail)]
            return np.mean(found, axis=0)[rows] if found else None
        return table[metric][keys.index(key)][rows] if key in keys else None

    first = int(files[0]["sentences"][0])
    for r in args.ranges or [f"{first}:{first + table['aopc'].shape[1]}"]:
        lo, hi = (int(x) - first for x in r.split(":"))
        rows = slice(lo, hi)
        print(f"\nsentences {r} (AOPC, LOdds; differences in AOPC with 95 % bootstrap intervals)")
        for variant in sorted({k.split("~")[0].split("|")[0] for k in keys} - {"attnlrp"}):
            for tail in ("|reference|plain", "|reference|scaled", "|strict|plain"):
                key = variant + tail
                a = values(key, "aopc", rows)
                if a is None:
                    continue
                unmasked = values("attnlrp" + tail.replace("|reference", "").replace("|strict", ""), "aopc", rows)
                line = f"{key:26s} {a.mean():.4f} {values(key, 'lodds', rows).mean():+.3f}"
                for label, other in (("unmasked", unmasked), ("uniform random", values(f"{variant}~r*{tail}", "aopc", rows)),
                                     ("layer-matched random", values(f"{variant}~l*{tail}", "aopc", rows)),
                                     ("without +best", values(variant.replace("+best", "") + tail, "aopc", rows)
                                      if "+best" in variant else None)):
                    if other is not None:
                        m, low, high = bootstrap(a - other)
                        line += f" | vs {label} {m:+.4f} [{low:+.4f}, {high:+.4f}]"
                print(line)
        for counterpart in sorted({k[:k.index("~") + 2] + "*" + k[k.index("|"):] for k in keys if "~" in k}):
            print(f"{counterpart:26s} {values(counterpart, 'aopc', rows).mean():.4f} "
                  f"{values(counterpart, 'lodds', rows).mean():+.3f}")
        for key in ("attnlrp|plain", "attnlrp|scaled"):
            if key in keys:
                print(f"{key:26s} {values(key, 'aopc', rows).mean():.4f} {values(key, 'lodds', rows).mean():+.3f}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    r = commands.add_parser("run", help="score every variant on a range of SST-2 dev sentences")
    r.add_argument("--model", default="minilm-sst2", choices=sorted(masklrp.default_model.MODELS))
    r.add_argument("--sentences", default="0:872", help="LO:HI, a range of the 872 dev sentences")
    r.add_argument("--seeds", type=int, default=2, help="random masks per kind (seeds 0..N-1)")
    r.add_argument("--random", default="uniform", help="uniform, layer or uniform,layer")
    r.add_argument("--variants", choices=("all", "kept"), default="all",
                   help="all: every variant; kept: the per-layer-best variant and its counterparts")
    r.add_argument("--random-only", action="store_true",
                   help="only the random counterparts (to add a random kind to an earlier run)")
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--out", required=True)
    r.set_defaults(run=run)
    p = commands.add_parser("report", help="tables from run's files")
    p.add_argument("files", nargs="+")
    p.add_argument("--ranges", nargs="*", help="LO:HI ranges of dev sentences (default: all in the files)")
    p.set_defaults(run=report)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
