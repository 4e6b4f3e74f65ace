"""``analyze``: a model directory and inputs in, a results directory out.

The run, step by step: load the model with eager attention (``capture.loading``), open the
inputs (``analysis.options.open_source``), stream them through the measurements on an executor
(``analysis.executor``: this process, or a Dask cluster), then the optional steps, the head
ablation and the untrained control, then the weights measured once, and everything written
atomically (``analysis.writing``, ``results.store``). ``docs/analysis.md`` shows how to run it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from bertgeom.analysis.executor import AnalysisRun, Executor, executor_for
from bertgeom.analysis.measurements import (
    Predictions,
    build_measurements,
    measurement_parameters,
    parameters_from_manifest,
)
from bertgeom.analysis.options import (
    CONTROL_DIRECTORY,
    CONTROL_RANDOM_INIT,
    AnalysisOptions,
    AnalysisSummary,
    InputSpec,
    ProgressCallback,
    map_heads_of,
    map_length_of,
    open_source,
)
from bertgeom.analysis.writing import manifest, write_results
from bertgeom.capture.ablation import AblationRun
from bertgeom.capture.ablation_plan import check_ablation
from bertgeom.capture.loading import LoadedModel, load_model
from bertgeom.errors import InputError
from bertgeom.measures.subspace_weights import weight_subspace_measures
from bertgeom.model.resolve import ModelName, resolve_model
from bertgeom.names import Table
from bertgeom.outputs import RESULTS, check_output_directory
from bertgeom.results.store import ResultsWriter

StartCallback = Callable[[LoadedModel, int | None], None]
StageCallback = Callable[[str, int | None], None]


@dataclass(frozen=True)
class _Callbacks:
    """What the caller hears of a run (see :func:`analyze`)."""

    progress: ProgressCallback | None = None
    on_start: StartCallback | None = None
    on_stage: StageCallback | None = None

    def stage(self, title: str, expected: int | None) -> None:
        if self.on_stage is not None:
            self.on_stage(title, expected)


def analyze(
    model_directory: ModelName,
    spec: InputSpec,
    out: Path,
    options: AnalysisOptions | None = None,
    progress: ProgressCallback | None = None,
    on_start: StartCallback | None = None,
    on_stage: StageCallback | None = None,
    *,
    overwrite: bool = False,
    executor: Executor | None = None,
    measurements: Mapping[str, Any] | None = None,
) -> AnalysisSummary:
    """Analyse ``spec``'s inputs with the model in ``model_directory`` (a directory, or a hub
    id in the local cache: ``bertgeom.model.resolve``) into ``out``.

    ``on_start(loaded, expected_inputs)`` is called once the model and inputs are open (for a
    progress bar); ``progress(n)`` after each batch of n inputs, in every stage;
    ``on_stage(title, expected_inputs)`` before the ablation and the control passes.
    ``out`` must be new, empty or an earlier results directory (``bertgeom.outputs``; any
    other directory only with ``overwrite``), and never the model or an input.
    ``executor`` runs the passes over the inputs; by default the one ``options`` ask for
    (``analysis.executor.executor_for``: this process, or the Dask executor that
    ``bertgeom.scale`` registers when options name a cluster). ``measurements``: the
    parameters of measurements by name (``analysis.measurements``; a manifest's, to repeat an
    analysis: ``analysis.like``), used instead of those ``options`` give for the measurements
    that ``options`` run.
    """
    options = options or AnalysisOptions()
    source = resolve_model(model_directory)
    check_output_directory(
        out,
        RESULTS,
        inputs=[source.directory, spec.path, spec.labels],
        overwrite=overwrite,
    )
    if executor is None:
        executor = executor_for(options)
    with executor.session():
        callbacks = _Callbacks(progress, on_start, on_stage)
        return _run(source, spec, out, options, executor, callbacks, measurements)


def _run(
    model_directory: ModelName,
    spec: InputSpec,
    out: Path,
    options: AnalysisOptions,
    executor: Executor,
    callbacks: _Callbacks,
    given_parameters: Mapping[str, Any] | None = None,
) -> AnalysisSummary:
    started = time.perf_counter()
    if options.control not in (None, CONTROL_RANDOM_INIT):
        raise InputError(f"--control: {options.control!r} is unknown; the control is 'random-init'")
    loaded = load_model(model_directory, initial_weights_seed=options.initial_weights_seed)
    if options.ablation:
        check_ablation(loaded, options.ablation)
    torch.nn.Module.to(loaded.model, torch.device(options.device))
    loaded_s = time.perf_counter() - started
    source = open_source(loaded, spec, options)
    parameters = measurement_parameters(
        loaded, source, options, map_heads_of(options, loaded), map_length_of(options, source)
    )
    if given_parameters is not None:
        parameters = {name: given_parameters.get(name, v) for name, v in parameters.items()}
    if callbacks.on_start is not None:
        callbacks.on_start(loaded, source.expected_inputs())
    with ResultsWriter(out) as writer:
        measurements = build_measurements(loaded, source, options, parameters, writer)
        predictions = (
            Predictions(writer, loaded.class_names) if loaded.class_names is not None else None
        )
        run = AnalysisRun(
            loaded,
            spec,
            options,
            source,
            measurements,
            predictions,
            writer,
            parameters,
            callbacks.progress,
        )
        timings = executor.measure(run)
        ablation = _ablation_step(run, executor, callbacks)
        if ablation is not None:
            writer.write_table(Table.ABLATION, ablation.accumulator.result())
        _control_step(model_directory, run, writer.staging, executor, callbacks)
        weights_started = time.perf_counter()
        weights = weight_subspace_measures(loaded.attention_weights())
        weights_s = time.perf_counter() - weights_started
        write_results(writer, run, weights)
        run_timings = {
            "load_s": round(loaded_s, 4),
            **timings.to_json(),
            "weights_s": round(weights_s, 4),
            "total_s": round(time.perf_counter() - started, 4),
            "inputs_per_s": round(timings.inputs_analysed / timings.total, 3)
            if timings.total
            else None,
        }
        writer.write_manifest(manifest(run, ablation, run_timings))
    return AnalysisSummary(
        out=out,
        inputs=source.stats.analysed,
        seconds=time.perf_counter() - started,
        skipped=dict(source.stats.skipped),
        truncated=source.stats.truncated,
        labels_unmatched=int(source.stats.extra.get("labels_unmatched", 0)),
    )


def _ablation_step(
    run: AnalysisRun, executor: Executor, callbacks: _Callbacks
) -> AblationRun | None:
    """Head ablation of ``options.ablation`` (``capture.ablation``) on a fresh pass (two with
    ``mean``) over the inputs, on the run's executor; None when not asked."""
    kinds = run.options.ablation
    if not kinds:
        return None
    expected = run.source.expected_inputs()
    passes = 2 if "mean" in kinds else 1
    callbacks.stage(
        f"head ablation ({', '.join(kinds)})",
        expected * passes if expected is not None else None,
    )
    return executor.ablate(run)


def _control_step(
    model_directory: ModelName,
    run: AnalysisRun,
    staging: Path,
    executor: Executor,
    callbacks: _Callbacks,
) -> None:
    """The untrained control (``options.control``): the same analysis of the same inputs at
    the architecture's initial weights, into ``control/`` of the results being written, on
    the same executor; nothing when not asked."""
    options = run.options
    if options.control is None:
        return
    control = replace(options, control=None, ablation=(), initial_weights_seed=options.control_seed)
    callbacks.stage("untrained control", run.source.expected_inputs())
    _run(
        model_directory,
        run.spec,
        staging / CONTROL_DIRECTORY,
        control,
        executor,
        _Callbacks(callbacks.progress),
        run.parameters,
    )


def analyze_in_turn(
    jobs: Iterable[tuple[ModelName, Path]],
    spec: InputSpec,
    options: AnalysisOptions,
    progress: ProgressCallback | None = None,
    on_start: StartCallback | None = None,
    on_stage: StageCallback | None = None,
    *,
    executor: Executor,
    measurements: Mapping[str, Any] | None = None,
) -> Iterator[AnalysisSummary]:
    """Analyse each ``(model, results directory)`` of ``jobs`` in turn on the same inputs and
    options, yielding each analysis's summary: the analysis over training (checkpoints) and over
    seeds (models). The measurement parameters are the first analysis's (or ``measurements``),
    so that every model is measured with the same ones (bins, thresholds, ...), as
    ``analyze --like`` repeats them. ``jobs`` is read lazily: a generator may announce each job
    as it is taken."""
    parameters = dict(measurements) if measurements is not None else None
    for model, results in jobs:
        summary = analyze(
            model,
            spec,
            results,
            options,
            progress,
            on_start,
            on_stage,
            executor=executor,
            measurements=parameters,
        )
        if parameters is None:
            manifest_file = json.loads((results / "manifest.json").read_text())
            parameters = parameters_from_manifest(manifest_file["measurements"])
        yield summary
