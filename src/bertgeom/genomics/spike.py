"""Genome to spike: align to Wuhan-Hu-1 with minimap2 (``mappy``), cut out S, keep the map to
reference coordinates, and give each record a QC status.

The spike is read off the alignment, so insertions and deletions are kept; every base of the
extracted spike carries its reference position (an inserted base carries the position it follows),
which later analyses use to place tokens on the spike. Reference positions that no alignment
covers are written as ``N`` (missing data, never reference bases: a filled-in base would invent
evidence) and counted against the record's coverage.

Whatever the aligner makes of a record (no hit, hits beside S, S deleted with its flanks, pieces
on both strands, duplications), the record gets a :class:`SpikeRecord` with a status: one record
never stops a batch.
"""

from __future__ import annotations

import logging
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
_FIRST, _LAST = SPIKE_START - 1, SPIKE_END  # S as a 0-based half-open window on the reference

_log = logging.getLogger(__name__)


class QCStatus(StrEnum):
    """A record's QC status. Hard failures get no prediction; soft ones are flagged and called.

    A record's status is its first flag in this order (``spike_incomplete`` before ``many_N``
    before ``large_deletion``); ``flags`` lists them all.
    """

    OK = "ok"
    SPIKE_INCOMPLETE = "spike_incomplete"
    MANY_N = "many_N"
    LARGE_DELETION = "large_deletion"
    EMPTY = "empty"
    INVALID_CHARACTERS = "invalid_characters"
    NO_ALIGNMENT = "no_alignment"
    EXTRACTION_FAILED = "extraction_failed"

    @property
    def is_hard_failure(self) -> bool:
        return self in HARD_FAILURES


HARD_FAILURES = frozenset(
    {
        QCStatus.EMPTY,
        QCStatus.INVALID_CHARACTERS,
        QCStatus.NO_ALIGNMENT,
        QCStatus.EXTRACTION_FAILED,
    }
)


@dataclass(frozen=True)
class QCThresholds:
    """Documented QC thresholds (docs/genomics.md).

    ``min_coverage``: below this share of spike reference positions covered by the alignment the
    record is ``spike_incomplete``. ``max_n_fraction``: above this share of non-ACGT bases in
    the aligned spike it is ``many_N``. ``max_deleted_fraction``: above this share of the spike
    reference positions deleted in the alignment it is ``large_deletion`` (0.03, 115 nt: named
    variants delete at most about 30 nt of S, the 1,404 embedded genomes at most 51; a spike
    missing more is an assembly or alignment artefact, or a lineage the classes never saw).
    ``min_called_fraction``: below this share of the spike length in called (A/C/G/T) bases
    there is no usable spike: ``no_alignment`` (a spike deleted whole included).
    """

    min_coverage: float = 0.99
    max_n_fraction: float = 0.05
    max_deleted_fraction: float = 0.03
    min_called_fraction: float = 0.30


@dataclass
class SpikeRecord:
    """The spike of one input record, its map to the reference, and its QC.

    ``sequence`` is upper case. ``reference_positions[i]`` is the 1-based reference position of
    ``sequence[i]``; for an inserted base, the reference position it follows
    (``is_insertion[i]`` is True). ``coverage`` is the share of the 3,822 spike reference
    positions covered by the alignment (deletions count as covered), ``deleted_fraction`` the
    share deleted, ``n_fraction`` the share of non-ACGT bases among the aligned bases.
    ``clade_bases`` holds the record's base at each clade-defining site of
    :func:`bertgeom.genomics.clades.clade_tree` (the whole genome's alignment, not only S: ``-``
    deleted, ``N`` unread), for placing it on the clade tree. With ``extraction_failed``,
    ``flags`` holds the error.
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
    deleted_fraction: float = 0.0

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
    """Align one sequence (a genome or a spike) to the reference and cut out the spike with QC.

    Never raises. An unexpected error (a bug, not bad input: ``test_spike_fuzz.py`` hunts for
    them) becomes the hard status ``extraction_failed`` with the error in ``flags`` and a logged
    warning, so that it costs its own record's call, not the batch's: predict still writes one
    row per record and a lab sees which record to report.
    """
    try:
        return _extract_spike(record_id, raw_sequence, thresholds or QCThresholds())
    except Exception as error:
        _log.warning("record %s: spike extraction failed", record_id, exc_info=True)
        return SpikeRecord(record_id, QCStatus.EXTRACTION_FAILED, flags=(_error_flag(error),))


def _error_flag(error: Exception) -> str:
    """The error as one ``qc_flags`` entry: no commas (they separate flags), one line."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text.replace(",", ";")[:200]


def _extract_spike(record_id: str, raw_sequence: str, thresholds: QCThresholds) -> SpikeRecord:
    sequence, valid = clean_sequence(raw_sequence)
    if not sequence:
        return SpikeRecord(record_id, QCStatus.EMPTY)
    if not valid:
        return SpikeRecord(record_id, QCStatus.INVALID_CHARACTERS)
    # Ambiguity codes are mapped to N for the aligner and the tokens: they carry no called base.
    sequence, hits = _oriented_hits(_NOT_ACGT.sub("N", sequence))
    forward = sorted((hit for hit in hits if hit.strand == 1), key=lambda hit: (hit.r_st, hit.r_en))
    spiked = [hit for hit in forward if hit.r_st < _LAST and hit.r_en >= _FIRST]
    if not spiked:
        return SpikeRecord(record_id, QCStatus.NO_ALIGNMENT, input_kind=_input_kind(sequence, []))
    inverted = [(hit.q_st, hit.q_en) for hit in hits if hit.strand == -1]
    record = _spike_from_hits(record_id, sequence, spiked, inverted, thresholds)
    record.clade_bases = bases_at_sites(sequence, forward, clade_tree().sites)
    return record


def _oriented_hits(sequence: str) -> tuple[str, list[mappy.Alignment]]:
    """The sequence on the reference's strand and its primary (and supplementary) hits.

    It is turned around when more of its bases align on the minus strand than on the plus
    strand, so that a reverse-complemented genome with an inverted segment keeps its bulk.
    """
    hits = [hit for hit in reference_aligner().map(sequence) if hit.is_primary]
    minus = sum(hit.q_en - hit.q_st for hit in hits if hit.strand == -1)
    plus = sum(hit.q_en - hit.q_st for hit in hits if hit.strand == 1)
    if minus > plus:
        sequence = sequence.translate(_COMPLEMENT)[::-1]
        hits = [hit for hit in reference_aligner().map(sequence) if hit.is_primary]
    return sequence, hits


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


class _SpikeBuilder:
    """The spike written left to right in reference order over S: each reference position is
    written once (``cursor`` is the next one still to write, 0-based), so overlapping hits
    (duplications) cannot write a position twice and the map stays sorted."""

    def __init__(self, sequence: str) -> None:
        self.query = sequence
        self.cursor = _FIRST
        self.covered = 0
        self.deleted = 0
        self.pieces: list[str] = []
        self.positions: list[NDArray[np.int32]] = []
        self.insertions: list[NDArray[np.bool_]] = []

    def _emit(self, bases: str, positions: NDArray[np.int32], inserted: bool) -> None:
        self.pieces.append(bases)
        self.positions.append(positions)
        self.insertions.append(np.full(len(bases), inserted, dtype=bool))

    def _window(self, ref_start: int, ref_end: int) -> tuple[int, int]:
        return max(ref_start, self.cursor), min(ref_end, _LAST)

    def aligned(self, query_start: int, ref_start: int, ref_end: int, covered: bool = True) -> None:
        """Query bases from ``query_start`` aligned 1:1 to reference ``[ref_start, ref_end)``
        (covered; else ``N``, missing)."""
        lo, hi = self._window(ref_start, ref_end)
        if hi <= lo:
            return
        start = query_start + lo - ref_start
        bases = self.query[start : start + hi - lo] if covered else "N" * (hi - lo)
        self._emit(bases, np.arange(lo + 1, hi + 1, dtype=np.int32), False)
        self.covered += (hi - lo) if covered else 0
        self.cursor = hi

    def missing(self, ref_end: int) -> None:
        """Reference positions up to ``ref_end`` that no alignment covers: ``N``."""
        self.aligned(0, self.cursor, ref_end, covered=False)

    def deletion(self, ref_start: int, ref_end: int) -> None:
        lo, hi = self._window(ref_start, ref_end)
        if hi > lo:
            self.covered += hi - lo
            self.deleted += hi - lo
            self.cursor = hi

    def insertion(self, query_start: int, length: int, after: int) -> None:
        """Inserted query bases after 0-based reference position ``after - 1``, kept when the
        spike has just been written up to there."""
        if _FIRST < after == self.cursor:
            bases = self.query[query_start : query_start + length]
            self._emit(bases, np.full(len(bases), after, dtype=np.int32), True)

    def hit(self, hit: mappy.Alignment) -> None:
        """Write what ``hit``'s CIGAR says about S."""
        ref, query = hit.r_st, hit.q_st
        for length, operation in hit.cigar:
            if ref >= _LAST:
                break
            if operation in (_MATCH, _EQUAL, _DIFF):
                self.aligned(query, ref, ref + length)
                ref += length
                query += length
            elif operation == _INSERTION:
                self.insertion(query, length, ref)
                query += length
            elif operation in (_DELETION, _SKIP):
                self.deletion(ref, ref + length)
                ref += length

    def bridge(
        self,
        previous: mappy.Alignment | None,
        hit: mappy.Alignment,
        inverted: list[tuple[int, int]],
    ) -> None:
        """Reference positions between two hits: the query copied 1:1 when the unaligned
        stretches have the same length (an N run or a divergent patch) and no minus-strand hit
        aligns that stretch (an inversion is not a substitution), else missing."""
        gap = min(hit.r_st, _LAST) - self.cursor
        if gap <= 0:
            return
        if previous is not None and hit.q_st - previous.q_en == hit.r_st - previous.r_en:
            start = previous.q_en + self.cursor - previous.r_en
            flipped = any(q_st < start + gap and q_en > start for q_st, q_en in inverted)
            if previous.q_en <= start and start + gap <= hit.q_st and not flipped:
                self.aligned(start, self.cursor, self.cursor + gap)
                return
        self.missing(self.cursor + gap)

    def result(self) -> tuple[str, NDArray[np.int32], NDArray[np.bool_]]:
        """The spike, its reference positions and insertion mask (all empty when S was
        deleted whole)."""
        if not self.pieces:
            return "", np.zeros(0, dtype=np.int32), np.zeros(0, dtype=bool)
        return "".join(self.pieces), np.concatenate(self.positions), np.concatenate(self.insertions)


def _spike_from_hits(
    record_id: str,
    sequence: str,
    hits: list[mappy.Alignment],
    inverted: list[tuple[int, int]],
    thresholds: QCThresholds,
) -> SpikeRecord:
    """The spike read off the plus-strand ``hits`` overlapping S (sorted by reference start),
    with its QC; ``inverted`` are the query stretches minus-strand hits align."""
    builder = _SpikeBuilder(sequence)
    previous: mappy.Alignment | None = None
    for hit in hits:
        if hit.r_en <= builder.cursor:
            continue  # within what earlier hits wrote (a duplication)
        builder.bridge(previous, hit, inverted)
        builder.hit(hit)
        previous = hit
        if builder.cursor >= _LAST:
            break
    builder.missing(_LAST)
    spike, reference_positions, is_insertion = builder.result()
    not_called = len(_NOT_ACGT.findall(spike))
    missing = SPIKE_LENGTH - builder.covered
    n_in_aligned = max(not_called - missing, 0)
    record = SpikeRecord(
        record_id=record_id,
        status=QCStatus.OK,
        sequence=spike,
        reference_positions=reference_positions,
        is_insertion=is_insertion,
        coverage=builder.covered / SPIKE_LENGTH,
        n_fraction=n_in_aligned / max(len(spike) - missing, 1),
        input_kind=_input_kind(sequence, hits),
        deleted_fraction=builder.deleted / SPIKE_LENGTH,
    )
    record.status, record.flags = _qc(record, len(spike) - not_called, thresholds)
    return record


def _qc(
    record: SpikeRecord, called: int, thresholds: QCThresholds
) -> tuple[QCStatus, tuple[str, ...]]:
    """The status and soft flags of an extracted spike with ``called`` A/C/G/T bases."""
    if called < thresholds.min_called_fraction * SPIKE_LENGTH:
        return QCStatus.NO_ALIGNMENT, ()
    flags = [
        status
        for status, applies in (
            (QCStatus.SPIKE_INCOMPLETE, record.coverage < thresholds.min_coverage),
            (QCStatus.MANY_N, record.n_fraction > thresholds.max_n_fraction),
            (QCStatus.LARGE_DELETION, record.deleted_fraction > thresholds.max_deleted_fraction),
        )
        if applies
    ]
    return (flags[0] if flags else QCStatus.OK), tuple(flag.value for flag in flags)
