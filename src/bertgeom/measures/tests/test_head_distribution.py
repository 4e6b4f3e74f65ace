"""Each head's output distribution equals the stream distribution of that head alone, and
streams and merges like one pass."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from bertgeom.measures.distribution_accumulator import DistributionAccumulator
from bertgeom.measures.head_distribution import HeadDistributionAccumulator
from bertgeom.measures.token_statistics import head_gram_matrices

HEADS, DK = 3, 4


def _batches() -> list[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    generator = torch.Generator().manual_seed(11)
    out = []
    for size in (3, 2, 4):
        outputs = torch.randn(size, HEADS, 6, DK, generator=generator)
        outputs[:, 1] += 5.0  # a head whose outputs sit far from 0
        lengths = torch.randint(3, 7, (size,), generator=generator)
        mask = (torch.arange(6)[None, :] < lengths[:, None]).long()
        labels = [("a", "b")[int(i)] for i in torch.randint(0, 2, (size,), generator=generator)]
        out.append((outputs, mask, labels))
    return out


def test_each_head_equals_the_stream_distribution_of_that_head() -> None:
    heads = HeadDistributionAccumulator()
    alone = [DistributionAccumulator(per_class=True) for _ in range(HEADS)]
    for outputs, mask, labels in _batches():
        heads.update(2, outputs, mask, labels)
        for head in range(HEADS):
            alone[head].update(2, "z", outputs[:, head], mask, labels)
    table = heads.result().set_index(["head", "class", "metric"])["value"]
    for head in range(HEADS):
        expected = alone[head].result()
        for row in expected.itertuples():
            name = row.metric.removeprefix("dist.")
            measured = table[(head, row[3], f"dist.head_output.{name}")]
            np.testing.assert_allclose(measured, row.value, rtol=1e-5, atol=1e-9)


def test_split_and_merge_equal_one_pass() -> None:
    batches = _batches()
    whole, first, second = (HeadDistributionAccumulator() for _ in range(3))
    for index, (outputs, mask, labels) in enumerate(batches):
        whole.update(0, outputs, mask, labels)
        (first if index == 0 else second).update(0, outputs, mask, labels)
    merged = first.merge(second)
    pd.testing.assert_frame_equal(whole.result(), merged.result(), rtol=1e-12)
    assert set(whole.result()["class"]) == {"all", "a", "b"}


def test_head_gram_matrices_of_float32_match_float64() -> None:
    generator = torch.Generator().manual_seed(12)
    tokens = torch.randn(HEADS, 200, DK, generator=generator) + 40.0
    exact = tokens.double().transpose(1, 2) @ tokens.double()
    np.testing.assert_allclose(head_gram_matrices(tokens), exact.numpy(), rtol=1e-6)
