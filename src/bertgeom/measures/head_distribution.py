"""The distribution of each head's output (DESIGN 3.1's head-output point, 3.4's statistics).

The head-output measuring point is per head: ``Z_h = A V_h`` (n x dk) before the heads are
concatenated. :class:`HeadDistributionAccumulator` streams, per (layer, class), the power sums
of every coordinate of all heads side by side and one ``dk x dk`` Gram matrix per head (a
batched product: 1 / heads of the work of the full ``d x d`` Gram), all additive; ``result()``
gives each head's ``dist.head_output.*`` values, the same statistics as
``distribution.summary_values`` on that head's coordinates alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bertgeom.measures.base import ALL_CLASSES
from bertgeom.measures.cone import FloatArray, class_groups, valid_tokens
from bertgeom.measures.distribution import PowerSums, add_state, merged_states, summary_values


def head_gram_matrices(head_tokens: Tensor) -> FloatArray:
    """``sum_i z_i z_i^T`` per head of ``head_tokens (head, n, dk)``, float64 ``(head, dk, dk)``:
    a batched product in the input's precision about each head's mean, restored exactly in
    float64 (the identity of ``distribution.gram_matrix``)."""
    z = head_tokens.detach()
    if z.dtype == torch.float64 or z.shape[1] == 0:
        z = z.to(torch.float64)
        return (z.transpose(1, 2) @ z).cpu().numpy().copy()
    centre = z.mean(dim=1, keepdim=True)  # (head, 1, dk)
    centred = z - centre
    product = (centred.transpose(1, 2) @ centred).to(torch.float64)
    m = centre.to(torch.float64)  # (head, 1, dk)
    total = z.to(torch.float64).sum(dim=1, keepdim=True)
    cross = m.transpose(1, 2) @ total
    product += cross + cross.transpose(1, 2) - z.shape[1] * (m.transpose(1, 2) @ m)
    return product.cpu().numpy().copy()


@dataclass
class _HeadState:
    tokens: float
    sums: PowerSums  # per coordinate, heads side by side (head * dk)
    grams: FloatArray  # (head, dk, dk)

    def copy(self) -> _HeadState:
        sums = PowerSums(*(np.array(v) for v in vars(self.sums).values()))
        return _HeadState(self.tokens, sums, self.grams.copy())

    def add_(self, other: _HeadState) -> None:
        self.tokens += other.tokens
        for name, value in vars(other.sums).items():
            getattr(self.sums, name).__iadd__(value)
        self.grams += other.grams


class HeadDistributionAccumulator:
    """Streams the distribution of each head's output per (layer, head, class).

    ``update(layer, head_outputs (batch, head, seq, dk), attention_mask, labels)`` uses the
    valid tokens; classes ``"all"`` and, with ``per_class``, each label. ``result()`` columns
    ``layer, head, class, metric, value`` with metrics ``dist.head_output.<name>`` for the names
    of ``distribution.summary_values`` (moments pooled over the head's tokens and coordinates,
    normality test, effective rank of its ``dk x dk`` covariance, outlier coordinates).
    """

    def __init__(
        self, per_class: bool = True, include_padding: bool = False, outlier_factor: float = 6.0
    ) -> None:
        self.per_class = per_class
        self.include_padding = include_padding
        self.outlier_factor = outlier_factor
        self.states_: dict[tuple[int, str], _HeadState] = {}

    def _params(self) -> tuple[object, ...]:
        return (self.per_class, self.include_padding, self.outlier_factor)

    def update(
        self,
        layer: int,
        head_outputs: Tensor,
        attention_mask: Tensor | None,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Add one layer's ``head_outputs (batch, head, seq, dk)``."""
        batch, heads, seq, dk = head_outputs.shape
        valid = valid_tokens(attention_mask, batch, seq, self.include_padding)
        by_token = head_outputs.transpose(1, 2)  # (batch, seq, head, dk)
        groups = list(class_groups(labels if self.per_class else None, batch))
        for label, idx in groups[1:] if len(groups) > 1 else groups:
            rows = torch.as_tensor(idx, dtype=torch.long, device=head_outputs.device)
            tokens = by_token[valid] if len(idx) == batch else by_token[rows][valid[rows]]
            state = _HeadState(
                float(tokens.shape[0]),
                PowerSums.of(tokens.reshape(tokens.shape[0], heads * dk)),
                head_gram_matrices(tokens.transpose(0, 1)),
            )
            for key_label in dict.fromkeys((label, ALL_CLASSES)):  # in order, not by hash
                add_state(self.states_, (layer, key_label), state)

    def merge(self, other: HeadDistributionAccumulator) -> HeadDistributionAccumulator:
        """A new accumulator with both inputs."""
        if self._params() != other._params():
            raise ValueError("cannot merge HeadDistributionAccumulators with other parameters")
        out = HeadDistributionAccumulator(*self._params())  # type: ignore[arg-type]
        out.states_ = merged_states(self.states_, other.states_)
        return out

    def result(self) -> pd.DataFrame:
        """Long table: ``layer, head, class, metric, value``."""
        rows: list[tuple[object, ...]] = []
        for (layer, label), state in self.states_.items():
            heads, dk, _ = state.grams.shape
            for head in range(heads):
                part = slice(head * dk, (head + 1) * dk)
                sums = PowerSums(*(np.asarray(v)[part] for v in vars(state.sums).values()))
                values = summary_values(state.tokens, sums, state.grams[head], self.outlier_factor)
                rows.extend(
                    (layer, head, label, f"dist.head_output.{name}", value)
                    for name, value in values.items()
                )
        frame = pd.DataFrame(rows, columns=["layer", "head", "class", "metric", "value"])
        frame["value"] = frame["value"].astype(np.float64)
        return frame.sort_values(["layer", "head", "class", "metric"]).reset_index(drop=True)
