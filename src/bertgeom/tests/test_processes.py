"""Workers of a killed parent do not run on as orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from bertgeom.processes import spawn_pool

PARENT = textwrap.dedent(
    """
    import os, sys, time
    from bertgeom.processes import spawn_pool

    if __name__ == "__main__":
        pool = spawn_pool(2)
        futures = [pool.submit(time.sleep, 120) for _ in range(2)]
        time.sleep(3)  # the workers are up and sleeping
        print(" ".join(str(pid) for pid in pool._processes), flush=True)
        time.sleep(120)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its new parent) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_workers_of_a_killed_parent_exit() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    parent.send_signal(signal.SIGKILL)  # no shutdown, no atexit: the workers are on their own
    parent.wait()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:  # a failing run leaves nothing behind either
        os.kill(pid, signal.SIGKILL)
    assert not survivors


def test_the_pool_runs_work() -> None:
    with spawn_pool(1) as pool:
        assert pool.submit(pow, 2, 10).result() == 1024
