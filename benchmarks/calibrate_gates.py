"""Recompute the gate thresholds on planted matrices and measure how often each gate is recovered.

    PYTHONPATH=src python benchmarks/calibrate_gates.py [--per-gate 400] [--seed 2025]

Planted sets (``bertgeom.measures.planted_attention.planted_suite``): per gate ``--per-gate``
matrices at each noise level, clean (0), noisy (U(0.1, 0.3)) and noisier (U(0.3, 0.5)); n
log-uniform in 8..200, half of them right-padded by 1..n positions, noise concentrations 0.3, 1
and 3 (spiky, flat and near-uniform random rows).

Rule: the threshold of gate g is the midpoint between the 99th percentile of score g on the
matrices planted with the other gates (clean and noisy) and the 1st percentile of score g on the
noisy matrices planted with g, rounded to 0.05. Recovery rates (share of the matrices of each
planted gate whose dominant gate is that gate) are then measured on a fresh validation set
(seed + 1), by noise level, length and padding, for a sweep of noise levels, for two-gate
mixtures and for pure random rows. Takes about a minute on one CPU core.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch

from bertgeom.measures.gates import DEFAULT_THRESHOLDS, DOMINANT_NAMES, GATE_NAMES, dominant_gate
from bertgeom.measures.planted_attention import (
    PlantedAttention,
    add_noise,
    calibrate_thresholds,
    mixture,
    pad_attention,
    planted_attention,
    planted_suite,
    score_planted,
)

NOISE_CONCENTRATIONS = (0.3, 1.0, 3.0)
LEVELS = {"clean": (0.0, 0.0), "noisy": (0.1, 0.3), "noisier": (0.3, 0.5)}
LENGTH_BINS = ((8, 16), (16, 32), (32, 64), (64, 128), (128, 201))


@dataclass
class ScoredSet:
    """Scores ``(matrices, 7)`` of planted matrices with their gate, length and padding."""

    scores: torch.Tensor
    gates: np.ndarray
    n_tokens: np.ndarray
    padded: np.ndarray


def scored_set(per_gate: int, seed: int, noise: tuple[float, float]) -> ScoredSet:
    planted, gates = planted_suite(
        per_gate, seed=seed, noise=noise, noise_concentrations=NOISE_CONCENTRATIONS
    )
    return ScoredSet(
        score_planted(planted),
        np.asarray(gates),
        np.array([item.n_tokens for item in planted]),
        np.array([item.attn.shape[0] > item.n_tokens for item in planted]),
    )


def scored_sets(per_gate: int, seed: int) -> dict[str, ScoredSet]:
    return {
        level: scored_set(per_gate, seed * 10 + offset, noise)
        for offset, (level, noise) in enumerate(LEVELS.items())
    }


def calibrate(sets: dict[str, ScoredSet]) -> np.ndarray:
    """Thresholds by ``calibrate_thresholds``, printing the percentiles it uses."""
    clean, noisy = sets["clean"], sets["noisy"]
    all_scores = torch.cat([clean.scores, noisy.scores])
    all_gates = np.concatenate([clean.gates, noisy.gates])
    chosen = calibrate_thresholds(all_scores, list(all_gates), noisy.scores, list(noisy.gates))
    print("gate         others p99 (worst)            own noisy p1   threshold")
    values = all_scores.numpy()
    for k, gate in enumerate(GATE_NAMES):
        negative = np.quantile(values[all_gates != gate, k], 0.99)
        worst = max(
            (h for h in GATE_NAMES if h != gate),
            key=lambda h: float(np.quantile(values[all_gates == h, k], 0.99)),
        )
        positive = np.quantile(noisy.scores.numpy()[noisy.gates == gate, k], 0.01)
        print(
            f"{gate:12s} {negative:.3f} ({worst:11s})          {positive:.3f}        "
            f"{chosen[gate]:.2f}"
        )
    return np.array([chosen[gate] for gate in GATE_NAMES])


def rates(scored: ScoredSet, t: np.ndarray, select: np.ndarray | None = None) -> np.ndarray:
    """Recovery rate of each gate ``(7,)`` over the selected matrices (NaN where none)."""
    dominant = dominant_gate(scored.scores, torch.from_numpy(t)).numpy()
    keep = np.ones(len(dominant), bool) if select is None else select
    return np.array(
        [
            np.mean(dominant[keep & (scored.gates == g)] == i)
            if np.any(keep & (scored.gates == g))
            else np.nan
            for i, g in enumerate(GATE_NAMES)
        ]
    )


def row(label: str, values: np.ndarray, count: int | None = None) -> str:
    cells = " ".join(f"{100 * v:7.2f}" for v in values)
    return f"{label:22s} {cells}" + (f"   ({count} per gate)" if count else "")


def report(sets: dict[str, ScoredSet], t: np.ndarray) -> None:
    print(f"{'':22s} " + " ".join(f"{g[:7]:>7s}" for g in GATE_NAMES))
    for level, scored in sets.items():
        per_gate = int(np.sum(scored.gates == GATE_NAMES[0]))
        print(row(level, rates(scored, t), per_gate))
        for low, high in LENGTH_BINS:
            select = (scored.n_tokens >= low) & (scored.n_tokens < high)
            print(row(f"  n in [{low}, {high})", rates(scored, t, select)))
        for name, select in (("  padded", scored.padded), ("  not padded", ~scored.padded)):
            print(row(name, rates(scored, t, select)))


def long_inputs(t: np.ndarray, seed: int, count: int = 40) -> None:
    print(f"long inputs, n in 200..512 ({count} matrices per gate and level)")
    print(f"{'':22s} " + " ".join(f"{g[:7]:>7s}" for g in GATE_NAMES))
    for offset, (level, noise) in enumerate(LEVELS.items()):
        planted, gates = planted_suite(
            count,
            seed=seed * 10 + offset,
            noise=noise,
            n_tokens=(200, 512),
            noise_concentrations=NOISE_CONCENTRATIONS,
        )
        scored = ScoredSet(
            score_planted(planted, chunk=8),
            np.asarray(gates),
            np.array([item.n_tokens for item in planted]),
            np.array([item.attn.shape[0] > item.n_tokens for item in planted]),
        )
        print(row(f"  {level}", rates(scored, t)))


def noise_sweep(t: np.ndarray, seed: int, count: int = 100) -> None:
    print(f"recovery by noise level ({count} matrices per gate and level, n in 8..200)")
    print(f"{'':22s} " + " ".join(f"{g[:7]:>7s}" for g in GATE_NAMES))
    for noise in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        scored = scored_set(count, seed, (noise, noise))
        print(row(f"  noise {noise:.1f}", rates(scored, t)))


def pure_noise(t: np.ndarray, seed: int, count: int = 200) -> None:
    """Dominant gate of matrices of pure random rows (noise 1)."""
    rng = np.random.default_rng(seed)
    print("pure random rows (noise 1): share of each dominant gate")
    for concentration in NOISE_CONCENTRATIONS:
        planted = []
        for _ in range(count):
            n = int(rng.integers(8, 201))
            attn, mask = pad_attention(add_noise(np.eye(n), 1.0, rng, concentration))
            planted.append(PlantedAttention(attn, mask, "noise", n, 1.0))
        dominant = dominant_gate(score_planted(planted), torch.from_numpy(t)).numpy()
        shares = np.bincount(dominant, minlength=len(DOMINANT_NAMES)) / count
        cells = ", ".join(
            f"{name} {100 * share:.0f}%"
            for name, share in zip(DOMINANT_NAMES, shares, strict=True)
            if share
        )
        print(f"  concentration {concentration}: {cells}")


def report_mixtures(t: np.ndarray, seed: int, count: int = 50) -> None:
    """Dominant gate of 50/50 mixtures of two gates."""
    rng = np.random.default_rng(seed)
    print(
        f"50/50 mixtures of two gates (noise U(0, 0.2), {count} each): share labelled "
        "first / second / mixed / other"
    )
    for a, first in enumerate(GATE_NAMES):
        for second in GATE_NAMES[a + 1 :]:
            planted = [
                mixture(
                    (first, second),
                    (0.5, 0.5),
                    int(rng.integers(8, 201)),
                    noise=float(rng.uniform(0, 0.2)),
                    rng=rng,
                )
                for _ in range(count)
            ]
            dominant = dominant_gate(score_planted(planted), torch.from_numpy(t)).numpy()
            b = GATE_NAMES.index(second)
            shares = [
                np.mean(dominant == a),
                np.mean(dominant == b),
                np.mean(dominant == len(GATE_NAMES)),
            ]
            other = 1 - sum(shares)
            print(
                f"  {first:11s} + {second:11s} "
                + " / ".join(f"{100 * v:3.0f}%" for v in [*shares, other])
            )


def with_padding_included(t: np.ndarray, seed: int, count: int = 60) -> None:
    """Recovery when padding counts as content (the authors' code), on matrices padded to
    1.25..3 times their length."""
    rng = np.random.default_rng(seed)
    print(f"include_padding=True on padded matrices (noise U(0.1, 0.3), {count} per gate)")
    print(f"{'':22s} " + " ".join(f"{g[:7]:>7s}" for g in GATE_NAMES))
    planted, gates = [], []
    for gate in GATE_NAMES:
        for _ in range(count):
            n = int(rng.integers(8, 201))
            pad_to = int(n * rng.uniform(1.25, 3.0))
            noise = float(rng.uniform(0.1, 0.3))
            planted.append(planted_attention(gate, n, noise=noise, rng=rng, pad_to=pad_to))
            gates.append(gate)
    for include_padding in (False, True):
        scored = ScoredSet(
            score_planted(planted, include_padding=include_padding),
            np.asarray(gates),
            np.array([item.n_tokens for item in planted]),
            np.ones(len(planted), bool),
        )
        print(row(f"  include_padding={include_padding}", rates(scored, t)))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--per-gate", type=int, default=400)
    parser.add_argument("--seed", type=int, default=2025)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    thresholds = calibrate(scored_sets(args.per_gate, args.seed))
    print("calibrated:", dict(zip(GATE_NAMES, thresholds.round(2).tolist(), strict=True)))
    defaults = np.array([DEFAULT_THRESHOLDS[g] for g in GATE_NAMES])
    print("DEFAULT_THRESHOLDS:", dict(DEFAULT_THRESHOLDS))
    print("\nrecovery (%) on the validation set with DEFAULT_THRESHOLDS")
    report(scored_sets(args.per_gate, args.seed + 1), defaults)
    print()
    long_inputs(defaults, args.seed + 6)
    print()
    noise_sweep(defaults, args.seed + 2)
    print()
    pure_noise(defaults, args.seed + 3)
    print()
    report_mixtures(defaults, args.seed + 4)
    print()
    with_padding_included(defaults, args.seed + 5)
    print(f"\ndone in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
