"""Tests of the streamed distribution of the stream (DESIGN 3.4) against scipy on the
concatenated data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from bertgeom.measures.base import Accumulator
from bertgeom.measures.distribution_accumulator import DistributionAccumulator
from bertgeom.measures.distribution_stats import (
    covariance_from_sums,
    dagostino_k2,
    layernorm_outlier_dimensions,
    moments_from_power_sums,
    outlier_dimensions,
    participation_ratio,
)
from bertgeom.measures.power_sums import PowerSums
from bertgeom.measures.token_statistics import gram_matrix, histogram_counts
from bertgeom.measures.tokens import token_mask


def test_moments_match_scipy_pooled_and_per_coordinate() -> None:
    rng = np.random.default_rng(0)
    data = rng.gamma(2.0, size=(500, 4)) - 1.5
    per_coordinate = moments_from_power_sums(PowerSums.of(torch.from_numpy(data)))
    np.testing.assert_allclose(per_coordinate.mean, data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(per_coordinate.variance, data.var(0), rtol=1e-10)
    np.testing.assert_allclose(per_coordinate.skewness, stats.skew(data), rtol=1e-9)
    np.testing.assert_allclose(per_coordinate.excess_kurtosis, stats.kurtosis(data), rtol=1e-9)
    np.testing.assert_allclose(per_coordinate.mean_abs, np.abs(data).mean(0), rtol=1e-12)
    pooled = moments_from_power_sums(PowerSums.of(torch.from_numpy(data)).pooled())
    flat = data.ravel()
    assert float(pooled.n) == flat.size
    assert float(pooled.skewness) == pytest.approx(stats.skew(flat), rel=1e-9)
    assert float(pooled.excess_kurtosis) == pytest.approx(stats.kurtosis(flat), rel=1e-9)


def test_constant_coordinate_has_nan_shape_moments() -> None:
    moments = moments_from_power_sums(PowerSums.of(torch.ones(10, 1)))
    assert moments.variance[0] == 0.0
    assert np.isnan(moments.skewness[0]) and np.isnan(moments.excess_kurtosis[0])


@pytest.mark.parametrize("n", [8, 20, 137, 5000])
@pytest.mark.parametrize("kind", ["normal", "skewed", "heavy", "light"])
def test_dagostino_matches_scipy_normaltest(n: int, kind: str) -> None:
    rng = np.random.default_rng(n)
    sample = {
        "normal": rng.normal(size=n),
        "skewed": rng.exponential(size=n),
        "heavy": rng.standard_t(3, size=n),
        "light": rng.uniform(size=n),
    }[kind]
    moments = moments_from_power_sums(PowerSums.of(torch.from_numpy(sample)))
    k2, pvalue = dagostino_k2(n, float(moments.skewness), float(moments.excess_kurtosis))
    expected = stats.normaltest(sample)
    assert k2 == pytest.approx(expected.statistic, rel=1e-8, abs=1e-8)
    assert pvalue == pytest.approx(expected.pvalue, rel=1e-8, abs=1e-12)


def test_dagostino_needs_eight_values() -> None:
    assert np.isnan(dagostino_k2(7, 0.1, 0.2)[0])


def test_histogram_counts_with_under_and_overflow() -> None:
    values = torch.tensor([-5.0, -1.0, -0.5, 0.0, 0.2, 0.99, 1.0, 3.0, np.float64(-1.0)])
    edges = np.linspace(-1.0, 1.0, 5)
    counts = histogram_counts(values, edges)
    inside, _ = np.histogram(values.numpy()[(values.numpy() >= -1) & (values.numpy() < 1)], edges)
    assert counts[0] == 1 and counts[-1] == 2
    np.testing.assert_array_equal(counts[1:-1], inside)
    assert counts.sum() == values.numel()


def test_participation_ratio_from_eigenvalues() -> None:
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    eigenvalues = np.array([5.0, 2.0, 1.0, 0.5, 0.0, 0.0])
    covariance = basis @ np.diag(eigenvalues) @ basis.T
    expected = eigenvalues.sum() ** 2 / (eigenvalues**2).sum()
    assert participation_ratio(covariance) == pytest.approx(expected, rel=1e-12)
    assert participation_ratio(np.eye(7)) == pytest.approx(7.0)


def test_outlier_rules() -> None:
    mean_abs = np.array([1.0, 1.1, 0.9, 1.0, 8.0, 1.0])
    std = np.array([1.0, 1.0, 1.0, 7.0, 1.0, 1.0])
    np.testing.assert_array_equal(
        np.flatnonzero(outlier_dimensions(mean_abs, std, factor=6.0)), [3, 4]
    )
    weight = torch.ones(50)
    weight[7] = 9.0
    bias = torch.zeros(50)
    bias[11] = -4.0
    np.testing.assert_array_equal(
        np.flatnonzero(layernorm_outlier_dimensions(weight, bias)), [7, 11]
    )


def _batches() -> list[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    generator = torch.Generator().manual_seed(7)
    out = []
    for size in (4, 3, 5):
        hidden = torch.randn(size, 9, 6, generator=generator) ** 3
        hidden[..., 2] += 12.0  # a planted outlier dimension
        lengths = torch.randint(3, 10, (size,), generator=generator)
        mask = (torch.arange(9)[None, :] < lengths[:, None]).long()
        hidden[~mask.bool()] = 1e4  # padding values must not leak into any statistic
        labels = [("a", "b")[int(i)] for i in torch.randint(0, 2, (size,), generator=generator)]
        out.append((hidden, mask, labels))
    return out


def _accumulate(
    parts: list[tuple[torch.Tensor, torch.Tensor, list[str]]],
) -> DistributionAccumulator:
    acc = DistributionAccumulator(histogram_range=(-5.0, 5.0), n_bins=20, per_class=True)
    for hidden, mask, labels in parts:
        acc.update(1, "layer_output", hidden, mask, labels)
    return acc


def test_split_merge_equals_one_pass() -> None:
    batches = _batches()
    whole = _accumulate(batches)
    assert isinstance(whole, Accumulator)
    merged = _accumulate(batches[:1]).merge(_accumulate(batches[1:]))
    left, right = whole.result(), merged.result()
    pd.testing.assert_frame_equal(left.drop(columns="value"), right.drop(columns="value"))
    np.testing.assert_allclose(left["value"], right["value"], rtol=1e-10, atol=1e-12)
    for key, counts in whole.histograms().items():
        np.testing.assert_array_equal(counts, merged.histograms()[key])
    left_coordinates, right_coordinates = whole.per_coordinate(), merged.per_coordinate()
    np.testing.assert_allclose(
        left_coordinates["excess_kurtosis"], right_coordinates["excess_kurtosis"], rtol=1e-10
    )


def test_values_match_scipy_on_concatenated_valid_tokens() -> None:
    batches = _batches()
    acc = _accumulate(batches)
    tokens = torch.cat([h[m.bool()] for h, m, _ in batches]).numpy().astype(np.float64)
    labels = np.concatenate([np.repeat(lab, m.sum(1).numpy()) for _, m, lab in batches])
    table = acc.result().set_index(["class", "metric"])["value"]
    flat = tokens.ravel()
    assert table[("all", "dist.n_tokens")] == tokens.shape[0]
    assert table[("all", "dist.mean")] == pytest.approx(flat.mean(), rel=1e-12)
    assert table[("all", "dist.variance")] == pytest.approx(flat.var(), rel=1e-10)
    assert table[("all", "dist.skewness")] == pytest.approx(stats.skew(flat), rel=1e-9)
    assert table[("all", "dist.excess_kurtosis")] == pytest.approx(stats.kurtosis(flat), rel=1e-9)
    expected = stats.normaltest(flat)
    assert table[("all", "dist.normaltest_k2")] == pytest.approx(expected.statistic, rel=1e-8)
    eigenvalues = np.linalg.eigvalsh(np.cov(tokens, rowvar=False))
    ratio = eigenvalues.sum() ** 2 / (eigenvalues**2).sum()
    # float32 tokens: the Gram matrix is a float32 product (gram_matrix), ~1e-7 relative.
    assert table[("all", "dist.participation_ratio")] == pytest.approx(ratio, rel=1e-6)
    class_b = tokens[labels == "b"].ravel()
    assert table[("b", "dist.skewness")] == pytest.approx(stats.skew(class_b), rel=1e-9)
    assert table[("all", "dist.outlier_count")] == 1
    assert acc.outlier_dimensions(1, "layer_output") == [2]

    coordinates = acc.per_coordinate()
    everyone = coordinates[coordinates["class"] == "all"]
    np.testing.assert_allclose(everyone["skewness"], stats.skew(tokens), rtol=1e-9)
    np.testing.assert_allclose(everyone["variance"], tokens.var(0), rtol=1e-10)
    counts = acc.histograms()[(1, "layer_output", "all")]
    assert counts.sum() == flat.size
    assert counts[0] == (flat < -5).sum() and counts[-1] == (flat >= 5).sum()


def test_include_padding_uses_every_position() -> None:
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    acc = DistributionAccumulator()
    acc.update(0, "layer_input", hidden, token_mask(mask, include_padding=True).valid)
    table = acc.result().set_index("metric")["value"]
    assert table["dist.n_tokens"] == 8
    assert table["dist.mean"] == pytest.approx(float(hidden.double().mean()), rel=1e-12)


def test_histogram_counts_equal_width_fast_path_matches_binary_search() -> None:
    edges = np.linspace(-10.0, 10.0, 201)
    generator = torch.Generator().manual_seed(3)
    values = torch.cat(
        [torch.randn(20_000, generator=generator) * 6, torch.tensor([-np.inf, np.inf, 1e30])]
    )
    index = torch.bucketize(values.to(torch.float64), torch.as_tensor(edges), right=True)
    expected = torch.bincount(index, minlength=202).numpy()
    np.testing.assert_array_equal(histogram_counts(values, edges), expected)
    uneven = np.array([-1.0, 0.0, 0.5, 2.0])
    assert histogram_counts(values, uneven).sum() == values.numel()


def test_gram_matrix_of_float32_tokens_with_a_large_mean() -> None:
    generator = torch.Generator().manual_seed(4)
    tokens = torch.randn(500, 16, generator=generator) + torch.linspace(0, 300, 16)
    exact = tokens.double().T @ tokens.double()
    gram = gram_matrix(tokens)
    np.testing.assert_allclose(gram, exact.numpy(), rtol=1e-6)
    n = tokens.shape[0]
    total = tokens.double().sum(0).numpy()
    covariance = covariance_from_sums(n, total, gram)
    expected = np.cov(tokens.double().numpy(), rowvar=False)
    np.testing.assert_allclose(covariance, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(gram_matrix(tokens.double()), exact.numpy())
