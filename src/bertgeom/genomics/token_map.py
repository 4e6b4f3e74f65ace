"""Place the k-mer tokens of a spike on reference coordinates and say which mutations each input
carries (DESIGN 3.5; definitions in ``docs/spike.md``).

A base's reference position comes from its record's alignment (``SpikeRecord``): 1-based, an
inserted base carrying the position it follows, ``NO_POSITION`` (0) for a base with none (the
``n`` padding of the tokenizer, or a stretch where the analysed sequence and the aligned one
disagree). Token ``t`` is the k-mer starting at base ``t * stride``; its reference span
``[lo, hi]`` is the positions of its first and last base that has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from bertgeom.genomics.kmers import padded_length, token_starts
from bertgeom.genomics.mutations import Mutation, mutation_profiles
from bertgeom.genomics.reference import SPIKE_END, SPIKE_START, reference_spike
from bertgeom.genomics.synthetic import GeneratorSettings

if TYPE_CHECKING:
    from bertgeom.genomics.spike import SpikeRecord

NO_POSITION = 0
"""Span value of a token (or position of a base) with no reference position."""
_CALLED = np.frombuffer(b"ACGT", dtype=np.uint8)
_N = ord("N")


def _bytes(sequence: str) -> NDArray[np.uint8]:
    return np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)


def base_positions(sequence: str, record: SpikeRecord | None) -> NDArray[np.int32]:
    """Reference position of every base of ``sequence`` (the tokenised spike) from ``record``
    (its alignment; None or a failed one: all ``NO_POSITION``).

    When the record's sequence differs from ``sequence`` (the aligner wrote ``N`` where it found
    no alignment), the map is used as is if both have the same length and differ only at the
    record's ``N``; otherwise only their common prefix and suffix are placed.
    """
    positions = np.zeros(len(sequence), dtype=np.int32)
    if record is None or not record.usable or not record.sequence:
        return positions
    mapped = record.reference_positions.astype(np.int32)
    if record.sequence == sequence:
        return mapped.copy()
    ours, theirs = _bytes(sequence.upper()), _bytes(record.sequence)
    if len(ours) == len(theirs) and bool(np.all((ours == theirs) | (theirs == _N))):
        return mapped.copy()
    shortest = min(len(ours), len(theirs))
    prefix = _agreeing(ours[:shortest], theirs[:shortest])
    suffix = min(_agreeing(ours[::-1][:shortest], theirs[::-1][:shortest]), shortest - prefix)
    positions[:prefix] = mapped[:prefix]
    if suffix:
        positions[len(ours) - suffix :] = mapped[len(theirs) - suffix :]
    return positions


def _agreeing(first: NDArray[np.uint8], second: NDArray[np.uint8]) -> int:
    """Length of the common prefix of two equally long byte arrays."""
    differ = np.flatnonzero(first != second)
    return int(differ[0]) if differ.size else len(first)


def token_spans(
    positions: NDArray[np.int32], k: int, stride: int, max_tokens: int | None = None
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """``(lo, hi)``, each ``(n_tokens,)``: the reference positions of the first and last base of
    each token that has one (``NO_POSITION`` for a token with none), for the first
    ``max_tokens`` tokens. ``positions`` is ``base_positions``: the sequence is right-padded
    with bases without a position to a multiple of ``k``, as the tokenizer does."""
    starts = token_starts(len(positions), k, stride)[:max_tokens]
    padded = np.zeros(padded_length(len(positions), k), dtype=np.int32)
    padded[: len(positions)] = positions
    windows = padded[starts[:, None] + np.arange(k)[None, :]]
    placed = windows != NO_POSITION
    lo = np.where(placed, windows, np.iinfo(np.int32).max).min(axis=1)
    hi = windows.max(axis=1)
    lo = np.where(placed.any(axis=1), lo, NO_POSITION)
    return lo.astype(np.int32), hi.astype(np.int32)


def changed_tokens(
    sequence: str, positions: NDArray[np.int32], k: int, stride: int, max_tokens: int | None = None
) -> NDArray[np.bool_]:
    """Which tokens differ from the reference spike at their place: a token changes when one
    of its bases is a called base (A, C, G, T) unlike the reference base it is aligned to, an
    inserted base (the same reference position as the base before it), or a base next to a
    deletion (the next aligned base skips reference positions). ``positions`` is
    ``base_positions``; N and unplaced bases change nothing."""
    bases = _bytes(sequence.upper())
    reference = _reference_bytes()
    placed = positions != NO_POSITION
    offset = np.clip(positions - SPIKE_START, 0, len(reference) - 1)
    called = np.isin(bases, _CALLED)
    changed = placed & called & (bases != reference[offset])
    if len(positions) > 1:
        both = placed[1:] & placed[:-1]
        step = np.diff(positions)
        changed[1:] |= both & (step == 0)  # inserted base
        gap = both & (step > 1)  # deletion between base i and base i + 1
        changed[:-1] |= gap
        changed[1:] |= gap
    starts = token_starts(len(positions), k, stride)[:max_tokens]
    padded = np.zeros(padded_length(len(positions), k), dtype=bool)
    padded[: len(changed)] = changed
    return padded[starts[:, None] + np.arange(k)[None, :]].any(axis=1)


@cache
def _reference_bytes() -> NDArray[np.uint8]:
    return _bytes(reference_spike())


@dataclass(frozen=True)
class MutationTable:
    """Mutations as arrays for vectorised tests: ``kind`` 0 sub, 1 del, 2 ins; ``alt`` the
    substituted base (ASCII; 0 for indels)."""

    mutations: tuple[Mutation, ...]
    kind: NDArray[np.int64]
    start: NDArray[np.int64]
    end: NDArray[np.int64]
    alt: NDArray[np.uint8]

    @classmethod
    def of(cls, mutations: Sequence[Mutation]) -> MutationTable:
        kinds = {"sub": 0, "del": 1, "ins": 2}
        return cls(
            tuple(mutations),
            np.array([kinds[m.kind] for m in mutations], dtype=np.int64),
            np.array([m.start for m in mutations], dtype=np.int64),
            np.array([m.end for m in mutations], dtype=np.int64),
            np.array([ord(m.alt) if m.kind == "sub" else 0 for m in mutations], dtype=np.uint8),
        )


def mutation_states(
    record: SpikeRecord | None, table: MutationTable
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """``(carries, observed)``, each ``(n_mutations,)``, for one input's alignment.

    Carries: sub, the base aligned to ``start`` is ``alt``; del, no base aligns to
    ``start..end`` and both lie inside the aligned range; ins, inserted bases follow ``start``.
    Observed: carried, or the input has called bases (A/C/G/T) at all of ``start..end`` (sub,
    del) or at ``start`` (ins); an input that neither carries nor observes a mutation (an ``N``
    run there) is left out of its background.
    """
    count = len(table.mutations)
    if record is None or not record.usable or not record.sequence:
        return np.zeros(count, dtype=bool), np.zeros(count, dtype=bool)
    bases = _bytes(record.sequence)
    aligned = ~record.is_insertion
    offsets = record.reference_positions[aligned].astype(np.int64) - (SPIKE_START - 1)
    width = SPIKE_END - SPIKE_START + 3  # 1-based offsets, one spare at each end
    base_at = np.zeros(width, dtype=np.uint8)
    base_at[offsets] = bases[aligned]
    present_sum = np.concatenate([[0], np.cumsum(base_at != 0)])
    called_sum = np.concatenate([[0], np.cumsum(np.isin(base_at, _CALLED))])
    inserted = np.zeros(width, dtype=bool)
    inserted[record.reference_positions[~aligned].astype(np.int64) - (SPIKE_START - 1)] = True
    start = np.clip(table.start - (SPIKE_START - 1), 0, width - 1)
    end = np.clip(table.end - (SPIKE_START - 1), 0, width - 1)
    present = present_sum[end + 1] - present_sum[start]
    called = called_sum[end + 1] - called_sum[start]
    first, last = offsets.min(), offsets.max()
    carries = np.where(
        table.kind == 0,
        base_at[start] == table.alt,
        np.where(table.kind == 1, (present == 0) & (first < start) & (end < last), inserted[start]),
    )
    observed = carries | (called == end - start + 1)
    return carries.astype(bool), observed.astype(bool)


@dataclass(frozen=True)
class SpikeLayout:
    """Where the tokens of a batch sit on the spike, aligned with the model input.

    ``span_lo``, ``span_hi``: ``(batch, seq)`` int32 reference span of each position
    (``NO_POSITION`` for ``[CLS]``, ``[SEP]``, padding and tokens without a position);
    ``carries``, ``observed``: ``(batch, mutation)`` bool (``mutation_states``) for
    ``mutations``; ``changed``: ``(batch, seq)`` bool, the tokens that differ from the
    reference (``changed_tokens``).
    """

    span_lo: Tensor
    span_hi: Tensor
    carries: Tensor
    observed: Tensor
    mutations: tuple[Mutation, ...]
    changed: Tensor | None = None


def spike_layout(
    sequences: Sequence[str],
    records: Sequence[SpikeRecord | None],
    lengths: Sequence[int],
    k: int,
    stride: int,
    mutations: Sequence[Mutation],
) -> SpikeLayout:
    """The layout of a batch: ``sequences`` as tokenised, ``records`` their alignments,
    ``lengths`` the tokens of each model input (``[CLS]`` and ``[SEP]`` included; the batch is
    ``max(lengths)`` long). Content token ``t`` is at model position ``t + 1``."""
    batch, seq = len(sequences), max(lengths)
    span_lo = np.zeros((batch, seq), dtype=np.int32)
    span_hi = np.zeros((batch, seq), dtype=np.int32)
    table = _mutation_table(tuple(mutations))
    carries = np.zeros((batch, len(mutations)), dtype=bool)
    observed = np.zeros((batch, len(mutations)), dtype=bool)
    changed = np.zeros((batch, seq), dtype=bool)
    for row, (sequence, record, length) in enumerate(zip(sequences, records, lengths, strict=True)):
        content = length - 2
        positions = base_positions(sequence, record)
        lo, hi = token_spans(positions, k, stride, content)
        if len(lo) != content:
            raise ValueError(
                f"input {row}: {content} content tokens in the model input but {len(lo)} k-mers"
            )
        span_lo[row, 1 : 1 + content], span_hi[row, 1 : 1 + content] = lo, hi
        changed[row, 1 : 1 + content] = changed_tokens(sequence, positions, k, stride, content)
        carries[row], observed[row] = mutation_states(record, table)
    return SpikeLayout(
        torch.from_numpy(span_lo),
        torch.from_numpy(span_hi),
        torch.from_numpy(carries),
        torch.from_numpy(observed),
        table.mutations,
        torch.from_numpy(changed),
    )


@cache
def _mutation_table(mutations: tuple[Mutation, ...]) -> MutationTable:
    return MutationTable.of(mutations)


@cache
def defining_mutations() -> dict[str, tuple[Mutation, ...]]:
    """Each class's defining mutations: those of ``spike_mutation_profiles.tsv`` with frequency
    at least the synthetic generator's ``core_frequency`` (0.9), by reference position."""
    profiles = mutation_profiles()
    core = profiles[profiles["frequency"] >= GeneratorSettings().core_frequency]
    return {
        str(label): tuple(sorted(map(Mutation.parse, set(group["mutation"])), key=_order))
        for label, group in core.groupby("class", sort=False)
    }


@cache
def layout_mutations() -> tuple[Mutation, ...]:
    """Every class's defining mutations, once each, by reference position: the mutations of
    the ``SpikeLayout`` that the analysis builds."""
    union = {m.name: m for group in defining_mutations().values() for m in group}
    return tuple(sorted(union.values(), key=_order))


def _order(mutation: Mutation) -> tuple[int, str]:
    return mutation.start, mutation.name


@cache
def mutation_effects() -> dict[str, str]:
    """Amino-acid effect of each profiled mutation (``S:N501Y``; empty when not given)."""
    profiles = mutation_profiles()
    return dict(zip(profiles["mutation"], profiles["aa_effect"].astype(str), strict=True))
