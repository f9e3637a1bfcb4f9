"""masklrp.headmask: frequencies and masks from hand-set counters, merging, files, plot, random.

Counters are written by hand so every threshold decision is known; thresholds are never
tested at exact equality (a float ratio on the boundary proves nothing about the rule).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from masklrp.headmask import HeadMask

RELS = ("nsubj", "obj", "amod")


def hand_mask(**kw) -> HeadMask:
    """2 layers x 3 heads, offsets -2..2, 10 queries; arcs nsubj 10, obj 4, amod 0.

    head (0,0): 9/10 at o=-1 -> positional        head (1,0): nsubj 7/10 > 0.5 + 0.1 -> syntactic
    head (0,1): 10/10 at o=0 -> not positional     head (1,1): nsubj 5/10, obj 1/4 -> neither
    head (0,2): 7/10 at o=+1 -> not positional     head (1,2): o=-2 9/10 and obj 2/4 > .25 + .1 -> both
    """
    pos = np.zeros((2, 3, 5), np.int64)
    pos[0, 0, [1, 2]] = 9, 1
    pos[0, 1, 2] = 10
    pos[0, 2, [3, 4]] = 7, 3
    pos[1, :, 2] = 10
    pos[1, 2, [0, 2]] = 9, 1
    syn = np.zeros((2, 3, 3), np.int64)
    syn[1, 0, 0] = 7
    syn[1, 1, :2] = 5, 1
    syn[1, 2, 1] = 2
    baseline = np.array([[0, 1, 0, 5, 2], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    return HeadMask(pos, syn, 10, [10, 4, 0], baseline, relations=RELS,
                    skipped={"same_span": [0, 1, 0]}, model="tiny", corpus="hand",
                    n_sentences=3, **kw)


def test_frequencies_and_masks():
    m = hand_mask()
    assert m.shape == (2, 3)
    assert m.offsets.tolist() == [-2, -1, 0, 1, 2]
    assert m.a_o[0, 0].tolist() == [0, 0.9, 0.1, 0, 0]
    np.testing.assert_array_equal(m.a_r[1, 2, :2], [0, 0.5])
    assert np.isnan(m.a_r[..., 2]).all()  # no amod arcs: undefined, never syntactic
    np.testing.assert_array_equal(m.lambda_r.max(axis=1), [0.5, 0.25, 0])
    assert m.m_pos.tolist() == [[True, False, False], [False, False, True]]
    assert m.m_synt.tolist() == [[False, False, False], [True, False, True]]
    assert m.mask.tolist() == [[True, False, False], [True, False, True]]
    assert m.array.dtype == np.float32 and m.array.tolist() == [[1, 0, 0], [1, 0, 1]]


def test_with_thresholds_recomputes_without_recounting():
    m = hand_mask()
    strict = m.with_thresholds(xi_pos=0.95, xi_synt=0.3)
    assert not strict.m_pos.any() and not strict.m_synt.any()
    loose = m.with_thresholds(xi_pos=0.65)
    assert loose.m_pos.tolist() == [[True, False, True], [False, False, True]]
    assert loose.xi_synt == m.xi_synt and loose.positional is not m.positional
    np.testing.assert_array_equal(loose.positional, m.positional)
    assert m.xi_pos == 0.8  # the original is unchanged


def test_margins_and_min_per_layer():
    m = hand_mask()
    # Eq. 6 / Eq. 7 margins (module docstring of hand_mask): > 0 exactly for Eq. 8's heads
    np.testing.assert_allclose(m.margins, [[0.1, -0.35, -0.1], [0.1, -0.1, 0.15]], atol=1e-12)
    np.testing.assert_array_equal(m.margins > 0, m.mask)
    assert m.min_per_layer == 0
    two = m.with_thresholds(min_per_layer=2)
    # layer 0 keeps h0 and adds its best other head h2 (-0.1 > -0.35); layer 1 has two already
    assert two.mask.tolist() == [[True, False, True], [True, False, True]]
    assert m.with_thresholds(min_per_layer=3).mask.all()
    assert two.m_pos.tolist() == m.m_pos.tolist() and two.m_synt.tolist() == m.m_synt.tolist()
    assert "min_per_layer=2" in repr(two) and "min_per_layer" not in repr(m)
    assert "layer 0: positional h0 (o=-1 0.90); syntactic -; best of the layer h2 (margin -0.10)" in two.summary()
    assert two.with_thresholds(xi_pos=0.7).min_per_layer == 2  # kept unless changed
    assert (two + m).min_per_layer == 2  # a merge keeps the first's settings
    # ties go to the lower head index: no query counted, every margin -inf
    empty = HeadMask(np.zeros((2, 3, 5), np.int64), np.zeros((2, 3, 3), np.int64), 0, [0, 0, 0],
                     np.zeros((3, 5), np.int64), relations=RELS, min_per_layer=1)
    assert empty.mask.tolist() == [[True, False, False], [True, False, False]]
    with pytest.raises(ValueError, match="min_per_layer must be at most the 3 heads"):
        m.with_thresholds(min_per_layer=4)
    with pytest.raises(ValueError, match="min_per_layer"):
        m.with_thresholds(min_per_layer=-1)
    with pytest.raises(TypeError, match="min_per_layer"):
        m.with_thresholds(min_per_layer=1.5)


def test_merge_adds_counters_and_aligns_offsets():
    a = hand_mask()
    wide = np.zeros((2, 3, 9), np.int64)
    wide[:, :, 4] = 3     # o = 0
    wide[0, 0, 0] = 2     # o = -4, beyond a's offsets
    base = np.zeros((3, 9), np.int64)
    base[0, 8] = 1
    b = HeadMask(wide, np.ones((2, 3, 3), np.int64), 5, [1, 1, 2], base, relations=RELS,
                 skipped={"truncated": [0, 0, 1]}, model="tiny", corpus="more", n_sentences=2)
    c = a + b
    assert c.positional.shape == (2, 3, 9)
    np.testing.assert_array_equal(c.positional[..., 2:7], a.positional + wide[..., 2:7])
    assert c.positional[0, 0, 0] == 2
    np.testing.assert_array_equal(c.syntactic, a.syntactic + 1)
    assert c.queries == 15 and c.arcs.tolist() == [11, 5, 2] and c.n_sentences == 5
    assert c.baseline[0].tolist() == [0, 0, 0, 1, 0, 5, 2, 0, 1]
    assert {k: v.tolist() for k, v in c.skipped.items()} == {"same_span": [0, 1, 0],
                                                            "truncated": [0, 0, 1]}
    assert c.corpus == "hand + more" and c.model == "tiny"
    merged = HeadMask.merge([a, b])
    np.testing.assert_array_equal(merged.positional, c.positional)
    assert (b + a).positional.tolist() == c.positional.tolist()


def test_merge_equals_counting_the_union(minilm_dir):
    import masklrp
    from masklrp.corpus import read_conllu
    from masklrp.headstats import head_statistics

    model = masklrp.load(minilm_dir)
    sentences = list(read_conllu(Path(__file__).parent / "data" / "dependency_sample.conllu"))

    def count(part):
        return head_statistics(model, part, batch_size=1, progress=False, threads=1)

    whole, merged = count(sentences), count(sentences[:1]) + count(sentences[1:])
    for name in ("positional", "syntactic", "arcs", "baseline"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name), err_msg=name)
    assert merged.queries == whole.queries and merged.n_sentences == whole.n_sentences == 4
    assert {k: v.tolist() for k, v in merged.skipped.items()} == \
           {k: v.tolist() for k, v in whole.skipped.items()}


def test_merge_rejects_other_models_and_relations():
    a = hand_mask()
    other_shape = HeadMask(np.zeros((3, 3, 5), np.int64), np.zeros((3, 3, 3), np.int64), 0,
                           [0, 0, 0], np.zeros((3, 5), np.int64), relations=RELS)
    with pytest.raises(ValueError, match="layers, heads"):
        a + other_shape
    other_rels = HeadMask(a.positional, a.syntactic, a.queries, a.arcs, a.baseline,
                          relations=("nsubj", "obj", "advmod"))
    with pytest.raises(ValueError, match="relations"):
        a + other_rels
    with pytest.raises(ValueError, match="masks"):
        HeadMask.merge([])


def test_save_load_round_trip(tmp_path):
    m = hand_mask(xi_pos=0.7, xi_synt=0.05)
    path = tmp_path / "minilm.heads"  # no .npz suffix: the name is kept as given
    m.save(path)
    assert path.is_file()
    with np.load(path, allow_pickle=False) as f:
        assert f["positional"].dtype == np.int64
    back = HeadMask.load(path)
    for name in ("positional", "syntactic", "arcs", "baseline"):
        assert getattr(back, name).dtype == np.int64
        np.testing.assert_array_equal(getattr(back, name), getattr(m, name), err_msg=name)
    assert (back.queries, back.relations, back.model, back.corpus, back.n_sentences,
            back.xi_pos, back.xi_synt) == (m.queries, m.relations, m.model, m.corpus,
                                           m.n_sentences, 0.7, 0.05)
    assert {k: v.tolist() for k, v in back.skipped.items()} == {"same_span": [0, 1, 0]}
    np.testing.assert_array_equal(back.mask, m.mask)
    m.with_thresholds(min_per_layer=2).save(path)
    assert HeadMask.load(path).min_per_layer == 2
    # a file written before min_per_layer existed reads as the paper's mask
    assert HeadMask.load(_saved(tmp_path, min_per_layer=None)).min_per_layer == 0
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a masklrp head-mask .npz"):
        HeadMask.load(tmp_path / "other.npz")


def test_random_like_keeps_the_number_of_ones_and_repeats():
    pos = np.zeros((6, 12, 3), np.int64)
    pos[:, :5, 0] = 10  # 5 positional heads per layer: 30 of 72
    m = HeadMask(pos, np.zeros((6, 12, 1), np.int64), 10, [0], np.zeros((1, 3), np.int64),
                 relations=("nsubj",))
    assert m.mask.sum() == 30
    r = m.random_like(7)
    assert r.dtype == np.float32 and r.shape == (6, 12) and r.sum() == 30
    np.testing.assert_array_equal(r, m.random_like(7))
    assert not np.array_equal(r, m.random_like(8))
    assert not np.array_equal(r, m.array)
    with pytest.raises(TypeError, match="seed"):
        m.random_like(1.5)


def test_repr_and_summary_name_the_heads():
    m = hand_mask()
    assert "2 positional, 2 syntactic, 3 kept" in repr(m)
    text = m.summary()
    assert "layer 0: positional h0 (o=-1 0.90); syntactic -" in text
    assert "layer 1: positional h2 (o=-2 0.90); syntactic h0 (nsubj 0.70), h2 (obj 0.50)" in text
    assert "skipped arcs: same_span 1" in text


def test_plot_returns_a_figure():
    matplotlib = pytest.importorskip("matplotlib", reason="HeadMask.plot draws with matplotlib "
                                                          "(the viz extra)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = hand_mask().plot()
    try:
        assert isinstance(fig, matplotlib.figure.Figure)
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == \
               ["neither", "positional", "syntactic", "both"]
        assert ax.images[0].get_array().tolist() == [[1, 0, 0], [2, 0, 3]]
        ax = hand_mask(min_per_layer=2).plot().axes[0]
        assert ax.get_legend().get_texts()[-1].get_text() == "best of its layer"
        assert ax.images[0].get_array().tolist() == [[1, 0, 4], [2, 0, 3]]
        _, ax2 = plt.subplots()
        assert hand_mask().plot(ax=ax2) is ax2.figure
    finally:
        plt.close("all")


@pytest.mark.parametrize("change, error, match", [
    (dict(positional=np.zeros((2, 3, 5))), TypeError, "positional"),
    (dict(positional=np.zeros((2, 3, 4), np.int64)), ValueError, "positional"),
    (dict(syntactic=np.zeros((2, 3, 2), np.int64)), ValueError, "syntactic"),
    (dict(arcs=[-1, 0, 0]), ValueError, "arcs"),
    (dict(baseline=np.zeros((3, 7), np.int64)), ValueError, "baseline"),
    (dict(relations=("nsubj", "nsubj", "obj")), ValueError, "relations"),
    (dict(relations="nsubj"), TypeError, "relations"),
    (dict(xi_pos="high"), TypeError, "xi_pos"),
    (dict(xi_synt=float("nan")), ValueError, "xi_synt"),
])
def test_bad_input_names_the_argument(change, error, match):
    args = dict(positional=np.zeros((2, 3, 5), np.int64), syntactic=np.zeros((2, 3, 3), np.int64),
                queries=0, arcs=[0, 0, 0], baseline=np.zeros((3, 5), np.int64), relations=RELS)
    args.update(change)
    with pytest.raises(error, match=match):
        HeadMask(**args)


@pytest.fixture
def pyplot():
    matplotlib = pytest.importorskip("matplotlib", reason="HeadMask.plot_offsets draws with "
                                                          "matplotlib (the viz extra)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def bar_heights(ax) -> dict[int, float]:
    """offset -> bar height of one plot_offsets panel."""
    return {round(p.get_x() + p.get_width() / 2): p.get_height() for p in ax.patches}


def test_plot_offsets_draws_a_o_per_requested_head(pyplot):
    m = hand_mask()
    heads = [(0, 0), (0, 2), (1, 1), (1, 2), (0, 1)]
    fig = m.plot_offsets(heads, max_offset=2)
    assert len(fig.axes) == len(heads)  # 2 x 4 grid: the spare panels are removed
    assert [ax.get_title() for ax in fig.axes] == ["L0 h0", "L0 h2", "L1 h1", "L1 h2", "L0 h1"]
    for ax, (layer, head) in zip(fig.axes, heads):
        assert bar_heights(ax) == dict(zip(m.offsets.tolist(), m.a_o[layer, head].tolist())), (layer, head)
        [xi] = [line for line in ax.lines if "xi" in line.get_label()]
        assert list(xi.get_ydata()) == [m.xi_pos, m.xi_pos]


def test_plot_offsets_window_is_bounded_and_reports_what_lies_beyond(pyplot):
    m = hand_mask()  # counted offsets -2..2
    whole = bar_heights(m.plot_offsets([(1, 2)], max_offset=2).axes[0])
    assert whole == {-2: 0.9, -1: 0, 0: 0.1, 1: 0, 2: 0}
    assert list(bar_heights(m.plot_offsets([(1, 2)]).axes[0])) == [-2, -1, 0, 1, 2]  # default 4, bounded
    for too_wide in (3, 10 ** 7):  # beyond the counters every bar is 0: refused, never allocated
        with pytest.raises(ValueError, match=f"max_offset must be at most 2, the widest offset counted, "
                                             f"got {too_wide}"):
            m.plot_offsets([(1, 2)], max_offset=too_wide)
    narrow = m.plot_offsets([(1, 2), (0, 0)], max_offset=1)
    assert bar_heights(narrow.axes[0]) == {-1: 0, 0: 0.1, 1: 0}
    assert [t.get_text() for t in narrow.axes[0].texts] == ["|o| > 1: 0.9"]
    assert len(narrow.axes[1].texts) == 0  # all of L0 h0's queries fall inside the window


def test_plot_offsets_default_heads(pyplot):
    m = hand_mask()
    assert [ax.get_title() for ax in m.plot_offsets().axes] == ["L0 h0", "L1 h2"]  # positional
    no_positional = m.with_thresholds(xi_pos=0.95)  # kept: the syntactic heads
    assert [ax.get_title() for ax in no_positional.plot_offsets().axes] == ["L1 h0", "L1 h2"]
    [xi] = [line for line in no_positional.plot_offsets().axes[0].lines if "xi" in line.get_label()]
    assert list(xi.get_ydata()) == [0.95, 0.95]
    with pytest.raises(ValueError, match="heads"):
        m.with_thresholds(xi_pos=1.0, xi_synt=1.0).plot_offsets()  # nothing kept


def test_plot_offsets_on_given_axes(pyplot):
    m = hand_mask()
    fig, ax = pyplot.subplots()
    assert m.plot_offsets([(0, 0)], ax=ax) is fig
    assert ax.get_title() == "L0 h0" and bar_heights(ax)[-1] == 0.9
    fig2, axes = pyplot.subplots(1, 2)
    assert m.plot_offsets([(0, 0), (1, 2)], ax=axes) is fig2
    assert [a.get_title() for a in axes] == ["L0 h0", "L1 h2"]
    with pytest.raises(ValueError, match="ax"):
        m.plot_offsets([(0, 0), (1, 2)], ax=ax)


@pytest.mark.parametrize("heads", [[(2, 0)], [(0, 3)], [(-1, 0)], [(0,)], [(0, 1, 2)], [(0, 1.0)],
                                   [(True, 0)], [], "L1 h8", 3, [3]])
def test_plot_offsets_rejects_bad_heads(pyplot, heads):
    with pytest.raises(ValueError, match="heads"):
        hand_mask().plot_offsets(heads)


def test_plot_offsets_rejects_bad_max_offset(pyplot):
    with pytest.raises(ValueError, match="max_offset"):
        hand_mask().plot_offsets(max_offset=0)
    with pytest.raises(TypeError, match="max_offset"):
        hand_mask().plot_offsets(max_offset=2.5)


def test_counters_must_fit_int64_and_their_totals(tmp_path):
    m = hand_mask()
    big = m.positional.astype(np.uint64)
    big[0, 0, 0] = np.iinfo(np.uint64).max
    with pytest.raises(ValueError, match="positional holds a count beyond int64"):
        HeadMask(big, m.syntactic, m.queries, m.arcs, m.baseline, relations=RELS)
    with pytest.raises(ValueError, match=r"positional\[0, 0\] counts 10, more than the 9 queries counted"):
        HeadMask(m.positional, m.syntactic, 9, m.arcs, m.baseline, relations=RELS)
    with pytest.raises(ValueError, match=r"syntactic\[1, 0, 0\] counts 7, more than the 6 arcs counted"):
        HeadMask(m.positional, m.syntactic, m.queries, [6, 4, 0], m.baseline, relations=RELS)
    with pytest.raises(ValueError, match=r"baseline\[0, 3\] counts 5, more than the 4 arcs counted"):
        HeadMask(m.positional, np.minimum(m.syntactic, 4), m.queries, [4, 4, 0], m.baseline, relations=RELS)


def test_no_queries_marks_no_head_positional():
    empty = HeadMask(np.zeros((2, 3, 5), np.int64), np.zeros((2, 3, 3), np.int64), 0, [0, 0, 0],
                     np.zeros((3, 5), np.int64), relations=RELS, xi_pos=-0.5)
    assert not empty.m_pos.any()
    counted = HeadMask(np.full((2, 3, 5), 2, np.int64), np.zeros((2, 3, 3), np.int64), 10, [0, 0, 0],
                       np.zeros((3, 5), np.int64), relations=RELS, xi_pos=0.1)
    assert counted.m_pos.all()  # the same threshold does mark heads once queries were counted


def _saved(tmp_path, **change):
    """hand_mask() saved, then its arrays / metadata changed and written again."""
    import json

    path = tmp_path / "heads.npz"
    hand_mask().save(path)
    with np.load(path) as f:
        arrays = dict(f)
    meta = json.loads(str(arrays["metadata"]))
    for key, value in change.items():
        if key == "metadata":
            arrays["metadata"] = np.array(value)
        elif value is None:
            del meta[key]
        else:
            meta[key] = value
    if "metadata" not in change:
        arrays["metadata"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    return path


def _write(save, path, *args, **kw):
    with open(path, "wb") as f:  # a file object: np.save / np.savez keep the name as given
        save(f, *args, **kw)


@pytest.mark.parametrize("write, match", [
    (lambda p: p.write_bytes(b"not a zip file at all"), "is not a masklrp head-mask .npz"),
    (lambda p: _write(np.save, p, np.zeros(3)), "it holds a single array"),
    (lambda p: _write(np.save, p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
     "is not a masklrp head-mask .npz"),
    (lambda p: _write(np.savez, p, **{k: np.zeros(1) for k in ("positional", "syntactic", "queries", "arcs",
                                                                "baseline", "skipped")},
                      metadata=np.array([1, 2], dtype=object)), "it is not an .npz of plain arrays"),
    (lambda p: _saved(p.parent, metadata='["a", "list"]'), "its metadata is not a JSON object"),
    (lambda p: _saved(p.parent, metadata="{not json"), "its metadata is not a JSON object"),
    (lambda p: _saved(p.parent, relations=None), r"its metadata misses \['relations'\]"),
    (lambda p: _saved(p.parent, skipped_reasons="same_span"), "metadata skipped_reasons must name each row"),
    (lambda p: _saved(p.parent, n_sentences="three"), "n_sentences must be an int"),
])
def test_load_refuses_what_save_did_not_write(tmp_path, write, match):
    path = tmp_path / "heads.npz"
    write(path)
    with pytest.raises((ValueError, TypeError), match=match) as err:
        HeadMask.load(path)
    assert "allow_pickle" not in str(err.value)
