"""One pass over the valid token vectors of a batch on the CPU: their float64 power sums, the
counts of their coordinates in equal-width bins and, for the Gram matrix, a gathered copy; and
the float64 Gram update (its upper triangle) from a product about a centre.

Why hand-written (numba): in torch each of these is a pass of its own over the tokens (an
``index_select`` for the selection, a float64 copy, three powers and five sums, then five
elementwise steps and a ``bincount`` for the bins; the Gram update three passes over both
triangles of its ``d x d`` float64 matrix): on MiniLM at one thread
(``benchmarks/measure_costs.py``) these passes and their calls were about half of the
distribution measure's time. Here each row is
read from memory once and every statistic made from it while it is in L1.

The statistics are those of ``power_sums.power_sum_table``, ``token_statistics.Binning`` and
``token_statistics.add_grams`` (tested equal): the same float64 products per value, the bins
taken in the values' precision with the same operations, only the order of the float64 sums
differs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bertgeom.compiled import kernel

COUNT_LANES = 4
"""Copies of the histogram counts, value k of a row counted in copy ``k % 4``: consecutive values
mostly fall in the same few bins, and with one array of counts each increment would wait for
the one before (measured: 3x slower)."""


@kernel()
def scan_tokens_kernel(
    tokens: npt.NDArray[np.floating],
    valid: npt.NDArray[np.bool_],
    inputs: npt.NDArray[np.int64],
    low: np.floating,
    scale: np.floating,
    table: npt.NDArray[np.float64],
    counts: npt.NDArray[np.int64],
    rows: npt.NDArray[np.floating],
) -> int:  # pragma: no cover - compiled; tested through scan_tokens
    """Over the tokens ``tokens[b, s]`` (``(batch, seq, d)``) with ``valid[b, s]``, ``b`` in
    ``inputs`` (in that order), ``s`` ascending: add ``x, x^2, x^3, x^4, |x|`` (float64,
    ``x^4 = ((x x) x) x``) per coordinate to ``table (5, d)``; when ``counts (COUNT_LANES, B +
    2)`` has bins, count each value in bin ``floor((x - low) * scale) + 1`` clamped to ``[0, B +
    1]`` (``low``, ``scale`` of the tokens' dtype: the arithmetic of ``Binning.counts``; NaN
    counts as underflow); when ``rows`` has rows, copy the k-th token to ``rows[k]``. Returns
    the number of tokens."""
    seq, d = tokens.shape[1], tokens.shape[2]
    top = counts.shape[1] - 1
    count_values = top > 0
    copy_rows = rows.shape[0] > 0
    # Local sums and bins: arrays the compiler knows apart from the tokens, so the loops over a
    # row are vectorised.
    s1, s2, s3, s4, s_abs = np.zeros(d), np.zeros(d), np.zeros(d), np.zeros(d), np.zeros(d)
    bins = np.zeros(d, dtype=np.int32)
    spare = np.empty(d, dtype=tokens.dtype)  # where a row goes when none is kept
    whole = d - d % COUNT_LANES
    n = 0
    for b in inputs:
        for s in range(seq):
            if not valid[b, s]:
                continue
            row = tokens[b, s]
            copy = rows[n] if copy_rows else spare
            for j in range(d):
                copy[j] = row[j]
                y = np.float64(row[j])
                s1[j] += y
                square = y * y
                s2[j] += square
                cube = square * y
                s3[j] += cube
                s4[j] += cube * y
                s_abs[j] += abs(y)
            if count_values:
                for j in range(d):
                    position = np.floor((row[j] - low) * scale) + 1
                    position = position if position >= 0 else 0  # NaN too
                    bins[j] = np.int32(position if position <= top else top)
                for j in range(0, whole, COUNT_LANES):
                    counts[0, bins[j]] += 1
                    counts[1, bins[j + 1]] += 1
                    counts[2, bins[j + 2]] += 1
                    counts[3, bins[j + 3]] += 1
                for j in range(whole, d):
                    counts[j % COUNT_LANES, bins[j]] += 1
            n += 1
    for j in range(d):
        table[0, j] += s1[j]
        table[1, j] += s2[j]
        table[2, j] += s3[j]
        table[3, j] += s4[j]
        table[4, j] += s_abs[j]
    return n


@kernel()
def add_centred_gram_kernel(
    gram: npt.NDArray[np.float64],
    product: npt.NDArray[np.floating],
    centre: npt.NDArray[np.float64],
    shift: npt.NDArray[np.float64],
) -> None:  # pragma: no cover - compiled; tested through add_centred_gram
    """``gram += product + m u^T + u m^T`` (``m = centre``, ``u = shift``) in float64 on and
    above the diagonal (the entries ``i <= j``; ``product``'s others are not read, ``gram``'s
    not written), one pass in row order."""
    d = gram.shape[0]
    for i in range(d):
        m_i, u_i = centre[i], shift[i]
        for j in range(i, d):
            gram[i, j] += np.float64(product[i, j]) + (m_i * shift[j] + u_i * centre[j])
