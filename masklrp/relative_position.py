"""MPNet's relative position bias, laid out for the engine: one column per key − query offset.

MPNet (like T5) adds to head h's score of query i and key j a learnt scalar
``table[bucket(j − i), h]``, the same in every layer. The bucket of an offset is its
sign (16 buckets each side) and, beyond 8, the log of its distance up to 128 (HF's
``MPNetEncoder.relative_position_bucket``, with the 32 buckets its
``compute_position_bias`` always uses). It depends on positions only through j − i, so
the engine reads ``bias[h, j − i + span − 1]`` from the (H, 2·span − 1) array made here.
The bias is a constant added to the scores: it receives no relevance (DESIGN.md §2).

DeBERTa-v2 instead adds learnt *activations*: its disentangled attention scores query i and
key j with q_i·pk_r and k_j·pq_r, pk / pq projections of row r = δ(i − j) of a relative
embedding table; :func:`deberta_index` lays δ out the same way, one column per offset.
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


def deberta_buckets(offsets: np.ndarray, bucket_size: int, max_position: int) -> np.ndarray:
    """DeBERTa-v2's relative position of query i to key j, offset o = i − j: o itself within
    ±bucket_size/2, log-spaced beyond (HF's ``make_log_bucket_position``, in float32 as it
    computes); o unchanged when bucket_size or max_position is not positive."""
    o = np.asarray(offsets, dtype=np.int64)
    if bucket_size <= 0 or max_position <= 0:
        return o
    mid = bucket_size // 2
    far = np.where((o < mid) & (o > -mid), mid - 1, np.abs(o))
    ratio = np.log(far.astype(np.float32) / np.float32(mid)) / np.log(np.float32((max_position - 1) / mid))
    log_pos = np.ceil(ratio * np.float32(mid - 1)) + np.float32(mid)
    return np.where(far <= mid, o, (log_pos * np.sign(o)).astype(np.int64))


def deberta_index(span: int, positions: int, bucket_size: int, max_position: int) -> np.ndarray:
    """(2·positions − 1,) float32: for offset o = i − j in column o + positions − 1, the row of
    DeBERTa's (2·span, C) relative embeddings that query i and key j read (c2p and p2c alike),
    clamp(bucket(o) + span, 0, 2·span − 1). Whole numbers, stored as float32 (exact below 2²⁴)
    because every engine weight is a float32 array."""
    offsets = np.arange(1 - positions, positions)
    rows = np.clip(deberta_buckets(offsets, bucket_size, max_position) + span, 0, 2 * span - 1)
    return rows.astype(np.float32)
