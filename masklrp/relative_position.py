"""MPNet's relative position bias, laid out for the engine: one column per key − query offset.

MPNet (like T5) adds to head h's score of query i and key j a learnt scalar
``table[bucket(j − i), h]``, the same in every layer. The bucket of an offset is its
sign (16 buckets each side) and, beyond 8, the log of its distance up to 128 (HF's
``MPNetEncoder.relative_position_bucket``, with the 32 buckets its
``compute_position_bias`` always uses). It depends on positions only through j − i, so
the engine reads ``bias[h, j − i + span − 1]`` from the (H, 2·span − 1) array made here.
The bias is a constant added to the scores: it receives no relevance (DESIGN.md §2).
"""
from __future__ import annotations

import math

import numpy as np

BUCKETS = 32          # HF's compute_position_bias default, used by every MPNet checkpoint
MAX_DISTANCE = 128


def buckets(offsets: np.ndarray, n_buckets: int = BUCKETS, max_distance: int = MAX_DISTANCE) -> np.ndarray:
    """The bucket of each offset j − i, computed in float32 as transformers does (the log's
    rounding decides the buckets at the log scale's edges; tests compare with transformers)."""
    n = -np.asarray(offsets, dtype=np.int64)
    half = n_buckets // 2
    result = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    exact = half // 2
    far = n >= exact
    scaled = np.log(n[far].astype(np.float32) / np.float32(exact)) / np.float32(math.log(max_distance / exact))
    large = np.zeros_like(n)
    large[far] = np.minimum(exact + (scaled * np.float32(half - exact)).astype(np.int64), half - 1)
    return result + np.where(far, large, n)


def bias_by_offset(table: np.ndarray, span: int) -> np.ndarray:
    """(H, 2·span − 1) float32: head h's bias at offset o in column o + span − 1, for
    sequences of up to ``span`` tokens. ``table``: the (buckets, H) embedding."""
    if table.ndim != 2 or table.shape[0] < BUCKETS:
        raise ValueError(f"relative_attention_bias must have shape (>= {BUCKETS}, n_heads), got {table.shape}")
    offsets = np.arange(1 - span, span)
    return np.ascontiguousarray(table[buckets(offsets)].T, dtype=np.float32)
