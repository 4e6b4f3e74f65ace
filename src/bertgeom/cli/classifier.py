"""The classifier's commands: ``predict``, ``train`` and ``evaluate`` (its steps in
``bertgeom.pipeline.steps``), with the progress bars and lines they and ``demo`` print."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import TaskID
from rich.status import Status

from bertgeom.atomic import atomic_file
from bertgeom.cli.classifier_output import print_lineages, print_metrics
from bertgeom.cli.common import (
    SEED_MAX,
    BatchSizeOption,
    DaskWorkersOption,
    EpochsOption,
    OverwriteOption,
    SchedulerOption,
    SeedOption,
    capped_workers,
    console,
    positive_number,
    progress_bar,
    start_up,
    user_errors,
)
from bertgeom.cli.seeds import checked_seeds, train_seeds
from bertgeom.errors import InputError
from bertgeom.outputs import (
    ENSEMBLE,
    EVALUATION,
    MODEL,
    check_output_directory,
    check_output_file,
    starts_with,
)
from bertgeom.pipeline.options import Announce

if TYPE_CHECKING:  # heavy imports (torch) stay out of 'bertgeom --help'
    import pandas as pd

    from bertgeom.model.train import ProgressCallback, TrainingOptions, TrainingReport

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Classifier: model directory, ensemble directory ('train --members') or Hugging "
        "Face hub id ORG/NAME[@REVISION] from the local cache (default: the shipped model).",
    ),
]


def predict(
    fasta: Annotated[
        Path,
        typer.Option(
            "--fasta", help="Genomes or spikes: FASTA, .fa.gz or .fa.xz; - for standard input."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Output table (TSV), one row per record; - for standard output."
        ),
    ],
    model: ModelOption = None,
    batch_size: BatchSizeOption = 64,
    workers: Annotated[
        int | None,
        typer.Option(help="Alignment processes (default: one per CPU core; 1: in-process).", min=1),
    ] = None,
    change_alpha: Annotated[
        float | None,
        typer.Option(
            help="Level of the change check: a call is unassigned when its spike's unexpected "
            "changes have a p-value below it (default: the model's, 0.05; 0 turns it off).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    scheduler: SchedulerOption = None,
    dask_workers: DaskWorkersOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Call the variant class of every record of a FASTA file (alignment and QC included)."""
    with user_errors():
        if str(out) != STDOUT:
            check_output_file(
                out, recognise=starts_with(PREDICTIONS_HEADER), inputs=[fasta], overwrite=overwrite
            )
        with start_up():
            from bertgeom.genomics.fasta import read_fasta
            from bertgeom.genomics.parallel import spike_extractor

        if not _is_stream(fasta):  # a stream is read once; a file is checked before any work
            next(read_fasta(fasta))  # missing, empty, binary, not FASTA: one line, at once
        processes = capped_workers(workers)
        on_dask = scheduler is not None or dask_workers is not None
        # The alignment workers start now, while torch is imported and the model loaded.
        with spike_extractor(processes, eager=not on_dask and fasta.is_file()) as extractor:
            with start_up():
                from bertgeom.model.ensemble import load_predictor
                from bertgeom.model.predict import predict_records, with_change_alpha

            started = time.perf_counter()
            classifier = load_predictor(model)
            with progress_bar() as bar:
                task = bar.add_task("aligning and classifying", total=None)
                if on_dask:
                    from bertgeom.scale.cluster import ClusterSpec
                    from bertgeom.scale.predict import predict_on_dask

                    cluster = ClusterSpec(scheduler, dask_workers)
                    table = predict_on_dask(
                        fasta,
                        classifier,
                        cluster,
                        model=model,
                        batch_size=batch_size,
                        change_alpha=change_alpha,
                        progress=lambda n: bar.advance(task, n),
                    )
                else:
                    table = predict_records(
                        read_fasta(fasta),
                        with_change_alpha(classifier, change_alpha),
                        batch_size=batch_size,
                        progress=lambda n: bar.advance(task, n),
                        workers=processes,
                        extractor=extractor,
                    )
        if str(out) == STDOUT:  # the table to standard output, the summary to stderr
            table.to_csv(sys.stdout, sep="\t", index=False, float_format="%.6g")
        else:
            with atomic_file(out) as partial:
                table.to_csv(partial, sep="\t", index=False, float_format="%.6g")
        seconds = time.perf_counter() - started
        counts = table["status"].value_counts().to_dict()
        console.print(
            f"{len(table)} records in {seconds:.1f} s ({len(table) / seconds:.0f}/s): "
            + ", ".join(f"{status} {count}" for status, count in counts.items())
            + f" -> {'standard output' if str(out) == STDOUT else out}",
            highlight=False,
            soft_wrap=True,
        )


def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Directory for the trained model.")],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Dataset directory from 'bertgeom data split' (default: the embedded data).",
        ),
    ] = None,
    preset: Annotated[str, typer.Option(help="Model size: tiny, small, deep or paper.")] = "small",
    epochs: EpochsOption = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Batch size (default: the preset's).")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(callback=positive_number, help="Peak learning rate.")
    ] = None,
    seed: SeedOption = 42,
    checkpoints: Annotated[
        bool,
        typer.Option(
            "--checkpoints",
            help="Also keep the weights at step 0, at log-spaced early steps (1, 2, 4, ... in "
            "the first epoch) and at the end of every epoch, each a model directory "
            "OUT/checkpoints/step-N (for 'analyze --over-training').",
        ),
    ] = False,
    checkpoint_schedule: Annotated[
        str | None,
        typer.Option(
            "--checkpoint-schedule",
            help="Which steps to keep (implies --checkpoints): comma-separated step numbers, "
            "'log' (1, 2, 4, ... before the first epoch ends), 'epochs' (every epoch's "
            "end) and 'last' (the end of training); default 0,log,epochs.",
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            help="Train the same recipe once per seed (comma-separated, e.g. 0,1,2), each "
            "into OUT/seed-N, with OUT/seeds.json (for 'analyze --over-seeds'); not with --seed.",
        ),
    ] = None,
    members: Annotated[
        int,
        typer.Option(
            min=1,
            help="Train an ensemble: this many models on the same rows, seeded SEED, SEED+1, "
            "..., into OUT/member-N, with OUT/ensemble.json (their mean probabilities call; "
            "'predict --model OUT'); not with --seeds.",
        ),
    ] = 1,
    overwrite: OverwriteOption = False,
) -> None:
    """Train a BERT variant classifier from scratch (best validation checkpoint kept)."""
    with user_errors():
        if members > 1 and seeds is not None:
            raise InputError("--members and --seeds: choose one")
        chosen = checked_seeds(ctx, seeds, out, data, overwrite) if seeds is not None else None
        if chosen is None:
            kind = ENSEMBLE if members > 1 else MODEL
            check_output_directory(out, kind, inputs=[data], overwrite=overwrite)
        with start_up():
            from bertgeom.model.train import TrainingOptions
            from bertgeom.model.training_checkpoints import DEFAULT_SCHEDULE

        schedule = checkpoint_schedule or (DEFAULT_SCHEDULE if checkpoints else None)
        options = TrainingOptions(
            preset, epochs, batch_size, learning_rate, seed, checkpoints=schedule
        )
        if chosen is not None:
            train_seeds(chosen, out, options, lambda s: prepared_dataset(data, s)[0], training_bar)
            return
        dataset, _ = prepared_dataset(data, seed)
        if members > 1:
            from bertgeom.pipeline.steps import train_ensemble

            with training_bar() as advance:
                reports, threshold = train_ensemble(dataset, out, options, members, advance)
            seconds = sum(report.seconds for report in reports)
            console.print(
                f"trained an ensemble of {members} {preset} models in {seconds:.0f} s, best "
                f"epochs {', '.join(str(r.best_epoch) for r in reports)}, threshold "
                f"{threshold:.3f} -> {out}",
                highlight=False,
            )
            return
        report = train_with_progress(dataset, out, options)
        best = report.history[report.best_epoch - 1]["validation_macro_f1"]
        kept = f", {len(report.checkpoints)} checkpoints" if report.checkpoints else ""
        console.print(
            f"trained {preset} in {report.seconds:.0f} s, best epoch {report.best_epoch}, "
            f"validation macro-F1 {best:.4f}{kept} -> {out}",
            highlight=False,
        )


def evaluate(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for metrics.json and the confusion matrix.")
    ],
    model: ModelOption = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset directory (default: the embedded data).")
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, max=SEED_MAX, help="Seed of the embedded dataset's split.")
    ] = 42,
    leave_lineage_out: Annotated[
        bool,
        typer.Option(
            "--leave-lineage-out",
            help="Instead: train one model per fold without whole Nextstrain lineages of the "
            "embedded data and call their genomes (BERT and k-mer baseline; "
            "lineages.tsv, lineages.json).",
        ),
    ] = False,
    preset: Annotated[str, typer.Option(help="--leave-lineage-out: the folds' preset.")] = "small",
    epochs: Annotated[
        int | None, typer.Option(min=1, help="--leave-lineage-out: the folds' epochs.")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="--leave-lineage-out: folds trained at once, each in its own process, the "
            "cores' torch threads shared among them (1: in turn, in this process).",
            min=1,
        ),
    ] = 1,
    members: Annotated[
        int,
        typer.Option(
            help="--leave-lineage-out: BERTs per fold, seeded SEED, SEED+1, ...: each called "
            "alone and with their mean probabilities, an ensemble.",
            min=1,
        ),
    ] = 1,
    overwrite: OverwriteOption = False,
) -> None:
    """Evaluate a classifier on the held-out test split and the genomes kept out of the
    dataset, or (--leave-lineage-out) the training recipe on lineages it never saw."""
    with user_errors():
        if model is not None:  # the model's own directory, also for a hub id
            from bertgeom.model.resolve import resolve_model

            model_path: Path | None = resolve_model(model).directory
        else:
            model_path = None
        check_output_directory(out, EVALUATION, inputs=[model_path, data], overwrite=overwrite)
        if leave_lineage_out:
            with start_up():
                from bertgeom.model.train import TrainingOptions

            lineages_with_progress(
                out, TrainingOptions(preset, epochs, seed=seed), workers, members
            )
            return
        with start_up():
            from bertgeom.model.ensemble import load_predictor
            from bertgeom.model.experiment import evaluate_classifier, write_evaluation

        classifier = load_predictor(model)
        dataset, outside = prepared_dataset(data, seed)
        metrics = evaluate_classifier(classifier, dataset, outside)
        write_evaluation(metrics, out, "bertgeom")
        print_metrics(metrics, out)


def _is_stream(path: Path) -> bool:
    """``-``, a pipe or a device (``/dev/stdin``): read once, so never read ahead to check."""
    return str(path) == "-" or (path.exists() and not path.is_file() and not path.is_dir())


STDOUT = "-"
"""``predict --out -`` writes the table to standard output (the summary goes to stderr)."""

PREDICTIONS_HEADER = b"record_id\tstatus\t"
"""How a table written by ``predict`` starts: such a file may be replaced by a new one."""


def building_status() -> Status:
    """The spinner shown while the embedded dataset is built (a minute or so)."""
    return console.status("aligning the embedded genomes and drawing synthetic spikes")


def prepared_dataset(directory: Path | None, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The dataset and the genomes kept out of it: the embedded data's, split with ``seed``
    (``directory`` None), or a dataset directory's."""
    if directory is None:
        from bertgeom.genomics.dataset import build_dataset

        with building_status():
            return build_dataset(seed=seed)
    from bertgeom.pipeline.steps import read_dataset

    return read_dataset(directory)


@contextmanager
def training_bar() -> Iterator[ProgressCallback]:
    """A progress bar with one task per training stage; yields ``progress(stage, done,
    total)``."""
    with progress_bar() as bar:
        tasks: dict[str, TaskID] = {}

        def advance(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        yield advance


def train_with_progress(
    dataset: pd.DataFrame, out: Path, options: TrainingOptions
) -> TrainingReport:
    """Train into ``out`` (with ``training.json``) under a progress bar."""
    from bertgeom.pipeline.steps import train_and_record

    with training_bar() as advance:
        return train_and_record(dataset, out, options, advance)


@contextmanager
def lineage_bar() -> Iterator[tuple[ProgressCallback, Announce]]:
    """A progress bar for leave-lineage-out, its task named after the current stage; yields
    ``progress(stage, done, total)`` and ``announce(line)``, printed above the bar."""
    with progress_bar() as bar:
        task = bar.add_task("training", total=None)

        def advance(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        yield advance, bar.console.print


def lineages_with_progress(
    out: Path, options: TrainingOptions, workers: int = 1, members: int = 1
) -> None:
    """Leave-lineage-out into ``out`` under a progress bar, then its table printed."""
    from bertgeom.pipeline.steps import leave_lineages_out

    with lineage_bar() as (advance, announce):
        table, seconds = leave_lineages_out(out, options, workers, advance, announce, members)
    print_lineages(table, seconds, out)
