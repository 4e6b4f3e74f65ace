"""What every command shares: turning user errors into one line, and progress bars."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

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

SchedulerOption = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        metavar="ADDRESS",
        help="Shard the inputs over the workers of a running Dask scheduler (tcp://host:8786); "
        "the model and the inputs must be readable at the same paths on the workers "
        "(docs/dask.md; needs pip install 'bertgeom\\[dask]').",
    ),
]
DaskWorkersOption = Annotated[
    int | None,
    typer.Option(
        "--dask-workers",
        metavar="N",
        min=1,
        help="Shard the inputs over a local Dask cluster of N worker processes (docs/dask.md).",
    ),
]


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a user's error as one line on stderr and exit 1 (130 when interrupted)."""
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
