"""The classifier's steps that ``train``, ``evaluate`` and the demo share: a dataset directory
read, a model trained with its training record, leave-lineage-out run and written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from bertgeom.atomic import atomic_directory, atomic_file
from bertgeom.genomics.dataset import load_dataset, read_table
from bertgeom.model.train import ProgressCallback, TrainingOptions, TrainingReport, train_classifier
from bertgeom.pipeline.options import Announce


def read_dataset(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A dataset directory's dataset and the genomes kept out of it (none when it has no
    ``outside.parquet``)."""
    dataset = load_dataset(directory)
    outside_path = directory / "outside.parquet"
    outside = read_table(outside_path) if outside_path.is_file() else dataset.iloc[:0]
    return dataset, outside


def train_and_record(
    dataset: pd.DataFrame,
    out: Path,
    options: TrainingOptions,
    progress: ProgressCallback | None = None,
) -> TrainingReport:
    """Train a classifier into ``out`` (``bertgeom.model.train``) and write beside it
    ``training.json``: every epoch's history, the best epoch and the seconds."""
    report = train_classifier(dataset, out, options, progress)
    with atomic_file(out / "training.json") as path:
        path.write_text(json.dumps(report.__dict__, indent=2, default=str))
    return report


def train_ensemble(
    dataset: pd.DataFrame,
    out: Path,
    options: TrainingOptions,
    members: int,
    progress: ProgressCallback | None = None,
) -> tuple[list[TrainingReport], float]:
    """Train ``members`` classifiers on ``dataset``, seeded ``options.seed``, ``+ 1``, ..., into
    ``out/member-N`` (each with ``training.json``), and write ``out/ensemble.json`` with the
    threshold of their mean probabilities calibrated on the validation split
    (:mod:`bertgeom.model.ensemble`). ``out`` appears whole or not at all. Returns the
    members' reports and the ensemble's threshold."""
    from dataclasses import replace

    from bertgeom.model.ensemble import fit_ensemble, member_directory, write_ensemble_file
    from bertgeom.model.storage import load_classifier

    reports = []
    with atomic_directory(Path(out)) as staging:
        for number in range(1, members + 1):
            member = staging / member_directory(number)
            seeded = replace(options, seed=options.seed + number - 1)
            reports.append(train_and_record(dataset, member, seeded, progress))
        loaded = [load_classifier(staging / member_directory(n)) for n in range(1, members + 1)]
        ensemble = fit_ensemble(loaded, dataset)
        write_ensemble_file(staging, members, ensemble.unassigned_threshold)
    return reports, ensemble.unassigned_threshold


def leave_lineages_out(
    out: Path,
    options: TrainingOptions,
    workers: int = 1,
    progress: ProgressCallback | None = None,
    announce: Announce | None = None,
    members: int = 1,
) -> tuple[pd.DataFrame, float]:
    """Leave-lineage-out (``bertgeom.model.lineages``, ``members`` BERTs per fold) written
    into ``out`` (``lineages.tsv``, and ``lineages.json`` with the options, the workers, the
    members and the seconds); returns the table and the seconds."""
    from bertgeom.model.lineage_tables import write_lineages
    from bertgeom.model.lineages import leave_lineage_out

    started = time.perf_counter()
    table = leave_lineage_out(
        options, progress=progress, announce=announce, workers=workers, members=members
    )
    seconds = time.perf_counter() - started
    run = {"options": options.__dict__, "workers": workers, "members": members, "seconds": seconds}
    write_lineages(table, out, run)
    return table, seconds
