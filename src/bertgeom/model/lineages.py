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

import os
import tempfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertgeom.genomics.clades import CladeTree, clade_tree
from bertgeom.genomics.mutations import CLASSES
from bertgeom.genomics.spike import SpikeRecord, extract_spike
from bertgeom.model.baseline import KmerLogisticRegression, fit_baseline
from bertgeom.model.ensemble import Ensemble, fit_ensemble
from bertgeom.model.lineage_folds import (
    DEFAULT_FOLDS,
    NEVER_TRAINED,
    OUTSIDE_DEFINITIONS,
    EmbeddedGenome,
    Fold,
    LineageGroup,
    embedded_genomes,
    expected_call,
    fold_dataset,
    group_members,
    outside_definition_spikes,
)
from bertgeom.model.lineage_tables import INPUT_KINDS, QC_FAILED, RULES, count_outcomes
from bertgeom.model.predict import UNASSIGNED, Calls, checked_calls, spike_evidence
from bertgeom.model.storage import Classifier, load_classifier
from bertgeom.model.train import ProgressCallback, TrainingOptions, train_classifier
from bertgeom.processes import spawn_pool


def leave_lineage_out(
    options: TrainingOptions,
    folds: Sequence[Fold] = DEFAULT_FOLDS,
    never_trained: Sequence[LineageGroup] = NEVER_TRAINED,
    synthetic_per_split: tuple[int, int] = (250, 40),
    progress: ProgressCallback | None = None,
    announce: Callable[[str], None] | None = None,
    workers: int = 1,
    members: int = 1,
) -> pd.DataFrame:
    """One row per (fold, group, model, rule): ``n``, ``expected``, how many were called the
    expected class, withheld for each reason, called another class, and right on the arg-max
    alone.

    With ``members > 1`` each fold trains that many BERTs on its rows, seeded ``options.seed``,
    ``options.seed + 1``, ...: model ``bert`` is the first alone, ``bert member N`` the N-th
    alone (seed ``options.seed + N - 1``), and ``bert ensemble`` their mean
    (:mod:`bertgeom.model.ensemble`).

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
    jobs = [_FoldJob(fold, never_trained, synthetic_per_split, options, members) for fold in folds]
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
    members: int = 1

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
        classifiers = []
        for member in range(self.members):
            options = replace(self.options, seed=self.options.seed + member)
            with tempfile.TemporaryDirectory(prefix="bertgeom-lineage-") as directory:
                train_classifier(dataset, Path(directory), options, progress)
                classifiers.append(load_classifier(Path(directory)))
        baseline = fit_baseline(dataset, CLASSES)
        ensemble = fit_ensemble(classifiers, dataset) if len(classifiers) > 1 else None
        return fold_rows(
            fold, classifiers[0], baseline, genomes, tree, self.never_trained, ensemble
        )


def fold_rows(
    fold: Fold,
    classifier: Classifier,
    baseline: tuple[KmerLogisticRegression, float],
    genomes: Sequence[EmbeddedGenome],
    tree: CladeTree,
    never_trained: Sequence[LineageGroup] = NEVER_TRAINED,
    ensemble: Ensemble | None = None,
) -> list[dict[str, object]]:
    """Call every genome of the fold's groups and of ``never_trained`` as each input kind
    (:data:`INPUT_KINDS`), by the fold's BERT and baseline (and ``ensemble``, its members and
    their mean, when given), under each rule: one row per (group, input, model, rule)."""
    rows: list[dict[str, object]] = []

    def call(
        group: str, held_out: bool, kind: str, expected: str, spikes: list[SpikeRecord]
    ) -> None:
        for model, calls in kind_calls(classifier, baseline, spikes, ensemble).items():
            for rule, checked in calls.items():
                rows.append(
                    {
                        "fold": fold.name,
                        "group": group,
                        "held_out": held_out,
                        "input": kind,
                        "model": model,
                        "rule": rule,
                        "expected": expected,
                        "n": len(spikes),
                        **count_outcomes(checked, expected, [s.record_id for s in spikes]),
                    }
                )

    for group in (*fold.groups, *never_trained):
        agreeing = group in fold.groups
        members = [g for g in group_members(genomes, group, tree, agreeing) if g.spike.usable]
        if members:
            for kind in INPUT_KINDS:
                spikes = input_spikes(members, kind)
                call(group.name, agreeing, kind, expected_call(group, tree), spikes)
    outside = [extract_spike(name, sequence) for name, sequence in outside_definition_spikes()]
    call(OUTSIDE_DEFINITIONS, False, "spike", UNASSIGNED, outside)
    call(OUTSIDE_DEFINITIONS, False, "partial spike", UNASSIGNED, [_window(s) for s in outside])
    return rows


def _window(spike: SpikeRecord) -> SpikeRecord:
    """A window of 40-80 % of ``spike``, placed at random, seeded by its record id."""
    sequence = spike.sequence.strip("N")
    random = np.random.default_rng(zlib.crc32(spike.record_id.encode()))
    length = int(len(sequence) * random.uniform(0.4, 0.8))
    start = int(random.integers(0, len(sequence) - length + 1))
    return extract_spike(spike.record_id, sequence[start : start + length])


def input_spikes(members: Sequence[EmbeddedGenome], kind: str) -> list[SpikeRecord]:
    """The members as ``kind`` inputs: the spike of the whole genome's alignment (``genome``),
    that spike alone, aligned again as a spike-only input (``spike``), or a window of it
    (``partial spike``: 40-80 % of the spike, placed at random, seeded by the record id)."""
    if kind == "genome":
        return [g.spike for g in members]
    if kind == "spike":
        return [extract_spike(g.record_id, g.spike.sequence) for g in members]
    return [_window(g.spike) for g in members]


def kind_calls(
    classifier: Classifier,
    baseline: tuple[KmerLogisticRegression, float],
    spikes: Sequence[SpikeRecord],
    ensemble: Ensemble | None = None,
) -> dict[str, dict[str, Calls]]:
    """Per model (``bert``, ``kmer_logistic_regression``; with ``ensemble``, also ``bert
    member N`` for each other member and ``bert ensemble``) and rule, the calls of ``spikes`` as
    ``predict`` makes them (an unusable spike is called with no evidence: pre-VOC's
    reference-like calls never happen to unusable inputs, which predict gives no call)."""
    settings = classifier.settings
    usable = [spike for spike in spikes if spike.usable]
    sequences = [spike.sequence for spike in usable]
    evidence = spike_evidence(usable, classifier.change_check)
    lr, lr_threshold = baseline
    bert = classifier.probabilities(sequences)
    models = {"bert": (bert, settings.classes, settings.unassigned_threshold)}
    if ensemble is not None:
        each = [bert] + [m.probabilities(sequences) for m in ensemble.members[1:]]
        for number, (member, probabilities) in enumerate(
            zip(ensemble.members[1:], each[1:], strict=True), start=2
        ):
            member_settings = member.settings
            models[f"bert member {number}"] = (
                probabilities,
                member_settings.classes,
                member_settings.unassigned_threshold,
            )
        models["bert ensemble"] = (
            np.mean(each, axis=0),
            ensemble.classes,
            ensemble.unassigned_threshold,
        )
    models["kmer_logistic_regression"] = (
        lr.predict_proba(sequences),
        tuple(lr.classes_),
        lr_threshold,
    )
    calls: dict[str, dict[str, Calls]] = {}
    for name, (probabilities, classes, threshold) in models.items():
        calls[name] = {}
        for rule in RULES:
            tree_rule = rule == "clade tree"
            checked = checked_calls(
                probabilities,
                evidence.changes,
                classes,
                threshold,
                classifier.change_check,
                evidence.placements if tree_rule else None,
                evidence.defining if tree_rule else None,
            )
            calls[name][rule] = with_unusable(checked, spikes)
    return calls


def with_unusable(calls: Calls, spikes: Sequence[SpikeRecord]) -> Calls:
    """``calls`` of the usable ``spikes`` spread over all of them, each unusable one (a hard QC
    failure, which ``predict`` gives no call) withheld for :data:`QC_FAILED`."""
    if all(spike.usable for spike in spikes):
        return calls
    rows = iter(range(len(calls.argmax)))
    index = [next(rows) if spike.usable else -1 for spike in spikes]

    def spread(values: Sequence[Any], missing: object) -> list[Any]:
        return [values[i] if i >= 0 else missing for i in index]

    return Calls(
        argmax=spread(calls.argmax, ""),
        called=spread(calls.called, UNASSIGNED),
        best=np.array(spread(list(calls.best), np.nan), dtype=float),
        reasons=spread(calls.reasons, QC_FAILED),
        unexpected=spread(calls.unexpected, ()),
        p_values=np.array(spread(list(calls.p_values), np.nan), dtype=float),
    )


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
    """Every job in a pool of ``spawn`` workers (:func:`bertgeom.processes.spawn_pool`); rows in
    the jobs' order."""
    workers = min(workers, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    results: dict[int, list[dict[str, object]]] = {}
    with spawn_pool(workers) as pool:
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
