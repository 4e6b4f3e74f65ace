"""``analyze`` on Dask: each worker streams one shard of the inputs through the engine and
returns its measurements' states and its per-input rows; the client merges them in shard order.

Why merging in shard order: the shards are contiguous ranges of input positions, so merging
them in order gives the same states as one pass (to float tolerance: sums are added in another
order), keeps the ``[CLS]`` points of the separability probe in input order, and lets the
client write ``inputs.parquet`` and ``predictions.parquet`` in input order, renumbering
``input_index`` by the inputs the shards before analysed (a shard cannot know how many of the
records before it were skipped).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bertgeom.analysis import (
    AnalysisOptions,
    InputSpec,
    Predictions,
    ProgressCallback,
    RowWriter,
    build_measurements,
    open_source,
)
from bertgeom.capture.engine import EngineTimings, run_measurements
from bertgeom.capture.input_batch import InputStats
from bertgeom.capture.input_source import InputSource
from bertgeom.capture.loading import LoadedModel, load_model
from bertgeom.capture.measurement import Measurement
from bertgeom.capture.measurements import GateMeasurement
from bertgeom.errors import InputError
from bertgeom.scale.cluster import ClusterSpec, dask_client, run_shards, shard_positions


@dataclass(frozen=True)
class ShardTask:
    """What a worker needs to analyse one shard: paths (the model and the inputs are read on
    the worker, at the same paths), the options, the measurements' ``parameters`` (fixed by
    the client, so every shard measures alike) and the shard's ``positions``."""

    model_directory: Path
    spec: InputSpec
    options: AnalysisOptions
    parameters: dict[str, Any]
    positions: range
    torch_threads: int | None = None


@dataclass
class ShardResult:
    """A shard's measurement states (their row sinks detached), input counts, prediction
    counts, per-input rows by table (``input_index`` from 0 within the shard) and timings."""

    measurements: dict[str, Measurement]
    stats: InputStats
    rows: dict[str, pd.DataFrame]
    timings: EngineTimings
    correct: int = 0
    labelled: int = 0


@dataclass
class _RowCollector:
    """Holds a shard's per-input rows (``RowWriter``) until the shard returns them."""

    frames: dict[str, list[pd.DataFrame]] = field(default_factory=dict)

    def add_rows(self, name: str, frame: pd.DataFrame) -> None:
        self.frames.setdefault(name, []).append(frame)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {name: pd.concat(parts, ignore_index=True) for name, parts in self.frames.items()}


_models = threading.local()


def worker_model(directory: Path, options: AnalysisOptions) -> LoadedModel:
    """The model of this worker thread, loaded once per directory, file times, weights and
    device (a thread of its own: the engine hooks the model's modules while a shard runs)."""
    seed = options.initial_weights_seed
    times = max(path.stat().st_mtime_ns for path in directory.iterdir())
    key = (str(directory), times, seed, options.device)
    cached: tuple[object, LoadedModel] | None = getattr(_models, "cached", None)
    if cached is None or cached[0] != key:
        loaded = load_model(directory, initial_weights_seed=seed)
        torch.nn.Module.to(loaded.model, torch.device(options.device))
        _models.cached = cached = (key, loaded)
    return cached[1]


def open_shard(
    model_directory: Path,
    spec: InputSpec,
    options: AnalysisOptions,
    positions: range,
    torch_threads: int | None,
) -> tuple[LoadedModel, InputSource]:
    """On a worker: its torch threads set, the model (cached) and the shard's input source."""
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    loaded = worker_model(model_directory, options)
    return loaded, open_source(loaded, spec, options, positions)


def analyze_shard(task: ShardTask) -> ShardResult:
    """Run on a worker: analyse the inputs at ``task.positions`` as a single process would."""
    options = task.options
    loaded, source = open_shard(
        task.model_directory, task.spec, options, task.positions, task.torch_threads
    )
    rows = _RowCollector()
    measurements = build_measurements(loaded, source, options, task.parameters, rows)
    predictions = Predictions(rows, loaded.class_names) if loaded.class_names is not None else None
    timings = run_measurements(
        loaded,
        source.batches(options.batch_size),
        list(measurements.values()),
        include_padding=options.include_padding,
        device=options.device,
        on_batch=predictions,
        overlap=options.overlap,
    )
    for measurement in measurements.values():
        if isinstance(measurement, GateMeasurement):
            measurement.records = None  # its rows travel in ShardResult.rows
    return ShardResult(
        measurements,
        source.stats,
        rows.tables(),
        timings,
        predictions.correct if predictions else 0,
        predictions.labelled if predictions else 0,
    )


@dataclass
class ShardedAnalysis:
    """The client's side of ``analyze`` on the Dask ``cluster`` (``scale.executor``):
    :meth:`run` in place of the engine's single pass."""

    cluster: ClusterSpec
    model_directory: Path
    spec: InputSpec
    options: AnalysisOptions
    parameters: dict[str, Any]

    def tasks(self, positions: Sequence[range], torch_threads: int | None) -> list[ShardTask]:
        """One task per shard; paths absolute, as workers may run elsewhere."""
        spec = replace(
            self.spec,
            path=self.spec.path.resolve(),
            labels=self.spec.labels.resolve() if self.spec.labels else None,
        )
        options = replace(self.options, max_inputs=None, scheduler=None, dask_workers=None)
        directory = Path(self.model_directory).resolve()
        return [
            ShardTask(directory, spec, options, self.parameters, shard, torch_threads)
            for shard in positions
        ]

    def run(
        self,
        source: InputSource,
        measurements: dict[str, Measurement],
        predictions: Predictions | None,
        writer: RowWriter,
        progress: ProgressCallback | None = None,
    ) -> EngineTimings:
        """Analyse every shard on the cluster and merge the results into ``measurements``
        (replaced by name), ``predictions`` (counts) and ``source.stats``; the rows go to
        ``writer`` in input order. ``source`` is the whole source, opened by the client."""
        started = time.perf_counter()
        count = source.positions_count()
        merged = _Merger(measurements, predictions, writer, source.stats)
        with dask_client(self.cluster) as client:
            tasks = self.tasks(shard_positions(client, count), self.cluster.torch_threads())
            waiting: dict[int, ShardResult] = {}
            for index, result in run_shards(client, analyze_shard, tasks):
                if progress is not None:
                    progress(result.stats.analysed)
                waiting[index] = result
                while merged.shards in waiting:
                    merged.add(waiting.pop(merged.shards))
        if merged.stats.analysed == 0:
            skipped = ", ".join(f"{n} {why}" for why, n in merged.stats.skipped.most_common())
            raise InputError(
                f"{merged.stats.path}: no input to analyse"
                + (f" ({skipped} skipped)" if skipped else "")
            )
        source.stats = merged.stats
        merged.timings.total = time.perf_counter() - started
        return merged.timings


class _Merger:
    """Adds shard results, in shard order, to the client's measurements, counts and rows."""

    def __init__(
        self,
        measurements: dict[str, Measurement],
        predictions: Predictions | None,
        writer: RowWriter,
        stats: InputStats,
    ) -> None:
        self.measurements = measurements
        self.predictions = predictions
        self.writer = writer
        self.stats = stats
        self.timings = EngineTimings()
        self.shards = 0

    def add(self, result: ShardResult) -> None:
        for name, state in result.measurements.items():
            self.measurements[name] = self.measurements[name].merge(state)
        for name, frame in result.rows.items():
            frame["input_index"] += self.stats.analysed
            self.writer.add_rows(name, frame)
        if self.predictions is not None:
            self.predictions.add_counts(result.correct, result.labelled)
        self.stats = self.stats.merge(result.stats)
        timings, shard = self.timings, result.timings
        timings.measures += shard.measures
        timings.inputs += shard.inputs
        timings.waiting += shard.waiting
        timings.joining += shard.joining
        timings.batches += shard.batches
        timings.chunks += shard.chunks
        timings.inputs_analysed += shard.inputs_analysed
        for name, seconds in shard.per_measurement.items():
            timings.per_measurement[name] = timings.per_measurement.get(name, 0.0) + seconds
        self.shards += 1
