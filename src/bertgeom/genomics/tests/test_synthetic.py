"""The synthetic generator: seeded, class markers present, N runs, all eight classes."""

from __future__ import annotations

import numpy as np
import pytest

from bertgeom.genomics.mutations import CLASSES, Mutation, apply_mutations
from bertgeom.genomics.reference import SPIKE_START, reference_spike
from bertgeom.genomics.spike import extract_spike
from bertgeom.genomics.synthetic import GeneratorSettings, synthesize, synthesize_table


def test_same_seed_same_spikes_other_seed_other_spikes() -> None:
    first, again, other = (
        synthesize_table(5, seed=1),
        synthesize_table(5, seed=1),
        synthesize_table(5, seed=2),
    )
    assert first.equals(again)
    assert not first["sequence"].equals(other["sequence"])
    assert sorted(first["label"].unique()) == sorted(CLASSES)


@pytest.mark.parametrize(
    ("label", "marker"),
    [("Alpha", "A23063T"), ("Delta", "T22917G"), ("Lambda", "T22917A"), ("Mu", "ins21990:TAC")],
)
def test_core_markers_are_carried(label: str, marker: str) -> None:
    # Each core mutation is dropped with probability 0.1, so about 90 % carry it.
    table = synthesize_table(300, seed=3, classes=(label,))
    share = np.mean([marker in mutations.split(",") for mutations in table["mutations"]])
    assert 0.85 < share < 0.95


def test_other_classes_markers_appear_as_background() -> None:
    table = synthesize_table(200, seed=4, classes=("pre-VOC",))
    carriers = [m for m in table["mutations"] if "G23012A" in m.split(",")]  # E484K
    assert 0 < len(carriers) < 100


def test_n_runs_are_drawn_and_realigned() -> None:
    rng = np.random.default_rng(0)
    settings = GeneratorSettings(n_run_probability=1.0, incomplete_end_probability=0.0)
    edited, _ = synthesize("Gamma", rng, settings)
    assert "N" * 30 in edited.sequence
    assert len(edited.sequence) == len(edited.reference_positions)
    spike = extract_spike("synthetic", edited.sequence)
    assert spike.usable


def test_apply_mutations_substitution_deletion_insertion() -> None:
    reference = reference_spike()
    edited = apply_mutations(
        [
            Mutation.parse("A23063T"),
            Mutation.parse("del21765-21770"),
            Mutation.parse("ins21990:TAC"),
        ]
    )
    assert len(edited.sequence) == len(reference) - 6 + 3
    offset = 23063 - SPIKE_START
    assert reference[offset] == "A"
    assert edited.sequence[offset - 6 + 3] == "T"
    inserted = np.flatnonzero(edited.is_insertion)
    assert list(edited.reference_positions[inserted]) == [21990] * 3
    assert 21765 not in edited.reference_positions


def test_overlapping_mutations_are_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        apply_mutations([Mutation.parse("del21765-21770"), Mutation.parse("C21767T")])


def test_outliers_are_recombinants_or_novel_lineages() -> None:
    from bertgeom.genomics.synthetic import OUTLIER, synthesize_outlier

    rng = np.random.default_rng(5)
    kinds = [synthesize_outlier(rng)[2] for _ in range(40)]
    assert any(kind.startswith("recombinant") for kind in kinds)
    assert "novel" in kinds
    assert all("pre-VOC" not in kind for kind in kinds)
    table = synthesize_table(2, seed=1, outliers=5)
    assert (table["label"] == OUTLIER).sum() == 5
