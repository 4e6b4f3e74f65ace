"""Worker processes that end with the process that started them.

The alignment workers (:mod:`bertgeom.genomics.parallel`) and the leave-lineage-out folds
(:mod:`bertgeom.model.lineages`) run in ``spawn`` process pools: a fork of a process running
torch's thread pool can deadlock. Ctrl-C reaches every process of the terminal's group, but a
parent killed alone (``kill PID``, a scheduler's time limit, an out-of-memory kill) leaves its
workers running on as orphans, training or aligning for minutes for nobody. Each worker here
watches its parent and exits once it is gone (polling, as ``prctl(PR_SET_PDEATHSIG)`` is
Linux-only and fires on the death of the parent *thread*).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

ORPHAN_POLL_SECONDS = 1.0
"""How often a worker checks that its parent is still there."""


def spawn_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes, each exiting within about
    :data:`ORPHAN_POLL_SECONDS` once the calling process is gone."""
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=exit_with_parent,
        initargs=(os.getpid(),),
    )


def exit_with_parent(parent: int, interval: float = ORPHAN_POLL_SECONDS) -> None:
    """Start a daemon thread that ends this process (``os._exit``: nothing of an orphan's is
    worth flushing) as soon as its parent is no longer ``parent`` (it was re-parented)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
