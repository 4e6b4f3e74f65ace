"""Head ablation on Dask: each worker runs one pass of the ablation over its shard and returns
an :class:`~bertgeom.capture.ablation.AblationPart`; the client merges them (counts add, so
the order does not matter).

With ``mean`` the ablation takes two rounds: the first pass's parts also carry each head's
summed outputs, the client turns the merged sums into the means over all the inputs, and the
second round replaces the heads by those means, shard by shard.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import reduce
from pathlib import Path

from torch import Tensor

from bertgeom.analysis import AnalysisOptions, InputSpec, ProgressCallback
from bertgeom.capture.ablation import AblationPart, AblationRun, ablation_pass
from bertgeom.measures.ablation import MEAN
from bertgeom.scale.analysis import open_shard
from bertgeom.scale.cluster import ClusterSpec, dask_client, run_shards, shard_positions


@dataclass(frozen=True)
class AblationShardTask:
    """One pass over one shard: paths read on the worker, the options (their ``ablation``
    kinds), the shard's ``positions``, which pass, and the second pass's ``means``."""

    model_directory: Path
    spec: InputSpec
    options: AnalysisOptions
    positions: range
    second: bool = False
    means: Tensor | None = None
    torch_threads: int | None = None


def ablate_shard(task: AblationShardTask) -> AblationPart:
    """Run on a worker: one pass of the ablation over the inputs at ``task.positions``."""
    options = task.options
    loaded, source = open_shard(
        task.model_directory, task.spec, options, task.positions, task.torch_threads
    )
    return ablation_pass(
        loaded,
        source.batches(options.batch_size),
        options.ablation,
        task.second,
        task.means,
        device=options.device,
    )


def ablate_on_dask(
    cluster: ClusterSpec,
    model_directory: Path,
    spec: InputSpec,
    options: AnalysisOptions,
    count: int,
    progress: ProgressCallback | None = None,
) -> AblationRun:
    """The ablation of ``options.ablation`` over ``count`` input positions, sharded on
    ``cluster``."""
    started = time.perf_counter()
    spec = replace(
        spec, path=spec.path.resolve(), labels=spec.labels.resolve() if spec.labels else None
    )
    shard_options = replace(options, max_inputs=None, scheduler=None, dask_workers=None)
    directory = Path(model_directory).resolve()
    threads = cluster.torch_threads()
    with dask_client(cluster) as client:
        shards = shard_positions(client, count)

        def round_of(second: bool, means: Tensor | None = None) -> AblationPart:
            tasks = [
                AblationShardTask(directory, spec, shard_options, shard, second, means, threads)
                for shard in shards
            ]
            parts: list[AblationPart] = []
            for _, part in run_shards(client, ablate_shard, tasks):
                parts.append(part)
                if progress is not None:
                    progress(part.labelled + part.unlabelled)
            return reduce(AblationPart.merge, parts)

        first = round_of(False)
        run = AblationRun(first.accumulator, first.labelled, first.unlabelled)
        if MEAN in {ablation.mode for ablation in first.accumulator.ablations}:
            second = round_of(True, first.means())
            run.accumulator, run.passes = run.accumulator.merge(second.accumulator), 2
    run.seconds = time.perf_counter() - started
    return run
