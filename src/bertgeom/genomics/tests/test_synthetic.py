"""The synthetic generator: seeded, class markers present, N runs, all eight classes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bertgeom.genomics.mutations import CLASSES, Mutation, apply_mutations, mutation_profiles
from bertgeom.genomics.reference import SPIKE_START, reference_spike
from bertgeom.genomics.spike import extract_spike
from bertgeom.genomics.synthetic import GeneratorSettings, synthesize, synthesize_table

NO_NOISE = GeneratorSettings(
    partial_constellation_probability=0.0,
    convergent_marker_rate=0.0,
    foreign_marker_rate=0.0,
    background_substitutions=0.0,
    background_deletion_probability=0.0,
    background_insertion_probability=0.0,
    minor_change_rate=0.0,
)
"""A class's own profile changes (and N runs, incomplete ends) only: the tests of one kind of
noise turn that one on."""


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


def test_partial_constellations_are_one_to_three_changes_of_one_other_class() -> None:
    """With only partial constellations as noise, every pre-VOC spike carries, beyond its own
    profile's mutations, one to three core mutations of a single other class."""
    settings = replace(NO_NOISE, partial_constellation_probability=1.0)
    profiles = mutation_profiles()
    own = set(profiles.loc[profiles["class"] == "pre-VOC", "mutation"])
    core = profiles[profiles["frequency"] >= settings.core_frequency]
    cores = {label: set(rows["mutation"]) for label, rows in core.groupby("class")}
    table = synthesize_table(60, seed=6, classes=("pre-VOC",), settings=settings)
    donors, carriers = set(), 0
    for mutations in table["mutations"]:
        extra = set(mutations.split(",")) - own - {""}
        assert len(extra) <= 3, extra
        carriers += bool(extra)  # one that falls on a mutation already drawn is skipped
        donor = [label for label, names in cores.items() if extra <= names and label != "pre-VOC"]
        assert donor, extra
        if len(donor) == 1:
            donors.update(donor)
    assert carriers >= 55
    assert len(donors) >= 4  # the donor class varies


def test_background_insertions_are_in_frame() -> None:
    settings = GeneratorSettings(background_insertion_probability=1.0)
    table = synthesize_table(30, seed=7, classes=("Alpha",), settings=settings)
    insertions = [m for row in table["mutations"] for m in row.split(",") if m.startswith("ins")]
    assert len(insertions) >= 25  # a few fall on another mutation and are skipped
    assert all(len(m.split(":")[1]) % 3 == 0 for m in insertions)


def test_real_backgrounds_are_carried_beneath_the_class_changes() -> None:
    """Every spike drawn on a background carries the background's changes but those that
    overlap one of its class's; about half the spikes are drawn on one."""
    n501y_elsewhere = Mutation.parse("A23063C")  # overlaps Alpha's N501Y (A23063T)
    backgrounds = (
        (Mutation.parse("C21575T"), Mutation.parse("A23403G")),
        (Mutation.parse("C21575T"), n501y_elsewhere),
    )
    settings = GeneratorSettings(convergent_marker_rate=0.0, foreign_marker_rate=0.0)
    table = synthesize_table(
        200, seed=8, classes=("Alpha",), settings=settings, backgrounds=backgrounds
    )
    carried = [set(row.split(",")) for row in table["mutations"]]
    on_background = [names for names in carried if "C21575T" in names]
    assert 0.4 < len(on_background) / len(carried) < 0.6
    for names in on_background:
        assert "A23403G" in names or "A23063T" in names or "A23063C" in names
        assert not {"A23063T", "A23063C"} <= names
    # With no backgrounds the draws are those of the generator without them.
    before = synthesize_table(20, seed=9, classes=("Gamma",))
    assert before.equals(synthesize_table(20, seed=9, classes=("Gamma",), backgrounds=()))
    always = GeneratorSettings(real_background_probability=1.0)
    drawn = synthesize_table(
        20, seed=9, classes=("Gamma",), settings=always, backgrounds=backgrounds[:1]
    )
    assert all("C21575T" in row.split(",") for row in drawn["mutations"])


def test_minor_changes_are_other_classes_accessory_changes() -> None:
    """With only minor changes as noise, each pre-VOC spike carries, beyond its own profile's
    changes, a Poisson number (mean ``minor_change_rate``) of other classes' accessory changes
    (profile frequency below 0.5) that pre-VOC's profile lacks; a rate of 0 draws none."""
    quiet = NO_NOISE
    profiles = mutation_profiles()
    own = set(profiles.loc[profiles["class"] == "pre-VOC", "mutation"])
    minor = set(profiles.loc[profiles["frequency"] < 0.5, "mutation"]) - own
    none = synthesize_table(100, seed=10, classes=("pre-VOC",), settings=quiet)
    assert all(set(row.split(",")) - {""} <= own for row in none["mutations"])
    noisy = replace(quiet, minor_change_rate=2.0)
    table = synthesize_table(100, seed=10, classes=("pre-VOC",), settings=noisy)
    extras = [set(row.split(",")) - own - {""} for row in table["mutations"]]
    assert all(extra <= minor for extra in extras)
    assert 1.6 < np.mean([len(extra) for extra in extras]) <= 2.0  # a few overlap and are skipped
    assert len(set().union(*extras)) > 40  # drawn from many classes' changes, not a few
