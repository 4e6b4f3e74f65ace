"""What every command shares: turning user errors into one line, and progress bars."""

from __future__ import annotations

import gc
import math
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, TextIO

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bertgeom.errors import BertgeomError

console = Console(stderr=True)

_HOST = r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9._-]+)"
_SCHEDULER_ADDRESS = re.compile(
    rf"^((tcp|tls|ucx|ws|wss)://{_HOST}(:\d{{1,5}})?|{_HOST}:\d{{1,5}})$"
)
"""A Dask scheduler address: ``protocol://host[:port]`` or ``host:port``."""


def scheduler_address(value: str | None) -> str | None:
    """``--scheduler``: refuse what is not a Dask address before anything starts."""
    if value is not None and not _SCHEDULER_ADDRESS.match(value):
        raise typer.BadParameter(f"{value!r} is not a Dask scheduler address (tcp://host:8786)")
    return value


def positive_number(value: float | None) -> float | None:
    """A finite number above 0 (a learning rate): NaN and infinity are refused too."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} is not a finite number above 0")
    return value


def split_fractions(value: tuple[float, float, float]) -> tuple[float, float, float]:
    """``--fractions``: three shares above 0 that sum to 1 (as ``split_by_sequence`` needs)."""
    if not (
        all(math.isfinite(share) and share > 0 for share in value)
        and math.isclose(sum(value), 1.0, abs_tol=1e-6)
    ):
        shares = " ".join(f"{share:g}" for share in value)
        raise typer.BadParameter(f"{shares}: the three shares must be above 0 and sum to 1")
    return value


_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def device_name(value: str) -> str:
    """``--device``: cpu, cuda, cuda:N or mps (whether it is present is checked on use)."""
    if not _DEVICE.match(value):
        raise typer.BadParameter(f"{value!r} is not a device; use cpu, cuda, cuda:N or mps")
    return value


def capped_workers(requested: int | None, what: str = "alignment processes") -> int:
    """Worker processes: the request, at most one per CPU core (more only wait on each other
    and take seconds each to start); a capped request is said on stderr."""
    cores = os.cpu_count() or 1
    if requested is None:
        return cores
    if requested > cores:
        console.print(
            f"note: {requested} {what} asked for, {cores} used (one per CPU core)",
            highlight=False,
        )
        return cores
    return requested


SchedulerOption = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        callback=scheduler_address,
        metavar="ADDRESS",
        help="Shard the inputs over the workers of a running Dask scheduler (tcp://host:8786); "
        "the model and the inputs must be readable at the same paths on the workers "
        "(docs/dask.md; needs pip install 'bertgeom\\[dask]').",
    ),
]


def dask_workers(value: int | None) -> int | None:
    """``--dask-workers``: a local cluster of at most one worker process per core."""
    if value is None or value < 1:
        return value  # below 1: refused by the option's range
    return capped_workers(value, "Dask workers")


DaskWorkersOption = Annotated[
    int | None,
    typer.Option(
        "--dask-workers",
        metavar="N",
        min=1,
        callback=dask_workers,
        help="Shard the inputs over a local Dask cluster of N worker processes (docs/dask.md).",
    ),
]
SEED_MAX = 2**32 - 1
"""Seeds are 0 to 2**32 - 1 in every command: what numpy's generators take."""
SeedOption = Annotated[
    int, typer.Option("--seed", min=0, max=SEED_MAX, help="Random seed (0 to 2**32 - 1).")
]
BatchSizeOption = Annotated[
    int, typer.Option("--batch-size", min=1, help="Inputs per forward pass.")
]
EpochsOption = Annotated[
    int | None, typer.Option("--epochs", min=1, help="Epochs (default: the preset's).")
]
DeviceOption = Annotated[
    str, typer.Option("--device", callback=device_name, help="cpu, cuda, cuda:N or mps.")
]
OverwriteOption = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace --out even when it is not an output bertgeom wrote (never an input).",
    ),
]


def _note(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Show a warning as one ``note:`` line (Python's own format takes two, with source)."""
    console.print(f"[bold yellow]note:[/] {message}", highlight=False, soft_wrap=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a user's error as one line on stderr and exit 1 (130 when interrupted); warnings
    (a classifier without its change check, ...) are one ``note:`` line each."""
    with warnings.catch_warnings():
        warnings.showwarning = _note
        with _one_line_errors():
            yield


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except BertgeomError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[bold red]interrupted:[/] no output was written", highlight=False)
        raise typer.Exit(130) from None


@contextmanager
def start_up() -> Iterator[None]:
    """Around a command's heavy imports (torch, transformers, pandas): no garbage collection
    while they run, and the objects they made frozen out of every later collection
    (``gc.freeze``).

    Why: importing torch and transformers allocates millions of long-lived objects, and each
    full collection during and after the imports walks all of them; on a laptop CPU that was
    about 1 s of ``bertgeom analyze``'s 9-10 s on 400 sentences (``BENCHMARKS.md``). Frozen
    objects are never freed, which is what module-level objects do anyway.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def progress_bar() -> Progress:
    """A rich progress bar on stderr (hidden when stderr is not a terminal and CI is set)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=not sys.stderr.isatty(),
    )


class SeriesProgress:
    """The progress of analyses one after the other (checkpoints, seeds) on one bar display:
    a task per item and per stage of it, with the callbacks ``analyze`` takes."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task = bar.add_task("analysing", total=None)
        self.where = ""

    def item(self, where: str) -> None:
        """The next item (``step 12 (3/5)``) starts."""
        self.where = where
        self.task = self.bar.add_task(f"analysing {where}", total=None)

    def advance(self, count: int) -> None:
        self.bar.advance(self.task, count)

    def on_start(self, loaded: object, expected: int | None) -> None:
        self.bar.update(self.task, total=expected)

    def on_stage(self, title: str, expected: int | None) -> None:
        self.task = self.bar.add_task(f"{title}, {self.where}", total=expected)
