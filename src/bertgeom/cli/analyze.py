"""``bertgeom analyze``: gates, subspaces and cone index of any BERT-family model on inputs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

try:  # typer >= 0.22 vendors click as typer._click; older versions use click itself
    from typer._click.core import ParameterSource
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.core import ParameterSource  # type: ignore[assignment]

from bertgeom.cli.analysis_output import analysis_bar, print_analysis_summary
from bertgeom.cli.common import (
    SEED_MAX,
    BatchSizeOption,
    DaskWorkersOption,
    DeviceOption,
    OverwriteOption,
    SchedulerOption,
    SeriesProgress,
    console,
    progress_bar,
    start_up,
    user_errors,
)
from bertgeom.cli.seeds import run_over_seeds
from bertgeom.errors import InputError
from bertgeom.outputs import OVER_SEEDS, OVER_TRAINING, RESULTS, check_output_directory

if TYPE_CHECKING:  # heavy imports (torch) stay out of 'bertgeom --help'
    from bertgeom.analysis import AnalysisOptions, InputSpec


def analyze(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Results directory to write.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Model directory (Hugging Face format, safetensors) or Hugging Face hub id "
            "ORG/NAME[@REVISION] from the local cache.",
        ),
    ] = None,
    like: Annotated[
        Path | None,
        typer.Option(
            "--like",
            help="Repeat the analysis of this results directory from its manifest: the same "
            "model, inputs, options and measurement parameters. Options given beside it "
            "change those (e.g. another --model).",
        ),
    ] = None,
    text: Annotated[
        Path | None, typer.Option("--text", help="Plain text, one input per line.")
    ] = None,
    fasta: Annotated[
        Path | None,
        typer.Option("--fasta", help="Genomes or spikes (FASTA, .gz, .xz); bertgeom classifiers."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Dataset directory from 'bertgeom data split'."),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="With --data: analyse one split only.")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="TSV with input_id (or record_id) and label columns."),
    ] = None,
    max_inputs: Annotated[
        int | None,
        typer.Option("--max-inputs", min=1, help="Analyse at most this many inputs."),
    ] = None,
    batch_size: BatchSizeOption = 32,
    max_length: Annotated[
        int | None,
        typer.Option(
            "--max-length", min=3, help="Tokens per input (default: the model's maximum)."
        ),
    ] = None,
    include_padding: Annotated[
        bool,
        typer.Option(
            "--include-padding", help="Count padding positions, as the paper's authors' code did."
        ),
    ] = False,
    heads: Annotated[
        str | None,
        typer.Option(
            "--heads",
            help="Heads whose class-mean maps are kept: 'all' or layer:head pairs, e.g. "
            "0:3,2:* (default: all heads up to 48, else the first heads of each layer).",
        ),
    ] = None,
    map_length: Annotated[
        int | None,
        typer.Option("--map-length", min=1, help="Positions kept in the class-mean maps."),
    ] = None,
    global_measures: Annotated[
        bool,
        typer.Option(
            "--global/--no-global",
            help="The global measures too: cone index, distribution of the stream, [CLS] "
            "separability (layers.parquet) and, for the classifier, attention on the spike.",
        ),
    ] = True,
    overlap: Annotated[
        bool,
        typer.Option(
            "--overlap/--no-overlap",
            help="Measure on a second thread while the forward pass goes on (idle cores).",
        ),
    ] = False,
    device: DeviceOption = "cpu",
    scheduler: SchedulerOption = None,
    dask_workers: DaskWorkersOption = None,
    ablation: Annotated[
        str | None,
        typer.Option(
            "--ablation",
            help="Classifiers: head ablation into ablation.parquet, comma-separated kinds: "
            "zero (each head's output zeroed, and each layer's whole attention block), mean "
            "(replaced by its mean over the data; a second pass), keys (spike classifiers: one "
            "head's attention to defining-mutation tokens masked, against as many "
            "position-matched tokens). E.g. zero,mean,keys.",
        ),
    ] = None,
    control: Annotated[
        str | None,
        typer.Option(
            "--control",
            help="'random-init': also analyse the same architecture at its initial, untrained "
            "weights on the same inputs, into OUT/control (the baseline of every measure).",
        ),
    ] = None,
    control_seed: Annotated[
        int,
        typer.Option(
            "--control-seed", min=0, max=SEED_MAX, help="Seed of the control's initial weights."
        ),
    ] = 0,
    over_training: Annotated[
        bool,
        typer.Option(
            "--over-training",
            help="Analyse every checkpoint of a model trained with 'bertgeom train "
            "--checkpoints' the same way: OUT/checkpoints/step-N (a results directory each) "
            "and OUT/training.parquet (all their heads and layers rows, by step).",
        ),
    ] = False,
    over_seeds: Annotated[
        bool,
        typer.Option(
            "--over-seeds",
            help="Analyse every model of a directory from 'bertgeom train --seeds' the same way: "
            "OUT/seeds/seed-N (a results directory each) and OUT/seeds.parquet (each headline "
            "number's mean, spread and agreement across the seeds).",
        ),
    ] = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Analyse a BERT-family model on inputs: gates, subspaces, cone index -> a results folder."""
    with user_errors():
        if model is None and like is None:
            raise InputError("give --model (or --like RESULTS to repeat an analysis)")
        inputs = [Path(model) if model else None, like, text, fasta, data, labels]
        if over_training and over_seeds:
            raise InputError("--over-training and --over-seeds: choose one")
        kind = OVER_TRAINING if over_training else OVER_SEEDS if over_seeds else RESULTS
        check_output_directory(out, kind, inputs=inputs, overwrite=overwrite)
        if over_training and control is not None:
            raise InputError(
                "--control with --over-training: step 0 of the checkpoints is the untrained model"
            )
        with start_up():
            import torch

            from bertgeom.analysis import CONTROL_RANDOM_INIT, AnalysisOptions, InputSpec
            from bertgeom.capture.ablation_plan import ABLATION_KINDS

        given = [(kind, path) for kind, path in (("text", text), ("fasta", fasta), ("data", data))]
        chosen = [(kind, path) for kind, path in given if path is not None]
        if len(chosen) > 1 or (len(chosen) == 0 and like is None):
            raise InputError("give exactly one of --text, --fasta or --data")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA device is available")
        if device == "mps" and not torch.backends.mps.is_available():
            raise InputError("--device mps: no Apple GPU is available")
        if control not in (None, CONTROL_RANDOM_INIT):
            raise InputError(f"--control: {control!r} is unknown; the control is 'random-init'")
        kinds = tuple(filter(None, (k.strip() for k in (ablation or "").split(","))))
        unknown = [kind for kind in kinds if kind not in ABLATION_KINDS]
        if unknown or (ablation is not None and not kinds):
            raise InputError(
                f"--ablation: unknown {', '.join(unknown) or repr(ablation)}; choose from "
                f"{', '.join(ABLATION_KINDS)}"
            )
        spec = (
            InputSpec(chosen[0][0], chosen[0][1], labels=labels, split=split)  # type: ignore[arg-type]
            if chosen
            else None
        )
        options = AnalysisOptions(
            batch_size=batch_size,
            max_length=max_length,
            max_inputs=max_inputs,
            include_padding=include_padding,
            map_heads=heads,
            map_length=map_length,
            global_measures=global_measures,
            overlap=overlap,
            device=device,
            scheduler=scheduler,
            dask_workers=dask_workers,
            ablation=kinds,
            control=control,
            control_seed=control_seed,
        )
        if like is not None:
            _repeat(ctx, like, model, spec, out, options, overwrite, over_training, over_seeds)
            return
        assert model is not None and spec is not None
        if over_training:
            run_over_training(model, spec, out, options, overwrite=overwrite)
            return
        if over_seeds:
            run_over_seeds(model, spec, out, options, overwrite=overwrite)
            return
        run_analysis(model, spec, out, options, overwrite=overwrite)


_OPTION_FIELDS = {
    "batch_size": "batch_size",
    "max_length": "max_length",
    "max_inputs": "max_inputs",
    "include_padding": "include_padding",
    "heads": "map_heads",
    "map_length": "map_length",
    "global_measures": "global_measures",
    "overlap": "overlap",
    "device": "device",
    "scheduler": "scheduler",
    "dask_workers": "dask_workers",
    "ablation": "ablation",
    "control": "control",
    "control_seed": "control_seed",
}
"""Command-line parameters of ``analyze`` and the ``AnalysisOptions`` field each sets."""


def _repeat(
    ctx: typer.Context,
    like: Path,
    model: str | None,
    spec: InputSpec | None,
    out: Path,
    options: AnalysisOptions,
    overwrite: bool,
    over_training: bool = False,
    over_seeds: bool = False,
) -> None:
    """``--like``: the plan of ``like``'s manifest, changed by the options given on the
    command line (``analysis.like``); with ``over_training``, run on every checkpoint of
    the plan's model; with ``over_seeds``, on every model of the seeds directory given by
    ``--model``."""
    from dataclasses import replace

    from bertgeom.analysis.like import plan_from_results

    plan = plan_from_results(like)
    changes = {
        field: getattr(options, field)
        for parameter, field in _OPTION_FIELDS.items()
        if ctx.get_parameter_source(parameter) == ParameterSource.COMMANDLINE
    }
    if spec is None and any(
        ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
        for name in ("labels", "split")
    ):
        labels, split = ctx.params["labels"], ctx.params["split"]
        spec = replace(
            plan.spec,
            labels=labels if labels is not None else plan.spec.labels,
            split=split if split is not None else plan.spec.split,
        )
    plan = plan.with_changes(model=model, spec=spec, **changes)
    check_output_directory(
        out,
        OVER_TRAINING if over_training else OVER_SEEDS if over_seeds else RESULTS,
        inputs=[Path(plan.model), plan.spec.path, plan.spec.labels, like],
        overwrite=overwrite,
    )
    run = run_over_training if over_training else run_over_seeds if over_seeds else run_analysis
    run(
        plan.model,
        plan.spec,
        out,
        plan.options,
        overwrite=overwrite,
        measurements=plan.measurements,
    )


def run_analysis(
    model: str | Path,
    spec: InputSpec,
    out: Path,
    options: AnalysisOptions,
    *,
    overwrite: bool = False,
    measurements: Mapping[str, Any] | None = None,
) -> None:
    """``analyze`` with a progress bar and a one-line summary (``measurements``: parameters
    of measurements, see ``analysis.analyze``)."""
    # bertgeom.scale registers the Dask executor of --scheduler and --dask-workers
    import bertgeom.scale  # noqa: F401
    from bertgeom.analysis import analyze

    with analysis_bar() as callbacks:
        summary = analyze(
            model,
            spec,
            out,
            options,
            progress=callbacks.progress,
            on_start=callbacks.on_start,
            on_stage=callbacks.on_stage,
            overwrite=overwrite,
            measurements=measurements,
        )
    print_analysis_summary(summary)


def run_over_training(
    model: str | Path,
    spec: InputSpec,
    out: Path,
    options: AnalysisOptions,
    *,
    overwrite: bool = False,
    measurements: Mapping[str, Any] | None = None,
) -> None:
    """``analyze_over_training`` with a progress bar per checkpoint and a one-line summary."""
    import bertgeom.scale  # noqa: F401  (the Dask executor, as in run_analysis)
    from bertgeom.analysis.over_training import analyze_over_training, checkpoints_of

    checkpoints_of(model)  # none: one line before anything else
    with progress_bar() as bar:
        series = SeriesProgress(bar)
        summary = analyze_over_training(
            model,
            spec,
            out,
            options,
            progress=series.advance,
            on_start=series.on_start,
            on_stage=series.on_stage,
            on_checkpoint=lambda step, index, count: series.item(
                f"step {step.step} ({index + 1}/{count})"
            ),
            overwrite=overwrite,
            measurements=measurements,
        )
    steps = summary.steps
    console.print(
        f"{len(steps)} checkpoints (steps {steps[0]}..{steps[-1]}), {summary.inputs} inputs "
        f"each, in {summary.seconds:.1f} s -> {summary.out}",
        highlight=False,
    )
