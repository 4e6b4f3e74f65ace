"""Which class a spike's defining changes tell: a placement of the spike alone among the classes.

The clade tree (:mod:`bertgeom.genomics.clades`) lists only a few sites per clade in S, so a
spike alone rarely clears its margin (Delta's 21J lists none in S, Alpha's 20I one, shared with
Beta). A class's spike is better told by its **defining changes**: those carried by at least
80 % of the class's training spikes (:func:`defining_changes`; Alpha: the 69-70 and 144
deletions, N501Y, A570D, D614G, P681H, T716I, S982A, D1118H). Over the union ``D`` of every
class's defining changes that the spike reads (:func:`bertgeom.genomics.changes.unread_changes`),

    distance(c) = #{d in D read : carried(d) != (d in defining(c))}

a parsimony count on a star tree of the classes, as the clade tree counts sites. The spike's
class is **told** when one class is nearest and every other is at least ``margin`` (2) further:
one sequencing error or one convergent change must not decide. Pre-VOC defines nothing (D614G
is in 56 % of its spikes), so a spike is told pre-VOC when it carries none of the others'
defining changes, with room to spare. A spike whose reads hold too few defining changes (a
short fragment away from the markers) tells nothing, and its call rests on the BERT's
probability and the change check.

A lineage outside the eight (Epsilon) carries no class's defining changes beyond D614G and
L452R and would be told pre-VOC here, which is why the clade tree (which lists 21B-21F) is
asked first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFINING_FREQUENCY = 0.8
"""A change defines a class when at least this share of its training spikes carry it (below 0.9:
synthetic spikes drop each core change with probability 0.1)."""
DEFINING_MARGIN = 2


@dataclass(frozen=True)
class DefiningCall:
    """The class a spike's defining changes tell (``label``, ``""`` when they do not), the
    ``nearest`` class(es), their ``distance`` and how many defining changes were ``read``."""

    label: str
    nearest: tuple[str, ...]
    distance: int
    read: int


def defining_changes(
    changes: Sequence[Sequence[str]],
    labels: Sequence[str],
    min_frequency: float = DEFINING_FREQUENCY,
) -> dict[str, frozenset[str]]:
    """Per class of ``labels``, the changes carried by at least ``min_frequency`` of its
    spikes (each spike's ``changes`` counted once)."""
    counts: dict[str, Counter[str]] = {}
    sizes: Counter[str] = Counter(labels)
    for carried, label in zip(changes, labels, strict=True):
        counts.setdefault(label, Counter()).update(set(carried))
    return {
        label: frozenset(c for c, k in counts[label].items() if k >= min_frequency * sizes[label])
        for label in counts
    }


def defining_call(
    carried: Sequence[str],
    unread: frozenset[str],
    defining: Mapping[str, frozenset[str]],
    margin: int = DEFINING_MARGIN,
) -> DefiningCall:
    """Place a spike that carries ``carried`` and cannot read ``unread`` among the classes of
    ``defining`` (module docstring)."""
    if not defining:
        return DefiningCall("", (), 0, 0)
    union = frozenset().union(*defining.values())
    read = union - unread
    present = read & frozenset(carried)
    distance = {label: len(present ^ (own & read)) for label, own in defining.items()}
    nearest = min(distance.values())
    best = tuple(label for label, d in distance.items() if d == nearest)
    runner_up = min((d for label, d in distance.items() if label not in best), default=None)
    told = len(best) == 1 and (runner_up is None or runner_up >= nearest + margin)
    return DefiningCall(best[0] if told else "", best, nearest, len(read))
