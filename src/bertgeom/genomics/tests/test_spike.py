"""Spike extraction on real genomes (indels included) and QC statuses."""

from __future__ import annotations

import numpy as np
import pytest

from bertgeom.genomics.fasta import read_fasta
from bertgeom.genomics.mutations import Mutation, apply_mutations, mutation_profiles
from bertgeom.genomics.reference import (
    SPIKE_END,
    SPIKE_LENGTH,
    SPIKE_START,
    data_path,
    reference_genome,
    reference_spike,
)
from bertgeom.genomics.spike import QCStatus, extract_spike

COMPLEMENT = str.maketrans("ACGT", "TGCA")


def test_reference_genome_gives_the_reference_spike() -> None:
    spike = extract_spike("ref", reference_genome())
    assert spike.status is QCStatus.OK
    assert spike.sequence == reference_spike()
    assert len(spike.sequence) == SPIKE_LENGTH
    assert spike.input_kind == "genome"
    np.testing.assert_array_equal(spike.reference_positions, np.arange(SPIKE_START, SPIKE_END + 1))
    assert spike.coverage == 1.0


@pytest.mark.parametrize("label", ["Alpha", "Delta", "Lambda", "Mu", "Omicron"])
def test_indels_and_map_match_an_independent_edit(label: str) -> None:
    """The aligner's spike and map equal those built by editing the reference directly."""
    profile = mutation_profiles()
    chosen: list[Mutation] = []
    for name in profile[(profile["class"] == label) & (profile["frequency"] >= 0.9)]["mutation"]:
        mutation = Mutation.parse(name)
        if not any(mutation.overlaps(other) for other in chosen):
            chosen.append(mutation)
    edited = apply_mutations(chosen)
    genome = reference_genome()
    whole = genome[: SPIKE_START - 1] + edited.sequence + genome[SPIKE_END:]
    for sequence, kind in ((whole, "genome"), (edited.sequence, "spike")):
        spike = extract_spike(label, sequence)
        assert spike.status is QCStatus.OK, spike
        assert spike.input_kind == kind
        assert spike.sequence == edited.sequence
        np.testing.assert_array_equal(spike.reference_positions, edited.reference_positions)
        np.testing.assert_array_equal(spike.is_insertion, edited.is_insertion)


def test_real_genomes_with_deletions_have_the_documented_spike_lengths() -> None:
    """Alpha (3,813 nt) and Delta (3,816 nt) complete spikes from the embedded genomes."""
    import pandas as pd

    labels = pd.read_csv(data_path("labels.tsv"), sep="\t")
    complete = labels[
        (labels["file"] == "genomes_ncbi.fasta.xz") & (labels["spike_complete_noN"] == 1)
    ]
    wanted = {row.record_name.split()[0]: row.spike_len for row in complete.itertuples()}
    checked = 0
    for record in read_fasta(data_path("genomes_ncbi.fasta.xz")):
        if record.record_id in wanted and checked < 60:
            spike = extract_spike(record.record_id, record.sequence)
            assert spike.status is QCStatus.OK
            assert len(spike.sequence) == wanted[record.record_id]
            checked += 1
    assert checked == 60


def test_reverse_complement_is_oriented() -> None:
    reverse = reference_genome().translate(COMPLEMENT)[::-1]
    assert extract_spike("rc", reverse).sequence == reference_spike()


def test_hard_failures() -> None:
    assert extract_spike("e", "").status is QCStatus.EMPTY
    assert extract_spike("e", "---").status is QCStatus.EMPTY
    assert extract_spike("x", "ACGTXJ12").status is QCStatus.INVALID_CHARACTERS
    # ORF1a only: no spike in the sequence
    assert extract_spike("n", reference_genome()[1000:8000]).status is QCStatus.NO_ALIGNMENT
    # a spike masked almost entirely with N: nothing usable
    masked = (
        reference_genome()[: SPIKE_START + 100]
        + "N" * 3500
        + reference_genome()[SPIKE_START + 3600 :]
    )
    assert extract_spike("m", masked).status is QCStatus.NO_ALIGNMENT


def test_soft_failures_are_flagged_but_usable() -> None:
    genome = reference_genome()
    runs = genome[: SPIKE_START + 1000] + "N" * 300 + genome[SPIKE_START + 1300 :]
    many_n = extract_spike("n", runs)
    assert many_n.status is QCStatus.MANY_N and many_n.usable
    assert len(many_n.sequence) == SPIKE_LENGTH
    partial = extract_spike("p", reference_spike()[: SPIKE_LENGTH // 2])
    assert partial.status is QCStatus.SPIKE_INCOMPLETE and partial.usable
    assert partial.coverage == pytest.approx(0.5, abs=0.01)
    assert partial.sequence.endswith("N" * 1000)
    assert len(partial.sequence) == SPIKE_LENGTH


def test_iupac_codes_and_rna_are_accepted() -> None:
    spike = reference_spike()
    rna = spike.replace("T", "U").lower()
    assert extract_spike("rna", rna).sequence == spike
    ambiguous = spike[:100] + "R" + spike[101:]
    result = extract_spike("amb", ambiguous)
    assert result.status is QCStatus.OK
    assert result.sequence[100] == "N"
