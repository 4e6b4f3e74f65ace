"""The compiled CPU gate kernel (issue 23) against the per-gate functions, the float64 truth and
itself: any batch, both padding modes, both dtypes, sampled cluster rows, wide windows."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bertgeom.measures.gate_kernel import fused_gate_scores
from bertgeom.measures.gate_native import _row_plogp, _shares, native_gate_scores
from bertgeom.measures.gates import GATE_NAMES, gate_scores
from bertgeom.measures.tests.test_gate_kernel import per_gate
from bertgeom.measures.tests.test_gates import random_batch
from bertgeom.measures.tokens import TokenMask, token_mask

CLUSTER = GATE_NAMES.index("cluster")


def native(
    attn: torch.Tensor,
    tokens: TokenMask,
    window: int = 2,
    top_k: int = 1,
    cluster_rows: int | None = 64,
) -> torch.Tensor:
    return native_gate_scores(
        attn,
        tokens,
        window=window,
        top_k=top_k,
        cluster_rows=cluster_rows,
        power=4,
        self_tolerance=1e-4,
    )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 6),
    heads=st.integers(1, 3),
    seq=st.integers(1, 24),
    include_padding=st.booleans(),
    leak=st.booleans(),
    cluster_rows=st.sampled_from([None, 1, 2, 5, 64]),
    window=st.integers(1, 4),
    top_k=st.integers(1, 30),
)
def test_float64_scores_are_those_of_the_per_gate_functions(
    seed: int,
    batch: int,
    heads: int,
    seq: int,
    include_padding: bool,
    leak: bool,
    cluster_rows: int | None,
    window: int,
    top_k: int,
) -> None:
    attn, mask = random_batch(seed, batch, heads, seq, leak)
    scores = native(attn, token_mask(mask, include_padding), window, top_k, cluster_rows)
    expected = per_gate(attn, mask, include_padding, window, top_k, cluster_rows)
    assert scores.dtype == torch.float64
    torch.testing.assert_close(scores, expected, atol=1e-12, rtol=0, equal_nan=True)


def test_float32_scores_are_nearer_the_float64_truth_than_float32_sums() -> None:
    """On near-uniform attention (the cluster ratio a difference of near-equal sums) and mixed
    lengths, the float32 kernel's float64 sums put every score within 2e-7 of the float64
    scores, no further than the torch kernel's float32 sums leave them."""
    lengths = torch.tensor([70, 6, 0, 3, 68, 17, 70, 25])
    mask = (torch.arange(72)[None, :] < lengths[:, None]).to(torch.int64)
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(len(lengths), 3, 72, 72, generator=generator, dtype=torch.float64)
    for scale in (0.05, 1.0, 4.0):
        exact = (logits * scale).masked_fill(~mask.bool()[:, None, None, :], -torch.inf)
        exact = exact.softmax(dim=-1)
        single = exact.float()
        tokens = token_mask(mask)
        truth = per_gate(single.double(), mask, False, cluster_rows=16)
        ours = native(single, tokens, cluster_rows=16)
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours.double(), truth, atol=2e-7, rtol=0, equal_nan=True)
        torch_kernel = fused_gate_scores(single, tokens, window=2, top_k=1, cluster_rows=16)
        ours_error = (ours.double() - truth).abs().nan_to_num().max()
        torch_error = (torch_kernel.double() - truth).abs().nan_to_num().max()
        assert ours_error <= torch_error


def test_an_input_scores_the_same_alone_and_in_any_batch() -> None:
    """Each input is read to its own length, so its scores do not depend on its batch."""
    attn, mask = random_batch(9, 6, 4, 40)
    attn = attn.float()
    together = native(attn, token_mask(mask))
    for b in range(6):
        n = max(int(mask[b].sum()), 1)
        alone = native(attn[b : b + 1, :, :n, :n].contiguous(), token_mask(mask[b : b + 1, :n]))
        torch.testing.assert_close(alone[0], together[b], atol=0, rtol=0, equal_nan=True)


def test_gate_scores_use_it_on_the_cpu() -> None:
    attn, mask = random_batch(4, 5, 3, 30)
    tokens = token_mask(mask)
    torch.testing.assert_close(gate_scores(attn, tokens), native(attn, tokens), equal_nan=True)


def test_nan_attention_gives_nan_scores_and_short_inputs_none() -> None:
    attn, _ = random_batch(2, 3, 2, 12)
    mask = (torch.arange(12)[None, :] < torch.tensor([12, 9, 3])[:, None]).to(torch.int64)
    attn = attn.float()
    attn[0, 1, 5, 4] = torch.nan
    scores = native(attn, token_mask(mask))
    assert bool(scores[0, 1].isnan().any()) and not bool(scores[0, 0].isnan().any())
    assert bool(scores[2].isnan().all()) and not bool(scores[1].isnan().any())


def test_a_mask_of_another_layout_is_refused() -> None:
    attn, mask = random_batch(2, 2, 1, 8)
    tokens = token_mask(mask)
    odd = TokenMask(
        tokens.valid,
        tokens.valid.clone(),
        tokens.sep,
        tokens.n_real,
        tokens.n_valid,
        tokens.n_valid,
        tokens.defined,
    )
    with pytest.raises(ValueError, match="token_mask"):
        native(attn, odd)


@numba.njit
def _plogp(values: np.ndarray) -> float:
    return _row_plogp(values, values.shape[0], np.empty_like(values))


def test_the_float32_logarithm_is_within_2e_7_of_the_exact_one() -> None:
    """Over the float32 range a probability takes (denormals to 1) and exact zeros."""
    rng = np.random.default_rng(0)
    values = (10.0 ** rng.uniform(-37, 0, 20_000)).astype(np.float32)
    values[:50] = 0.0
    values[50:60] = np.float32(1.0)
    for value in values[::97]:
        one = np.array([value], dtype=np.float32)
        exact = float(value) * np.log(float(value)) if value > 0 else 0.0
        assert abs(_plogp(one) - exact) <= 2e-7 * abs(exact) + 1e-45
    exact = np.sum(np.where(values > 0, values * np.log(np.maximum(values, 1e-45)), 0.0))
    assert _plogp(values) == pytest.approx(exact, rel=2e-7)
    assert _plogp(values.astype(np.float64)) == pytest.approx(exact, rel=1e-12)


def test_workers_change_no_score() -> None:
    """Inputs shared out to worker threads in runs of equal work: the same bits as one worker,
    whatever the number of workers (more than inputs too)."""
    attn, mask = random_batch(12, 7, 3, 50)
    attn = attn.float()
    tokens = token_mask(mask)
    one = native_gate_scores(
        attn, tokens, window=2, top_k=1, cluster_rows=8, power=4, self_tolerance=1e-4, workers=1
    )
    for workers in (2, 3, 9):
        many = native_gate_scores(
            attn,
            tokens,
            window=2,
            top_k=1,
            cluster_rows=8,
            power=4,
            self_tolerance=1e-4,
            workers=workers,
        )
        torch.testing.assert_close(many, one, atol=0, rtol=0, equal_nan=True)


def test_shares_are_runs_of_about_equal_work() -> None:
    assert _shares([1] * 10, 2) == [0, 5, 10]
    assert _shares([1] * 10, 1) == [0, 10]
    assert _shares([100, 1, 1, 1], 2) == [0, 1, 4]
    assert _shares([5], 3) == [0, 1]
    assert _shares([], 2) == [0, 0]
