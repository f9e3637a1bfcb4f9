"""Token heatmaps of Explanations: HTML for notebooks and pages, matplotlib for figures.

>>> e = masklrp.attnlrp(model, "a gripping, funny and touching film")
>>> e                                  # in a notebook: the heatmap (Explanation._repr_html_)
>>> out = masklrp.explain_all(model, text, ["attnlrp", "gae", "mask-lrp"], head_mask=mask)
>>> masklrp.heatmap.save({m: es[0] for m, es in out.items()}, "fig6.pdf")   # a row per method

``explanations`` is one :class:`~masklrp.explain.Explanation`, a sequence of them or a dict
``{label: Explanation}``. Several are drawn as rows one above the other (paper Fig. 6: one row
per method for one sentence), each labelled (by default with its method) and drawn from its
own tokens.

Colours: a diverging map centred at 0. A score ``s`` on a row of scale ``m`` has intensity
``a = min(|s| / m, 1)``; each channel goes linearly from white (``a = 0``) to :data:`RED`
(``s > 0``, for the explained output) or :data:`BLUE` (``s < 0``, against), rounded half up.
``scale``: "row" (``m`` = the row's largest |score| among its shown tokens), "shared" (the
largest over all rows) or a positive number. Special tokens ([CLS], [SEP], <s>, padding: the
Explanation's ``special`` flags) are hidden by default, as rollout methods give [CLS] a score
that would wash out the rest, and never set the scale; ``show_special=True`` shows them as
grey, uncoloured text.

:func:`to_html` and :func:`document` need no matplotlib; :func:`plot` and :func:`save` to an
image do (``pip install 'masklrp[viz]'``).

Tokens are shown as text, not vocabulary entries: a WordPiece "##" piece and a byte-level BPE
/ SentencePiece token without its "Ġ" / "▁" join the token before them; byte-level bytes are
decoded (``"Ã©"`` is "é"), a newline shows as "⏎" and breaks the line.
"""
from __future__ import annotations

import html
import math
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ._files import replacing
from .explain import Explanation

__all__ = ["BLUE", "RED", "document", "plot", "save", "texts", "to_html", "words"]

# ColorBrewer RdBu's ends: a diverging pair that colour-blind readers and greyscale print tell apart.
RED = (178, 24, 43)
BLUE = (33, 102, 172)
WHITE = (255, 255, 255)
GREY = "#8c8c8c"          # special tokens, when shown
INK, INK_ON_DARK = "#1a1a1a", "#ffffff"
DARK = 0.55               # intensity above which text on a box turns white
SCALES = ("row", "shared")
HTML_SUFFIXES = (".html", ".htm")
IMAGE_SUFFIXES = (".png", ".pdf", ".svg")
CAPTION = "red: for the explained output · blue: against"

# plot() geometry, in points (1/72 in)
FONT = 11.0
TITLE_FONT, LEGEND_FONT = 12.0, 9.0
MARGIN = 4.0
BOX_PAD = 2.2             # horizontal padding inside a token's box
PIECE_PAD = 0.4           # the same where the next piece of the word touches
BOX_H = 1.45 * FONT
LINE = 2.0 * FONT         # line pitch
WORD_GAP, PIECE_GAP = 4.5, 0.0
ROW_GAP = 8.0
ROW_LEGEND_W = 110.0
LEGEND_W = 160.0


# ----------------------------------------------------------------------------- tokens -> items
@dataclass(frozen=True)
class _Item:
    """One token or word as drawn: display text, score, whether it is special, whether a
    space precedes it in the text and whether the text breaks after it."""

    text: str
    score: float
    special: bool
    space: bool
    newline: bool


@dataclass(frozen=True)
class _Piece:
    """One token's share of the text: its UTF-8 bytes (the word-start space dropped), whether
    it continues the previous token without a space, and its text when shown alone."""

    raw: bytes
    glued: bool
    text: str


def words(e: Explanation) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Word pieces merged into words: ``(words, scores, special)``.

    ``scores`` (float64) is each word's sum of its pieces' scores (``math.fsum``, so exact to
    rounding); ``special`` (bool) flags special tokens, which stay words of their own. Pieces
    form a word when ``e.word_ids`` gives them the same id (the tokenizer's own split); without
    word ids, by the tokens' markers: a WordPiece "##" piece continues the word before it and,
    where tokens carry "Ġ" / "▁" (byte-level BPE, SentencePiece), a token without one does.
    Byte-level tokens are decoded (``"Ã©"`` is shown as ``"é"``) where their bytes are whole
    characters, so a character split over pieces shows once its word is merged.
    """
    items = _items(_checked(e, "e"), merge_words=True)
    return ([i.text for i in items], np.array([i.score for i in items], dtype=np.float64),
            np.array([i.special for i in items], dtype=bool))


def texts(tokens: Sequence[str], special=None) -> list[str]:
    """Each token as a heatmap shows it alone: decoded, its word-start marker dropped,
    a newline as "⏎" (``special``: bool flags of tokens shown as they are)."""
    flags = np.zeros(len(tokens), bool) if special is None else np.asarray(special, bool)
    return [_joined([p]) for p in _pieces([str(t) for t in tokens], flags)]


def _items(e: Explanation, merge_words: bool) -> list[_Item]:
    tokens = [str(t) for t in e.tokens]
    special = np.zeros(len(tokens), bool) if e.special is None else np.asarray(e.special, bool)
    scores = np.asarray(e.scores, dtype=np.float64)
    pieces = _pieces(tokens, special)
    groups: list[list[int]] = []
    for t in range(len(tokens)):
        if merge_words and groups and _same_word(e.word_ids, pieces, special, t):
            groups[-1].append(t)
        else:
            groups.append([t])
    return [_Item(text=_joined([pieces[t] for t in g]), score=math.fsum(scores[g]), special=bool(special[g[0]]),
                  space=not pieces[g[0]].glued, newline=b"\n" in pieces[g[-1]].raw) for g in groups]


def _joined(pieces: list[_Piece]) -> str:
    """The display text of pieces drawn as one: decoded together (a character may span
    byte-level pieces), else their own texts joined; newlines as ⏎, nothing as ␣."""
    raw = pieces[0].raw + b"".join((b"" if p.glued else b" ") + p.raw for p in pieces[1:])
    text = _decoded(raw, pieces[0].text + "".join(("" if p.glued else " ") + p.text for p in pieces[1:]))
    return text.replace("\n", "⏎") or "␣"  # a lone space token stays visible


def _pieces(tokens: list[str], special: np.ndarray) -> list[_Piece]:
    """Per token: "##" and the word-start markers become spacing; bytes become text."""
    shown = [tok for tok, s in zip(tokens, special) if not s]
    scheme = ("bytes" if any(tok.startswith("Ġ") for tok in shown) else
              "sentencepiece" if any(tok.startswith("▁") for tok in shown) else "wordpiece")
    out = []
    for t, token in enumerate(tokens):
        if special[t]:
            out.append(_Piece(token.encode("utf-8"), False, token))
            continue
        raw = _token_bytes(token, scheme)
        if scheme == "wordpiece":
            glued = token.startswith("##") and len(token) > 2
            raw = raw[2:] if glued else raw
        else:
            glued = not raw.startswith(b" ")
            raw = raw if glued else raw[1:]  # one space separates words; more are content
            # a line break ends a word too: "Ċ" and the token after it start words of their own
            glued = glued and not raw[:1].isspace() and not (out and out[-1].raw[-1:].isspace())
        glued = glued and t > 0 and not special[t - 1]  # specials stand apart
        out.append(_Piece(raw, glued, _decoded(raw, token.lstrip("Ġ▁"))))
    return out


def _token_bytes(token: str, scheme: str) -> bytes:
    if scheme == "bytes" and all(c in _BYTES for c in token):
        return bytes(_BYTES[c] for c in token)
    if scheme == "sentencepiece" and _HEX_BYTE.fullmatch(token):
        return bytes([int(token[3:5], 16)])  # byte fallback, e.g. <0x0A> for a newline
    return token.replace("▁", " ").encode("utf-8") if scheme == "sentencepiece" else token.encode("utf-8")


def _decoded(raw: bytes, fallback: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # part of a character: the rest is in a neighbouring piece
        return fallback


def _byte_alphabet() -> dict[str, int]:
    """Byte-level BPE's alphabet (GPT-2): a printable Latin-1 byte stands for itself, every
    other byte n-th in order for chr(256 + n) (so a space is "Ġ", a newline "Ċ")."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(others)}}


_BYTES = _byte_alphabet()
_HEX_BYTE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _same_word(word_ids, pieces: list[_Piece], special: np.ndarray, t: int) -> bool:
    if special[t] or special[t - 1]:
        return False
    if word_ids is not None:
        return word_ids[t] is not None and word_ids[t] == word_ids[t - 1]
    return pieces[t].glued


# ----------------------------------------------------------------------------- rows and scales
@dataclass(frozen=True)
class _Row:
    label: str | None
    tooltip: str
    items: list[_Item]
    scale: float


def _rows(explanations, merge_words, show_special, scale) -> list[_Row]:
    for name, flag in (("merge_words", merge_words), ("show_special", show_special)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    shown = []
    for label, e in _labelled(explanations):
        items = [i for i in _items(e, merge_words) if show_special or not i.special]
        shown.append((label, e, items))
    peaks = [max((abs(i.score) for i in items if not i.special), default=0.0) for _, _, items in shown]
    return [_Row(_cut(label, e), e.title, items, m) for (label, e, items), m in zip(shown, _scales(scale, peaks))]


def _cut(label: str | None, e: Explanation) -> str | None:
    """A truncated text's row says so: its explanation covers the first part only."""
    if not e.truncated:
        return label
    return "(truncated)" if label is None else f"{label} (truncated)"


def _labelled(explanations) -> list[tuple[str | None, Explanation]]:
    """(label, explanation) per row; a lone Explanation has no label (nothing to tell apart)."""
    if isinstance(explanations, Explanation):
        return [(None, _checked(explanations, "explanations"))]
    if isinstance(explanations, Mapping):
        rows = [(str(k), _checked(v, f"explanations[{k!r}]")) for k, v in explanations.items()]
    elif isinstance(explanations, Sequence) and not isinstance(explanations, (str, bytes)):
        checked = (_checked(v, f"explanations[{i}]") for i, v in enumerate(explanations))
        rows = [(str(e.method), e) for e in checked]
    else:
        raise TypeError("explanations must be an Explanation, a sequence of them or a dict "
                        f"{{label: Explanation}}, got {type(explanations).__name__}")
    if not rows:
        raise ValueError("explanations is empty: nothing to draw")
    return rows


def _checked(e, name: str) -> Explanation:
    if not isinstance(e, Explanation):
        hint = (" (explain_all gives a list per method: take one sequence, e.g. "
                "{m: es[0] for m, es in out.items()})" if isinstance(e, (list, tuple)) else "")
        raise TypeError(f"{name} must be a masklrp Explanation, got {type(e).__name__}{hint}")
    n = len(e.tokens)
    for field, value in (("scores", e.scores), ("special", e.special)):
        if value is not None and np.shape(value) != (n,):
            raise ValueError(f"{name}.{field} has shape {np.shape(value)}, but there are {n} tokens")
    if e.word_ids is not None and len(e.word_ids) != n:
        raise ValueError(f"{name}.word_ids has {len(e.word_ids)} entries, but there are {n} tokens")
    if not np.isfinite(np.asarray(e.scores, dtype=np.float64)).all():
        raise ValueError(f"{name}.scores must be finite")
    return e


def _scales(scale, peaks: list[float]) -> list[float]:
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ValueError(f"scale must be 'row', 'shared' or a positive number, got {scale!r}")
        if scale == "shared":
            peaks = [max(peaks)] * len(peaks)
        return [p if p > 0 else 1.0 for p in peaks]  # an all-zero row is white at any scale
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be 'row', 'shared' or a positive number, got {type(scale).__name__}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return [float(scale)] * len(peaks)


def _title(title) -> str | None:
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    return title or None


def _per_row_legend(rows: list[_Row], scale) -> bool:
    """Rows scaled each by its own maximum need a legend each."""
    return isinstance(scale, str) and scale == "row" and len(rows) > 1


# ----------------------------------------------------------------------------- colours
def _intensity(score: float, scale: float) -> float:
    return min(abs(score) / scale, 1.0)


def _rgb(score: float, scale: float) -> tuple[int, int, int]:
    """The box colour of ``score`` (0–255 per channel; see the module docstring)."""
    a = _intensity(score, scale)
    end = RED if score > 0 else BLUE
    return tuple(int(math.floor(w + a * (c - w) + 0.5)) for w, c in zip(WHITE, end))


def _ink(score: float, scale: float) -> str:
    return INK_ON_DARK if _intensity(score, scale) > DARK else INK


def _number(x: float) -> str:
    """A legend number: 3 significant digits, signed, a true minus sign, a short exponent
    (``+2.64e−8``, not ``+2.64e-08``: per-row legends are narrow)."""
    if x == 0:
        return "0"
    text = f"{x:+.3g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text.replace("-", "\u2212")


# ----------------------------------------------------------------------------- HTML
_HTML_FONT = "system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', Arial, sans-serif"


def to_html(explanations, *, merge_words: bool = False, show_special: bool = False, scale="row",
            title: str | None = None) -> str:
    """An HTML fragment of the heatmap: inline styles only, no scripts, nothing external.

    Tokens (or words, with ``merge_words``) are spans coloured by score, each with its score as
    ``title`` (hover); rows come labelled on the left; the legend is a colour bar from −scale
    through 0 to +scale with its numbers (one per row when each row has its own scale). Every
    token, label and title is HTML-escaped.
    """
    rows = _rows(explanations, merge_words, show_special, scale)
    title = _title(title)
    per_row = _per_row_legend(rows, scale)
    labels = any(r.label is not None for r in rows)
    # tokens take what they need, wrapping at the container's edge; legends follow them
    columns = " ".join(["max-content"] * labels + ["auto"] + ["max-content"] * per_row)
    out = [f'<div class="masklrp-heatmap" style="font-family:{_HTML_FONT};font-size:15px;color:{INK};'
           f'background:#fff;padding:6px 2px">']
    if title:
        out.append(f'<div style="font-weight:600;margin-bottom:8px">{html.escape(title)}</div>')
    # a grid, not a table: notebook stylesheets restyle tables (alignment, striped rows)
    out.append(f'<div style="display:grid;grid-template-columns:{columns};justify-content:start;'
               f'column-gap:14px;align-items:start">')
    for k, row in enumerate(rows):
        cell = "padding:4px 0" + (";border-top:1px solid #e6e6e6" if k else "")
        if labels:
            out.append(f'<div title="{html.escape(row.tooltip)}" style="{cell};font-weight:600;'
                       f'line-height:2;white-space:nowrap">{html.escape(row.label or "")}</div>')
        out.append(f'<div style="{cell};line-height:2;white-space:pre-wrap">{_html_tokens(row)}</div>')
        if per_row:
            out.append(f'<div style="{cell}">{_html_legend(row.scale)}</div>')
    out.append("</div>")
    if not per_row:
        out.append(f'<div style="margin-top:8px">{_html_legend(rows[0].scale, CAPTION)}</div>')
    out.append("</div>")
    return "".join(out)


def _html_tokens(row: _Row) -> str:
    if not row.items:
        return f'<span style="color:{GREY}">(no tokens)</span>'
    out = []
    for k, item in enumerate(row.items):
        if k and item.space and not row.items[k - 1].newline:
            out.append(" ")  # a real space: the line may wrap here, as in the text
        left, right = (2 * p for p in _pads(row.items, k))
        out.append(_html_token(item, row.scale, left, right))
        if item.newline:
            out.append("<br>")
    return "".join(out)


def _pads(items: list[_Item], k: int) -> tuple[int, int]:
    """Padding sides of item ``k`` (1 outside a word, 0 where the next piece of its word
    touches): the pieces of a word read as one word, however pale their boxes."""
    glued_next = k + 1 < len(items) and not items[k + 1].space
    return (int(k == 0 or items[k].space), int(not glued_next))


def _html_token(item: _Item, scale: float, left: int, right: int) -> str:
    tip, text = f"{item.score:+.4g}", html.escape(item.text)
    if item.special:
        return f'<span title="{tip}" style="color:{GREY}">{text}</span>'
    r, g, b = _rgb(item.score, scale)
    return (f'<span title="{tip}" style="background-color:rgb({r},{g},{b});color:{_ink(item.score, scale)};'
            f'padding:2px {right}px 2px {left}px;border-radius:3px">{text}</span>')


def _html_legend(scale: float, caption: str | None = None) -> str:
    gradient = "linear-gradient(to right, rgb{}, rgb{}, rgb{})".format(BLUE, WHITE, RED)
    bar = (f'<div class="masklrp-legend" style="display:inline-grid;grid-template-columns:1fr 1fr 1fr;'
           f'width:160px;font-size:12px;line-height:1.5;color:#555;vertical-align:top">'
           f'<div style="grid-column:1 / 4;height:10px;border:1px solid #bbb;border-radius:2px;'
           f'background:{gradient}"></div>'
           f'<span style="text-align:left">{_number(-scale)}</span>'
           f'<span style="text-align:center">0</span>'
           f'<span style="text-align:right">{_number(scale)}</span></div>')
    if caption:
        bar += f'<span style="margin-left:12px;font-size:12px;color:#555;vertical-align:top">{caption}</span>'
    return bar


def document(explanations, **kw) -> str:
    """A standalone HTML page (utf-8) around :func:`to_html` (same keywords)."""
    body = to_html(explanations, **kw)
    name = html.escape(kw.get("title") or "masklrp heatmap")
    return ('<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<title>{name}</title>\n</head>\n<body style="margin:24px;background:#fff">\n'
            f'{body}\n</body>\n</html>\n')


# ----------------------------------------------------------------------------- matplotlib
def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(f"heatmap figures need matplotlib: pip install 'masklrp[viz]' ({e})") from e
    return plt


def _text_widths(texts: list[str], size: float = FONT, weight: str = "normal") -> list[float]:
    """Widths in points, measured by the renderer that draws the text (no figure needed)."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    renderer, prop = RendererAgg(1, 1, 72), FontProperties(size=size, weight=weight)
    return [renderer.get_text_width_height_descent(t, prop, ismath=False)[0] for t in texts]


def _wrap(items: list[_Item], widths: list[float], avail: float) -> tuple[list[tuple[float, int]], int]:
    """Greedy line filling: (x, line) per box and the number of lines."""
    x, line, placed = 0.0, 0, []
    for item, w in zip(items, widths):
        gap = 0.0 if x == 0 else (WORD_GAP if item.space else PIECE_GAP)
        if x > 0 and x + gap + w > avail:
            x, line, gap = 0.0, line + 1, 0.0
        placed.append((x + gap, line))
        x += gap + w
        if item.newline:
            x, line = 0.0, line + 1
    return placed, 1 + max((ln for _, ln in placed), default=0)


def plot(explanations, *, merge_words: bool = False, show_special: bool = False, scale="row",
         title: str | None = None, ax=None, width: float = 8.0):
    """The heatmap as a matplotlib Figure: tokens as coloured boxes wrapped to lines, row
    labels, and a colour bar (one per row when each row has its own scale).

    Without ``ax`` the figure is ``width`` inches wide and as tall as its content, made with
    pyplot like ``plt.subplots``: in a notebook end the line with ``;`` (or assign it), or it
    shows twice. With ``ax``, draws into that axes (its width sets the wrapping; give it room
    for the content) and returns its figure. Text never goes through LaTeX or mathtext.
    """
    plt = _pyplot()
    rows = _rows(explanations, merge_words, show_special, scale)
    title = _title(title)
    if ax is None:
        if isinstance(width, (bool, np.bool_)) or not isinstance(width, numbers.Real):
            raise TypeError(f"width must be a number of inches, got {type(width).__name__}")
        if not (math.isfinite(width) and width > 0):
            raise ValueError(f"width must be a positive number of inches, got {width!r}")
        total_w, avail_h = 72.0 * width, 0.0
    else:
        box = ax.get_position()
        total_w, avail_h = 72.0 * box.width * ax.figure.get_figwidth(), 72.0 * box.height * ax.figure.get_figheight()
    layout = _Layout(rows, title, _per_row_legend(rows, scale), total_w - 2 * MARGIN)
    if ax is None:  # as tall as the content and, for a short text, only as wide
        total_w, avail_h = layout.width + 2 * MARGIN, layout.height + 2 * MARGIN
        fig = plt.figure(figsize=(total_w / 72.0, avail_h / 72.0), facecolor="white")
        ax = fig.add_axes((0, 0, 1, 1))
    layout.draw(ax)
    ax.set_axis_off()
    ax.set_autoscale_on(False)
    ax.set_xlim(-MARGIN, total_w - MARGIN)
    ax.set_ylim(max(layout.height + MARGIN, avail_h - MARGIN), -MARGIN)  # y grows downwards, in points
    return ax.figure


class _Layout:
    """Where everything goes, in points from the top left; then drawn into one axes."""

    def __init__(self, rows: list[_Row], title: str | None, per_row: bool, total_w: float):
        self.rows, self.title, self.per_row = rows, title, per_row
        labels = [r.label for r in rows if r.label is not None]
        self.label_w = max(_text_widths(labels, weight="bold"), default=-12.0) + 12.0
        self.text_x = self.label_w
        self.text_w = total_w - self.label_w - (ROW_LEGEND_W + 12.0 if per_row else 0.0)
        if self.text_w < 4 * FONT:
            raise ValueError(f"width: {total_w / 72:.3g} in leaves {self.text_w / 72:.2g} in for the tokens")
        y = 1.9 * FONT if title else 0.0
        self.placed, self.tops = [], []
        for row in rows:
            pads = [tuple(PIECE_PAD + p * (BOX_PAD - PIECE_PAD) for p in _pads(row.items, k))
                    for k in range(len(row.items))]
            widths = [w + left + right for w, (left, right) in zip(_text_widths([i.text for i in row.items]), pads)]
            placed, n_lines = _wrap(row.items, widths, self.text_w)
            self.placed.append([(x, ln, w, left) for (x, ln), w, (left, _) in zip(placed, widths, pads)])
            self.tops.append(y)
            y += n_lines * LINE + ROW_GAP
        # legends and separators end where the widest line does, not at the page's edge
        self.text_w = max((x + w for row in self.placed for x, _, w, _ in row), default=self.text_w)
        self.legend_y = y
        self.height = y + (0.0 if per_row else 2.4 * FONT)
        self.width = self._width(total_w)

    def _width(self, total_w: float) -> float:
        """The content's width: the widest line, the legends, the title (up to total_w)."""
        right = self.text_x + self.text_w + (12.0 + ROW_LEGEND_W if self.per_row else 0.0)
        if not self.per_row:
            right = max(right, self.text_x + LEGEND_W + 12.0 + _text_widths([CAPTION], LEGEND_FONT)[0])
        if any(not r.items for r in self.rows):
            right = max(right, self.text_x + _text_widths(["(no tokens)"])[0])
        title = _text_widths([self.title], TITLE_FONT, "bold")[0] if self.title else 0.0
        return max(right, min(title, total_w))

    def draw(self, ax) -> None:
        if self.title:
            _text(ax, 0, 1.2 * FONT, self.title, size=TITLE_FONT, weight="bold")
        for k, (row, placed, top) in enumerate(zip(self.rows, self.placed, self.tops)):
            if k:
                ax.plot([0, self.text_x + self.text_w], [top - ROW_GAP / 2] * 2, color="#e0e0e0", lw=0.6)
            if row.label is not None:
                _text(ax, 0, top + _baseline(), row.label, weight="bold")
            if not row.items:
                _text(ax, self.text_x, top + _baseline(), "(no tokens)", color=GREY)
            for item, (x, line, w, left) in zip(row.items, placed):
                _box(ax, self.text_x + x, top + line * LINE, w, left, item, row.scale)
            if self.per_row:
                _legend(ax, self.text_x + self.text_w + 12.0, top + 3.0, ROW_LEGEND_W, row.scale, small=True)
        if not self.per_row:
            _legend(ax, self.text_x, self.legend_y + 2.0, LEGEND_W, self.rows[0].scale, small=False)


def _baseline() -> float:
    """Text baseline below a line's top: centres the font's ascent (0.76 em in DejaVu Sans)
    and descent (0.24 em) in the box."""
    return LINE / 2 + (0.76 - 0.5) * FONT


def _text(ax, x, y, s, *, size=FONT, **kw):
    # usetex / parse_math off: tokens such as "$" or "\\" are literal text, whatever the rcParams
    return ax.text(x, y, s, fontsize=size, va="baseline", ha=kw.pop("ha", "left"), usetex=False,
                   parse_math=False, **kw)


def _box(ax, x: float, line_top: float, w: float, left: float, item: _Item, scale: float) -> None:
    from matplotlib.patches import FancyBboxPatch

    if item.special:
        _text(ax, x + left, line_top + _baseline(), item.text, color=GREY)
        return
    colour = tuple(c / 255 for c in _rgb(item.score, scale))
    ax.add_patch(FancyBboxPatch((x, line_top + (LINE - BOX_H) / 2), w, BOX_H, linewidth=0,
                                boxstyle="round,pad=0,rounding_size=2.5", facecolor=colour))
    _text(ax, x + left, line_top + _baseline(), item.text, color=_ink(item.score, scale))


def _legend(ax, x: float, y: float, w: float, scale: float, *, small: bool) -> None:
    """A colour bar from −scale to +scale with its numbers (and, full size, the caption)."""
    from matplotlib.patches import Rectangle

    h, size = (6.0, 7.5) if small else (8.0, LEGEND_FONT)
    ramp = np.array([_rgb(v, 1.0) for v in np.linspace(-1, 1, 257)], dtype=np.uint8)[None]
    ax.imshow(ramp, extent=(x, x + w, y + h, y), aspect="auto", interpolation="nearest")
    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="#9a9a9a", linewidth=0.5))
    numbers_y = y + h + 1.1 * size
    for dx, s, ha in ((0, _number(-scale), "left"), (w / 2, "0", "center"), (w, _number(scale), "right")):
        _text(ax, x + dx, numbers_y, s, size=size, ha=ha, color="#555555")
    if not small:
        _text(ax, x + w + 12.0, y + h, CAPTION, size=size, color="#555555")


# ----------------------------------------------------------------------------- files
def save(explanations, path: str | os.PathLike, **kw) -> Path:
    """Write the heatmap to ``path``, by its suffix: ``.html`` / ``.htm`` a :func:`document`
    page; ``.png``, ``.pdf``, ``.svg`` a :func:`plot` figure (dpi 150, tight bounding box).
    ``kw`` go to that function. Returns the path written."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in HTML_SUFFIXES + IMAGE_SUFFIXES:
        raise ValueError(f"path: unknown suffix {path.suffix!r} in {str(path)!r}; expected one of "
                         f"{HTML_SUFFIXES + IMAGE_SUFFIXES}")
    with replacing(path) as tmp:
        if suffix in HTML_SUFFIXES:
            tmp.write_text(document(explanations, **kw), encoding="utf-8")
        else:
            fig = plot(explanations, **kw)
            try:
                fig.savefig(tmp, dpi=150, bbox_inches="tight", facecolor="white")
            finally:
                if kw.get("ax") is None:  # our figure: do not leave it open in pyplot
                    _pyplot().close(fig)
    return path
