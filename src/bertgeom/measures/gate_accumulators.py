"""Mergeable aggregates of the gates (DESIGN 3.2) and the per-input gate records.

``GateAccumulator``: per (layer, head, class), the mean of each gate score and the share of
inputs in each dominant gate. ``ClassMeanAttentionAccumulator``: per class, the mean attention
map of chosen heads (what the paper plotted). ``gate_records``: the dominant gate and the seven
scores of every (input, layer, head), for the per-input results file. Sums are float64 and counts
are integers, so merging parts equals one pass up to float64 rounding of the sums.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import Tensor

from bertgeom.measures.class_mean_maps import (
    class_groups,
    ordered_classes,
)
from bertgeom.measures.gates import (
    DEFAULT_THRESHOLDS,
    DOMINANT_NAMES,
    GATE_NAMES,
    UNDEFINED,
    dominant_gate,
    dominant_name,
    threshold_vector,
)
from bertgeom.names import gate_score_mean, gate_share

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Thresholds = Mapping[str, float] | Sequence[float] | Tensor

GATE_METRICS: tuple[str, ...] = (
    *(gate_score_mean(gate) for gate in GATE_NAMES),
    *(gate_share(gate) for gate in DOMINANT_NAMES),
    "gate.inputs",
)
"""Metrics of ``GateAccumulator.result``: the mean of each score, the share of inputs whose
dominant gate is each gate or mixed, and the number of inputs scored."""


@dataclass
class _GateTotals:
    """Running sums of one class: score sums ``(layer, head, 7)`` float64, inputs scored
    ``(layer, head)`` and dominant-gate counts ``(layer, head, 8)``."""

    score_sum: FloatArray
    inputs: IntArray
    dominant: IntArray

    @classmethod
    def zeros(cls, n_layers: int, n_heads: int) -> _GateTotals:
        return cls(
            np.zeros((n_layers, n_heads, len(GATE_NAMES))),
            np.zeros((n_layers, n_heads), dtype=np.int64),
            np.zeros((n_layers, n_heads, len(DOMINANT_NAMES)), dtype=np.int64),
        )

    def plus(self, other: _GateTotals) -> _GateTotals:
        return _GateTotals(
            self.score_sum + other.score_sum,
            self.inputs + other.inputs,
            self.dominant + other.dominant,
        )


class GateAccumulator:
    """Streams gate scores per (layer, head) and class; ``merge`` makes it parallel.

    ``result()`` columns: ``layer``, ``head`` (0-based), ``class`` (``"all"`` for every input),
    ``metric`` (``GATE_METRICS``), ``value``. Inputs with undefined (NaN) scores are skipped.
    Classes given to the constructor are always reported (with ``gate.inputs`` 0 and NaN means
    when no input had them); other labels are added as they are seen.
    """

    def __init__(
        self,
        n_layers: int,
        n_heads: int,
        classes: Sequence[str] = (),
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ) -> None:
        if n_layers < 1 or n_heads < 1:
            raise ValueError(f"need at least one layer and head, got {n_layers} x {n_heads}")
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.classes = list(classes)
        self.thresholds = threshold_vector(thresholds)
        self._totals: dict[str, _GateTotals] = {
            name: _GateTotals.zeros(n_layers, n_heads)
            for name in ordered_classes(self.classes, iter(()))
        }

    def update(self, layer: int, scores: Tensor, labels: Sequence[str] | None = None) -> None:
        """Add the scores ``(batch, head, 7)`` of one layer; ``labels`` gives each input's class."""
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} is outside 0..{self.n_layers - 1}")
        if scores.ndim != 3 or tuple(scores.shape[1:]) != (self.n_heads, len(GATE_NAMES)):
            raise ValueError(
                f"scores must be (batch, {self.n_heads}, {len(GATE_NAMES)}), "
                f"got {tuple(scores.shape)}"
            )
        values = scores.detach().to("cpu", torch.float64)
        dominant = dominant_gate(values, self.thresholds).numpy()
        defined = dominant != UNDEFINED
        score_values = np.where(defined[..., None], values.numpy(), 0.0)
        one_hot = np.zeros((*dominant.shape, len(DOMINANT_NAMES)), dtype=np.int64)
        np.put_along_axis(one_hot, np.where(defined, dominant, 0)[..., None], 1, axis=-1)
        one_hot *= defined[..., None]
        for name, items in class_groups(labels, scores.shape[0]):
            totals = self._totals.setdefault(name, _GateTotals.zeros(self.n_layers, self.n_heads))
            totals.score_sum[layer] += score_values[items].sum(axis=0)
            totals.inputs[layer] += defined[items].sum(axis=0)
            totals.dominant[layer] += one_hot[items].sum(axis=0)

    def merge(self, other: GateAccumulator) -> GateAccumulator:
        """A new accumulator holding this one's inputs and ``other``'s."""
        if (self.n_layers, self.n_heads) != (other.n_layers, other.n_heads) or not bool(
            torch.equal(self.thresholds, other.thresholds)
        ):
            raise ValueError("can only merge GateAccumulators with the same shape and thresholds")
        merged = GateAccumulator(
            self.n_layers,
            self.n_heads,
            list(dict.fromkeys([*self.classes, *other.classes])),
            self.thresholds,
        )
        for name in ordered_classes(merged.classes, iter([*self._totals, *other._totals])):
            zero = _GateTotals.zeros(self.n_layers, self.n_heads)
            mine, theirs = self._totals.get(name, zero), other._totals.get(name, zero)
            merged._totals[name] = mine.plus(theirs)
        return merged

    def result(self) -> pd.DataFrame:
        """The long table: one row per (layer, head, class, metric)."""
        frames = []
        layer, head = np.meshgrid(np.arange(self.n_layers), np.arange(self.n_heads), indexing="ij")
        for name in ordered_classes(self.classes, iter(self._totals)):
            totals = self._totals[name]
            inputs = totals.inputs[..., None].astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                means = np.where(inputs > 0, totals.score_sum / inputs, np.nan)
                shares = np.where(inputs > 0, totals.dominant / inputs, np.nan)
            values = np.concatenate([means, shares, inputs], axis=-1)
            frames.append(
                pd.DataFrame(
                    {
                        "layer": np.repeat(layer.ravel(), len(GATE_METRICS)),
                        "head": np.repeat(head.ravel(), len(GATE_METRICS)),
                        "class": name,
                        "metric": np.tile(GATE_METRICS, self.n_layers * self.n_heads),
                        "value": values.reshape(-1),
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)


def gate_records(
    scores: Tensor,
    layer: int,
    input_indices: Sequence[int] | Tensor | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> pd.DataFrame:
    """One row per (input, head) of one layer: ``input_index``, ``layer``, ``head``, ``gate``
    (dominant gate name, ``"mixed"`` or ``"undefined"``) and ``score_<gate>`` for the seven gates.

    ``scores (batch, head, 7)``; ``input_indices (batch,)`` the dataset index of each input
    (default 0..batch-1).
    """
    if scores.ndim != 3 or scores.shape[-1] != len(GATE_NAMES):
        raise ValueError(f"scores must be (batch, head, 7), got {tuple(scores.shape)}")
    batch, heads, _ = scores.shape
    values = scores.detach().to("cpu", torch.float64)
    indices = (
        np.arange(batch)
        if input_indices is None
        else np.asarray(torch.as_tensor(input_indices).cpu(), dtype=np.int64)
    )
    if indices.shape != (batch,):
        raise ValueError(f"got {indices.shape[0]} input indices for {batch} inputs")
    names = np.array([dominant_name(i) for i in range(UNDEFINED, len(DOMINANT_NAMES))])
    dominant = dominant_gate(values, thresholds).numpy()
    frame = pd.DataFrame(
        {
            "input_index": np.repeat(indices, heads),
            "layer": layer,
            "head": np.tile(np.arange(heads), batch),
            "gate": names[dominant.reshape(-1) - UNDEFINED],
        }
    )
    flat = values.numpy().reshape(batch * heads, len(GATE_NAMES))
    for k, gate in enumerate(GATE_NAMES):
        frame[f"score_{gate}"] = flat[:, k]
    return frame
