"""Where the passes over the inputs run: the ``Executor`` protocol, the local executor (this
process), and the registry through which other packages offer theirs.

Why a registry: the Dask executor lives in ``bertgeom.scale``, which builds on this package;
were ``analyze`` to import it, the two packages would import each other. Instead
``bertgeom.scale`` registers its executor when it is imported, and ``executor_for`` finds it
when the options ask for a cluster (``AnalysisOptions.scheduler`` or ``dask_workers``). A
caller may also pass an executor to ``analyze`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from bertgeom.analysis.measurements import Predictions, RowWriter
from bertgeom.analysis.options import AnalysisOptions, InputSpec, ProgressCallback, open_source
from bertgeom.capture.ablation import AblationRun, run_ablation
from bertgeom.capture.engine import EngineTimings, run_measurements
from bertgeom.capture.input_batch import InputBatch
from bertgeom.capture.input_source import InputSource
from bertgeom.capture.loading import LoadedModel
from bertgeom.capture.measurement import Measurement
from bertgeom.errors import InputError

DASK = "dask"
"""The registry's name of the executor that shards over a Dask cluster (``bertgeom.scale``)."""


@dataclass
class AnalysisRun:
    """One analysis under way, as an executor sees it: the model (loaded by the client), the
    inputs (``source`` opened by the client over all of them), the options, the measurements
    by name (an executor may replace one by its merged state) and the ``parameters`` they were
    built with (``analysis.measurements``; a Dask executor builds the same on its workers),
    the predictions and where per-input rows go."""

    loaded: LoadedModel
    spec: InputSpec
    options: AnalysisOptions
    source: InputSource
    measurements: dict[str, Measurement]
    predictions: Predictions | None
    writer: RowWriter
    parameters: dict[str, Any]
    progress: ProgressCallback | None = None


class Executor(Protocol):
    """Runs the passes of an analysis over its inputs."""

    def session(self) -> AbstractContextManager[object]:
        """Held around a whole analysis, its ablation and its control (one cluster for all)."""
        ...

    def measure(self, run: AnalysisRun) -> EngineTimings:
        """Stream every input through the measurements of ``run`` (and its predictions and
        rows), updating ``run.source.stats``; ``run.progress(n)`` after each n inputs."""
        ...

    def ablate(self, run: AnalysisRun) -> AblationRun:
        """The head ablation of ``run.options.ablation`` over the inputs of ``run``."""
        ...


class LocalExecutor:
    """Every pass in this process, on ``options.device``."""

    def session(self) -> AbstractContextManager[object]:
        return nullcontext()

    def measure(self, run: AnalysisRun) -> EngineTimings:
        predictions, progress = run.predictions, run.progress

        def after_batch(batch: InputBatch, logits: Tensor | None) -> None:
            if predictions is not None:
                predictions(batch, logits)
            if progress is not None:
                progress(len(batch))

        options = run.options
        return run_measurements(
            run.loaded,
            run.source.batches(options.batch_size),
            list(run.measurements.values()),
            include_padding=options.include_padding,
            device=torch.device(options.device),
            on_batch=after_batch,
            overlap=options.overlap,
        )

    def ablate(self, run: AnalysisRun) -> AblationRun:
        """On a fresh pass (or two, with ``mean``) over the inputs (``capture.ablation``)."""
        options = run.options
        return run_ablation(
            run.loaded,
            lambda: open_source(run.loaded, run.spec, options).batches(options.batch_size),
            options.ablation,
            device=torch.device(options.device),
            on_batch=run.progress,
        )


ExecutorFactory = Callable[[AnalysisOptions], Executor]
_FACTORIES: dict[str, ExecutorFactory] = {}


def register_executor(name: str, factory: ExecutorFactory) -> None:
    """Offer ``factory(options)`` as the executor ``name`` (``DASK``: the one for options that
    ask for a cluster); registering a name again replaces its factory."""
    _FACTORIES[name] = factory


def executor_for(options: AnalysisOptions) -> Executor:
    """The executor that ``options`` ask for: a registered Dask one when they name a cluster,
    else a :class:`LocalExecutor`."""
    if not options.on_cluster:
        return LocalExecutor()
    factory = _FACTORIES.get(DASK)
    if factory is None:
        raise InputError(
            "the options ask for a Dask cluster (scheduler or dask_workers) but no Dask "
            "executor is registered: pass executor=bertgeom.scale.executor.DaskExecutor."
            "from_options(options) to analyze, or import bertgeom.scale first"
        )
    return factory(options)
