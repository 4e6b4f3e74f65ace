"""Tests of the cone index (DESIGN 3.1) against explicit pairwise computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bertgeom.measures.base import Accumulator
from bertgeom.measures.cone_accumulators import (
    ClassConeAccumulator,
    ConeAccumulator,
    HeadConeAccumulator,
)
from bertgeom.measures.cone_index import (
    attention_rows_cone_index,
    cone_index,
    cone_index_batch,
    head_output_cone_index,
)
from bertgeom.measures.tokens import token_mask


def slow_pairwise(vectors: np.ndarray) -> tuple[int, float]:
    """n and the sum over ordered pairs i != j of cos(x_i, x_j), by an explicit loop."""
    rows = [v for v in vectors if np.linalg.norm(v) > 0]
    total = 0.0
    for i, j in itertools.permutations(range(len(rows)), 2):
        a, b = rows[i], rows[j]
        total += float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return len(rows), total


def test_identity_against_pairwise_loop() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(9, 5)) + 0.7
    vectors[3] = 0.0
    n, pair_sum = slow_pairwise(vectors)
    index = cone_index(torch.from_numpy(vectors))
    assert n == 8
    assert index**2 == pytest.approx(n + pair_sum, abs=1e-10)
    cone = cone_index_batch(torch.from_numpy(vectors)[None])
    assert float(cone.mean_cosine[0]) == pytest.approx(pair_sum / (n * (n - 1)), abs=1e-12)
    assert float(cone.normalized[0]) == pytest.approx(index / n, abs=1e-12)
    assert int(cone.n_valid[0]) == n


def test_same_direction_gives_n_and_antipodal_pairs_give_zero() -> None:
    direction = torch.tensor([1.0, -2.0, 0.5])
    same = torch.stack([direction * scale for scale in (0.1, 1.0, 3.0, 7.0)])
    assert cone_index(same) == pytest.approx(4.0, abs=1e-12)
    antipodal = torch.cat([same, -same])
    assert cone_index(antipodal) == pytest.approx(0.0, abs=1e-12)
    assert cone_index(torch.zeros(3, 4)) == 0.0


def test_padding_is_ignored_and_can_be_included() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(3, 6, 4, dtype=torch.float64)  # float64: exact, as the reference
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    cone = cone_index_batch(hidden, mask)
    for b in range(3):
        n = int(mask[b].sum())
        assert float(cone.index[b]) == pytest.approx(cone_index(hidden[b, :n]), abs=1e-12)
        assert int(cone.n_valid[b]) == n
    garbage = hidden.clone()
    garbage[1, 3:] = 1e3
    assert torch.allclose(cone_index_batch(garbage, mask).index, cone.index)
    with_padding = cone_index_batch(hidden, token_mask(mask, include_padding=True).valid)
    assert float(with_padding.index[1]) == pytest.approx(cone_index(hidden[1]), abs=1e-12)


def test_mean_cosine_undefined_for_fewer_than_two_vectors() -> None:
    hidden = torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 0, 0], [0, 0, 0]])
    cone = cone_index_batch(hidden, mask)
    assert float(cone.normalized[0]) == pytest.approx(1.0)
    assert math.isnan(float(cone.mean_cosine[0]))
    assert math.isnan(float(cone.normalized[1]))


vector_sets = arrays(
    np.float64,
    st.tuples(st.integers(1, 10), st.integers(1, 5)),
    elements=st.floats(-100, 100, allow_nan=False, width=32),
)


@settings(max_examples=60, deadline=None)
@given(vector_sets)
def test_property_identity_and_bounds(vectors: np.ndarray) -> None:
    n, pair_sum = slow_pairwise(vectors)
    index = cone_index(torch.from_numpy(vectors))
    assert -1e-9 <= index <= n + 1e-9
    assert index**2 == pytest.approx(n + pair_sum, abs=1e-8 * max(1, n * n))


@settings(max_examples=40, deadline=None)
@given(vector_sets, st.randoms(use_true_random=False))
def test_property_invariant_to_positive_scaling_and_order(vectors: np.ndarray, rnd: object) -> None:
    tensor = torch.from_numpy(vectors)
    scales = torch.linspace(0.5, 3.0, tensor.shape[0])[:, None].to(torch.float64)
    order = list(range(tensor.shape[0]))
    rnd.shuffle(order)  # type: ignore[attr-defined]
    reference = cone_index(tensor)
    assert cone_index(tensor * scales) == pytest.approx(reference, abs=1e-9)
    assert cone_index(tensor[order]) == pytest.approx(reference, abs=1e-9)


def test_head_outputs_against_per_head_loop() -> None:
    torch.manual_seed(1)
    outputs = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    cone = head_output_cone_index(outputs, mask)
    assert cone.index.shape == (2, 3)
    for b, h in itertools.product(range(2), range(3)):
        n = int(mask[b].sum())
        assert float(cone.index[b, h]) == pytest.approx(cone_index(outputs[b, h, :n]), abs=1e-12)


def test_attention_rows_restricted_to_valid_tokens() -> None:
    torch.manual_seed(2)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    scores = torch.randn(2, 2, 4, 4).masked_fill(~mask.bool()[:, None, None, :], -1e9)
    attentions = scores.softmax(-1)
    cone = attention_rows_cone_index(attentions, mask)
    for b, h in itertools.product(range(2), range(2)):
        n = int(mask[b].sum())
        expected = cone_index(attentions[b, h, :n, :n])
        # float32 attention: float32 sums (relative error ~1e-7); float64 input: exact.
        assert float(cone.index[b, h]) == pytest.approx(expected, rel=1e-6)
        exact = attention_rows_cone_index(attentions.double(), mask).index[b, h]
        assert float(exact) == pytest.approx(expected, abs=1e-12)
    uniform = torch.full((1, 1, 3, 3), 1 / 3)
    assert float(attention_rows_cone_index(uniform).index) == pytest.approx(3.0)


def _batches(seed: int) -> list[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for size in (3, 4, 2):
        hidden = torch.randn(size, 6, 5, generator=generator, dtype=torch.float64) + 0.5
        lengths = torch.randint(2, 7, (size,), generator=generator)
        mask = (torch.arange(6)[None, :] < lengths[:, None]).long()
        labels = [
            ("alpha", "beta")[int(i)] for i in torch.randint(0, 2, (size,), generator=generator)
        ]
        out.append((hidden, mask, labels))
    return out


def _assert_frames_close(left: pd.DataFrame, right: pd.DataFrame) -> None:
    assert list(left.columns) == list(right.columns)
    keys = list(left.columns[:-1])
    pd.testing.assert_frame_equal(left[keys], right[keys])
    np.testing.assert_allclose(left["value"], right["value"], rtol=1e-12, atol=1e-12)


def test_cone_accumulator_split_merge_equals_one_pass_and_matches_direct() -> None:
    batches = _batches(3)
    whole = ConeAccumulator(n_bins=10)
    part_a, part_b = ConeAccumulator(n_bins=10), ConeAccumulator(n_bins=10)
    for i, (hidden, mask, labels) in enumerate(batches):
        whole.update(2, "layer_input", hidden, mask, labels)
        (part_a if i == 0 else part_b).update(2, "layer_input", hidden, mask, labels)
    assert isinstance(whole, Accumulator)
    merged = part_a.merge(part_b)
    _assert_frames_close(whole.result(), merged.result())
    for key, counts in whole.histograms().items():
        np.testing.assert_array_equal(counts, merged.histograms()[key])

    all_hidden = [(h[b], m[b], lab[b]) for h, m, lab in batches for b in range(h.shape[0])]
    per_input = np.array([cone_index(h[: int(m.sum())]) for h, m, _ in all_hidden])
    labels = np.array([lab for _, _, lab in all_hidden])
    table = whole.result().set_index(["class", "metric"])["value"]
    assert table[("all", "cone.index_mean")] == pytest.approx(per_input.mean(), abs=1e-12)
    assert table[("all", "cone.index_std")] == pytest.approx(per_input.std(ddof=1), abs=1e-12)
    beta = per_input[labels == "beta"]
    assert table[("beta", "cone.index_mean")] == pytest.approx(beta.mean(), abs=1e-12)
    assert table[("beta", "cone.n_inputs")] == len(beta)
    assert whole.histograms()[(2, "layer_input", "all")].sum() == len(per_input)
    assert set(whole.result()["metric"]) >= {
        "cone.index_mean",
        "cone.index_std",
        "cone.normalized_mean",
        "cone.mean_cosine",
    }


def test_head_cone_accumulator_split_merge() -> None:
    torch.manual_seed(4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
    outputs = torch.randn(3, 2, 4, 3, dtype=torch.float64)
    attentions = torch.randn(3, 2, 4, 4, dtype=torch.float64).softmax(-1)
    labels = ["x", "y", "x"]
    whole, part_a, part_b = (HeadConeAccumulator() for _ in range(3))
    for acc, sl in ((whole, slice(0, 3)), (part_a, slice(0, 1)), (part_b, slice(1, 3))):
        acc.update_head_outputs(0, outputs[sl], mask[sl], labels[sl])
        acc.update_attention_rows(0, attentions[sl], mask[sl], labels[sl])
    _assert_frames_close(whole.result(), part_a.merge(part_b).result())
    table = whole.result().set_index(["head", "class", "metric"])["value"]
    expected = np.mean([cone_index(outputs[b, 1, : int(mask[b].sum())]) for b in (0, 2)])
    assert table[(1, "x", "cone.head_output.index_mean")] == pytest.approx(expected, abs=1e-12)
    assert (1, "all", "cone.attention_rows.index_mean") in table.index


def test_class_cone_accumulator_matches_direct_and_merges() -> None:
    torch.manual_seed(5)
    cls_vectors = torch.randn(7, 4) + 1.0
    labels = ["a", "b", "a", "a", "b", "b", "a"]
    whole, part_a, part_b = ClassConeAccumulator(), ClassConeAccumulator(), ClassConeAccumulator()
    whole.update(3, cls_vectors, labels)
    part_a.update(3, cls_vectors[:4], labels[:4])
    part_b.update(3, cls_vectors[4:], labels[4:])
    _assert_frames_close(whole.result(), part_a.merge(part_b).result())
    table = whole.result().set_index(["class", "metric"])["value"]
    rows_a = cls_vectors[[i for i, lab in enumerate(labels) if lab == "a"]]
    assert table[("a", "cls.cone.index")] == pytest.approx(cone_index(rows_a), abs=1e-12)
    assert table[("all", "cls.cone.index")] == pytest.approx(cone_index(cls_vectors), abs=1e-12)
    assert table[("a", "cls.cone.n_inputs")] == 4


def test_inputs_without_vectors_are_left_out() -> None:
    acc = ConeAccumulator()
    mask = torch.tensor([[1, 1, 1], [0, 0, 0]])
    hidden = torch.randn(2, 3, 4)
    acc.update(0, "layer_input", hidden, mask, ["x", "y"])
    table = acc.result().set_index(["class", "metric"])["value"]
    assert table[("all", "cone.n_inputs")] == 1
    assert table[("all", "cone.index_mean")] == pytest.approx(cone_index(hidden[0]))
    assert acc.histograms()[(0, "layer_input", "all")].sum() == 1


def test_labels_must_match_batch() -> None:
    with pytest.raises(ValueError, match="labels"):
        ConeAccumulator().update(0, "layer_input", torch.randn(2, 3, 4), None, ["a"])


def test_float32_vectors_are_summed_in_float32_to_about_1e_7() -> None:
    generator = torch.Generator().manual_seed(6)
    hidden = torch.randn(4, 50, 32, generator=generator) + 1.0
    mask = torch.ones(4, 50, dtype=torch.long)
    fast = cone_index_batch(hidden, mask).index
    exact = cone_index_batch(hidden.double(), mask).index
    np.testing.assert_allclose(fast.numpy(), exact.numpy(), rtol=1e-6)
