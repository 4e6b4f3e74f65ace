"""Whatever a genome looks like, extraction gives it a consistent record and never raises.

The fuzzer edits real genomes (the reference, an Omicron genome) with the damage real files
show: deletions (S with its flanks too), inversions, truncations, duplications, translocations,
N runs, a reverse-complemented whole; each record must come back with its id, a status other than
``extraction_failed`` (the safety net is for bugs, and this test hunts them) and a map that
accounts for every reference position of S exactly once.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertgeom.genomics import spike as spike_module
from bertgeom.genomics.fasta import read_fasta
from bertgeom.genomics.reference import (
    SPIKE_END,
    SPIKE_LENGTH,
    SPIKE_START,
    data_path,
    reference_genome,
    reference_spike,
)
from bertgeom.genomics.spike import QCStatus, SpikeRecord, extract_spike

COMPLEMENT = str.maketrans("ACGTN", "TGCAN")
OPERATIONS = ("delete", "invert", "truncate", "duplicate", "move", "n_run")


@cache
def omicron_genome() -> str:
    """An embedded Omicron genome (deletions and insertions in S of its own)."""
    for record in read_fasta(data_path("genomes_ncbi.fasta.xz")):
        if record.record_id == "OP237527.1":
            return record.sequence
    raise AssertionError("the embedded Omicron genome OP237527.1 is missing")


def reverse_complement(sequence: str) -> str:
    return sequence.translate(COMPLEMENT)[::-1]


def edit(genome: str, operation: str, start: int, length: int, target: int) -> str:
    """``genome`` with one edit of ``length`` bases at ``start`` (``target``: where a copy or a
    moved segment goes)."""
    start = min(start, len(genome))
    end = min(start + length, len(genome))
    segment = genome[start:end]
    rest = genome[:start] + genome[end:]
    target = min(target, len(rest))
    if operation == "delete":
        return rest
    if operation == "invert":
        return genome[:start] + reverse_complement(segment) + genome[end:]
    if operation == "truncate":
        return segment
    if operation == "duplicate":
        return genome[:target] + segment + genome[target:]
    if operation == "move":
        return rest[:target] + segment + rest[target:]
    return genome[:start] + "N" * len(segment) + genome[end:]


# Positions anywhere, or near S (where the cases worth finding are).
positions = st.one_of(st.integers(0, 30_000), st.integers(SPIKE_START - 3_000, SPIKE_END + 1_000))
lengths = st.one_of(st.integers(1, 200), st.integers(200, 8_000))
local_edits = st.tuples(st.sampled_from(OPERATIONS), positions, lengths, positions)
# Edits of all of S and some of its flanks (the record that once crashed predict).
flanks = st.integers(0, 1_500)
spike_wide_edits = st.builds(
    lambda operation, before, after, target: (
        operation,
        SPIKE_START - 1 - before,
        before + SPIKE_LENGTH + after,
        target,
    ),
    st.sampled_from(OPERATIONS),
    flanks,
    flanks,
    positions,
)
edits = st.lists(st.one_of(local_edits, spike_wide_edits), min_size=1, max_size=3)


def assert_consistent(record: SpikeRecord, record_id: str) -> None:
    """A record's invariants: its id, a status its flags agree with, and a map in which every
    reference position of S is written once, as a base (or ``N``) or as a deletion."""
    assert record.record_id == record_id
    assert isinstance(record.status, QCStatus)
    assert record.status is not QCStatus.EXTRACTION_FAILED, record.flags
    assert 0.0 <= record.coverage <= 1.0
    assert 0.0 <= record.n_fraction <= 1.0
    assert 0.0 <= record.deleted_fraction <= record.coverage
    if record.flags:
        assert record.status.value == record.flags[0]
        assert all(not QCStatus(flag).is_hard_failure for flag in record.flags)
    if record.usable:
        assert record.sequence
    if not record.sequence and not record.deleted_fraction:
        return
    assert len(record.sequence) == len(record.reference_positions) == len(record.is_insertion)
    written = record.reference_positions[~record.is_insertion]
    assert np.all(np.diff(record.reference_positions) >= 0)
    assert np.all(np.diff(written) > 0)
    assert written.size == 0 or (written[0] >= SPIKE_START and written[-1] <= SPIKE_END)
    deleted = round(record.deleted_fraction * SPIKE_LENGTH)
    assert written.size + deleted == SPIKE_LENGTH


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(
    source=st.sampled_from(["reference", "omicron"]),
    changes=edits,
    flip=st.booleans(),
)
def test_extraction_never_raises_and_stays_consistent(
    source: str, changes: list[tuple[str, int, int, int]], flip: bool
) -> None:
    genome = reference_genome() if source == "reference" else omicron_genome()
    for operation, start, length, target in changes:
        genome = edit(genome, operation, start, length, target)
    if flip:
        genome = reverse_complement(genome)
    assert_consistent(extract_spike("fuzzed", genome), "fuzzed")


def test_spike_deleted_with_its_flanks_is_no_alignment() -> None:
    """The record that crashed predict: one hit whose CIGAR deletes all of S (3,900 nt)."""
    genome = reference_genome()
    record = extract_spike("gone", genome[:21500] + genome[25400:])
    assert record.status is QCStatus.NO_ALIGNMENT and not record.usable
    assert record.sequence == "" and record.deleted_fraction == 1.0
    assert_consistent(record, "gone")


def test_large_deletion_is_flagged_and_called() -> None:
    """39 % of S deleted: every position is accounted for (coverage 1.0), so only the
    ``large_deletion`` flag tells; the real deletions of variants stay ``ok``."""
    genome = reference_genome()
    deleted = 1500
    start = SPIKE_START + 1000
    record = extract_spike("big", genome[: start - 1] + genome[start - 1 + deleted :])
    assert record.status is QCStatus.LARGE_DELETION and record.usable
    assert record.flags == ("large_deletion",)
    assert record.coverage == 1.0
    assert record.deleted_fraction == pytest.approx(deleted / SPIKE_LENGTH)
    assert len(record.sequence) == SPIKE_LENGTH - deleted
    small = extract_spike("small", genome[: start - 1] + genome[start - 1 + 51 :])
    assert small.status is QCStatus.OK


def test_large_deletion_comes_after_the_other_soft_flags() -> None:
    genome = reference_genome()
    start = SPIKE_START + 1000
    # 300 nt deleted (7.8 %), the genome stopping 400 nt before the end of S
    record = extract_spike("both", genome[: start - 1] + genome[start + 299 : SPIKE_END - 400])
    assert record.flags == ("spike_incomplete", "large_deletion")
    assert record.status is QCStatus.SPIKE_INCOMPLETE


def test_inverted_segment_is_missing_not_substituted() -> None:
    """An inverted stretch of S is aligned on the minus strand: its positions become ``N``
    (missing), not the reverse-complemented bases as if they were substitutions."""
    genome = reference_genome()
    start, end = SPIKE_START + 500, SPIKE_START + 1500
    inverted = genome[:start] + reverse_complement(genome[start:end]) + genome[end:]
    record = extract_spike("inv", inverted)
    assert_consistent(record, "inv")
    assert record.status is QCStatus.SPIKE_INCOMPLETE
    assert len(record.sequence) == SPIKE_LENGTH
    called = [
        i for i, base in enumerate(record.sequence) if base != "N"
    ]  # the called bases are the reference's
    assert all(record.sequence[i] == reference_spike()[i] for i in called)
    assert record.coverage < 0.8
    # turned around as a whole, the same record
    flipped = extract_spike("inv", reverse_complement(inverted))
    assert flipped.sequence == record.sequence


def test_unexpected_error_costs_one_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net: a bug while extracting a record gives it the hard status
    ``extraction_failed`` with the error in its flags (commas removed: they separate flags)."""

    def broken(*args: object) -> SpikeRecord:
        raise ValueError("need at least one array, to concatenate")

    monkeypatch.setattr(spike_module, "_spike_from_hits", broken)
    record = extract_spike("bug", reference_genome())
    assert record.status is QCStatus.EXTRACTION_FAILED and not record.usable
    assert record.flags == ("ValueError: need at least one array; to concatenate",)
