"""The ``bertgeom`` command: the variant classifier (data, train, evaluate, predict, demo)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import pandas as pd
import typer
from rich.progress import TaskID

from bertgeom.atomic import atomic_file
from bertgeom.cli.analyze import analyze
from bertgeom.cli.common import console, progress_bar, user_errors
from bertgeom.cli.data import data_app
from bertgeom.cli.report import report
from bertgeom.errors import InputError

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
    Path | None, typer.Option("--model", help="Classifier directory (default: the shipped model).")
]


@app.command()
def predict(
    fasta: Annotated[
        Path, typer.Option("--fasta", help="Genomes or spikes: FASTA, .fa.gz or .fa.xz.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output table (TSV), one row per record.")],
    model: ModelOption = None,
    batch_size: Annotated[int, typer.Option(help="Sequences per forward pass.")] = 64,
    change_alpha: Annotated[
        float | None,
        typer.Option(
            help="Level of the change check: a call is unassigned when its spike's unexpected "
            "changes have a p-value below it (default: the model's, 0.05; 0 turns it off).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
) -> None:
    """Call the variant class of every record of a FASTA file (alignment and QC included)."""
    with user_errors():
        from dataclasses import replace

        from bertgeom.genomics.fasta import read_fasta
        from bertgeom.model.predict import predict_records
        from bertgeom.model.storage import load_classifier

        started = time.perf_counter()
        classifier = load_classifier(model)
        if change_alpha is not None and classifier.change_check is not None:
            check = replace(classifier.change_check, alpha=change_alpha) if change_alpha else None
            classifier = replace(classifier, change_check=check)
        records = read_fasta(fasta)
        with progress_bar() as bar:
            task = bar.add_task("aligning and classifying", total=None)
            table = predict_records(
                records, classifier, batch_size=batch_size, progress=lambda n: bar.advance(task, n)
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
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the preset's).")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Batch size (default: the preset's).")
    ] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Train a BERT variant classifier from scratch (best validation checkpoint kept)."""
    with user_errors():
        from bertgeom.model.presets import PRESETS
        from bertgeom.model.train import TrainingOptions

        if preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        dataset, _ = _dataset(data, seed)
        options = TrainingOptions(preset, epochs, batch_size, learning_rate, seed)
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
) -> None:
    """Evaluate a classifier on the held-out test split and the outside-the-classes genomes."""
    with user_errors():
        from bertgeom.model.experiment import evaluate_classifier, write_evaluation
        from bertgeom.model.storage import load_classifier

        classifier = load_classifier(model)
        dataset, outside = _dataset(data, seed)
        metrics = evaluate_classifier(classifier, dataset, outside)
        write_evaluation(metrics, out, "bertgeom")
        _print_metrics(metrics, out)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Directory for the demo's outputs.")] = Path(
        "demo-output"
    ),
    preset: Annotated[str, typer.Option(help="Model size.")] = "small",
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the preset's).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Prepare the embedded data, train, evaluate, analyse the model on the held-out data and
    write the report (model/, metrics.json, confusion matrix, analysis/, report.html)."""
    with user_errors():
        from bertgeom.analysis import AnalysisOptions, InputSpec
        from bertgeom.cli.analyze import run_analysis
        from bertgeom.genomics.dataset import save_dataset
        from bertgeom.model.experiment import evaluate_classifier, write_evaluation
        from bertgeom.model.storage import load_classifier
        from bertgeom.model.train import TrainingOptions
        from bertgeom.report.build import build_report

        started = time.perf_counter()
        console.print(
            "[bold]1/5[/] preparing the embedded data (alignment, synthetic spikes, splits)"
        )
        dataset, outside = _dataset(None, seed)
        save_dataset(dataset, outside, out / "data")
        console.print(f"[bold]2/5[/] training the {preset} preset")
        report = _train(dataset, out / "model", TrainingOptions(preset, epochs, seed=seed))
        console.print("[bold]3/5[/] evaluating on the held-out test split")
        metrics = evaluate_classifier(load_classifier(out / "model"), dataset, outside)
        metrics["training"] = {
            "history": report.history,
            "best_epoch": report.best_epoch,
            "seconds": report.seconds,
        }
        write_evaluation(metrics, out, f"bertgeom demo ({preset})")
        _print_metrics(metrics, out)
        console.print("[bold]4/5[/] analysing the model on the held-out test split")
        test_split = InputSpec("data", out / "data", split="test")
        run_analysis(out / "model", test_split, out / "analysis", AnalysisOptions())
        console.print("[bold]5/5[/] writing the report")
        with console.status("drawing the figures"):
            page = build_report(out / "analysis", out / "report.html")
        console.print(f"report: {page}", highlight=False)
        seconds = time.perf_counter() - started
        console.print(f"demo finished in {seconds:.0f} s", highlight=False)


def _dataset(directory: Path | None, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from bertgeom.genomics.dataset import build_dataset, load_dataset

    if directory is None:
        with console.status("aligning the embedded genomes and drawing synthetic spikes"):
            return build_dataset(seed=seed)
    dataset = load_dataset(directory)
    outside_path = directory / "outside.parquet"
    outside = pd.read_parquet(outside_path) if outside_path.is_file() else dataset.iloc[:0]
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
        ("outside", "real genomes outside the eight classes"),
    ):
        part = metrics.get(key)
        if isinstance(part, dict):
            by_spike = ", ".join(
                f"{target} {entry['as_expected']}/{entry['n']}"
                for target, entry in part.get("by_spike", {}).items()
            )
            console.print(
                f"{title}: n={part['n']} unassigned={part['unassigned_share']:.2f}"
                + (f" (called as their spike says: {by_spike})" if by_spike else ""),
                highlight=False,
            )
    console.print(f"-> {out / 'metrics.json'}, {out / 'confusion_matrix.png'}", highlight=False)
