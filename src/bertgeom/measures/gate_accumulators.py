"""Mergeable aggregates of the gates (DESIGN 3.2) and the per-input gate records.

``GateAccumulator``: per (layer, head, class), the mean of each gate score and the share of
inputs in each dominant gate. ``ClassMeanAttentionAccumulator``: per class, the mean attention
map of chosen heads (what the paper plotted). ``gate_records``: the dominant gate and the seven
scores of every (input, layer, head), for the per-input results file. Sums are float64 and counts
are integers, so merging parts equals one pass up to float64 rounding of the sums.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import Tensor

from bertgeom.measures.base import ALL_CLASSES
from bertgeom.measures.gates import (
    DEFAULT_THRESHOLDS,
    DOMINANT_NAMES,
    GATE_NAMES,
    HIGH_ATTENTION_THRESHOLD,
    UNDEFINED,
    dominant_gate,
    dominant_name,
    threshold_vector,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Thresholds = Mapping[str, float] | Sequence[float] | Tensor

GATE_METRICS: tuple[str, ...] = (
    *(f"gate.{gate}.score_mean" for gate in GATE_NAMES),
    *(f"gate.{gate}.share" for gate in DOMINANT_NAMES),
    "gate.inputs",
)
"""Metrics of ``GateAccumulator.result``: the mean of each score, the share of inputs whose
dominant gate is each gate or mixed, and the number of inputs scored."""


def _class_groups(labels: Sequence[str] | None, batch: int) -> Iterator[tuple[str, IntArray]]:
    """``(class, item indices)`` for ``"all"`` and for each class in ``labels``."""
    yield ALL_CLASSES, np.arange(batch, dtype=np.int64)
    if labels is None:
        return
    if len(labels) != batch:
        raise ValueError(f"got {len(labels)} labels for a batch of {batch} inputs")
    names = np.asarray(labels, dtype=object)
    for name in dict.fromkeys(labels):
        if name == ALL_CLASSES:
            raise ValueError(f"{ALL_CLASSES!r} is reserved for the aggregate over all inputs")
        yield str(name), np.flatnonzero(names == name).astype(np.int64)


def _ordered_classes(declared: Sequence[str], seen: Iterator[str]) -> list[str]:
    """``"all"``, then the declared classes, then any other class in the order first seen."""
    return list(dict.fromkeys([ALL_CLASSES, *declared, *seen]))


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
            for name in _ordered_classes(self.classes, iter(()))
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
        for name, items in _class_groups(labels, scores.shape[0]):
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
        for name in _ordered_classes(merged.classes, iter([*self._totals, *other._totals])):
            zero = _GateTotals.zeros(self.n_layers, self.n_heads)
            mine, theirs = self._totals.get(name, zero), other._totals.get(name, zero)
            merged._totals[name] = mine.plus(theirs)
        return merged

    def result(self) -> pd.DataFrame:
        """The long table: one row per (layer, head, class, metric)."""
        frames = []
        layer, head = np.meshgrid(np.arange(self.n_layers), np.arange(self.n_heads), indexing="ij")
        for name in _ordered_classes(self.classes, iter(self._totals)):
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


@dataclass(frozen=True)
class ClassMeanMaps:
    """Class-mean attention maps: ``maps (class, pair, query, key)`` float16, NaN where no input
    reached the position; ``inputs (class, pair)`` inputs averaged; ``classes`` and
    ``layers_heads`` name the first two axes."""

    classes: tuple[str, ...]
    layers_heads: tuple[tuple[int, int], ...]
    maps: npt.NDArray[np.float16]
    inputs: IntArray

    def get(self, name: str, layer: int, head: int) -> npt.NDArray[np.float16]:
        """The ``(query, key)`` mean map of one class and head."""
        return self.maps[self.classes.index(name), self.layers_heads.index((layer, head))]


class ClassMeanAttentionAccumulator:
    """Streams the mean attention map of each class for chosen (layer, head) pairs.

    For each class and pair it keeps the float64 sum of the maps over each input's valid region
    ``[0:n, 0:n]`` (n real tokens; the padded length when ``include_padding``) and a histogram of
    n, from which the number of inputs that reached each position follows: count(q, k) = number
    of inputs with n > max(q, k). So inputs of any length up to ``max_len`` mix, and the mean at
    (q, k) is over the inputs long enough to have it. Memory: 8 * pairs * max_len^2 bytes per
    class (about 300 MB per class for all 144 heads at 512 tokens: choose heads on large models).
    """

    def __init__(
        self,
        max_len: int,
        n_layers: int,
        n_heads: int,
        classes: Sequence[str] = (),
        layers_heads: Sequence[tuple[int, int]] | None = None,
        include_padding: bool = False,
    ) -> None:
        pairs = (
            [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
            if layers_heads is None
            else sorted(dict.fromkeys((int(layer), int(head)) for layer, head in layers_heads))
        )
        if not pairs or any(not (0 <= lay < n_layers and 0 <= h < n_heads) for lay, h in pairs):
            raise ValueError(
                f"layers_heads must be (layer, head) pairs of a {n_layers} x "
                f"{n_heads} model, got {layers_heads}"
            )
        self.max_len = max_len
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.classes = list(classes)
        self.layers_heads = pairs
        self.include_padding = include_padding
        self._sums: dict[str, FloatArray] = {}
        self._lengths: dict[str, IntArray] = {}
        for name in _ordered_classes(self.classes, iter(())):
            self._add_class(name)

    def _add_class(self, name: str) -> None:
        if name not in self._sums:
            self._sums[name] = np.zeros((len(self.layers_heads), self.max_len, self.max_len))
            self._lengths[name] = np.zeros(
                (len(self.layers_heads), self.max_len + 1), dtype=np.int64
            )

    def update(
        self,
        layer: int,
        attn: Tensor,
        attention_mask: Tensor,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Add one layer's ``attn (batch, head, query, key)`` of right-padded inputs
        (``attention_mask (batch, seq)``); layers without chosen heads are ignored."""
        chosen = [(index, h) for index, (lay, h) in enumerate(self.layers_heads) if lay == layer]
        if not chosen:
            return
        batch, heads, seq, _ = attn.shape
        if heads != self.n_heads or seq > self.max_len or attention_mask.shape != (batch, seq):
            raise ValueError(
                f"attn {tuple(attn.shape)} and attention_mask {tuple(attention_mask.shape)} must "
                f"be (batch, {self.n_heads}, seq, seq) and (batch, seq) with seq <= {self.max_len}"
            )
        lengths = attention_mask.detach().to("cpu").ne(0).sum(dim=1)
        if self.include_padding:
            lengths = torch.full_like(lengths, seq)
        inside = torch.arange(seq)[None, :] < lengths[:, None]
        pair_index = [index for index, _ in chosen]
        # Contiguous pairs (the usual case) update a view, not a fancy-indexed copy.
        pairs: slice | list[int] = pair_index
        if pair_index == list(range(pair_index[0], pair_index[-1] + 1)):
            pairs = slice(pair_index[0], pair_index[-1] + 1)
        selected = attn.detach()[:, [h for _, h in chosen]].to("cpu", torch.float32)
        selected = selected * inside[:, None, :, None] * inside[:, None, None, :]
        groups = list(_class_groups(labels, batch))
        # All class sums of the batch in one product: (group, batch) indicator @ the maps.
        # A batch's float32 sum is exact to ~1e-7 relative (the maps are stored as float16);
        # the running sums are float64.
        indicator = torch.zeros(len(groups), batch)
        for row, (_, items) in enumerate(groups):
            indicator[row, torch.from_numpy(items)] = 1.0
        sums = (indicator @ selected.reshape(batch, -1)).reshape(len(groups), -1, seq, seq)
        for row, (name, items) in enumerate(groups):
            self._add_class(name)
            self._sums[name][pairs, :seq, :seq] += sums[row].numpy()
            counts = np.bincount(lengths.numpy()[items], minlength=self.max_len + 1)
            self._lengths[name][pairs] += counts

    def merge(self, other: ClassMeanAttentionAccumulator) -> ClassMeanAttentionAccumulator:
        """A new accumulator holding this one's inputs and ``other``'s."""
        same = (self.max_len, self.n_layers, self.n_heads, self.layers_heads, self.include_padding)
        if same != (
            other.max_len,
            other.n_layers,
            other.n_heads,
            other.layers_heads,
            other.include_padding,
        ):
            raise ValueError("can only merge ClassMeanAttentionAccumulators with the same setup")
        merged = ClassMeanAttentionAccumulator(
            self.max_len,
            self.n_layers,
            self.n_heads,
            list(dict.fromkeys([*self.classes, *other.classes])),
            self.layers_heads,
            self.include_padding,
        )
        for source in (self, other):
            for name in source._sums:
                merged._add_class(name)
                merged._sums[name] += source._sums[name]
                merged._lengths[name] += source._lengths[name]
        return merged

    def position_counts(self, name: str) -> IntArray:
        """Inputs that reached each position, ``(pair, query, key)``: count(q, k) = number of
        inputs with n > max(q, k)."""
        # reached[p, L] = inputs with n > L
        reached = np.cumsum(self._lengths[name][:, ::-1], axis=1)[:, ::-1][:, 1:]
        index = np.maximum.outer(np.arange(self.max_len), np.arange(self.max_len))
        return reached[:, index]

    def result_maps(self) -> ClassMeanMaps:
        """The class-mean maps, float16, NaN where no input reached a position."""
        names = _ordered_classes(self.classes, iter(self._sums))
        maps = np.empty(
            (len(names), len(self.layers_heads), self.max_len, self.max_len), np.float16
        )
        inputs = np.zeros((len(names), len(self.layers_heads)), dtype=np.int64)
        for c, name in enumerate(names):
            counts = self.position_counts(name)
            with np.errstate(invalid="ignore", divide="ignore"):
                maps[c] = np.where(counts > 0, self._sums[name] / counts, np.nan)
            inputs[c] = self._lengths[name].sum(axis=1)
        return ClassMeanMaps(tuple(names), tuple(self.layers_heads), maps, inputs)

    def result(self) -> pd.DataFrame:
        """Long table per (layer, head, class): ``attention_map.inputs`` and
        ``attention_map.high_attention_positions`` (positions of the mean map above 0.3)."""
        maps = self.result_maps()
        rows = []
        for c, name in enumerate(maps.classes):
            for p, (layer, head) in enumerate(maps.layers_heads):
                high = int(
                    np.sum(np.nan_to_num(maps.maps[c, p], nan=0.0) > HIGH_ATTENTION_THRESHOLD)
                )
                rows.append((layer, head, name, "attention_map.inputs", float(maps.inputs[c, p])))
                rows.append(
                    (layer, head, name, "attention_map.high_attention_positions", float(high))
                )
        return pd.DataFrame(rows, columns=["layer", "head", "class", "metric", "value"])


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
