"""The compiled scan of the valid tokens (``token_scan``, ``token_kernels``) against independent
computations: masked indexing, float64 powers, ``torch.bucketize`` over the edges, and the
float64 Gram product."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertgeom.measures import token_scan
from bertgeom.measures.token_scan import scan_tokens
from bertgeom.measures.token_statistics import (
    Binning,
    add_grams,
    gram_matrix,
    head_gram_matrices,
    symmetric_gram,
)

EDGES = np.linspace(-10.0, 10.0, 201)


def _batch(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(5, 9, 7, generator=generator) * 6).to(dtype)
    hidden[0, 0, :5] = torch.tensor([-10.0, 10.0, 9.9, -np.inf, np.inf], dtype=dtype)
    hidden[1, 2, 0] = 1e30
    hidden[..., 3] += 200.0  # an outlier coordinate
    valid = torch.rand(5, 9, generator=generator) > 0.3
    valid[3] = False  # an input without tokens
    return hidden, valid


def _expected_counts(values: torch.Tensor) -> np.ndarray:
    """The bins of ``Binning.counts``: ``floor((x - e_0) * scale) + 1`` clamped, in the values'
    precision (equal to the binary search over the edges but within rounding of an edge)."""
    scale = Binning(EDGES).scale
    position = (values.reshape(-1) - EDGES[0]).mul_(scale).floor_().add_(1)
    index = position.clamp_(0, len(EDGES)).to(torch.int64)
    return torch.bincount(index, minlength=len(EDGES) + 1).numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scan_equals_masked_indexing_float64_powers_and_bins(dtype: torch.dtype) -> None:
    hidden, valid = _batch(dtype)
    inputs = np.array([4, 0, 3, 2])  # in this order, one without tokens
    scan = scan_tokens(hidden, valid, inputs, Binning(EDGES), keep_rows=True)
    picked = torch.as_tensor(inputs)
    expected_rows = hidden[picked][valid[picked]]
    assert scan.n == expected_rows.shape[0] and scan.rows_are_copy
    assert scan.rows is not None and scan.rows.equal(expected_rows)
    x = expected_rows.double()  # +-inf in coordinates 3 and 4: infinite sums, equal
    for name, power in (("s1", x), ("s2", x**2), ("s3", x**3), ("s4", x**4), ("abs1", x.abs())):
        np.testing.assert_allclose(getattr(scan.sums, name), power.sum(0).numpy(), rtol=1e-13)
    np.testing.assert_array_equal(scan.sums.n, np.full(7, float(scan.n)))
    assert scan.counts is not None
    np.testing.assert_array_equal(scan.counts, _expected_counts(expected_rows.clone()))
    inside = expected_rows[(expected_rows >= -10) & (expected_rows < 10)].double().numpy()
    np.testing.assert_array_equal(scan.counts[1:-1], np.histogram(inside, EDGES)[0])


def test_scan_without_bins_or_rows_and_of_nothing() -> None:
    hidden, valid = _batch(torch.float32, seed=1)
    scan = scan_tokens(hidden, valid, np.arange(5))
    assert scan.counts is None and scan.rows is None
    np.testing.assert_allclose(scan.sums.s1, hidden[valid].double().sum(0).numpy(), rtol=1e-12)
    empty = scan_tokens(hidden, valid, np.array([3]), Binning(EDGES), keep_rows=True)
    assert empty.n == 0 and empty.rows is not None and empty.rows.shape == (0, 7)
    assert empty.counts is not None and empty.counts.sum() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_scan_equals_the_torch_kernels(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    hidden, valid = _batch(dtype, seed=2)
    inputs = np.array([1, 2, 4])
    compiled = scan_tokens(hidden, valid, inputs, Binning(EDGES), keep_rows=True)
    monkeypatch.setattr(token_scan, "_compiled", lambda tokens, binning: False)
    reference = scan_tokens(hidden, valid, inputs, Binning(EDGES), keep_rows=True)
    assert compiled.n == reference.n
    assert compiled.rows is not None and reference.rows is not None
    assert compiled.rows.equal(reference.rows)
    assert compiled.counts is not None and reference.counts is not None
    np.testing.assert_array_equal(compiled.counts, reference.counts)
    for name in ("n", "s1", "s2", "s3", "s4", "abs1"):
        np.testing.assert_allclose(
            getattr(compiled.sums, name), getattr(reference.sums, name), rtol=1e-13
        )


def test_unequal_bins_and_other_dtypes_take_the_torch_kernels() -> None:
    hidden, valid = _batch(torch.float32, seed=3)
    uneven = Binning(np.array([-3.0, 0.0, 0.5, 4.0]))
    scan = scan_tokens(hidden, valid, np.arange(5), uneven)
    index = torch.bucketize(hidden[valid].double().reshape(-1), torch.as_tensor(uneven.edges))
    expected = torch.bincount(index, minlength=5).numpy()
    assert scan.counts is not None
    np.testing.assert_array_equal(scan.counts, expected)
    half = scan_tokens(hidden.to(torch.bfloat16), valid, np.arange(5), keep_rows=True)
    assert half.rows is not None and half.rows.dtype == torch.bfloat16


@pytest.mark.parametrize("d", [16, 300])  # one product; block rows from the diagonal
def test_add_grams_adds_the_upper_float64_product_to_each(d: int) -> None:
    generator = torch.Generator().manual_seed(4)
    tokens = torch.randn(200, d, generator=generator) + torch.linspace(0, 300, d)
    exact = (tokens.double().T @ tokens.double()).numpy()
    first, second = np.ones((d, d)), np.zeros((d, d))
    copy = tokens.clone()
    add_grams([first, second], copy, overwrite=True)
    upper = np.triu(np.ones((d, d), dtype=bool))
    np.testing.assert_allclose(second[upper], exact[upper], rtol=1e-6)
    np.testing.assert_allclose(first[upper] - 1.0, exact[upper], rtol=1e-6)
    assert (second[~upper] == 0).all() and (first[~upper] == 1).all()  # left alone
    assert not copy.equal(tokens)  # centred in place, as allowed
    full = gram_matrix(tokens)  # no overwrite: the same values, made symmetric
    np.testing.assert_array_equal(full, symmetric_gram(second))
    np.testing.assert_array_equal(full, full.T)
    np.testing.assert_allclose(gram_matrix(tokens.double()), exact, rtol=1e-14)


def test_head_gram_matrices_centred_in_place_equal_the_copy() -> None:
    generator = torch.Generator().manual_seed(5)
    tokens = torch.randn(60, 3 * 4, generator=generator) + 30.0  # (n, head * dk)
    per_head = tokens.view(60, 3, 4).transpose(0, 1)  # strided, as the accumulator passes it
    totals = per_head.double().sum(1)
    centres = per_head.mean(1)
    copied = head_gram_matrices(per_head, totals, centres)
    exact = (per_head.double().transpose(1, 2) @ per_head.double()).numpy()
    np.testing.assert_allclose(copied, exact, rtol=1e-6)
    scratch = tokens.clone()
    in_place = scratch.view(60, 3, 4).transpose(0, 1)
    np.testing.assert_array_equal(head_gram_matrices(in_place, totals, centres, True), copied)
    assert not scratch.equal(tokens)  # centred in place, as allowed
