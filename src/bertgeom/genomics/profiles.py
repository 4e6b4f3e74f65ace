"""Spike mutation profiles computed from any set of real spikes, in the format of the embedded
``spike_mutation_profiles.tsv``, so that an experiment that holds genomes out can profile only
the genomes it keeps.

A spike's nucleotide mutations against Wuhan-Hu-1 are named as in the embedded table:
``A23063T`` (a called base that differs from the reference; ``N`` or another non-ACGT base is
missing data, not a substitution), ``del22299-22319`` (a run of deleted reference positions) and
``ins21990:TAC`` (bases inserted after a reference position).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bertgeom.genomics.changes import GENETIC_CODE, aligned_bases
from bertgeom.genomics.mutations import CLASSES, Mutation, mutation_profiles
from bertgeom.genomics.reference import SPIKE_LENGTH, SPIKE_START, data_path, reference_spike
from bertgeom.genomics.spike import SpikeRecord

PROFILE_COLUMNS = ["class", "source", "n_sequences", "mutation", "count", "frequency", "aa_effect"]
"""Columns of the embedded profiles and of :func:`profiles_from_spikes`."""
PRE_VOC = "pre-VOC"

_DELETED = ord("-")
_CALLED = np.frombuffer(b"ACGT", dtype=np.uint8)


def _runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """``(first, last)`` indices (inclusive) of each run of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [
        (int(start), int(stop) - 1) for start, stop in zip(edges[::2], edges[1::2], strict=True)
    ]


def nucleotide_mutations(spike: SpikeRecord) -> tuple[str, ...]:
    """The spike's nucleotide substitutions, deletion runs and insertions against the reference,
    in reference order (an insertion after position ``p`` follows a substitution at ``p``).

    Read off :func:`~bertgeom.genomics.changes.aligned_bases`: position ``p`` is a substitution
    ``{ref}{p}{alt}`` when its base ``alt`` is one of A/C/G/T and differs from the reference,
    a maximal run ``p..q`` of ``-`` is ``del{p}-{q}``, and a maximal run of inserted bases
    ``s`` after ``p`` is ``ins{p}:{s}``. A spike with no sequence has no mutations.
    """
    if not spike.sequence:
        return ()
    reference = np.frombuffer(reference_spike().encode(), dtype=np.uint8)
    bases = aligned_bases(spike)
    events: list[tuple[int, str]] = []
    substituted = np.isin(bases, _CALLED) & (bases != reference)
    for offset in np.flatnonzero(substituted):
        position = SPIKE_START + int(offset)
        events.append((position, f"{chr(reference[offset])}{position}{chr(bases[offset])}"))
    for first, last in _runs(bases == _DELETED):
        events.append((SPIKE_START + first, f"del{SPIKE_START + first}-{SPIKE_START + last}"))
    for first, last in _runs(spike.is_insertion):
        # Inserted bases next to each other can follow different positions (around a deletion).
        positions = spike.reference_positions[first : last + 1]
        starts = [0, *(np.flatnonzero(np.diff(positions)) + 1).tolist(), len(positions)]
        for begin, end in pairwise(starts):
            after = int(positions[begin])
            events.append((after, f"ins{after}:{spike.sequence[first + begin : first + end]}"))
    return tuple(name for _, name in sorted(events))


_CALLED_INSERTION = re.compile(r"ins\d+:[ACGT]+$")

BACKGROUND_CLASS = "pre-VOC"
"""The class whose real spikes lend synthetic spikes their lineage backgrounds: the lineages
every variant arose from."""


def lineage_backgrounds(
    spikes: Sequence[SpikeRecord], labels: Sequence[str]
) -> tuple[tuple[Mutation, ...], ...]:
    """The distinct change sets (:func:`nucleotide_mutations`, parsed) of the usable
    :data:`BACKGROUND_CLASS` spikes among ``spikes``, in first-seen order: the backgrounds of
    :func:`bertgeom.genomics.synthetic.draw_mutations`; an insertion of uncalled bases (``N``)
    is missing data, not a change, and is left out. Pass training spikes only, so that no
    held-out spike's changes reach the training rows."""
    seen: dict[tuple[str, ...], None] = {}
    for spike, label in zip(spikes, labels, strict=True):
        if label == BACKGROUND_CLASS and spike.usable:
            names = nucleotide_mutations(spike)
            called = (n for n in names if not n.startswith("ins") or _CALLED_INSERTION.match(n))
            seen.setdefault(tuple(called), None)
    return tuple(tuple(Mutation.parse(name) for name in names) for names in seen)


def amino_acid_effect(name: str) -> str:
    """The effect on the spike protein of one mutation alone on the reference, as in the
    embedded table: ``S:D614G`` (synonymous ones too, ``S:N824N``), ``S:del codons 68-70``
    (the codons a deletion touches, 1-based), and ``""`` for an insertion."""
    mutation = Mutation.parse(name)
    first, last = mutation.start - SPIKE_START, mutation.end - SPIKE_START
    if mutation.kind == "ins" or not (0 <= first <= last < SPIKE_LENGTH):
        return ""
    if mutation.kind == "del":
        return f"S:del codons {first // 3 + 1}-{last // 3 + 1}"
    codon_start = first - first % 3
    codon = reference_spike()[codon_start : codon_start + 3]
    edited = codon[: first % 3] + mutation.alt + codon[first % 3 + 1 :]
    return f"S:{GENETIC_CODE[codon]}{first // 3 + 1}{GENETIC_CODE[edited]}"


def is_complete(spike: SpikeRecord) -> bool:
    """Whether every spike reference position is aligned (coverage 1.0) and the spike has only
    A/C/G/T: the spikes a profile counts."""
    return bool(spike.sequence) and spike.coverage >= 1.0 and set(spike.sequence) <= set("ACGT")


def embedded_duplicate_records() -> frozenset[str]:
    """Record ids of embedded genomes that ``labels.tsv`` marks as a re-deposit of an earlier
    record (``dup_of``: the same genome in both FASTA files); the embedded profiles count each
    genome once, so leave these out to reproduce them."""
    table = pd.read_csv(data_path("labels.tsv"), sep="\t")
    return frozenset(table.loc[table["dup_of"].notna(), "record_name"].astype(str))


def profiles_from_spikes(
    spikes: Sequence[SpikeRecord],
    labels: Sequence[str],
    min_frequency: float = 0.05,
    min_count_pre_voc: int = 3,
    definitions: pd.DataFrame | None = None,
    min_count: int = 2,
    unique_sequences: bool = False,
) -> pd.DataFrame:
    """Per-class spike mutation profiles of ``spikes`` (labelled ``labels``), with the columns,
    inclusion rules, rounding and row order of the embedded ``spike_mutation_profiles.tsv``.

    A class's ``n_sequences`` are its complete spikes (:func:`is_complete`), one per record:
    pass each genome once (the embedded table counts genomes, not distinct spike sequences:
    its pre-VOC ``n_sequences`` is 539 genomes, of 127 distinct complete spikes; see
    :func:`embedded_duplicate_records`); with ``unique_sequences`` identical spikes count once.
    ``count`` is the number of them carrying a mutation (:func:`nucleotide_mutations`) and
    ``frequency = round(count / n_sequences, 2)``. A mutation is listed when
    ``count / n_sequences >= min_frequency`` and ``count >= min_count`` (the embedded table
    never lists a mutation of one genome: it leaves out Beta's two singletons, 1/11), and for
    pre-VOC, whose genomes are many and diverse, when ``count >= min_count_pre_voc``. Rows are
    ``source = real``, classes in :data:`CLASSES` order (others after, sorted), then by
    decreasing count, then name. The ``source = definition`` rows of ``definitions`` (default:
    the embedded ones, Lambda and Mu) are appended for the classes with no complete spike.
    """
    if len(spikes) != len(labels):
        raise ValueError(f"{len(spikes)} spikes but {len(labels)} labels")
    members: dict[str, list[SpikeRecord]] = {}
    seen: set[tuple[str, str]] = set()
    for spike, label in zip(spikes, labels, strict=True):
        if not is_complete(spike) or (unique_sequences and (label, spike.sequence) in seen):
            continue
        seen.add((label, spike.sequence))
        members.setdefault(label, []).append(spike)
    order = [label for label in CLASSES if label in members]
    order += sorted(set(members) - set(CLASSES))
    rows = []
    for label in order:
        n_sequences = len(members[label])
        counts = Counter(name for spike in members[label] for name in nucleotide_mutations(spike))
        listed = [
            (name, count)
            for name, count in counts.items()
            if (
                count >= min_count_pre_voc
                if label == PRE_VOC
                else count >= min_count and count / n_sequences >= min_frequency
            )
        ]
        for name, count in sorted(listed, key=lambda item: (-item[1], item[0])):
            rows.append(
                {
                    "class": label,
                    "source": "real",
                    "n_sequences": n_sequences,
                    "mutation": name,
                    "count": count,
                    "frequency": round(count / n_sequences, 2),
                    "aa_effect": amino_acid_effect(name),
                }
            )
    table = pd.DataFrame(rows, columns=PROFILE_COLUMNS)
    if definitions is None:
        embedded = mutation_profiles()
        definitions = embedded[embedded["source"] == "definition"]
    extra = definitions.loc[~definitions["class"].isin(members), PROFILE_COLUMNS]
    if extra.empty:
        return table
    return pd.concat([table, extra], ignore_index=True)
