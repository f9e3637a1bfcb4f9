"""ViT oracle: HF's ViTForImageClassification / ViTModel in float64 with the rules patched in.

The layers are patched exactly as :func:`oracle.models.explain` patches a text encoder
(attention through the "masklrp_oracle" interface: softmax true gradient, ``Q Kᵀ`` and ``A V``
½ each or CP-LRP's 0 / 1; LayerNorm with σ held constant; GELU's identity rule). What differs is
the input: ``ViTEmbeddings.forward`` is replaced by the same sum with three leaves, the patch
embeddings (the Conv2d's output, the hook :func:`oracle.models._patch` puts on the input
embedding module), the [CLS] token and the position embeddings, each expanded to the batch so
every image gets its own gradient. Per pixel, torch's own gradient of the Conv2d carries ``g``
at the patch embeddings back to the pixel values (the linear rule): ``R = x ⊙ that``.
"""
from __future__ import annotations

import copy
import functools
import inspect

import numpy as np
import torch

from oracle.models import RULES, _patch, default_seed, float64_only

_EXPECTED = ("embeddings = torch.cat((cls_tokens, embeddings), dim=1)",
             "embeddings = embeddings + self.position_embeddings")


def _embeddings_forward(module, taps, pixel_values, bool_masked_pos=None,
                        interpolate_pos_encoding=False):
    if bool_masked_pos is not None or interpolate_pos_encoding:
        raise NotImplementedError("the oracle runs ViT without masked patches or interpolation")
    patches = module.patch_embeddings(pixel_values)  # a leaf, made by _patch's hook
    B = len(patches)
    leaves = {name: p.detach().expand(B, -1, -1).clone().requires_grad_(True)
              for name, p in (("cls", module.cls_token), ("position", module.position_embeddings))}
    taps.embeds.update(leaves)
    return torch.cat((leaves["cls"], patches), dim=1) + leaves["position"]


def explain(model, pixel_values, *, seed=None, rule="attnlrp") -> dict[str, np.ndarray]:
    """Forward and the ``rule``'s backward of ``model`` over ``pixel_values`` (B, ch, S, S).

    Returns float64 NumPy: ``logits`` (B, NO) (ViTModel: the mean of ``last_hidden_state``,
    (B, C)); with a rule, ``patches`` (B, N) and ``cls`` (B,) ``Σ_d e ⊙ g`` of each patch
    embedding and of [CLS], ``positions`` (B, T), ``embed_grad`` (B, T, C) g at the embedding
    sum's [CLS] and patch rows, ``pixels`` (B, ch, S, S) ``x ⊙ g_x``.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    base = getattr(model, "vit", model)
    source = inspect.getsource(type(base.embeddings).forward)
    if not all(line in source for line in _EXPECTED):
        raise NotImplementedError("ViTEmbeddings.forward changed; update the oracle")
    work = copy.deepcopy(model).double().eval().requires_grad_(False)
    x = torch.as_tensor(np.asarray(pixel_values), dtype=torch.float64)
    taps = _patch(work, rule, len(x))
    embeddings = getattr(work, "vit", work).embeddings
    embeddings.forward = functools.partial(_embeddings_forward, embeddings, taps)
    with float64_only(), torch.set_grad_enabled(rule is not None):
        out = work(pixel_values=x)
        output = out.logits if hasattr(out, "logits") else out.last_hidden_state.mean(1)
    result = {"logits": output.detach().numpy()}
    if rule is None:
        return result
    if seed is None:
        seed = default_seed(output.detach(), "sequence-classification", None)
    seed = torch.as_tensor(np.asarray(seed), dtype=torch.float64)
    names = ("word", "cls", "position")
    g = dict(zip(names, torch.autograd.grad(output, [taps.embeds[n] for n in names], seed)))
    with torch.enable_grad():
        leaf = x.clone().requires_grad_(True)
        patches = embeddings.patch_embeddings.projection(leaf).flatten(2).transpose(1, 2)
        (pixel_grad,) = torch.autograd.grad(patches, leaf, g["word"])

    def relevance(name):
        return (taps.embeds[name] * g[name]).sum(-1).detach().numpy()

    result.update(patches=relevance("word"), cls=relevance("cls")[:, 0],
                  positions=relevance("position"),
                  embed_grad=torch.cat((g["cls"], g["word"]), dim=1).numpy(),
                  pixels=(x * pixel_grad).numpy())
    return result
