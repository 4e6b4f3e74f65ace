"""Spike extraction on real genomes (indels included) and QC statuses."""

from __future__ import annotations

import numpy as np
import pytest

from bertgeom.genomics.fasta import read_fasta
from bertgeom.genomics.kmers import DEFAULT_K, DEFAULT_STRIDE, kmers, token_starts
from bertgeom.genomics.mutations import (
    EditedSpike,
    Mutation,
    apply_mutations,
    mutation_profiles,
)
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


def _core_edit(label: str) -> EditedSpike:
    """The reference spike edited with the class's core mutations (frequency >= 0.9)."""
    profile = mutation_profiles()
    chosen: list[Mutation] = []
    for name in profile[(profile["class"] == label) & (profile["frequency"] >= 0.9)]["mutation"]:
        mutation = Mutation.parse(name)
        if not any(mutation.overlaps(other) for other in chosen):
            chosen.append(mutation)
    return apply_mutations(chosen)


@pytest.mark.parametrize("label", ["Alpha", "Delta", "Lambda", "Mu", "Omicron"])
def test_indels_and_map_match_an_independent_edit(label: str) -> None:
    """The aligner's spike and map equal those built by editing the reference directly."""
    edited = _core_edit(label)
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


@pytest.mark.parametrize(
    ("label", "first", "last"),
    [
        ("Omicron", 0, 2300),  # 3' end missing; every Omicron indel inside the fragment
        ("Gamma", 1500, 3822),  # 5' end missing
        ("Gamma", 900, 2900),  # both ends missing (a 52 % window)
        ("Omicron", 1200, 3000),  # both ends missing, the NTD indels in the missing 5' part
    ],
)
def test_fragment_tokens_sit_where_they_sit_in_the_complete_spike(
    label: str, first: int, last: int
) -> None:
    """A partial spike is anchored to reference coordinates: its uncovered ends are ``N`` and
    each k-mer inside the fragment has the token index it has in the complete spike (shifted by
    whole tokens only where the missing part held indels, which cannot be known)."""
    complete = extract_spike("complete", _core_edit(label).sequence)
    window = complete.sequence[first:last]
    fragment = extract_spike("fragment", window)
    assert fragment.status is QCStatus.SPIKE_INCOMPLETE and fragment.usable
    assert fragment.flags[0] == QCStatus.SPIKE_INCOMPLETE.value
    assert fragment.coverage == pytest.approx(len(window) / SPIKE_LENGTH, abs=0.01)
    called = fragment.sequence.strip("N")
    # minimap2 may leave a few bases at a fragment's edge unaligned; they become N too.
    clipped = window.find(called)
    assert 0 <= clipped <= 10 and len(window) - clipped - len(called) <= 10
    head = fragment.sequence.index(called)
    assert set(fragment.sequence[:head]) <= {"N"}
    assert set(fragment.sequence[head + len(called) :]) <= {"N"}
    start = first + clipped
    np.testing.assert_array_equal(
        fragment.reference_positions[head : head + len(called)],
        complete.reference_positions[start : start + len(called)],
    )
    # A missing 5' part is reference-long: the fragment moves by the indels the complete spike
    # has before it (Omicron's NTD indels add up to -9 nt, one whole token).
    shift = head - start
    assert shift == (complete.reference_positions[start] - SPIKE_START) - start
    assert shift % DEFAULT_STRIDE == 0
    fragment_tokens = kmers(fragment.sequence)
    complete_tokens = kmers(complete.sequence)
    inside = [
        index
        for index, token_start in enumerate(token_starts(len(complete.sequence)))
        if start <= token_start and token_start + DEFAULT_K <= start + len(called)
    ]
    assert len(inside) > 150
    for index in inside:
        assert fragment_tokens[index + shift // DEFAULT_STRIDE] == complete_tokens[index]
    if first > 0:
        assert fragment_tokens[0] == "n" * DEFAULT_K
    if last < len(complete.sequence):
        assert fragment_tokens[-1] == "n" * DEFAULT_K
