"""Harder test inputs: domain masking follows the alignment map; partial spikes are windows."""

from __future__ import annotations

import numpy as np
import pytest

from bertgeom.genomics.mutations import Mutation, apply_mutations
from bertgeom.genomics.reference import SPIKE_START, reference_spike
from bertgeom.genomics.spike import extract_spike
from bertgeom.model.robustness import mask_domain, partial_spike


def test_rbd_mask_covers_codons_319_to_541_through_a_deletion() -> None:
    # Delta's deletion (codons 157-158) shifts the sequence: the mask must follow the map.
    edited = apply_mutations([Mutation.parse("del22029-22034")])
    spike = extract_spike("delta-like", edited.sequence)
    masked = mask_domain(spike, "RBD")
    first = SPIKE_START + (319 - 1) * 3
    last = SPIKE_START + 541 * 3 - 1
    inside = (spike.reference_positions >= first) & (spike.reference_positions <= last)
    assert inside.sum() == (541 - 319 + 1) * 3
    assert all(masked[i] == "N" for i in np.flatnonzero(inside))
    assert all(masked[i] == spike.sequence[i] for i in np.flatnonzero(~inside))
    with pytest.raises(ValueError, match="unknown domain"):
        mask_domain(spike, "tail")


def test_partial_spike_is_a_window_of_the_asked_length() -> None:
    rng = np.random.default_rng(0)
    spike = reference_spike()
    for fraction in (0.5, 0.7, 0.9, 1.0):
        window = partial_spike(spike, fraction, rng)
        assert len(window) == round(len(spike) * fraction)
        assert window in spike
    with pytest.raises(ValueError):
        partial_spike(spike, 0.0, rng)
