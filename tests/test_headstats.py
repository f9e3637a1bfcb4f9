"""Head statistics: the C argmax counters against known answers and a NumPy oracle, the λ
baseline on a hand-written treebank, the engine's fused counting, streaming, and the real
MiniLM mask on UD English-EWT dev (../shared/data/ud_ewt).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import masklrp
from masklrp.corpus import RELATIONS, from_spacy, read_conllu
from masklrp.headmask import HeadMask
from masklrp.headstats import head_statistics
from masklrp.kernels import head_counts

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "dependency_sample.conllu"
UD_DEV = Path(__file__).parents[1] / ".." / "shared" / "data" / "ud_ewt" / "en_ewt-ud-dev.conllu"
R = {r: i for i, r in enumerate(RELATIONS)}


def oracle_counts(att, queries, keys, arcs, n_relations) -> dict[str, np.ndarray]:
    """DESIGN.md §3.1 written out: k* = first argmax over the allowed keys, per query."""
    B, L, H, T, _ = att.shape
    pos = np.zeros((L, H, 2 * T - 1), np.int64)
    syn = np.zeros((L, H, n_relations), np.int64)
    kstar = np.where(keys[:, None, None, None, :].astype(bool), att, -np.inf).argmax(-1)
    layer, head = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    for b in range(B):
        if keys[b].any():
            for q in np.flatnonzero(queries[b]):
                np.add.at(pos, (layer, head, kstar[b, :, :, q] - q + T - 1), 1)
    for s, q, lo, hi, r in arcs:
        if not keys[s].any():
            continue
        k = kstar[s, :, :, q]
        syn[:, :, r] += (k >= lo) & (k < hi)
    return {"positional": pos, "syntactic": syn}


def check_counts(ours: dict, ref: dict, what: str) -> None:
    for name in ("positional", "syntactic"):
        assert ours[name].shape == ref[name].shape, \
            f"{what} {name}: shape {ours[name].shape}, oracle {ref[name].shape}"
        diff = np.argwhere(ours[name] != ref[name])
        if len(diff):
            at = tuple(diff[0])
            raise AssertionError(f"{what} {name}: {len(diff)} cells differ, first at {at}: "
                                 f"ours {ours[name][at]}, oracle {ref[name][at]}")


# ----------------------------------------------------------------------------- known answers
def test_known_attention_patterns():
    """Head 0 looks at q-1, head 1 at the syntactic head word, head 2 is uniform (a tie)."""
    B, L, H, T = 2, 1, 3, 7
    att = np.zeros((B, L, H, T, T), np.float32)
    q = np.arange(1, T)
    att[:, 0, 0, q, q - 1] = 0.9
    att[:, 0, 2] = 1.0 / T
    att[:, 0, 2, :, 0] = 0.5   # token 0 is special: never k*, however large its weight
    # sequence 0: tokens 1-6 real, token 0 special; sequence 1: tokens 1-4 real, 5-6 padding
    keys = np.zeros((B, T), bool)
    keys[0, 1:] = True
    keys[1, 1:5] = True
    queries = keys.copy()
    arcs = np.array([[0, 2, 4, 6, R["nsubj"]],    # dependent at token 2, head word = tokens 4-5
                     [0, 5, 1, 2, R["obj"]],
                     [1, 3, 1, 3, R["amod"]]])
    att[0, 0, 1, 2, 5] = 1.0   # inside [4, 6): a hit
    att[0, 0, 1, 5, 1] = 1.0   # inside [1, 2): a hit
    att[1, 0, 1, 3, 4] = 1.0   # outside [1, 3): a miss
    out = head_counts(att, queries.astype(np.uint8), keys.astype(np.uint8), arcs, len(RELATIONS))
    check_counts(out, oracle_counts(att, queries, keys, arcs, len(RELATIONS)), "known patterns")
    T0 = T - 1
    n_queries = queries.sum()
    # head 0: every query but the first real token (whose q-1 is special) at o = -1
    assert out["positional"][0, 0, T0 - 1] == n_queries - 2
    # head 2: a uniform row ties; the lowest non-special key (token 1) wins
    expected = np.zeros(2 * T - 1, np.int64)
    for b in range(B):
        for qq in np.flatnonzero(queries[b]):
            expected[1 - qq + T0] += 1
    np.testing.assert_array_equal(out["positional"][0, 2], expected)
    assert out["syntactic"][0, 1].tolist() == [1, 1, 0, 0]
    assert out["syntactic"][0, 0].tolist() == [0, 0, 1, 0]  # q-1 = 2 lies in [1, 3)


def test_a_head_looking_at_q_minus_1_is_positional():
    """With every counted query's q-1 a key, a_{-1} = 1 exactly and the head is positional."""
    B, L, H, T = 3, 2, 2, 9
    rng = np.random.default_rng(0)
    att = rng.random((B, L, H, T, T), dtype=np.float32)
    q = np.arange(1, T)
    att[:, 1, 0, q, q - 1] = 2.0
    keys = np.ones((B, T), np.uint8)
    queries = keys.copy()
    queries[:, 0] = 0
    out = head_counts(att, queries, keys, np.zeros((0, 5), np.int64), 1)
    mask = HeadMask(out["positional"], out["syntactic"], int(queries.sum()), [0],
                    np.zeros((1, 2 * T - 1), np.int64), relations=("nsubj",))
    assert mask.a_o[1, 0, T - 2] == 1.0  # offset -1
    assert mask.m_pos.tolist() == [[False, False], [True, False]]


def test_head_counts_equal_the_oracle_on_random_attention():
    rng = np.random.default_rng(1)
    B, L, H, T, n_rel = 4, 3, 5, 13, 3
    # few distinct values, so that ties are frequent
    att = rng.integers(0, 4, (B, L, H, T, T)).astype(np.float32) / 4
    keys = rng.random((B, T)) < 0.8
    keys[3] = False  # a sequence with no key: its queries are not counted
    queries = rng.random((B, T)) < 0.7
    arcs = []
    for b in range(B):
        for qq in np.flatnonzero(queries[b]):
            lo = int(rng.integers(0, T - 1))
            arcs.append((b, qq, lo, int(rng.integers(lo + 1, T + 1)), int(rng.integers(n_rel))))
    arcs = np.array(arcs, np.int64)
    out = head_counts(att, queries.astype(np.uint8), keys.astype(np.uint8), arcs, n_rel)
    check_counts(out, oracle_counts(att, queries, keys, arcs, n_rel), "random attention")
    assert out["positional"].sum() == L * H * queries[:3].sum()


# ----------------------------------------------------------------------------- λ and arcs
def test_baseline_arcs_and_skips_on_the_hand_written_treebank(minilm_dir):
    """Token positions under MiniLM's WordPiece, worked out by hand:

    mwt:       [CLS] the cat didn ' t eat fresh fish . [SEP]     nsubj cat(2)->eat[6,7) o=+4,
               advmod n't(3, first token of "didn't")->eat o=+3, amod fresh(7)->fish[8,9) o=+1,
               obj fish(8)->eat o=-2
    ellipsis:  [CLS] kim bought apples and lee pear ##s . [SEP]  nsubj kim(1)->bought[2,3) o=+1,
               obj apples(3)->bought o=-1 (pears is an orphan)
    passive:   [CLS] letters were written slowly . [SEP]        nsubj:pass letters(1)->written[3,4)
               o=+2, advmod slowly(4)->written o=-1
    same-span: [CLS] they didn ' t . [SEP]                      nsubj they(1)->did[2,5) o=+1,+2,+3;
               advmod n't->did shares did's tokens: skipped
    """
    model = masklrp.load(minilm_dir)
    stats = head_statistics(model, SAMPLE)  # with its tqdm bar, as users see it
    assert stats.corpus == "dependency_sample.conllu" and stats.n_sentences == 4
    assert stats.queries == 9 + 8 + 5 + 5
    assert stats.arcs.tolist() == [4, 2, 1, 2]  # nsubj, obj, amod, advmod
    assert stats.skipped["same_span"].tolist() == [0, 0, 0, 1]
    assert stats.skipped["no_token"].sum() == stats.skipped["truncated"].sum() == 0
    lam = dict(zip(RELATIONS, stats.lambda_r))
    at = {r: {int(o): float(v) for o, v in zip(stats.offsets, lam[r]) if v} for r in RELATIONS}
    assert at == {"nsubj": {1: 2 / 4, 2: 2 / 4, 3: 1 / 4, 4: 1 / 4},
                  "obj": {-2: 1 / 2, -1: 1 / 2},
                  "amod": {1: 1.0},
                  "advmod": {-1: 1 / 2, 3: 1 / 2}}
    # every query counted once per head
    assert (stats.positional.sum(axis=-1) == stats.queries).all()


def test_truncation_and_dropped_words_are_skipped_not_miscounted(minilm_dir):
    from masklrp.corpus import from_arrays

    model = masklrp.load(minilm_dir)
    long = from_arrays(["Cats", "chase", "very", "small", "mice"], [2, 0, 5, 5, 2],
                       ["nsubj", "root", "advmod", "amod", "obj"])
    odd = from_arrays(["Birds", "\u200b", "sing"], [3, 3, 0], ["nsubj", "advmod", "root"])
    # max_length 5 keeps "[CLS] cats chase very [SEP]": every arc touching "small" or "mice"
    # (amod small->mice, advmod very->mice, obj mice->chase) is truncated; the zero-width space
    # has no token at all
    stats = head_statistics(model, [long, odd], max_length=5, progress=False)
    assert stats.skipped["truncated"].tolist() == [0, 1, 1, 1]
    assert stats.skipped["no_token"].tolist() == [0, 0, 0, 1]
    assert stats.arcs.tolist() == [2, 0, 0, 0]


# ----------------------------------------------------------------------------- the engine
torch_models = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("torch", "transformers")),
    reason="the tiny test models are built with torch and transformers (pip install '.[test]')")


@torch_models
@pytest.mark.parametrize("name", ["bert-cls", "roberta-qa", "distilbert-cls", "xlm-roberta-qa", "gpt2-lm",
                                  "llama-lm", "mistral-lm", "electra-qa", "albert-cls",
                                  "modernbert-qa", "deberta-v2-qa"])
def test_fused_head_stats_equal_head_counts_on_the_attention_taps(name):
    from hf_models import build, example_inputs

    hf = build(name, seed=0)
    model = masklrp.load(hf)
    batch = {k: v.numpy() for k, v in example_inputs(hf, 3, 14, seed=0).items() if v is not None}
    inputs = model.prepare(batch["input_ids"], batch["attention_mask"],
                           token_type_ids=batch.get("token_type_ids"))
    rng = np.random.default_rng(2)
    real = batch["attention_mask"].astype(bool)
    keys = real & (rng.random(real.shape) < 0.8)
    queries = real & (rng.random(real.shape) < 0.8)
    arcs = np.array([(b, q, lo, lo + 2, rng.integers(4)) for b in range(3)
                     for q in np.flatnonzero(queries[b]) for lo in [int(rng.integers(0, 10))]],
                    np.int64)
    fused = model.head_stats(inputs, queries.astype(np.uint8), keys.astype(np.uint8), arcs, 4)
    taps = model.forward(inputs, attentions=True)
    tapped = head_counts(taps["attentions"], queries.astype(np.uint8), keys.astype(np.uint8), arcs, 4)
    check_counts(fused, tapped, f"{name} fused vs taps")
    check_counts(fused, oracle_counts(taps["attentions"], queries, keys, arcs, 4), f"{name} oracle")
    np.testing.assert_array_equal(fused["logits"], taps["logits"])


def test_batch_size_and_spacy_input_do_not_change_the_counts(minilm_dir):
    model = masklrp.load(minilm_dir)
    corpus = list(read_conllu(SAMPLE))
    if UD_DEV.is_file():
        corpus += [s for _, s in zip(range(40), read_conllu(UD_DEV))]
    one = head_statistics(model, corpus, batch_size=1, progress=False)
    seven = head_statistics(model, iter(corpus), batch_size=7, progress=False)
    for name in ("positional", "syntactic", "arcs", "baseline"):
        np.testing.assert_array_equal(getattr(one, name), getattr(seven, name), err_msg=name)
    assert one.queries == seven.queries and one.n_sentences == seven.n_sentences == len(corpus)

    spacy = pytest.importorskip("spacy", reason="spaCy Docs as a corpus")
    from spacy.tokens import Doc

    doc = Doc(spacy.vocab.Vocab(), words=["Dogs", "chase", "red", "balls", "."],
              spaces=[True, True, True, False, False], heads=[1, 1, 3, 1, 1],
              deps=["nsubj", "ROOT", "amod", "dobj", "punct"])
    from_doc = head_statistics(model, doc, progress=False)
    from_sentence = head_statistics(model, [from_spacy(doc)], progress=False)
    assert from_doc.arcs.tolist() == [1, 1, 1, 0]
    np.testing.assert_array_equal(from_doc.syntactic, from_sentence.syntactic)


def test_bad_input_names_the_argument(minilm_dir):
    model = masklrp.load(minilm_dir)
    with pytest.raises(TypeError, match="model"):
        head_statistics("not a model", SAMPLE)
    with pytest.raises(ValueError, match="batch_size"):
        head_statistics(model, SAMPLE, batch_size=0)
    with pytest.raises(TypeError, match="relations"):
        head_statistics(model, SAMPLE, relations="nsubj")
    with pytest.raises(ValueError, match="relations"):
        head_statistics(model, SAMPLE, relations=("nsubj", "nsubj"))
    with pytest.raises(ValueError, match="max_length"):
        head_statistics(model, SAMPLE, max_length=0)
    with pytest.raises(TypeError, match=r"corpus\[1\]"):
        head_statistics(model, [next(iter(read_conllu(SAMPLE))), "a string"], progress=False)


# ----------------------------------------------------------------------------- UD EWT, real MiniLM
@pytest.mark.skipif(not UD_DEV.is_file(), reason=f"UD EWT dev is not at {UD_DEV} "
                                                 "(../shared/data, shipped beside the project)")
def test_minilm_mask_on_ud_ewt_dev(minilm_dir, tmp_path):
    model = masklrp.load(minilm_dir)
    stats = head_statistics(model, UD_DEV, batch_size=64, progress=False)
    # the corpus: 2001 sentences; arcs as counted in ../shared/data/SOURCES.md, less the arcs
    # inside one multi-word token ("did"+"n't", "let"+"'s", "dun"+"no"): 3 obj, 7 advmod
    assert stats.n_sentences == 2001
    assert stats.skipped["same_span"].tolist() == [0, 3, 0, 7]
    assert stats.skipped["no_token"].sum() == stats.skipped["truncated"].sum() == 0
    assert (stats.arcs + sum(stats.skipped.values())).tolist() == [2137, 1211, 1326, 1353]
    assert (stats.positional.sum(axis=-1) == stats.queries).all()
    # the best fixed-offset guesses: an adjective sits just before its noun
    best = stats.offsets[stats.lambda_r.argmax(axis=1)]
    assert dict(zip(RELATIONS, best.tolist()))["amod"] == 1
    assert 0.6 < stats.lambda_r[R["amod"]].max() < 0.8
    # the mask found. The closest call is layer 2 head 11 (a_-1 = 0.809, about 270 queries above
    # xi_pos) and for M_synt 0.0125 (about 15 arcs): far beyond what float rounding can flip.
    positional = {(0, 2), (1, 8), (1, 9), (2, 11)}
    syntactic = {(1, 4), (1, 6), (2, 0), (2, 1), (2, 8), (3, 8)}
    assert set(zip(*np.nonzero(stats.m_pos))) == positional, stats.summary()
    assert set(zip(*np.nonzero(stats.m_synt))) == syntactic, stats.summary()
    assert stats.a_o[0, 2, stats.offsets == -1] > 0.9  # a previous-token head in layer 0
    assert stats.array.sum() == 10 and not stats.mask[4:].any()
    stats.save(tmp_path / "minilm.npz")
    np.testing.assert_array_equal(HeadMask.load(tmp_path / "minilm.npz").mask, stats.mask)
    print(f"\nMiniLM on UD EWT dev: {stats!r}")
