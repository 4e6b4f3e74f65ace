"""The gate scores against a slow loop reference, their invariances, known patterns, the dominant
gate and the calibration target on planted matrices."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bertgeom.measures.cluster import CLUSTER_SELF_TOLERANCE, CLUSTER_SIMILARITY_POWER
from bertgeom.measures.gates import (
    DEFAULT_THRESHOLDS,
    GATE_NAMES,
    MIXED,
    UNDEFINED,
    dominant_gate,
    dominant_name,
    gate_margins,
    gate_scores,
    high_attention_positions,
    threshold_vector,
)
from bertgeom.measures.planted_attention import (
    calibrate_thresholds,
    planted_attention,
    planted_suite,
    recovery_rates,
    score_planted,
    stack_planted,
)
from bertgeom.measures.tokens import token_mask

Matrix = npt.NDArray[np.float64]


def reference_scores(
    attn: Matrix,
    mask: npt.NDArray[np.int64],
    window: int = 2,
    top_k: int = 1,
    include_padding: bool = False,
    cluster_rows: int | None = 64,
) -> list[float]:
    """The seven scores of one ``(seq, seq)`` matrix, by plain loops over the definitions."""
    seq = len(mask)
    n_real = int(sum(mask))
    if n_real < 4:
        return [math.nan] * 7
    n = seq if include_padding else n_real
    sep = n_real - 1
    valid = list(range(n))
    content = [i for i in valid if i not in (0, sep)]
    m = len(content)

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    closed = mean([attn[i, 0] + attn[i, sep] for i in content])
    column_means = [sum(attn[i, j] for i in content) / m for j in content]
    directional = sum(sorted(column_means, reverse=True)[:top_k])
    entropies = []
    for i in content:
        h = -sum(attn[i, j] * math.log(attn[i, j]) for j in valid if attn[i, j] > 0)
        entropies.append(h / math.log(n))
    backward = mean(
        [sum(attn[i, i - d] for d in range(1, window + 1) if i - d >= 0) for i in content]
    )
    forward = mean(
        [sum(attn[i, i + d] for d in range(1, window + 1) if i + d < n) for i in content]
    )
    instance = mean([attn[i, i] for i in content])

    off_mass = {i: sum(attn[i, j] for j in content if j != i) for i in content}
    squared = {i: sum(attn[i, k] ** 2 for k in content) for i in content}
    used = m if cluster_rows is None else min(cluster_rows, m)
    queries = [content[(k * m) // used] for k in range(used)]
    numerator = denominator = 0.0
    for i in queries:
        for j in content:
            if j == i:
                continue
            deviation = attn[i, j] - off_mass[i] / max(m - 1, 1)
            # Rows without self-attention; i's attention to j aligned with j's to i.
            others = [k for k in content if k not in (i, j)]
            row_i = [attn[i, k] for k in others] + [attn[i, j]]
            row_j = [attn[j, k] for k in others] + [attn[j, i]]
            dot = sum(a * b for a, b in zip(row_i, row_j, strict=True))
            norm_i = math.sqrt(sum(a * a for a in row_i))
            norm_j = math.sqrt(sum(b * b for b in row_j))
            informative = (
                norm_i**2 > CLUSTER_SELF_TOLERANCE * squared[i]
                and norm_j**2 > CLUSTER_SELF_TOLERANCE * squared[j]
            )
            cosine = dot / (norm_i * norm_j) if informative else 0.0
            cosine = min(max(cosine, 0.0), 1.0)
            numerator += deviation * cosine**CLUSTER_SIMILARITY_POWER
            denominator += max(deviation, 0.0)
    tolerance = used * np.finfo(np.float64).eps ** 0.5
    ratio = 0.0 if denominator <= tolerance else min(max(numerator / denominator, 0.0), 1.0)
    cluster = ratio * mean(list(off_mass.values()))
    return [closed, directional, mean(entropies), backward, forward, instance, cluster]


def random_batch(
    seed: int, batch: int, heads: int, seq: int, leak: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random right-padded attention: softmax of random logits (some with planted blocks, some
    with exact zeros) over the real keys; with ``leak`` the padding keys get mass too."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, seq + 1, size=batch)
    lengths[0] = seq
    logits = rng.normal(size=(batch, heads, seq, seq)) * rng.uniform(0.3, 5.0)
    blocks = rng.integers(0, 3, size=seq)
    logits += rng.uniform(0, 6) * (blocks[:, None] == blocks[None, :])
    logits[rng.uniform(size=logits.shape) < rng.uniform(0, 0.5)] = -np.inf
    logits[..., 0] = np.maximum(logits[..., 0], -30.0)
    keys = np.arange(seq)
    for b in range(batch):
        if not leak:
            logits[b, ..., keys >= max(lengths[b], 1)] = -np.inf
    attn = np.exp(logits - logits.max(axis=-1, keepdims=True))
    attn /= attn.sum(axis=-1, keepdims=True)
    mask = (keys[None, :] < lengths[:, None]).astype(np.int64)
    return torch.from_numpy(attn), torch.from_numpy(mask)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 3),
    heads=st.integers(1, 2),
    seq=st.integers(1, 14),
    window=st.integers(1, 3),
    top_k=st.integers(1, 3),
    include_padding=st.booleans(),
    cluster_rows=st.sampled_from([None, 1, 3, 128]),
    leak=st.booleans(),
)
def test_scores_match_loop_reference(
    seed: int,
    batch: int,
    heads: int,
    seq: int,
    window: int,
    top_k: int,
    include_padding: bool,
    cluster_rows: int | None,
    leak: bool,
) -> None:
    attn, mask = random_batch(seed, batch, heads, seq, leak)
    scores = gate_scores(
        attn,
        token_mask(mask, include_padding),
        window=window,
        top_k=top_k,
        cluster_rows=cluster_rows,
    )
    assert scores.shape == (batch, heads, 7)
    assert scores.dtype == torch.float64
    for b in range(batch):
        for h in range(heads):
            expected = reference_scores(
                attn[b, h].numpy(), mask[b].numpy(), window, top_k, include_padding, cluster_rows
            )
            np.testing.assert_allclose(scores[b, h].numpy(), expected, atol=1e-6, rtol=0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), seq=st.integers(4, 16), extra=st.integers(1, 6))
def test_padding_is_ignored(seed: int, seq: int, extra: int) -> None:
    """Default scores do not depend on what the padded rows and columns hold, nor on how far an
    input is padded, nor on the other inputs of the batch."""
    attn, mask = random_batch(seed, 3, 2, seq)
    scores = gate_scores(attn, token_mask(mask))
    rng = np.random.default_rng(seed)
    garbage = attn.clone()
    padding = ~(mask.bool()[:, None, :, None] & mask.bool()[:, None, None, :])
    garbage[padding.expand_as(garbage)] = torch.from_numpy(rng.uniform(size=garbage.shape))[
        padding.expand_as(garbage)
    ]
    torch.testing.assert_close(gate_scores(garbage, token_mask(mask)), scores, equal_nan=True)
    wider = torch.zeros(3, 2, seq + extra, seq + extra, dtype=torch.float64)
    wider[..., :seq, :seq] = attn
    wider_mask = torch.zeros(3, seq + extra, dtype=torch.int64)
    wider_mask[:, :seq] = mask
    torch.testing.assert_close(gate_scores(wider, token_mask(wider_mask)), scores, equal_nan=True)
    for b in range(3):
        alone = gate_scores(attn[b : b + 1], token_mask(mask[b : b + 1]))
        torch.testing.assert_close(alone, scores[b : b + 1], equal_nan=True)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), seq=st.integers(4, 16), include_padding=st.booleans())
def test_scores_lie_in_unit_interval(seed: int, seq: int, include_padding: bool) -> None:
    attn, mask = random_batch(seed, 3, 2, seq)
    scores = gate_scores(attn, token_mask(mask, include_padding), top_k=3)
    defined = scores[~scores.isnan()]
    assert bool(((defined >= -1e-12) & (defined <= 1 + 1e-9)).all())


def test_float32_input_matches_float64() -> None:
    attn, mask = random_batch(7, 4, 3, 40)
    exact = gate_scores(attn, token_mask(mask))
    single = gate_scores(attn.float(), token_mask(mask))
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), exact, atol=1e-4, rtol=0, equal_nan=True)


def one(pattern: Matrix, **options: object) -> dict[str, float]:
    """Scores of one unpadded matrix, by gate name."""
    attn = torch.from_numpy(pattern)[None, None]
    mask = torch.ones(1, pattern.shape[0], dtype=torch.int64)
    scores = gate_scores(attn, token_mask(mask), **options)[0, 0]
    return dict(zip(GATE_NAMES, scores.tolist(), strict=True))


def test_known_patterns() -> None:
    n = 12
    uniform = np.full((n, n), 1.0 / n)
    assert one(uniform)["open"] == pytest.approx(1.0)
    assert one(uniform)["closed"] == pytest.approx(2.0 / n)
    assert one(uniform)["cluster"] == 0.0
    assert one(np.eye(n))["instance"] == pytest.approx(1.0)
    assert one(np.eye(n))["open"] == 0.0
    sinks = np.zeros((n, n))
    sinks[:, 0], sinks[:, n - 1] = 0.3, 0.7
    assert one(sinks)["closed"] == pytest.approx(1.0)
    stripe = np.zeros((n, n))
    stripe[:, 5] = 1.0
    assert one(stripe)["directional"] == pytest.approx(1.0)
    two = np.zeros((n, n))
    two[:, 3], two[:, 7] = 0.6, 0.4
    assert one(two)["directional"] == pytest.approx(0.6)
    assert one(two, top_k=2)["directional"] == pytest.approx(1.0)
    previous = np.roll(np.eye(n), -1, axis=1)
    scores = one(previous)
    assert scores["backward"] == pytest.approx(1.0)
    assert scores["forward"] == 0.0
    assert one(previous.T.copy())["forward"] == pytest.approx(1.0)


def test_window_counts_specials_as_neighbours() -> None:
    """The first content token's preceding neighbour is [CLS]; the last one's following is [SEP]."""
    n = 6
    attn = np.zeros((n, n))
    attn[:, 0] = 1.0
    assert one(attn)["backward"] == pytest.approx(0.5)  # rows 1, 2 of content 1..4
    assert one(attn, window=1)["backward"] == pytest.approx(0.25)


def block_matrix(labels: npt.NDArray[np.int64]) -> Matrix:
    """[CLS] + content tokens with the given block labels + [SEP]; uniform within blocks."""
    full = np.concatenate([[-1], labels, [-1]])
    same = (full[:, None] == full[None, :]).astype(np.float64)
    return same / same.sum(axis=1, keepdims=True)


def test_cluster_high_for_blocks_low_for_other_local_patterns() -> None:
    rng = np.random.default_rng(0)
    contiguous = np.repeat(np.arange(5), 8)
    assert one(block_matrix(contiguous))["cluster"] == pytest.approx(7 / 8)
    assert one(block_matrix(rng.permutation(contiguous)))["cluster"] == pytest.approx(7 / 8)
    assert one(block_matrix(np.repeat(np.arange(2), 20)))["cluster"] == pytest.approx(19 / 20)
    # Self-attention on top of the blocks leaves the rows alike: still a cluster.
    blocks = block_matrix(rng.permutation(contiguous))
    heavy_diagonal = 0.4 * np.eye(42) + 0.6 * blocks
    scores = one(heavy_diagonal)
    assert scores["cluster"] == pytest.approx(0.6 * 7 / 8)
    assert dominant_gate(torch.tensor(list(scores.values()))).item() == GATE_NAMES.index("cluster")
    assert one(0.8 * np.eye(42) + 0.2 * blocks)["cluster"] == pytest.approx(0.2 * 7 / 8)
    n = 42
    rows = np.arange(n)
    band = np.zeros((n, n))
    band[rows[1:], rows[1:] - 1] = 0.5
    band[rows[2:], rows[2:] - 2] = 0.5
    band[0, 0], band[1, 0] = 1.0, 1.0
    symmetric = 0.5 * band + 0.5 * band[::-1, ::-1]
    stripe = np.zeros((n, n))
    stripe[:, 9] = 1.0
    for pattern in (np.eye(n), band, stripe, np.full((n, n), 1.0 / n)):
        assert one(pattern)["cluster"] < 0.05
    # A sliding window of 5 equal weights is halfway to contiguous blocks, below the threshold.
    assert 0.1 < one(symmetric)["cluster"] < DEFAULT_THRESHOLDS["cluster"]


def test_short_inputs_are_undefined() -> None:
    attn, mask = random_batch(3, 4, 2, 3)
    scores = gate_scores(attn, token_mask(mask))
    assert bool(scores.isnan().all())
    assert bool((dominant_gate(scores) == UNDEFINED).all())
    assert dominant_name(UNDEFINED) == "undefined"


def test_empty_batch() -> None:
    scores = gate_scores(torch.zeros(0, 3, 5, 5), token_mask(torch.zeros(0, 5, dtype=torch.int64)))
    assert scores.shape == (0, 3, 7)


def test_input_errors() -> None:
    attn, mask = random_batch(1, 2, 1, 6)
    with pytest.raises(ValueError, match="right-padded"):
        gate_scores(attn, token_mask(mask.flip(1)))
    with pytest.raises(ValueError, match="token mask of"):
        gate_scores(attn, token_mask(mask[:, :5]))
    with pytest.raises(ValueError, match="attn must be"):
        gate_scores(attn[0], token_mask(mask))
    with pytest.raises(ValueError, match="window"):
        gate_scores(attn, token_mask(mask), window=0)
    with pytest.raises(ValueError, match="top_k"):
        gate_scores(attn, token_mask(mask), top_k=0)


def test_dominant_gate_is_largest_excess() -> None:
    t = threshold_vector(DEFAULT_THRESHOLDS)
    scores = torch.zeros(4, 7, dtype=torch.float64)
    scores[1] = t + 0.01
    scores[1, 3] = t[3] + 0.2
    scores[2, 6] = t[6] + 0.05
    scores[3] = torch.nan
    dominant = dominant_gate(scores)
    assert dominant.tolist() == [MIXED, 3, 6, UNDEFINED]
    torch.testing.assert_close(gate_margins(scores[:3]), scores[:3] - t)
    custom = dict(DEFAULT_THRESHOLDS, closed=0.0)
    assert dominant_gate(torch.full((7,), 0.01, dtype=torch.float64), custom).item() == 0
    assert dominant_gate(scores.float()[None], list(t.tolist())).shape == (1, 4)
    with pytest.raises(ValueError, match="lack"):
        dominant_gate(scores, {"closed": 0.5})
    with pytest.raises(ValueError, match="one threshold"):
        dominant_gate(scores, [0.5] * 6)


def test_high_attention_positions() -> None:
    attention_map = np.array([[0.1, 0.5, 0.4], [0.31, 0.3, 0.39], [np.nan, 0.9, 0.0]])
    hits = high_attention_positions(attention_map)
    assert hits.tolist() == [[0, 1], [0, 2], [1, 0], [1, 2], [2, 1]]
    restricted = high_attention_positions(torch.from_numpy(attention_map), n_tokens=2)
    assert restricted.tolist() == [[0, 1], [1, 0]]
    assert restricted.dtype == np.int64
    assert high_attention_positions(attention_map, threshold=0.45).shape == (2, 2)


@pytest.mark.parametrize(
    ("noise", "target"), [((0.0, 0.0), 0.99), ((0.1, 0.3), 0.95)], ids=["clean", "noisy"]
)
def test_calibration_target_on_planted_matrices(noise: tuple[float, float], target: float) -> None:
    """Every planted gate is recovered as dominant in >= 99 % of clean and >= 95 % of noisy
    matrices (n from 8 to 200, half of them padded, spiky to flat noise)."""
    planted, gates = planted_suite(
        60, seed=20250 + int(10 * noise[1]), noise=noise, noise_concentrations=(0.3, 1.0, 3.0)
    )
    assert min(item.n_tokens for item in planted) < 16
    assert max(item.n_tokens for item in planted) > 120
    rates = recovery_rates(score_planted(planted), gates)
    assert set(rates) == set(GATE_NAMES)
    assert min(rates.values()) >= target, rates


def test_planted_gates_are_dominant_at_every_length() -> None:
    for n in (8, 9, 10, 13, 31, 64, 200):
        planted = [
            planted_attention(gate, n, noise=0.2, seed=n * 7 + k, pad_to=n + k)
            for k, gate in enumerate(GATE_NAMES)
        ]
        attn, mask = stack_planted(planted)
        dominant = dominant_gate(gate_scores(attn, token_mask(mask)))[:, 0]
        assert dominant.tolist() == list(range(7)), n


def test_calibration_rule_reproduces_default_thresholds() -> None:
    """The rule of DEFAULT_THRESHOLDS, on a smaller planted sample, lands within 0.05 of them."""
    spread = (0.3, 1.0, 3.0)
    clean, clean_gates = planted_suite(40, seed=11, noise_concentrations=spread)
    noisy, noisy_gates = planted_suite(40, seed=12, noise=(0.1, 0.3), noise_concentrations=spread)
    noisy_scores = score_planted(noisy)
    scores = torch.cat([score_planted(clean), noisy_scores])
    thresholds = calibrate_thresholds(scores, clean_gates + noisy_gates, noisy_scores, noisy_gates)
    for gate in GATE_NAMES:
        assert abs(thresholds[gate] - DEFAULT_THRESHOLDS[gate]) <= 0.05 + 1e-9, gate
