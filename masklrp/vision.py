"""Vision transformers (ViT): an image classifier's decision explained per patch and per pixel.

>>> model = masklrp.load(ViTForImageClassification.from_pretrained(name))  # or a folder
>>> e = masklrp.explain_image(model, image, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
>>> e.save("heatmap.png")            # or display e in a notebook

The engine runs ViT as a pre-norm, non-causal transformer over [CLS] and the patches; the
patch embedding, a Conv2d whose kernel and stride are both the patch size, is a linear map of
each flattened patch, computed here (``patch.weight`` of the export) and handed to the engine
as its ``embeds``. Relevance (DESIGN.md §2): a patch's is its embedding row's ``Σ_d e ⊙ g``
(the engine's ``tokens``; the conv bias is part of that row), [CLS]'s and the position
embeddings' are reported apart. Per pixel, the linear rule crosses the patch embedding back to
the image: ``x ⊙ (Wᵀ g)``, gradient × input at the pixel values the model reads (after the
normalisation), so each patch's pixels sum to its relevance less the bias's share ``b · g``.

Input: one image ``(H, W, channels)``, ``H = W = image_size`` (no resizing here), uint8
(scaled by 1/255) or floats taken as they are (usually in [0, 1]); then, given ``mean`` and
``std`` (the image processor's ``image_mean`` / ``image_std``, e.g. 0.5 for the original ViT
checkpoints), ``(x - mean) / std`` per channel, as HF's ViTImageProcessor does.
"""
from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .explain import METHODS, seed_for
from .model import Inputs, Model


def _vision_spec(model: Model):
    if not isinstance(model, Model):
        raise TypeError(f"model must be a masklrp.Model, got {type(model).__name__}")
    if not model.spec.patch_size:
        raise ValueError(f"model {model.spec.architecture} is not a vision model (no patch_size)")
    return model.spec


def pixel_values(model: Model, image, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> np.ndarray:
    """One image ``(S, S, channels)`` -> the model's input ``(channels, S, S)`` float32 (module
    docstring: uint8 / 255, then ``(x - mean) / std`` when given)."""
    s = _vision_spec(model)
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        image = np.asarray(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array (height, width, channels), got "
                        f"{type(image).__name__}")
    if image.dtype == np.uint8:
        x = image.astype(np.float32) / 255.0
    elif np.issubdtype(image.dtype, np.floating):
        x = image.astype(np.float32)
    else:
        raise TypeError(f"image must have dtype uint8 or a float dtype, got {image.dtype}")
    want = (s.image_size, s.image_size, s.num_channels)
    if x.shape != want:
        raise ValueError(f"image must have shape {want} (image_size x image_size x channels; "
                         f"resize it first), got {image.shape}")
    if not np.isfinite(x).all():
        raise ValueError("image must be finite (found NaN or inf)")
    for name, value in (("mean", mean), ("std", std)):
        if value is not None:
            v = np.asarray(value, dtype=np.float32).reshape(-1)
            if v.size not in (1, s.num_channels) or not np.isfinite(v).all() or (
                    name == "std" and (v <= 0).any()):
                raise ValueError(f"{name} must be one finite number or one per channel "
                                 f"({s.num_channels}){', all > 0' if name == 'std' else ''}, "
                                 f"got {value!r}")
            x = x - v if name == "mean" else x / v
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def _patches(spec, pixels: np.ndarray) -> np.ndarray:
    """(B, ch, S, S) -> (B, N, ch·p·p): each patch flattened as the conv weight is, in
    row-major patch order (HF's ``flatten(2).transpose(1, 2)``)."""
    B, ch, S, p = len(pixels), spec.num_channels, spec.image_size, spec.patch_size
    g = S // p
    return pixels.reshape(B, ch, g, p, g, p).transpose(0, 2, 4, 1, 3, 5).reshape(B, g * g, ch * p * p)


def _unpatch(spec, rows: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_patches`: (B, N, ch·p·p) -> (B, ch, S, S)."""
    B, ch, S, p = len(rows), spec.num_channels, spec.image_size, spec.patch_size
    g = S // p
    return rows.reshape(B, g, g, ch, p, p).transpose(0, 3, 1, 4, 2, 5).reshape(B, ch, S, S)


def _pixel_batch(spec, pixels) -> np.ndarray:
    if not isinstance(pixels, np.ndarray) or not np.issubdtype(pixels.dtype, np.floating):
        raise TypeError(f"pixel_values must be a float numpy array, got "
                        f"{getattr(pixels, 'dtype', type(pixels).__name__)}")
    want = (spec.num_channels, spec.image_size, spec.image_size)
    if pixels.ndim != 4 or pixels.shape[1:] != want or not len(pixels):
        raise ValueError(f"pixel_values must have shape (batch, {', '.join(map(str, want))}), "
                         f"got {pixels.shape}")
    return np.ascontiguousarray(pixels, dtype=np.float32)


def patch_embeddings(model: Model, pixels: np.ndarray) -> np.ndarray:
    """pixel_values (B, ch, S, S) -> the engine's ``embeds`` (B, T, C): [CLS], then each
    patch's ``W x + b`` (the Conv2d of kernel = stride = patch size)."""
    s = _vision_spec(model)
    pixels = _pixel_batch(s, pixels)
    w, b = model.weights["patch.weight"], model.weights.get("patch.bias")
    rows = _patches(s, pixels) @ w.T
    if b is not None:
        rows += b
    cls = np.broadcast_to(model.weights["embed.word"], (len(pixels), 1, s.hidden))
    return np.ascontiguousarray(np.concatenate([cls, rows], axis=1), dtype=np.float32)


def image_inputs(model: Model, batch: int) -> Inputs:
    """The token arrays of ``batch`` images: ids 0 (the one-row table is [CLS], read in place of
    the patches' rows only through ``embeds``), every position real, positions 0..T-1."""
    s = _vision_spec(model)
    return model.prepare(np.zeros((batch, s.max_positions), dtype=np.int64))


def classify(model: Model, pixels: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """Logits (B, NO) of pixel_values (B, ch, S, S), HF's ``pixel_values`` layout."""
    embeds = patch_embeddings(model, pixels)
    return model.forward(image_inputs(model, len(embeds)), embeds=embeds, threads=threads)["logits"]


def image_relevance(model: Model, pixels: np.ndarray, stream: str = "attnlrp", seed=None, *,
                    threads: int | None = None) -> dict[str, np.ndarray]:
    """One forward and one ``stream`` sweep ("attnlrp", "cp", "gradient") over pixel_values
    (B, ch, S, S) from ``seed`` (B, NO) (default: one-hot on each row's argmax).

    Returns ``logits`` (B, NO), ``patches`` (B, N) relevance of each patch's embedding row,
    ``cls`` (B,), ``positions`` (B, T) of the position embeddings, ``embed_grad`` (B, T, C)
    g at the embeddings, ``pixel_grad`` (B, ch, S, S) ``Wᵀ g`` and ``pixels`` ``x ⊙ Wᵀ g``.
    """
    s = _vision_spec(model)
    embeds = patch_embeddings(model, pixels)
    out = model.run(image_inputs(model, len(embeds)), seed, stream, embeds=embeds, threads=threads)
    r = out[stream]
    grad = _unpatch(s, r["embed_grad"][:, 1:] @ model.weights["patch.weight"])
    x = _pixel_batch(s, pixels)
    return {"logits": out["logits"], "patches": r["tokens"][:, 1:], "cls": r["tokens"][:, 0],
            "positions": r["positions"], "embed_grad": r["embed_grad"], "pixel_grad": grad,
            "pixels": x * grad}


@dataclass
class ImageExplanation:
    """Relevance of one image for one output (module docstring).

    ``image`` (S, S, ch) as given, scaled to [0, 1] for display; ``pixels`` (ch, S, S)
    relevance of each pixel value the model read; ``patches`` (S/p, S/p) of each patch
    embedding; ``cls`` of the [CLS] token; ``positions`` (T,) of the position embeddings
    ([CLS] first); ``logits`` (NO,); ``target`` the explained output and ``label`` its name.
    """

    image: np.ndarray
    pixels: np.ndarray
    patches: np.ndarray
    cls: float
    positions: np.ndarray
    logits: np.ndarray
    target: int
    label: str
    method: str
    patch_size: int

    @property
    def pixel_map(self) -> np.ndarray:
        """(S, S): each pixel's relevance summed over its channels."""
        return self.pixels.sum(axis=0)

    def plot(self, *, kind: str = "pixels", ax=None):
        """A matplotlib Figure: the image with its patch grid beside the relevance map
        (``kind`` "pixels" or "patches"), red for the explained output, blue against, centred at
        0. With ``ax`` (two Axes), draws into them."""
        if kind not in ("pixels", "patches"):
            raise ValueError(f"kind must be 'pixels' or 'patches', got {kind!r}")
        from .heatmap import _pyplot

        plt = _pyplot()
        if ax is None:
            fig, ax = plt.subplots(1, 2, figsize=(8, 4))
        left, right = ax
        p = self.patch_size
        values = self.pixel_map if kind == "pixels" else np.kron(self.patches, np.ones((p, p)))
        peak = float(np.abs(values).max()) or 1.0
        image = self.image if self.image.shape[2] == 3 else self.image.mean(axis=2)
        left.imshow(image, cmap=None if image.ndim == 3 else "gray", vmin=0, vmax=1)
        left.set_title(f"{self.label} ({self.logits[self.target]:.3g})")
        right.imshow(values, cmap="bwr", vmin=-peak, vmax=peak)
        right.set_title(f"{self.method}: {kind}")
        side = self.image.shape[0]
        for a in (left, right):
            for edge in range(p, side, p):
                a.axhline(edge - 0.5, color="black", linewidth=0.3, alpha=0.4)
                a.axvline(edge - 0.5, color="black", linewidth=0.3, alpha=0.4)
            a.set_xticks([])
            a.set_yticks([])
        return left.figure

    def png(self, **kw) -> bytes:
        """The :meth:`plot` figure as PNG bytes."""
        from .heatmap import _pyplot

        fig = self.plot(**kw)
        buffer = io.BytesIO()
        try:
            fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", facecolor="white")
        finally:
            if kw.get("ax") is None:  # our figure: do not leave it open in pyplot
                _pyplot().close(fig)
        return buffer.getvalue()

    def save(self, path: str | os.PathLike, **kw) -> Path:
        """Write the figure to ``path``: ``.png`` (or ``.pdf``, ``.svg``), or ``.html`` (the PNG
        embedded). Returns the path."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in (".html", ".htm"):
            path.write_text(f"<!DOCTYPE html>\n<html><body>{self._repr_html_()}</body></html>\n",
                            encoding="utf-8")
        elif suffix in (".png", ".pdf", ".svg"):
            from .heatmap import _pyplot

            fig = self.plot(**kw)
            try:
                fig.savefig(path, dpi=150, bbox_inches="tight", facecolor="white")
            finally:
                if kw.get("ax") is None:
                    _pyplot().close(fig)
        else:
            raise ValueError(f"path: unknown suffix {path.suffix!r}; expected .png, .pdf, .svg "
                             "or .html")
        return path

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.png()).decode("ascii")
        return f'<img alt="relevance of {self.method}" src="data:image/png;base64,{data}">'


def explain_image(model: Model, image, target: int | str | None = None, method: str = "attnlrp", *,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  threads: int | None = None) -> ImageExplanation:
    """Explain ``model``'s output ``target`` (default: its predicted class) for one ``image``
    (S, S, channels) uint8 or float (module docstring for the preprocessing) with ``method``
    "attnlrp" or "cp-lrp"."""
    s = _vision_spec(model)
    if method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}")
    x = pixel_values(model, image, mean, std)[None]
    # a given target (an index or a label name) is seeded as for text; None: the engine's argmax
    seed = None if target is None else seed_for(model, None, (1, s.n_outputs), target)[0]
    r = image_relevance(model, x, METHODS[method], seed, threads=threads)
    logits = r["logits"][0]
    target = int(np.argmax(logits)) if seed is None else int(np.argmax(seed[0]))
    g = s.image_size // s.patch_size
    shown = np.asarray(image, dtype=np.float32) / (255.0 if np.asarray(image).dtype == np.uint8 else 1.0)
    return ImageExplanation(
        image=np.clip(shown, 0.0, 1.0), pixels=r["pixels"][0], patches=r["patches"][0].reshape(g, g),
        cls=float(r["cls"][0]), positions=r["positions"][0], logits=logits, target=target,
        label=s.labels[target] if target < len(s.labels) else str(target), method=method,
        patch_size=s.patch_size)
