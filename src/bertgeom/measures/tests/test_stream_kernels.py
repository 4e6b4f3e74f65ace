"""The streamed kernels of the cone, distribution and spike measures against the direct
computations they replace: blocked == whole batch, chunked == unchunked, in place == copied."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bertgeom.genomics.mutations import Mutation
from bertgeom.genomics.reference import SPIKE_START
from bertgeom.measures import attention_blocks, token_statistics
from bertgeom.measures.attention_blocks import attention_blocks as blocks_of
from bertgeom.measures.attention_blocks import attention_row_unit_sums
from bertgeom.measures.cone_accumulators import ClassConeAccumulator, ConeAccumulator, _bins
from bertgeom.measures.cone_index import attention_rows_cone_index, cone_index
from bertgeom.measures.grouping import valid_extents
from bertgeom.measures.power_sums import PowerSums, power_sums_and_counts
from bertgeom.measures.spike_values import _codon_sums, _mutation_sums, codons
from bertgeom.measures.token_statistics import (
    Binning,
    head_gram_matrices,
    histogram_counts,
    select_tokens,
)


def _attention(mask: torch.Tensor, heads: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    batch, seq = mask.shape
    scores = 3 * torch.randn(batch, heads, seq, seq, generator=generator)
    return scores.masked_fill(~mask.bool()[:, None, None, :], -math.inf).softmax(-1).nan_to_num()


def _whole_batch_unit_sums(attentions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The earlier formula: the keys masked in a copy of the whole batch, then ``w^T A``."""
    rows = attentions * valid[:, None, None, :]
    norms = torch.linalg.vector_norm(rows, dim=-1)
    keep = (norms > 0) & valid[:, None, :]
    weights = torch.where(keep, 1.0 / norms.clamp_min(torch.finfo(rows.dtype).tiny), 0.0)
    return (weights.unsqueeze(-2) @ rows).squeeze(-2)


@pytest.mark.parametrize("budget", [1, 3000, 20_000, 1 << 30])
def test_attention_blocks_equal_the_whole_batch(
    budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attention_blocks, "WHOLE_BATCH_BYTES", 0)  # always stream
    lengths = torch.tensor([9, 4, 9, 9, 0, 6, 2, 9])
    valid = torch.arange(9)[None, :] < lengths[:, None]
    valid[5, 2] = False  # a hole: not a prefix, masked in a copy
    attentions = _attention(valid, heads=3, seed=1).double()
    unit_sum, counts = attention_row_unit_sums(attentions, valid, budget)
    expected = _whole_batch_unit_sums(attentions, valid)
    torch.testing.assert_close(unit_sum, expected, rtol=1e-12, atol=1e-12)
    assert counts.tolist() == [[int(v.sum())] * 3 for v in valid]
    covered = [
        (b, h)
        for block in blocks_of(attentions, valid, budget)
        for b in range(8)[block.inputs]
        for h in range(3)[block.heads]
    ]
    assert sorted(covered) == [(b, h) for b in range(8) if b != 4 for h in range(3)]


def test_streamed_attention_rows_cone_index_matches_the_definition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(attention_blocks, "WHOLE_BATCH_BYTES", 0)
    lengths = torch.tensor([12, 7, 3, 12])
    mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
    attentions = _attention(mask, heads=2, seed=2)
    cone = attention_rows_cone_index(attentions, mask)
    for b in range(4):
        for h in range(2):
            n = int(lengths[b])
            expected = cone_index(attentions[b, h, :n, :n].double())
            assert float(cone.index[b, h]) == pytest.approx(expected, rel=1e-6)
            assert int(cone.n_valid[b, h]) == n


def test_valid_extents() -> None:
    valid = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1]]).bool()
    assert valid_extents(valid) == [2, 0, 3, 4]


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 15])
def test_power_sums_in_place_blocks_equal_direct_float64(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(token_statistics, "BLOCK_VALUES", block)
    generator = torch.Generator().manual_seed(3)
    tokens = torch.randn(37, 5, generator=generator) * 3 + torch.linspace(-50, 50, 5)
    sums, _ = power_sums_and_counts(tokens)
    x = tokens.double()
    for name, expected in (
        ("s1", x.sum(0)),
        ("s2", (x**2).sum(0)),
        ("s3", (x**3).sum(0)),
        ("s4", (x**4).sum(0)),
        ("abs1", x.abs().sum(0)),
    ):
        np.testing.assert_allclose(getattr(sums, name), expected.numpy(), rtol=1e-13)
    np.testing.assert_array_equal(sums.n, np.full(5, 37.0))
    assert tokens.equal(
        torch.randn(37, 5, generator=torch.Generator().manual_seed(3)) * 3
        + torch.linspace(-50, 50, 5)
    )  # the input is left alone


def test_power_sums_of_other_dtypes_and_pooled() -> None:
    values = torch.tensor([[1, -2], [3, 4], [-5, 6]], dtype=torch.int64)
    sums = PowerSums.of(values)
    np.testing.assert_array_equal(sums.s3, [1 + 27 - 125, -8 + 64 + 216])
    pooled = PowerSums.of(values.reshape(-1).to(torch.bfloat16))
    assert pooled.s1.shape == () and float(pooled.s4) == float((values.double() ** 4).sum())
    empty, counts = power_sums_and_counts(torch.zeros(0, 3), Binning(np.linspace(0, 1, 5)))
    assert float(empty.s2.sum()) == 0.0 and counts is not None and counts.sum() == 0


@pytest.mark.parametrize("block", [5, 1000, 1 << 17])
def test_histogram_blocks_equal_one_pass(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(token_statistics, "COUNT_BLOCK_VALUES", block)
    generator = torch.Generator().manual_seed(4)
    values = torch.randn(301, 7, generator=generator) * 6
    values[0, :3] = torch.tensor([-10.0, 10.0, 9.9])  # on and near the edges
    edges = np.linspace(-10.0, 10.0, 201)
    position = (values.reshape(-1) - -10.0).mul_(10.0).floor_().add_(1)
    expected = torch.bincount(position.clamp_(0, 201).to(torch.int32), minlength=202)
    np.testing.assert_array_equal(histogram_counts(values, edges), expected.numpy())
    uneven = np.array([-3.0, 0.0, 0.5, 4.0])
    index = torch.bucketize(values.double().reshape(-1), torch.as_tensor(uneven), right=True)
    np.testing.assert_array_equal(
        histogram_counts(values, uneven), torch.bincount(index, minlength=5).numpy()
    )


def test_select_tokens_equals_masked_indexing() -> None:
    generator = torch.Generator().manual_seed(5)
    hidden = torch.randn(4, 6, 3, generator=generator)
    valid = torch.rand(4, 6, generator=generator) > 0.3
    rows = np.array([0, 2, 3])
    expected = hidden[torch.as_tensor(rows)][valid[torch.as_tensor(rows)]]
    assert select_tokens(hidden, valid, rows).equal(expected)
    everything = torch.ones(4, 6, dtype=torch.bool)
    assert select_tokens(hidden, everything, np.arange(4)).equal(hidden.reshape(24, 3))


def test_head_gram_matrices_from_given_totals_and_centres() -> None:
    generator = torch.Generator().manual_seed(6)
    tokens = torch.randn(50, 3, 4, generator=generator) + 30.0  # (n, head, dk)
    per_head = tokens.transpose(0, 1)  # strided, as the accumulator passes it
    totals = tokens.double().sum(0)
    centres = tokens.mean(0)
    exact = (per_head.double().transpose(1, 2) @ per_head.double()).numpy()
    np.testing.assert_allclose(head_gram_matrices(per_head, totals, centres), exact, rtol=1e-6)
    np.testing.assert_allclose(head_gram_matrices(per_head), exact, rtol=1e-6)


def test_cone_histogram_bins_equal_numpy_histogram() -> None:
    edges = np.linspace(0.0, 1.0, 11)
    values = np.array([0.0, 0.1, 0.15, 0.99999, 1.0, 0.3, np.nan, 0.7, 0.2])
    bins = _bins(values, edges)
    counts = np.bincount(bins, minlength=11)[:10]
    np.testing.assert_array_equal(counts, np.histogram(values, edges)[0])


def test_cone_accumulator_histogram_and_class_cone_per_class() -> None:
    generator = torch.Generator().manual_seed(7)
    hidden = torch.randn(6, 5, 4, generator=generator, dtype=torch.float64) + 0.3
    labels = ["a", "b", "a", "c", "b", "a"]
    acc = ConeAccumulator(n_bins=7)
    acc.update(0, "layer_output", hidden, None, labels)
    normalized = np.array([cone_index(h) / 5 for h in hidden])
    for label in ("all", "a", "b", "c"):
        chosen = normalized if label == "all" else normalized[np.array(labels) == label]
        expected = np.histogram(np.clip(chosen, 0, 1), acc.bin_edges)[0]
        np.testing.assert_array_equal(acc.histograms()[(0, "layer_output", label)], expected)
    classes = ClassConeAccumulator()
    classes.update(1, hidden[:, 0], labels)
    table = classes.result().set_index(["class", "metric"])["value"]
    for label in ("a", "b", "c"):
        rows = hidden[[i for i, x in enumerate(labels) if x == label], 0]
        assert table[(label, "cls.cone.index")] == pytest.approx(cone_index(rows), abs=1e-12)


def _dense_mutation_sums(
    r: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, placed: torch.Tensor, mutations: list
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The earlier formula: a (batch, mutation, seq) overlap matrix."""
    starts = torch.tensor([m.start for m in mutations])
    ends = torch.tensor([m.end for m in mutations])
    at = (
        (lo[:, None, :] <= ends[None, :, None])
        & (hi[:, None, :] >= starts[None, :, None])
        & placed[:, None, :]
    ).double()
    return at.sum(-1), torch.einsum("bhs,bms->bhm", r, at), at.amax(dim=1) > 0


def test_mutation_windows_equal_the_dense_overlap_matrix() -> None:
    generator = torch.Generator().manual_seed(8)
    batch, seq, heads = 3, 40, 2
    lo = (SPIKE_START + 9 * torch.arange(seq)).expand(batch, seq).clone()
    lo[1, 10:] += 30  # an insertion-like shift
    hi = lo + 11
    placed = torch.rand(batch, seq, generator=generator) > 0.1
    lo[~placed], hi[~placed] = 0, 0
    names = ["del21765-21770", "A21800T", "C21650G", "del21991-21993", "ins21990:TAC", "G22000C"]
    mutations = [Mutation.parse(name) for name in names]  # not sorted by start
    r = torch.rand(batch, heads, seq, generator=generator, dtype=torch.float64)
    tokens, sums, at_any = _mutation_sums(r, lo.int(), hi.int(), placed, mutations)
    dense_tokens, dense_sums, dense_any = _dense_mutation_sums(r, lo, hi, placed, mutations)
    torch.testing.assert_close(tokens, dense_tokens)
    torch.testing.assert_close(sums, dense_sums, rtol=1e-14, atol=1e-14)
    assert at_any.equal(dense_any)
    assert dense_tokens.sum() > 0
    empty = _mutation_sums(r, lo.int(), hi.int(), placed, [])
    assert empty[0].shape == (batch, 0) and not empty[2].any()


def test_codon_sums_in_one_scatter_equal_counting_codon_by_codon() -> None:
    generator = torch.Generator().manual_seed(9)
    batch, seq = 2, 30
    lo = (SPIKE_START + 9 * torch.arange(seq)).expand(batch, seq).clone()
    hi = lo + 11
    placed = torch.rand(batch, seq, generator=generator) > 0.2
    r = torch.rand(batch, 3, seq, generator=generator, dtype=torch.float64)
    first, last, _ = codons(lo, hi)
    counts, sums = _codon_sums(r, first, last, placed)
    for b in range(batch):
        for codon in (1, 2, 5, 40, 91, 92):
            covering = [
                t for t in range(seq) if placed[b, t] and first[b, t] <= codon <= last[b, t]
            ]
            assert counts[b, codon - 1] == len(covering)
            expected = r[b][:, covering].sum(-1)
            torch.testing.assert_close(sums[b, :, codon - 1], expected, rtol=1e-12, atol=1e-12)


def test_scratch_buffers_serve_inside_and_outside_inference_mode() -> None:
    tokens = torch.randn(40, 3)
    expected, _ = power_sums_and_counts(tokens)
    with torch.inference_mode():
        inside, _ = power_sums_and_counts(torch.randn(4000, 7))  # grows the buffers here
        inside, _ = power_sums_and_counts(tokens)
    outside, _ = power_sums_and_counts(tokens)
    for name in ("s1", "s2", "s3", "s4", "abs1"):
        np.testing.assert_array_equal(getattr(inside, name), getattr(expected, name))
        np.testing.assert_array_equal(getattr(outside, name), getattr(expected, name))
