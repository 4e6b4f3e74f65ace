"""Kernels over the valid token vectors of a batch: selecting them per class, counting their
coordinates in fixed bins, and their Gram matrix ``sum x x^T``.

Selections are one ``index_select`` (no copy of the padded batch first), and the counting runs
over cache-sized row blocks (``row_blocks``) so that each elementwise step reads and writes
cache, not fresh memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from bertgeom.measures.grouping import FloatArray, IndexArray
from bertgeom.measures.token_kernels import add_centred_gram_kernel
from bertgeom.measures.workspace import scratch

BLOCK_VALUES = 1 << 16
"""Values per row block of the float64 power sums (two 512 KiB buffers)."""

COUNT_BLOCK_VALUES = 1 << 17
"""Values per block of the histogram counts (512 KiB of float32 bin positions): larger blocks
than the power sums' amortise the six calls per block, smaller ones stay in cache."""


def row_blocks(n: int, d: int, values: int | None = None) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive row blocks of an ``(n, d)`` matrix, about ``values``
    (default ``BLOCK_VALUES``) values each, one row at least."""
    rows = max(1, (BLOCK_VALUES if values is None else values) // max(1, d))
    for start in range(0, n, rows):
        yield start, min(start + rows, n)


def select_tokens(tokens: Tensor, valid: Tensor, inputs: IndexArray) -> Tensor:
    """The valid token vectors of ``inputs`` (in order) from ``tokens (batch, seq, ...)`` and
    ``valid (batch, seq)``, as ``(n, ...)``: a view when that is all of them, else one
    ``index_select`` of the valid positions (no copy of the selected inputs first)."""
    batch, seq = valid.shape
    rows = tokens.reshape(batch * seq, *tokens.shape[2:])
    if len(inputs) == batch and bool(valid.all()):
        return rows
    picked = torch.as_tensor(inputs, dtype=torch.long, device=valid.device)
    positions = (picked[:, None] * seq + torch.arange(seq, device=valid.device))[valid[picked]]
    return rows.index_select(0, positions)


class Binning:
    """The bin of each value in the edges ``edges`` (length B + 1): 0 below ``e_0`` (underflow),
    ``i + 1`` in ``[e_i, e_{i+1})``, B + 1 at or above ``e_B`` (overflow).

    Equal-width edges take the bin ``floor((x - e_0) / width)`` in the values' precision (at least
    float32), several times faster than a binary search over the edges (``torch.bucketize``,
    used for other edges, in float64); a value within rounding of an edge (~1e-7 relative in
    float32) may count in the bin next to it."""

    def __init__(self, edges: FloatArray) -> None:
        self.edges = edges
        self.n_bins = len(edges) - 1
        widths = np.diff(edges)
        self.equal = self.n_bins >= 1 and bool(np.allclose(widths, widths[0], rtol=1e-12, atol=0))
        self.scale = float(self.n_bins / (edges[-1] - edges[0])) if self.equal else 0.0

    def counts(self, values: Tensor, scratch: Tensor | None = None) -> Tensor:
        """int64 counts (B + 2) of ``values`` (float32 or float64, any shape); ``scratch``: a
        buffer of ``values``' size and dtype to work in (else a new one)."""
        flat = values.reshape(-1)
        if self.equal:
            low = float(self.edges[0])
            out = None if scratch is None else scratch.reshape(-1)
            work = torch.sub(flat, low, out=out) if out is not None else flat - low
            position = work.mul_(self.scale).floor_().add_(1)
            # int32 bins: half the memory of int64, and bincount reads them twice as fast.
            index = position.clamp_(0, self.n_bins + 1).to(torch.int32)
        else:
            edge_tensor = torch.as_tensor(self.edges, dtype=torch.float64, device=values.device)
            index = torch.bucketize(flat.to(torch.float64), edge_tensor, right=True)
        return torch.bincount(index, minlength=self.n_bins + 2)

    def histogram(self, values: Tensor) -> npt.NDArray[np.int64]:
        """int64 counts (B + 2) of ``values`` (any shape and dtype; computed in its precision,
        at least float32) over cache-sized blocks in one reused buffer."""
        flat = values.detach().reshape(-1)
        if flat.dtype not in (torch.float32, torch.float64):
            flat = flat.to(torch.float32)
        total = torch.zeros(self.n_bins + 2, dtype=torch.int64, device=flat.device)
        size = min(flat.numel(), COUNT_BLOCK_VALUES)
        buffer = scratch("histogram", size, flat.dtype, flat.device)
        for start, stop in row_blocks(flat.numel(), 1, COUNT_BLOCK_VALUES):
            total += self.counts(flat[start:stop], buffer[: stop - start])
        return total.cpu().numpy().astype(np.int64)


def histogram_counts(values: Tensor, edges: FloatArray) -> npt.NDArray[np.int64]:
    """Counts of ``values`` (any shape) in the bins ``[e_i, e_{i+1})`` of ``edges`` (length B+1),
    with underflow (``< e_0``) first and overflow (``>= e_B``) last: length B + 2.

    Equal-width edges (the accumulators' case) take the bin ``floor((x - e_0) / width)`` in the
    values' precision (at least float32), several times faster than a binary search over the
    edges (``torch.bucketize``, used for other edges, in float64); a value within rounding of
    an edge (~1e-7 relative in float32) may count in the bin next to it. Streams over
    cache-sized blocks of the values.
    """
    return Binning(edges).histogram(values)


def gram_matrix(
    tokens: Tensor, total: FloatArray | None = None, centre: Tensor | None = None
) -> FloatArray:
    """``sum_i x_i x_i^T`` of the rows of ``tokens (n, d)``, float64 ``(d, d)`` (``add_grams``
    into zeros, made symmetric)."""
    d = tokens.shape[1]
    gram: FloatArray = np.zeros((d, d))
    add_grams([gram], tokens, total, centre)
    return symmetric_gram(gram)


def symmetric_gram(upper: FloatArray) -> FloatArray:
    """The symmetric matrix with the upper triangle (``i <= j``) of ``upper``."""
    return np.triu(upper) + np.triu(upper, 1).T


def add_grams(
    grams: Sequence[FloatArray],
    tokens: Tensor,
    total: FloatArray | None = None,
    centre: Tensor | None = None,
    overwrite: bool = False,
) -> None:
    """Add the upper triangle (``i <= j``) of ``sum_i x_i x_i^T`` of the rows of ``tokens (n,
    d)`` to each of ``grams`` (float64 ``(d, d)``) in place, the product taken once; their lower
    triangles are left alone (``symmetric_gram`` completes a matrix).

    Float64 input: the product itself. Otherwise the product is taken in the input's precision
    (float32 is twice as fast) about a centre m, the float32 mean, and the exact identity
    ``sum x x^T = sum (x - m)(x - m)^T + m u^T + u m^T`` with ``u = s - n m / 2`` (s = sum x,
    in float64) restores it: centring keeps the rounding relative to the spread of the tokens
    rather than to their mean, which can be large in outlier dimensions. The product and the
    rank-two term go into each Gram matrix in one pass (``token_kernels``: no ``d x d``
    temporaries; at d = 768 three torch passes over the whole matrix cost more than the
    product). ``total``: s if already known; ``centre``: m if already known (any m is exact;
    one near the mean keeps the rounding small); ``overwrite``: ``tokens`` may be centred in
    place (a copy of the caller's).
    """
    x = tokens.detach()
    n, d = x.shape
    if n == 0 or not grams:
        return
    m = u = np.zeros(d)
    if x.dtype == torch.float64:
        product = _upper_product(x)
    else:
        s = float64_sum(x) if total is None else np.asarray(total, dtype=np.float64)
        if centre is None:
            centre = x.mean(dim=0)
        centre = centre.to(x.dtype)
        product = _upper_product(x.sub_(centre) if overwrite else x - centre)
        m = centre.to(torch.float64).cpu().numpy()
        u = s - (n / 2) * m
    if product.dtype not in (torch.float32, torch.float64):
        product = product.to(torch.float32)  # exact: the kernel reads float32 or float64
    for gram in grams:
        add_centred_gram_kernel(gram, product.cpu().numpy(), m, u)


def float64_sum(tokens: Tensor) -> FloatArray:
    """``sum_i x_i`` of the rows of ``tokens (n, d)`` in float64."""
    return tokens.detach().to(torch.float64).sum(dim=0).cpu().numpy()


def _upper_product(x: Tensor, block: int = 64) -> Tensor:
    """``x^T x`` of ``x (n, d)`` on and above the diagonal (below it: not set), in a reused
    buffer (``workspace``: valid until the next call): one product per block row from the
    diagonal on, about (d + block) / 2d of one whole product (measured fastest at 64: 0.71 ms
    against 0.78 at 128 for 700 x 384 float32, one thread); one product below 2 blocks."""
    d = x.shape[1]
    out = scratch("gram_product", d * d, x.dtype, x.device).view(d, d)
    if d < 2 * block:
        return torch.mm(x.T, x, out=out)
    for start in range(0, d, block):
        stop = min(start + block, d)
        torch.mm(x[:, start:stop].T, x[:, start:], out=out[start:stop, start:])
    return out


def head_gram_matrices(
    head_tokens: Tensor,
    totals: Tensor | None = None,
    centres: Tensor | None = None,
    overwrite: bool = False,
) -> FloatArray:
    """``sum_i z_i z_i^T`` per head of ``head_tokens (head, n, dk)`` (any strides), float64
    ``(head, dk, dk)``: a batched product in the input's precision about each head's centre
    (its mean unless ``centres (head, dk)`` is given), restored exactly in float64 (the identity
    of ``add_grams``); ``totals (head, dk)``: each head's float64 sum of z if already known;
    ``overwrite``: ``head_tokens`` may be centred in place (a copy of the caller's)."""
    z = head_tokens.detach()
    if z.dtype == torch.float64 or z.shape[1] == 0:
        z = z.to(torch.float64)
        return (z.transpose(1, 2) @ z).cpu().numpy().copy()
    total = z.to(torch.float64).sum(dim=1, keepdim=True) if totals is None else totals[:, None]
    centre = (z.mean(dim=1) if centres is None else centres.to(z.dtype))[:, None, :]
    centred = z.sub_(centre) if overwrite else z - centre  # (head, n, dk)
    product = (centred.transpose(1, 2) @ centred).to(torch.float64)
    m = centre.to(torch.float64)  # (head, 1, dk)
    cross = m.transpose(1, 2) * total.to(torch.float64)  # outer products
    product += cross + cross.transpose(1, 2) - z.shape[1] * (m.transpose(1, 2) * m)
    return product.cpu().numpy().copy()
