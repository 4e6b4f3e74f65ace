"""Streamed count, mean and spread of per-input values, exactly mergeable (Chan, Golub and
LeVeque 1979), alone or per hashable key."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bertgeom.measures.grouping import FloatArray, Key


@dataclass
class RunningMoments:
    """Count, mean and sum of squared deviations of a stream of scalars, or of arrays of a
    fixed shape (e.g. one value per head) element by element, float64; ``merged`` combines two
    streams exactly (Chan, Golub and LeVeque 1979)."""

    count: FloatArray | float = 0.0
    mean: FloatArray | float = 0.0
    m2: FloatArray | float = 0.0

    def merged(self, other: RunningMoments) -> RunningMoments:
        """The moments of both streams together."""
        n = np.add(self.count, other.count)
        share = np.divide(other.count, n, out=np.zeros_like(n, dtype=np.float64), where=n > 0)
        delta = np.subtract(other.mean, self.mean)
        mean = self.mean + delta * share
        m2 = self.m2 + other.m2 + delta**2 * np.multiply(self.count, share)
        return RunningMoments(n, mean, m2)

    @classmethod
    def of(cls, values: FloatArray) -> RunningMoments:
        """The moments of ``values`` along its first axis (NaN entries dropped): scalars for
        ``values (n,)``, arrays of shape ``s`` for ``values (n, *s)``."""
        present = ~np.isnan(values)
        count = present.sum(axis=0).astype(np.float64)
        total = np.where(present, values, 0.0).sum(axis=0)
        mean = np.divide(total, count, out=np.zeros_like(count), where=count > 0)
        m2 = np.where(present, (values - mean) ** 2, 0.0).sum(axis=0)
        return cls(count, mean, m2)

    def at(self, index: int | tuple[int, ...]) -> RunningMoments:
        """The moments of element ``index`` of an array stream."""
        return RunningMoments(
            *(float(np.asarray(v)[index]) for v in (self.count, self.mean, self.m2))
        )

    @property
    def std(self) -> float:
        """Sample standard deviation sqrt(m2 / (count - 1)); NaN for fewer than two values
        (of a scalar stream)."""
        count = float(self.count)
        return math.sqrt(float(self.m2) / (count - 1)) if count > 1 else math.nan

    @property
    def value_mean(self) -> float:
        """The mean, NaN when empty (of a scalar stream)."""
        return float(self.mean) if float(self.count) > 0 else math.nan


class GroupedMoments:
    """``RunningMoments`` per hashable key, mergeable."""

    def __init__(self) -> None:
        self.stats: dict[Key, RunningMoments] = {}

    def add(self, key: Key, values: FloatArray) -> None:
        """Stream ``values`` (``(n,)``, or ``(n, *s)`` for element-wise moments) into ``key``."""
        batch = RunningMoments.of(values)
        previous = self.stats.get(key)
        self.stats[key] = batch if previous is None else previous.merged(batch)

    def merged(self, other: GroupedMoments) -> GroupedMoments:
        """A new object holding both."""
        out = GroupedMoments()
        out.stats = dict(self.stats)
        for key, value in other.stats.items():
            previous = out.stats.get(key)
            out.stats[key] = value if previous is None else previous.merged(value)
        return out
