"""The distribution of each head's output (DESIGN 3.1's head-output point, 3.4's statistics).

The head-output measuring point is per head: ``Z_h = A V_h`` (n x dk) before the heads are
concatenated. :class:`HeadDistributionAccumulator` streams, per (layer, class), the power sums
of every coordinate of all heads side by side and one ``dk x dk`` Gram matrix per head (a
batched product: 1 / heads of the work of the full ``d x d`` Gram), all additive; ``result()``
gives each head's ``dist.head_output.*`` values, the same statistics as
``distribution_stats.summary_values`` on that head's coordinates alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bertgeom.measures.base import ALL_CLASSES
from bertgeom.measures.distribution_accumulator import add_state, merged_states
from bertgeom.measures.distribution_stats import summary_values
from bertgeom.measures.grouping import FloatArray, class_groups
from bertgeom.measures.power_sums import PowerSums
from bertgeom.measures.token_scan import scan_tokens
from bertgeom.measures.token_statistics import head_gram_matrices
from bertgeom.measures.tokens import valid_or_all


@dataclass
class _HeadState:
    tokens: float
    sums: PowerSums  # per coordinate, heads side by side (head * dk)
    grams: FloatArray  # (head, dk, dk)

    def copy(self) -> _HeadState:
        return _HeadState(self.tokens, self.sums.copy(), self.grams.copy())

    def add_(self, other: _HeadState) -> None:
        self.tokens += other.tokens
        self.sums.add_(other.sums)
        self.grams += other.grams


class HeadDistributionAccumulator:
    """Streams the distribution of each head's output per (layer, head, class).

    ``update(layer, head_outputs (batch, head, seq, dk), valid, labels)`` uses the ``valid (batch,
    seq)`` tokens; classes ``"all"`` and, with ``per_class``, each label. ``result()`` columns
    ``layer, head, class, metric, value`` with metrics ``dist.head_output.<name>`` for the names of
    ``distribution_stats.summary_values`` (moments pooled over the head's tokens and coordinates,
    normality test, participation ratio of its ``dk x dk`` covariance, outlier coordinates).
    """

    def __init__(self, per_class: bool = True, outlier_factor: float = 6.0) -> None:
        self.per_class = per_class
        self.outlier_factor = outlier_factor
        self.states_: dict[tuple[int, str], _HeadState] = {}

    def _params(self) -> tuple[object, ...]:
        return (self.per_class, self.outlier_factor)

    def update(
        self,
        layer: int,
        head_outputs: Tensor,
        valid: Tensor | None,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Add one layer's ``head_outputs (batch, head, seq, dk)``."""
        batch, heads, seq, dk = head_outputs.shape
        valid = valid_or_all(valid, batch, seq, head_outputs.device)
        # (batch, seq, head * dk): the hooks' layout, a view of it
        by_token = head_outputs.transpose(1, 2).reshape(batch, seq, heads * dk)
        groups = list(class_groups(labels if self.per_class else None, batch))
        for label, idx in groups[1:] if len(groups) > 1 else groups:
            scan = scan_tokens(by_token, valid, idx, keep_rows=True)
            assert scan.rows is not None
            n, tokens = scan.n, scan.rows
            totals = torch.from_numpy(scan.sums.s1).view(heads, dk)
            centres = (totals / n).to(tokens.dtype) if n and tokens.is_floating_point() else None
            per_head = tokens.view(n, heads, dk).transpose(0, 1)  # (head, n, dk), strided
            grams = head_gram_matrices(per_head, totals, centres, overwrite=scan.rows_are_copy)
            state = _HeadState(float(n), scan.sums, grams)
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
                sums = state.sums.part(part)
                values = summary_values(state.tokens, sums, state.grams[head], self.outlier_factor)
                rows.extend(
                    (layer, head, label, f"dist.head_output.{name}", value)
                    for name, value in values.items()
                )
        frame = pd.DataFrame(rows, columns=["layer", "head", "class", "metric", "value"])
        frame["value"] = frame["value"].astype(np.float64)
        return frame.sort_values(["layer", "head", "class", "metric"]).reset_index(drop=True)
