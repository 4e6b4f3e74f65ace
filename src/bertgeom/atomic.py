"""Outputs appear whole or not at all: write to a hidden temporary sibling, then rename.

``mkstemp``/``mkdtemp`` create 0600/0700 entries; they are widened to the modes a plain
``open``/``mkdir`` would give under the current umask, so outputs stay readable as usual.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    """The process umask, read from /proc where possible: setting it to query it is racy."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # No /proc (macOS, old kernels): the only portable query sets and restores it, which
    # briefly affects files other threads create in between.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _through_links(path: Path) -> Path:
    """The path a symbolic link points to (the output replaces the target, and the link
    stays a link); any other path as it is."""
    path = Path(path)
    return path.resolve() if path.is_symlink() else path


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else vanishes."""
    path = _through_links(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        temporary.chmod(0o666 & ~_umask())
        yield temporary
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path``."""
    path = _through_links(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        temporary.chmod(0o777 & ~_umask())
        yield temporary
        if path.exists():
            shutil.rmtree(path)
        temporary.rename(path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


@contextmanager
def scratch_directory(path: Path, label: str) -> Iterator[Path]:
    """Yield a new hidden directory beside ``path`` (``.NAME.LABEL.*.partial``, the usual
    mode), removed at the end whatever it holds then: room for parts of an output that are
    moved into it before it is written (:func:`atomic_directory`)."""
    path = _through_links(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(
        tempfile.mkdtemp(prefix=f".{path.name}.{label}.", suffix=".partial", dir=path.parent)
    )
    try:
        temporary.chmod(0o777 & ~_umask())
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
