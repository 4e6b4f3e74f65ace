"""Tests of the [CLS] separability measures (DESIGN 3.4) against independent computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.linalg import eigh

from bertgeom.measures.base import Accumulator
from bertgeom.measures.separability import (
    ClsSeparabilityAccumulator,
    fisher_ratio,
    linear_probe_accuracy,
    pca_2d,
    scatter_matrices,
    silhouette,
)


def clusters(
    seed: int, n_per_class: int = 20, d: int = 4, spread: float = 3.0
) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(3, d))
    points = np.concatenate([c + rng.normal(size=(n_per_class, d)) for c in centres])
    labels = [label for label in ("a", "b", "c") for _ in range(n_per_class)]
    return points, labels


def slow_silhouette(points: np.ndarray, labels: list[str]) -> float:
    label_array = np.array(labels)
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    values = []
    for i in range(len(points)):
        same = label_array == label_array[i]
        same[i] = False
        a = distances[i, same].mean()
        b = min(distances[i, label_array == other].mean() for other in set(labels) - {labels[i]})
        values.append((b - a) / max(a, b))
    return float(np.mean(values))


def test_silhouette_against_explicit_loop() -> None:
    points, labels = clusters(0, n_per_class=8)
    assert silhouette(points, labels) == pytest.approx(slow_silhouette(points, labels))
    assert np.isnan(silhouette(points, ["a"] * len(labels)))


def test_fisher_ratio_is_sum_of_lda_eigenvalues() -> None:
    points, labels = clusters(1, n_per_class=50)
    within, between = scatter_matrices(points, labels)
    total = np.cov(points, rowvar=False, ddof=0)
    np.testing.assert_allclose(within + between, total, atol=1e-10)
    ridge = 1e-3
    regularised = within + ridge * np.trace(within) / 4 * np.eye(4)
    eigenvalues = eigh(between, regularised, eigvals_only=True)
    assert fisher_ratio(points, labels, ridge) == pytest.approx(eigenvalues.sum(), rel=1e-10)


def test_fisher_ratio_one_dimension() -> None:
    x = np.array([[0.0], [2.0], [10.0], [12.0], [14.0]])
    labels = ["a", "a", "b", "b", "b"]
    within = (1 + 1 + 4 + 0 + 4) / 5
    between = 0.4 * 0.6 * (1.0 - 12.0) ** 2
    assert fisher_ratio(x, labels, ridge=0.0) == pytest.approx(between / within)
    assert np.isnan(fisher_ratio(x, ["a"] * 5))


def test_linear_probe_separable_random_and_seeded() -> None:
    points, labels = clusters(2, spread=10.0)
    assert linear_probe_accuracy(points, labels) == pytest.approx(1.0)
    rng = np.random.default_rng(3)
    noise = rng.normal(size=(60, 4))
    shuffled = list(rng.permutation(labels))
    accuracy = linear_probe_accuracy(noise, shuffled, seed=1)
    assert accuracy < 0.75
    assert accuracy == linear_probe_accuracy(noise, shuffled, seed=1)
    assert np.isnan(linear_probe_accuracy(noise[:3], ["a", "b", "b"]))


def test_pca_matches_svd_up_to_sign() -> None:
    points, _ = clusters(4)
    coords, ratios = pca_2d(points)
    centred = points - points.mean(0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    expected = u[:, :2] * s[:2]
    np.testing.assert_allclose(np.abs(coords), np.abs(expected), atol=1e-10)
    np.testing.assert_allclose(ratios, s[:2] ** 2 / (s**2).sum(), rtol=1e-10)


def test_accumulator_split_merge_equals_one_pass() -> None:
    points, labels = clusters(5)
    tensor = torch.from_numpy(points)
    order = np.random.default_rng(6).permutation(len(labels))
    whole = ClsSeparabilityAccumulator(max_points=None)
    assert isinstance(whole, Accumulator)
    part_a, part_b = (
        ClsSeparabilityAccumulator(max_points=None),
        ClsSeparabilityAccumulator(max_points=None),
    )
    whole.update(0, tensor[order], [labels[i] for i in order])
    part_a.update(0, tensor[:25], labels[:25])
    part_b.update(0, tensor[25:], labels[25:])
    pd.testing.assert_frame_equal(whole.result(), part_b.merge(part_a).result())
    table = whole.result().set_index("metric")["value"]
    assert table["cls.silhouette"] == pytest.approx(silhouette(points, labels))
    assert table["cls.n_points"] == 60 and table["cls.n_classes"] == 3
    coords, pca_labels, _ = whole.pca()[0]
    assert coords.shape == (60, 2) and sorted(pca_labels.tolist()) == sorted(labels)


def test_reservoir_is_capped_and_roughly_uniform() -> None:
    values = torch.arange(2000, dtype=torch.float64)[:, None]
    labels = ["a" if v % 2 else "b" for v in range(2000)]
    acc = ClsSeparabilityAccumulator(max_points=200, seed=1)
    acc.update(0, values[:1200], labels[:1200])
    other = ClsSeparabilityAccumulator(max_points=200, seed=1)
    other.update(0, values[1200:], labels[1200:])
    for accumulator in (acc, acc.merge(other)):
        kept, _ = accumulator.points(0)
        assert len(kept) == 200
    merged_points, _ = acc.merge(other).points(0)
    assert 800 < merged_points.mean() < 1200
    assert acc.merge(other).reservoirs_[0].seen == 2000
