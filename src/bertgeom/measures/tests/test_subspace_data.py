"""Tests of the data-based subspace measures (DESIGN 3.3) against explicit computations."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from bertgeom.measures.base import Accumulator
from bertgeom.measures.bilinear_forms import bilinear_forms
from bertgeom.measures.cone_index import cone_index
from bertgeom.measures.subspace_data import (
    SubspaceDataAccumulator,
    energy_share,
    row_space_bases,
    selection_cone_index,
    subspace_data_measures,
    token_energy_share,
)

D, HEADS = 10, 2
DK = D // HEADS
F64 = torch.float64


def test_energy_share_inside_orthogonal_and_against_projector() -> None:
    torch.manual_seed(0)
    weight = torch.randn(D, D, dtype=F64)
    bases = row_space_bases(weight, HEADS)
    block = weight[:DK]  # head 0
    inside = block.T @ torch.randn(DK, dtype=F64)  # a vector in row(W^0)
    orthogonal_basis = torch.linalg.svd(block, full_matrices=True).Vh[DK:]
    outside = orthogonal_basis.T @ torch.randn(D - DK, dtype=F64)
    shares = token_energy_share(torch.stack([inside, outside])[None], bases)
    assert float(shares[0, 0, 0]) == pytest.approx(1.0)
    assert float(shares[0, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    x = torch.randn(1, 4, D, dtype=F64)
    projector = torch.linalg.pinv(block) @ block
    for s in range(4):
        expected = float((projector @ x[0, s]).square().sum() / x[0, s].square().sum())
        assert float(token_energy_share(x, bases)[0, 0, s]) == pytest.approx(expected, rel=1e-10)


def test_energy_share_masked_mean() -> None:
    torch.manual_seed(1)
    hidden = torch.randn(2, 5, D, dtype=F64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    bases = row_space_bases(torch.randn(D, D, dtype=F64), HEADS)
    shares = energy_share(hidden, bases, mask)
    per_token = token_energy_share(hidden, bases)
    for b, h in itertools.product(range(2), range(HEADS)):
        n = int(mask[b].sum())
        assert float(shares[b, h]) == pytest.approx(float(per_token[b, h, :n].mean()))


@pytest.mark.parametrize("with_bias", [False, True])
def test_selection_cone_against_explicit_directions(with_bias: bool) -> None:
    torch.manual_seed(2)
    w_q, w_k = torch.randn(D, D, dtype=F64), torch.randn(D, D, dtype=F64)
    b_q = torch.randn(D, dtype=F64) if with_bias else None
    hidden = torch.randn(3, 6, D, dtype=F64)
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    cone = selection_cone_index(hidden, w_q, w_k, HEADS, mask, bias_q=b_q)
    forms = bilinear_forms(w_q, w_k, HEADS)
    for b, h in itertools.product(range(3), range(HEADS)):
        n = int(mask[b].sum())
        directions = hidden[b, :n] @ forms[h]  # rows u_i^T = x_i^T M_h, i.e. u_i = M_h^T x_i
        if b_q is not None:
            k_h = w_k[h * DK : (h + 1) * DK]
            directions = directions + (k_h.T @ b_q[h * DK : (h + 1) * DK])[None, :]
        assert float(cone.index[b, h]) == pytest.approx(cone_index(directions), rel=1e-10)
        assert int(cone.n_valid[b, h]) == n


def test_planted_directional_head_has_normalized_cone_one() -> None:
    torch.manual_seed(3)
    direction = torch.randn(D, dtype=F64)
    w_q = torch.randn(D, D, dtype=F64)
    w_q[:DK] = torch.outer(torch.randn(DK, dtype=F64), direction)  # head 0 reads one direction
    hidden = torch.randn(2, 7, D, dtype=F64)
    hidden = hidden + (5.0 - hidden @ direction)[..., None] * direction / direction.dot(direction)
    cone = selection_cone_index(hidden, w_q, torch.randn(D, D, dtype=F64), HEADS)
    torch.testing.assert_close(cone.normalized[:, 0], torch.ones(2, dtype=F64))
    assert float(cone.normalized[:, 1].max()) < 0.99


def test_accumulator_split_merge_and_means() -> None:
    torch.manual_seed(4)
    w_q, w_k = torch.randn(D, D), torch.randn(D, D)
    hidden = torch.randn(5, 6, D)
    mask = (torch.arange(6)[None, :] < torch.tensor([6, 3, 4, 6, 2])[:, None]).long()
    labels = ["a", "b", "a", "b", "b"]
    whole, part_a, part_b = (SubspaceDataAccumulator() for _ in range(3))
    assert isinstance(whole, Accumulator)
    whole.update(0, hidden, mask, w_q, w_k, HEADS, labels)
    part_a.update(0, hidden[:2], mask[:2], w_q, w_k, HEADS, labels[:2])
    part_b.update(0, hidden[2:], mask[2:], w_q, w_k, HEADS, labels[2:])
    left, right = whole.result(), part_a.merge(part_b).result()
    pd.testing.assert_frame_equal(left.drop(columns="value"), right.drop(columns="value"))
    np.testing.assert_allclose(left["value"], right["value"], rtol=1e-12, atol=1e-12)
    values = subspace_data_measures(hidden, mask, w_q, w_k, HEADS)
    table = left.set_index(["head", "class", "metric"])["value"]
    expected = float(values["key_energy_share"][[1, 3, 4], 1].mean())
    assert table[(1, "b", "subspace.key_energy_share")] == pytest.approx(expected, rel=1e-12)
    expected = float(values["selection_cone_normalized"][:, 0].mean())
    assert table[(0, "all", "subspace.selection_cone_normalized")] == pytest.approx(expected)
    assert table[(0, "a", "subspace.n_inputs")] == 2
