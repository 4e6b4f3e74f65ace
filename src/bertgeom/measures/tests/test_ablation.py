"""The ablation measures against independent computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from bertgeom.measures.ablation import (
    BASELINE,
    Ablation,
    AblationAccumulator,
    key_masked,
    macro_f1,
    matched_keys,
    mean_replaced,
    mutation_keys,
)


def test_key_masking_is_the_softmax_without_the_masked_keys() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 5, 6, generator=generator, dtype=torch.float64)
    values = torch.randn(3, 6, 4, generator=generator, dtype=torch.float64)
    keep = torch.rand(3, 6, generator=generator) > 0.4
    keep[:, 0] = True
    expected = torch.softmax(scores.masked_fill(~keep[:, None, :], float("-inf")), -1) @ values
    got = key_masked(torch.softmax(scores, -1), values, keep)
    torch.testing.assert_close(got, expected)


def test_a_query_left_without_keys_keeps_its_row() -> None:
    attention = torch.softmax(torch.randn(1, 2, 3), -1)
    values = torch.randn(1, 3, 2)
    got = key_masked(attention, values, torch.zeros(1, 3, dtype=torch.bool))
    torch.testing.assert_close(got, attention @ values)


def test_mean_replacement_sets_every_position() -> None:
    got = mean_replaced(torch.randn(2, 3, 4), torch.arange(4.0))
    assert torch.equal(got, torch.arange(4.0).expand(2, 3, 4))


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_is_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true, predicted = rng.integers(0, 4, 50), rng.integers(0, 5, 50)
    confusion = np.zeros((5, 5), dtype=np.int64)
    np.add.at(confusion, (true, predicted), 1)
    assert macro_f1(confusion) == pytest.approx(f1_score(true, predicted, average="macro"))


def test_mutation_keys_are_the_tokens_over_carried_mutations() -> None:
    span_lo = torch.tensor([[0, 10, 19, 28, 0]])
    span_hi = torch.tensor([[0, 21, 30, 39, 0]])
    starts, ends = torch.tensor([15, 35]), torch.tensor([15, 35])
    got = mutation_keys(span_lo, span_hi, starts, ends, torch.tensor([[True, False]]))
    assert got.tolist() == [[False, True, False, False, False]]
    got = mutation_keys(span_lo, span_hi, starts, ends, torch.tensor([[True, True]]))
    assert got.tolist() == [[False, True, False, True, False]]


def test_matched_keys_are_as_many_other_placed_tokens_nearby() -> None:
    placed = torch.zeros(2, 60, dtype=torch.bool)
    placed[:, 1:59] = True
    masked = torch.zeros(2, 60, dtype=torch.bool)
    masked[0, [5, 6, 7]] = True
    masked[1, [50, 51]] = True
    matched = matched_keys(masked, placed, offset=10)
    assert matched.sum(1).tolist() == [3, 2]
    assert not (matched & masked).any() and not (matched & ~placed).any()
    assert torch.nonzero(matched[0]).flatten().tolist() == [15, 16, 17]
    assert torch.nonzero(matched[1]).flatten().tolist() == [40, 41]  # past the end: before


def test_accumulator_merges_to_the_one_batch_answer() -> None:
    plan = [BASELINE, Ablation(0, 1, "zero")]
    classes = ("x", "y", "z")
    generator = torch.Generator().manual_seed(3)
    true = torch.randint(0, 3, (40,), generator=generator)
    logits = {a: torch.randn(40, 3, generator=generator) for a in plan}
    whole, first, second = (AblationAccumulator(plan, classes) for _ in range(3))
    for ablation in plan:
        whole.update(ablation, true, logits[ablation])
        first.update(ablation, true[:13], logits[ablation][:13])
        second.update(ablation, true[13:], logits[ablation][13:])
    merged = first.merge(second).result()
    expected = whole.result()
    pd.testing.assert_frame_equal(merged, expected, rtol=1e-12)
    row = expected.query("mode == 'none' and `class` == 'all' and metric == 'accuracy'")
    assert row["value"].item() == pytest.approx(
        float((logits[BASELINE].argmax(1) == true).double().mean())
    )
    log_p = torch.log_softmax(logits[BASELINE].double(), -1)[torch.arange(40), true]
    row = expected.query("mode == 'none' and `class` == 'y' and metric == 'true_log_probability'")
    assert row["value"].item() == pytest.approx(float(log_p[true == 1].mean()))


def test_unknown_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown ablation mode"):
        Ablation(0, 0, "scramble")
