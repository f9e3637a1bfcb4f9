"""Captum baselines (DESIGN.md §4) on the Hugging Face torch model, as masklrp Explanations.

>>> torch_model = load_torch_model("path/to/model")          # the folder masklrp.load read
>>> out = captum_explain(torch_model, model.encode(texts), ("captum-ig", "captum-saliency"))
>>> out["captum-ig"][0]                                        # an Explanation per sequence

Every method attributes the explained logit to the word embeddings (position and token-type
embeddings are held fixed, as the engine's ``scores`` are the word embeddings' share) and a
token's score is the sum over the embedding dimension:

* ``captum-ig``: IntegratedGradients on ``inputs_embeds``; the baseline replaces every real
  non-special token's embedding by the ``baseline`` token's (default: the pad id), keeping
  [CLS] / [SEP] (Captum's BERT tutorial);
* ``captum-lig``: LayerIntegratedGradients on the word-embedding layer with the same
  baseline ids (the same integral, reached through the layer's output);
* ``captum-saliency``: Saliency, ``|∂logit/∂e|`` (Captum's default ``abs=True``);
* ``captum-ixg``: InputXGradient, ``e ⊙ ∂logit/∂e``.

The same :class:`~masklrp.model.Inputs` (ids, mask, positions, token types) go to torch as to
the engine, so :func:`masklrp.evaluate` scores these next to the engine's methods. Needs the
``compare`` extra (captum) and torch; importing this module does not.
"""
from __future__ import annotations

import inspect
import os
from typing import Sequence

import numpy as np

from ._checks import positive_int
from .explain import Explanation, special_flags, token_fields
from .model import Inputs

__all__ = ["CAPTUM_METHODS", "CaptumExplainer", "captum_explain", "load_torch_model"]

# method name -> captum.attr class
CAPTUM_METHODS = {"captum-ig": "IntegratedGradients", "captum-lig": "LayerIntegratedGradients",
                  "captum-saliency": "Saliency", "captum-ixg": "InputXGradient"}
ALIASES = {"captum-inputxgradient": "captum-ixg", "captum-integratedgradients": "captum-ig",
           "captum-layerintegratedgradients": "captum-lig"}
BASELINE_METHODS = ("captum-ig", "captum-lig")


def _imports():
    try:
        import torch
        import captum.attr
    except ImportError as e:
        raise ImportError("the Captum baselines need torch and captum: pip install 'masklrp[compare]' "
                          f"(and torch); {e}") from e
    return torch, captum.attr


def load_torch_model(path: str | os.PathLike):
    """The transformers torch model of a folder (the class its ``config.json`` names),
    float32, eval mode, eager attention."""
    try:
        import transformers
    except ImportError as e:
        raise ImportError(f"loading the torch model for Captum needs transformers: {e}") from e
    config = transformers.AutoConfig.from_pretrained(str(path))
    architecture = (config.architectures or ["AutoModelForSequenceClassification"])[0]
    cls = getattr(transformers, architecture, transformers.AutoModelForSequenceClassification)
    log = transformers.utils.logging
    bars = log.is_progress_bar_enabled()
    log.disable_progress_bar()  # a bar per load would break the evaluation's own bar
    try:
        return cls.from_pretrained(str(path), attn_implementation="eager").float().eval()
    finally:
        if bars:
            log.enable_progress_bar()


def canonical_name(name: str) -> str:
    """``"captum-ig"`` for ``"captum-ig"``, ``"captum-IntegratedGradients"``, …; ValueError otherwise."""
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in CAPTUM_METHODS:
        raise ValueError(f"unknown Captum method {name!r}; choose from {tuple(CAPTUM_METHODS)}")
    return key


class CaptumExplainer:
    """One Captum method on a transformers classifier, Captum-style.

    >>> explainer = CaptumExplainer(torch_model, "captum-ig", n_steps=50)
    >>> explanations = explainer.attribute(model.encode(texts), target=1)

    ``baseline``: the token id of the IG baselines (default: the config's pad id, else 0);
    ``internal_batch_size``: interpolation rows per torch forward (IG, LIG).
    """

    def __init__(self, torch_model, method: str = "captum-ig", *, n_steps: int = 50,
                 baseline: int | None = None, internal_batch_size: int | None = 256):
        self.torch, self.attr = _imports()
        if not isinstance(torch_model, self.torch.nn.Module):
            raise TypeError(f"torch_model must be a transformers torch model, got {type(torch_model).__name__}")
        self.model = torch_model.eval()
        self.method = canonical_name(method)
        self.n_steps = positive_int(n_steps, "n_steps")
        pad = getattr(torch_model.config, "pad_token_id", None)
        self.baseline = int(baseline if baseline is not None else (pad if pad is not None else 0))
        self.internal_batch_size = internal_batch_size
        accepted = inspect.signature(torch_model.forward).parameters
        self._takes_positions = "position_ids" in accepted
        self._takes_types = "token_type_ids" in accepted

    def attribute(self, inputs: Inputs, target=None) -> list[Explanation]:
        """Explain each sequence of ``inputs`` (engine :class:`Inputs`, e.g. ``model.encode(texts)``).

        ``target``: None (each row's argmax), an int, or one int per row.
        """
        if not isinstance(inputs, Inputs):
            raise TypeError(f"inputs must be masklrp Inputs (model.encode(texts)), got {type(inputs).__name__}")
        torch = self.torch
        ids = torch.as_tensor(inputs.input_ids)
        extra = self._forward_args(inputs)
        with torch.no_grad():
            logits = self._logits(ids, *extra)
        if logits.ndim != 2:
            raise ValueError("the Captum adapter explains sequence classifiers (one logit row per sequence)")
        targets = _targets(target, logits.argmax(dim=1).tolist(), logits.shape[1])
        base = self._baseline_ids(inputs) if self.method in BASELINE_METHODS else None
        scores = self._scores(ids, base, extra, targets).detach().numpy().astype(np.float32)
        out = []
        special = special_flags(inputs)
        for b, c in enumerate(targets):
            real = inputs.attention_mask[b].astype(bool)
            tokens = (list(np.asarray(inputs.tokens[b], dtype=object)[real]) if inputs.tokens is not None
                      else [str(int(i)) for i in inputs.input_ids[b, real]])
            out.append(Explanation(tokens=tokens, scores=scores[b, real], target=c,
                                   logit=float(logits[b, c]), method=self.method,
                                   input_ids=inputs.input_ids[b, real],
                                   **token_fields(inputs, special, b, real)))
        return out

    def _forward_args(self, inputs: Inputs) -> tuple:
        torch = self.torch
        types = inputs.token_type_ids if self._takes_types else None
        positions = inputs.position_ids if self._takes_positions else None
        return (torch.as_tensor(inputs.attention_mask), None if types is None else torch.as_tensor(types),
                None if positions is None else torch.as_tensor(positions))

    def _logits(self, ids, mask, types, positions, *, embeds=None):
        kwargs = {"attention_mask": mask}
        if types is not None:
            kwargs["token_type_ids"] = types
        if positions is not None:
            kwargs["position_ids"] = positions  # RoBERTa would number positions itself from embeds
        if embeds is None:
            return self.model(input_ids=ids, **kwargs).logits
        return self.model(inputs_embeds=embeds, **kwargs).logits

    def _scores(self, ids, base, extra: tuple, targets: list[int]):
        """(B, T) token scores: the attributions summed over the embedding dimension."""
        torch, attr = self.torch, self.attr
        layer = self.model.get_input_embeddings()
        from_embeds = lambda embeds, *args: self._logits(None, *args, embeds=embeds)  # noqa: E731
        if self.method == "captum-lig":
            explainer = attr.LayerIntegratedGradients(lambda i, *args: self._logits(i, *args), layer)
            a = explainer.attribute(ids, baselines=base, target=targets,
                                    additional_forward_args=extra, n_steps=self.n_steps,
                                    internal_batch_size=self.internal_batch_size)
            return a.sum(dim=-1)
        with torch.no_grad():
            embeds = layer(ids)
        embeds.requires_grad_(True)
        if self.method == "captum-ig":
            with torch.no_grad():
                base_embeds = layer(base)
            a = attr.IntegratedGradients(from_embeds).attribute(
                embeds, baselines=base_embeds, target=targets, additional_forward_args=extra,
                n_steps=self.n_steps, internal_batch_size=self.internal_batch_size)
        elif self.method == "captum-saliency":
            a = attr.Saliency(from_embeds).attribute(embeds, target=targets, additional_forward_args=extra)
        else:
            a = attr.InputXGradient(from_embeds).attribute(embeds, target=targets, additional_forward_args=extra)
        return a.sum(dim=-1)

    def _baseline_ids(self, inputs: Inputs):
        """The input ids with every real non-special token (``inputs.special_tokens_mask``;
        without one, every real token) replaced by the baseline id."""
        keep = inputs.attention_mask == 0
        if inputs.special_tokens_mask is not None:
            keep = keep | inputs.special_tokens_mask.astype(bool)
        return self.torch.as_tensor(np.where(keep, inputs.input_ids, self.baseline))


def captum_explain(torch_model, inputs: Inputs, methods: str | Sequence[str] = ("captum-ig",), target=None,
                   **options) -> dict[str, list[Explanation]]:
    """Explain ``inputs`` with each Captum method: ``{name: [Explanation per sequence]}``.

    ``torch_model``: a transformers torch model or the folder to load it from;
    ``options`` go to :class:`CaptumExplainer` (``n_steps``, ``baseline``, ``internal_batch_size``).
    """
    names = [methods] if isinstance(methods, str) else list(methods)
    if not names:
        raise ValueError("methods: no Captum method given")
    if isinstance(torch_model, (str, os.PathLike)):
        torch_model = load_torch_model(torch_model)
    out = {}
    for name in names:
        out[canonical_name(name)] = CaptumExplainer(torch_model, name, **options).attribute(inputs, target)
    return out


def _targets(target, predicted: list[int], n: int) -> list[int]:
    B = len(predicted)
    if target is None:
        return predicted
    targets = list(np.broadcast_to(np.asarray(target), (B,))) if np.ndim(target) == 0 else list(target)
    if len(targets) != B:
        raise ValueError(f"target: got {len(targets)} targets for a batch of {B}")
    out = []
    for t in targets:
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise TypeError(f"target must be an int class, got {type(t).__name__}")
        if not 0 <= t < n:
            raise ValueError(f"target {t} is out of range: the model has {n} outputs")
        out.append(int(t))
    return out
