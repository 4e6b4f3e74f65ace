"""The compiled passes of ``projected_subspace`` against its torch path (the one the stored
reference was computed with) and the definition (``subspace_data_measures``)."""

from __future__ import annotations

import pytest
import torch

from bertgeom.capture import projected_subspace
from bertgeom.capture.projected_subspace import ProjectionBases, projected_subspace_measures
from bertgeom.capture.projected_subspace_kernels import subtract_bias_kernel
from bertgeom.measures.subspace_data import subspace_data_measures

HEADS, DK, D = 3, 4, 12


def _layer(seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(4, 7, D, generator=generator)
    hidden[1, 2] = 0.0  # a zero token: no energy share
    weight_q, weight_k = (torch.randn(HEADS * DK, D, generator=generator) for _ in range(2))
    bias_q, bias_k = (torch.randn(HEADS * DK, generator=generator) for _ in range(2))
    valid = torch.ones(4, 7, dtype=torch.bool)
    valid[0, 5:] = False  # padding
    valid[2, 3] = False  # a hole
    valid[3] = False  # an input without tokens
    return hidden, weight_q, bias_q, weight_k, bias_k, valid


@pytest.mark.parametrize("query_bias", [False, True])
def test_compiled_equals_the_torch_path_and_the_definition(
    query_bias: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    hidden, weight_q, bias_q, weight_k, bias_k, valid = _layer(seed=1)
    queries = hidden @ weight_q.T + bias_q
    keys = hidden @ weight_k.T + bias_k
    bases = ProjectionBases.of(weight_q, bias_q, weight_k, bias_k, HEADS)
    assert bases is not None
    arguments = (hidden, queries, keys, bases, HEADS, valid, query_bias)
    compiled = projected_subspace_measures(*arguments)
    with monkeypatch.context() as patch:
        patch.setattr(projected_subspace, "_compiled", lambda *tensors: False)
        reference = projected_subspace_measures(*arguments)
    expected = subspace_data_measures(
        hidden, valid, weight_q, weight_k, HEADS, bias_q if query_bias else None
    )
    for name, value in reference.items():
        # The selection cone's float32 values come from the same calls on the same numbers:
        # equal but for the float64 rounding of I (its spread over inputs is what the stored
        # reference tests). The shares' products may differ in the last float32 bit (a batched
        # product of other shape).
        tolerance = 1e-12 if name.startswith("selection") else 1e-6
        torch.testing.assert_close(compiled[name], value, rtol=tolerance, atol=0, equal_nan=True)
        torch.testing.assert_close(
            compiled[name], expected[name], rtol=2e-5, atol=1e-6, equal_nan=True
        )
    assert compiled["query_energy_share"][3].isnan().all()  # no tokens
    assert (compiled["selection_cone_normalized"][3].isnan()).all()


@pytest.mark.parametrize("shape", [(4, 7, 3, 4), (8, 105, 12, 32), (3, 50, 4, 16)])
def test_weighted_sum_on_the_einsum_layout_equals_einsum(shape: tuple[int, ...]) -> None:
    """The compiled path sums the selection directions with the product ``einsum`` makes on
    the layout it makes (``by_input``): bit for bit the same float32 sums."""
    batch, seq, heads, dk = shape
    generator = torch.Generator().manual_seed(2)
    queries = torch.randn(batch, seq, heads * dk, generator=generator)
    bias = torch.randn(heads * dk, generator=generator)
    weights = torch.rand(batch, heads, seq, generator=generator)
    weights[:, :, seq // 2 :] = 0.0  # padding
    linear = torch.empty_like(queries)
    by_input = torch.empty(batch, heads, dk, seq)
    subtract_bias_kernel(
        queries.numpy(), bias.numpy(), bias.numpy(), linear.numpy(), by_input.numpy()
    )
    assert linear.equal(queries - bias)
    by_token = linear.view(batch, seq, heads, dk)
    expected = torch.einsum("bshk,bhs->bhk", by_token, weights)
    rows = batch * heads
    got = torch.bmm(by_input.view(rows, dk, seq), weights.view(rows, seq, 1))
    assert got.view(batch, heads, dk).equal(expected)
