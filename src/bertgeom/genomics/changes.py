"""The changes a spike carries against Wuhan-Hu-1: amino-acid substitutions, deletions and
insertions, one name per event, read off the alignment map of a :class:`SpikeRecord`.

Names: ``L452R`` (a codon whose three bases are called, that translates to another amino acid;
synonymous changes are not changes here), ``del21765-21770`` (a run of deleted reference
positions, named by nucleotides as in ``spike_mutation_profiles.tsv``, so that one deletion is one
event however it cuts codons) and ``ins22204:GAGCCAGAA`` (bases inserted after a reference
position). A codon with an ``N`` or a partial deletion says nothing about its amino acid and is
skipped: missing data is not a change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache

import numpy as np
from numpy.typing import NDArray

from bertgeom.genomics.mutations import EditedSpike, Mutation, apply_mutations, mutation_profiles
from bertgeom.genomics.reference import SPIKE_LENGTH, SPIKE_START, reference_spike
from bertgeom.genomics.spike import QCStatus, SpikeRecord, extract_spike

_BASES = "TCAG"
_AMINO_ACIDS = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
GENETIC_CODE: dict[str, str] = {
    first + second + third: _AMINO_ACIDS[16 * i + 4 * j + k]
    for i, first in enumerate(_BASES)
    for j, second in enumerate(_BASES)
    for k, third in enumerate(_BASES)
}
"""The standard genetic code (``*`` is a stop codon)."""

_DELETED = ord("-")
_MISSING = ord("N")
_READ = np.frombuffer(b"ACGT-", dtype=np.uint8)


@cache
def _reference_bytes() -> NDArray[np.uint8]:
    return np.frombuffer(reference_spike().encode(), dtype=np.uint8)


def aligned_bases(spike: SpikeRecord) -> NDArray[np.uint8]:
    """``(3822,)`` bytes: the spike's base at each spike reference position, ``-`` where the
    position is deleted, ``N`` where it is not called (insertions are left out)."""
    bases = np.full(SPIKE_LENGTH, _DELETED, dtype=np.uint8)
    keep = ~spike.is_insertion
    offsets = spike.reference_positions[keep] - SPIKE_START
    inside = (offsets >= 0) & (offsets < SPIKE_LENGTH)
    sequence = np.frombuffer(spike.sequence.encode(), dtype=np.uint8)[keep]
    bases[offsets[inside]] = sequence[inside]
    return bases


def spike_changes(spike: SpikeRecord) -> tuple[str, ...]:
    """The spike's changes against the reference, in reference order (module docstring)."""
    if not spike.usable or not spike.sequence:
        return ()
    reference = _reference_bytes()
    bases = aligned_bases(spike)
    events: list[tuple[int, str]] = []
    deleted = bases == _DELETED
    if deleted.any():
        edges = np.flatnonzero(np.diff(np.concatenate([[0], deleted.astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            first, last = SPIKE_START + int(start), SPIKE_START + int(stop) - 1
            events.append((first, f"del{first}-{last}"))
    codons = bases.reshape(-1, 3)
    differing = np.flatnonzero((codons != reference.reshape(-1, 3)).any(axis=1))
    for codon in differing:
        triplet = codons[codon]
        if (triplet == _DELETED).any() or (triplet == _MISSING).any():
            continue
        query = GENETIC_CODE.get(triplet.tobytes().decode())
        original = GENETIC_CODE[reference[3 * codon : 3 * codon + 3].tobytes().decode()]
        if query is not None and query != original:
            events.append((SPIKE_START + 3 * int(codon), f"{original}{codon + 1}{query}"))
    if spike.is_insertion.any():
        inserted = np.flatnonzero(spike.is_insertion)
        runs = np.split(inserted, np.flatnonzero(np.diff(inserted) > 1) + 1)
        for run in runs:
            after = int(spike.reference_positions[run[0]])
            events.append((after, f"ins{after}:{spike.sequence[run[0] : run[-1] + 1]}"))
    return tuple(name for _, name in sorted(events))


def edited_spike_changes(edited: EditedSpike) -> tuple[str, ...]:
    """The changes of a spike made by editing the reference (synthetic spikes, definitions)."""
    record = SpikeRecord(
        "edited",
        QCStatus.OK,
        edited.sequence,
        edited.reference_positions,
        edited.is_insertion,
    )
    return spike_changes(record)


def definition_changes(label: str) -> tuple[str, ...]:
    """The changes of a class's public definition (``source == definition`` in the profiles;
    empty for classes profiled from real data)."""
    profiles = mutation_profiles()
    rows = profiles[(profiles["class"] == label) & (profiles["source"] == "definition")]
    mutations = [Mutation.parse(name) for name in rows["mutation"]]
    return edited_spike_changes(apply_mutations(mutations)) if mutations else ()


def sequence_changes(sequences: Sequence[str]) -> list[tuple[str, ...]]:
    """The changes of each sequence (a genome or a spike), aligned as any input is."""
    return [spike_changes(extract_spike("sequence", sequence)) for sequence in sequences]


_AMINO_ACID_CHANGE = re.compile(r"^[A-Z*](\d+)[A-Z*]$")
_DELETION_CHANGE = re.compile(r"^del(\d+)-(\d+)$")
_INSERTION_CHANGE = re.compile(r"^ins(\d+):")


def change_span(name: str) -> tuple[int, int]:
    """The reference positions ``(first, last)`` (1-based, inclusive) a change's name reads:
    its codon (``L452R``), its deleted run (``del21765-21770``) or the two positions around an
    insertion (``ins22204:GAG``)."""
    if match := _AMINO_ACID_CHANGE.match(name):
        first = SPIKE_START + 3 * (int(match[1]) - 1)
        return first, first + 2
    if match := _DELETION_CHANGE.match(name):
        return int(match[1]), int(match[2])
    if match := _INSERTION_CHANGE.match(name):
        return int(match[1]), int(match[1]) + 1
    raise ValueError(f"not a change name: {name!r}")


def unread_changes(spike: SpikeRecord, names: Iterable[str]) -> frozenset[str]:
    """Those of ``names`` the spike cannot tell present or absent: some position of the change's
    span (:func:`change_span`) is not called (``N``, or outside what the input covers). A
    deleted position is read (a deletion there says the change is absent, or is the change)."""
    if not spike.usable or not spike.sequence:
        return frozenset(names)
    missing = aligned_bases(spike) == _MISSING
    unread = set()
    for name in names:
        first, last = change_span(name)
        window = missing[max(first - SPIKE_START, 0) : max(last - SPIKE_START + 1, 0)]
        if window.size == 0 or window.any():
            unread.add(name)
    return frozenset(unread)


_WRITTEN_SUBSTITUTION = re.compile(r"^([A-Z])(\d+)([A-Z])$")
_CODON_DELETION = re.compile(r"^del(\d+)(?:-(\d+))?$")


def amino_acid_mutations(name: str) -> list[Mutation]:
    """Nucleotide mutations that make the spike change ``name`` on the reference: ``E484K``
    (the codon of the new amino acid nearest the reference codon, fewest bases changed, then
    the first in ``TCAG`` order) or ``del69-70`` / ``del144`` (whole codons, 1-based)."""
    reference = reference_spike()
    if match := _CODON_DELETION.match(name):
        first, last = int(match[1]), int(match[2] or match[1])
        start, end = SPIKE_START + 3 * (first - 1), SPIKE_START + 3 * last - 1
        return [Mutation(f"del{start}-{end}", "del", start, end)]
    match = _WRITTEN_SUBSTITUTION.match(name)
    if not match:
        raise ValueError(f"not an amino-acid change: {name!r}")
    codon = int(match[2])
    original = reference[3 * (codon - 1) : 3 * codon]
    if GENETIC_CODE[original] != match[1]:
        raise ValueError(f"{name}: the reference has {GENETIC_CODE[original]} at codon {codon}")
    candidates = [c for c, amino in GENETIC_CODE.items() if amino == match[3]]
    best = min(candidates, key=lambda c: sum(a != b for a, b in zip(c, original, strict=True)))
    mutations = []
    for index, (old, new) in enumerate(zip(original, best, strict=True)):
        if old != new:
            position = SPIKE_START + 3 * (codon - 1) + index
            mutations.append(Mutation(f"{old}{position}{new}", "sub", position, position, new))
    return mutations
