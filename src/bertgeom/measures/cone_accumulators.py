"""Mergeable accumulators of the cone index (DESIGN 3.1) over inputs, per class: of the token
vectors at a measuring point, of each head's outputs and attention rows, and of the ``[CLS]``
vectors of a class (definitions: ``cone``; per-input values: ``cone_index``).

Each update streams the per-input statistics of a batch into one ``RunningMoments`` per key
holding all the statistics side by side (one merge per class, not one per statistic).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import Tensor

from bertgeom.measures.cone_index import (
    ConeBatch,
    attention_rows_cone_index,
    cone_index_batch,
    cone_stats_from_unit_sum,
    head_output_cone_index,
)
from bertgeom.measures.grouping import FloatArray, IndexArray, class_groups, membership
from bertgeom.measures.moments import GroupedMoments, RunningMoments


def _numpy(tensor: Tensor) -> FloatArray:
    return tensor.detach().to(torch.float64).cpu().numpy()


_CONE_METRICS = ("index", "normalized", "mean_cosine")


def _per_input_values(cone: ConeBatch) -> FloatArray:
    """The statistics to aggregate ``(batch, metric, ...)`` in the order of ``_CONE_METRICS``;
    sets without any vector are left out (NaN)."""
    index = torch.where(cone.n_valid > 0, cone.index, torch.nan)
    return _numpy(torch.stack([index, cone.normalized, cone.mean_cosine], dim=1))


def _bins(values: FloatArray, edges: FloatArray) -> IndexArray:
    """The bin of ``np.histogram(values, edges)`` of each value: ``[e_i, e_{i+1})``, the last
    bin closed; ``len(edges) - 1`` for values outside the edges or NaN (not counted)."""
    n_bins = len(edges) - 1
    index = np.searchsorted(edges, values, side="right") - 1
    index[values == edges[-1]] = n_bins - 1
    index[(index < 0) | np.isnan(values)] = n_bins
    return index


class ConeAccumulator:
    """Streams the per-input cone index of token vectors per (layer, point, class).

    ``result()`` columns ``layer, point, class, metric, value``; metrics ``cone.index_mean``,
    ``cone.index_std`` (sample std over inputs), ``cone.normalized_mean``,
    ``cone.normalized_std``, ``cone.mean_cosine`` (mean over inputs with n >= 2 of the per-input
    mean pairwise cosine) and ``cone.n_inputs``; inputs without any valid non-zero vector are left
    out. ``histograms()`` gives fixed-bin counts of I / n over ``[0, 1]`` (``n_bins`` bins, edges
    ``bin_edges``).
    """

    def __init__(self, n_bins: int = 50) -> None:
        self.n_bins = n_bins
        self.bin_edges: FloatArray = np.linspace(0.0, 1.0, n_bins + 1)
        self.moments_ = GroupedMoments()  # (layer, point, class) -> moments of _CONE_METRICS
        self.histograms_: dict[tuple[int, str, str], npt.NDArray[np.int64]] = {}

    def update(
        self,
        layer: int,
        point: str,
        hidden: Tensor,
        valid: Tensor | None,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Add the inputs of ``hidden (batch, seq, d)`` measured at (``layer``, ``point``), over
        their ``valid (batch, seq)`` tokens."""
        cone = cone_index_batch(hidden, valid)
        self.update_values(layer, point, cone, labels)

    def update_values(
        self, layer: int, point: str, cone: ConeBatch, labels: Sequence[str] | None = None
    ) -> None:
        """Add precomputed per-input cone statistics (tensors of shape ``(batch,)``)."""
        values = _per_input_values(cone)
        bins = _bins(np.clip(values[:, 1], 0, 1), self.bin_edges)
        for label, idx in class_groups(labels, values.shape[0]):
            self.moments_.add((layer, point, label), values[idx])
            counts = np.bincount(bins[idx], minlength=self.n_bins + 1)[: self.n_bins]
            key = (layer, point, label)
            previous = self.histograms_.get(key, np.zeros(self.n_bins, dtype=np.int64))
            self.histograms_[key] = previous + counts.astype(np.int64)

    def merge(self, other: ConeAccumulator) -> ConeAccumulator:
        """A new accumulator with both inputs."""
        if self.n_bins != other.n_bins:
            raise ValueError("cannot merge ConeAccumulators built with different parameters")
        out = ConeAccumulator(self.n_bins)
        out.moments_ = self.moments_.merged(other.moments_)
        out.histograms_ = {key: value.copy() for key, value in self.histograms_.items()}
        for key, value in other.histograms_.items():
            out.histograms_[key] = out.histograms_.get(key, 0) + value
        return out

    def result(self) -> pd.DataFrame:
        """Long table: ``layer, point, class, metric, value``."""
        rows: list[tuple[object, ...]] = []
        for key, stats in self.moments_.stats.items():
            for position, name in enumerate(_CONE_METRICS):
                rows.extend(_summary_rows(key, "cone", name, stats.at(position)))
        return _frame(rows, ["layer", "point", "class", "metric", "value"])

    def histograms(self) -> dict[tuple[int, str, str], npt.NDArray[np.int64]]:
        """Counts of I / n per (layer, point, class) in the bins ``bin_edges``."""
        return {key: value.copy() for key, value in self.histograms_.items()}


def _summary_rows(
    key: tuple[object, ...], prefix: str, name: str, stats: RunningMoments
) -> list[tuple[object, ...]]:
    """Rows ``key + (metric, value)`` summarising one streamed cone statistic."""
    if name == "mean_cosine":
        return [(*key, f"{prefix}.mean_cosine", stats.value_mean)]
    rows: list[tuple[object, ...]] = [
        (*key, f"{prefix}.{name}_mean", stats.value_mean),
        (*key, f"{prefix}.{name}_std", stats.std),
    ]
    if name == "index":
        rows.append((*key, f"{prefix}.n_inputs", float(stats.count)))
    return rows


def _frame(rows: Sequence[tuple[object, ...]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=columns)
    frame["value"] = frame["value"].astype(np.float64)
    return frame.sort_values(columns[:-1], kind="stable").reset_index(drop=True)


class HeadConeAccumulator:
    """Streams per-head cone indices per (layer, head, class): of the head outputs
    ``Z_h = A V_h`` and of the rows of the attention matrices.

    ``result()`` columns ``layer, head, class, metric, value``; metrics
    ``cone.<kind>.index_mean``, ``.index_std``, ``.normalized_mean``, ``.normalized_std``,
    ``.mean_cosine``, ``.n_inputs`` with ``<kind>`` ``head_output`` or ``attention_rows``.
    """

    KINDS = ("head_output", "attention_rows")

    def __init__(self) -> None:
        self.moments_ = GroupedMoments()  # (layer, class, kind) -> moments (metric, head)

    def update_head_outputs(
        self,
        layer: int,
        head_outputs: Tensor,
        valid: Tensor | None,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Add ``head_outputs (batch, head, seq, dk)``."""
        cone = head_output_cone_index(head_outputs, valid)
        self.update_values(layer, "head_output", cone, labels)

    def update_attention_rows(
        self,
        layer: int,
        attentions: Tensor,
        valid: Tensor | None,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Add ``attentions (batch, head, query, key)``."""
        cone = attention_rows_cone_index(attentions, valid)
        self.update_values(layer, "attention_rows", cone, labels)

    def update_values(
        self, layer: int, kind: str, cone: ConeBatch, labels: Sequence[str] | None = None
    ) -> None:
        """Add precomputed statistics (tensors ``(batch, head)``) of ``kind``."""
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        values = _per_input_values(cone)  # (batch, metric, head): element-wise moments
        for label, idx in class_groups(labels, values.shape[0]):
            self.moments_.add((layer, label, kind), values[idx])

    def merge(self, other: HeadConeAccumulator) -> HeadConeAccumulator:
        """A new accumulator with both inputs."""
        out = HeadConeAccumulator()
        out.moments_ = self.moments_.merged(other.moments_)
        return out

    def result(self) -> pd.DataFrame:
        """Long table: ``layer, head, class, metric, value``."""
        rows: list[tuple[object, ...]] = []
        for (layer, label, kind), stats in self.moments_.stats.items():
            for position, name in enumerate(_CONE_METRICS):
                for head in range(np.asarray(stats.count).shape[1]):
                    moments = stats.at((position, head))
                    rows.extend(_summary_rows((layer, head, label), f"cone.{kind}", name, moments))
        return _frame(rows, ["layer", "head", "class", "metric", "value"])


class ClassConeAccumulator:
    """Cone index of the ``[CLS]`` vectors of all inputs of each class, per layer (DESIGN 3.1:
    how coherent a class is). The sum of unit vectors is additive, so this merges exactly.

    ``result()`` columns ``layer, point, class, metric, value``; metrics ``cls.cone.index``,
    ``cls.cone.normalized``, ``cls.cone.mean_cosine``, ``cls.cone.n_inputs``.
    """

    def __init__(self) -> None:
        self.sums_: dict[tuple[int, str, str], FloatArray] = {}
        self.counts_: dict[tuple[int, str, str], float] = {}

    def update(
        self,
        layer: int,
        cls_vectors: Tensor,
        labels: Sequence[str] | None = None,
        point: str = "layer_output",
    ) -> None:
        """Add ``cls_vectors (batch, d)`` (the ``[CLS]`` rows of the stream at ``point``).

        The unit vectors are formed once in float64 (few rows: exact) and summed per class by
        one product with the class membership matrix."""
        if cls_vectors.ndim != 2:
            raise ValueError(f"cls_vectors must be (batch, d), got {tuple(cls_vectors.shape)}")
        batch = cls_vectors.shape[0]
        groups = list(class_groups(labels, batch))
        x = cls_vectors.detach().to(torch.float64)
        norms = torch.linalg.vector_norm(x, dim=-1)
        keep = norms > 0
        weights = torch.where(keep, 1.0 / norms.clamp_min(torch.finfo(x.dtype).tiny), 0.0)
        member = membership(groups, batch, x.device)
        unit_sums = _numpy(member @ (weights[:, None] * x))
        counts = _numpy(member @ keep.to(torch.float64))
        for row, (label, _) in enumerate(groups):
            key = (layer, point, label)
            self.sums_[key] = self.sums_.get(key, 0.0) + unit_sums[row]
            self.counts_[key] = self.counts_.get(key, 0.0) + float(counts[row])

    def merge(self, other: ClassConeAccumulator) -> ClassConeAccumulator:
        """A new accumulator with both inputs."""
        out = ClassConeAccumulator()
        out.sums_ = copy.deepcopy(self.sums_)
        out.counts_ = dict(self.counts_)
        for key, value in other.sums_.items():
            out.sums_[key] = out.sums_.get(key, 0.0) + value
            out.counts_[key] = out.counts_.get(key, 0.0) + other.counts_[key]
        return out

    def result(self) -> pd.DataFrame:
        """Long table: ``layer, point, class, metric, value``."""
        rows: list[tuple[object, ...]] = []
        for key, unit_sum in self.sums_.items():
            cone = cone_stats_from_unit_sum(
                torch.from_numpy(unit_sum), torch.tensor(self.counts_[key])
            )
            for name, value in (
                ("index", cone.index),
                ("normalized", cone.normalized),
                ("mean_cosine", cone.mean_cosine),
                ("n_inputs", cone.n_valid),
            ):
                rows.append((*key, f"cls.cone.{name}", float(value)))
        return _frame(rows, ["layer", "point", "class", "metric", "value"])
