"""Where a command may write: outputs never destroy a user's files.

A command writes into a path that does not exist yet, or replaces an output of its own kind: a
directory it recognises by its marker file and whose entries are all names it writes (a results
directory by ``manifest.json``, a model by ``config.json``), or a file it recognises by its
first bytes (a predictions table by its header, a report by its ``generator`` tag). Anything
else that exists is refused with one line, unless the user asks for it to be replaced
(``overwrite``). An output that equals or contains one of the command's inputs is refused
always: replacing it would delete the input before it is read.

These checks run before any work starts, so a run is never lost to a bad ``--out`` at its end.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bertgeom.errors import InputError


@dataclass(frozen=True)
class DirectoryKind:
    """A kind of output directory: its name in messages, the files that mark it (any one of
    them), the patterns of every entry a command of this kind writes into it, and the kind of
    each entry that is itself an output directory (``inner``)."""

    name: str
    markers: tuple[str, ...]
    entries: tuple[str, ...]
    inner: dict[str, DirectoryKind] = field(default_factory=dict)

    def recognises(self, directory: Path) -> bool:
        """Whether ``directory`` holds one of the markers and nothing but this kind's entries."""
        names = [entry.name for entry in directory.iterdir()]
        return any(marker in names for marker in self.markers) and not self.foreign(directory)

    def foreign(self, directory: Path) -> list[str]:
        """Entries of ``directory`` that no command of this kind writes, sorted: names of
        other patterns, and inner directories that are not of their kind."""
        found = []
        for entry in directory.iterdir():
            inner = self.inner.get(entry.name)
            if inner is not None:
                mine = entry.is_dir() and (not any(entry.iterdir()) or inner.recognises(entry))
            else:
                mine = any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in self.entries)
            if not mine:
                found.append(entry.name)
        return sorted(found)


_CONTROL_RESULTS = DirectoryKind(
    "results directory", ("manifest.json",), ("manifest.json", "*.parquet", "arrays", "*.html")
)
RESULTS = DirectoryKind(
    "results directory",
    ("manifest.json",),
    ("manifest.json", "*.parquet", "arrays", "*.html"),
    {"control": _CONTROL_RESULTS},
)
OVER_TRAINING = DirectoryKind(
    "over-training results directory",
    ("training.parquet", "training.json"),
    ("training.json", "training*.parquet", "checkpoints", "*.html"),
)
OVER_SEEDS = DirectoryKind(
    "over-seeds results directory",
    ("seeds.parquet", "seeds.json"),
    ("seeds.json", "seeds*.parquet", "seeds", "*.html"),
)
DATASET = DirectoryKind(
    "dataset directory",
    ("real.parquet", "synthetic.parquet", "dataset.parquet", "outside.parquet"),
    ("*.parquet",),
)
MODEL = DirectoryKind(
    "model directory",
    ("config.json",),
    (
        "config.json",
        "*.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "change_check.json",
        "training.json",
        "generation_config.json",
        "checkpoint.json",
        "checkpoints",
    ),
)
ENSEMBLE = DirectoryKind(
    "ensemble directory",
    ("ensemble.json",),
    ("ensemble.json", "member-*"),
)
SEED_MODELS = DirectoryKind(
    "directory of models over seeds",
    ("seeds.json",),
    ("seeds.json", "seed-*"),
)
EVALUATION = DirectoryKind(
    "evaluation directory",
    ("metrics.json", "lineages.json"),
    ("metrics.json", "confusion_matrix.png", "lineages.tsv", "lineages.json"),
)
DEMO = DirectoryKind(
    "demo directory",
    ("metrics.json", "data"),
    ("metrics.json", "confusion_matrix.png", "report.html"),
    {
        "data": DATASET,
        "model": MODEL,
        "lineages": EVALUATION,
        "analysis": RESULTS,
        "training": OVER_TRAINING,
    },
)


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _check_parents(path: Path) -> None:
    """Refuse a path one of whose existing ancestors is not a directory."""
    for parent in _resolved(path).parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{path}: cannot be written, {parent} is a file, not a directory")
            return


def _check_not_an_input(path: Path, inputs: Iterable[Path | None], option: str) -> bool:
    """Refuse an output that is one of the inputs, or a directory that holds one; whether it
    lies inside an input directory (where ``--overwrite`` may not replace what is there: a
    model's checkpoint is part of the model)."""
    target = _resolved(path)
    inside = False
    for given in inputs:
        if given is None or str(given) == "-":
            continue
        source = _resolved(Path(given))
        if source == target:
            raise InputError(f"{option} {path}: is also an input ({given}); choose another path")
        if target in source.parents:
            raise InputError(
                f"{option} {path}: holds an input ({given}), which writing it would destroy; "
                "choose another path"
            )
        inside = inside or source in target.parents
    return inside


def check_output_directory(
    path: Path,
    kind: DirectoryKind,
    *,
    inputs: Iterable[Path | None] = (),
    overwrite: bool = False,
    option: str = "--out",
) -> None:
    """Refuse ``path`` as an output directory of ``kind`` unless writing it loses nothing:
    absent, empty, or recognised as ``kind`` (or ``overwrite``); never an input or a
    directory holding one, never a file, never under a file."""
    path = Path(path)
    _check_parents(path)
    inside_input = _check_not_an_input(path, inputs, option)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise InputError(f"{option} {path}: exists and is not a directory")
    if (overwrite and not inside_input) or not any(path.iterdir()) or kind.recognises(path):
        return
    foreign = kind.foreign(path)
    held = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    why = f"holds {held}" if foreign else f"has no {' or '.join(kind.markers)}"
    article = "an" if kind.name[0] in "aeiou" else "a"
    if inside_input:
        raise InputError(
            f"{option} {path}: not {article} {kind.name} bertgeom wrote ({why}), inside an "
            "input, which replacing it would damage (even with --overwrite); choose a new path"
        )
    raise InputError(
        f"{option} {path}: not {article} {kind.name} bertgeom wrote ({why}); choose a new path, "
        "or pass --overwrite to replace it"
    )


def check_output_file(
    path: Path,
    *,
    recognise: Callable[[bytes], bool] | None = None,
    inputs: Iterable[Path | None] = (),
    overwrite: bool = False,
    option: str = "--out",
) -> None:
    """Refuse ``path`` as an output file unless writing it loses nothing: absent, empty, or
    an existing file whose first 4 KiB ``recognise`` accepts (or ``overwrite``); never an
    input, never a directory, never under a file."""
    path = Path(path)
    _check_parents(path)
    inside_input = _check_not_an_input(path, inputs, option)
    if path.is_dir():
        raise InputError(f"{option} {path}: is a directory; give a file name")
    if not path.exists():
        return
    if not path.is_file():
        raise InputError(f"{option} {path}: exists and is not a regular file")
    with path.open("rb") as handle:
        head = handle.read(4096)
    if (overwrite and not inside_input) or not head or (recognise is not None and recognise(head)):
        return
    if inside_input:
        raise InputError(
            f"{option} {path}: exists inside an input and is not an output bertgeom wrote, so "
            "replacing it would damage the input (even with --overwrite); choose a new path"
        )
    raise InputError(
        f"{option} {path}: exists and is not an output bertgeom wrote; choose a new path, or "
        "pass --overwrite to replace it"
    )


def starts_with(prefix: bytes) -> Callable[[bytes], bool]:
    """A ``recognise`` for :func:`check_output_file`: the file starts with ``prefix``."""
    return lambda head: head.startswith(prefix)


def contains(marker: bytes) -> Callable[[bytes], bool]:
    """A ``recognise`` for :func:`check_output_file`: ``marker`` is in the first bytes."""
    return lambda head: marker in head
