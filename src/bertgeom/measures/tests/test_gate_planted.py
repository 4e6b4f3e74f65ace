"""The planted-attention generator: valid BERT-like matrices, seeded, documented patterns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bertgeom.measures.gates import GATE_NAMES, gate_scores
from bertgeom.measures.planted_attention import (
    add_noise,
    cluster_blocks,
    gate_pattern,
    mixture,
    pad_attention,
    planted_attention,
    planted_suite,
    stack_planted,
)
from bertgeom.measures.tokens import token_mask


@settings(max_examples=40, deadline=None)
@given(
    gate=st.sampled_from(GATE_NAMES),
    n=st.integers(8, 60),
    extra=st.integers(0, 10),
    noise=st.floats(0.0, 1.0),
    concentration=st.sampled_from([0.1, 1.0, 5.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_planted_matrices_are_valid_attention(
    gate: str, n: int, extra: int, noise: float, concentration: float, seed: int
) -> None:
    planted = planted_attention(
        gate, n, noise=noise, seed=seed, pad_to=n + extra, noise_concentration=concentration
    )
    attn, mask = planted.attn, planted.attention_mask
    assert attn.shape == (n + extra, n + extra)
    assert attn.dtype == torch.float64
    assert mask.tolist() == [1] * n + [0] * extra
    assert bool((attn >= 0).all())
    torch.testing.assert_close(attn.sum(dim=1), torch.ones(n + extra, dtype=torch.float64))
    assert bool((attn[:, n:] == 0).all())
    torch.testing.assert_close(attn[n:, :n], torch.full((extra, n), 1.0 / n, dtype=torch.float64))
    again = planted_attention(
        gate, n, noise=noise, seed=seed, pad_to=n + extra, noise_concentration=concentration
    )
    assert torch.equal(again.attn, attn)
    assert planted.gate == gate and planted.n_tokens == n and planted.noise == noise


def test_patterns_put_mass_where_documented() -> None:
    rng = np.random.default_rng(0)
    n = 20
    content = slice(1, n - 1)
    closed = gate_pattern("closed", n, rng)
    np.testing.assert_allclose(closed[content, 0] + closed[content, n - 1], 1.0)
    directional = gate_pattern("directional", n, rng)
    column = int(np.argmax(directional[5]))
    assert 1 <= column <= n - 2
    np.testing.assert_allclose(directional[:, column], 1.0)
    np.testing.assert_allclose(gate_pattern("open", n, rng), 1.0 / n)
    np.testing.assert_allclose(gate_pattern("instance", n, rng), np.eye(n))
    backward = gate_pattern("backward", n, rng)
    assert backward[0, 0] == 1.0 and backward[1, 0] == 1.0
    assert np.allclose(np.triu(backward[1:], 1), 0)
    forward = gate_pattern("forward", n, rng)
    assert forward[n - 1, n - 1] == 1.0
    np.testing.assert_allclose(forward[content].sum(axis=1), 1.0)
    for k in range(3, n - 1):
        assert forward[k, k + 3 :].sum() == 0.0
    cluster = gate_pattern("cluster", n, rng)
    assert cluster[0, n - 1] == cluster[n - 1, 0] == 0.5
    np.testing.assert_allclose(cluster, cluster.T)
    with pytest.raises(ValueError, match="unknown gate"):
        gate_pattern("sideways", n, rng)
    with pytest.raises(ValueError, match="at least"):
        gate_pattern("open", 7, rng)


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(6, 200),
    layout=st.sampled_from(["contiguous", "permuted"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_cluster_blocks(m: int, layout: str, seed: int) -> None:
    labels = cluster_blocks(m, np.random.default_rng(seed), layout)
    sizes = np.bincount(labels)
    assert labels.shape == (m,)
    assert len(sizes) >= 2
    assert sizes.min() >= 3
    if layout == "contiguous":
        assert bool(np.all(np.diff(labels) >= 0))


def test_cluster_blocks_errors() -> None:
    with pytest.raises(ValueError, match="6 content tokens"):
        cluster_blocks(5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="layout"):
        cluster_blocks(10, np.random.default_rng(0), "diagonal")


def test_noise_and_padding() -> None:
    rng = np.random.default_rng(1)
    pattern = np.eye(8)
    noisy = add_noise(pattern, 0.25, rng)
    np.testing.assert_allclose(noisy.sum(axis=1), 1.0)
    assert np.all(np.diag(noisy) >= 0.75)
    assert add_noise(pattern, 0.0, rng) is pattern
    with pytest.raises(ValueError, match="noise"):
        add_noise(pattern, 1.5, rng)
    with pytest.raises(ValueError, match="shorter"):
        pad_attention(pattern, 4)
    with pytest.raises(ValueError, match="either seed or rng"):
        planted_attention("open", 8, seed=1, rng=rng)


def test_mixture() -> None:
    mixed = mixture(("instance", "open"), (3.0, 1.0), 10, seed=4)
    expected = 0.75 * np.eye(10) + 0.25 / 10
    np.testing.assert_allclose(mixed.attn.numpy(), expected)
    assert mixed.gate == "mixture"
    with pytest.raises(ValueError, match="one weight per gate"):
        mixture(("instance",), (0.5, 0.5), 10)
    with pytest.raises(ValueError, match="non-negative"):
        mixture(("instance", "open"), (-1.0, 1.0), 10)


def test_suite_and_stack() -> None:
    planted, gates = planted_suite(3, seed=5, noise=(0.1, 0.2), n_tokens=(8, 30))
    assert gates == [gate for gate in GATE_NAMES for _ in range(3)]
    assert all(8 <= item.n_tokens <= 30 and 0.1 <= item.noise <= 0.2 for item in planted)
    attn, mask = stack_planted(planted)
    seq = max(item.attn.shape[0] for item in planted)
    assert attn.shape == (len(planted), 1, seq, seq)
    assert mask.sum(dim=1).tolist() == [item.n_tokens for item in planted]
    valid = mask.bool()
    torch.testing.assert_close(attn.sum(dim=-1)[:, 0], torch.ones(len(planted), seq).double())
    assert bool((attn[~valid[:, None, None, :].expand_as(attn)] == 0).all())
    alone = torch.cat(
        [
            gate_scores(item.attn[None, None], token_mask(item.attention_mask[None]))
            for item in planted
        ]
    )
    torch.testing.assert_close(gate_scores(attn, token_mask(mask)), alone)
