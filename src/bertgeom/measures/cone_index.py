"""The cone index of DESIGN 3.1 per input: of token vectors, of each head's outputs and of the
rows of attention matrices (the accumulators: ``cone_accumulators``).

For vectors ``x_1..x_n`` (zero vectors skipped) the cone index is the length of the sum of their
unit vectors, ``I = || sum_i x_i / ||x_i|| ||_2`` in ``[0, n]``. ``I / n`` is the mean resultant
length of directional statistics and ``(I^2 - n) / (n (n - 1))`` the mean pairwise cosine
(Ethayarajh 2019's anisotropy), because ``I^2 = n + sum_{i != j} cos(x_i, x_j)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bertgeom.measures.attention_blocks import attention_row_unit_sums
from bertgeom.measures.tokens import valid_or_all


@dataclass(frozen=True)
class ConeBatch:
    """Cone statistics of several vector sets, all tensors of one shape (e.g. ``batch`` or
    ``batch head``), float64.

    ``index`` = I, ``n_valid`` = number of non-zero valid vectors n, ``normalized`` = I / n
    (NaN when n = 0), ``mean_cosine`` = (I^2 - n) / (n (n - 1)) (NaN when n < 2).
    """

    index: Tensor
    n_valid: Tensor
    normalized: Tensor
    mean_cosine: Tensor


def cone_stats_from_unit_sum(unit_sum: Tensor, n_valid: Tensor) -> ConeBatch:
    """Cone statistics from the sum of unit vectors ``unit_sum (..., d)`` and counts ``(...)``.

    I = ||unit_sum||_2; I / n; mean cosine (I^2 - n) / (n (n - 1)).
    """
    unit_sum = unit_sum.to(torch.float64)
    n = n_valid.to(torch.float64)
    index = torch.linalg.vector_norm(unit_sum, dim=-1)
    nan = torch.full_like(index, math.nan)
    normalized = torch.where(n > 0, index / n.clamp_min(1.0), nan)
    pairs = n * (n - 1.0)
    mean_cosine = torch.where(n > 1, (index**2 - n) / pairs.clamp_min(1.0), nan)
    return ConeBatch(index, n, normalized, mean_cosine)


def unit_vector_sum(vectors: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Sum of the unit vectors of the rows of ``vectors (..., n, d)`` and their count ``(...)``.

    Rows with ``valid`` False (``valid`` broadcastable to ``(..., n)``) and zero rows are skipped.
    The sum is the product ``w^T X`` with ``w_i = 1 / ||x_i||`` (0 for skipped rows), taken in
    the vectors' precision (at least float32: float32 hidden states give ~1e-7 relative error,
    float64 ones are exact) with no ``(..., n, d)`` temporary; returned as float64.
    """
    x = vectors.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    norms = torch.linalg.vector_norm(x, dim=-1)
    keep = norms > 0
    if valid is not None:
        keep = keep & valid.to(torch.bool)
    weights = torch.where(keep, 1.0 / norms.clamp_min(torch.finfo(x.dtype).tiny), 0.0)
    unit_sum = (weights.unsqueeze(-2) @ x).squeeze(-2)
    return unit_sum.to(torch.float64), keep.sum(dim=-1)


def cone_index(vectors: Tensor) -> float:
    """Cone index of the rows of ``vectors (n, d)``: I = || sum_i x_i / ||x_i|| ||_2, zero rows
    skipped (DESIGN 3.1)."""
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be (n, d), got shape {tuple(vectors.shape)}")
    unit_sum, _ = unit_vector_sum(vectors.to(torch.float64))  # the reference: float64
    return float(torch.linalg.vector_norm(unit_sum))


def cone_index_batch(hidden: Tensor, valid: Tensor | None = None) -> ConeBatch:
    """Cone index of the token vectors of each input: ``hidden (batch, seq, d)`` -> ``(batch,)``.

    Only the ``valid (batch, seq)`` tokens count (every one when ``None``).
    """
    batch, seq, _ = hidden.shape
    valid = valid_or_all(valid, batch, seq, hidden.device)
    return cone_stats_from_unit_sum(*unit_vector_sum(hidden, valid))


def head_output_cone_index(head_outputs: Tensor, valid: Tensor | None = None) -> ConeBatch:
    """Cone index of each head's output rows ``Z_h = A V_h``: ``head_outputs (batch, head, seq,
    dk)`` -> ``(batch, head)``, over the valid tokens."""
    batch, _, seq, _ = head_outputs.shape
    valid = valid_or_all(valid, batch, seq, head_outputs.device)
    return cone_stats_from_unit_sum(*unit_vector_sum(head_outputs, valid[:, None, :]))


def attention_rows_cone_index(attentions: Tensor, valid: Tensor | None = None) -> ConeBatch:
    """Cone index of the rows of each attention matrix: ``attentions (batch, head, query, key)``
    -> ``(batch, head)``.

    Rows and columns are restricted to the valid tokens (the padding columns are set to zero,
    which changes neither norms nor sums). I = n when all queries attend alike.

    The sum of unit rows is the product ``w^T A`` with ``w_i = 1 / ||a_i||`` (0 for skipped
    rows), computed in the attention's precision: a float32 matrix-vector product instead of
    float64 copies of the whole ``(batch, head, query, key)`` tensor (a twelfth of the time);
    the relative error of I is about 1e-6 in float32. Padded batches over 8 MiB stream over
    blocks of inputs cut to their valid extent (``attention_blocks.attention_row_unit_sums``):
    the padding is not read, nor the whole batch copied to zero it (the copy and its page
    faults were two thirds of the time); the float32 sums then differ from one pass over the
    batch by rounding (~1e-7 relative in I).
    """
    batch, _, seq, seq_k = attentions.shape
    if seq != seq_k:
        raise ValueError(f"attention matrices must be square, got {tuple(attentions.shape)}")
    valid = valid_or_all(valid, batch, seq, attentions.device)
    return cone_stats_from_unit_sum(*attention_row_unit_sums(attentions.detach(), valid))
