"""Which positions of a right-padded batch the gate scores (DESIGN 3.2) use, and the mean over
content queries every score ends with. Re-exported by ``bertgeom.measures.gates``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MIN_TOKENS = 4
"""Fewest real tokens ([CLS], two content tokens, [SEP]) for which the scores are defined."""


@dataclass(frozen=True)
class TokenLayout:
    """Which positions of a right-padded batch each statistic uses.

    ``valid (batch, seq)`` bool: keys (and queries) that count; ``content (batch, seq)`` bool:
    content tokens; ``sep (batch,)``: index of [SEP] (n - 1 for n real tokens); ``n_valid
    (batch,)`` and ``n_content (batch,)``: their counts; ``defined (batch,)`` bool: at least
    ``MIN_TOKENS`` real tokens.
    """

    valid: Tensor
    content: Tensor
    sep: Tensor
    n_valid: Tensor
    n_content: Tensor
    defined: Tensor

    def part(self, start: int, stop: int, seq: int) -> TokenLayout:
        """The layout of inputs ``start:stop`` cut to their first ``seq`` positions (every valid
        position of those inputs must lie below ``seq``)."""
        return TokenLayout(
            valid=self.valid[start:stop, :seq],
            content=self.content[start:stop, :seq],
            sep=self.sep[start:stop],
            n_valid=self.n_valid[start:stop],
            n_content=self.n_content[start:stop],
            defined=self.defined[start:stop],
        )


def token_layout(attention_mask: Tensor, include_padding: bool = False) -> TokenLayout:
    """The token layout of a right-padded ``attention_mask (batch, seq)`` (1 = real token).

    Without ``include_padding`` the valid positions are the real ones and the content is
    ``1..n-2``; with it every position is valid and the content is every position but 0 and n-1.
    """
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must be (batch, seq), got {tuple(attention_mask.shape)}")
    real = attention_mask != 0
    n_real = real.sum(dim=1)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if not bool(torch.equal(real, positions[None, :] < n_real[:, None])):
        raise ValueError(
            "attention_mask must be right-padded (1 for the real tokens, then 0 for padding); "
            "pad on the right or pass the mask the tokenizer produced"
        )
    sep = (n_real - 1).clamp_min(0)
    valid = torch.ones_like(real) if include_padding else real
    content = valid & (positions[None, :] != 0) & (positions[None, :] != sep[:, None])
    return TokenLayout(
        valid=valid,
        content=content,
        sep=sep,
        n_valid=valid.sum(dim=1),
        n_content=content.sum(dim=1),
        defined=n_real >= MIN_TOKENS,
    )


def content_weights(layout: TokenLayout, dtype: torch.dtype) -> Tensor:
    """``(batch, seq)``: 1 / m on the m content positions of each input, 0 elsewhere."""
    return layout.content.to(dtype) / layout.n_content.clamp_min(1)[:, None]


def content_mean(values: Tensor, layout: TokenLayout) -> Tensor:
    """Mean of ``values (batch, head, query)`` over the content queries -> ``(batch, head)``."""
    weights = content_weights(layout, values.dtype)
    return (values * weights[:, None, :]).sum(dim=-1)


def top_columns(column_means: Tensor, layout: TokenLayout, top_k: int) -> Tensor:
    """The sum of the ``top_k`` largest content entries of ``column_means (batch, head, seq)``."""
    column_means = column_means * layout.content[:, None, :].to(column_means.dtype)
    k = min(top_k, column_means.shape[-1])
    return column_means.topk(k, dim=-1).values.sum(dim=-1)


def log_valid(layout: TokenLayout, dtype: torch.dtype) -> Tensor:
    """``log n`` of each input (n valid keys, at least 2): ``(batch,)``."""
    return torch.log(layout.n_valid.clamp_min(2).to(dtype))
