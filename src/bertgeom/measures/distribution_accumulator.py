"""The streamed, mergeable distribution of the token stream (DESIGN 3.4) per (layer, point,
class): additive float64 statistics of the valid token vectors (``distribution_stats`` turns
them into moments, normality tests and participation ratios).

An update scans each class's valid tokens once for their power sums, histogram counts and a
copy of them (``token_scan.scan_tokens``), and adds their Gram matrix about their mean, known
from the power sums, to the class's and ``all``'s (``token_statistics.add_grams``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import Tensor

from bertgeom.measures.base import ALL_CLASSES
from bertgeom.measures.distribution_stats import (
    Moments,
    moments_from_power_sums,
    outlier_dimensions,
    summary_values,
)
from bertgeom.measures.grouping import FloatArray, IndexArray, class_groups
from bertgeom.measures.power_sums import PowerSums
from bertgeom.measures.token_scan import scan_tokens
from bertgeom.measures.token_statistics import Binning, add_grams, symmetric_gram
from bertgeom.measures.tokens import valid_or_all


@dataclass
class _StreamState:
    """Additive statistics of the token vectors of one (layer, point, class); of the Gram
    matrix only the upper triangle is kept (``add_grams``; the lower one is zero)."""

    tokens: float
    sums: PowerSums
    histogram: npt.NDArray[np.int64]
    gram: FloatArray | None = field(default=None)

    def copy(self, gram: bool = True) -> _StreamState:
        """An independent copy (without the Gram matrix unless ``gram``)."""
        kept = self.gram.copy() if gram and self.gram is not None else None
        return _StreamState(self.tokens, self.sums.copy(), self.histogram.copy(), kept)

    def add_(self, other: _StreamState) -> None:
        """Add ``other`` in place (no new arrays: the accumulators' hot path); without a Gram
        matrix on either side the sum has none."""
        self.add_counts_(other)
        if self.gram is not None:
            if other.gram is None:
                self.gram = None
            else:
                self.gram += other.gram

    def add_counts_(self, other: _StreamState) -> None:
        """Add ``other``'s count, power sums and histogram in place (not its Gram matrix)."""
        self.tokens += other.tokens
        self.sums.add_(other.sums)
        self.histogram += other.histogram


class _Additive(Protocol):
    def copy(self) -> Self: ...

    def add_(self, other: Self) -> None: ...


_State = TypeVar("_State", bound=_Additive)


def add_state(states: dict[Any, _State], key: object, state: _State) -> None:
    """Add ``state`` to ``states[key]`` in place, or store a copy of its own (states are
    added to in place, so none may be shared)."""
    if key in states:
        states[key].add_(state)
    else:
        states[key] = state.copy()


def merged_states(first: dict[Any, _State], second: dict[Any, _State]) -> dict[Any, _State]:
    """New states holding both dictionaries' (``first`` and ``second`` are left unchanged)."""
    out = {key: state.copy() for key, state in first.items()}
    for key, state in second.items():
        add_state(out, key, state)
    return out


def mean_centre(sums: PowerSums, like: Tensor) -> Tensor | None:
    """The per-coordinate mean ``s1 / n`` of ``sums`` as a centre for ``add_grams`` (in
    ``like``'s precision and device); None when there are no tokens."""
    n = float(np.asarray(sums.n).reshape(-1)[0]) if np.asarray(sums.n).size else 0.0
    if not n > 0:
        return None
    mean = torch.from_numpy(np.asarray(sums.s1) / n)
    dtype = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32
    return mean.to(device=like.device, dtype=dtype)


class DistributionAccumulator:
    """Streams the distribution of the hidden coordinates per (layer, point, class).

    ``update`` takes the stream at one measuring point, ``hidden (batch, seq, d)`` (for
    ``head_output``, the heads' outputs concatenated, ``(batch, seq, heads * dk)``), and uses its
    valid tokens. Classes: ``"all"`` always, each label too when ``per_class``.
    ``result()`` columns ``layer, point, class, metric, value``; metrics (prefix ``dist.``):
    ``n_tokens``, ``n_values``, ``mean``, ``variance``, ``skewness``, ``excess_kurtosis`` (pooled
    over valid tokens and coordinates), ``normaltest_k2``, ``normaltest_pvalue``,
    ``participation_ratio`` (of the token covariance: its effective dimension), ``outlier_count``,
    ``max_mean_abs_ratio`` (largest mean |x_j| over its median).

    Memory is O(keys x d^2) with ``covariance`` (4.7 MB per key at d = 768), else O(keys x d);
    ``class_covariance=False`` keeps the covariance of the ``all`` keys only (the per-class
    ``dist.participation_ratio`` is then NaN).
    """

    def __init__(
        self,
        histogram_range: tuple[float, float] = (-10.0, 10.0),
        n_bins: int = 200,
        outlier_factor: float = 6.0,
        per_class: bool = False,
        covariance: bool = True,
        class_covariance: bool = True,
    ) -> None:
        self.histogram_range = histogram_range
        self.class_covariance = class_covariance
        self.n_bins = n_bins
        self.outlier_factor = outlier_factor
        self.per_class = per_class
        self.covariance = covariance
        self.bin_edges: FloatArray = np.linspace(histogram_range[0], histogram_range[1], n_bins + 1)
        self.states_: dict[tuple[int, str, str], _StreamState] = {}
        self._binning = Binning(self.bin_edges)

    def _params(self) -> tuple[object, ...]:
        return (
            self.histogram_range,
            self.n_bins,
            self.outlier_factor,
            self.per_class,
            self.covariance,
            self.class_covariance,
        )

    def update(
        self,
        layer: int,
        point: str,
        hidden: Tensor,
        valid: Tensor | None,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Add the ``valid (batch, seq)`` token vectors of ``hidden (batch, seq, d)`` at
        (``layer``, ``point``)."""
        batch, seq, _ = hidden.shape
        valid = valid_or_all(valid, batch, seq, hidden.device)
        groups = list(class_groups(labels if self.per_class else None, batch))
        for label, idx in groups[1:] if len(groups) > 1 else groups:
            self._add_tokens(layer, point, label, hidden, valid, idx)

    def _add_tokens(
        self, layer: int, point: str, label: str, hidden: Tensor, valid: Tensor, idx: IndexArray
    ) -> None:
        """Add the valid tokens of the inputs ``idx`` (class ``label``) to its key and to
        ``all``'s: one scan of them for the counts and power sums (and a copy of them when a
        Gram matrix is kept), and one Gram product for both keys."""
        gram_keys = []
        for key_label in dict.fromkeys((label, ALL_CLASSES)):  # in order, not by hash
            if self.covariance and (key_label == ALL_CLASSES or self.class_covariance):
                gram_keys.append((layer, point, key_label))
        scan = scan_tokens(hidden, valid, idx, self._binning, keep_rows=bool(gram_keys))
        assert scan.counts is not None
        state = _StreamState(float(scan.n), scan.sums, scan.counts)
        for key_label in dict.fromkeys((label, ALL_CLASSES)):
            key = (layer, point, key_label)
            if key in self.states_:
                self.states_[key].add_counts_(state)
            else:  # a copy of its own: states are added to in place
                self.states_[key] = state.copy()
        if not gram_keys or scan.rows is None:
            return
        grams = []
        for key in gram_keys:
            target = self.states_[key]
            if target.gram is None:
                d = hidden.shape[2]
                target.gram = np.zeros((d, d))
            grams.append(target.gram)
        centre = mean_centre(scan.sums, scan.rows)
        add_grams(grams, scan.rows, scan.sums.s1, centre, overwrite=scan.rows_are_copy)

    def merge(self, other: DistributionAccumulator) -> DistributionAccumulator:
        """A new accumulator with both inputs."""
        if self._params() != other._params():
            raise ValueError(
                "cannot merge DistributionAccumulators built with different parameters"
            )
        out = DistributionAccumulator(
            self.histogram_range,
            self.n_bins,
            self.outlier_factor,
            self.per_class,
            self.covariance,
            self.class_covariance,
        )
        out.states_ = merged_states(self.states_, other.states_)
        return out

    def _coordinate_moments(self, state: _StreamState) -> tuple[Moments, npt.NDArray[np.bool_]]:
        moments = moments_from_power_sums(state.sums)
        flags = outlier_dimensions(moments.mean_abs, np.sqrt(moments.variance), self.outlier_factor)
        return moments, flags

    def result(self) -> pd.DataFrame:
        """Long table: ``layer, point, class, metric, value``."""
        rows: list[tuple[object, ...]] = []
        for key, state in self.states_.items():
            gram = None if state.gram is None else symmetric_gram(state.gram)
            values = summary_values(state.tokens, state.sums, gram, self.outlier_factor)
            rows.extend((*key, f"dist.{name}", value) for name, value in values.items())
        frame = pd.DataFrame(rows, columns=["layer", "point", "class", "metric", "value"])
        frame["value"] = frame["value"].astype(np.float64)
        return frame.sort_values(["layer", "point", "class", "metric"]).reset_index(drop=True)

    def per_coordinate(self) -> pd.DataFrame:
        """One row per (layer, point, class, coordinate): ``n, mean, variance, mean_abs,
        skewness, excess_kurtosis, is_outlier``."""
        frames = []
        for (layer, point, label), state in sorted(self.states_.items()):
            moments, flags = self._coordinate_moments(state)
            frame = pd.DataFrame(
                {
                    "coordinate": np.arange(flags.shape[0]),
                    "n": moments.n,
                    "mean": moments.mean,
                    "variance": moments.variance,
                    "mean_abs": moments.mean_abs,
                    "skewness": moments.skewness,
                    "excess_kurtosis": moments.excess_kurtosis,
                    "is_outlier": flags,
                }
            )
            frame.insert(0, "class", label)
            frame.insert(0, "point", point)
            frame.insert(0, "layer", layer)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def outlier_dimensions(self, layer: int, point: str, label: str = ALL_CLASSES) -> list[int]:
        """The outlier coordinates at (layer, point, class)."""
        _, flags = self._coordinate_moments(self.states_[(layer, point, label)])
        return [int(j) for j in np.flatnonzero(flags)]

    def histograms(self) -> dict[tuple[int, str, str], npt.NDArray[np.int64]]:
        """Counts per (layer, point, class): ``[underflow, bins of bin_edges..., overflow]``."""
        return {key: state.histogram.copy() for key, state in self.states_.items()}
