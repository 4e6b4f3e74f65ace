"""Spike changes against the reference: planted edits, an independent translation, alignment."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertgeom.genomics.changes import (
    GENETIC_CODE,
    amino_acid_mutations,
    change_span,
    definition_changes,
    edited_spike_changes,
    sequence_changes,
    spike_changes,
    unread_changes,
)
from bertgeom.genomics.fasta import read_fasta
from bertgeom.genomics.mutations import Mutation, apply_mutations
from bertgeom.genomics.reference import SPIKE_START, data_path, reference_spike
from bertgeom.genomics.spike import extract_spike


def translate(sequence: str) -> str:
    return "".join(GENETIC_CODE[sequence[i : i + 3]] for i in range(0, len(sequence) - 2, 3))


def test_genetic_code_reads_the_spike_protein() -> None:
    protein = translate(reference_spike())
    assert protein.startswith("MFVFLVLLPLVSSQCVNLT") and protein.endswith("VKLHYT*")
    assert len(protein) == 1274 and "*" not in protein[:-1]


def test_reference_has_no_changes() -> None:
    assert spike_changes(extract_spike("ref", reference_spike())) == ()


def test_planted_substitution_deletion_and_insertion() -> None:
    planted = [
        Mutation.parse("A23063T"),  # N501Y
        Mutation.parse("C21575T"),  # L5F
        Mutation.parse("del21765-21770"),  # the Alpha deletion at 69-70
        Mutation.parse("ins22204:GAGCCAGAA"),  # Omicron BA.1's insertion after 214
        Mutation.parse("C23017T"),  # a synonymous change (codon 485 GGC -> GGT): not a change
    ]
    assert translate(reference_spike()[3 * 484 : 3 * 485]) == "G"
    changes = edited_spike_changes(apply_mutations(planted))
    assert changes == ("L5F", "del21765-21770", "ins22204:GAGCCAGAA", "N501Y")


def test_missing_bases_are_not_changes() -> None:
    spike = apply_mutations([Mutation.parse("A23063T")]).sequence
    offset = 23063 - SPIKE_START
    masked = spike[: offset - 1] + "NNN" + spike[offset + 2 :]
    assert spike_changes(extract_spike("masked", masked)) == ()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3821), st.integers(1, 3)), max_size=12, unique_by=lambda t: t[0]
    )
)
def test_substitutions_match_an_independent_translation(edits: list[tuple[int, int]]) -> None:
    reference = reference_spike()
    mutations = []
    for offset, shift in edits:
        base = reference[offset]
        alt = "ACGT"[("ACGT".index(base) + shift) % 4]
        mutations.append(
            Mutation(
                f"{base}{SPIKE_START + offset}{alt}",
                "sub",
                SPIKE_START + offset,
                SPIKE_START + offset,
                alt,
            )
        )
    edited = apply_mutations(mutations)
    before, after = translate(reference), translate(edited.sequence)
    expected = tuple(
        f"{a}{position + 1}{b}"
        for position, (a, b) in enumerate(zip(before, after, strict=True))
        if a != b
    )
    assert edited_spike_changes(edited) == expected


def test_alignment_round_trip_on_a_real_genome() -> None:
    """A real genome with an Alpha spike, read through minimap2: Alpha's defining changes."""
    genome = next(
        record.sequence
        for record in read_fasta(data_path("genomes_ncbi.fasta.xz"))
        if record.record_id == "MW769709.1"
    )
    changes = set(sequence_changes([genome])[0])
    assert {"N501Y", "A570D", "D614G", "P681H", "T716I", "S982A", "D1118H"} <= changes
    assert {"del21765-21770", "del21991-21993"} <= changes


def test_definitions_of_the_synthetic_only_classes() -> None:
    lambda_changes = definition_changes("Lambda")
    assert "L452Q" in lambda_changes and "F490S" in lambda_changes
    assert definition_changes("Alpha") == ()  # profiled from real data, no definition rows
    assert "ins21990:TAC" in definition_changes("Mu")


def test_change_spans() -> None:
    assert change_span("L452R") == (SPIKE_START + 3 * 451, SPIKE_START + 3 * 451 + 2)
    assert change_span("del21765-21770") == (21765, 21770)
    assert change_span("ins22204:GAG") == (22204, 22205)


def test_unread_changes_are_those_with_an_uncalled_position() -> None:
    """A codon with an N, or outside a fragment, is unread; a deleted codon is read (absent)."""
    names = ("L452R", "D614G", "V1176F", "del21765-21770", "Y145D")
    edited = apply_mutations([Mutation.parse("del21765-21770"), Mutation.parse("A23403G")])
    sequence = edited.sequence
    codon_452 = SPIKE_START + 3 * 451 - SPIKE_START - 6  # shifted left by the 6-base deletion
    with_n = sequence[:codon_452] + "N" + sequence[codon_452 + 1 :]
    whole = extract_spike("whole", with_n)
    assert unread_changes(whole, names) == {"L452R"}
    assert {"D614G", "del21765-21770"} <= set(spike_changes(whole))
    half = extract_spike("half", sequence[: len(sequence) // 2])
    assert half.usable
    assert unread_changes(half, names) == {"V1176F"}
    assert unread_changes(extract_spike("empty", ""), names) == set(names)


def test_amino_acid_changes_are_made_as_written() -> None:
    """Each outside lineage's written spike changes, made on the reference and read back off
    an alignment, are exactly its substitutions and its deletions (codon-numbered there)."""
    table = pd.read_csv(data_path("outside_lineages.tsv"), sep="\t", dtype=str)
    for row in table.itertuples(index=False):
        names = str(row.spike_changes).split()
        mutations = [m for name in names for m in amino_acid_mutations(name)]
        read = spike_changes(extract_spike(str(row.lineage), apply_mutations(mutations).sequence))
        substitutions = [n for n in names if not n.startswith("del")]
        assert [c for c in read if not c.startswith("del")] == substitutions, row.lineage
        deleted_codons = sum(
            int(n[3:].split("-")[-1]) - int(n[3:].split("-")[0]) + 1
            for n in names
            if n.startswith("del")
        )
        read_deleted = sum(
            int(c[3:].split("-")[1]) - int(c[3:].split("-")[0]) + 1
            for c in read
            if c.startswith("del")
        )
        assert read_deleted == 3 * deleted_codons, row.lineage
    with pytest.raises(ValueError, match="the reference has D"):
        amino_acid_mutations("E614G")
