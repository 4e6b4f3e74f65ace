"""The folds of leave-lineage-out (``bertgeom.model.lineages``): which lineages each fold holds
out, the embedded genomes each group holds, and the training rows of a fold, none of them a
held-out genome's spike and its synthetic spikes drawn from its own training spikes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from bertgeom.genomics.changes import amino_acid_mutations
from bertgeom.genomics.clades import OUTSIDE_CLASSES, CladeTree
from bertgeom.genomics.dataset import embedded_aligned, split_dataset, synthetic_spikes
from bertgeom.genomics.mutations import CLASSES, apply_mutations, mutation_profiles
from bertgeom.genomics.profiles import lineage_backgrounds, profiles_from_spikes
from bertgeom.genomics.reference import data_path
from bertgeom.genomics.spike import SpikeRecord
from bertgeom.model.predict import UNASSIGNED


@dataclass(frozen=True)
class LineageGroup:
    """Held-out subtrees: each root clade and its descendants of the root's class."""

    name: str
    roots: tuple[str, ...]

    def holds(self, clade: str, tree: CladeTree) -> bool:
        """Whether a genome of ``clade`` belongs to this group."""
        return any(
            tree.descends_from(clade, root) and tree.class_of(clade) == tree.class_of(root)
            for root in self.roots
        )


@dataclass(frozen=True)
class Fold:
    """Groups held out together (one model is trained without all of them)."""

    name: str
    groups: tuple[LineageGroup, ...]


DEFAULT_FOLDS: tuple[Fold, ...] = (
    Fold(
        "fold 1",
        (
            LineageGroup("pre-VOC 19B", ("19B",)),
            LineageGroup("Alpha 20I", ("20I",)),
            LineageGroup("Delta 21I", ("21I",)),
            LineageGroup(
                "Omicron 21K, 22* (BA.1, BA.2.x, BA.4/5, BQ.1, XBB)",
                ("21K", "22A", "22B", "22C", "22D", "22E", "22F"),
            ),
        ),
    ),
    Fold(
        "fold 2",
        (
            LineageGroup("pre-VOC 20B (20D)", ("20B",)),
            LineageGroup("Beta 20H", ("20H",)),
            LineageGroup("Delta 21J", ("21J",)),
            LineageGroup("Omicron 23I (24*-26*, JN.1 and after)", ("23I",)),
        ),
    ),
    Fold(
        "fold 3",
        (
            LineageGroup("pre-VOC 20C (20G)", ("20C",)),
            LineageGroup("Gamma 20J", ("20J",)),
        ),
    ),
)
"""The embedded data's folds: every class held out, pre-VOC in three groups, Delta and Omicron
in two (holding out 21A or 21L would leave their class almost nothing)."""

NEVER_TRAINED: tuple[LineageGroup, ...] = (
    LineageGroup("outside: 21C (Epsilon)", ("21C",)),
    LineageGroup("Omicron 25I (BA.3.2, labels disputed)", ("25I",)),
)
"""Groups no fold trains on; called by every fold's models."""


@dataclass(frozen=True)
class EmbeddedGenome:
    """One embedded genome: its label, computed Nextstrain clade and aligned spike."""

    record_id: str
    label: str
    clade: str
    spike: SpikeRecord


def embedded_genomes() -> list[EmbeddedGenome]:
    """Every embedded genome with its ``labels.tsv`` label and clade, aligned once."""
    return [
        EmbeddedGenome(record.record_id, str(row.label), str(row.nextstrain_clade_computed), spike)
        for record, row, spike in embedded_aligned()
    ]


def expected_call(group: LineageGroup, tree: CladeTree) -> str:
    """What a held-out genome of ``group`` should be called: its class, or ``unassigned``."""
    label = tree.class_of(group.roots[0])
    return UNASSIGNED if label in (OUTSIDE_CLASSES, "") else label


def group_members(
    genomes: Sequence[EmbeddedGenome], group: LineageGroup, tree: CladeTree, agreeing: bool
) -> list[EmbeddedGenome]:
    """The group's genomes; with ``agreeing``, only those whose label agrees with their clade
    (a ``disputed`` genome of a class's clade was never a training genome of that class)."""
    expected = expected_call(group, tree)
    return [
        genome
        for genome in genomes
        if group.holds(genome.clade, tree) and (not agreeing or genome.label == expected)
    ]


def fold_profiles(train: Sequence[EmbeddedGenome], held_out_classes: set[str]) -> pd.DataFrame:
    """Mutation profiles of the fold's training spikes; classes without training genomes get
    a definition (embedded Lambda/Mu definitions; others: their >= 90 % mutations)."""
    embedded = mutation_profiles()
    definitions = embedded[embedded["source"] == "definition"]
    core = embedded[
        embedded["class"].isin(held_out_classes)
        & (embedded["source"] == "real")
        & (embedded["frequency"] >= 0.9)
    ].assign(source="definition")
    return profiles_from_spikes(
        [genome.spike for genome in train],
        [genome.label for genome in train],
        definitions=pd.concat([definitions, core], ignore_index=True),
    )


def fold_dataset(
    genomes: Sequence[EmbeddedGenome],
    fold: Fold,
    tree: CladeTree,
    seed: int,
    synthetic_per_split: tuple[int, int] = (250, 40),
) -> pd.DataFrame:
    """The fold's training and validation rows (real and synthetic), none of a held-out group."""
    held_out = [any(group.holds(g.clade, tree) for group in fold.groups) for g in genomes]
    held_out_spikes = {g.spike.sequence for g, out in zip(genomes, held_out, strict=True) if out}
    train = [
        g
        for g, out in zip(genomes, held_out, strict=True)
        if not out
        and g.label in CLASSES
        and g.spike.usable
        and g.spike.sequence not in held_out_spikes
    ]
    trained_classes = {g.label for g in train}
    missing = {label for label in CLASSES if label not in trained_classes}
    profiles = fold_profiles(train, missing)
    backgrounds = lineage_backgrounds([g.spike for g in train], [g.label for g in train])
    synthetic = synthetic_spikes(
        (*synthetic_per_split, 0), seed, profiles=profiles, backgrounds=backgrounds
    )
    real = pd.DataFrame(
        {
            "record_id": [g.record_id for g in train],
            "label": [g.label for g in train],
            "status": [g.spike.status.value for g in train],
            "sequence": [g.spike.sequence for g in train],
        }
    )
    dataset, _ = split_dataset(real, synthetic, (0.8, 0.15, 0.05), seed)
    # A fold's test set is its held-out lineages: the few rows split off as test train too.
    dataset.loc[dataset["split"] == "test", "split"] = "train"
    return dataset


OUTSIDE_DEFINITIONS = "outside: 9 defined lineages"
"""The group name of :func:`outside_definition_spikes` in leave-lineage-out tables."""


def outside_definition_spikes() -> list[tuple[str, str]]:
    """``(lineage, spike sequence)`` of each lineage of ``outside_lineages.tsv``: the
    reference spike with the lineage's published spike changes, none of the eight classes
    (Iota, Eta, Kappa, Theta and Epsilon, which the clade tree lists, and B.1.620, B.1.1.318,
    A.23.1 and C.36.3, which it does not)."""
    table = pd.read_csv(data_path("outside_lineages.tsv"), sep="\t", dtype=str)
    spikes = []
    for row in table.itertuples(index=False):
        mutations = [
            m for name in str(row.spike_changes).split() for m in amino_acid_mutations(name)
        ]
        spikes.append((f"{row.lineage} ({row.name})", apply_mutations(mutations).sequence))
    return spikes
