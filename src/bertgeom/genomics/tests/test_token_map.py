"""Tokens placed on reference spike coordinates, and mutation presence, against hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from bertgeom.genomics.kmers import token_starts
from bertgeom.genomics.mutations import Mutation, apply_mutations
from bertgeom.genomics.reference import SPIKE_END, SPIKE_LENGTH, SPIKE_START
from bertgeom.genomics.spike import QCStatus, SpikeRecord, extract_spike
from bertgeom.genomics.token_map import (
    MutationTable,
    base_positions,
    changed_tokens,
    defining_mutations,
    layout_mutations,
    mutation_effects,
    mutation_states,
    spike_layout,
    token_spans,
)

K, STRIDE = 12, 9


def record_of(mutations: list[str], n_run: tuple[int, int] | None = None) -> SpikeRecord:
    """The reference spike edited with ``mutations`` (and an N run over sequence offsets)."""
    edited = apply_mutations([Mutation.parse(name) for name in mutations])
    sequence = edited.sequence
    if n_run is not None:
        first, last = n_run
        sequence = sequence[:first] + "N" * (last - first) + sequence[last:]
    return SpikeRecord(
        "x", QCStatus.OK, sequence, edited.reference_positions, edited.is_insertion, 1.0
    )


def test_reference_tokens_span_their_twelve_positions() -> None:
    record = record_of([])
    lo, hi = token_spans(base_positions(record.sequence, record), K, STRIDE)
    starts = token_starts(SPIKE_LENGTH, K, STRIDE)
    assert len(lo) == len(starts) == 425
    np.testing.assert_array_equal(lo, SPIKE_START + starts)
    np.testing.assert_array_equal(hi, np.minimum(SPIKE_START + starts + K - 1, SPIKE_END))
    lo, hi = token_spans(base_positions(record.sequence, record), K, STRIDE, max_tokens=10)
    assert len(lo) == 10


def test_spans_follow_deletions_and_insertions() -> None:
    deletion = record_of(["del21765-21770"])
    lo, hi = token_spans(base_positions(deletion.sequence, deletion), K, STRIDE)
    junction = np.flatnonzero((lo < 21765) & (hi > 21770))
    assert len(junction) >= 1
    assert not np.any((lo >= 21765) & (lo <= 21770)) and not np.any((hi >= 21765) & (hi <= 21770))
    assert np.all(hi[junction] - lo[junction] == K - 1 + 6)
    insertion = record_of(["ins21990:TAC"])
    lo, hi = token_spans(base_positions(insertion.sequence, insertion), K, STRIDE)
    holding = (lo <= 21990) & (hi >= 21990)
    assert np.any(holding & (hi - lo == K - 1 - 3))  # three bases share position 21990


def test_positions_of_a_sequence_the_aligner_changed() -> None:
    record = record_of([])
    assert not base_positions(record.sequence, None).any()
    failed = SpikeRecord("x", QCStatus.NO_ALIGNMENT)
    assert not base_positions(record.sequence, failed).any()
    masked = SpikeRecord(
        "x",
        QCStatus.OK,
        "N" * 50 + record.sequence[50:],
        record.reference_positions,
        record.is_insertion,
    )
    np.testing.assert_array_equal(
        base_positions(record.sequence, masked), record.reference_positions
    )
    longer = "CCGTA" + record.sequence[:100] + "TTTT" + record.sequence[100:]
    positions = base_positions(longer, record)
    assert not positions[:105].any()
    np.testing.assert_array_equal(positions[109:], record.reference_positions[100:])


def test_padding_bases_have_no_position() -> None:
    record = record_of([])
    short = record.sequence[:100]
    lo, hi = token_spans(base_positions(short, record), K, STRIDE)
    assert hi[-1] == SPIKE_START + 99 and lo[-1] == SPIKE_START + token_starts(100, K, STRIDE)[-1]


@pytest.mark.parametrize(
    ("present", "absent"),
    [
        (["A23063T"], ["C23604A"]),
        (["del21765-21770"], ["del21991-21993"]),
        (["ins21990:TAC"], ["del22281-22289"]),
    ],
)
def test_mutation_states(present: list[str], absent: list[str]) -> None:
    table = MutationTable.of([Mutation.parse(name) for name in present + absent])
    carries, observed = mutation_states(record_of(present), table)
    assert carries.tolist() == [True] * len(present) + [False] * len(absent)
    assert observed.all()


def test_an_n_run_is_neither_carried_nor_observed() -> None:
    table = MutationTable.of([Mutation.parse("A23063T"), Mutation.parse("G23012A")])
    offset = 23063 - SPIKE_START
    carries, observed = mutation_states(record_of([], (offset - 5, offset + 5)), table)
    assert carries.tolist() == [False, False]
    assert observed.tolist() == [False, True]


def test_extracted_spike_carries_its_indels() -> None:
    edited = apply_mutations([Mutation.parse("del22029-22034"), Mutation.parse("ins21990:TAC")])
    record = extract_spike("x", edited.sequence)
    table = MutationTable.of(list(layout_mutations()))
    carries, _ = mutation_states(record, table)
    carried = {m.name for m, flag in zip(table.mutations, carries, strict=True) if flag}
    assert carried == {"del22029-22034", "ins21990:TAC"}


def test_layout_places_tokens_after_cls_and_truncates() -> None:
    records = [record_of([]), record_of(["A23063T"])]
    sequences = [records[0].sequence[:300], records[1].sequence]
    n_short = len(token_starts(300, K, STRIDE))
    lengths = [n_short + 2, 100]
    layout = spike_layout(sequences, records, lengths, K, STRIDE, layout_mutations())
    assert tuple(layout.span_lo.shape) == (2, 100)
    assert layout.span_lo[0, 0] == 0 and layout.span_lo[0, 1] == SPIKE_START
    assert layout.span_lo[0, n_short] > 0 and layout.span_lo[0, n_short + 1] == 0
    assert layout.span_lo[1, 98] > 0 and layout.span_lo[1, 99] == 0
    names = [m.name for m in layout.mutations]
    assert layout.carries[1, names.index("A23063T")] and not layout.carries[0].any()
    with pytest.raises(ValueError, match="content tokens"):
        spike_layout(["ACGT" * 10], [None], [20], K, STRIDE, layout_mutations())


def test_defining_mutations_are_the_core_of_each_profile() -> None:
    defining = defining_mutations()
    assert "pre-VOC" not in defining
    alpha = {m.name for m in defining["Alpha"]}
    assert {"A23063T", "del21765-21770", "del21991-21993"} <= alpha
    assert "C21855T" not in alpha  # frequency 0.09
    union = layout_mutations()
    assert len({m.name for m in union}) == len(union)
    assert mutation_effects()["A23063T"] == "S:N501Y"


def _changed(mutations: list[str], n_run: tuple[int, int] | None = None) -> np.ndarray:
    record = record_of(mutations, n_run)
    return changed_tokens(record.sequence, base_positions(record.sequence, record), K, STRIDE)


def _tokens_holding(offset: int, count: int) -> set[int]:
    """Indices of the tokens whose bases include sequence offset ``offset``."""
    return {t for t in range(count) if t * STRIDE <= offset < t * STRIDE + K}


def test_changed_tokens_mark_substitutions_insertions_and_deletions() -> None:
    assert not _changed([]).any()
    substituted = _changed(["A23403G"])  # D614G, at sequence offset 23403 - 21563
    assert set(np.flatnonzero(substituted)) == _tokens_holding(
        23403 - SPIKE_START, len(substituted)
    )
    deleted = _changed(["del21765-21770"])  # HV69-70del: the bases either side of the gap
    assert set(np.flatnonzero(deleted)) == _tokens_holding(
        21764 - SPIKE_START, len(deleted)
    ) | _tokens_holding(21765 - SPIKE_START, len(deleted))
    inserted = _changed(["ins22204:GAGCCAGAA"])
    assert inserted.any() and inserted.sum() <= 3
    # N runs change nothing.
    assert not _changed([], n_run=(100, 160)).any()
