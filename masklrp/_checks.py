"""Argument checks shared by the Python layer: one wording for one mistake."""
from __future__ import annotations

import numpy as np


def positive_int(x, name: str) -> int:
    """``x`` as an int >= 1: TypeError naming ``name`` for a non-int (bools included),
    ValueError for a value below 1."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if x < 1:
        raise ValueError(f"{name} must be at least 1, got {x}")
    return int(x)


def fractions(x, name: str) -> tuple[float, ...]:
    """``x`` (a number or a sequence of them) as a non-empty tuple of floats in (0, 1]:
    ValueError naming ``name`` otherwise."""
    values = tuple(float(k) for k in np.atleast_1d(np.asarray(x, dtype=np.float64)))
    if not values or not all(0 < k <= 1 for k in values):
        raise ValueError(f"{name} must be fractions in (0, 1], got {x!r}")
    return values
