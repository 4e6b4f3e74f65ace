"""Harder but fair test inputs: a spike domain masked with N, and partial spikes.

Both act on sequences the model never saw (held-out test spikes) and go through the same
alignment as any input, so a partial spike is placed on the reference exactly as a user's would be.
"""

from __future__ import annotations

import numpy as np

from bertgeom.genomics.reference import SPIKE_DOMAINS, SPIKE_START
from bertgeom.genomics.spike import SpikeRecord


def mask_domain(spike: SpikeRecord, domain: str) -> str:
    """The spike with every base that maps into ``domain`` (codon range) replaced by ``N``."""
    ranges = {name: (first, last) for name, first, last in SPIKE_DOMAINS}
    if domain not in ranges:
        raise ValueError(f"unknown domain {domain!r}; choose one of {', '.join(ranges)}")
    first, last = ranges[domain]
    codons = (spike.reference_positions - SPIKE_START) // 3 + 1
    inside = (codons >= first) & (codons <= last)
    bases = np.array(list(spike.sequence), dtype="<U1")
    bases[inside] = "N"
    return "".join(bases)


def partial_spike(sequence: str, fraction: float, rng: np.random.Generator) -> str:
    """A contiguous window holding ``fraction`` of ``sequence``, at a random offset."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    length = max(round(len(sequence) * fraction), 1)
    start = int(rng.integers(0, len(sequence) - length + 1))
    return sequence[start : start + length]
