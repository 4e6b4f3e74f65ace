"""Directionality of subspace selection measured on data (DESIGN 3.3).

For the stream ``x`` entering a layer (``hidden_states[l]``) and each head h of that layer:

- the share of each token's energy in the head's query subspace row(W_q^h) and key subspace
  row(W_k^h), ``||P x||^2 / ||x||^2`` with P the orthogonal projector (about dk / d for a random
  direction);
- the cone index of the selection directions ``u_i = M_h^T x_i = W_k^h^T W_q^h x_i`` over the
  valid queries: query i scores key j as ``u_i . x_j``, so a head whose queries all select along
  one direction has I / n near 1.

The per-input values are averaged per (layer, head, class) by ``SubspaceDataAccumulator``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bertgeom.measures.bilinear_forms import split_heads
from bertgeom.measures.cone_index import ConeBatch, cone_stats_from_unit_sum
from bertgeom.measures.grouping import class_groups
from bertgeom.measures.moments import GroupedMoments
from bertgeom.measures.tokens import valid_or_all

F64 = torch.float64


def row_space_bases(weight: Tensor, n_heads: int) -> Tensor:
    """Orthonormal bases ``(head, d, dk)`` of row(W^h) for every head of an input projection
    ``weight (n_heads*dk, d)`` (thin QR of W^h^T; assumes each block has full rank dk)."""
    return torch.linalg.qr(split_heads(weight.to(F64), n_heads).transpose(1, 2)).Q


def token_energy_share(hidden: Tensor, bases: Tensor) -> Tensor:
    """``||B_h^T x||^2 / ||x||^2`` for every token and head: ``hidden (batch, seq, d)``, ``bases
    (head, d, dk)`` -> ``(batch, head, seq)``; NaN for zero vectors."""
    x = hidden.to(F64)
    inside = torch.einsum("bsd,hdk->bhsk", x, bases.to(F64)).square().sum(-1)
    total = x.square().sum(-1)[:, None, :]
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(F64).tiny), torch.nan)


def energy_share(
    hidden: Tensor,
    bases: Tensor,
    valid: Tensor | None = None,
) -> Tensor:
    """Mean over the ``valid (batch, seq)`` non-zero tokens of ``token_energy_share``:
    ``(batch, head)``."""
    batch, seq, _ = hidden.shape
    valid = valid_or_all(valid, batch, seq, hidden.device)[:, None, :]
    shares = token_energy_share(hidden, bases)
    return mean_over_valid(shares, valid)


def mean_over_valid(shares: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``shares (..., token)`` over the tokens that are ``valid`` and not NaN; NaN where
    none is."""
    keep = valid & ~torch.isnan(shares)
    total = torch.where(keep, shares, torch.zeros_like(shares)).sum(-1)
    count = keep.sum(-1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.nan)


def selection_cone_index(
    hidden: Tensor,
    weight_q: Tensor,
    weight_k: Tensor,
    n_heads: int,
    valid: Tensor | None = None,
    bias_q: Tensor | None = None,
) -> ConeBatch:
    """Cone index of the selection directions ``u_i = W_k^h^T q_i`` over the valid queries,
    ``q_i = W_q^h x_i`` (plus ``b_q^h`` when ``bias_q`` is given, which adds the key-side bias
    term to the selection): ``(batch, head)`` statistics.

    The u_i (batch x head x seq x d) are never formed: with G = W_k^h W_k^h^T,
    ``||u_i||^2 = q_i^T G q_i`` and ``I = ||W_k^h^T v||`` for ``v = sum_i q_i / ||u_i||``.
    """
    batch, seq, _ = hidden.shape
    q_heads = split_heads(weight_q.to(F64), n_heads)
    k_heads = split_heads(weight_k.to(F64), n_heads)
    queries = torch.einsum("bsd,hkd->bhsk", hidden.to(F64), q_heads)
    if bias_q is not None:
        queries = queries + bias_q.to(F64).reshape(n_heads, -1)[None, :, None, :]
    gram = k_heads @ k_heads.transpose(1, 2)
    norms = torch.einsum("bhsk,hkl,bhsl->bhs", queries, gram, queries).clamp_min(0).sqrt()
    valid = valid_or_all(valid, batch, seq, hidden.device)[:, None, :]
    keep = valid & (norms > 0)
    weights = torch.where(keep, 1.0 / norms.clamp_min(torch.finfo(F64).tiny), 0.0)
    summed = torch.einsum("bhsk,bhs->bhk", queries, weights)
    # sum_i u_i / ||u_i|| = W_k^T v, a (batch, head, d) tensor: small, unlike the u_i themselves
    unit_sum = torch.einsum("bhk,hkd->bhd", summed, k_heads)
    return cone_stats_from_unit_sum(unit_sum, keep.sum(-1))


def subspace_data_measures(
    hidden: Tensor,
    valid: Tensor | None,
    weight_q: Tensor,
    weight_k: Tensor,
    n_heads: int,
    bias_q: Tensor | None = None,
) -> dict[str, Tensor]:
    """All per-input data measures of one layer, each ``(batch, head)``:
    ``query_energy_share``, ``key_energy_share``, ``selection_cone_index`` (I),
    ``selection_cone_normalized`` (I / n), ``selection_mean_cosine``."""
    cone = selection_cone_index(hidden, weight_q, weight_k, n_heads, valid, bias_q)
    return {
        "query_energy_share": energy_share(hidden, row_space_bases(weight_q, n_heads), valid),
        "key_energy_share": energy_share(hidden, row_space_bases(weight_k, n_heads), valid),
        "selection_cone_index": cone.index,
        "selection_cone_normalized": cone.normalized,
        "selection_mean_cosine": cone.mean_cosine,
    }


class SubspaceDataAccumulator:
    """Streams the data-based subspace measures per (layer, head, class).

    ``result()`` columns ``layer, head, class, metric, value``; for each measure of
    ``subspace_data_measures`` the metrics ``subspace.<name>`` (mean over inputs) and
    ``subspace.<name>_std`` (sample std), and ``subspace.n_inputs``.
    """

    def __init__(self, include_query_bias: bool = False) -> None:
        self.include_query_bias = include_query_bias
        self.moments_ = GroupedMoments()

    def update(
        self,
        layer: int,
        hidden: Tensor,
        valid: Tensor | None,
        weight_q: Tensor,
        weight_k: Tensor,
        n_heads: int,
        labels: Sequence[str] | None = None,
        bias_q: Tensor | None = None,
    ) -> None:
        """Add ``hidden (batch, seq, d)``, the stream entering ``layer``, read by its heads."""
        values = subspace_data_measures(
            hidden,
            valid,
            weight_q,
            weight_k,
            n_heads,
            bias_q if self.include_query_bias else None,
        )
        self.update_values(layer, values, labels)

    def update_values(
        self, layer: int, values: Mapping[str, Tensor], labels: Sequence[str] | None = None
    ) -> None:
        """Add precomputed per-input values, each ``(batch, head)``."""
        arrays = {name: v.detach().to(F64).cpu().numpy() for name, v in values.items()}
        batch = next(iter(arrays.values())).shape[0]
        for label, idx in class_groups(labels, batch):
            for name, array in arrays.items():  # element-wise over the heads
                self.moments_.add((layer, label, name), array[idx])

    def merge(self, other: SubspaceDataAccumulator) -> SubspaceDataAccumulator:
        """A new accumulator with both inputs."""
        if self.include_query_bias != other.include_query_bias:
            raise ValueError(
                "cannot merge SubspaceDataAccumulators built with different parameters"
            )
        out = SubspaceDataAccumulator(self.include_query_bias)
        out.moments_ = self.moments_.merged(other.moments_)
        return out

    def result(self) -> pd.DataFrame:
        """Long table: ``layer, head, class, metric, value``."""
        rows: list[tuple[object, ...]] = []
        counts: dict[tuple[object, ...], float] = {}
        for (layer, label, name), per_head in self.moments_.stats.items():
            for head in range(np.asarray(per_head.count).shape[0]):
                stats = per_head.at(head)
                rows.append((layer, head, label, f"subspace.{name}", stats.value_mean))
                rows.append((layer, head, label, f"subspace.{name}_std", stats.std))
                if name == "query_energy_share":
                    counts[(layer, head, label)] = float(stats.count)
        rows.extend((*key, "subspace.n_inputs", count) for key, count in counts.items())
        frame = pd.DataFrame(rows, columns=["layer", "head", "class", "metric", "value"])
        frame["value"] = frame["value"].astype(np.float64)
        return frame.sort_values(["layer", "head", "class", "metric"]).reset_index(drop=True)
