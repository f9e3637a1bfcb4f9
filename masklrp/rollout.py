"""Attention-map explanations of one sequence (DESIGN.md §3.2 and §4), in NumPy.

Every function sees one sequence's real tokens only (padding dropped): ``n`` tokens, ``L``
blocks, ``H`` heads. ``attentions`` A (L,H,n,n) (rows queries, columns keys), ``grad`` the
true gradient ∇A of the explained logit w.r.t. A, ``relevance`` R_A = A ⊙ g of a relevance
stream (masked or not), ``query`` (n,) the weights of the query rows the explanation reads
(:func:`query_weights`). Each returns ``(n,)`` float64 scores, one per key token.
"""
from __future__ import annotations

import numpy as np


def query_weights(pool: str, n: int, seed: np.ndarray | None = None) -> np.ndarray:
    """The rows of an (n, n) token-to-token map that explain the model's output.

    ``pool`` as in :class:`masklrp.spec.ModelSpec`: ``"first"`` the [CLS] / <s> row,
    ``"last"`` the last real row (causal LM, GPT-2 classification), ``"mean"`` the mean of
    the rows (sentence embeddings), ``"none"`` (QA) the seeded rows: the start row plus the
    end row, read from ``seed`` (n, 2), the seed's real positions.
    """
    weights = np.zeros(n)
    if pool == "first":
        weights[0] = 1.0
    elif pool == "last":
        weights[-1] = 1.0
    elif pool == "mean":
        weights[:] = 1.0 / n
    else:
        weights[:] = np.count_nonzero(seed, axis=-1)
    return weights


def rollout(blocks: np.ndarray, normalize_rows: bool = False) -> np.ndarray:
    """``(Ā_{L-1} + I) ⋯ (Ā_0 + I)`` of per-block maps ``blocks`` (L, n, n), bottom block first.

    The identity stands for the residual path. ``normalize_rows`` scales each factor's rows
    to sum 1 (Abnar & Zuidema; Chefer's code); its diagonal is ≥ 1 here, so no row is 0.
    """
    eye = np.eye(blocks.shape[-1])
    product = eye
    for block in blocks:
        factor = block + eye
        if normalize_rows:
            factor = factor / factor.sum(axis=-1, keepdims=True)
        product = factor @ product
    return product


def positive_head_mean(x: np.ndarray) -> np.ndarray:
    """``mean_m x⁺`` over the head axis: (…, H, n, n) -> (…, n, n)."""
    return np.maximum(x, 0.0).mean(axis=-3)


def mask_lrp(query, grad, relevance, normalize_rows: bool = False) -> np.ndarray:
    """Mask-LRP (paper Eq. 10–11): ``Ā_b = mean_m[(∇A_b ⊙ R_{A_b})⁺] + I``, rolled out.

    With an unmasked ``relevance`` this is Chefer et al.'s CVPR'21 relevance rollout.
    """
    return query @ rollout(positive_head_mean(grad * relevance), normalize_rows)


def attention_rollout(query, attentions) -> np.ndarray:
    """Abnar & Zuidema (2020): ``mean_m A_b + I``, rows normalised, rolled out."""
    return query @ rollout(attentions.mean(axis=1), normalize_rows=True)


def raw_attention(query, attentions) -> np.ndarray:
    """The last block's attention, mean over heads."""
    return query @ attentions[-1].mean(axis=0)


def partial_lrp(query, relevance) -> np.ndarray:
    """Voita et al. (2019): the last block's ``mean_m (R_A)⁺``."""
    return query @ positive_head_mean(relevance[-1])


def gae(query, grad, attentions) -> np.ndarray:
    """Chefer et al. ICCV'21: ``R = I``; bottom to top ``R += mean_m((∇A_b ⊙ A_b)⁺) R``,
    i.e. the rollout of ``mean_m((∇A_b ⊙ A_b)⁺)`` without row normalisation."""
    return query @ rollout(positive_head_mean(grad * attentions))


def cam(grad) -> np.ndarray:
    """The last block's ∇A averaged over heads and queries, clamped ≥ 0."""
    return np.maximum(grad[-1].mean(axis=(0, 1)), 0.0)


def gradcam(query, grad, attentions) -> np.ndarray:
    """Head weights ``w_m = mean ∇A_m`` of the last block; ``relu(mean_m w_m A_m)``."""
    weights = grad[-1].mean(axis=(1, 2))
    heat = np.einsum("h,hqk->qk", weights, attentions[-1]) / len(weights)
    return query @ np.maximum(heat, 0.0)


def attcat(hidden, hidden_grad, attentions) -> np.ndarray:
    """Qiang et al. (2022): ``Σ_b (Σ_d ∇h_b ⊙ h_b)_t · mean_{m,q} A_b[m,q,t]``.

    ``hidden``, ``hidden_grad`` (L, n, C): the input of each block and its true gradient.
    """
    return np.einsum("bt,bt->t", (hidden_grad * hidden).sum(axis=-1), attentions.mean(axis=(1, 2)))
