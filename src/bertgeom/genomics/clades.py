"""Placement of a genome (or a spike) on the Nextstrain clade tree, from clade-defining sites.

``nextstrain_clades.tsv`` gives each clade its parent and the nucleotide sites that define its
branch. A clade's **profile** is the alleles of its whole path from the root, a descendant's
site overriding its ancestor's at the same position; its **expected genome** at every listed
site is its profile's allele, else the reference's. A sequence is compared with every expected
genome over the sites it *reads* (an ``N``, an uncovered position or, for a spike-only input,
any site outside S neither counts for nor against):

    distance(c) = #{read sites s : base(s) != expected_c(s)}

and placed on the clade(s) at the smallest distance: a parsimony count, so that one sequencing
error or reversion at a deep clade's site does not drop the sequence to an ancestor, and a
branch site whose allele is the reference's (22B lists 9866C and 27259A, which every 21L genome
carries) tells a child from its parent only where the parent differs. Where several clades tie
(a child whose own sites are all unread ties with its parent), the placement is their lowest
common ancestor.

The placement **tells the class** only when every clade of another class is at least
``margin`` (2) sites further away than the nearest clade: one error or one convergent
mutation must not decide. A whole genome reads hundreds of sites and clears it easily; a spike
alone reads only S's sites, where Gamma (20J lists none) sits one site from Beta (its spike
shares E484K and N501Y with 20H's three), so its class is left open.

The **class** of a clade follows the case study's definition (shared data README): 19A-20G
pre-VOC, 20I Alpha, 20H Beta, 20J Gamma, 21A (and so 21I, 21J) Delta, 21G Lambda, 21H Mu, 21M
(and so 21K, 21L, 22*-26*, 25I) Omicron, 21B-21F outside the eight; any other clade takes its
parent's class, so a lineage newer than this file is placed on its nearest listed ancestor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bertgeom.genomics.reference import data_path, reference_genome

OUTSIDE_CLASSES = "other-VOI"
"""The class of clades outside the eight (21B-21F: Epsilon, Eta, Iota, Kappa, ...)."""

CLADE_CLASSES: dict[str, str] = {
    "19A": "pre-VOC",
    "19B": "pre-VOC",
    "20H": "Beta",
    "20I": "Alpha",
    "20J": "Gamma",
    "21A": "Delta",
    "21B": OUTSIDE_CLASSES,
    "21C": OUTSIDE_CLASSES,
    "21D": OUTSIDE_CLASSES,
    "21E": OUTSIDE_CLASSES,
    "21F": OUTSIDE_CLASSES,
    "21G": "Lambda",
    "21H": "Mu",
    "21M": "Omicron",
}
"""Clades that start a class; every other clade inherits its parent's."""

UNREAD = ord("N")


@dataclass(frozen=True)
class Placement:
    """Where a sequence sits on the tree.

    ``clade``: the nearest clade, or the lowest common ancestor of tied ones (``""`` when
    nothing is read). ``clade_class``: its class when the sites read tell it (module
    docstring), else ``""``. ``distance``: read sites that differ from the nearest
    clade's expected genome. ``matched`` / ``mismatched``: read sites of the placed clade's
    profile that agree / disagree; ``sites``: its profile's size. ``tied``: the tied clades.
    """

    clade: str
    clade_class: str
    distance: int
    matched: int
    mismatched: int
    sites: int
    tied: tuple[str, ...]

    @property
    def support(self) -> float:
        """Share of the placed clade's profile sites that are read and match."""
        return self.matched / self.sites if self.sites else 0.0


@dataclass(frozen=True)
class CladeTree:
    """Clades, parents, profiles (a ``(clade, site)`` matrix of allele bytes, 0 off-profile)
    and expected genomes (the same with the reference's allele off-profile)."""

    clades: tuple[str, ...]
    parent: Mapping[str, str | None]
    sites: NDArray[np.int64]
    profiles: NDArray[np.uint8]
    expected: NDArray[np.uint8]

    def ancestors(self, clade: str) -> list[str]:
        """``clade`` and its ancestors, root last."""
        path: list[str] = []
        current: str | None = clade
        while current is not None:
            path.append(current)
            current = self.parent.get(current)
        return path

    @cached_property
    def clade_classes(self) -> tuple[str, ...]:
        """The class of each clade of :attr:`clades`, in order (computed once)."""
        return tuple(self.class_of(clade) for clade in self.clades)

    def class_of(self, clade: str) -> str:
        """The case study's class of ``clade`` (module docstring); ``""`` if unknown."""
        return next((CLADE_CLASSES[c] for c in self.ancestors(clade) if c in CLADE_CLASSES), "")

    def descends_from(self, clade: str, ancestor: str) -> bool:
        """Whether ``clade`` is ``ancestor`` or below it."""
        return ancestor in self.ancestors(clade)

    def lowest_common_ancestor(self, clades: Sequence[str]) -> str:
        """The deepest clade above (or equal to) all of ``clades``; ``""`` if they share none."""
        common = self.ancestors(clades[0])
        for clade in clades[1:]:
            above = set(self.ancestors(clade))
            common = [c for c in common if c in above]
        return common[0] if common else ""

    def place(self, bases: NDArray[np.uint8], margin: int = 2) -> Placement:
        """Place a sequence given its bases ``(n_sites,)`` at :attr:`sites` (``N`` = unread);
        the class is told when no other class's clade is within ``margin`` of the nearest."""
        read = bases != UNREAD
        if not read.any():
            return Placement("", "", 0, 0, 0, 0, ())
        distance = ((self.expected != bases[None, :]) & read[None, :]).sum(axis=1)
        nearest = distance.min()
        best = np.flatnonzero(distance == nearest)
        tied = tuple(self.clades[i] for i in best)
        classes = {self.clade_classes[i] for i in best}
        rivals = [
            d for label, d in zip(self.clade_classes, distance, strict=True) if label not in classes
        ]
        decided = len(classes) == 1 and (not rivals or min(rivals) >= nearest + margin)
        chosen = self.lowest_common_ancestor(tied)
        row = self.clades.index(chosen) if chosen in self.clades else int(best[0])
        on_profile = read & (self.profiles[row] != 0)
        matched = int((on_profile & (self.profiles[row] == bases)).sum())
        return Placement(
            clade=chosen or "|".join(tied),
            clade_class=classes.pop() if decided else "",
            distance=int(distance[row]),
            matched=matched,
            mismatched=int(on_profile.sum()) - matched,
            sites=int((self.profiles[row] != 0).sum()),
            tied=tied,
        )


def read_clade_table(path: Path) -> CladeTree:
    """Parse a Nextstrain ``clades.tsv`` (``clade, gene, site, alt``; ``gene == clade`` rows give
    the parent) into a :class:`CladeTree` with cumulative profiles."""
    table = pd.read_csv(path, sep="\t", dtype=str).dropna(subset=["clade", "gene"])
    parent: dict[str, str | None] = {}
    own: dict[str, dict[int, str]] = {}
    for row in table.itertuples(index=False):
        clade = str(row.clade)
        parent.setdefault(clade, None)
        own.setdefault(clade, {})
        if row.gene == "clade":
            parent[clade] = str(row.site)
        elif row.gene == "nuc":
            own[clade][int(str(row.site))] = str(row.alt).upper()
    clades = tuple(own)
    sites = np.array(sorted({site for branch in own.values() for site in branch}), dtype=np.int64)
    column = {int(site): index for index, site in enumerate(sites)}
    profiles = np.zeros((len(clades), len(sites)), dtype=np.uint8)
    reference = reference_genome().encode()
    expected = np.tile(
        np.array([reference[site - 1] for site in sites], dtype=np.uint8), (len(clades), 1)
    )
    tree = CladeTree(clades, parent, sites, profiles, expected)
    for row_index, clade in enumerate(clades):
        for ancestor in reversed(tree.ancestors(clade)):  # root first: descendants override
            for site, alt in own.get(ancestor, {}).items():
                profiles[row_index, column[site]] = ord(alt)
    np.copyto(expected, profiles, where=profiles != 0)
    return tree


@cache
def clade_tree() -> CladeTree:
    """The embedded tree (``nextstrain_clades.tsv``, Nextstrain clades 19A ... 26B)."""
    return read_clade_table(data_path("nextstrain_clades.tsv"))


def bases_from_map(
    reference_to_base: Mapping[int, str] | None = None, tree: CladeTree | None = None
) -> NDArray[np.uint8]:
    """``(n_sites,)`` bytes for :meth:`CladeTree.place` from a ``{reference position: base}``
    map (positions absent from it are unread). Mostly for tests and hand-made inputs."""
    tree = tree or clade_tree()
    bases = np.full(len(tree.sites), UNREAD, dtype=np.uint8)
    for index, site in enumerate(tree.sites):
        base = (reference_to_base or {}).get(int(site))
        if base:
            bases[index] = ord(base.upper())
    return bases
