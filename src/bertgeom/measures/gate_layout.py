"""The reductions over a :class:`~bertgeom.measures.tokens.TokenMask` that the gate scores
(DESIGN 3.2) share: the mean over content queries every score ends with, the top content
columns, ``log n``."""

from __future__ import annotations

import torch
from torch import Tensor

from bertgeom.measures.tokens import TokenMask


def content_weights(tokens: TokenMask, dtype: torch.dtype) -> Tensor:
    """``(batch, seq)``: 1 / m on the m content positions of each input, 0 elsewhere."""
    return tokens.content.to(dtype) / tokens.n_content.clamp_min(1)[:, None]


def content_mean(values: Tensor, tokens: TokenMask) -> Tensor:
    """Mean of ``values (batch, head, query)`` over the content queries -> ``(batch, head)``."""
    weights = content_weights(tokens, values.dtype)
    return (values * weights[:, None, :]).sum(dim=-1)


def top_columns(column_means: Tensor, tokens: TokenMask, top_k: int) -> Tensor:
    """The sum of the ``top_k`` largest content entries of ``column_means (batch, head, seq)``."""
    column_means = column_means * tokens.content[:, None, :].to(column_means.dtype)
    k = min(top_k, column_means.shape[-1])
    return column_means.topk(k, dim=-1).values.sum(dim=-1)


def log_valid(tokens: TokenMask, dtype: torch.dtype) -> Tensor:
    """``log n`` of each input (n valid keys, at least 2): ``(batch,)``."""
    return torch.log(tokens.n_valid.clamp_min(2).to(dtype))
