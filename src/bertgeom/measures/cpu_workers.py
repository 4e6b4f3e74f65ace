"""Single-threaded CPU workers for the chunked gate kernels (issue 23).

A kernel that works through a batch in cache-sized chunks issues many small tensor operations.
With PyTorch's intra-op threads each of them is a parallel region whose threads must all meet,
and on a busy machine (the forward pass running beside the measures, as ``capture.engine`` does,
or other processes) a region waits for a descheduled thread far longer than the operation takes:
on 2 shared cores the chunked gate scores ran 0.6x as fast as the whole-batch ones that way, and
4x as fast here. Each worker runs whole chunks with one intra-op thread, the workers side by side:
nothing synchronises inside a chunk, and a chunk stays in its core's cache.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from torch import Tensor

Result = TypeVar("Result")

_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _forget_pools() -> None:
    """In a forked child: the parent's worker threads do not exist there, and its lock may have
    been held by one of them."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def _single_threaded(barrier: threading.Barrier) -> None:
    """Sets the calling worker thread to one intra-op thread."""
    torch.get_num_threads()  # first initialise this thread's own setting from the process's
    torch.set_num_threads(1)  # then change it: the workers are the parallelism
    barrier.wait(timeout=60)  # one call per worker thread: each holds its thread until all ran


def _pool(workers: int) -> ThreadPoolExecutor:
    """The pool of ``workers`` single-threaded workers of this process."""
    key = (os.getpid(), workers)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            threads = torch.get_num_threads()
            pool = ThreadPoolExecutor(workers, thread_name_prefix="bertgeom-kernel")
            barrier = threading.Barrier(workers)
            for done in [pool.submit(_single_threaded, barrier) for _ in range(workers)]:
                done.result()
            # torch.set_num_threads also sets the default of threads that start later: put the
            # caller's back (each worker keeps its own, already initialised).
            torch.set_num_threads(threads)
            _pools[key] = pool
    return pool


def run_tasks(tasks: Sequence[Callable[[], Result]], workers: int) -> list[Result]:
    """The results of ``tasks``, in order: run in the calling thread when ``workers`` is 1, else
    on ``workers`` single-threaded worker threads (even one task: one intra-op thread avoids the
    waits above), in the caller's inference mode and without gradients."""
    if workers <= 1:
        return [task() for task in tasks]
    inference = torch.is_inference_mode_enabled()

    def run(task: Callable[[], Result]) -> Result:
        with torch.inference_mode(inference), torch.no_grad():
            return task()

    return list(_pool(workers).map(run, tasks))


class ThreadBuffers:
    """Flat scratch buffers of the given sizes, one set per thread that asks (a worker reuses
    its set for every chunk it runs in one call: no page faults after its first chunk)."""

    def __init__(self, sizes: Sequence[int], dtype: torch.dtype, device: torch.device) -> None:
        self.sizes = tuple(sizes)
        self.dtype = dtype
        self.device = device
        self._sets: dict[int, tuple[Tensor, ...]] = {}

    def get(self) -> tuple[Tensor, ...]:
        """This thread's buffers."""
        key = threading.get_ident()
        found = self._sets.get(key)
        if found is None:
            found = tuple(
                torch.empty(size, dtype=self.dtype, device=self.device) for size in self.sizes
            )
            self._sets[key] = found
        return found
