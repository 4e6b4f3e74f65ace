"""Connecting to Dask and running one task per shard, each shard's result taken exactly once.

Why Dask's ``distributed`` and not a pool of our own: it already reschedules the task of a
worker that died (up to ``distributed.scheduler.allowed-failures`` times) and runs the same way
on a laptop (``LocalCluster``) and on a cluster (a scheduler address).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from itertools import pairwise
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

from bertgeom.errors import BertgeomError, InputError

if TYPE_CHECKING:
    from distributed import Client

DASK_MISSING = "Dask is not installed: pip install 'bertgeom[dask]'"
WORKER_WAIT_S = 60
"""How long a scheduler may have no worker before the command gives up."""
SHARDS_PER_WORKER = 4
"""Shards per worker: more than one, so a fast worker takes more of them and a worker lost
mid-run costs a fraction of its share; few, as every shard reads its input up to its start."""

Task = TypeVar("Task")
Result = TypeVar("Result")


class ClusterError(BertgeomError):
    """The Dask cluster cannot be used (no scheduler at the address, no worker, a shard that
    kept killing its workers)."""


def require_distributed() -> ModuleType:
    """``distributed``, or one :class:`InputError` line saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise InputError(DASK_MISSING) from None
    return distributed


@dataclass(frozen=True)
class ClusterSpec:
    """Where to run: ``scheduler``, the address of a running Dask scheduler
    (``tcp://host:8786``), or ``workers``, a local cluster of that many worker processes."""

    scheduler: str | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        if (self.scheduler is None) == (self.workers is None):
            raise InputError("give either --scheduler ADDRESS or --dask-workers N, not both")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--dask-workers must be at least 1, got {self.workers}")

    def torch_threads(self) -> int | None:
        """Torch threads per worker process: the cores shared out on a local cluster (Dask's
        nanny starts workers with ``OMP_NUM_THREADS=1``); a remote worker keeps its own."""
        if self.workers is None:
            return None
        return max(1, (os.cpu_count() or 1) // self.workers)


@dataclass
class _SharedCluster:
    """The cluster that every stage of one command uses (see :func:`shared_cluster`)."""

    spec: ClusterSpec
    stack: ExitStack = field(default_factory=ExitStack)
    client: Client | None = None


_SHARED: ContextVar[_SharedCluster | None] = ContextVar("bertgeom_shared_cluster", default=None)


@contextmanager
def shared_cluster(spec: ClusterSpec) -> Iterator[None]:
    """Within the block, :func:`dask_client` of ``spec`` gives one client, started at the first
    use and closed at the end: the analysis, the ablation and the control of one ``analyze``
    share one local cluster instead of starting one each."""
    shared = _SHARED.get()
    if shared is not None and shared.spec == spec:  # nested (the control's analysis)
        yield
        return
    shared = _SharedCluster(spec)
    token = _SHARED.set(shared)
    try:
        with shared.stack:
            yield
    finally:
        _SHARED.reset(token)


@contextmanager
def dask_client(spec: ClusterSpec) -> Iterator[Client]:
    """A client of the scheduler at ``spec.scheduler``, or of a local cluster of
    ``spec.workers`` single-threaded worker processes, closed (and the cluster stopped) after;
    inside :func:`shared_cluster` of the same spec, its one client, left open."""
    shared = _SHARED.get()
    if shared is not None and shared.spec == spec:
        if shared.client is None:
            shared.client = shared.stack.enter_context(_new_client(spec))
        yield shared.client
        return
    with _new_client(spec) as client:
        yield client


@contextmanager
def _new_client(spec: ClusterSpec) -> Iterator[Client]:
    distributed = require_distributed()
    if spec.scheduler is not None:
        try:
            client = distributed.Client(spec.scheduler, timeout="20s")
        except (OSError, TimeoutError) as error:
            raise ClusterError(
                f"--scheduler {spec.scheduler}: no Dask scheduler answered ({error})"
            ) from None
        with client:
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            except TimeoutError:
                raise ClusterError(
                    f"--scheduler {spec.scheduler}: no worker joined in {WORKER_WAIT_S} s"
                ) from None
            yield client
        return
    with (
        distributed.LocalCluster(
            n_workers=spec.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def split_positions(count: int, shards: int) -> list[range]:
    """``count`` positions cut into at most ``shards`` contiguous, non-empty ranges of nearly
    equal size, in order."""
    shards = max(1, min(shards, count))
    bounds = [count * index // shards for index in range(shards + 1)]
    return [range(start, stop) for start, stop in pairwise(bounds) if stop > start]


def shard_positions(client: Client, count: int) -> list[range]:
    """The shards of ``count`` positions for the workers ``client`` sees now."""
    workers = max(1, len(client.scheduler_info()["workers"]))
    return split_positions(count, SHARDS_PER_WORKER * workers)


def run_shards(
    client: Client, function: Callable[[Task], Result], tasks: Sequence[Task]
) -> Iterator[tuple[int, Result]]:
    """Run ``function`` on every task; yield ``(task index, result)`` as each finishes.

    Each index comes exactly once: a task whose worker dies is run again by the scheduler on
    another worker, and its future delivers one result, so no shard is lost or counted twice
    (checked here all the same). A task that keeps killing workers ends in one
    :class:`ClusterError` line; an exception raised by the task is raised here as it is.
    """
    distributed = require_distributed()
    futures = {client.submit(function, task, pure=False): index for index, task in enumerate(tasks)}
    seen: set[int] = set()
    try:
        for future, result in distributed.as_completed(futures, with_results=True):
            index = futures[future]
            if index in seen:
                raise RuntimeError(f"shard {index} came back twice")
            seen.add(index)
            yield index, result
    except distributed.KilledWorker:
        raise ClusterError(
            "a shard killed every worker that ran it (out of memory?); try a smaller "
            "--batch-size, or workers with more memory"
        ) from None
    finally:
        for future in futures:
            future.cancel()
