"""Attribution of a generated answer: each generated token explained by every token before it.

>>> g = masklrp.attribute_generation(model, "The capital of France is", max_new_tokens=8)
>>> g.relevance.shape                  # (generated, prompt + generated)
>>> g.save("generation.html")          # the matrix, and each answer token's prompt heatmap

The answer is generated greedily by the C engine (or given, teacher-forced, as ``target``);
then **one** forward over prompt + answer and one backward sweep per answer token explain it
all (:meth:`masklrp.model.Model.run`'s K seeds): token ``g_i``, predicted after position
``T0 − 1 + i``, is seeded there, so row ``i`` of the matrix is exactly what explaining the
prefix ``prompt + g_0 … g_{i−1}`` alone for ``g_i`` gives (to float32 rounding).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ._checks import positive_int
from .explain import METHODS, AttnLRP, Explanation, special_flags
from .model import Model


@dataclass
class GenerationExplanation:
    """A prompt, the answer generated after it and the relevance of every earlier token for
    each answer token.

    ``relevance[i, j]`` (float32, ``(n, T0 + n)``) is the relevance of token ``j`` (prompt
    tokens first, then the answer's) for answer token ``i``, the explained logit being the
    next-token logit of ``g_i`` after position ``T0 − 1 + i`` (contrastive: its margin over
    the mean of the others). Entries at and after the explained token's own position
    (``j ≥ T0 + i``) are 0: causal attention sends nothing there; views mask them.
    ``logits[i]`` is that explained logit.
    """

    prompt_ids: np.ndarray       # (T0,) int64
    answer_ids: np.ndarray       # (n,) int64
    tokens: list[str]            # T0 + n token strings: the prompt's, then the answer's
    relevance: np.ndarray        # (n, T0 + n) float32
    logits: np.ndarray           # (n,) float32
    method: str
    contrastive: bool = False
    teacher_forced: bool = False  # the answer was given (target), not generated
    special: np.ndarray | None = None  # (T0 + n,) bool: special tokens, when known
    answer_text: str | None = None     # the answer decoded by the tokenizer, when there is one

    @property
    def n_prompt(self) -> int:
        return len(self.prompt_ids)

    @property
    def prompt_tokens(self) -> list[str]:
        return self.tokens[:self.n_prompt]

    @property
    def answer_tokens(self) -> list[str]:
        return self.tokens[self.n_prompt:]

    def masked(self) -> np.ndarray:
        """``relevance`` with NaN where an answer token cannot look (at and after itself)."""
        n, width = self.relevance.shape
        later = np.arange(width)[None, :] >= self.n_prompt + np.arange(n)[:, None]
        return np.where(later, np.nan, self.relevance)

    def step(self, i: int) -> Explanation:
        """Answer token ``i``'s explanation over the ``T0 + i`` tokens before it (an
        :class:`~masklrp.explain.Explanation`, drawn by :mod:`masklrp.heatmap`)."""
        n = len(self.answer_ids)
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"i must be an int, got {type(i).__name__}")
        if not -n <= i < n:
            raise ValueError(f"i = {i} is out of range: the answer has {n} tokens")
        i = int(i) % n
        seen = self.n_prompt + i
        ids = np.concatenate([self.prompt_ids, self.answer_ids])[:seen]
        return Explanation(tokens=self.tokens[:seen], scores=self.relevance[i, :seen].copy(),
                           target=int(self.answer_ids[i]), logit=float(self.logits[i]), method=self.method,
                           input_ids=ids, special=None if self.special is None else self.special[:seen].copy())

    def __repr__(self) -> str:
        how = "teacher-forced" if self.teacher_forced else "generated"
        text = f" {self.answer_text!r}" if self.answer_text is not None else ""
        return (f"GenerationExplanation({self.method}{', contrastive' if self.contrastive else ''}: "
                f"{self.n_prompt} prompt tokens, {len(self.answer_ids)} {how}{text})")

    # Views live in masklrp.generation_heatmap, imported on use: they sit above this module.
    def to_html(self, **kw) -> str:
        """The standalone HTML page (keywords of :func:`masklrp.generation_heatmap.document`)."""
        from . import generation_heatmap
        return generation_heatmap.document(self, **kw)

    def _repr_html_(self) -> str:
        from . import generation_heatmap
        return generation_heatmap.to_html(self)

    def plot(self, **kw):
        """The matrix as a matplotlib Figure (:func:`masklrp.generation_heatmap.plot`)."""
        from . import generation_heatmap
        return generation_heatmap.plot(self, **kw)

    def save(self, path: str | os.PathLike, **kw) -> Path:
        """Write the views to ``path`` by its suffix: .html (matrix and per-token heatmaps),
        .png, .pdf or .svg (the matrix; :func:`masklrp.generation_heatmap.save`)."""
        from . import generation_heatmap
        return generation_heatmap.save(self, path, **kw)


def attribute_generation(model: Model, prompt, max_new_tokens: int = 20, *, method: str = "attnlrp",
                         contrastive: bool = False, target=None,
                         threads: int | None = None) -> GenerationExplanation:
    """Generate greedily after ``prompt`` (or take ``target`` as the answer) and explain
    every answer token by every token before it, in one forward and one backward per token.

    ``prompt``: a text (tokenized as :meth:`Model.encode` does, special tokens included) or
    token ids ``(length,)``. ``target``: the answer to explain instead of generating one
    (teacher forcing): a text, tokenized on its own without special tokens and appended to
    the prompt (start it with a space where the tokenizer marks word starts, e.g.
    ``" Paris"``), or token ids. ``method``: ``"attnlrp"`` or ``"cp-lrp"``; ``contrastive``:
    explain each token's margin over the mean of the others (see :func:`masklrp.explain.seed_for`).

    Generation stops after ``max_new_tokens`` tokens or at an end-of-sequence id of the
    model's config (``spec.eos_token_ids``, kept as the answer's last token).

    Each generation step recomputes the forward over the whole sequence so far (its last
    layer pruned to the one row the head reads); there is no KV cache. Measured on
    SmolLM2-135M, 2 CPU cores shared with other jobs, a 108-token prompt: 0.44 s a step
    (0.40 s on average over 20 steps), while the attribution costs one forward plus 0.64 s
    per answer token (20 tokens: 7.9 s generating, 13.3 s explaining). A cache would cut a
    step to one row, but the attribution's own sweeps, which no cache shortens, already
    cost more than all the steps together, so it would save less than half the time at
    the price of a second forward path in C.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a masklrp.Model (masklrp.load), got {type(model).__name__}")
    if model.spec.task != "causal-lm":
        raise ValueError(f"attribute_generation needs a causal LM, got a {model.spec.task} model")
    if method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}")
    if not isinstance(contrastive, (bool, np.bool_)):
        raise TypeError(f"contrastive must be a bool, got {type(contrastive).__name__}")
    prompt_ids = _prompt_ids(model, prompt)
    if target is None:
        max_new_tokens = positive_int(max_new_tokens, "max_new_tokens")
        _fits(model, len(prompt_ids) + max_new_tokens - 1, "max_new_tokens")
        answer = greedy(model, prompt_ids, max_new_tokens, threads=threads)
    else:
        answer = _answer_ids(model, target)
        _fits(model, len(prompt_ids) + len(answer) - 1, "target")
    return explain_answer(model, prompt_ids, answer, method=method, contrastive=contrastive,
                          teacher_forced=target is not None, threads=threads)


def greedy(model: Model, prompt_ids: np.ndarray, max_new_tokens: int, *,
           threads: int | None = None) -> np.ndarray:
    """Greedy decoding with the engine's forward: the argmax (lowest id on ties) after the
    sequence so far, until ``max_new_tokens`` or an id of ``spec.eos_token_ids``."""
    ids = list(int(i) for i in prompt_ids)
    stop = set(model.spec.eos_token_ids)
    answer: list[int] = []
    for _ in range(max_new_tokens):
        logits = model.forward(model.prepare(np.asarray(ids, dtype=np.int64)), threads=threads)["logits"][0]
        token = int(np.argmax(logits))
        answer.append(token)
        if token in stop:
            break
        ids.append(token)
    return np.asarray(answer, dtype=np.int64)


def explain_answer(model: Model, prompt_ids: np.ndarray, answer_ids: np.ndarray, *, method: str = "attnlrp",
                   contrastive: bool = False, teacher_forced: bool = True,
                   threads: int | None = None) -> GenerationExplanation:
    """One forward over ``prompt + answer[:-1]`` and one sweep per answer token ``g_i``,
    seeded at position ``T0 − 1 + i``."""
    T0, n = len(prompt_ids), len(answer_ids)
    sequence = np.concatenate([prompt_ids, answer_ids]).astype(np.int64)
    inputs = model.prepare(sequence[:-1])  # the last token is never read: nothing follows it
    [steps] = AttnLRP(model, method).attribute(
        inputs, targets=[[(T0 - 1 + i, int(g)) for i, g in enumerate(answer_ids)]], contrastive=contrastive,
        threads=threads)
    relevance = np.zeros((n, T0 + n), dtype=np.float32)
    for i, e in enumerate(steps):
        relevance[i, :T0 + n - 1] = e.scores
    special = special_flags(model.prepare(sequence), model.tokenizer)
    tokenizer = model.tokenizer
    return GenerationExplanation(
        prompt_ids=np.asarray(prompt_ids, dtype=np.int64), answer_ids=np.asarray(answer_ids, dtype=np.int64),
        tokens=(tokenizer.convert_ids_to_tokens(sequence) if tokenizer is not None else [str(i) for i in sequence]),
        relevance=relevance, logits=np.array([e.logit for e in steps], dtype=np.float32), method=method,
        contrastive=bool(contrastive), teacher_forced=teacher_forced,
        special=None if special is None else special[0],
        answer_text=None if tokenizer is None else tokenizer.decode(answer_ids, skip_special_tokens=False))


def _prompt_ids(model: Model, prompt) -> np.ndarray:
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError("prompt is empty: give a text or token ids")
        inputs = model.encode(prompt)
        return inputs.input_ids[0, inputs.attention_mask[0] == 1]
    return _ids(model, prompt, "prompt")


def _answer_ids(model: Model, target) -> np.ndarray:
    if isinstance(target, str):
        if model.tokenizer is None:
            raise ValueError("target: this model was loaded without a tokenizer: give the answer as token ids")
        batch = model.tokenizer.encode(target, add_special_tokens=False)
        ids = batch.input_ids[0, batch.attention_mask[0] == 1]
        if len(ids) == 0:
            raise ValueError(f"target {target!r} has no tokens")
        return ids
    return _ids(model, target, "target")


def _ids(model: Model, ids, name: str) -> np.ndarray:
    """1-d token ids of the vocabulary, at least one."""
    if isinstance(ids, (bytes, dict)) or (isinstance(ids, Sequence) and any(isinstance(i, str) for i in ids)):
        raise TypeError(f"{name} must be a text or token ids, got {type(ids).__name__}")
    array = np.asarray(ids.detach().cpu().numpy() if hasattr(ids, "detach") else ids)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.size == 0:
        raise ValueError(f"{name} has no tokens")
    if not np.issubdtype(array.dtype, np.integer) or array.ndim != 1:
        raise TypeError(f"{name} must be a text or 1-d integer token ids, got {array.dtype} of shape {array.shape}")
    if array.min() < 0 or array.max() >= model.spec.vocab:
        raise ValueError(f"{name}: token ids must be in [0, {model.spec.vocab}) (the vocabulary)")
    return array.astype(np.int64)


def _fits(model: Model, length: int, name: str) -> None:
    """The explained sequence (prompt + answer but its last token) within the model's positions."""
    if length > model.spec.max_positions:
        raise ValueError(f"{name}: the prompt and answer need {length} positions, more than the model's "
                         f"{model.spec.max_positions}")
