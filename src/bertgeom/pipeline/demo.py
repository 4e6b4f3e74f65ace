"""The demo: the case study end to end on the embedded data, each step timed and told to a
listener (``pipeline.options.DemoListener``): prepare the data, train (keeping a few
checkpoints), evaluate, leave lineages out, analyse the model (head ablation, untrained
control), analyse its checkpoints over training, write the report."""

from __future__ import annotations

from pathlib import Path

from bertgeom.analysis import CONTROL_RANDOM_INIT, AnalysisOptions, InputSpec, analyze
from bertgeom.analysis.over_training import analyze_over_training
from bertgeom.genomics.dataset import build_dataset, save_dataset
from bertgeom.model.experiment import evaluate_classifier, write_evaluation
from bertgeom.model.storage import load_classifier
from bertgeom.model.train import TrainingOptions
from bertgeom.outputs import DEMO, check_output_directory
from bertgeom.pipeline.options import (
    DEMO_ABLATION,
    DemoListener,
    DemoOptions,
    DemoSummary,
    StepTimer,
)
from bertgeom.pipeline.steps import leave_lineages_out, train_and_record
from bertgeom.report.build import build_report


def run_demo(
    out: Path,
    options: DemoOptions | None = None,
    listener: DemoListener | None = None,
    *,
    overwrite: bool = False,
) -> DemoSummary:
    """Run the demo into ``out``: ``data/``, ``model/`` (with ``training.json`` and
    ``checkpoints/``), ``metrics.json`` and the confusion matrix, ``lineages/`` (unless
    ``options.lineages`` is off), ``analysis/`` (with ``control/``), ``training/`` (the
    checkpoints analysed over training; none when ``options.checkpoints`` is None) and
    ``report.html``, the analysis's report with the over-training section.

    ``out`` must be new, empty or an earlier demo's output (``bertgeom.outputs``; any other
    directory only with ``overwrite``); it is checked before any work starts.
    """
    check_output_directory(out, DEMO, overwrite=overwrite)
    options = options or DemoOptions()
    listener = listener or DemoListener()
    training = TrainingOptions(
        options.preset, options.epochs, seed=options.seed, checkpoints=options.checkpoints
    )
    lineage_training = TrainingOptions("tiny", options.lineage_epochs, seed=options.seed)
    over_training = options.checkpoints is not None
    steps = StepTimer(5 + options.lineages + over_training, listener)
    with steps("preparing the embedded data (alignment, synthetic spikes, splits)", "data"):
        with listener.building_dataset():
            dataset, outside = build_dataset(seed=options.seed)
        save_dataset(dataset, outside, out / "data")
    with (
        steps(f"training the {options.preset} preset", "training"),
        listener.training() as progress,
    ):
        report = train_and_record(dataset, out / "model", training, progress)
    with steps("evaluating on the held-out test split", "evaluation"):
        metrics = evaluate_classifier(load_classifier(out / "model"), dataset, outside)
        metrics["training"] = {
            "history": report.history,
            "best_epoch": report.best_epoch,
            "seconds": report.seconds,
        }
        write_evaluation(metrics, out, f"bertgeom demo ({options.preset})")
        listener.evaluated(metrics, out)
    if options.lineages:
        with steps(
            "leave-lineage-out: three folds of the tiny preset, each trained without whole "
            "lineages, then called on them",
            "leave-lineage-out",
        ):
            with listener.leaving_lineages_out() as (progress, announce):
                table, seconds = leave_lineages_out(
                    out / "lineages", lineage_training, options.lineage_workers, progress, announce
                )
            listener.lineages_left_out(table, seconds, out / "lineages")
    with steps(
        "analysing the model on the held-out test split: every measure, head ablation, and "
        "the same architecture untrained as the control",
        "analysis",
    ):
        test_split = InputSpec("data", out / "data", split="test")
        analysis = AnalysisOptions(ablation=DEMO_ABLATION, control=CONTROL_RANDOM_INIT)
        with listener.analysing() as callbacks:
            summary = analyze(
                out / "model",
                test_split,
                out / "analysis",
                analysis,
                progress=callbacks.progress,
                on_start=callbacks.on_start,
                on_stage=callbacks.on_stage,
                overwrite=overwrite,
            )
        listener.analysed(summary)
    if over_training:
        with steps(
            "analysing the checkpoints over training on the same inputs (no ablation)",
            "over-training",
        ):
            with listener.analysing_over_training() as callbacks:
                over = analyze_over_training(
                    out / "model",
                    test_split,
                    out / "training",
                    AnalysisOptions(),
                    progress=callbacks.progress,
                    on_start=callbacks.on_start,
                    on_stage=callbacks.on_stage,
                    overwrite=overwrite,
                )
            listener.analysed_over_training(over)
    with steps("writing the report", "report"), listener.drawing_report():
        page = build_report(
            out / "analysis",
            out / "report.html",
            over_training=out / "training" if over_training else None,
        )
    return DemoSummary(page, dict(steps.seconds))
