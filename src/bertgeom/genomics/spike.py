"""Genome to spike: align to Wuhan-Hu-1 with minimap2 (``mappy``), cut out S, keep the map to
reference coordinates, and give each record a QC status.

The spike is read off the alignment, so insertions and deletions are kept; every base of the
extracted spike carries its reference position (an inserted base carries the position it follows),
which later analyses use to place tokens on the spike. Reference positions that no alignment
covers are written as ``N`` (missing data, never reference bases: a filled-in base would invent
evidence) and counted against the record's coverage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache

import mappy
import numpy as np
from numpy.typing import NDArray

from bertgeom.genomics.clades import UNREAD, clade_tree
from bertgeom.genomics.reference import SPIKE_END, SPIKE_LENGTH, SPIKE_START, reference_genome

_IUPAC = re.compile(r"[^ACGTURYKMSWBDHVN]")
_NOT_ACGT = re.compile(r"[^ACGT]")
_COMPLEMENT = str.maketrans("ACGTRYKMSWBDHVN", "TGCAYRMKSWVHDBN")

# minimap2 CIGAR operations (mappy reports them as integers).
_MATCH, _INSERTION, _DELETION, _SKIP, _EQUAL, _DIFF = 0, 1, 2, 3, 7, 8


class QCStatus(StrEnum):
    """A record's QC status. Hard failures get no prediction; soft ones are flagged and called."""

    OK = "ok"
    SPIKE_INCOMPLETE = "spike_incomplete"
    MANY_N = "many_N"
    EMPTY = "empty"
    INVALID_CHARACTERS = "invalid_characters"
    NO_ALIGNMENT = "no_alignment"

    @property
    def is_hard_failure(self) -> bool:
        return self in HARD_FAILURES


HARD_FAILURES = frozenset({QCStatus.EMPTY, QCStatus.INVALID_CHARACTERS, QCStatus.NO_ALIGNMENT})


@dataclass(frozen=True)
class QCThresholds:
    """Documented QC thresholds (docs/genomics.md).

    ``min_coverage``: below this share of spike reference positions covered by the alignment the
    record is ``spike_incomplete``. ``max_n_fraction``: above this share of non-ACGT bases in
    the aligned spike it is ``many_N``. ``min_called_fraction``: below this share of the spike
    length in called (A/C/G/T) bases there is no usable spike: ``no_alignment``.
    """

    min_coverage: float = 0.99
    max_n_fraction: float = 0.05
    min_called_fraction: float = 0.30


@dataclass
class SpikeRecord:
    """The spike of one input record, its map to the reference, and its QC.

    ``sequence`` is upper case. ``reference_positions[i]`` is the 1-based reference position of
    ``sequence[i]``; for an inserted base, the reference position it follows
    (``is_insertion[i]`` is True). ``coverage`` is the share of the 3,822 spike reference
    positions covered by the alignment (deletions count as covered), ``n_fraction`` the share of
    non-ACGT bases among the aligned bases. ``clade_bases`` holds the record's base at each
    clade-defining site of :func:`bertgeom.genomics.clades.clade_tree` (the whole genome's
    alignment, not only S: ``-`` deleted, ``N`` unread), for placing it on the clade tree.
    """

    record_id: str
    status: QCStatus
    sequence: str = ""
    reference_positions: NDArray[np.int32] = field(
        default_factory=lambda: np.zeros(0, dtype=np.int32)
    )
    is_insertion: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    coverage: float = 0.0
    n_fraction: float = 0.0
    input_kind: str = ""
    flags: tuple[str, ...] = ()
    clade_bases: NDArray[np.uint8] = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))

    @property
    def usable(self) -> bool:
        """Whether the record gets a prediction (no hard QC failure)."""
        return not self.status.is_hard_failure


@cache
def reference_aligner() -> mappy.Aligner:
    """minimap2's index of the embedded reference genome, built once per process."""
    # asm20: genome-to-genome preset tolerant of ~5 % divergence; SARS-CoV-2 variants are <0.5 %.
    aligner = mappy.Aligner(seq=reference_genome(), preset="asm20")
    if not aligner:
        raise RuntimeError("minimap2 could not index the embedded reference genome")
    return aligner


def clean_sequence(raw: str) -> tuple[str, bool]:
    """Upper-case, drop gaps ``-``, map U to T; return it and whether it is valid IUPAC."""
    sequence = raw.upper().replace("-", "").replace("U", "T")
    return sequence, _IUPAC.search(sequence) is None


def extract_spike(
    record_id: str, raw_sequence: str, thresholds: QCThresholds | None = None
) -> SpikeRecord:
    """Align one sequence (a genome or a spike) to the reference and cut out the spike with QC."""
    thresholds = thresholds or QCThresholds()
    sequence, valid = clean_sequence(raw_sequence)
    if not sequence:
        return SpikeRecord(record_id, QCStatus.EMPTY)
    if not valid:
        return SpikeRecord(record_id, QCStatus.INVALID_CHARACTERS)
    # Ambiguity codes are mapped to N for the aligner and the tokens: they carry no called base.
    sequence = _NOT_ACGT.sub("N", sequence)
    hits = [hit for hit in reference_aligner().map(sequence) if hit.is_primary or hit.strand != 0]
    if hits and all(hit.strand == -1 for hit in hits):
        sequence = sequence.translate(_COMPLEMENT)[::-1]
        hits = list(reference_aligner().map(sequence))
    hits = sorted((hit for hit in hits if hit.strand == 1), key=lambda hit: hit.q_st)
    spiked = [hit for hit in hits if hit.r_st < SPIKE_END and hit.r_en >= SPIKE_START - 1]
    if not spiked:
        return SpikeRecord(record_id, QCStatus.NO_ALIGNMENT, input_kind=_input_kind(sequence, []))
    record = _spike_from_hits(record_id, sequence, spiked, thresholds)
    record.clade_bases = bases_at_sites(sequence, hits, clade_tree().sites)
    return record


def bases_at_sites(
    sequence: str, hits: list[mappy.Alignment], sites: NDArray[np.int64]
) -> NDArray[np.uint8]:
    """``(n_sites,)`` bytes: the query's base aligned to each 1-based reference position of
    ``sites`` (sorted), ``-`` where the alignment deletes it, ``N`` where no hit covers it."""
    bases = np.full(len(sites), UNREAD, dtype=np.uint8)
    encoded = np.frombuffer(sequence.encode(), dtype=np.uint8)
    zero_based = sites - 1
    for hit in hits:
        ref, query = hit.r_st, hit.q_st
        for length, operation in hit.cigar:
            if operation in (_MATCH, _EQUAL, _DIFF):
                lo, hi = np.searchsorted(zero_based, [ref, ref + length])
                bases[lo:hi] = encoded[query + zero_based[lo:hi] - ref]
                ref += length
                query += length
            elif operation == _INSERTION:
                query += length
            elif operation in (_DELETION, _SKIP):
                lo, hi = np.searchsorted(zero_based, [ref, ref + length])
                bases[lo:hi] = ord("-")
                ref += length
    return bases


def _input_kind(sequence: str, hits: list[mappy.Alignment]) -> str:
    """``spike`` when the input is a spike (short, aligned within S), else ``genome``."""
    if len(sequence) > 2 * SPIKE_LENGTH:
        return "genome"
    inside = all(hit.r_st >= SPIKE_START - 201 and hit.r_en <= SPIKE_END + 200 for hit in hits)
    return "spike" if hits and inside else "genome"


def _spike_from_hits(
    record_id: str, sequence: str, hits: list[mappy.Alignment], thresholds: QCThresholds
) -> SpikeRecord:
    first, last = SPIKE_START - 1, SPIKE_END  # 0-based half-open window on the reference
    pieces: list[str] = []
    positions: list[NDArray[np.int32]] = []
    insertions: list[NDArray[np.bool_]] = []
    covered = 0
    cursor = first  # next reference position (0-based) still to emit

    def emit(bases: str, ref_start: int, inserted: bool) -> None:
        pieces.append(bases)
        if inserted:
            positions.append(np.full(len(bases), ref_start, dtype=np.int32))
        else:
            positions.append(np.arange(ref_start + 1, ref_start + 1 + len(bases), dtype=np.int32))
        insertions.append(np.full(len(bases), inserted, dtype=bool))

    previous: mappy.Alignment | None = None
    for hit in hits:
        if hit.r_en <= cursor:
            continue
        ref, query = hit.r_st, hit.q_st
        gap_start = max(cursor, first)
        if ref > gap_start:
            # Reference positions between two hits: copy the query 1:1 when the unaligned
            # stretches have the same length (an N run or a divergent patch), else mark missing.
            gap = min(ref, last) - gap_start
            same_length = previous is not None and hit.q_st - previous.q_en == ref - previous.r_en
            if same_length and previous is not None:
                offset = gap_start - previous.r_en
                emit(
                    sequence[previous.q_en + offset : previous.q_en + offset + gap],
                    gap_start,
                    False,
                )
                covered += gap
            else:
                emit("N" * gap, gap_start, False)
            cursor = gap_start + gap
        for length, operation in hit.cigar:
            if operation in (_MATCH, _EQUAL, _DIFF):
                lo, hi = max(ref, cursor), min(ref + length, last)
                if hi > lo:
                    emit(sequence[query + lo - ref : query + hi - ref], lo, False)
                    covered += hi - lo
                    cursor = hi
                ref += length
                query += length
            elif operation == _INSERTION:
                if first < ref <= last and ref == cursor:
                    emit(sequence[query : query + length], ref, True)
                query += length
            elif operation in (_DELETION, _SKIP):
                lo, hi = max(ref, cursor), min(ref + length, last)
                if hi > lo:
                    covered += hi - lo
                    cursor = hi
                ref += length
            if ref >= last:
                break
        previous = hit
        if cursor >= last:
            break
    if cursor < last:
        emit("N" * (last - cursor), cursor, False)
    spike = "".join(pieces)
    reference_positions = np.concatenate(positions)
    is_insertion = np.concatenate(insertions)
    coverage = covered / SPIKE_LENGTH
    not_called = len(_NOT_ACGT.findall(spike))
    called = len(spike) - not_called
    missing = SPIKE_LENGTH - covered
    n_in_aligned = max(not_called - missing, 0)
    n_fraction = n_in_aligned / max(len(spike) - missing, 1)
    flags: list[str] = []
    if called < thresholds.min_called_fraction * SPIKE_LENGTH:
        status = QCStatus.NO_ALIGNMENT
    else:
        if coverage < thresholds.min_coverage:
            flags.append(QCStatus.SPIKE_INCOMPLETE.value)
        if n_fraction > thresholds.max_n_fraction:
            flags.append(QCStatus.MANY_N.value)
        status = QCStatus(flags[0]) if flags else QCStatus.OK
    return SpikeRecord(
        record_id=record_id,
        status=status,
        sequence=spike,
        reference_positions=reference_positions,
        is_insertion=is_insertion,
        coverage=coverage,
        n_fraction=n_fraction,
        input_kind=_input_kind(sequence, hits),
        flags=tuple(flags),
    )
