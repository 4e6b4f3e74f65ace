"""The chunked gate kernel (issue 23) against the per-gate functions on the whole batch: any chunk
size, any number of workers, cropped chunks of mixed lengths, and the input dtypes and modes."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bertgeom.measures import gate_kernel
from bertgeom.measures.cluster import cluster_score
from bertgeom.measures.cpu_workers import run_tasks
from bertgeom.measures.gate_kernel import chunk_plan, fused_gate_scores
from bertgeom.measures.gates import (
    GATE_NAMES,
    backward_score,
    closed_score,
    directional_score,
    forward_score,
    gate_scores,
    instance_score,
    open_score,
)
from bertgeom.measures.tests.test_gates import random_batch
from bertgeom.measures.tokens import token_mask


def per_gate(
    attn: torch.Tensor,
    mask: torch.Tensor,
    include_padding: bool,
    window: int = 2,
    top_k: int = 1,
    cluster_rows: int | None = 64,
) -> torch.Tensor:
    """The seven scores from the per-gate functions on the whole batch, cut to its longest
    input unless ``include_padding`` (what ``gate_scores`` computed before issue 23)."""
    if not include_padding:
        longest = max(int(mask.sum(dim=1).max()), 1)
        attn, mask = attn[..., :longest, :longest], mask[:, :longest]
    tokens = token_mask(mask, include_padding)
    scores = torch.stack(
        [
            closed_score(attn, tokens),
            directional_score(attn, tokens, top_k),
            open_score(attn, tokens),
            backward_score(attn, tokens, window),
            forward_score(attn, tokens, window),
            instance_score(attn, tokens),
            cluster_score(attn, tokens, cluster_rows),
        ],
        dim=-1,
    )
    return scores.masked_fill(~tokens.defined[:, None, None], float("nan"))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 6),
    heads=st.integers(1, 3),
    seq=st.integers(1, 20),
    budget=st.sampled_from([1, 50, 400, 10**6]),
    workers=st.sampled_from([1, 2]),
    include_padding=st.booleans(),
    leak=st.booleans(),
    cluster_rows=st.sampled_from([None, 2, 5, 64]),
    window=st.integers(1, 3),
    top_k=st.integers(1, 3),
)
def test_chunks_equal_the_per_gate_functions(
    seed: int,
    batch: int,
    heads: int,
    seq: int,
    budget: int,
    workers: int,
    include_padding: bool,
    leak: bool,
    cluster_rows: int | None,
    window: int,
    top_k: int,
) -> None:
    """Whatever the chunks (one input and head each with budget 1, one chunk with 10**6) and
    workers, the scores are those of the per-gate functions on the whole batch."""
    attn, mask = random_batch(seed, batch, heads, seq, leak)
    tokens = token_mask(mask, include_padding)
    scores = fused_gate_scores(
        attn,
        tokens,
        window=window,
        top_k=top_k,
        cluster_rows=cluster_rows,
        budget=budget,
        workers=workers,
    )
    expected = per_gate(attn, mask, include_padding, window, top_k, cluster_rows)
    torch.testing.assert_close(scores, expected, atol=1e-12, rtol=0, equal_nan=True)


def test_float32_scores_are_those_of_the_per_gate_functions() -> None:
    """In float32 too, chunks and workers change no bit of the scores but the last of the open
    one (every reduction keeps its length and order): mixed lengths with garbage in the
    padding, near-uniform attention (where the cluster ratio is a difference of near-equal
    sums), sampled cluster rows."""
    rng = np.random.default_rng(5)
    lengths = [70, 6, 0, 3, 68, 17, 70, 25]
    attn, _ = random_batch(11, len(lengths), 3, 72, leak=True)
    mask = (torch.arange(72)[None, :] < torch.tensor(lengths)[:, None]).to(torch.int64)
    padding = ~(mask.bool()[:, None, :, None] & mask.bool()[:, None, None, :])
    attn = torch.where(padding, torch.from_numpy(rng.uniform(size=attn.shape)), attn).float()
    flat = (torch.randn(attn.shape) * 0.05).masked_fill(~mask.bool()[:, None, None, :], -torch.inf)
    for scores in (attn, flat.softmax(dim=-1)):
        tokens = token_mask(mask)
        expected = per_gate(scores, mask, False, cluster_rows=16)
        for budget, workers in ((1, 2), (3 * 70 * 70, 1), (3 * 70 * 70, 2), (10**6, 1)):
            got = fused_gate_scores(
                scores, tokens, window=2, top_k=1, cluster_rows=16, budget=budget, workers=workers
            )
            # The entropy's row sums are products with a vector of ones, whose last bit can
            # change with the number of matrices in the product; nothing else's does.
            others = [k for k in range(7) if k != GATE_NAMES.index("open")]
            torch.testing.assert_close(
                got[..., others], expected[..., others], atol=0, rtol=0, equal_nan=True
            )
            torch.testing.assert_close(got, expected, atol=0, rtol=3e-7, equal_nan=True)
        assert bool(got[[2, 3]].isnan().all()) and not bool(got[[0, 1, 4]].isnan().any())


def test_chunk_plan_covers_every_input_and_head_once() -> None:
    for batch, heads, per_head, budget in ((7, 4, 100, 1), (7, 4, 100, 450), (7, 4, 100, 900)):
        plan = chunk_plan(batch, heads, per_head, budget)
        covered = np.zeros((batch, heads), dtype=int)
        for chunk in plan:
            covered[chunk.start : chunk.stop, chunk.first : chunk.last] += 1
            entries = (chunk.stop - chunk.start) * (chunk.last - chunk.first) * per_head
            assert entries <= budget or entries == per_head
        assert bool((covered == 1).all())
    assert [tuple(c) for c in chunk_plan(5, 4, 100, 900)] == [
        (0, 2, 0, 4),
        (2, 4, 0, 4),
        (4, 5, 0, 4),
    ]
    assert [tuple(c) for c in chunk_plan(2, 4, 100, 250)] == [
        (0, 1, 0, 2),
        (0, 1, 2, 4),
        (1, 2, 0, 2),
        (1, 2, 2, 4),
    ]


def test_buffers_are_reused_and_float16_is_promoted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Half-precision attention scores as its float32 copy (float32 result), through streamed
    head groups smaller than a chunk."""
    monkeypatch.setattr(gate_kernel, "STREAM_ELEMENTS", 100)
    attn, mask = random_batch(3, 5, 4, 30)
    half = attn.half()
    scores = gate_scores(half, token_mask(mask))
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, per_gate(half.float(), mask, False), equal_nan=True)


def test_inference_mode_and_workers() -> None:
    """Inference tensors in and out of inference mode, on the worker threads or not."""
    attn, mask = random_batch(8, 6, 2, 24)
    expected = per_gate(attn, mask, False)
    tokens = token_mask(mask)
    for workers in (1, 2):
        with torch.inference_mode():
            inside = fused_gate_scores(
                attn.clone(), tokens, window=2, top_k=1, cluster_rows=64, budget=1, workers=workers
            )
        torch.testing.assert_close(inside, expected, equal_nan=True)
        with torch.inference_mode():
            inference_attn = attn.clone()
        outside = fused_gate_scores(
            inference_attn, tokens, window=2, top_k=1, cluster_rows=64, budget=1, workers=workers
        )
        torch.testing.assert_close(outside, expected, equal_nan=True)


def test_float32_scores_match_float64() -> None:
    """The kernel in float32 stays within 1e-5 of the float64 scores (the issue's tolerance)."""
    attn, mask = random_batch(21, 6, 3, 90)
    exact = gate_scores(attn, token_mask(mask))
    single = gate_scores(attn.float(), token_mask(mask))
    torch.testing.assert_close(single.double(), exact, atol=1e-5, rtol=0, equal_nan=True)


def test_workers_run_single_threaded_and_leave_the_caller_as_it_was() -> None:
    """Results in order; each worker has one intra-op thread; the caller's setting and that of
    threads started later are left alone."""
    threads = torch.get_num_threads()
    tasks = [lambda k=k: (k, torch.get_num_threads(), torch.is_grad_enabled()) for k in range(9)]
    results = run_tasks(tasks, 3)
    assert results == [(k, 1, False) for k in range(9)]
    assert run_tasks(tasks[:2], 1) == [(0, threads, True), (1, threads, True)]
    assert torch.get_num_threads() == threads
    later: list[int] = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [threads]
