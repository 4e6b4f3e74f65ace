"""The ``bertgeom`` command: the variant classifier (data, train, evaluate, predict, demo)."""

from __future__ import annotations

import gc
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import typer
from rich.progress import TaskID
from rich.table import Table

from bertgeom.atomic import atomic_file
from bertgeom.cli.analyze import analyze
from bertgeom.cli.common import (
    BatchSizeOption,
    DaskWorkersOption,
    EpochsOption,
    OverwriteOption,
    SchedulerOption,
    capped_workers,
    console,
    positive_number,
    progress_bar,
    start_up,
    user_errors,
)
from bertgeom.cli.data import data_app
from bertgeom.cli.report import report
from bertgeom.outputs import (
    DEMO,
    EVALUATION,
    MODEL,
    check_output_directory,
    check_output_file,
    starts_with,
)

try:  # typer >= 0.22 vendors click as typer._click; older versions use click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

if TYPE_CHECKING:  # heavy imports (torch) stay out of 'bertgeom --help'
    from bertgeom.model.train import TrainingOptions, TrainingReport

app = typer.Typer(
    name="bertgeom",
    help="The geometry of BERT: a SARS-CoV-2 variant classifier and the analysis of BERT encoders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_app, name="data")
app.command()(analyze)
app.command()(report)

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Classifier: model directory or Hugging Face hub id ORG/NAME[@REVISION] from the "
        "local cache (default: the shipped model).",
    ),
]


@app.command()
def predict(
    fasta: Annotated[
        Path, typer.Option(
            "--fasta", help="Genomes or spikes: FASTA, .fa.gz or .fa.xz; - for standard input."
        )
    ],
    out: Annotated[Path, typer.Option("--out", help="Output table (TSV), one row per record.")],
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
        check_output_file(
            out, recognise=starts_with(PREDICTIONS_HEADER), inputs=[fasta], overwrite=overwrite
        )
        with start_up():
            from bertgeom.genomics.fasta import read_fasta
            from bertgeom.genomics.parallel import spike_extractor

        processes = capped_workers(workers)
        on_dask = scheduler is not None or dask_workers is not None
        # The alignment workers start now, while torch is imported and the model loaded.
        with spike_extractor(processes, eager=not on_dask and fasta.is_file()) as extractor:
            with start_up():
                from bertgeom.model.predict import predict_records, with_change_alpha
                from bertgeom.model.storage import load_classifier

            started = time.perf_counter()
            classifier = load_classifier(model)
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
        with atomic_file(out) as partial:
            table.to_csv(partial, sep="\t", index=False, float_format="%.6g")
        seconds = time.perf_counter() - started
        counts = table["status"].value_counts().to_dict()
        console.print(
            f"{len(table)} records in {seconds:.1f} s ({len(table) / seconds:.0f}/s): "
            + ", ".join(f"{status} {count}" for status, count in counts.items())
            + f" -> {out}",
            highlight=False,
        )


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Directory for the trained model.")],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Dataset directory from 'bertgeom data split' (default: the embedded data).",
        ),
    ] = None,
    preset: Annotated[str, typer.Option(help="Model size: tiny, small or paper.")] = "small",
    epochs: EpochsOption = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Batch size (default: the preset's).")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(callback=positive_number, help="Peak learning rate.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    overwrite: OverwriteOption = False,
) -> None:
    """Train a BERT variant classifier from scratch (best validation checkpoint kept)."""
    with user_errors():
        check_output_directory(out, MODEL, inputs=[data], overwrite=overwrite)
        with start_up():
            from bertgeom.model.train import TrainingOptions

        options = TrainingOptions(preset, epochs, batch_size, learning_rate, seed)
        dataset, _ = _dataset(data, seed)
        report = _train(dataset, out, options)
        best = report.history[report.best_epoch - 1]["validation_macro_f1"]
        console.print(
            f"trained {preset} in {report.seconds:.0f} s, best epoch {report.best_epoch}, "
            f"validation macro-F1 {best:.4f} -> {out}",
            highlight=False,
        )


@app.command()
def evaluate(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for metrics.json and the confusion matrix.")
    ],
    model: ModelOption = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset directory (default: the embedded data).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the embedded dataset's split.")] = 42,
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

            _evaluate_lineages(out, TrainingOptions(preset, epochs, seed=seed), workers)
            return
        with start_up():
            from bertgeom.model.experiment import evaluate_classifier, write_evaluation
            from bertgeom.model.storage import load_classifier

        classifier = load_classifier(model)
        dataset, outside = _dataset(data, seed)
        metrics = evaluate_classifier(classifier, dataset, outside)
        write_evaluation(metrics, out, "bertgeom")
        _print_metrics(metrics, out)


def _evaluate_lineages(out: Path, options: TrainingOptions, workers: int = 1) -> None:
    from bertgeom.model.lineages import leave_lineage_out, write_lineages

    started = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("training", total=None)

        def advance(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        table = leave_lineage_out(
            options, progress=advance, announce=bar.console.print, workers=workers
        )
    seconds = time.perf_counter() - started
    run = {"options": options.__dict__, "workers": workers, "seconds": seconds}
    write_lineages(table, out, run)
    console.print(_lineage_table(table))
    console.print(f"leave-lineage-out finished in {seconds:.0f} s", highlight=False)
    console.print(f"-> {out / 'lineages.tsv'}, {out / 'lineages.json'}", highlight=False)


PREDICTIONS_HEADER = b"record_id\tstatus\t"
"""How a table written by ``predict`` starts: such a file may be replaced by a new one."""

DEMO_LINEAGE_WORKERS = 3
"""The demo trains its three leave-lineage-out folds at once, each in its own process (on 2
cores, three single-threaded folds finish sooner than two at once and then the third)."""


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Directory for the demo's outputs.")] = Path(
        "demo-output"
    ),
    preset: Annotated[str, typer.Option(help="Model size.")] = "small",
    epochs: EpochsOption = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    lineages: Annotated[
        bool,
        typer.Option(
            help="Leave-lineage-out with the tiny preset (lineages/); the small preset's numbers "
            "come from 'bertgeom evaluate --leave-lineage-out' (BENCHMARKS.md)."
        ),
    ] = True,
    lineage_epochs: Annotated[
        int, typer.Option(help="Epochs of each leave-lineage-out fold.", min=1)
    ] = 10,
    lineage_workers: Annotated[
        int,
        typer.Option(
            help="Leave-lineage-out folds trained at once, each in its own process, the cores' "
            "torch threads shared among them (1: in turn, in this process).",
            min=1,
        ),
    ] = DEMO_LINEAGE_WORKERS,
    overwrite: OverwriteOption = False,
) -> None:
    """Prepare the embedded data, train, evaluate, call lineages left out of training, analyse
    the model on the held-out data (with head ablation and the untrained control) and write the
    report (model/, metrics.json, confusion matrix, lineages/, analysis/, report.html)."""
    with user_errors():
        check_output_directory(out, DEMO, overwrite=overwrite)
        with start_up():
            from bertgeom.analysis import AnalysisOptions, InputSpec
            from bertgeom.cli.analyze import run_analysis
            from bertgeom.genomics.dataset import save_dataset
            from bertgeom.model.experiment import evaluate_classifier, write_evaluation
            from bertgeom.model.storage import load_classifier
            from bertgeom.model.train import TrainingOptions
            from bertgeom.report.build import build_report

        training = TrainingOptions(preset, epochs, seed=seed)
        lineage_training = TrainingOptions("tiny", lineage_epochs, seed=seed)
        steps = _Steps(6 if lineages else 5)
        with steps("preparing the embedded data (alignment, synthetic spikes, splits)", "data"):
            dataset, outside = _dataset(None, seed)
            save_dataset(dataset, outside, out / "data")
        with steps(f"training the {preset} preset", "training"):
            report = _train(dataset, out / "model", training)
        with steps("evaluating on the held-out test split", "evaluation"):
            metrics = evaluate_classifier(load_classifier(out / "model"), dataset, outside)
            metrics["training"] = {
                "history": report.history,
                "best_epoch": report.best_epoch,
                "seconds": report.seconds,
            }
            write_evaluation(metrics, out, f"bertgeom demo ({preset})")
            _print_metrics(metrics, out)
        if lineages:
            with steps(
                "leave-lineage-out: three folds of the tiny preset, each trained without whole "
                "lineages, then called on them",
                "leave-lineage-out",
            ):
                _evaluate_lineages(out / "lineages", lineage_training, lineage_workers)
        with steps(
            "analysing the model on the held-out test split: every measure, head ablation, and "
            "the same architecture untrained as the control",
            "analysis",
        ):
            test_split = InputSpec("data", out / "data", split="test")
            analysis = AnalysisOptions(ablation=DEMO_ABLATION, control="random-init")
            run_analysis(out / "model", test_split, out / "analysis", analysis, overwrite=overwrite)
        with steps("writing the report", "report"), console.status("drawing the figures"):
            page = build_report(out / "analysis", out / "report.html")
        console.print(f"report: {page}", highlight=False)
        console.print(f"demo finished in {steps.total():.0f} s: {steps.summary()}", highlight=False)


DEMO_ABLATION = ("zero", "mean", "keys")
"""The demo ablates every head and block (zeroed, mean-replaced) and masks mutation keys."""


class _Steps:
    """Numbered steps of a long command, each timed; ``summary()`` lists the times."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, title: str, name: str) -> Iterator[None]:
        console.print(f"[bold]{len(self.seconds) + 1}/{self.count}[/] {title}")
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started
        console.print(f"    {name}: {self.seconds[name]:.1f} s", highlight=False)

    def total(self) -> float:
        return sum(self.seconds.values())

    def summary(self) -> str:
        return ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.seconds.items())


def _lineage_table(table: pd.DataFrame) -> Table:
    from bertgeom.model.lineages import REASONS

    view = Table(
        title="leave-lineage-out: held-out genomes, as predict calls them (BERT | k-mer LR)"
    )
    for column in ("fold", "group", "expected", "n", "called so", "unassigned", "other class"):
        view.add_column(column, justify="left" if column in ("fold", "group") else "right")
    with_tree = table[table["rule"] == "clade tree"]
    for (fold, group), rows in with_tree.groupby(["fold", "group"], sort=False):
        models = list(rows.itertuples())
        view.add_row(
            str(fold),
            str(group),
            str(models[0].expected),
            str(models[0].n),
            " | ".join(str(row.called_expected) for row in models),
            " | ".join(_withheld(row, REASONS) for row in models),
            " | ".join(str(row.called_other) for row in models),
        )
    return view


def _withheld(row: Any, reasons: tuple[str, ...]) -> str:
    counts = {reason: getattr(row, f"unassigned_{reason}") for reason in reasons}
    return ", ".join(f"{count} {reason}" for reason, count in counts.items() if count) or "0"


def _dataset(directory: Path | None, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from bertgeom.genomics.dataset import build_dataset, load_dataset, read_table

    if directory is None:
        with console.status("aligning the embedded genomes and drawing synthetic spikes"):
            return build_dataset(seed=seed)
    dataset = load_dataset(directory)
    outside_path = directory / "outside.parquet"
    outside = read_table(outside_path) if outside_path.is_file() else dataset.iloc[:0]
    return dataset, outside


def _train(dataset: pd.DataFrame, out: Path, options: TrainingOptions) -> TrainingReport:
    from bertgeom.model.train import train_classifier

    with progress_bar() as bar:
        tasks: dict[str, TaskID] = {}

        def advance(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        report = train_classifier(dataset, out, options, advance)
    with atomic_file(out / "training.json") as path:
        path.write_text(json.dumps(report.__dict__, indent=2, default=str))
    return report


def _print_metrics(metrics: dict[str, object], out: Path) -> None:
    for key in ("test_real", "test_synthetic"):
        part = metrics.get(key)
        if isinstance(part, dict):
            console.print(
                f"{key.replace('_', ' ')}: n={part['n']} accuracy={part['accuracy']:.4f} "
                f"macro-F1={part['macro_f1']:.4f} unassigned={part['unassigned_share']:.3f}",
                highlight=False,
            )
    for key, title in (
        ("test_synthetic_outliers", "synthetic outliers"),
        ("outside", "real genomes kept out of the dataset (other-VOI, disputed)"),
    ):
        part = metrics.get(key)
        if isinstance(part, dict):
            by_clade = ", ".join(
                f"{target} {entry['as_expected']}/{entry['n']}"
                for target, entry in part.get("by_clade", {}).items()
            )
            console.print(
                f"{title}: n={part['n']} unassigned={part['unassigned_share']:.2f}"
                + (f" (called as their clade says: {by_clade})" if by_clade else ""),
                highlight=False,
            )
    console.print(f"-> {out / 'metrics.json'}, {out / 'confusion_matrix.png'}", highlight=False)


def main() -> None:
    """The ``bertgeom`` console script: the app, with a bad option or argument said in one
    line (exit 2, as click does), then an exit that skips the last garbage collection
    (``gc.freeze``): at shutdown Python walks every object still alive, about a second after
    torch is imported, to free memory the operating system frees anyway."""
    try:
        code = app(standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as error:
        error.show()  # the help text, as 'bertgeom' alone has always printed it
        code = error.exit_code
    except click_exceptions.ClickException as error:
        context = getattr(error, "ctx", None)  # usage errors know their command
        command = context.command_path if context is not None else "bertgeom"
        console.print(
            f"[bold red]error:[/] {error.format_message()} (see '{command} --help')",
            highlight=False,
            soft_wrap=True,
        )
        code = error.exit_code
    except typer.Abort:
        console.print("[bold red]aborted:[/] no output was written", highlight=False)
        code = 1
    finally:
        gc.freeze()
    sys.exit(code if isinstance(code, int) else 0)
