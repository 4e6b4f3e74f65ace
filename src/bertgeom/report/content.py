"""What a report is made of: sections holding paragraphs, tables, figures and missing-data notes.

Sections build these plain objects from a results directory; the HTML template alone turns them
into markup (with autoescaping), so no section writes HTML by hand.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import pandas as pd


@dataclass(frozen=True)
class Image:
    """An embedded PNG: a ``data:`` URI and its size in CSS pixels."""

    src: str
    width: int
    height: int


@dataclass(frozen=True)
class Figure:
    """A figure and its caption (one or two sentences: what it shows and how to read it)."""

    kind: ClassVar[str] = "figure"

    image: Image
    caption: str
    alt: str = ""


@dataclass(frozen=True)
class Table:
    """A small table: header and rows of already formatted cells."""

    kind: ClassVar[str] = "table"

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, caption: str = "", digits: int = 4) -> Table:
        """Format every cell of ``frame`` (floats to ``digits`` significant digits)."""
        rows = [[format_value(value, digits) for value in row] for row in frame.itertuples(False)]
        return cls([str(c) for c in frame.columns], rows, caption)

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[str, object]], caption: str = "") -> Table:
        """A two-column key/value table."""
        return cls(["", ""], [[key, format_value(value)] for key, value in pairs], caption)


@dataclass(frozen=True)
class Paragraph:
    kind: ClassVar[str] = "paragraph"
    text: str


@dataclass(frozen=True)
class Missing:
    """One short line: what is missing from the results and how to get it."""

    kind: ClassVar[str] = "missing"

    text: str


@dataclass(frozen=True)
class Cards:
    """Small titled tables laid out side by side."""

    kind: ClassVar[str] = "cards"
    tables: list[tuple[str, Table]]


@dataclass(frozen=True)
class Bullets:
    """A short list of sentences (the findings)."""

    kind: ClassVar[str] = "bullets"
    items: list[str]


@dataclass(frozen=True)
class Columns:
    """Titled columns of blocks side by side (two results directories compared)."""

    kind: ClassVar[str] = "columns"
    columns: list[tuple[str, list[Block]]]


Block = Paragraph | Table | Figure | Missing | Cards | Bullets | Columns


@dataclass
class Section:
    """One ``<section id=...>`` of the report with its ``<h2>`` title; a folded section is a
    closed ``<details>`` whose summary is the title."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    folded: bool = False

    @property
    def figures(self) -> list[Figure]:
        return [block for block in _flat(self.blocks) if isinstance(block, Figure)]

    @property
    def missing(self) -> list[Missing]:
        return [block for block in _flat(self.blocks) if isinstance(block, Missing)]


def _flat(blocks: list[Block]) -> list[Block]:
    """The blocks, those inside columns included."""
    flat: list[Block] = []
    for block in blocks:
        if isinstance(block, Columns):
            for _, inner in block.columns:
                flat.extend(_flat(inner))
        else:
            flat.append(block)
    return flat


def format_value(value: object, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` significant digits, None and NaN as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        return "-" if math.isnan(number) else f"{number:.{digits}g}"
    if isinstance(value, dict | list | tuple) and not value:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{key}: {format_value(item, digits)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(format_value(item, digits) for item in value)
    return str(value)
