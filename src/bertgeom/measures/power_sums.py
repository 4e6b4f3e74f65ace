"""Additive float64 power sums of token coordinates (``sum x^k``, k = 0..4, and ``sum |x|``),
streamed over cache-sized row blocks, alone or with the coordinates' histogram counts.

Per block the rows are copied into a float64 buffer and the powers built in place in a second
one (``x^2``, ``x^3 = x^2 x``, ``x^4 = x^3 x``, then ``|x|`` in the first), each summed as it is
made; both buffers are reused from call to call (``workspace``): no fresh buffer the size of the
data (the page faults of which cost as much as the arithmetic), and every pass after the first
reads cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from bertgeom.measures import token_statistics
from bertgeom.measures.grouping import FloatArray
from bertgeom.measures.token_statistics import Binning, row_blocks
from bertgeom.measures.workspace import scratch

_FIELDS = ("n", "s1", "s2", "s3", "s4", "abs1")


@dataclass
class PowerSums:
    """``n = sum 1``, ``s1..s4 = sum x^k`` and ``abs1 = sum |x|`` of a stream, float64 arrays of one
    shape (``()`` pooled, ``(d,)`` per coordinate). Merging is ``+``."""

    n: FloatArray
    s1: FloatArray
    s2: FloatArray
    s3: FloatArray
    s4: FloatArray
    abs1: FloatArray

    @classmethod
    def of(cls, values: Tensor) -> PowerSums:
        """Per-coordinate power sums of ``values (n, d)`` (or pooled sums of ``values (n,)``),
        in float64, over cache-sized row blocks (``power_sums_and_counts``)."""
        if values.ndim == 1:
            sums, _ = power_sums_and_counts(values.reshape(-1, 1))
            return cls(*(np.asarray(getattr(sums, f)[0]) for f in _FIELDS))
        sums, _ = power_sums_and_counts(values)
        return sums

    def __add__(self, other: PowerSums) -> PowerSums:
        return PowerSums(
            self.n + other.n,
            self.s1 + other.s1,
            self.s2 + other.s2,
            self.s3 + other.s3,
            self.s4 + other.s4,
            self.abs1 + other.abs1,
        )

    def pooled(self) -> PowerSums:
        """The sums over all coordinates (one pooled sample of all values)."""
        return PowerSums(*(np.asarray(getattr(self, f).sum()) for f in _FIELDS))

    def copy(self) -> PowerSums:
        """Independent arrays."""
        return PowerSums(*(np.array(getattr(self, f)) for f in _FIELDS))

    def add_(self, other: PowerSums) -> None:
        """Add ``other`` in place."""
        for name in _FIELDS:
            getattr(self, name).__iadd__(getattr(other, name))

    def part(self, columns: slice) -> PowerSums:
        """The sums of the coordinates ``columns`` (views)."""
        return PowerSums(*(np.asarray(getattr(self, f))[columns] for f in _FIELDS))


def power_sums_and_counts(
    tokens: Tensor, binning: Binning | None = None
) -> tuple[PowerSums, npt.NDArray[np.int64] | None]:
    """Per-coordinate ``PowerSums`` of ``tokens (n, d)`` (``power_sum_table``) and, with
    ``binning``, the counts of all their values in its bins (``Binning.histogram``: in the
    tokens' precision, at least float32, as ``histogram_counts``)."""
    x = tokens.detach()
    sums = power_sums_of_table(power_sum_table(x), x.shape[0])
    return sums, (binning.histogram(x) if binning is not None else None)


def power_sums_of_table(table: Tensor, n: int) -> PowerSums:
    """``PowerSums`` of ``n`` tokens from their ``power_sum_table``."""
    arrays = table.cpu().numpy()
    return PowerSums(np.full(table.shape[1], float(n)), *arrays)  # rows of one fresh array


def power_sum_table(tokens: Tensor) -> Tensor:
    """``(5, d)`` float64 sums over the rows of ``tokens (n, d)`` of ``x``, ``x^2``, ``x^3``,
    ``x^4`` and ``|x|``, on the tokens' device, streamed over row blocks: per block the rows are
    copied to float64 and the powers built in place in a second buffer, each summed as it is
    made (``x^4 = ((x x) x) x``: the rounding of a plain float64 product)."""
    x = tokens.detach()
    n, d = x.shape
    blocks = list(row_blocks(n, d, _block_values(n * d)))
    rows = blocks[0][1] if blocks else 0
    values = scratch("power_sums.x", rows * d, torch.float64, x.device).view(rows, d)
    power = scratch("power_sums.power", rows * d, torch.float64, x.device).view(rows, d)
    partial = torch.zeros(max(1, len(blocks)), 5, d, dtype=torch.float64, device=x.device)
    for index, (start, stop) in enumerate(blocks):
        y, p, out = values[: stop - start], power[: stop - start], partial[index]
        y.copy_(x[start:stop])
        torch.sum(y, dim=0, out=out[0])
        torch.mul(y, y, out=p)
        torch.sum(p, dim=0, out=out[1])
        torch.sum(p.mul_(y), dim=0, out=out[2])
        torch.sum(p.mul_(y), dim=0, out=out[3])
        torch.sum(y.abs_(), dim=0, out=out[4])
    return partial[0] if len(blocks) <= 1 else partial.sum(dim=0)


def _block_values(values: int) -> int:
    """Values per block: ``BLOCK_VALUES``, or all of them when that is at most twice as many
    (one block: fewer calls, and so few values stay in cache anyway)."""
    block = token_statistics.BLOCK_VALUES
    return values if values <= 2 * block else block
