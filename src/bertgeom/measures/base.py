"""The one contract every aggregate follows, so that the engine treats them all alike.

An accumulator streams over batches (``update``), combines with another accumulator built with
the same parameters over other inputs (``merge``), and reports a tidy long table (``result``).
Splitting a dataset into parts, accumulating each and merging must give the one-pass answer.
"""

from __future__ import annotations

from typing import Protocol, Self, runtime_checkable

import pandas as pd

ALL_CLASSES = "all"
"""The ``class`` value of rows that aggregate over every input."""


@runtime_checkable
class Accumulator(Protocol):
    """Streams one family of measurements; ``merge`` makes the computation parallel."""

    def merge(self, other: Self) -> Self:
        """Return a new accumulator holding both this one's inputs and ``other``'s."""
        ...

    def result(self) -> pd.DataFrame:
        """The aggregate as a long table (columns documented by each accumulator)."""
        ...
