"""Moments, normality and participation ratio of the token stream (DESIGN 3.4) from its additive
statistics: power sums (``power_sums``) and the Gram matrix (``token_statistics``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from scipy import special
from torch import Tensor

from bertgeom.measures.grouping import FloatArray
from bertgeom.measures.power_sums import PowerSums


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
    Gram matrix (None: no participation ratio): pooled moments, D'Agostino K^2, participation ratio
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
        "participation_ratio": rank,
        "outlier_count": float(flags.sum()),
        "max_mean_abs_ratio": float(per_coordinate.mean_abs.max() / median_abs)
        if median_abs > 0
        else math.nan,
    }
