"""The cone index of DESIGN 3.1: how far a set of token vectors has collapsed into a narrow cone.

For vectors ``x_1..x_n`` (zero vectors skipped) the cone index is the length of the sum of their
unit vectors, ``I = || sum_i x_i / ||x_i|| ||_2`` in ``[0, n]``. ``I / n`` is the mean resultant
length of directional statistics and ``(I^2 - n) / (n (n - 1))`` the mean pairwise cosine
(Ethayarajh 2019's anisotropy), because ``I^2 = n + sum_{i != j} cos(x_i, x_j)``.

Pure functions compute it per input (token vectors, head outputs, attention rows); three
mergeable accumulators aggregate it over inputs per class.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import Tensor

from bertgeom.measures.base import ALL_CLASSES

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]
Key = tuple[object, ...]


@dataclass(frozen=True)
class ConeBatch:
    """Cone statistics of several vector sets, all tensors of one shape (e.g. ``batch`` or
    ``batch head``), float64.

    ``index`` = I, ``n_valid`` = number of non-zero valid vectors n, ``normalized`` = I / n
    (NaN when n = 0), ``mean_cosine`` = (I^2 - n) / (n (n - 1)) (NaN when n < 2).
    """

    index: Tensor
    n_valid: Tensor
    normalized: Tensor
    mean_cosine: Tensor


def cone_stats_from_unit_sum(unit_sum: Tensor, n_valid: Tensor) -> ConeBatch:
    """Cone statistics from the sum of unit vectors ``unit_sum (..., d)`` and counts ``(...)``.

    I = ||unit_sum||_2; I / n; mean cosine (I^2 - n) / (n (n - 1)).
    """
    unit_sum = unit_sum.to(torch.float64)
    n = n_valid.to(torch.float64)
    index = torch.linalg.vector_norm(unit_sum, dim=-1)
    nan = torch.full_like(index, math.nan)
    normalized = torch.where(n > 0, index / n.clamp_min(1.0), nan)
    pairs = n * (n - 1.0)
    mean_cosine = torch.where(n > 1, (index**2 - n) / pairs.clamp_min(1.0), nan)
    return ConeBatch(index, n, normalized, mean_cosine)


def unit_vector_sum(vectors: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Sum of the unit vectors of the rows of ``vectors (..., n, d)`` and their count ``(...)``.

    Rows with ``valid`` False (``valid`` broadcastable to ``(..., n)``) and zero rows are skipped.
    The sum is the product ``w^T X`` with ``w_i = 1 / ||x_i||`` (0 for skipped rows), taken in
    the vectors' precision (at least float32: float32 hidden states give ~1e-7 relative error,
    float64 ones are exact) with no ``(..., n, d)`` temporary; returned as float64.
    """
    x = vectors.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    norms = torch.linalg.vector_norm(x, dim=-1)
    keep = norms > 0
    if valid is not None:
        keep = keep & valid.to(torch.bool)
    weights = torch.where(keep, 1.0 / norms.clamp_min(torch.finfo(x.dtype).tiny), 0.0)
    unit_sum = (weights.unsqueeze(-2) @ x).squeeze(-2)
    return unit_sum.to(torch.float64), keep.sum(dim=-1)


def cone_index(vectors: Tensor) -> float:
    """Cone index of the rows of ``vectors (n, d)``: I = || sum_i x_i / ||x_i|| ||_2, zero rows
    skipped (DESIGN 3.1)."""
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be (n, d), got shape {tuple(vectors.shape)}")
    unit_sum, _ = unit_vector_sum(vectors.to(torch.float64))  # the reference: float64
    return float(torch.linalg.vector_norm(unit_sum))


def valid_tokens(
    attention_mask: Tensor | None, batch: int, seq: int, include_padding: bool = False
) -> Tensor:
    """Boolean ``(batch, seq)`` mask of the tokens a statistic uses: real tokens (mask 1), or all
    positions when ``include_padding`` (the authors' code) or no mask is given."""
    if attention_mask is None or include_padding:
        device = attention_mask.device if attention_mask is not None else None
        return torch.ones(batch, seq, dtype=torch.bool, device=device)
    if tuple(attention_mask.shape) != (batch, seq):
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match (batch, seq) "
            f"= {(batch, seq)}"
        )
    return attention_mask.to(torch.bool)


def cone_index_batch(
    hidden: Tensor, attention_mask: Tensor | None = None, include_padding: bool = False
) -> ConeBatch:
    """Cone index of the token vectors of each input: ``hidden (batch, seq, d)`` -> ``(batch,)``.

    Padding (``attention_mask`` 0) is skipped unless ``include_padding``.
    """
    batch, seq, _ = hidden.shape
    valid = valid_tokens(attention_mask, batch, seq, include_padding)
    return cone_stats_from_unit_sum(*unit_vector_sum(hidden, valid))


def head_output_cone_index(
    head_outputs: Tensor, attention_mask: Tensor | None = None, include_padding: bool = False
) -> ConeBatch:
    """Cone index of each head's output rows ``Z_h = A V_h``: ``head_outputs (batch, head, seq,
    dk)`` -> ``(batch, head)``, over the valid tokens."""
    batch, _, seq, _ = head_outputs.shape
    valid = valid_tokens(attention_mask, batch, seq, include_padding)
    return cone_stats_from_unit_sum(*unit_vector_sum(head_outputs, valid[:, None, :]))


def attention_rows_cone_index(
    attentions: Tensor, attention_mask: Tensor | None = None, include_padding: bool = False
) -> ConeBatch:
    """Cone index of the rows of each attention matrix: ``attentions (batch, head, query, key)``
    -> ``(batch, head)``.

    Rows and columns are restricted to the valid tokens (the padding columns are set to zero,
    which changes neither norms nor sums). I = n when all queries attend alike.

    The sum of unit rows is the product ``w^T A`` with ``w_i = 1 / ||a_i||`` (0 for skipped
    rows), computed in the attention's precision: a float32 matrix-vector product instead of
    float64 copies of the whole ``(batch, head, query, key)`` tensor (a twelfth of the time);
    the relative error of I is about 1e-6 in float32.
    """
    batch, _, seq, seq_k = attentions.shape
    if seq != seq_k:
        raise ValueError(f"attention matrices must be square, got {tuple(attentions.shape)}")
    valid = valid_tokens(attention_mask, batch, seq, include_padding)
    rows = attentions if bool(valid.all()) else attentions * valid[:, None, None, :]
    norms = torch.linalg.vector_norm(rows, dim=-1)
    keep = (norms > 0) & valid[:, None, :]
    weights = torch.where(keep, 1.0 / norms.clamp_min(torch.finfo(rows.dtype).tiny), 0.0)
    unit_sum = (weights.unsqueeze(-2) @ rows).squeeze(-2)
    return cone_stats_from_unit_sum(unit_sum, keep.sum(dim=-1))


@dataclass
class RunningMoments:
    """Count, mean and sum of squared deviations of a stream of scalars, or of arrays of a
    fixed shape (e.g. one value per head) element by element, float64; ``merged`` combines two
    streams exactly (Chan, Golub and LeVeque 1979)."""

    count: FloatArray | float = 0.0
    mean: FloatArray | float = 0.0
    m2: FloatArray | float = 0.0

    def merged(self, other: RunningMoments) -> RunningMoments:
        """The moments of both streams together."""
        n = np.add(self.count, other.count)
        share = np.divide(other.count, n, out=np.zeros_like(n, dtype=np.float64), where=n > 0)
        delta = np.subtract(other.mean, self.mean)
        mean = self.mean + delta * share
        m2 = self.m2 + other.m2 + delta**2 * np.multiply(self.count, share)
        return RunningMoments(n, mean, m2)

    @classmethod
    def of(cls, values: FloatArray) -> RunningMoments:
        """The moments of ``values`` along its first axis (NaN entries dropped): scalars for
        ``values (n,)``, arrays of shape ``s`` for ``values (n, *s)``."""
        present = ~np.isnan(values)
        count = present.sum(axis=0).astype(np.float64)
        total = np.where(present, values, 0.0).sum(axis=0)
        mean = np.divide(total, count, out=np.zeros_like(count), where=count > 0)
        m2 = np.where(present, (values - mean) ** 2, 0.0).sum(axis=0)
        return cls(count, mean, m2)

    def at(self, index: int) -> RunningMoments:
        """The moments of element ``index`` of an array stream."""
        return RunningMoments(
            *(float(np.asarray(v)[index]) for v in (self.count, self.mean, self.m2))
        )

    @property
    def std(self) -> float:
        """Sample standard deviation sqrt(m2 / (count - 1)); NaN for fewer than two values
        (of a scalar stream)."""
        count = float(self.count)
        return math.sqrt(float(self.m2) / (count - 1)) if count > 1 else math.nan

    @property
    def value_mean(self) -> float:
        """The mean, NaN when empty (of a scalar stream)."""
        return float(self.mean) if float(self.count) > 0 else math.nan


class GroupedMoments:
    """``RunningMoments`` per hashable key, mergeable."""

    def __init__(self) -> None:
        self.stats: dict[Key, RunningMoments] = {}

    def add(self, key: Key, values: FloatArray) -> None:
        """Stream ``values`` (``(n,)``, or ``(n, *s)`` for element-wise moments) into ``key``."""
        batch = RunningMoments.of(values)
        previous = self.stats.get(key)
        self.stats[key] = batch if previous is None else previous.merged(batch)

    def merged(self, other: GroupedMoments) -> GroupedMoments:
        """A new object holding both."""
        out = GroupedMoments()
        out.stats = dict(self.stats)
        for key, value in other.stats.items():
            previous = out.stats.get(key)
            out.stats[key] = value if previous is None else previous.merged(value)
        return out


def class_groups(labels: Sequence[str] | None, batch: int) -> Iterator[tuple[str, IndexArray]]:
    """Yield ``(class, indices)`` for ``"all"`` and for each class present in ``labels``."""
    yield ALL_CLASSES, np.arange(batch)
    if labels is None:
        return
    if len(labels) != batch:
        raise ValueError(f"{len(labels)} labels for a batch of {batch} inputs")
    label_array = np.asarray([str(label) for label in labels])
    for label in sorted(set(label_array.tolist())):
        if label == ALL_CLASSES:
            raise ValueError(f"{ALL_CLASSES!r} is reserved for the aggregate over all classes")
        yield label, np.flatnonzero(label_array == label)


def _numpy(tensor: Tensor) -> FloatArray:
    return tensor.detach().to(torch.float64).cpu().numpy()


_CONE_METRICS = ("index", "normalized", "mean_cosine")


def _per_input_values(cone: ConeBatch) -> dict[str, FloatArray]:
    """The statistics to aggregate, as numpy; sets without any vector are left out (NaN)."""
    values = {name: _numpy(getattr(cone, name)) for name in _CONE_METRICS}
    values["index"] = np.where(_numpy(cone.n_valid) > 0, values["index"], np.nan)
    return values


class ConeAccumulator:
    """Streams the per-input cone index of token vectors per (layer, point, class).

    ``result()`` columns ``layer, point, class, metric, value``; metrics ``cone.index_mean``,
    ``cone.index_std`` (sample std over inputs), ``cone.normalized_mean``,
    ``cone.normalized_std``, ``cone.mean_cosine`` (mean over inputs with n >= 2 of the per-input
    mean pairwise cosine) and ``cone.n_inputs``; inputs without any valid non-zero vector are left
    out. ``histograms()`` gives fixed-bin counts of I / n over ``[0, 1]`` (``n_bins`` bins, edges
    ``bin_edges``).
    """

    def __init__(self, n_bins: int = 50, include_padding: bool = False) -> None:
        self.n_bins = n_bins
        self.include_padding = include_padding
        self.bin_edges: FloatArray = np.linspace(0.0, 1.0, n_bins + 1)
        self.moments_ = GroupedMoments()
        self.histograms_: dict[tuple[int, str, str], npt.NDArray[np.int64]] = {}

    def update(
        self,
        layer: int,
        point: str,
        hidden: Tensor,
        attention_mask: Tensor | None,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Add the inputs of ``hidden (batch, seq, d)`` measured at (``layer``, ``point``)."""
        cone = cone_index_batch(hidden, attention_mask, self.include_padding)
        self.update_values(layer, point, cone, labels)

    def update_values(
        self, layer: int, point: str, cone: ConeBatch, labels: Sequence[str] | None = None
    ) -> None:
        """Add precomputed per-input cone statistics (tensors of shape ``(batch,)``)."""
        values = _per_input_values(cone)
        batch = values["index"].shape[0]
        for label, idx in class_groups(labels, batch):
            for name, array in values.items():
                self.moments_.add((layer, point, label, name), array[idx])
            counts, _ = np.histogram(np.clip(values["normalized"][idx], 0, 1), self.bin_edges)
            key = (layer, point, label)
            previous = self.histograms_.get(key, np.zeros(self.n_bins, dtype=np.int64))
            self.histograms_[key] = previous + counts.astype(np.int64)

    def merge(self, other: ConeAccumulator) -> ConeAccumulator:
        """A new accumulator with both inputs."""
        if (self.n_bins, self.include_padding) != (other.n_bins, other.include_padding):
            raise ValueError("cannot merge ConeAccumulators built with different parameters")
        out = ConeAccumulator(self.n_bins, self.include_padding)
        out.moments_ = self.moments_.merged(other.moments_)
        out.histograms_ = {key: value.copy() for key, value in self.histograms_.items()}
        for key, value in other.histograms_.items():
            out.histograms_[key] = out.histograms_.get(key, 0) + value
        return out

    def result(self) -> pd.DataFrame:
        """Long table: ``layer, point, class, metric, value``."""
        rows: list[tuple[object, ...]] = []
        for key, stats in self.moments_.stats.items():
            rows.extend(_summary_rows(key[:-1], "cone", str(key[-1]), stats))
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

    def __init__(self, include_padding: bool = False) -> None:
        self.include_padding = include_padding
        self.moments_ = GroupedMoments()

    def update_head_outputs(
        self,
        layer: int,
        head_outputs: Tensor,
        attention_mask: Tensor | None,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Add ``head_outputs (batch, head, seq, dk)``."""
        cone = head_output_cone_index(head_outputs, attention_mask, self.include_padding)
        self.update_values(layer, "head_output", cone, labels)

    def update_attention_rows(
        self,
        layer: int,
        attentions: Tensor,
        attention_mask: Tensor | None,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Add ``attentions (batch, head, query, key)``."""
        cone = attention_rows_cone_index(attentions, attention_mask, self.include_padding)
        self.update_values(layer, "attention_rows", cone, labels)

    def update_values(
        self, layer: int, kind: str, cone: ConeBatch, labels: Sequence[str] | None = None
    ) -> None:
        """Add precomputed statistics (tensors ``(batch, head)``) of ``kind``."""
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        values = _per_input_values(cone)
        batch = values["index"].shape[0]
        for label, idx in class_groups(labels, batch):
            for name, array in values.items():  # element-wise over the heads
                self.moments_.add((layer, label, kind, name), array[idx])

    def merge(self, other: HeadConeAccumulator) -> HeadConeAccumulator:
        """A new accumulator with both inputs."""
        if self.include_padding != other.include_padding:
            raise ValueError("cannot merge HeadConeAccumulators built with different parameters")
        out = HeadConeAccumulator(self.include_padding)
        out.moments_ = self.moments_.merged(other.moments_)
        return out

    def result(self) -> pd.DataFrame:
        """Long table: ``layer, head, class, metric, value``."""
        rows: list[tuple[object, ...]] = []
        for key, stats in self.moments_.stats.items():
            layer, label, kind, name = key
            for head in range(np.asarray(stats.count).shape[0]):
                rows.extend(
                    _summary_rows((layer, head, label), f"cone.{kind}", str(name), stats.at(head))
                )
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
        """Add ``cls_vectors (batch, d)`` (the ``[CLS]`` rows of the stream at ``point``)."""
        if cls_vectors.ndim != 2:
            raise ValueError(f"cls_vectors must be (batch, d), got {tuple(cls_vectors.shape)}")
        batch = cls_vectors.shape[0]
        for label, idx in class_groups(labels, batch):
            rows = cls_vectors[torch.as_tensor(idx, device=cls_vectors.device, dtype=torch.long)]
            unit_sum, count = unit_vector_sum(rows.to(torch.float64))  # few rows: exact
            key = (layer, point, label)
            self.sums_[key] = self.sums_.get(key, 0.0) + _numpy(unit_sum)
            self.counts_[key] = self.counts_.get(key, 0.0) + float(count)

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
