"""The classes of the inputs: a ``--labels`` TSV read into a dict, and the class of an input the
labels do not name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bertgeom.errors import InputError

UNLABELLED = "unlabelled"
"""Class of an input that the labels file does not name (when a labels file is given)."""


def read_input_labels(path: Path) -> dict[str, str]:
    """A TSV with an ``input_id`` (or ``record_id``) column and a ``label`` column, as a dict
    (each id one label: :func:`bertgeom.genomics.labels.read_label_table`)."""
    from bertgeom.genomics.labels import read_label_table

    labels = read_label_table(path, ("input_id", "record_id"))
    if "all" in labels.values():
        raise InputError(f"{path}: 'all' is reserved for the aggregate over all inputs")
    return labels


def chunk_labels(chunk: Sequence[tuple[str, str, str | None]]) -> tuple[str, ...]:
    """The class of each ``(input id, payload, label)`` item, ``UNLABELLED`` for no label."""
    return tuple(item[2] if item[2] is not None else UNLABELLED for item in chunk)
