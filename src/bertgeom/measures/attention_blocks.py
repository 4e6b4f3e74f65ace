"""Streamed passes over the attention matrices of a batch, one cache-sized block at a time.

A block is a run of inputs (or of one input's heads) cut to the valid extent of its inputs, so
that the padding queries and keys beyond it are never read: with right padding the valid tokens
of an input are a prefix and a block of one input holds nothing else. The keys inside a block
are masked (in a reused block-sized buffer) only when some token of it is not valid. Small or
unpadded batches are one pass over the whole batch, as blocks would only add calls.

Measured on one core (``benchmarks/stream_kernels.py``): the second pass over a block does not
come from cache any faster than from memory on that machine, so the gain is the padding not
read and the whole-batch masked copy not made.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from bertgeom.measures.grouping import BLOCK_BYTES, valid_extents
from bertgeom.measures.workspace import scratch


@dataclass(frozen=True)
class AttentionBlock:
    """Inputs ``inputs`` and heads ``heads`` of a batch, queries and keys cut to ``extent``;
    ``valid (inputs, extent)`` their valid tokens, ``all_valid`` whether every one is."""

    inputs: slice
    heads: slice
    extent: int
    valid: Tensor
    all_valid: bool

    def of(self, attentions: Tensor) -> Tensor:
        """The block of ``attentions (batch, head, query, key)``: a view."""
        return attentions[self.inputs, self.heads, : self.extent, : self.extent]


def attention_blocks(
    attentions: Tensor, valid: Tensor, budget: int = BLOCK_BYTES
) -> Iterator[AttentionBlock]:
    """The blocks of ``attentions (batch, head, seq, seq)`` for ``valid (batch, seq)``.

    Consecutive inputs whose valid tokens are the same prefix share a block of any size (a
    view: nothing to mask; unpadded batches are one block). Other inputs join a block while
    it fits ``budget`` bytes, cut to the largest extent among them (its keys are then masked
    in a block-sized copy); a lone input over budget that needs masking is split into groups
    of heads. Inputs without a valid token are left out."""
    batch, heads, _, _ = attentions.shape
    itemsize = attentions.element_size()
    extents = valid_extents(valid)
    counts = valid.sum(dim=1).tolist()
    prefix = [count == extent for count, extent in zip(counts, extents, strict=True)]
    start = 0
    while start < batch:
        if extents[start] == 0:
            start += 1
            continue
        stop, extent, masked = start + 1, extents[start], not prefix[start]
        while stop < batch and extents[stop] > 0:
            same = not masked and prefix[stop] and extents[stop] == extent
            wider = max(extent, extents[stop])
            if not same and (stop + 1 - start) * heads * wider * wider * itemsize > budget:
                break
            stop, extent, masked = stop + 1, wider, not same
        inputs, block_valid = slice(start, stop), valid[start:stop, :extent]
        per_group = heads
        if masked and stop == start + 1:  # one input to mask, possibly over budget
            per_group = min(heads, max(1, budget // max(1, extent * extent * itemsize)))
        for first in range(0, heads, per_group):
            group = slice(first, min(first + per_group, heads))
            yield AttentionBlock(inputs, group, extent, block_valid, not masked)
        start = stop


WHOLE_BATCH_BYTES = 8 << 20
"""Attention tensors up to this size are one pass over the whole batch (blocks would cost more
in calls than they save in padding)."""


def _whole_batch(attentions: Tensor, valid: Tensor) -> bool:
    return attentions.numel() * attentions.element_size() <= WHOLE_BATCH_BYTES or bool(valid.all())


def _masked(rows: Tensor, keys: Tensor) -> Tensor:
    """``rows (..., extent)`` with the keys where ``keys`` (broadcastable) is False set to zero,
    in a reused buffer (``workspace``)."""
    buffer = scratch("attention_block", rows.numel(), rows.dtype, rows.device)
    return torch.mul(rows, keys, out=buffer.view(rows.shape))


def _unit_rows_sum(rows: Tensor, row_valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(..., key)`` sum of the unit rows of ``rows (..., query, key)`` and ``(...)`` their
    number, rows that are zero or not ``row_valid (..., query)`` skipped: the norms, the
    weights ``w_i = 1 / ||a_i||`` (0 for skipped rows) and the product ``w^T A``."""
    norms = torch.linalg.vector_norm(rows, dim=-1)
    keep = norms > 0
    if row_valid is not None:
        keep &= row_valid
    weights = torch.where(keep, 1.0 / norms.clamp_min(torch.finfo(rows.dtype).tiny), 0.0)
    return (weights.unsqueeze(-2) @ rows).squeeze(-2), keep.sum(dim=-1)


def attention_row_unit_sums(
    attentions: Tensor, valid: Tensor, budget: int = BLOCK_BYTES
) -> tuple[Tensor, Tensor]:
    """The sum of the unit rows of each attention matrix over its valid queries, the rows
    restricted to the valid keys: ``(batch, head, key)`` in the attention's precision (zero at
    the invalid keys), and the number of non-zero valid rows ``(batch, head)``.

    Small or unpadded batches are one pass (the keys masked in a copy where some are invalid);
    others stream over ``attention_blocks``, each read from memory once."""
    batch, heads, seq, _ = attentions.shape
    if _whole_batch(attentions, valid):
        if bool(valid.all()):
            return _unit_rows_sum(attentions, None)
        return _unit_rows_sum(attentions * valid[:, None, None, :], valid[:, None, :])
    unit_sum = attentions.new_zeros(batch, heads, seq)
    counts = torch.zeros(batch, heads, dtype=torch.long, device=attentions.device)
    for block in attention_blocks(attentions, valid, budget):
        rows = block.of(attentions)
        row_valid = None
        if not block.all_valid:
            rows = _masked(rows, block.valid[:, None, None, :])
            row_valid = block.valid[:, None, :]
        summed, kept = _unit_rows_sum(rows, row_valid)
        unit_sum[block.inputs, block.heads, : block.extent] = summed
        counts[block.inputs, block.heads] = kept
    return unit_sum, counts
