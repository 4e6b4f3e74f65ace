"""Across seeds on the command line: ``train --seeds`` and ``analyze --over-seeds``, with
their progress bars and the lines they print."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

try:  # typer >= 0.22 vendors click as typer._click; older versions use click itself
    from typer._click.core import ParameterSource
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.core import ParameterSource  # type: ignore[assignment]

from bertgeom.cli.common import SeriesProgress, console, progress_bar, start_up
from bertgeom.errors import InputError
from bertgeom.model.seed_models import parse_seeds
from bertgeom.outputs import SEED_MODELS, check_output_directory

if TYPE_CHECKING:  # heavy imports (torch) stay out of 'bertgeom --help'
    import pandas as pd

    from bertgeom.analysis import AnalysisOptions, InputSpec
    from bertgeom.model.train import ProgressCallback, TrainingOptions


def given(ctx: typer.Context, parameter: str) -> bool:
    """Whether ``parameter`` was given on the command line (not left at its default)."""
    return ctx.get_parameter_source(parameter) == ParameterSource.COMMANDLINE


def checked_seeds(
    ctx: typer.Context, seeds: str, out: Path, data: Path | None, overwrite: bool
) -> tuple[int, ...]:
    """``train --seeds``: the seeds, and ``out`` checked as a directory of models over seeds,
    before any work (an :class:`InputError` in one line otherwise)."""
    if given(ctx, "seed"):
        raise InputError("--seeds and --seed together: give every seed in --seeds")
    chosen = parse_seeds(seeds)
    check_output_directory(out, SEED_MODELS, inputs=[data], overwrite=overwrite)
    return chosen


def train_seeds(
    seeds: tuple[int, ...],
    out: Path,
    options: TrainingOptions,
    dataset_for: Callable[[int], pd.DataFrame],
    bar: Callable[[], AbstractContextManager[ProgressCallback]],
) -> None:
    """Train ``options`` under every seed into ``out/seed-N`` (``dataset_for(seed)`` the
    dataset of each) under ``bar`` with one line per seed, then a summary line."""
    with start_up():
        from bertgeom.pipeline.seeds import train_over_seeds

    def on_seed(seed: int, index: int, count: int) -> None:
        console.print(f"seed {seed} ({index + 1}/{count})", highlight=False)

    with bar() as advance:
        done = train_over_seeds(seeds, out, options, dataset_for, advance, on_seed)
    scores = ", ".join(
        f"{seed} {report.history[report.best_epoch - 1]['validation_macro_f1']:.4f}"
        for seed, report in done.reports.items()
    )
    console.print(
        f"trained {options.preset} under {len(seeds)} seeds in {done.seconds:.0f} s, "
        f"validation macro-F1 by seed: {scores} -> {out}",
        highlight=False,
    )


def run_over_seeds(
    models: str | Path,
    spec: InputSpec,
    out: Path,
    options: AnalysisOptions,
    *,
    overwrite: bool = False,
    measurements: Mapping[str, Any] | None = None,
) -> None:
    """``analyze_over_seeds`` with a progress bar per seed and a one-line summary."""
    import bertgeom.scale  # noqa: F401  (the Dask executor, as in run_analysis)
    from bertgeom.model.seed_models import list_seed_models
    from bertgeom.pipeline.over_seeds import analyze_over_seeds

    list_seed_models(Path(models))  # not a directory of seeds: one line before anything else
    with progress_bar() as bar:
        series = SeriesProgress(bar)
        summary = analyze_over_seeds(
            Path(models),
            spec,
            out,
            options,
            progress=series.advance,
            on_start=series.on_start,
            on_stage=series.on_stage,
            on_seed=lambda model, index, count: series.item(
                f"seed {model.seed} ({index + 1}/{count})"
            ),
            overwrite=overwrite,
            measurements=measurements,
        )
    console.print(
        f"{len(summary.seeds)} seeds ({', '.join(map(str, summary.seeds))}), {summary.inputs} "
        f"inputs each, in {summary.seconds:.1f} s -> {summary.out}",
        highlight=False,
    )
