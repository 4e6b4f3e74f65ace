"""The per-token passes of ``projected_subspace`` on the CPU around its torch products: the
query bias subtracted with the selection vectors laid out for their weighted sum, and the
reduction of the products' squared norms to the per-input sums and the weights.

Why hand-written (numba): in torch the step from the products' squared norms to the per-input
shares and the weights was some twenty calls over every padded position (the tokens' squares
summed, shares divided and masked, NaN tested, summed and counted twice, norms square-rooted,
inverted, masked, cast), and the weighted sum an ``einsum`` that first copied the queries less
their bias (themselves a copy) into its layout. Here these are two passes
(``reduce_kernel``, ``subtract_bias_kernel``).

Every float32 value stays what the torch path made, on the same numbers (the subtractions, the
products and their squared norms, the weighted sum: the product ``einsum`` calls, on its
layout): the statistics are sensitive to their last bit. The selection cone's ``I / n`` is near
1 with a spread over inputs of ~1e-3, so its standard deviation moves by ~1e-5 relative when
the float32 rounding of ``I`` changes at all, and the energy shares' by ~1e-6 (measured:
products on the valid tokens alone, the weighted sum or the products' squares summed in
float64, each broke the stored reference).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bertgeom.compiled import kernel

SUM_LANES = 8
"""Partial sums of a token's squares: one float64 sum in order would wait on each addition (the
compiler may not reorder them), eight fill a vector register."""


@kernel()
def reduce_kernel(
    hidden: npt.NDArray[np.floating],
    energies_q: npt.NDArray[np.floating],
    energies_k: npt.NDArray[np.floating],
    squared_norms: npt.NDArray[np.floating],
    valid: npt.NDArray[np.bool_],
    shares: npt.NDArray[np.float64],
    share_counts: npt.NDArray[np.int64],
    weights: npt.NDArray[np.floating],
    kept: npt.NDArray[np.int64],
) -> None:  # pragma: no cover - compiled; tested through projected_subspace_measures
    """Per valid token ``(b, s)`` of ``valid (batch, seq)`` and head h: with ``t = ||x||^2`` of
    ``hidden[b, s]`` (squares in its precision, summed in float64), add ``energies[h, b, s] /
    t`` (``_q``, ``_k``; float64) to ``shares[0 or 1, b, h]`` and count it in ``share_counts``
    when ``t > 0`` and the share is a number; with ``r = sqrt(squared_norms[h, b, s])``
    (float64), when r > 0 set ``weights[b, h, s] = 1 / r`` (rounded to the weights' dtype) and
    count it in ``kept[b, h]``. ``weights`` is zero at the other positions."""
    heads, batch, seq = squared_norms.shape
    d = hidden.shape[2]
    lanes = np.zeros(SUM_LANES)
    whole = d - d % SUM_LANES
    weights[:] = 0.0
    for b in range(batch):
        for s in range(seq):
            if not valid[b, s]:
                continue
            x = hidden[b, s]
            lanes[:] = 0.0
            for j in range(0, whole, SUM_LANES):
                for lane in range(SUM_LANES):
                    lanes[lane] += np.float64(x[j + lane] * x[j + lane])
            total = lanes.sum()
            for j in range(whole, d):
                total += np.float64(x[j] * x[j])
            for h in range(heads):
                if total > 0:
                    share = np.float64(energies_q[h, b, s]) / total
                    if share == share:  # not NaN
                        shares[0, b, h] += share
                        share_counts[0, b, h] += 1
                    share = np.float64(energies_k[h, b, s]) / total
                    if share == share:
                        shares[1, b, h] += share
                        share_counts[1, b, h] += 1
                radius = np.sqrt(np.float64(squared_norms[h, b, s]))
                if radius > 0:
                    weights[b, h, s] = 1.0 / radius
                    kept[b, h] += 1


@kernel()
def subtract_bias_kernel(
    queries: npt.NDArray[np.floating],
    bias_q: npt.NDArray[np.floating],
    selection_bias: npt.NDArray[np.floating],
    linear_q: npt.NDArray[np.floating],
    by_input: npt.NDArray[np.floating],
) -> None:  # pragma: no cover - compiled; tested through projected_subspace_measures
    """``linear_q = queries - bias_q`` (``(batch, seq, H dk)``) and ``by_input[b, h, :, s] =
    q_h - selection_bias^h`` (``(batch, head, dk, seq)``: the layout in which ``einsum`` sums
    the selection directions over the queries), from one read of ``queries``; the subtractions
    of ``torch.sub``, in the queries' dtype."""
    batch, seq, width = queries.shape
    heads, dk = by_input.shape[1], by_input.shape[2]
    for b in range(batch):
        for s in range(seq):
            for c in range(width):
                linear_q[b, s, c] = queries[b, s, c] - bias_q[c]
        for h in range(heads):  # in the order of the writes; the input's reads stay in cache
            for a in range(dk):
                column = h * dk + a
                bias = selection_bias[column]
                for s in range(seq):
                    by_input[b, h, a, s] = queries[b, s, column] - bias
