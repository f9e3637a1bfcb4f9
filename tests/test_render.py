"""The heatmap page as a person sees it: heatmap.document() rendered by headless Chromium.

tests/test_heatmap.py checks the HTML's text; this checks the pixels. Explanations are built
by hand with known scores (full-intensity tokens of one width), so what must appear is exact:
full RED boxes and full BLUE boxes in the ratio of positive to negative tokens, nothing for a
zero score or a hidden special token, and a colour bar running blue → white → red with its
numbers under it. Needs the ``chromium`` binary (Debian package ``chromium``); skipped, saying
so, without it.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

import masklrp
from masklrp import heatmap
from masklrp.explain import Explanation

RED, BLUE = np.array(heatmap.RED), np.array(heatmap.BLUE)
TIMEOUT_S = 90


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium binary on PATH (apt-get install chromium) to render the heatmap page")


def render(chromium: str, page: str, folder: Path, size=(900, 400)) -> np.ndarray:
    """A screenshot of ``page`` (HTML text) as (H, W, 3) uint8 RGB."""
    pytest.importorskip("matplotlib", reason="reading the screenshot uses matplotlib.image")
    import matplotlib.image

    html_path, png_path = folder / "page.html", folder / "page.png"
    html_path.write_text(page, encoding="utf-8")
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", "--force-device-scale-factor=1", "--force-color-profile=srgb",
               f"--user-data-dir={folder / 'profile'}", f"--window-size={size[0]},{size[1]}",
               f"--screenshot={png_path}", html_path.as_uri()]
    # its own session, so a hung browser and its helper processes can all be stopped
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        log, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"chromium did not render the page within {TIMEOUT_S} s")
    assert png_path.is_file(), f"chromium wrote no screenshot (exit {process.returncode}):\n{log.decode()[-2000:]}"
    image = matplotlib.image.imread(png_path)[..., :3]
    return np.rint(image * 255).astype(np.int64)


def near(image: np.ndarray, colour, tol: int = 3) -> np.ndarray:
    return np.abs(image - np.asarray(colour)).max(axis=-1) <= tol


def legend_rows(image: np.ndarray) -> list[np.ndarray]:
    """The row indices of each colour bar: rows holding a run of >= 100 pixels that changes
    smoothly (no step over 8 per channel) from BLUE to RED. Token boxes are flat colours
    with sharp edges and text, so they never make such a run."""
    rows = [y for y, row in enumerate(image) if _has_ramp(row)]
    rows = np.asarray(rows, dtype=np.int64)
    return [run for run in np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1) if len(run)]


def _has_ramp(row: np.ndarray) -> bool:
    smooth = np.concatenate([[False], np.abs(np.diff(row, axis=0)).max(axis=-1) <= 8, [False]])
    edges = np.flatnonzero(np.diff(smooth.astype(np.int8)))
    for start, stop in zip(edges[::2], edges[1::2]):   # smooth steps start..stop-1 join pixels start..stop
        if stop - start >= 100 and near(row[start], BLUE, 12) and near(row[stop], RED, 12):
            return True
    return False


def explanation(tokens, scores, special, method="attnlrp") -> Explanation:
    return Explanation(tokens=tokens, scores=np.asarray(scores, np.float32), target=1, logit=1.0,
                       method=method, input_ids=np.arange(len(tokens)), special=np.asarray(special, bool))


def test_page_shows_the_scores(chromium, tmp_path):
    # 3 tokens for the output, 1 against, 1 at zero; the specials' ±5 must neither show nor scale
    e = explanation(["[CLS]", "word", "word", "word", "word", "word", "[SEP]"],
                    [5.0, 1.0, 1.0, -1.0, 1.0, 0.0, -5.0], [1, 0, 0, 0, 0, 0, 1])
    image = render(chromium, heatmap.document(e, title="Known scores"), tmp_path)
    ink = np.abs(image - 255).max(axis=-1) > 40
    assert ink.mean() > 0.01, "the page is blank"

    [bar] = legend_rows(image)
    tokens = image[:bar[0]]                               # everything above the colour bar
    red, blue = near(tokens, RED).sum(), near(tokens, BLUE).sum()
    assert red > 1500 and blue > 500, (red, blue)         # boxes, not stray anti-aliasing
    assert abs(red / blue - 3) < 0.3, f"red/blue pixels {red}/{blue}: expected 3 boxes to 1"

    # the colour bar: blue at its left, white in the middle, red at its right
    row = image[bar[len(bar) // 2]]
    x_blue, x_red = np.flatnonzero(near(row, BLUE, 12)), np.flatnonzero(near(row, RED, 12))
    assert len(x_blue) and len(x_red) and x_blue.max() < x_red.min()
    middle = row[(x_blue.max() + x_red.min()) // 2]
    assert np.abs(middle - 255).max() <= 12, middle
    # and its numbers: dark text under both ends and the middle
    below = image[bar[-1] + 2: bar[-1] + 24]
    for x in (x_blue.min() + 8, (x_blue.max() + x_red.min()) // 2, x_red.max() - 8):
        assert (np.abs(below[:, max(x - 12, 0): x + 12] - 255).max(axis=-1) > 80).any(), x

    # text on a full-colour box is white: light pixels inside the first red box (the box's
    # columns: those with red in them; its corners, rounded, are cut off)
    columns = np.flatnonzero(near(tokens, RED).any(axis=0))
    box = columns[: np.argmax(np.diff(columns) > 1)] if (np.diff(columns) > 1).any() else columns
    ys = np.flatnonzero(near(tokens[:, box], RED).any(axis=1))
    inside = tokens[ys.min() + 3: ys.max() - 2, box.min() + 3: box.max() - 2]
    assert near(inside, (255, 255, 255), 40).sum() > 30, "no white text on the red box"


def test_rows_render_with_a_legend_each(chromium, tmp_path):
    pos = explanation(["good"] * 2, [1.0, 1.0], [0, 0], method="attnlrp")
    neg = explanation(["bad"] * 2, [-2.0, -2.0], [0, 0], method="gae")
    image = render(chromium, heatmap.document({"AttnLRP": pos, "GAE": neg}), tmp_path)
    bars = legend_rows(image)
    assert len(bars) == 2
    first, second = np.flatnonzero(near(image, RED).any(axis=1)), np.flatnonzero(near(image, BLUE).any(axis=1))
    # the first row's boxes are red and above the second row's blue boxes (legend ends aside)
    first = first[~np.isin(first, np.concatenate(bars))]
    second = second[~np.isin(second, np.concatenate(bars))]
    assert len(first) and len(second) and first.max() < second.min()


def test_real_explanation_page(chromium, minilm_dir, tmp_path):
    model = masklrp.load(minilm_dir)
    e = masklrp.attnlrp(model, "a gripping, funny and touching film that never drags", target=0)
    image = render(chromium, heatmap.document(e, title="AttnLRP on all-MiniLM-L6-v2"), tmp_path)
    [bar] = legend_rows(image)
    tokens = image[:bar[0]]
    # the largest |score| sets the scale, so one token is at full intensity of its sign
    strongest = RED if e.scores[~e.special].max() >= -e.scores[~e.special].min() else BLUE
    assert near(tokens, strongest).sum() > 200
    coloured = (np.abs(tokens - 255).max(axis=-1) > 20) & ~near(tokens, (26, 26, 26), 60)
    assert coloured.sum() > 2000                                   # many boxes, not one
    out = os.environ.get("MASKLRP_RENDER_OUT")
    if out:  # for a person to look at
        shutil.copy(tmp_path / "page.png", out)


def test_generation_page(chromium, tmp_path):
    """The matrix (full RED and BLUE cells, blanks where a token cannot see) and exactly one
    prompt heatmap, the first answer token's, until the selector picks another."""
    from masklrp import generation_heatmap
    from masklrp.generation import GenerationExplanation

    g = GenerationExplanation(prompt_ids=np.array([1, 2, 3]), answer_ids=np.array([4, 5]),
                              tokens=["alpha", "beta", "gamma", "delta", "eps"],
                              relevance=np.array([[1.0, -1.0, 0.0, 0.0, 0.0], [1.0, 0.0, -1.0, 1.0, 0.0]], np.float32),
                              logits=np.array([2.0, 3.0], np.float32), method="attnlrp")
    image = render(chromium, generation_heatmap.document(g), tmp_path, size=(900, 500))
    cell = generation_heatmap.CELL
    red, blue = near(image, RED), near(image, BLUE)
    # matrix: 3 red and 2 blue cells; the first token's heatmap: 1 red, 1 blue box (and legend ends)
    assert red.sum() >= 3 * cell * cell and blue.sum() >= 2 * cell * cell
    assert near(image, (0xf4, 0xf4, 0xf4), 1).sum() >= 3 * (cell - 2) * (cell - 2)  # the 3 blanks
    assert len(legend_rows(image)) == 1, "one prompt heatmap shows"
