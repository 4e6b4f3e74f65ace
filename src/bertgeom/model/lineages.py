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

This module runs the folds (in turn or in worker processes); the folds and their training rows
are :mod:`bertgeom.model.lineage_folds`'s, the tables :mod:`bertgeom.model.lineage_tables`'s.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import pandas as pd

from bertgeom.genomics.clades import CladeTree, clade_tree
from bertgeom.genomics.mutations import CLASSES
from bertgeom.model.baseline import fit_baseline
from bertgeom.model.evaluate import predict_probabilities
from bertgeom.model.lineage_folds import (
    DEFAULT_FOLDS,
    NEVER_TRAINED,
    EmbeddedGenome,
    Fold,
    LineageGroup,
    embedded_genomes,
    expected_call,
    fold_dataset,
    group_members,
)
from bertgeom.model.lineage_tables import RULES, count_outcomes
from bertgeom.model.predict import checked_calls, spike_evidence
from bertgeom.model.storage import load_classifier
from bertgeom.model.train import ProgressCallback, TrainingOptions, train_classifier


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
                        **count_outcomes(calls, expected),
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
