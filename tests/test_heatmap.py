"""masklrp.heatmap: token heatmaps as HTML and matplotlib figures, and the Explanation fields
(special, word_ids) that feed them.

Colours are checked at exact rgb values worked out by hand from the documented map (white to
RdBu's ends, rounded half up); HTML is read back with the standard library's parser, so a
test sees what a browser would put in the DOM, not what a regex happens to match. How the
page looks in a real browser is tests/test_render.py.
"""
from __future__ import annotations

import dataclasses
import math
import re
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

import masklrp
from masklrp import heatmap
from masklrp.explain import Explanation

RED, BLUE, WHITE = (178, 24, 43), (33, 102, 172), (255, 255, 255)
HALF_RED, HALF_BLUE, QUARTER_RED = (217, 140, 149), (144, 179, 214), (236, 197, 202)


def explanation(tokens, scores, special=None, word_ids=None, method="attnlrp") -> Explanation:
    n = len(tokens)
    return Explanation(tokens=list(tokens), scores=np.asarray(scores, dtype=np.float32), target=1, logit=2.5,
                       method=method, input_ids=np.arange(n), word_ids=word_ids,
                       special=None if special is None else np.asarray(special))


class Page(HTMLParser):
    """The spans that carry a score (title), the row labels and the legends of a heatmap."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tokens: list[dict] = []      # {"text", "title", "style"}
        self.tags: list[str] = []
        self.legends: list[list[str]] = []
        self._open: list[dict | None] = []
        self._legend_depth = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "br":
            return
        record = None
        if tag == "span" and "title" in attrs and self._legend_depth is None:
            record = {"text": "", "title": attrs["title"], "style": attrs.get("style", "")}
            self.tokens.append(record)
        if attrs.get("class") == "masklrp-legend":
            self._legend_depth = len(self._open)
            self.legends.append([])
        self._open.append(record)

    def handle_endtag(self, tag):
        if tag == "br":
            return
        self._open.pop()
        if self._legend_depth is not None and len(self._open) == self._legend_depth:
            self._legend_depth = None

    def handle_data(self, data):
        if self._open and self._open[-1] is not None:
            self._open[-1]["text"] += data
        elif self._legend_depth is not None and data.strip():
            self.legends[-1].append(data.strip())

    def texts(self) -> list[str]:
        return [t["text"] for t in self.tokens]


def background(token: dict) -> tuple[int, int, int] | None:
    m = re.search(r"background-color:rgb\((\d+),(\d+),(\d+)\)", token["style"])
    return None if m is None else tuple(int(v) for v in m.groups())


def text_colour(token: dict) -> str:
    return re.search(r"(?:^|;)color:([^;]+)", token["style"]).group(1)


# ----------------------------------------------------------------------------- HTML
def test_hostile_tokens_are_escaped_everywhere():
    tokens = ["<script>alert(1)</script>", '"&', "<b>", "it's"]
    e = explanation(tokens, [0.5, -0.5, 0.25, 0.0])
    label = '<img src=x onerror="alert(1)">'
    out = heatmap.to_html({label: e, "ok": e}, title='<title>&"</title>')
    assert "<script" not in out and "<img" not in out and "<title>" not in out and "<b>" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out and "&quot;&amp;" in out
    page = Page(out)
    assert page.texts() == tokens * 2                     # the DOM holds the tokens, verbatim
    assert set(page.tags) <= {"div", "span", "br"}        # nothing but layout: no script, img, link
    assert "url(" not in out and "http" not in out and "@import" not in out
    assert ">&lt;img src=x onerror=&quot;alert(1)&quot;&gt;</div>" in out   # the label, as text


def test_row_label_and_title_escaped_as_text():
    e = explanation(["a"], [1.0])
    out = heatmap.to_html({"<i>x</i>": e}, title="a < b & c")
    assert "&lt;i&gt;x&lt;/i&gt;" in out and "a &lt; b &amp; c" in out
    doc = heatmap.document(e, title="a < b")
    assert doc.startswith("<!doctype html>") and '<meta charset="utf-8">' in doc
    assert "<title>a &lt; b</title>" in doc and heatmap.to_html(e, title="a < b") in doc


def test_colours_are_exact():
    e = explanation(["full", "half", "zero", "neg-half", "neg-full"], [2.0, 1.0, 0.0, -1.0, -2.0])
    spans = Page(heatmap.to_html(e)).tokens
    assert [background(s) for s in spans] == [RED, HALF_RED, WHITE, HALF_BLUE, BLUE]
    assert [s["title"] for s in spans] == ["+2", "+1", "+0", "-1", "-2"]
    # text stays readable: white on the two full colours, dark on pale boxes
    assert [text_colour(s) for s in spans] == ["#ffffff", "#1a1a1a", "#1a1a1a", "#1a1a1a", "#ffffff"]


def test_scores_beyond_the_scale_saturate():
    e = explanation(["big", "small", "neg"], [4.0, 0.5, -9.0])
    spans = Page(heatmap.to_html(e, scale=1.0)).tokens
    assert [background(s) for s in spans] == [RED, HALF_RED, BLUE]


def test_legend_numbers():
    e = explanation(["a", "b"], [0.1224, -0.05])
    [legend] = Page(heatmap.to_html(e)).legends
    assert legend == ["\u22120.122", "0", "+0.122"]
    [legend] = Page(heatmap.to_html(e, scale=0.5)).legends
    assert legend == ["\u22120.5", "0", "+0.5"]
    tiny = explanation(["a"], [2.64e-8])
    [legend] = Page(heatmap.to_html(tiny)).legends
    assert legend == ["\u22122.64e\u22128", "0", "+2.64e\u22128"]
    flat = explanation(["a", "b"], [0.0, 0.0])     # nothing to scale by: white boxes, a unit legend
    page = Page(heatmap.to_html(flat))
    assert page.legends == [["\u22121", "0", "+1"]] and {background(s) for s in page.tokens} == {WHITE}


def test_special_tokens_hidden_by_default_and_never_set_the_scale():
    e = explanation(["[CLS]", "good", "bad", "[SEP]"], [9.0, 0.5, -0.25, -9.0], special=[1, 0, 0, 1])
    page = Page(heatmap.to_html(e))
    assert page.texts() == ["good", "bad"]
    assert [background(s) for s in page.tokens] == [RED, HALF_BLUE] and page.legends == [["\u22120.5", "0", "+0.5"]]
    shown = Page(heatmap.to_html(e, show_special=True))
    assert shown.texts() == ["[CLS]", "good", "bad", "[SEP]"]
    cls, good, bad, sep = shown.tokens
    assert background(cls) is None and background(sep) is None          # uncoloured ...
    assert text_colour(cls) == text_colour(sep) == heatmap.GREY          # ... grey text
    assert (background(good), background(bad)) == (RED, HALF_BLUE)       # the scale is unchanged
    assert cls["title"] == "+9" and shown.legends == page.legends


def test_rows_side_by_side_with_labels():
    a = explanation(["a", "gripping", "film"], [0.1, 0.4, 0.2], method="attnlrp")
    g = explanation(["a", "grip", "##ping", "film", "!"], [1.0, -2.0, 0.5, 0.0, 2.0], method="gae")
    out = heatmap.to_html({"AttnLRP": a, "GAE (ours)": g})
    page = Page(out)
    assert page.texts() == ["a", "gripping", "film", "a", "grip", "ping", "film", "!"]  # each row its own tokens
    assert out.index("AttnLRP") < out.index("gripping") < out.index("GAE (ours)") < out.index("grip<")
    assert len(page.legends) == 2                                   # a legend per row-scaled row
    assert page.legends[0][-1] == "+0.4" and page.legends[1][-1] == "+2"
    seq = heatmap.to_html([a, g])
    assert ">attnlrp<" in seq and ">gae<" in seq                    # default labels: the methods
    single = heatmap.to_html(a)
    assert "attnlrp" not in single                                  # one row: no label to tell apart


def test_scale_modes():
    small = explanation(["s1", "s0"], [1.0, 0.0])
    large = explanation(["l4", "l1"], [4.0, 1.0])
    rows = {"small": small, "large": large}
    colour = lambda **kw: [background(s) for s in Page(heatmap.to_html(rows, **kw)).tokens]  # noqa: E731
    assert colour(scale="row") == [RED, WHITE, RED, QUARTER_RED]
    assert colour(scale="shared") == [QUARTER_RED, WHITE, RED, QUARTER_RED]
    assert colour(scale=2.0) == [HALF_RED, WHITE, RED, HALF_RED]
    assert colour(scale=4) == [QUARTER_RED, WHITE, RED, QUARTER_RED]
    assert len(Page(heatmap.to_html(rows, scale="shared")).legends) == 1
    assert Page(heatmap.to_html(rows, scale=2.0)).legends == [["\u22122", "0", "+2"]]


def test_word_pieces_glue_in_html():
    e = explanation(["[CLS]", "un", "##watch", "##able", "film", "[SEP]"], [0, 1, 1, 1, 1, 0],
                    special=[1, 0, 0, 0, 0, 1])
    out = heatmap.to_html(e)
    assert re.search(r">un</span><span[^>]*>watch</span><span[^>]*>able</span> <span", out)  # no space inside a word
    assert re.search(r'white-space:pre-wrap"><span', out)                    # nor before the first token
    merged = Page(heatmap.to_html(e, merge_words=True))
    assert merged.texts() == ["unwatchable", "film"] and merged.tokens[0]["title"] == "+3"


# ----------------------------------------------------------------------------- words
def test_words_wordpiece_markers_and_specials():
    e = explanation(["[CLS]", "over", "##long", "##er", ",", "mess", "[SEP]", "##x"],
                    [1, 0.25, 0.5, 0.125, -1, 2, 3, 4], special=[1, 0, 0, 0, 0, 0, 1, 0])
    words, scores, special = heatmap.words(e)
    # "##x" after [SEP] cannot continue a word across a special token
    assert words == ["[CLS]", "overlong" + "er", ",", "mess", "[SEP]", "x"]
    assert scores.dtype == np.float64 and scores.tolist() == [1, 0.875, -1, 2, 3, 4]
    assert special.tolist() == [True, False, False, False, True, False]
    assert e.words()[0] == words


def test_words_sentencepiece_and_byte_fallback():
    tokens = ["<s>", "▁The", "▁cap", "ital", "▁of", "<0x0A>", "▁Fr", "<0xC3>", "<0xA9>", "d", "é"]
    e = explanation(tokens, np.arange(len(tokens)), special=[1] + [0] * 10)
    words, scores, _ = heatmap.words(e)
    assert words == ["<s>", "The", "capital", "of", "⏎", "Fr" + "é" + "dé"]
    assert scores.tolist() == [0, 1, 5, 4, 5, 6 + 7 + 8 + 9 + 10]
    layout = heatmap._items(e, merge_words=False)
    assert [i.newline for i in layout][:6] == [False, False, False, False, False, True]


@pytest.fixture(scope="module")
def bpe():
    """A byte-level BPE tokenizer (GPT-2's scheme) trained offline on a few sentences."""
    tokenizers = pytest.importorskip("tokenizers", reason="the hf extra's tokenizers builds the BPE tokenizer")
    from tokenizers import models, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the lower the newer", "lowest newest widest", "the widths are low"] * 5, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A",
                                                       special_tokens=[("<|endoftext|>", 0)])
    return masklrp.tokenizer.Tokenizer(tok)


def test_byte_alphabet_matches_tokenizers(bpe):
    from tokenizers import pre_tokenizers

    assert set(heatmap._BYTES) == set(pre_tokenizers.ByteLevel.alphabet())
    assert sorted(heatmap._BYTES.values()) == list(range(256))


def test_words_byte_level_bpe(bpe):
    text = "the lowering widths, newest\nΩ café"
    batch = bpe.encode(text)
    n = len(batch.tokens[0])
    e = explanation(batch.tokens[0], np.linspace(-1, 1, n), special=batch.special_tokens_mask[0],
                    word_ids=batch.word_ids[0])
    assert {"Ġlower", ",", "Ċ", "Ã"} <= set(e.tokens)                 # the test means what it says
    words, scores, special = heatmap.words(e)
    assert words == ["<|endoftext|>", "the", "lowering", "widths", ",", "newest", "⏎", "Ω", "café"]
    ids = batch.word_ids[0]
    for w in range(max(i for i in ids if i is not None) + 1):
        pieces = [t for t in range(n) if ids[t] == w]
        assert scores[1 + w] == math.fsum(e.scores[pieces].astype(np.float64)), words[1 + w]
    assert special.tolist() == [True] + [False] * 8
    # without word ids the markers decide: "," has no "Ġ", so it joins the word before it
    by_markers, marker_scores, _ = heatmap.words(dataclasses.replace(e, word_ids=None))
    assert by_markers == ["<|endoftext|>", "the", "lowering", "widths,", "newest", "⏎", "Ω", "café"]
    assert marker_scores[3] == math.fsum(scores[3:5])
    merged = heatmap.to_html(e, merge_words=True)
    assert Page(merged).texts() == words[1:]
    assert re.search(r">widths</span><span[^>]*>,</span> <span[^>]*>newest</span> "
                     r"<span[^>]*>⏎</span><br><span", merged)                 # no indent after the break
    # a token right after a special one stands apart from it, though it has no "Ġ"
    assert re.search(r">&lt;\|endoftext\|&gt;</span> <span[^>]*>the<", heatmap.to_html(e, show_special=True))


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return masklrp.load(minilm_dir)


def test_explanations_carry_special_and_word_ids(minilm):
    texts = ["an unwatchable, overlong screenplay", "dull"]
    inputs = minilm.encode(texts)
    batch = minilm.tokenizer.encode(texts)
    assert inputs.word_ids == batch.word_ids
    [e, short] = masklrp.attnlrp(minilm, inputs, target=0)
    assert e.tokens[:5] == ["[CLS]", "an", "un", "##watch", "##able"]
    assert e.special.dtype == bool and e.special.tolist() == [True] + [False] * (len(e.tokens) - 2) + [True]
    assert e.word_ids == batch.word_ids[0] and e.word_ids[0] is None          # row 0 is the longest: no padding
    assert len(short.tokens) == len(short.word_ids) == len(short.special) == 3   # padding cut from all fields
    # token ids without the tokenizer's batch: specials from the tokenizer's ids, word ids unknown
    [by_ids] = masklrp.attnlrp(minilm, inputs.input_ids[:1], target=0)
    assert by_ids.special.tolist() == e.special.tolist() and by_ids.word_ids is None
    np.testing.assert_allclose(by_ids.scores, e.scores, rtol=0, atol=1e-6)     # a batch of 1 vs 2: BLAS order
    out = masklrp.explain_all(minilm, texts[:1], ["gae", "attnlrp"], target=0)
    assert out["gae"][0].word_ids == e.word_ids and out["gae"][0].special.tolist() == e.special.tolist()


def test_words_on_a_real_tokenizer_sum_exactly(minilm):
    e = masklrp.attnlrp(minilm, "an unwatchable, overlong screenplay", target=0)
    words, scores, special = e.words()
    assert words == ["[CLS]", "an", "unwatchable", ",", "overlong", "screenplay", "[SEP]"]
    assert special.tolist() == [True] + [False] * 5 + [True]
    pieces = {"unwatchable": [2, 3, 4], "overlong": [6, 7]}
    for word, idx in pieces.items():
        assert scores[words.index(word)] == math.fsum(float(s) for s in e.scores[idx])
    assert np.isclose(scores.sum(), e.scores.astype(np.float64).sum(), rtol=0, atol=1e-12)
    assert heatmap.words(dataclasses.replace(e, word_ids=None))[0] == words   # "##" markers agree


# ----------------------------------------------------------------------------- matplotlib
@pytest.fixture
def plt():
    pytest.importorskip("matplotlib", reason="figures need the viz extra (matplotlib)")
    import matplotlib.pyplot

    return matplotlib.pyplot


def boxes(fig) -> list:
    """Token boxes as (x0, x1, y0, y1) in figure pixels, with their face colour."""
    from matplotlib.patches import FancyBboxPatch

    fig.canvas.draw()
    out = []
    for p in fig.axes[0].patches:
        if isinstance(p, FancyBboxPatch):
            bb = p.get_window_extent()
            out.append((bb.x0, bb.x1, bb.y0, bb.y1, tuple(round(255 * c) for c in p.get_facecolor()[:3])))
    return out


def test_plot_colours_and_text(plt):
    e = explanation(["full", "$x$", "zero", "\\neg", "[SEP]"], [2.0, 1.0, 0.0, -2.0, 5.0], special=[0, 0, 0, 0, 1])
    fig = heatmap.plot(e)
    try:
        assert [b[4] for b in boxes(fig)] == [RED, HALF_RED, WHITE, BLUE]       # the HTML's colours
        texts = [t.get_text() for t in fig.axes[0].texts]
        assert {"full", "$x$", "zero", "\\neg"} <= set(texts) and "[SEP]" not in texts
        assert {"\u22122", "0", "+2"} <= set(texts)                                # the colour bar's numbers
        assert all(not t.get_usetex() for t in fig.axes[0].texts)
        assert len(fig.axes[0].images) == 1                                        # the colour bar
    finally:
        plt.close(fig)


def test_plot_wraps_without_overlap(plt):
    words = ("despite a few overlong scenes and an unconvincing villain the performances are heartfelt "
             "and the screenplay is witty").split()
    e = explanation(words, np.sin(np.arange(len(words))))
    fig = heatmap.plot({"one": e, "two": e}, width=4)
    try:
        placed = boxes(fig)
        width_px = fig.get_figwidth() * fig.dpi
        assert fig.get_figwidth() <= 4 + 1e-9 and all(0 <= b[0] and b[1] <= width_px for b in placed)
        lines = sorted({round(b[2], 3) for b in placed})
        assert len(lines) >= 6                                                    # two rows, several lines each
        for y in lines:
            row = sorted((b[0], b[1]) for b in placed if round(b[2], 3) == y)
            assert all(a[1] <= b[0] + 1e-6 for a, b in zip(row, row[1:])), row    # no box overlaps the next
        assert len(fig.axes[0].images) == 2                                       # a colour bar per row
    finally:
        plt.close(fig)


def test_plot_breaks_lines_at_newlines(plt):
    e = explanation(["Hello", "Ġworld", "Ċ", "Next", "Ġline"], [1, 1, 0.5, -1, -1])
    fig = heatmap.plot(e, width=8)
    try:
        hello, world, newline, next_, line = boxes(fig)
        assert hello[2] == world[2] == newline[2] != next_[2] == line[2]    # "Next" starts the second line
        assert next_[0] == hello[0] and newline[4] == (217, 140, 149)
    finally:
        plt.close(fig)


def test_plot_never_needs_latex(plt, tmp_path):
    import matplotlib as mpl

    e = explanation(["50%", "$", "of", "$x^2$", "#1", "_a_"], [1, -1, 0.5, 0.2, 0, -0.3])
    with mpl.rc_context({"text.usetex": True}):                # LaTeX is not installed here
        path = heatmap.save(e, tmp_path / "tex.png", title="$\\alpha$ & 100%")
    assert path.stat().st_size > 2000


def test_plot_into_given_axes(plt):
    fig, ax = plt.subplots(figsize=(6, 2))
    try:
        assert heatmap.plot(explanation(["a", "b"], [1, -1]), ax=ax) is fig
        assert len(ax.patches) >= 2 and not ax.axison
    finally:
        plt.close(fig)


def test_save_formats(plt, tmp_path):
    import matplotlib.image

    e = explanation(["[CLS]", "a", "gripping", "film", "[SEP]"], [0.9, 0.1, 0.5, -0.3, 0.2], special=[1, 0, 0, 0, 1])
    figures = len(plt.get_fignums())
    for name in ("h.html", "h.htm", "h.png", "h.pdf", "h.svg", "H.PNG"):
        assert heatmap.save(e, tmp_path / name) == tmp_path / name
    assert len(plt.get_fignums()) == figures                                     # save() closes its figures
    assert (tmp_path / "h.html").read_text(encoding="utf-8").startswith("<!doctype html>")
    assert (tmp_path / "h.htm").read_text(encoding="utf-8") == heatmap.document(e)
    for png in ("h.png", "H.PNG"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    image = matplotlib.image.imread(tmp_path / "h.png")[..., :3]
    assert image.shape[0] > 40 and image.shape[1] > 200
    assert (np.abs(image - np.array(RED) / 255).max(axis=-1) < 0.02).any()     # the full-red box is there
    assert (tmp_path / "h.pdf").read_bytes()[:5] == b"%PDF-"
    svg = (tmp_path / "h.svg").read_text(encoding="utf-8")
    assert "<svg" in svg and "#b2182b" in svg                                    # RED's box
    assert e.save(tmp_path / "m.png").stat().st_size > 5000


def test_explanation_methods(plt):
    e = explanation(["[CLS]", "fine", "[SEP]"], [1.0, 0.5, -1.0], special=[1, 0, 1])
    assert e.to_html() == heatmap.to_html(e) and e.to_html(show_special=True) != e.to_html()
    shown = e._repr_html_()
    assert "attnlrp: target 1, logit 2.5" in shown and "fine" in shown
    assert dataclasses.replace(e, scores=np.array([0, np.inf, 0]))._repr_html_() is None  # falls back to repr
    fig = e.plot(width=3)
    try:
        assert type(fig).__name__ == "Figure" and fig in map(plt.figure, plt.get_fignums())
    finally:
        plt.close(fig)


def test_without_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # importing matplotlib now fails
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    e = explanation(["a"], [1.0])
    for call in (lambda: heatmap.plot(e), lambda: heatmap.save(e, tmp_path / "x.png"),
                 lambda: heatmap.save(e, tmp_path / "x.pdf")):
        with pytest.raises(ImportError, match=r"pip install 'masklrp\[viz\]'"):
            call()
    assert heatmap.save(e, tmp_path / "x.html").exists() and heatmap.to_html(e)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs(tmp_path):
    e = explanation(["a", "b"], [1.0, -1.0])
    cases = [
        (TypeError, "explanations", lambda: heatmap.to_html(42)),
        (TypeError, "explanations", lambda: heatmap.to_html("a text")),
        (ValueError, "explanations", lambda: heatmap.to_html([])),
        (TypeError, r"explanations\['attnlrp'\].*es\[0\]", lambda: heatmap.to_html({"attnlrp": [e]})),
        (TypeError, r"explanations\[1\]", lambda: heatmap.to_html([e, "x"])),
        (ValueError, "scale", lambda: heatmap.to_html(e, scale="rows")),
        (ValueError, "scale", lambda: heatmap.to_html(e, scale=0)),
        (ValueError, "scale", lambda: heatmap.to_html(e, scale=-1.5)),
        (ValueError, "scale", lambda: heatmap.to_html(e, scale=float("nan"))),
        (TypeError, "scale", lambda: heatmap.to_html(e, scale=[1.0])),
        (TypeError, "scale", lambda: heatmap.to_html(e, scale=True)),
        (TypeError, "merge_words", lambda: heatmap.to_html(e, merge_words="yes")),
        (TypeError, "show_special", lambda: heatmap.to_html(e, show_special=1)),
        (TypeError, "title", lambda: heatmap.to_html(e, title=3)),
        (ValueError, "scores", lambda: heatmap.to_html(dataclasses.replace(e, scores=np.zeros(3)))),
        (ValueError, "finite", lambda: heatmap.to_html(dataclasses.replace(e, scores=np.array([1.0, np.nan])))),
        (ValueError, "special", lambda: heatmap.to_html(dataclasses.replace(e, special=np.zeros(5, bool)))),
        (ValueError, "word_ids", lambda: heatmap.to_html(dataclasses.replace(e, word_ids=[0]))),
        (TypeError, "^e must", lambda: heatmap.words("a text")),
        (ValueError, "path", lambda: heatmap.save(e, tmp_path / "x.txt")),
        (ValueError, "path", lambda: heatmap.save(e, tmp_path / "noext")),
        (TypeError, "path", lambda: heatmap.save(e, 3)),
        (ValueError, "width", lambda: heatmap.plot(e, width=0)),
        (ValueError, "width", lambda: heatmap.plot({"a long label for a tiny figure": e}, width=1)),
        (TypeError, "width", lambda: heatmap.plot(e, width="8")),
    ]
    for error, pattern, call in cases:
        with pytest.raises(error, match=pattern):
            call()
    assert not list(tmp_path.iterdir())                                           # nothing half-written


def test_a_truncated_explanation_says_so():
    from dataclasses import replace

    e = masklrp.Explanation(tokens=["[CLS]", "good", "[SEP]"], scores=np.array([0.0, 1.0, 0.0]), target=1,
                            logit=2.0, method="attnlrp", input_ids=np.array([101, 2204, 102]),
                            special=np.array([True, False, True]))
    cut = replace(e, truncated=True)
    assert "truncated" not in masklrp.heatmap.to_html(e)
    assert "(truncated)" in masklrp.heatmap.to_html(cut)
    assert "attnlrp (truncated)" in masklrp.heatmap.to_html({"attnlrp": cut, "other": e})
