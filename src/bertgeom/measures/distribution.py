"""The distribution of the token stream (DESIGN 3.4), streamed and mergeable.

Everything here is computed from additive float64 statistics of the valid token vectors, so that
merging two accumulators is adding their arrays: power sums ``sum x^k`` (k = 0..4) and
``sum |x|`` per coordinate (the pooled sums are their totals over coordinates), the Gram matrix
``sum x x^T`` for the covariance, and fixed-bin histogram counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from scipy import special
from torch import Tensor

from bertgeom.measures.base import ALL_CLASSES
from bertgeom.measures.cone import FloatArray, class_groups, valid_tokens


@dataclass
class PowerSums:
    """``n = sum 1``, ``s1..s4 = sum x^k`` and ``abs1 = sum |x|`` of a stream, float64 arrays of one
    shape (``()`` pooled, ``(d,)`` per coordinate). Merging is ``+``."""

    n: FloatArray
    s1: FloatArray
    s2: FloatArray
    s3: FloatArray
    s4: FloatArray
    abs1: FloatArray

    @classmethod
    def of(cls, values: Tensor) -> PowerSums:
        """Per-coordinate power sums of ``values (n, d)`` (or pooled sums of ``values (n,)``),
        in float64. The powers are built in place in one float64 buffer (``x``, ``x^2``,
        ``x^3``, ``x^4``, then ``|x|``): two allocations instead of six, which on the CPU is
        most of the cost (fresh megabyte buffers fault their pages in)."""
        x = values.detach().to(torch.float64)
        if x.data_ptr() == values.data_ptr():
            x = x.clone()  # float64 input: do not power the caller's tensor in place
        power = x.clone()
        sums = [power.sum(0)]
        for _ in range(3):
            sums.append(power.mul_(x).sum(0))
        sums.append(x.abs_().sum(0))
        arrays = [s.cpu().numpy().copy() for s in sums]  # owned: no tensor kept alive
        n = np.full(arrays[0].shape, float(x.shape[0]))
        return cls(n, *arrays)

    def __add__(self, other: PowerSums) -> PowerSums:
        return PowerSums(
            self.n + other.n,
            self.s1 + other.s1,
            self.s2 + other.s2,
            self.s3 + other.s3,
            self.s4 + other.s4,
            self.abs1 + other.abs1,
        )

    def pooled(self) -> PowerSums:
        """The sums over all coordinates (one pooled sample of all values)."""
        return PowerSums(*(np.asarray(getattr(self, f).sum()) for f in _FIELDS))


_FIELDS = ("n", "s1", "s2", "s3", "s4", "abs1")


@dataclass(frozen=True)
class Moments:
    """Sample moments (same shape as the power sums they come from).

    ``variance`` is the population variance m2 (ddof = 0); ``skewness`` g1 = m3 / m2^1.5 and
    ``excess_kurtosis`` g2 = m4 / m2^2 - 3 are the biased estimators of ``scipy.stats.skew`` and
    ``scipy.stats.kurtosis`` (defaults). NaN where m2 = 0.
    """

    n: FloatArray
    mean: FloatArray
    variance: FloatArray
    skewness: FloatArray
    excess_kurtosis: FloatArray
    mean_abs: FloatArray


def moments_from_power_sums(sums: PowerSums) -> Moments:
    """Central moments from raw power sums: with a = mean,
    m2 = S2/n - a^2, m3 = S3/n - 3 a S2/n + 2 a^3, m4 = S4/n - 4 a S3/n + 6 a^2 S2/n - 3 a^4.

    Float64 raw sums lose about log10((|a| / sd)^4) digits; for hidden states (|a| / sd below
    ~30 even in outlier dimensions) this leaves better than 1e-9 relative accuracy.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        n = sums.n
        a = sums.s1 / n
        e2, e3, e4 = sums.s2 / n, sums.s3 / n, sums.s4 / n
        m2 = np.maximum(e2 - a * a, 0.0)
        m3 = e3 - 3 * a * e2 + 2 * a**3
        m4 = e4 - 4 * a * e3 + 6 * a * a * e2 - 3 * a**4
        positive = m2 > 0
        skew = np.where(positive, m3 / np.where(positive, m2, 1.0) ** 1.5, np.nan)
        kurt = np.where(positive, m4 / np.where(positive, m2, 1.0) ** 2 - 3.0, np.nan)
        return Moments(n, a, m2, skew, kurt, sums.abs1 / n)


def dagostino_k2(n: float, skewness: float, excess_kurtosis: float) -> tuple[float, float]:
    """D'Agostino-Pearson K^2 = Z_s^2 + Z_k^2 and its chi^2(2) p-value exp(-K^2 / 2) from a
    sample's size and biased skewness / excess kurtosis, with the transforms of
    ``scipy.stats.skewtest`` (D'Agostino 1970; needs n >= 8) and ``scipy.stats.kurtosistest``
    (Anscombe and Glynn 1983), as ``scipy.stats.normaltest`` combines them. NaN for n < 8."""
    if not n >= 8 or math.isnan(skewness) or math.isnan(excess_kurtosis):
        return math.nan, math.nan
    y = skewness * math.sqrt((n + 1) * (n + 3) / (6.0 * (n - 2)))
    beta2 = 3.0 * (n**2 + 27 * n - 70) * (n + 1) * (n + 3) / ((n - 2) * (n + 5) * (n + 7) * (n + 9))
    w2 = -1 + math.sqrt(2 * (beta2 - 1))
    delta = 1 / math.sqrt(0.5 * math.log(w2))
    alpha = math.sqrt(2.0 / (w2 - 1))
    y = 1.0 if y == 0 else y
    z_skew = delta * math.log(y / alpha + math.sqrt((y / alpha) ** 2 + 1))

    b2 = excess_kurtosis + 3.0
    expected = 3.0 * (n - 1) / (n + 1)
    var_b2 = 24.0 * n * (n - 2) * (n - 3) / ((n + 1) ** 2 * (n + 3) * (n + 5))
    x = (b2 - expected) / math.sqrt(var_b2)
    sqrt_beta1 = (
        6.0
        * (n * n - 5 * n + 2)
        / ((n + 7) * (n + 9))
        * math.sqrt(6.0 * (n + 3) * (n + 5) / (n * (n - 2) * (n - 3)))
    )
    a = 6.0 + 8.0 / sqrt_beta1 * (2.0 / sqrt_beta1 + math.sqrt(1 + 4.0 / sqrt_beta1**2))
    term1 = 1 - 2 / (9.0 * a)
    denom = 1 + x * math.sqrt(2 / (a - 4.0))
    if denom == 0:
        return math.nan, math.nan
    term2 = math.copysign(((1 - 2.0 / a) / abs(denom)) ** (1 / 3), denom)
    z_kurt = (term1 - term2) / math.sqrt(2 / (9.0 * a))
    k2 = z_skew**2 + z_kurt**2
    return k2, float(special.chdtrc(2, k2))


def histogram_counts(values: Tensor, edges: FloatArray) -> npt.NDArray[np.int64]:
    """Counts of ``values`` (any shape) in the bins ``[e_i, e_{i+1})`` of ``edges`` (length B+1),
    with underflow (``< e_0``) first and overflow (``>= e_B``) last: length B + 2.

    Equal-width edges (the accumulators' case) take the bin ``floor((x - e_0) / width)`` in the
    values' precision (at least float32), several times faster than a binary search over the
    edges (``torch.bucketize``, used for other edges, in float64); a value within rounding of
    an edge (~1e-7 relative in float32) may count in the bin next to it.
    """
    flat = values.detach().reshape(-1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.to(torch.float32)
    n_bins = len(edges) - 1
    widths = np.diff(edges)
    if n_bins >= 1 and np.allclose(widths, widths[0], rtol=1e-12, atol=0):
        scale = float(n_bins / (edges[-1] - edges[0]))
        position = (flat - float(edges[0])).mul_(scale).floor_().add_(1)
        # int32 bins: half the memory of int64, and bincount reads them twice as fast.
        index = position.clamp_(0, n_bins + 1).to(torch.int32)  # 0 = underflow, B+1 = overflow
    else:
        edge_tensor = torch.as_tensor(edges, dtype=torch.float64, device=values.device)
        index = torch.bucketize(flat.to(torch.float64), edge_tensor, right=True)
    counts = torch.bincount(index, minlength=n_bins + 2)
    return counts.cpu().numpy().astype(np.int64)


def gram_matrix(tokens: Tensor, total: FloatArray | None = None) -> FloatArray:
    """``sum_i x_i x_i^T`` of the rows of ``tokens (n, d)``, float64 ``(d, d)`` (``add_gram``
    into zeros)."""
    d = tokens.shape[1]
    gram: FloatArray = np.zeros((d, d))
    add_gram(gram, tokens, total)
    return gram


def add_gram(gram: FloatArray, tokens: Tensor, total: FloatArray | None = None) -> None:
    """Add ``sum_i x_i x_i^T`` of the rows of ``tokens (n, d)`` to ``gram`` (float64 ``(d, d)``)
    in place.

    Float64 input: the product itself. Otherwise the product is taken in the input's precision
    (float32 is twice as fast) about a centre m, the float32 mean, and the exact identity
    ``sum x x^T = sum (x - m)(x - m)^T + m u^T + u m^T`` with ``u = s - n m / 2`` (s = sum x,
    in float64) restores it: centring keeps the rounding relative to the spread of the tokens
    rather than to their mean, which can be large in outlier dimensions. The rank-two term is
    added in place (no ``d x d`` temporaries: at d = 768 these passes cost more than the
    product). ``total``: s if already known.
    """
    target = torch.from_numpy(gram)
    x = tokens.detach()
    if x.shape[0] == 0:
        return
    if x.dtype == torch.float64:
        target.add_(_transposed_product(x).cpu())
        return
    centre = x.mean(dim=0)
    target.add_(_transposed_product(x - centre).cpu())
    m = centre.to(torch.float64).cpu()
    s = x.to(torch.float64).sum(dim=0).cpu() if total is None else torch.from_numpy(total)
    u = s - (x.shape[0] / 2) * m
    target.addr_(m, u).addr_(u, m)


def _transposed_product(x: Tensor, block: int = 128) -> Tensor:
    """``x^T x`` of ``x (n, d)``: the blocks on and above the diagonal, the rest mirrored (about
    two thirds of the multiplications of one product when d is a few blocks)."""
    d = x.shape[1]
    if d < 2 * block:
        return x.T @ x
    out = x.new_empty(d, d)
    for start in range(0, d, block):
        stop = min(start + block, d)
        upper = x[:, start:stop].T @ x[:, start:]
        out[start:stop, start:] = upper
        out[stop:, start:stop] = upper[:, stop - start :].T
    return out


def covariance_from_sums(n: float, total: FloatArray, gram: FloatArray) -> FloatArray:
    """Sample covariance (ddof = 1) of vectors from ``n``, ``total = sum x (d,)`` and
    ``gram = sum x x^T (d, d)``: (gram - total total^T / n) / (n - 1)."""
    if n < 2:
        return np.full_like(gram, np.nan)
    return (gram - np.outer(total, total) / n) / (n - 1)


def participation_ratio(covariance: FloatArray) -> float:
    """Effective rank of a covariance as its participation ratio (sum lambda)^2 / sum lambda^2,
    computed as trace(C)^2 / ||C||_F^2 (equal for symmetric C). In [1, d]."""
    frobenius_sq = float((covariance * covariance).sum())
    if not frobenius_sq > 0:
        return math.nan
    return float(np.trace(covariance)) ** 2 / frobenius_sq


def outlier_dimensions(
    mean_abs: FloatArray, std: FloatArray, factor: float = 6.0
) -> npt.NDArray[np.bool_]:
    """Outlier coordinates: mean |x_j| > factor * median_k mean |x_k|, or
    std_j > factor * median_k std_k. Medians are robust to the outliers themselves."""
    return (mean_abs > factor * np.median(mean_abs)) | (std > factor * np.median(std))


def layernorm_outlier_dimensions(
    weight: Tensor, bias: Tensor, n_std: float = 3.0
) -> npt.NDArray[np.bool_]:
    """Weight-based outliers in the manner of Kovaleva et al. 2021 ("BERT Busters"): coordinates
    whose LayerNorm scale or bias lies more than ``n_std`` standard deviations from the mean of
    that vector."""
    flags = np.zeros(weight.shape[0], dtype=bool)
    for vector in (weight, bias):
        v = vector.detach().to(torch.float64).cpu().numpy()
        flags |= np.abs(v - v.mean()) > n_std * v.std()
    return flags


def summary_values(
    tokens: float, sums: PowerSums, gram: FloatArray | None, outlier_factor: float = 6.0
) -> dict[str, float]:
    """The ``dist.*`` values of one stream from its token count, per-coordinate power sums and
    Gram matrix (None: no effective rank): pooled moments, D'Agostino K^2, participation ratio
    of the covariance, outlier coordinates and the largest mean |x_j| over the median."""
    pooled = moments_from_power_sums(sums.pooled())
    per_coordinate = moments_from_power_sums(sums)
    flags = outlier_dimensions(
        per_coordinate.mean_abs, np.sqrt(per_coordinate.variance), outlier_factor
    )
    k2, pvalue = dagostino_k2(
        float(pooled.n), float(pooled.skewness), float(pooled.excess_kurtosis)
    )
    rank = math.nan
    if gram is not None:
        rank = participation_ratio(covariance_from_sums(tokens, sums.s1, gram))
    median_abs = float(np.median(per_coordinate.mean_abs))
    return {
        "n_tokens": tokens,
        "n_values": float(pooled.n),
        "mean": float(pooled.mean),
        "variance": float(pooled.variance),
        "skewness": float(pooled.skewness),
        "excess_kurtosis": float(pooled.excess_kurtosis),
        "normaltest_k2": k2,
        "normaltest_pvalue": pvalue,
        "effective_rank": rank,
        "outlier_count": float(flags.sum()),
        "max_mean_abs_ratio": float(per_coordinate.mean_abs.max() / median_abs)
        if median_abs > 0
        else math.nan,
    }


@dataclass
class _StreamState:
    """Additive statistics of the token vectors of one (layer, point, class)."""

    tokens: float
    sums: PowerSums
    histogram: npt.NDArray[np.int64]
    gram: FloatArray | None = field(default=None)

    def copy(self, gram: bool = True) -> _StreamState:
        """An independent copy (without the Gram matrix unless ``gram``)."""
        sums = PowerSums(*(np.array(getattr(self.sums, f)) for f in _FIELDS))
        kept = self.gram.copy() if gram and self.gram is not None else None
        return _StreamState(self.tokens, sums, self.histogram.copy(), kept)

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
        for name in _FIELDS:
            getattr(self.sums, name).__iadd__(getattr(other.sums, name))
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


class DistributionAccumulator:
    """Streams the distribution of the hidden coordinates per (layer, point, class).

    ``update`` takes the stream at one measuring point, ``hidden (batch, seq, d)`` (for
    ``head_output``, the heads' outputs concatenated, ``(batch, seq, heads * dk)``), and uses its
    valid tokens. Classes: ``"all"`` always, each label too when ``per_class``.
    ``result()`` columns ``layer, point, class, metric, value``; metrics (prefix ``dist.``):
    ``n_tokens``, ``n_values``, ``mean``, ``variance``, ``skewness``, ``excess_kurtosis`` (pooled
    over valid tokens and coordinates), ``normaltest_k2``, ``normaltest_pvalue``,
    ``effective_rank`` (participation ratio of the token covariance), ``outlier_count``,
    ``max_mean_abs_ratio`` (largest mean |x_j| over its median).

    Memory is O(keys x d^2) with ``covariance`` (4.7 MB per key at d = 768), else O(keys x d);
    ``class_covariance=False`` keeps the covariance of the ``all`` keys only (the per-class
    ``dist.effective_rank`` is then NaN).
    """

    def __init__(
        self,
        histogram_range: tuple[float, float] = (-10.0, 10.0),
        n_bins: int = 200,
        outlier_factor: float = 6.0,
        per_class: bool = False,
        covariance: bool = True,
        include_padding: bool = False,
        class_covariance: bool = True,
    ) -> None:
        self.histogram_range = histogram_range
        self.class_covariance = class_covariance
        self.n_bins = n_bins
        self.outlier_factor = outlier_factor
        self.per_class = per_class
        self.covariance = covariance
        self.include_padding = include_padding
        self.bin_edges: FloatArray = np.linspace(histogram_range[0], histogram_range[1], n_bins + 1)
        self.states_: dict[tuple[int, str, str], _StreamState] = {}

    def _params(self) -> tuple[object, ...]:
        return (
            self.histogram_range,
            self.n_bins,
            self.outlier_factor,
            self.per_class,
            self.covariance,
            self.include_padding,
            self.class_covariance,
        )

    def update(
        self,
        layer: int,
        point: str,
        hidden: Tensor,
        attention_mask: Tensor | None,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Add the valid token vectors of ``hidden (batch, seq, d)`` at (``layer``, ``point``)."""
        batch, seq, _ = hidden.shape
        valid = valid_tokens(attention_mask, batch, seq, self.include_padding)
        groups = list(class_groups(labels if self.per_class else None, batch))
        for label, idx in groups[1:] if len(groups) > 1 else groups:
            if len(idx) == batch:
                tokens = hidden[valid]
            else:
                rows = torch.as_tensor(idx, dtype=torch.long, device=hidden.device)
                tokens = hidden[rows][valid[rows]]
            self._add_tokens(layer, point, label, tokens)

    def _add_tokens(self, layer: int, point: str, label: str, tokens: Tensor) -> None:
        """Add ``tokens (n, d)`` of class ``label`` to its key and to ``all``'s. The Gram
        matrix goes straight into the one key's state that keeps one (the usual case), or is
        formed once for two."""
        sums = PowerSums.of(tokens)
        state = _StreamState(float(tokens.shape[0]), sums, histogram_counts(tokens, self.bin_edges))
        gram_keys = []
        for key_label in dict.fromkeys((label, ALL_CLASSES)):  # in order, not by hash
            key = (layer, point, key_label)
            if key in self.states_:
                self.states_[key].add_counts_(state)
            else:  # a copy of its own: states are added to in place
                self.states_[key] = state.copy()
            if self.covariance and (key_label == ALL_CLASSES or self.class_covariance):
                gram_keys.append(key)
        grams = []
        for key in gram_keys:
            target = self.states_[key]
            if target.gram is None:
                d = tokens.shape[1]
                target.gram = np.zeros((d, d))
            grams.append(target.gram)
        if len(grams) == 1:
            add_gram(grams[0], tokens, sums.s1)
        elif grams:
            batch_gram = gram_matrix(tokens, sums.s1)
            for gram in grams:
                gram += batch_gram

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
            self.include_padding,
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
            values = summary_values(state.tokens, state.sums, state.gram, self.outlier_factor)
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
