"""Views of a :class:`~masklrp.generation.GenerationExplanation`: HTML and matplotlib.

* The **matrix**: one row per answer token (y), one column per token before it, prompt then
  answer (x). Each row has its own scale (its largest |relevance|: the explained logits
  differ from token to token), coloured as :mod:`masklrp.heatmap` colours tokens; cells a
  token cannot see (itself and after) are blank, its own column outlined.
* Per answer token, the **prompt heatmap** of :mod:`masklrp.heatmap` over everything
  before it. The standalone HTML page shows one at a time, picked with a selector (or by
  clicking a row of the matrix): a few lines of plain JavaScript in the page itself, no
  network. Without JavaScript the first token's heatmap shows.

:func:`to_html` and :func:`document` need no matplotlib; :func:`plot` and :func:`save` to an
image do.
"""
from __future__ import annotations

import html
import itertools
import os
from pathlib import Path

import numpy as np

from . import heatmap
from ._files import replacing
from .generation import GenerationExplanation

__all__ = ["document", "plot", "save", "to_html"]

CELL = 16           # px: a matrix cell's side
BLANK = "#f4f4f4"   # cells at and after the explained token
_ids = itertools.count()  # element ids that tie a page's selector to its heatmaps


def _checked(g) -> GenerationExplanation:
    if not isinstance(g, GenerationExplanation):
        raise TypeError(f"g must be a masklrp GenerationExplanation, got {type(g).__name__}")
    return g


def _title(g: GenerationExplanation) -> str:
    how = "given answer" if g.teacher_forced else "generated answer"
    seed = ", contrastive" if g.contrastive else ""
    return f"{g.method}{seed}: relevance of each earlier token for each token of the {how}"


def _texts(g: GenerationExplanation) -> list[str]:
    """Every token as shown (decoded, word-start markers dropped)."""
    return heatmap.texts(g.tokens, g.special)


def _row_scales(g: GenerationExplanation) -> np.ndarray:
    peaks = np.nanmax(np.abs(g.masked()), axis=1)
    return np.where(peaks > 0, peaks, 1.0)


def to_html(g: GenerationExplanation, *, title: str | None = None) -> str:
    """An HTML fragment: the matrix, then a selector and each answer token's prompt heatmap
    (inline styles; the script only switches which heatmap shows). Every token is escaped."""
    g = _checked(g)
    title = _title(g) if title is None else heatmap._title(title)
    texts, scales = _texts(g), _row_scales(g)
    n, width = g.relevance.shape
    uid = f"masklrp-gen-{next(_ids)}"
    out = [f'<div class="masklrp-generation" id="{uid}" style="font-family:{heatmap._HTML_FONT};font-size:14px;'
           f'color:{heatmap.INK};background:#fff;padding:6px 2px">']
    if title:
        out.append(f'<div style="font-weight:600;margin-bottom:8px">{html.escape(title)}</div>')
    # the matrix: a grid of fixed cells, labels of the answer tokens on the left
    out.append(f'<div style="overflow-x:auto"><div style="display:grid;grid-template-columns:max-content '
               f'repeat({width},{CELL}px);grid-template-rows:max-content;grid-auto-rows:{CELL}px;gap:1px">')
    out.append("<div></div>")  # above the row labels
    for j, text in enumerate(texts):  # column heads, written upwards
        answer = j >= g.n_prompt
        out.append(f'<div title="{html.escape(text)}" style="grid-row:1;writing-mode:vertical-rl;transform:rotate(180deg);'
                   f'font-size:11px;white-space:nowrap;{"font-weight:600;" if answer else ""}'
                   f'line-height:{CELL}px;padding-top:4px">'
                   f'{html.escape(text)}</div>')
    for i in range(n):
        out.append(f'<div data-step="{i}" title="answer token {i}: logit {g.logits[i]:.4g}" '
                   f'style="cursor:pointer;font-size:12px;padding-right:6px;white-space:nowrap;'
                   f'line-height:{CELL}px;text-align:right">{html.escape(texts[g.n_prompt + i])}</div>')
        for j in range(width):
            own = j == g.n_prompt + i
            if j >= g.n_prompt + i:
                style = f"background:{BLANK}" + (";outline:1px solid #555;outline-offset:-1px" if own else "")
                out.append(f'<div style="{style}"></div>')
                continue
            score = float(g.relevance[i, j])
            r, gr, b = heatmap._rgb(score, scales[i])
            out.append(f'<div title="{html.escape(texts[j])}: {score:+.4g}" '
                       f'style="background:rgb({r},{gr},{b})"></div>')
    out.append("</div></div>")
    out.append(f'<div style="margin:6px 0 14px 0;font-size:12px;color:#555">each row scaled by its own '
               f'largest |relevance|; {heatmap.CAPTION}; blank: the token itself (outlined) and after</div>')
    # one prompt heatmap per answer token, the first shown
    out.append(f'<label style="font-weight:600">answer token <select id="{uid}-select">')
    for i in range(n):
        out.append(f'<option value="{i}">{i}: {html.escape(texts[g.n_prompt + i])}</option>')
    out.append("</select></label>")
    for i in range(n):
        step = g.step(i)
        hidden = "" if i == 0 else "display:none"
        out.append(f'<div data-step-view="{i}" style="{hidden}">'
                   f'{heatmap.to_html(step, show_special=True, title=_step_title(g, i, texts))}</div>')
    out.append(_SCRIPT.replace("UID", uid))
    out.append("</div>")
    return "".join(out)


def _step_title(g: GenerationExplanation, i: int, texts: list[str]) -> str:
    return f"→ {texts[g.n_prompt + i]!r} (answer token {i}, logit {g.logits[i]:.4g})"


# Shows the heatmap of the picked answer token; the matrix's row labels pick too.
_SCRIPT = """<script>(function () {
  var root = document.getElementById("UID"), select = document.getElementById("UID-select");
  function show(i) {
    select.value = String(i);
    var views = root.querySelectorAll("[data-step-view]");
    for (var k = 0; k < views.length; k++)
      views[k].style.display = views[k].getAttribute("data-step-view") === String(i) ? "" : "none";
  }
  select.addEventListener("change", function () { show(select.value); });
  var rows = root.querySelectorAll("[data-step]");
  for (var k = 0; k < rows.length; k++)
    rows[k].addEventListener("click", function () { show(this.getAttribute("data-step")); });
})();</script>"""


def document(g: GenerationExplanation, *, title: str | None = None) -> str:
    """A standalone HTML page (utf-8) around :func:`to_html`."""
    body = to_html(g, title=title)
    name = html.escape(title or "masklrp generation")
    return ('<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<title>{name}</title>\n</head>\n<body style="margin:24px;background:#fff">\n'
            f'{body}\n</body>\n</html>\n')


def plot(g: GenerationExplanation, *, title: str | None = None, ax=None):
    """The matrix as a matplotlib Figure: rows scaled by their own largest |relevance|
    (−1 blue … +1 red), blank where a token cannot see."""
    g = _checked(g)
    plt = heatmap._pyplot()
    from matplotlib.colors import LinearSegmentedColormap

    texts = _texts(g)
    n, width = g.relevance.shape
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.22 * width + 2.0), max(2.0, 0.28 * n + 1.6)))
    else:
        fig = ax.figure
    colours = [tuple(c / 255 for c in rgb) for rgb in (heatmap.BLUE, heatmap.WHITE, heatmap.RED)]
    cmap = LinearSegmentedColormap.from_list("masklrp", colours).with_extremes(bad=BLANK)
    image = ax.imshow(g.masked() / _row_scales(g)[:, None], cmap=cmap, vmin=-1, vmax=1, aspect="auto",
                      interpolation="nearest")
    ax.set_xticks(range(width), texts, rotation=90, fontsize=8)
    ax.set_yticks(range(n), texts[g.n_prompt:], fontsize=8)
    for label in ax.get_xticklabels()[g.n_prompt:]:
        label.set_fontweight("bold")
    ax.axvline(g.n_prompt - 0.5, color="#555555", linewidth=0.8)  # prompt | answer
    ax.set_xlabel("prompt and answer tokens")
    ax.set_ylabel("answer token explained")
    ax.set_title(_title(g) if title is None else heatmap._title(title) or "", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, label="relevance / row's largest |relevance|")
    return fig


def save(g: GenerationExplanation, path: str | os.PathLike, **kw) -> Path:
    """Write ``g`` to ``path`` by its suffix: ``.html`` / ``.htm`` a :func:`document` page;
    ``.png``, ``.pdf``, ``.svg`` a :func:`plot` figure. Returns the path written."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in heatmap.HTML_SUFFIXES + heatmap.IMAGE_SUFFIXES:
        raise ValueError(f"path: unknown suffix {path.suffix!r} in {str(path)!r}; expected one of "
                         f"{heatmap.HTML_SUFFIXES + heatmap.IMAGE_SUFFIXES}")
    with replacing(path) as tmp:
        if suffix in heatmap.HTML_SUFFIXES:
            tmp.write_text(document(_checked(g), **kw), encoding="utf-8")
        else:
            fig = plot(g, **kw)
            try:
                fig.savefig(tmp, dpi=150, bbox_inches="tight", facecolor="white")
            finally:
                if kw.get("ax") is None:
                    heatmap._pyplot().close(fig)
    return path
