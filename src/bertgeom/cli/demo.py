"""``bertgeom demo``: the case study end to end (``bertgeom.pipeline.demo``), drawn on the
console: numbered steps with their times, progress bars, the metrics and the report's path."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bertgeom.cli.analysis_output import analysis_bar, print_analysis_summary
from bertgeom.cli.classifier import building_status, lineage_bar, training_bar
from bertgeom.cli.classifier_output import print_lineages, print_metrics
from bertgeom.cli.common import (
    EpochsOption,
    OverwriteOption,
    SeedOption,
    console,
    progress_bar,
    start_up,
    user_errors,
)
from bertgeom.outputs import DEMO, check_output_directory
from bertgeom.pipeline.options import (
    DEMO_CHECKPOINTS,
    DEMO_LINEAGE_WORKERS,
    AnalysisProgress,
    Announce,
    DemoListener,
    DemoOptions,
)

if TYPE_CHECKING:  # heavy imports (torch) stay out of 'bertgeom --help'
    import pandas as pd

    from bertgeom.analysis import AnalysisSummary
    from bertgeom.analysis.over_training import OverTrainingSummary
    from bertgeom.capture.loading import LoadedModel
    from bertgeom.model.train import ProgressCallback


def demo(
    out: Annotated[Path, typer.Option("--out", help="Directory for the demo's outputs.")] = Path(
        "demo-output"
    ),
    preset: Annotated[str, typer.Option(help="Model size.")] = "small",
    epochs: EpochsOption = None,
    seed: SeedOption = 42,
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
    checkpoint_schedule: Annotated[
        str,
        typer.Option(
            "--checkpoint-schedule",
            help="The checkpoints kept (model/checkpoints) and analysed over training "
            "(training/, the report's over-training section), as 'train --checkpoint-schedule' "
            "takes them.",
        ),
    ] = DEMO_CHECKPOINTS,
    over_training: Annotated[
        bool,
        typer.Option(help="Keep checkpoints and analyse them over training."),
    ] = True,
    overwrite: OverwriteOption = False,
) -> None:
    """Prepare the embedded data, train (keeping a few checkpoints), evaluate, call lineages
    left out of training, analyse the model on the held-out data (with head ablation and the
    untrained control), analyse its checkpoints over training and write the report (model/,
    metrics.json, confusion matrix, lineages/, analysis/, training/, report.html)."""
    with user_errors():
        check_output_directory(out, DEMO, overwrite=overwrite)
        with start_up():
            from bertgeom.pipeline.demo import run_demo

        options = DemoOptions(
            preset,
            epochs,
            seed,
            lineages,
            lineage_epochs,
            lineage_workers,
            checkpoint_schedule if over_training else None,
        )
        summary = run_demo(out, options, _ConsoleListener(), overwrite=overwrite)
        console.print(f"report: {summary.page}", highlight=False)
        console.print(
            f"demo finished in {summary.total():.0f} s: {summary.timings()}", highlight=False
        )


class _ConsoleListener(DemoListener):
    """The demo on stderr: each step numbered, then timed; progress bars; results in lines."""

    def step(self, number: int, count: int, title: str) -> None:
        console.print(f"[bold]{number}/{count}[/] {title}")

    def step_done(self, name: str, seconds: float) -> None:
        console.print(f"    {name}: {seconds:.1f} s", highlight=False)

    @contextmanager
    def building_dataset(self) -> Iterator[None]:
        with building_status():
            yield

    @contextmanager
    def training(self) -> Iterator[ProgressCallback]:
        with training_bar() as advance:
            yield advance

    def evaluated(self, metrics: dict[str, Any], out: Path) -> None:
        print_metrics(metrics, out)

    @contextmanager
    def leaving_lineages_out(self) -> Iterator[tuple[ProgressCallback, Announce]]:
        with lineage_bar() as callbacks:
            yield callbacks

    def lineages_left_out(self, table: pd.DataFrame, seconds: float, out: Path) -> None:
        print_lineages(table, seconds, out)

    @contextmanager
    def analysing(self) -> Iterator[AnalysisProgress]:
        with analysis_bar() as callbacks:
            yield callbacks

    def analysed(self, summary: AnalysisSummary) -> None:
        print_analysis_summary(summary)

    @contextmanager
    def analysing_over_training(self) -> Iterator[AnalysisProgress]:
        with progress_bar() as bar:
            current = [bar.add_task("analysing the checkpoints", total=None)]

            def on_start(loaded: LoadedModel, expected: int | None) -> None:
                current[0] = bar.add_task("analysing a checkpoint", total=expected)

            yield AnalysisProgress(lambda n: bar.advance(current[0], n), on_start)

    def analysed_over_training(self, summary: OverTrainingSummary) -> None:
        steps = ", ".join(map(str, summary.steps))
        console.print(
            f"{len(summary.steps)} checkpoints (steps {steps}), {summary.inputs} inputs each, "
            f"in {summary.seconds:.1f} s -> {summary.out}",
            highlight=False,
        )

    @contextmanager
    def drawing_report(self) -> Iterator[None]:
        with console.status("drawing the figures"):
            yield
