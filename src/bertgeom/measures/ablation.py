"""Head ablation: what a classifier loses when one head's output is removed (``docs/ablation.md``).

Attention maps say where a head looks, not what the decision needs. Ablation is the causal
test: replace the output ``Z_h = A_h V_h (seq, dk)`` of one head (the input of ``W_O``) and
measure the classifier again. The replacements are pure functions of tensors:

- ``zero``: ``Z_h <- 0``;
- ``mean``: ``Z_h <- mean of Z_h over every valid token of the data`` (keeps the head's average
  contribution, removes only what depends on the input);
- key masking: ``A_h[i, j] <- A_h[i, j] [j kept] / sum_j' A_h[i, j'] [j' kept]`` and
  ``Z_h <- A_h V_h``, which is exactly the softmax with the masked keys left out.

:class:`AblationAccumulator` counts, per ablation, the confusion matrix and the summed
true-class log-probability; counts add, so it merges exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import Tensor

from bertgeom.measures.base import ALL_CLASSES
from bertgeom.names import AblationMetric

ABLATION_COLUMNS = ["layer", "head", "mode", "class", "metric", "value"]
"""Columns of ``ablation.parquet`` (``head`` -1: the layer's whole attention block; the baseline
row has ``layer = head = -1`` and mode ``none``)."""

NONE, ZERO, MEAN = "none", "zero", "mean"
MASK_MUTATION_KEYS, MASK_MATCHED_KEYS = "mask_mutation_keys", "mask_matched_keys"
MODES: tuple[str, ...] = (NONE, ZERO, MEAN, MASK_MUTATION_KEYS, MASK_MATCHED_KEYS)
WHOLE_BLOCK = -1


@dataclass(frozen=True)
class Ablation:
    """One ablation: ``mode`` applied to ``head`` of ``layer`` (``head = -1``: every head of
    the layer, the whole attention block; ``mode = "none"``: the unablated baseline)."""

    layer: int
    head: int
    mode: str

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown ablation mode {self.mode!r}; one of {', '.join(MODES)}")


BASELINE = Ablation(-1, -1, NONE)


def zeroed(head_output: Tensor) -> Tensor:
    """``Z_h <- 0``: ``head_output (batch, seq, dk)`` replaced by zeros."""
    return torch.zeros_like(head_output)


def mean_replaced(head_output: Tensor, mean: Tensor) -> Tensor:
    """``Z_h <- mean``: every position of ``head_output (batch, seq, dk)`` set to ``mean (dk,)``."""
    return mean.to(head_output.dtype).expand_as(head_output).clone()


def key_masked(attention: Tensor, values: Tensor, keep: Tensor) -> Tensor:
    """``Z_h`` with the keys where ``keep (batch, key)`` is False removed from the softmax.

    ``attention (batch, query, key)`` is one head's probabilities, ``values (batch, key, dk)``
    its value vectors. Renormalising ``A[i, j] keep[j]`` over the kept keys equals the softmax
    of the scores with the masked keys at ``-inf``; a query left with no kept key keeps its row.
    """
    kept = attention * keep[:, None, :].to(attention.dtype)
    total = kept.sum(dim=-1, keepdim=True)
    renormalised = torch.where(total > 0, kept / total.clamp_min(1e-30), attention)
    return renormalised @ values


def mutation_keys(
    span_lo: Tensor, span_hi: Tensor, starts: Tensor, ends: Tensor, carries: Tensor
) -> Tensor:
    """``(batch, seq)`` bool: the tokens whose reference span ``[span_lo, span_hi]`` overlaps a
    mutation ``[starts, ends]`` that the input carries (``carries (batch, mutation)``);
    positions without a span have ``span_lo = span_hi = 0`` and overlap nothing."""
    overlap = (span_lo[:, None, :] <= ends[None, :, None]) & (
        span_hi[:, None, :] >= starts[None, :, None]
    )
    placed = span_lo > 0
    return (overlap & carries[:, :, None]).any(dim=1) & placed


def matched_keys(masked: Tensor, placed: Tensor, offset: int) -> Tensor:
    """``(batch, seq)`` bool: as many tokens as ``masked`` in each row, each the free placed,
    unmasked token nearest to ``offset`` positions after one masked token (before it when that
    falls past the last placed token). The control set shares the masked tokens' count and
    neighbourhood but covers no mutation. Rows with too few free tokens get all of them."""
    masked_np = masked.cpu().numpy()
    placed_np = placed.cpu().numpy()
    chosen = np.zeros_like(masked_np)
    for row in range(masked_np.shape[0]):
        free = placed_np[row] & ~masked_np[row]
        candidates = np.flatnonzero(free)
        if len(candidates) == 0:
            continue
        last = candidates[-1]
        for position in np.flatnonzero(masked_np[row]):
            target = position + offset if position + offset <= last else position - offset
            available = candidates[free[candidates]]
            if len(available) == 0:
                break
            pick = available[np.argmin(np.abs(available - target))]
            chosen[row, pick] = True
            free[pick] = False
    return torch.from_numpy(chosen).to(masked.device)


def macro_f1(confusion: npt.NDArray[np.int64]) -> float:
    """Mean over the classes that occur as truth or prediction of ``2 TP / (2 TP + FP + FN)``
    (scikit-learn's ``f1_score(average="macro")``); ``confusion[true, predicted]``."""
    true_positive = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    present = (support + predicted) > 0
    if not present.any():
        return float("nan")
    f1 = 2 * true_positive / np.maximum(support + predicted, 1)
    return float(f1[present].mean())


class AblationAccumulator:
    """Streams the classifier's calls under each ablation: ``confusion (ablation, true,
    predicted)`` counts and ``log_probability (ablation, true)`` sums of ``log p(true class)``.

    ``result()``: columns :data:`ABLATION_COLUMNS`; metrics ``accuracy`` (per class: the share of
    its inputs called right), ``macro_f1`` (class ``all``), ``true_log_probability`` (mean) and
    ``inputs``.
    """

    def __init__(self, ablations: Sequence[Ablation], class_names: Sequence[str]) -> None:
        self.ablations = tuple(ablations)
        self.class_names = tuple(class_names)
        n, classes = len(self.ablations), len(self.class_names)
        self.confusion = np.zeros((n, classes, classes), dtype=np.int64)
        self.log_probability = np.zeros((n, classes), dtype=np.float64)
        self._index = {ablation: i for i, ablation in enumerate(self.ablations)}

    def update(self, ablation: Ablation, true: Tensor, logits: Tensor) -> None:
        """Add one batch: ``true (batch,)`` class indices, ``logits (batch, class)``."""
        index = self._index[ablation]
        log_probabilities = torch.log_softmax(logits.detach().double(), dim=-1).cpu()
        true_np = true.cpu().numpy().astype(np.int64)
        predicted = log_probabilities.argmax(dim=-1).numpy()
        np.add.at(self.confusion[index], (true_np, predicted), 1)
        picked = log_probabilities[torch.arange(len(true_np)), torch.from_numpy(true_np)]
        np.add.at(self.log_probability[index], true_np, picked.numpy())

    def merge(self, other: Self) -> Self:
        if (self.ablations, self.class_names) != (other.ablations, other.class_names):
            raise ValueError("cannot merge ablation accumulators of different ablations")
        merged = type(self)(self.ablations, self.class_names)
        merged.confusion = self.confusion + other.confusion
        merged.log_probability = self.log_probability + other.log_probability
        return merged

    def result(self) -> pd.DataFrame:
        rows: list[tuple[int, int, str, str, str, float]] = []
        for ablation, confusion, log_probability in zip(
            self.ablations, self.confusion, self.log_probability, strict=True
        ):
            key = (ablation.layer, ablation.head, ablation.mode)
            support = confusion.sum(axis=1)
            total = int(support.sum())
            rows.append((*key, ALL_CLASSES, AblationMetric.INPUTS, float(total)))
            if total == 0:
                continue
            rows.append((*key, ALL_CLASSES, AblationMetric.ACCURACY, np.trace(confusion) / total))
            rows.append((*key, ALL_CLASSES, AblationMetric.MACRO_F1, macro_f1(confusion)))
            mean_log_probability = log_probability.sum() / total
            rows.append(
                (*key, ALL_CLASSES, AblationMetric.TRUE_LOG_PROBABILITY, mean_log_probability)
            )
            for index, name in enumerate(self.class_names):
                if support[index] == 0:
                    continue
                n = float(support[index])
                rows.append((*key, name, AblationMetric.INPUTS, n))
                rows.append((*key, name, AblationMetric.ACCURACY, confusion[index, index] / n))
                rows.append(
                    (*key, name, AblationMetric.TRUE_LOG_PROBABILITY, log_probability[index] / n)
                )
        frame = pd.DataFrame(rows, columns=ABLATION_COLUMNS)
        frame["value"] = frame["value"].astype(np.float64)
        return frame
