"""The token mask: which positions of a right-padded batch every measure reads.

Whether padding counts as tokens (``include_padding``, the authors' code) is one decision per
run. The engine resolves it once per batch, with :func:`token_mask`, into a :class:`TokenMask`
that every measurement receives; no measure sees the option itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MIN_TOKENS = 4
"""Fewest real tokens ([CLS], two content tokens, [SEP]) for which the gate scores are defined."""


@dataclass(frozen=True)
class TokenMask:
    """Which positions of a right-padded batch the measures use (all on the batch's device).

    ``valid (batch, seq)`` bool: the tokens (and attention keys and queries) that count: the
    real ones, or every position when padding counts. ``content (batch, seq)`` bool: the valid
    tokens but [CLS] (position 0) and [SEP] (position n - 1 of n real tokens). ``sep (batch,)``:
    the index of [SEP]. ``n_real``, ``n_valid``, ``n_content (batch,)``: the counts of real,
    valid and content tokens. ``defined (batch,)`` bool: at least ``MIN_TOKENS`` real tokens.
    """

    valid: Tensor
    content: Tensor
    sep: Tensor
    n_real: Tensor
    n_valid: Tensor
    n_content: Tensor
    defined: Tensor

    @property
    def shape(self) -> tuple[int, int]:
        """``(batch, seq)``."""
        batch, seq = self.valid.shape
        return int(batch), int(seq)

    def part(self, start: int, stop: int, seq: int) -> TokenMask:
        """The mask of inputs ``start:stop`` cut to their first ``seq`` positions (every valid
        position of those inputs must lie below ``seq``)."""
        return TokenMask(
            valid=self.valid[start:stop, :seq],
            content=self.content[start:stop, :seq],
            sep=self.sep[start:stop],
            n_real=self.n_real[start:stop],
            n_valid=self.n_valid[start:stop],
            n_content=self.n_content[start:stop],
            defined=self.defined[start:stop],
        )

    def check(self, batch: int, seq: int) -> None:
        """Refuse a tensor of ``(batch, seq)`` tokens that this mask does not describe."""
        if self.shape != (batch, seq):
            raise ValueError(
                f"token mask of (batch, seq) = {self.shape} does not match {(batch, seq)}"
            )


def token_mask(attention_mask: Tensor, include_padding: bool = False) -> TokenMask:
    """The token mask of a right-padded ``attention_mask (batch, seq)`` (1 = real token).

    Without ``include_padding`` the valid positions are the real ones and the content is
    ``1..n-2``; with it every position is valid and the content is every position but 0 and
    n-1. A mask that is not right-padded is refused.
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
    return TokenMask(
        valid=valid,
        content=content,
        sep=sep,
        n_real=n_real,
        n_valid=valid.sum(dim=1),
        n_content=content.sum(dim=1),
        defined=n_real >= MIN_TOKENS,
    )


def every_token(batch: int, seq: int, device: torch.device | str | None = None) -> TokenMask:
    """The mask of a batch without padding: every position is a real token."""
    return token_mask(torch.ones(batch, seq, dtype=torch.long, device=device))


def valid_or_all(valid: Tensor | None, batch: int, seq: int, device: torch.device) -> Tensor:
    """``valid (batch, seq)`` bool checked against the batch, or every position when ``None``
    (the pure functions' default: a batch without padding)."""
    if valid is None:
        return torch.ones(batch, seq, dtype=torch.bool, device=device)
    if tuple(valid.shape) != (batch, seq):
        raise ValueError(
            f"valid token mask shape {tuple(valid.shape)} does not match (batch, seq) "
            f"= {(batch, seq)}"
        )
    return valid.to(device=device, dtype=torch.bool)
