"""Argument checks shared by the Python layer: one wording for one mistake.

Each check takes the value and the name the user knows it by (``"max_offset"``,
``"config num_attention_heads"``, ``"texts[2]"``) and returns the value in the type the code
needs, or raises ``TypeError`` (wrong kind of value) / ``ValueError`` (right kind, bad value)
with a message that names it and says what was expected.
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


INT32_MAX = 2**31 - 1  # the C engine's sizes are ints


def integer(x, name: str, minimum: int | None = None, *, maximum: int | None = None,
            integral_floats: bool = False) -> int:
    """``x`` as an int in [``minimum``, ``maximum``]: TypeError naming ``name`` for a non-int
    (bools, strings, floats unless ``integral_floats`` and integral, e.g. a label read as
    ``1.0``), ValueError for a value out of range."""
    if isinstance(x, np.ndarray) and x.ndim == 0:
        x = x[()]
    if integral_floats and isinstance(x, (float, np.floating)) and not isinstance(x, bool):
        if not (math.isfinite(x) and float(x).is_integer()):
            raise ValueError(f"{name} must be a whole number, got {x!r}")
        x = int(x)
    if not _is_int(x):
        raise TypeError(f"{name} must be an int, got {type(x).__name__} {x!r}")
    if minimum is not None and x < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {x}")
    if maximum is not None and x > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {x}")
    return int(x)


def positive_int(x, name: str) -> int:
    """``x`` as an int >= 1: TypeError naming ``name`` for a non-int (bools included),
    ValueError for a value below 1."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if x < 1:
        raise ValueError(f"{name} must be at least 1, got {x}")
    return int(x)


_F32 = np.finfo(np.float32)


def number(x, name: str, *, positive: bool = False, float32: bool = False) -> float:
    """``x`` as a finite float (``> 0`` when ``positive``): TypeError naming ``name`` for a
    non-number (bools and strings included), ValueError for NaN, infinity or a bad sign.
    ``float32``: the engine computes with it in float32, where it must stay finite and, if
    positive, not round to 0 (an epsilon of 1e-50 would be 0 there)."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(x).__name__} {x!r}")
    value = float(x)
    if not math.isfinite(value) or (positive and not value > 0):
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}, got {x!r}")
    if float32 and not (abs(value) <= _F32.max and (not positive or value >= _F32.tiny)):
        raise ValueError(f"{name} must be representable in float32 "
                         f"({float(_F32.tiny):.3g} to {float(_F32.max):.3g}), got {x!r}")
    return value


def fractions(x, name: str) -> tuple[float, ...]:
    """``x`` (a number or a sequence of them) as a non-empty tuple of floats in (0, 1]:
    ValueError naming ``name`` otherwise."""
    values = tuple(float(k) for k in np.atleast_1d(np.asarray(x, dtype=np.float64)))
    if not values or not all(0 < k <= 1 for k in values):
        raise ValueError(f"{name} must be fractions in (0, 1], got {x!r}")
    return values


def text(x, name: str) -> str:
    """``x`` as a str that is valid Unicode (a lone surrogate cannot be tokenized)."""
    if not isinstance(x, str):
        raise TypeError(f"{name} must be a str, got {type(x).__name__}")
    try:
        x.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name} is not valid Unicode: a lone surrogate {x[e.start]!r} at "
                         f"character {e.start}") from None
    return x


def writable_file(path, name: str) -> Path:
    """``path`` as a file this process can create or replace: checked before any work, so
    that a long run never ends in an error about its output."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path, got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name}: {path} is a directory, expected a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{name}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{name}: {path} is not writable")
    return path


def nbytes(shape, itemsize: int) -> int:
    """Bytes of an array of ``shape`` (Python ints: no overflow)."""
    return math.prod(int(n) for n in shape) * int(itemsize)


@contextlib.contextmanager
def allocating(what: str, size: int) -> Iterator[None]:
    """Re-raise a MemoryError inside the block with the size and purpose of what it was
    allocating (NumPy's and the engine's own messages say neither)."""
    try:
        yield
    except MemoryError as e:
        raise MemoryError(f"out of memory: {_human(size)} for {what}") from e


def _human(size: int) -> str:
    value, unit = float(size), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.3g} {unit}"
