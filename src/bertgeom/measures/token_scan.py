"""The statistics the distribution measures take of the valid tokens of a batch, in one call:
power sums, histogram counts and (for the Gram matrix) a gathered copy of the tokens.

On the CPU, float32 and float64 tokens go through one compiled pass (``token_kernels``); other
devices and dtypes, or bins of unequal width, take the torch kernels (``select_tokens``,
``power_sums_and_counts``). Both give the same statistics (tested): equal counts, float64 sums
equal up to the order of the additions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from bertgeom.measures.grouping import IndexArray
from bertgeom.measures.power_sums import PowerSums, power_sums_and_counts
from bertgeom.measures.token_kernels import COUNT_LANES, scan_tokens_kernel
from bertgeom.measures.token_statistics import Binning, select_tokens
from bertgeom.measures.workspace import scratch

_NUMPY_DTYPES: dict[torch.dtype, type[np.floating[Any]]] = {
    torch.float32: np.float32,
    torch.float64: np.float64,
}


@dataclass
class TokenScan:
    """What ``scan_tokens`` found: ``n`` tokens, their per-coordinate ``sums``, their histogram
    ``counts`` (with bins), and ``rows (n, d)`` (when asked for): the tokens, which the caller
    may overwrite when ``rows_are_copy`` (a reused buffer, valid until the next scan on this
    thread), else a view of the input."""

    n: int
    sums: PowerSums
    counts: npt.NDArray[np.int64] | None
    rows: Tensor | None
    rows_are_copy: bool


def _compiled(tokens: Tensor, binning: Binning | None) -> bool:
    """Whether the compiled pass takes these tokens: float32 or float64 on the CPU, bins (if
    any) of equal width."""
    return (
        tokens.device.type == "cpu"
        and tokens.dtype in _NUMPY_DTYPES
        and (binning is None or binning.equal)
    )


def scan_tokens(
    tokens: Tensor,
    valid: Tensor,
    inputs: IndexArray,
    binning: Binning | None = None,
    keep_rows: bool = False,
) -> TokenScan:
    """The valid tokens of ``inputs`` (in order) of ``tokens (batch, seq, d)``, ``valid
    (batch, seq)`` bool: their ``PowerSums`` (float64 ``x, x^2, x^3, x^4, |x|`` per coordinate),
    with ``binning`` the counts of all their values (``Binning.histogram``), with ``keep_rows``
    the tokens as ``(n, d)`` rows (``select_tokens``)."""
    x = tokens.detach()
    d = x.shape[2]
    if not _compiled(x, binning):
        rows = select_tokens(x, valid, inputs)
        sums, counts = power_sums_and_counts(rows, binning)
        copied = rows.data_ptr() != x.data_ptr() or rows.numel() == 0
        return TokenScan(rows.shape[0], sums, counts, rows if keep_rows else None, copied)
    x = x.contiguous()
    valid_array = valid.detach().to(torch.bool).numpy()
    picked = np.asarray(inputs, dtype=np.int64)
    n = int(valid_array[picked].sum())
    kind = _NUMPY_DTYPES[x.dtype]
    table = np.zeros((5, d))
    n_counts = binning.n_bins + 2 if binning is not None else 0
    lanes = np.zeros((COUNT_LANES, n_counts), dtype=np.int64)
    rows_buffer = scratch("token_scan.rows", (n if keep_rows else 0) * d, x.dtype, x.device)
    rows = rows_buffer.view(-1, d) if d else rows_buffer.view(n if keep_rows else 0, 0)
    low = kind(binning.edges[0]) if binning is not None else kind(0)
    scale = kind(binning.scale) if binning is not None else kind(0)
    scan_tokens_kernel(x.numpy(), valid_array, picked, low, scale, table, lanes, rows.numpy())
    sums = PowerSums(np.full(d, float(n)), *table)
    counts = lanes.sum(axis=0) if binning is not None else None
    return TokenScan(n, sums, counts, rows if keep_rows else None, True)
