"""The Dask executor of ``analyze`` (``bertgeom.analysis.executor.Executor``): the measurement
pass sharded by ``scale.analysis``, the ablation by ``scale.ablation``, and one cluster for
the whole analysis, its ablation and its control (``scale.cluster.shared_cluster``).

Importing this module (``bertgeom.scale`` does) registers it, so that ``analyze`` with
``AnalysisOptions.scheduler`` or ``dask_workers`` finds it; or pass one yourself::

    analyze(model, spec, out, options, executor=DaskExecutor(ClusterSpec(workers=2)))
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

from bertgeom.analysis.executor import DASK, AnalysisRun, register_executor
from bertgeom.analysis.options import AnalysisOptions
from bertgeom.capture.ablation import AblationRun
from bertgeom.capture.engine import EngineTimings
from bertgeom.scale.ablation import ablate_on_dask
from bertgeom.scale.analysis import ShardedAnalysis
from bertgeom.scale.cluster import ClusterSpec, shared_cluster


@dataclass(frozen=True)
class DaskExecutor:
    """Runs the passes of an analysis on ``cluster``: a running scheduler, or a local cluster
    started at the first pass and stopped when the analysis ends."""

    cluster: ClusterSpec

    @classmethod
    def from_options(cls, options: AnalysisOptions) -> DaskExecutor:
        """The executor of ``options.scheduler`` or ``options.dask_workers`` (one of them)."""
        return cls(ClusterSpec(options.scheduler, options.dask_workers))

    def session(self) -> AbstractContextManager[object]:
        return shared_cluster(self.cluster)

    def measure(self, run: AnalysisRun) -> EngineTimings:
        sharded = ShardedAnalysis(
            self.cluster, run.loaded.directory, run.spec, run.options, run.parameters
        )
        return sharded.run(run.source, run.measurements, run.predictions, run.writer, run.progress)

    def ablate(self, run: AnalysisRun) -> AblationRun:
        count = run.source.positions_count()
        return ablate_on_dask(
            self.cluster, run.loaded.directory, run.spec, run.options, count, run.progress
        )


register_executor(DASK, DaskExecutor.from_options)
