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
