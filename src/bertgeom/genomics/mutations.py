"""Spike mutations in reference coordinates, read from ``spike_mutation_profiles.tsv``, and
applied to the reference spike with the map from each base back to the reference kept."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from itertools import pairwise

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bertgeom.genomics.reference import SPIKE_END, SPIKE_START, data_path, reference_spike

CLASSES: tuple[str, ...] = ("pre-VOC", "Alpha", "Beta", "Gamma", "Delta", "Lambda", "Mu", "Omicron")
"""The eight classes of the case study, in the order used for model outputs."""
SYNTHETIC_ONLY_CLASSES = frozenset({"Lambda", "Mu"})
"""Classes with no real sequence in the embedded data: every result on them is synthetic."""

_SUBSTITUTION = re.compile(r"^([ACGT])(\d+)([ACGT])$")
_DELETION = re.compile(r"^del(\d+)-(\d+)$")
_INSERTION = re.compile(r"^ins(\d+):([ACGT]+)$")


@dataclass(frozen=True)
class Mutation:
    """One nucleotide mutation: reference positions ``start..end`` (1-based, inclusive).

    ``kind`` is ``sub`` (``alt`` replaces one base), ``del`` (``start..end`` removed) or ``ins``
    (``alt`` inserted after ``start``; ``end == start``).
    """

    name: str
    kind: str
    start: int
    end: int
    alt: str = ""

    @classmethod
    def parse(cls, name: str) -> Mutation:
        """Parse ``A23063T``, ``del22299-22319`` or ``ins21990:TAC``."""
        if match := _SUBSTITUTION.match(name):
            return cls(name, "sub", int(match[2]), int(match[2]), match[3])
        if match := _DELETION.match(name):
            return cls(name, "del", int(match[1]), int(match[2]))
        if match := _INSERTION.match(name):
            return cls(name, "ins", int(match[1]), int(match[1]), match[2])
        raise ValueError(f"cannot parse mutation {name!r}")

    def overlaps(self, other: Mutation) -> bool:
        """Whether both touch a common reference position (they cannot be applied together)."""
        return self.start <= other.end + 1 and other.start <= self.end + 1


@cache
def mutation_profiles() -> pd.DataFrame:
    """The embedded profiles: columns ``class, source, mutation, frequency, aa_effect``."""
    table = pd.read_csv(data_path("spike_mutation_profiles.tsv"), sep="\t")
    table["aa_effect"] = table["aa_effect"].fillna("")
    return table


@dataclass(frozen=True)
class EditedSpike:
    """A spike made by editing the reference; the map has the meaning of ``SpikeRecord``'s."""

    sequence: str
    reference_positions: NDArray[np.int32]
    is_insertion: NDArray[np.bool_]


def apply_mutations(mutations: list[Mutation]) -> EditedSpike:
    """Apply non-overlapping mutations to the reference spike (overlapping ones are an error)."""
    ordered = sorted(mutations, key=lambda mutation: (mutation.start, mutation.kind))
    for before, after in pairwise(ordered):
        if before.end >= after.start and not (before.kind == "ins" or after.kind == "ins"):
            raise ValueError(f"mutations {before.name} and {after.name} overlap")
    bases = np.array(list(reference_spike()), dtype="<U1")
    positions = np.arange(SPIKE_START, SPIKE_END + 1, dtype=np.int32)
    keep = np.ones(len(bases), dtype=bool)
    inserted: dict[int, str] = {}
    for mutation in ordered:
        offset = mutation.start - SPIKE_START
        if mutation.kind == "sub":
            bases[offset] = mutation.alt
        elif mutation.kind == "del":
            keep[offset : mutation.end - SPIKE_START + 1] = False
        else:
            inserted[offset] = inserted.get(offset, "") + mutation.alt
    sequence_parts: list[str] = []
    position_parts: list[NDArray[np.int32]] = []
    insertion_parts: list[NDArray[np.bool_]] = []
    start = 0
    for offset in [*sorted(inserted), len(bases) - 1]:
        stop = offset + 1
        kept = keep[start:stop]
        sequence_parts.append("".join(bases[start:stop][kept]))
        position_parts.append(positions[start:stop][kept])
        insertion_parts.append(np.zeros(int(kept.sum()), dtype=bool))
        if offset in inserted:
            alt = inserted[offset]
            sequence_parts.append(alt)
            position_parts.append(np.full(len(alt), positions[offset], dtype=np.int32))
            insertion_parts.append(np.ones(len(alt), dtype=bool))
        start = stop
    return EditedSpike(
        "".join(sequence_parts), np.concatenate(position_parts), np.concatenate(insertion_parts)
    )
