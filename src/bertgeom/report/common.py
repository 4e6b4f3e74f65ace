"""What the report's sections share: limits on the number of panels and small table look-ups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import pandas as pd

from bertgeom.results.store import Results

MAX_CLASS_PANELS = 8
"""Per-class panels drawn at most (the case study has eight classes)."""
MAX_LAYER_PANELS = 13
"""Per-layer panels drawn at most (the embeddings and 12 layers of BERT-base)."""

T = TypeVar("T")


def evenly(items: Sequence[T], most: int) -> list[T]:
    """At most ``most`` of ``items``, evenly spaced, first and last kept."""
    if len(items) <= most:
        return list(items)
    picks = np.unique(np.round(np.linspace(0, len(items) - 1, most)).astype(int))
    return [items[i] for i in picks]


def analysed_classes(results: Results) -> list[str]:
    """The classes of the manifest other than ``all``, in its order."""
    return [name for name in results.manifest.get("classes", []) if name != "all"]


def has_metric(results: Results, metric: str, label: str = "all") -> bool:
    heads = results.heads
    return bool(((heads["metric"] == metric) & (heads["class"] == label)).any())


def metric_tables(results: Results, metrics: dict[str, str]) -> list[tuple[str, pd.DataFrame]]:
    """``(title, layer x head table)`` of each metric (``metric -> title``) that is present."""
    return [
        (title, results.metric(metric))
        for metric, title in metrics.items()
        if has_metric(results, metric)
    ]


def layer_rows(
    table: pd.DataFrame | None, metric: str, point: str | None = None, label: str | None = None
) -> pd.DataFrame:
    """Rows of a ``layers.parquet``-like table for one metric (and point, class), by layer."""
    if table is None:
        return pd.DataFrame(columns=["layer", "point", "class", "metric", "value"])
    keep = table["metric"] == metric
    if point is not None:
        keep &= table["point"] == point
    if label is not None:
        keep &= table["class"] == label
    return table[keep].sort_values("layer")


def ordered_classes(results: Results, present: Sequence[str]) -> list[str]:
    """``all`` then the manifest's classes that are in ``present``, at most
    ``MAX_CLASS_PANELS`` of them, then any other present label."""
    known = [name for name in ["all", *analysed_classes(results)] if name in set(present)]
    others = sorted(set(present) - set(known))
    return (known + others)[: MAX_CLASS_PANELS + 1]
