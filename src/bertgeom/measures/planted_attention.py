"""Synthetic attention matrices with planted gate patterns, for calibrating and testing the gates.

A planted matrix is laid out like a BERT input: ``n`` real tokens, [CLS] at 0, [SEP] at n-1,
content ``1..n-2``, right padding up to ``pad_to``. Every valid row is a probability
distribution over the n real keys; padding columns are 0 and padding rows are uniform over the
real keys (the rows a padded query gets in a BERT). Noise mixes every row with a random row:
``A <- (1 - noise) A + noise R``, ``R_i ~ Dirichlet(concentration * 1_n)``. ``docs/gates.md``
describes each pattern.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from bertgeom.measures.gates import (
    DEFAULT_THRESHOLDS,
    DEFAULT_WINDOW,
    GATE_NAMES,
    dominant_gate,
    gate_scores,
)
from bertgeom.measures.tokens import token_mask

FloatArray = npt.NDArray[np.float64]

MIN_PLANTED_TOKENS = 8
"""Fewest real tokens of a planted matrix (a cluster needs two blocks of three content tokens)."""

CLUSTER_LAYOUTS = ("contiguous", "permuted")


@dataclass(frozen=True)
class PlantedAttention:
    """One planted matrix: ``attn (query, key)`` float64, ``attention_mask (seq,)`` int64, the
    planted ``gate`` (or ``"mixture"``), the number of real tokens and the noise level."""

    attn: Tensor
    attention_mask: Tensor
    gate: str
    n_tokens: int
    noise: float


def _generator(seed: int | None, rng: np.random.Generator | None) -> np.random.Generator:
    if rng is not None and seed is not None:
        raise ValueError("give either seed or rng, not both")
    return rng if rng is not None else np.random.default_rng(seed)


def _band(n: int, weights: FloatArray, direction: int) -> FloatArray:
    """Row i puts ``weights[d-1]`` on ``i + direction * d`` (d = 1..w) inside 0..n-1,
    renormalised; a row with no such neighbour ([CLS] backward, [SEP] forward) attends itself."""
    pattern = np.zeros((n, n))
    rows = np.arange(n)
    for d, weight in enumerate(weights, start=1):
        keys = rows + direction * d
        inside = (keys >= 0) & (keys < n)
        pattern[rows[inside], keys[inside]] = weight
    empty = pattern.sum(axis=1) == 0
    pattern[empty, rows[empty]] = 1.0
    return pattern / pattern.sum(axis=1, keepdims=True)


def cluster_blocks(
    n_content: int, rng: np.random.Generator, layout: str | None = None, min_block: int = 3
) -> npt.NDArray[np.int64]:
    """Block label ``(n_content,)`` of each content token: 2..n_content // min_block blocks of
    at least ``min_block`` tokens, random sizes; contiguous spans or randomly permuted
    (``layout`` None: either, with probability 1/2)."""
    if layout is None:
        layout = CLUSTER_LAYOUTS[int(rng.integers(2))]
    if layout not in CLUSTER_LAYOUTS:
        raise ValueError(f"cluster layout must be one of {CLUSTER_LAYOUTS}, got {layout!r}")
    if n_content < 2 * min_block:
        raise ValueError(
            f"a cluster of blocks of {min_block} needs {2 * min_block} content tokens, "
            f"got {n_content}"
        )
    n_blocks = int(rng.integers(2, n_content // min_block + 1))
    spare = n_content - n_blocks * min_block
    sizes = min_block + rng.multinomial(spare, rng.dirichlet(np.ones(n_blocks)))
    labels = np.repeat(np.arange(n_blocks), sizes)
    return rng.permutation(labels) if layout == "permuted" else labels


def gate_pattern(
    gate: str,
    n_tokens: int,
    rng: np.random.Generator,
    *,
    window: int = DEFAULT_WINDOW,
    cluster_layout: str | None = None,
) -> FloatArray:
    """A clean ``(n, n)`` row-stochastic matrix with the pattern of ``gate`` planted.

    closed: every row puts p on [CLS] and 1 - p on [SEP], p ~ U(0, 1). directional: every row on
    one content column. open: uniform rows. backward / forward: row i on i -/+ 1..w with weights
    ~ Dirichlet(1_w). instance: identity. cluster: content tokens in blocks (``cluster_blocks``),
    each row uniform over its block; [CLS] and [SEP] form one more block.
    """
    if n_tokens < MIN_PLANTED_TOKENS:
        raise ValueError(f"planted matrices need at least {MIN_PLANTED_TOKENS} tokens")
    n, sep = n_tokens, n_tokens - 1
    pattern = np.zeros((n, n))
    if gate == "closed":
        share = rng.uniform()
        pattern[:, 0], pattern[:, sep] = share, 1.0 - share
    elif gate == "directional":
        pattern[:, int(rng.integers(1, sep))] = 1.0
    elif gate == "open":
        pattern[:] = 1.0 / n
    elif gate in ("backward", "forward"):
        weights = rng.dirichlet(np.ones(window))
        pattern = _band(n, weights, -1 if gate == "backward" else 1)
    elif gate == "instance":
        pattern = np.eye(n)
    elif gate == "cluster":
        labels = np.concatenate([[-1], cluster_blocks(n - 2, rng, cluster_layout), [-1]])
        same = labels[:, None] == labels[None, :]
        pattern = same / same.sum(axis=1, keepdims=True)
    else:
        raise ValueError(f"unknown gate {gate!r}; gates are {GATE_NAMES}")
    return pattern


def add_noise(
    pattern: FloatArray, noise: float, rng: np.random.Generator, concentration: float = 1.0
) -> FloatArray:
    """``(1 - noise) pattern + noise R`` with rows ``R_i ~ Dirichlet(concentration * 1_n)``.

    ``pattern (n, n)`` row-stochastic -> ``(n, n)`` row-stochastic.
    """
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    if noise == 0.0:
        return pattern
    n = pattern.shape[1]
    random_rows = rng.dirichlet(np.full(n, concentration), size=pattern.shape[0])
    return (1.0 - noise) * pattern + noise * random_rows


def pad_attention(pattern: FloatArray, pad_to: int | None = None) -> tuple[Tensor, Tensor]:
    """Right-pad an ``(n, n)`` matrix to ``(pad_to, pad_to)``: padding columns 0, padding rows
    uniform over the n real keys. Returns ``attn (seq, seq)`` float64 and ``mask (seq,)``."""
    n = pattern.shape[0]
    seq = n if pad_to is None else pad_to
    if seq < n:
        raise ValueError(f"pad_to={pad_to} is shorter than the {n} tokens")
    attn = np.zeros((seq, seq))
    attn[:n, :n] = pattern
    attn[n:, :n] = 1.0 / n
    mask = np.zeros(seq, dtype=np.int64)
    mask[:n] = 1
    return torch.from_numpy(attn), torch.from_numpy(mask)


def planted_attention(
    gate: str,
    n_tokens: int,
    *,
    noise: float = 0.0,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    pad_to: int | None = None,
    window: int = DEFAULT_WINDOW,
    noise_concentration: float = 1.0,
    cluster_layout: str | None = None,
) -> PlantedAttention:
    """A planted matrix of one gate: ``gate_pattern`` + ``add_noise`` + ``pad_attention``.

    Seeded by ``seed`` or drawn from ``rng`` (a numpy Generator). Shapes: ``attn (seq, seq)``,
    ``attention_mask (seq,)`` with seq = ``pad_to`` or ``n_tokens``.
    """
    generator = _generator(seed, rng)
    pattern = gate_pattern(gate, n_tokens, generator, window=window, cluster_layout=cluster_layout)
    noisy = add_noise(pattern, noise, generator, noise_concentration)
    attn, mask = pad_attention(noisy, pad_to)
    return PlantedAttention(attn, mask, gate, n_tokens, noise)


def mixture(
    gates: Sequence[str],
    weights: Sequence[float],
    n_tokens: int,
    *,
    noise: float = 0.0,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    pad_to: int | None = None,
    window: int = DEFAULT_WINDOW,
    noise_concentration: float = 1.0,
) -> PlantedAttention:
    """A convex mixture ``sum_g w_g P_g`` of planted patterns (weights renormalised), then noise
    and padding as in ``planted_attention``. ``gate`` of the result is ``"mixture"``."""
    if len(gates) != len(weights) or not gates:
        raise ValueError("give one weight per gate, and at least one gate")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"mixture weights must be non-negative with a positive sum, got {w}")
    generator = _generator(seed, rng)
    pattern = sum(
        (weight * gate_pattern(gate, n_tokens, generator, window=window))
        for gate, weight in zip(gates, w / w.sum(), strict=True)
    )
    noisy = add_noise(np.asarray(pattern), noise, generator, noise_concentration)
    attn, mask = pad_attention(noisy, pad_to)
    return PlantedAttention(attn, mask, "mixture", n_tokens, noise)


def stack_planted(planted: Sequence[PlantedAttention]) -> tuple[Tensor, Tensor]:
    """Stack planted matrices into a batch of one head each, padded to the longest:
    ``attn (batch, 1, seq, seq)`` float64 and ``attention_mask (batch, seq)`` int64."""
    seq = max(item.attn.shape[0] for item in planted)
    attn = torch.zeros(len(planted), 1, seq, seq, dtype=torch.float64)
    mask = torch.zeros(len(planted), seq, dtype=torch.int64)
    for b, item in enumerate(planted):
        size, n = item.attn.shape[0], item.n_tokens
        attn[b, 0, :size, :size] = item.attn
        attn[b, 0, size:, :n] = 1.0 / n
        mask[b, :size] = item.attention_mask
    return attn, mask


def planted_suite(
    n_per_gate: int,
    *,
    seed: int,
    noise: tuple[float, float] = (0.0, 0.0),
    n_tokens: tuple[int, int] = (8, 200),
    padding: float = 0.5,
    noise_concentrations: Sequence[float] = (1.0,),
) -> tuple[list[PlantedAttention], list[str]]:
    """``n_per_gate`` planted matrices of each gate, with n ~ log-uniform in ``n_tokens``,
    noise ~ U(``noise``), concentration drawn from ``noise_concentrations`` and, with probability
    ``padding``, right padding of up to n extra positions. Returns the matrices and their gates."""
    rng = np.random.default_rng(seed)
    planted: list[PlantedAttention] = []
    low, high = np.log(n_tokens[0]), np.log(n_tokens[1] + 1)
    for gate in GATE_NAMES:
        for _ in range(n_per_gate):
            n = int(np.exp(rng.uniform(low, high)))
            n = min(max(n, n_tokens[0]), n_tokens[1])
            pad_to = n + int(rng.integers(1, n + 1)) if rng.uniform() < padding else None
            planted.append(
                planted_attention(
                    gate,
                    n,
                    noise=float(rng.uniform(*noise)),
                    rng=rng,
                    pad_to=pad_to,
                    noise_concentration=float(rng.choice(noise_concentrations)),
                )
            )
    return planted, [item.gate for item in planted]


def score_planted(
    planted: Sequence[PlantedAttention],
    *,
    chunk: int = 32,
    window: int = DEFAULT_WINDOW,
    include_padding: bool = False,
) -> Tensor:
    """Gate scores of planted matrices, ``(len(planted), 7)`` float64, computed in batches of
    ``chunk`` matrices of similar length. With ``include_padding`` each matrix is scored alone,
    so that only its own padding counts."""
    if include_padding:
        chunk = 1
    order = np.argsort([item.attn.shape[0] for item in planted], kind="stable")
    scores = torch.empty(len(planted), len(GATE_NAMES), dtype=torch.float64)
    for start in range(0, len(order), chunk):
        index = order[start : start + chunk]
        attn, mask = stack_planted([planted[i] for i in index])
        batch_scores = gate_scores(attn, token_mask(mask, include_padding), window=window)
        scores[torch.as_tensor(index)] = batch_scores[:, 0]
    return scores


def recovery_rates(
    scores: Tensor,
    gates: Sequence[str],
    thresholds: Mapping[str, float] | Sequence[float] | Tensor = DEFAULT_THRESHOLDS,
) -> dict[str, float]:
    """Share of the matrices of each planted gate whose dominant gate is the planted one.

    ``scores (matrices, 7)``, ``gates`` the planted gate of each matrix -> ``{gate: rate}``.
    """
    dominant = dominant_gate(scores, thresholds).numpy()
    planted = np.asarray(gates)
    return {
        gate: float(np.mean(dominant[planted == gate] == index))
        for index, gate in enumerate(GATE_NAMES)
        if np.any(planted == gate)
    }


def calibrate_thresholds(
    scores: Tensor, gates: Sequence[str], noisy_scores: Tensor, noisy_gates: Sequence[str]
) -> dict[str, float]:
    """The calibration rule of ``DEFAULT_THRESHOLDS``: for gate g, the midpoint between the 99th
    percentile of score g on the matrices planted with other gates (``scores``, clean and noisy,
    ``(matrices, 7)``) and the 1st percentile of score g on the noisy matrices planted with g
    (``noisy_scores``), rounded to 0.05."""
    planted, noisy_planted = np.asarray(gates), np.asarray(noisy_gates)
    thresholds = {}
    for k, gate in enumerate(GATE_NAMES):
        others = np.quantile(scores.numpy()[planted != gate, k], 0.99)
        own = np.quantile(noisy_scores.numpy()[noisy_planted == gate, k], 0.01)
        thresholds[gate] = round((others + own) / 2 * 20) / 20
    return thresholds
