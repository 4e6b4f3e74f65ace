"""Mutation profiles from spikes: the embedded table recomputed, planted mutations, inclusion
rules, and the generator drawing from a given profile table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertgeom.genomics.dataset import _labelled_records, synthetic_spikes
from bertgeom.genomics.mutations import CLASSES, Mutation, apply_mutations, mutation_profiles
from bertgeom.genomics.profiles import (
    PROFILE_COLUMNS,
    amino_acid_effect,
    embedded_duplicate_records,
    is_complete,
    lineage_backgrounds,
    nucleotide_mutations,
    profiles_from_spikes,
)
from bertgeom.genomics.reference import SPIKE_START, data_path, reference_spike
from bertgeom.genomics.spike import QCStatus, SpikeRecord, extract_spike
from bertgeom.genomics.synthetic import (
    CONVERGENT_MARKERS,
    GeneratorSettings,
    synthesize_table,
)

EmbeddedSpikes = list[tuple[str, str, SpikeRecord]]


@pytest.fixture(scope="module")
def embedded_spikes() -> EmbeddedSpikes:
    """``(record_id, label, spike)`` of each embedded genome of the eight classes (aligned once)."""
    return [
        (record_id, label, extract_spike(record_id, raw))
        for record_id, label, raw in _labelled_records(None, None)
        if label in CLASSES
    ]


def record_of(edited_sequence: str, positions: np.ndarray, inserted: np.ndarray) -> SpikeRecord:
    return SpikeRecord("planted", QCStatus.OK, edited_sequence, positions, inserted, coverage=1.0)


@pytest.fixture(scope="module")
def recomputed(embedded_spikes: EmbeddedSpikes) -> pd.DataFrame:
    """Profiles of the embedded genomes, each counted once (re-deposited records left out)."""
    duplicates = embedded_duplicate_records()
    kept = [(label, spike) for rid, label, spike in embedded_spikes if rid not in duplicates]
    return profiles_from_spikes([spike for _, spike in kept], [label for label, _ in kept])


def test_recomputed_profiles_reproduce_the_embedded_table(recomputed: pd.DataFrame) -> None:
    """Exact: every row, count, n_sequences, rounded frequency, aa_effect and the row order,
    Lambda and Mu's definitions included. The table counts genomes (each once: the 15
    re-deposited records that ``labels.tsv`` marks ``dup_of`` are left out), not distinct spike
    sequences, and lists no mutation of a single genome."""
    assert len(embedded_duplicate_records()) == 15
    pd.testing.assert_frame_equal(recomputed, mutation_profiles(), check_dtype=False)


def test_duplicate_records_only_change_pre_voc_counts(embedded_spikes: EmbeddedSpikes) -> None:
    """With the 14 complete re-deposited pre-VOC genomes counted twice, only pre-VOC's counts
    move (n_sequences 553, not 539); the listed mutations stay the same."""
    recomputed = profiles_from_spikes(
        [spike for *_, spike in embedded_spikes], [label for _, label, _ in embedded_spikes]
    )
    embedded = mutation_profiles()
    keys = ["class", "mutation"]
    assert set(map(tuple, recomputed[keys].to_numpy())) == set(
        map(tuple, embedded[keys].to_numpy())
    )
    others = recomputed["class"] != "pre-VOC"
    assert (
        recomputed[others]
        .reset_index(drop=True)
        .equals(embedded[embedded["class"] != "pre-VOC"].reset_index(drop=True))
    )
    assert set(recomputed.loc[~others, "n_sequences"]) == {539 + 14}


def test_completeness_agrees_with_labels_tsv(embedded_spikes: EmbeddedSpikes) -> None:
    labels = pd.read_csv(data_path("labels.tsv"), sep="\t")
    complete = dict(zip(labels["record_name"], labels["spike_complete_noN"] == 1, strict=True))
    assert all(is_complete(spike) == complete[rid] for rid, _, spike in embedded_spikes)


def test_distinct_spikes_are_fewer_than_genomes(embedded_spikes: EmbeddedSpikes) -> None:
    spikes = [spike for *_, spike in embedded_spikes]
    labels = [label for _, label, _ in embedded_spikes]
    distinct = profiles_from_spikes(spikes, labels, unique_sequences=True)
    sizes = distinct.groupby("class")["n_sequences"].first()
    assert sizes["pre-VOC"] < 539 and sizes["Alpha"] < 92


def test_reference_has_no_mutations() -> None:
    assert nucleotide_mutations(extract_spike("ref", reference_spike())) == ()
    assert nucleotide_mutations(SpikeRecord("empty", QCStatus.EMPTY)) == ()


def test_planted_substitution_deletion_insertion_and_n() -> None:
    planted = ["C21575T", "del21765-21770", "ins22204:GAGCCAGAA", "A23063T", "A23403G"]
    edited = apply_mutations([Mutation.parse(name) for name in planted])
    # An N on a reference base and an N over the planted D614G: neither is a substitution.
    masked = list(edited.sequence)
    for position in (22000, 23403):
        masked[int(np.flatnonzero(edited.reference_positions == position)[0])] = "N"
    sequence = "".join(masked)
    expected = ("C21575T", "del21765-21770", "ins22204:GAGCCAGAA", "A23063T")
    direct = record_of(sequence, edited.reference_positions, edited.is_insertion)
    assert nucleotide_mutations(direct) == expected
    assert nucleotide_mutations(extract_spike("aligned", sequence)) == expected
    assert not is_complete(direct)


def test_lineage_backgrounds_are_the_distinct_change_sets_of_pre_voc_spikes() -> None:
    planted = ["C21575T", "del21765-21770", "A23403G"]
    edited = apply_mutations([Mutation.parse(name) for name in planted])
    spike = record_of(edited.sequence, edited.reference_positions, edited.is_insertion)
    uncalled = apply_mutations([Mutation.parse("A23403G"), Mutation.parse("ins22204:GAGCCAGAA")])
    bases = uncalled.sequence.replace("GAGCCAGAA", "NNNNNNNNN")
    with_n = record_of(bases, uncalled.reference_positions, uncalled.is_insertion)
    failed = SpikeRecord("empty", QCStatus.EMPTY)
    spikes = [spike, spike, spike, with_n, failed]
    labels = ["pre-VOC", "pre-VOC", "Alpha", "pre-VOC", "pre-VOC"]
    backgrounds = lineage_backgrounds(spikes, labels)
    # Once per change set, pre-VOC only, and an insertion of Ns is missing data, not a change.
    assert [[m.name for m in background] for background in backgrounds] == [
        planted,
        ["A23403G"],
    ]


def test_adjacent_insertions_after_different_positions_are_two_events() -> None:
    edited = apply_mutations(
        [
            Mutation.parse("ins22000:AAA"),
            Mutation.parse("del22001-22001"),
            Mutation.parse("ins22001:CC"),
        ]
    )
    names = nucleotide_mutations(
        record_of(edited.sequence, edited.reference_positions, edited.is_insertion)
    )
    assert names == ("ins22000:AAA", "del22001-22001", "ins22001:CC")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3821), st.integers(1, 3)), max_size=15, unique_by=lambda t: t[0]
    )
)
def test_planted_substitutions_come_back(edits: list[tuple[int, int]]) -> None:
    reference = reference_spike()
    names = []
    for offset, shift in edits:
        alt = "ACGT"[("ACGT".index(reference[offset]) + shift) % 4]
        names.append((SPIKE_START + offset, f"{reference[offset]}{SPIKE_START + offset}{alt}"))
    edited = apply_mutations([Mutation.parse(name) for _, name in names])
    record = record_of(edited.sequence, edited.reference_positions, edited.is_insertion)
    assert nucleotide_mutations(record) == tuple(name for _, name in sorted(names))


def test_amino_acid_effects() -> None:
    assert amino_acid_effect("A23403G") == "S:D614G"
    assert amino_acid_effect("C24034T") == "S:N824N"
    assert amino_acid_effect("del21765-21770") == "S:del codons 68-70"
    assert amino_acid_effect("ins21990:TAC") == ""


def spike_with(names: list[str]) -> SpikeRecord:
    edited = apply_mutations([Mutation.parse(name) for name in names])
    return record_of(edited.sequence, edited.reference_positions, edited.is_insertion)


def test_inclusion_rules_and_definitions() -> None:
    # Beta-like: 11 genomes, one singleton (9 %, never listed), a pair (18 %), a core mutation.
    beta = [
        spike_with(["A23063T", *(["C21575T"] if i < 2 else []), *(["C22000A"] if i == 5 else [])])
        for i in range(11)
    ]
    incomplete = spike_with(["A23063T", "G24410A"])
    incomplete.sequence = "N" + incomplete.sequence[1:]
    # pre-VOC: listed from 3 genomes on, whatever the share.
    pre_voc = [
        spike_with(["A23403G"] if i < 3 else ["C21707T"] if i < 5 else []) for i in range(100)
    ]
    lambda_ = [spike_with(["T22917A"]), spike_with(["T22917A"])]
    spikes = [*beta, incomplete, *pre_voc, *lambda_]
    labels = ["Beta"] * 12 + ["pre-VOC"] * 100 + ["Lambda"] * 2
    table = profiles_from_spikes(spikes, labels)
    assert list(table.columns) == PROFILE_COLUMNS
    real = table[table["source"] == "real"]
    rows = list(
        real[["class", "mutation", "count", "n_sequences", "frequency"]].itertuples(
            index=False, name=None
        )
    )
    assert rows == [
        ("pre-VOC", "A23403G", 3, 100, 0.03),
        ("Beta", "A23063T", 11, 11, 1.0),
        ("Beta", "C21575T", 2, 11, 0.18),
        ("Lambda", "T22917A", 2, 2, 1.0),
    ]
    # Lambda has a real spike here, so only Mu's definition is appended.
    assert set(table.loc[table["source"] == "definition", "class"]) == {"Mu"}
    assert real["aa_effect"].tolist() == ["S:D614G", "S:N501Y", "S:L5F", "S:L452Q"]


def test_profiles_need_one_label_per_spike() -> None:
    with pytest.raises(ValueError, match="labels"):
        profiles_from_spikes([spike_with([])], [])


def one_mutation_profile(label: str, name: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "class": label,
                "source": "real",
                "n_sequences": 10,
                "mutation": name,
                "count": 10,
                "frequency": 1.0,
                "aa_effect": amino_acid_effect(name),
            }
        ],
        columns=PROFILE_COLUMNS,
    )


def test_generator_draws_from_the_given_profiles() -> None:
    planted = "C22000A"  # in no embedded profile, not a convergent marker
    assert planted not in set(mutation_profiles()["mutation"]) | set(CONVERGENT_MARKERS)
    quiet = GeneratorSettings(n_run_probability=0.0, incomplete_end_probability=0.0)
    table = synthesize_table(
        40,
        seed=5,
        classes=("Delta",),
        settings=quiet,
        profiles=one_mutation_profile("Delta", planted),
    )
    carried = [planted in mutations.split(",") for mutations in table["mutations"]]
    assert np.mean(carried) > 0.8
    # No embedded Delta marker (T19R) and no foreign marker: the table has one class.
    assert not any("C21618G" in mutations for mutations in table["mutations"])
    for sequence, has_it in zip(table["sequence"], carried, strict=True):
        assert (planted in nucleotide_mutations(extract_spike("synthetic", sequence))) == has_it


def test_default_profiles_are_the_embedded_table(recomputed: pd.DataFrame) -> None:
    """``profiles=None`` is today's behaviour (checked once against the generator before this
    argument existed: identical tables for seeds 0, 7 and 42042); recomputed profiles equal
    the embedded ones, so they draw the same spikes."""
    default = synthesize_table(4, seed=11, outliers=6)
    assert default.equals(synthesize_table(4, seed=11, outliers=6, profiles=mutation_profiles()))
    assert default.equals(synthesize_table(4, seed=11, outliers=6, profiles=recomputed))
    assert synthetic_spikes((2, 1, 1), seed=3).equals(
        synthetic_spikes((2, 1, 1), seed=3, profiles=recomputed)
    )
