"""Leave-lineage-out: train without whole Nextstrain lineages, then call their genomes.

SARS-CoV-2 keeps producing lineages no training set holds, so the honest test of a classifier
and of its ``unassigned`` rule is to hold a lineage out and call it. A **group** is one or more
subtrees of the clade tree, each cut at a root clade and kept within the root's class (holding
out 20B holds out 20B and 20D, not Alpha, which also descends from 20B). A **fold** holds out
several groups of different classes at once and trains one model on everything else:

- the training genomes are the labelled genomes of the eight classes outside the fold's groups,
  and no training row carries a spike sequence of a held-out genome (identical spikes occur
  across clades);
- the synthetic spikes are drawn from mutation profiles counted on the fold's training spikes
  (:func:`bertgeom.genomics.profiles.profiles_from_spikes`), so no held-out lineage's own
  mutations reach training through them. A class with no training genome left in the fold
  (Alpha, Beta, Gamma: one clade each) is drawn from its definition, the mutations of at least
  90 % of its real spikes in the embedded profiles, as Lambda and Mu always are;
- the change check and the ``unassigned`` threshold are fitted on the fold's own split.

Then every held-out genome is called as ``bertgeom predict`` calls it (its whole genome aligned,
placed on the clade tree, the rule of :mod:`bertgeom.model.predict`), by the fold's BERT and by
the k-mer logistic regression trained on the same rows. Genomes that no fold trains on (21C,
outside the eight; 25I, BA.3.2, an Omicron lineage the labels dispute) are called in every fold.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd

from bertgeom.atomic import atomic_file
from bertgeom.genomics.clades import OUTSIDE_CLASSES, CladeTree, clade_tree
from bertgeom.genomics.dataset import embedded_aligned, split_dataset, synthetic_spikes
from bertgeom.genomics.mutations import CLASSES, mutation_profiles
from bertgeom.genomics.profiles import profiles_from_spikes
from bertgeom.genomics.spike import SpikeRecord
from bertgeom.model.baseline import fit_baseline
from bertgeom.model.evaluate import predict_probabilities
from bertgeom.model.predict import UNASSIGNED, Calls, checked_calls, spike_evidence
from bertgeom.model.storage import load_classifier
from bertgeom.model.train import ProgressCallback, TrainingOptions, train_classifier

REASONS = ("clade_outside_classes", "clade_disagrees", "low_probability", "unexpected_changes")
RULES = ("clade tree", "changes only")
"""The ``unassigned`` rule of each row: ``predict``'s (the clade tree first), or the probability
and change check alone (the rule before the tree, kept to show what the tree changes)."""


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
    synthetic = synthetic_spikes((*synthetic_per_split, 0), seed, profiles=profiles)
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


def _outcomes(calls: Calls, expected: str) -> dict[str, int]:
    counts = {"called_expected": 0, "called_other": 0, "argmax_expected": 0}
    counts.update({f"unassigned_{reason}": 0 for reason in REASONS})
    for argmax, called, reason in zip(calls.argmax, calls.called, calls.reasons, strict=True):
        counts["argmax_expected"] += int(argmax == expected)
        if called == expected:
            counts["called_expected"] += 1
        elif called == UNASSIGNED:
            counts[f"unassigned_{reason}"] += 1
        else:
            counts["called_other"] += 1
    return counts


def leave_lineage_out(
    options: TrainingOptions,
    folds: Sequence[Fold] = DEFAULT_FOLDS,
    never_trained: Sequence[LineageGroup] = NEVER_TRAINED,
    synthetic_per_split: tuple[int, int] = (250, 40),
    progress: ProgressCallback | None = None,
    announce: Callable[[str], None] | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """One row per (fold, group, model, rule): ``n``, ``expected``, how many were called the
    expected class, withheld for each reason, called another class, and right on the arg-max
    alone.

    With ``workers > 1`` the folds train at once in that many worker processes, sharing the
    cores' torch threads (at least one each): a model this small gains little from a second
    thread (the ``tiny`` preset trains 1.3x faster on two threads than on one), so two folds on
    one thread each finish sooner than two in turn on two. ``progress`` then counts finished
    folds. Each fold is seeded, so the table does not depend on ``workers`` beyond
    floating-point summation order.
    """
    tree = clade_tree()
    if announce:
        announce("aligning the embedded genomes")
    genomes = embedded_genomes()
    jobs = [_FoldJob(fold, never_trained, synthetic_per_split, options) for fold in folds]
    if workers <= 1 or len(jobs) <= 1:
        rows = []
        for job in jobs:
            if announce:
                announce(job.title())
            rows.extend(job.run(genomes, tree, progress))
        return pd.DataFrame(rows)
    return pd.DataFrame(_run_in_workers(jobs, genomes, workers, progress, announce))


@dataclass(frozen=True)
class _FoldJob:
    """One fold's work: train its BERT and baseline, call its groups and ``never_trained``."""

    fold: Fold
    never_trained: Sequence[LineageGroup]
    synthetic_per_split: tuple[int, int]
    options: TrainingOptions

    def title(self) -> str:
        return f"{self.fold.name}: training without " + "; ".join(g.name for g in self.fold.groups)

    def run(
        self,
        genomes: Sequence[EmbeddedGenome],
        tree: CladeTree,
        progress: ProgressCallback | None = None,
    ) -> list[dict[str, object]]:
        fold = self.fold
        dataset = fold_dataset(genomes, fold, tree, self.options.seed, self.synthetic_per_split)
        with tempfile.TemporaryDirectory(prefix="bertgeom-lineage-") as directory:
            train_classifier(dataset, Path(directory), self.options, progress)
            classifier = load_classifier(Path(directory))
        settings = classifier.settings
        baseline, baseline_threshold = fit_baseline(dataset, CLASSES)
        rows: list[dict[str, object]] = []
        for group in (*fold.groups, *self.never_trained):
            agreeing = group in fold.groups
            members = [g for g in group_members(genomes, group, tree, agreeing) if g.spike.usable]
            if not members:
                continue
            expected = expected_call(group, tree)
            sequences = [g.spike.sequence for g in members]
            changes, placements = spike_evidence([g.spike for g in members])
            models = {
                "bert": (
                    predict_probabilities(
                        classifier.model,
                        classifier.tokenizer,
                        sequences,
                        settings.k,
                        settings.stride,
                    ),
                    settings.classes,
                    settings.unassigned_threshold,
                ),
                "kmer_logistic_regression": (
                    baseline.predict_proba(sequences),
                    tuple(baseline.classes_),
                    baseline_threshold,
                ),
            }
            for (name, (probabilities, classes, threshold)), rule in product(models.items(), RULES):
                tree_placements = placements if rule == "clade tree" else None
                calls = checked_calls(
                    probabilities,
                    changes,
                    classes,
                    threshold,
                    classifier.change_check,
                    tree_placements,
                )
                rows.append(
                    {
                        "fold": fold.name,
                        "group": group.name,
                        "held_out": group in fold.groups,
                        "model": name,
                        "rule": rule,
                        "expected": expected,
                        "n": len(members),
                        **_outcomes(calls, expected),
                    }
                )
        return rows


def _run_fold_in_worker(
    job: _FoldJob, genomes: Sequence[EmbeddedGenome], threads: int
) -> list[dict[str, object]]:
    import torch

    torch.set_num_threads(threads)
    return job.run(genomes, clade_tree())


def _run_in_workers(
    jobs: Sequence[_FoldJob],
    genomes: Sequence[EmbeddedGenome],
    workers: int,
    progress: ProgressCallback | None,
    announce: Callable[[str], None] | None,
) -> list[dict[str, object]]:
    """Every job in a pool of ``spawn`` workers (a fork of a process running torch's thread pool
    can deadlock); rows in the jobs' order."""
    context = multiprocessing.get_context("spawn")
    workers = min(workers, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    results: dict[int, list[dict[str, object]]] = {}
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {
            pool.submit(_run_fold_in_worker, job, genomes, threads): index
            for index, job in enumerate(jobs)
        }
        if announce:
            announce(f"{len(jobs)} folds in {workers} worker processes, {threads} thread(s) each")
        if progress:
            progress("folds", 0, len(jobs))
        for future in as_completed(futures):
            index = futures[future]
            results[index] = future.result()
            if announce:
                announce(f"finished {jobs[index].title()}")
            if progress:
                progress("folds", len(results), len(jobs))
    return [row for index in range(len(jobs)) for row in results[index]]


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and rule: the held-out groups of the eight classes and the outside ones,
    pooled."""
    parts = []
    for (model, rule), rows in table.groupby(["model", "rule"], sort=False):
        inside = rows[rows["held_out"] & (rows["expected"] != UNASSIGNED)]
        outside = rows[rows["expected"] == UNASSIGNED]
        unassigned = inside[[f"unassigned_{reason}" for reason in REASONS]].to_numpy().sum()
        parts.append(
            {
                "model": model,
                "rule": rule,
                "held_out_n": int(inside["n"].sum()),
                "held_out_called_class": float(inside["called_expected"].sum() / inside["n"].sum()),
                "held_out_unassigned": float(unassigned / inside["n"].sum()),
                "held_out_argmax_right": float(inside["argmax_expected"].sum() / inside["n"].sum()),
                "outside_n": int(outside["n"].sum()),
                "outside_unassigned": float(outside["called_expected"].sum() / outside["n"].sum())
                if len(outside)
                else np.nan,
            }
        )
    return pd.DataFrame(parts)


def write_lineages(table: pd.DataFrame, directory: Path, run: dict[str, object]) -> None:
    """``lineages.tsv`` (one row per fold, group and model) and ``lineages.json`` (the same,
    the pooled summary and ``run``: options, seconds)."""
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_file(directory / "lineages.tsv") as path:
        table.to_csv(path, sep="\t", index=False)
    document = {
        **run,
        "summary": summarise(table).to_dict(orient="records"),
        "groups": table.to_dict(orient="records"),
    }
    with atomic_file(directory / "lineages.json") as path:
        path.write_text(json.dumps(document, indent=2, default=str))
