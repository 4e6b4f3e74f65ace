"""The data-based subspace measures of DESIGN 3.3 computed from the model's own projections.

``bertgeom.measures.subspace_data`` defines the measures from the stream ``x`` entering a layer:
it projects every token onto each head's query and key subspaces and forms the queries
``W_q^h x``, all ``d x d`` products per token in float64, about as much work again as the
layer's own projections. The forward pass has already computed ``q = W_q x + b_q`` and
``k = W_k x + b_k``; with the thin QR ``W_q^h^T = Q_h R_h`` the coordinates of x in the query
subspace are ``Q_h^T x = R_h^{-T} (q_h - b_q^h)``, so the energy share needs one ``dk x dk``
product per head and token, and the selection directions ``u_i = W_k^h^T W_q^h x_i`` have
squared norms ``q_i^T (W_k^h W_k^h^T) q_i = ||R_k q_i||^2`` (``W_k^h^T = Q_k R_k``). Same
definitions, a twelfth of the work at ``d = 12 dk``. The per-token products run in the
projections' precision (float32 for a float32 model), the sums over tokens in float64 (the
sum of unit selection directions in the projections' precision, as the cone index's); tested
equal to ``subspace_data_measures`` to about 1e-6 relative (float32 rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from bertgeom.capture.projected_subspace_kernels import reduce_kernel, subtract_bias_kernel
from bertgeom.measures.bilinear_forms import split_heads
from bertgeom.measures.cone_index import cone_stats_from_unit_sum
from bertgeom.measures.subspace_data import mean_over_valid
from bertgeom.measures.tokens import valid_or_all
from bertgeom.measures.workspace import scratch

F64 = torch.float64
CONDITION_LIMIT = 1e6
"""Above this condition number of a head's ``R`` the projected path is not used."""


class CompiledFactors(NamedTuple):
    """``ProjectionBases`` in the projections' dtype: the factors and the biases ``(H dk,)``
    (zeros where there is none)."""

    inverse_r_q: Tensor
    key_r: Tensor
    inverse_r_k: Tensor
    bias_q: Tensor
    bias_k: Tensor


@dataclass(frozen=True)
class ProjectionBases:
    """What one layer's fast path needs, float64, as factors F with ``F F^T`` the ``dk x dk``
    matrix of a quadratic form (``v^T F F^T v = ||F^T v||^2``): ``inverse_r_q``/``inverse_r_k``
    ``(head, dk, dk)`` = ``R_h^{-1}`` (R of the thin QR of ``W^h^T``; ``R^{-1} R^{-T} = (W^h
    W^h^T)^{-1}``), ``key_r`` ``(head, dk, dk)`` = ``R_k^T`` (``R_k^T R_k = W_k^h W_k^h^T``),
    ``key_heads`` ``(head, dk, d)`` = ``W_k^h``, the biases ``(H dk,)``."""

    inverse_r_q: Tensor
    inverse_r_k: Tensor
    key_r: Tensor
    key_heads: Tensor
    bias_q: Tensor | None
    bias_k: Tensor | None
    _in_dtypes: dict[torch.dtype, CompiledFactors] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def in_dtype(self, dtype: torch.dtype) -> CompiledFactors:
        """The factors and biases of the compiled path in ``dtype`` (converted once)."""
        if dtype not in self._in_dtypes:
            zeros = torch.zeros(self.key_heads.shape[0] * self.key_heads.shape[1], dtype=dtype)
            self._in_dtypes[dtype] = CompiledFactors(
                inverse_r_q=self.inverse_r_q.to(dtype),
                key_r=self.key_r.to(dtype),
                inverse_r_k=self.inverse_r_k.to(dtype),
                bias_q=zeros if self.bias_q is None else self.bias_q.to(dtype),
                bias_k=zeros if self.bias_k is None else self.bias_k.to(dtype),
            )
        return self._in_dtypes[dtype]

    @classmethod
    def of(
        cls,
        weight_q: Tensor,
        bias_q: Tensor | None,
        weight_k: Tensor,
        bias_k: Tensor | None,
        n_heads: int,
    ) -> ProjectionBases | None:
        """The bases of one layer, or None when a head's ``W^h`` is (nearly) rank-deficient."""
        factors = []
        for weight in (weight_q, weight_k):
            r = torch.linalg.qr(split_heads(weight.to(F64), n_heads).transpose(1, 2)).R
            if bool((torch.linalg.cond(r) > CONDITION_LIMIT).any()):
                return None
            factors.append(r)
        r_q, r_k = factors
        return cls(
            inverse_r_q=torch.linalg.inv(r_q),
            inverse_r_k=torch.linalg.inv(r_k),
            key_r=r_k.transpose(1, 2),
            key_heads=split_heads(weight_k.to(F64), n_heads),
            bias_q=None if bias_q is None else bias_q.to(F64),
            bias_k=None if bias_k is None else bias_k.to(F64),
        )


def _per_head(projection: Tensor, bias: Tensor | None, n_heads: int) -> Tensor:
    """``(batch, seq, H dk)`` minus ``bias`` -> ``(head, batch * seq, dk)`` (the layout of one
    batched product per head), in the projection's precision (at least float32)."""
    values = projection.to(torch.promote_types(projection.dtype, torch.float32))
    if bias is not None:
        values = values - bias.to(values.device, values.dtype)
    batch, seq, width = values.shape
    return values.reshape(batch * seq, n_heads, width // n_heads).transpose(0, 1)


def _squared_norms(vectors: Tensor, factor: Tensor, batch: int) -> Tensor:
    """``v^T F F^T v = ||F^T v||^2`` for each ``(head, token)`` row of ``vectors (head, batch *
    seq, dk)`` with ``F (head, dk, dk)`` -> ``(batch, head, seq)`` float64."""
    values = torch.bmm(vectors, factor.to(vectors.device, vectors.dtype)).square_().sum(-1)
    return values.view(values.shape[0], batch, -1).transpose(0, 1).to(F64)


def _mean_share(inside: Tensor, total: Tensor, valid: Tensor) -> Tensor:
    """Mean over valid non-zero tokens of ``inside / total``: ``(batch, head)`` (as
    ``subspace_data.energy_share``)."""
    shares = torch.where(total > 0, inside / total.clamp_min(torch.finfo(F64).tiny), torch.nan)
    return mean_over_valid(shares, valid)


def projected_subspace_measures(
    hidden: Tensor,
    queries: Tensor,
    keys: Tensor,
    bases: ProjectionBases,
    n_heads: int,
    valid: Tensor | None = None,
    include_query_bias: bool = False,
) -> dict[str, Tensor]:
    """``subspace_data_measures`` from ``hidden (batch, seq, d)`` (the layer input) and the
    layer's projections ``queries``/``keys (batch, seq, H dk)`` (biases included): the same
    five ``(batch, head)`` tensors, float64. On the CPU, float32 or float64 tensors of one dtype
    take the compiled passes (``_compiled_measures``), others the torch ones."""
    batch, seq, _ = hidden.shape
    if _compiled(hidden, queries, keys):
        token_valid = valid_or_all(valid, batch, seq, hidden.device)
        return _compiled_measures(
            hidden, queries, keys, bases, n_heads, token_valid, include_query_bias
        )
    valid = valid_or_all(valid, batch, seq, hidden.device)[:, None, :]
    # Squares in the stream's precision, summed in float64 (no float64 copy of the stream).
    total = hidden.square().sum(-1, dtype=F64)[:, None, :]
    linear_q = _per_head(queries, bases.bias_q, n_heads)
    linear_k = _per_head(keys, bases.bias_k, n_heads)
    # ||Q^T x||^2 = u^T (R^{-1} R^{-T}) u. The per-token dk x dk products run in the
    # projections' precision (float32 for a float32 model: q itself carries float32 rounding);
    # sums over tokens are float64.
    inside_q = _squared_norms(linear_q, bases.inverse_r_q, batch)
    inside_k = _squared_norms(linear_k, bases.inverse_r_k, batch)
    selecting = _per_head(queries, None, n_heads) if include_query_bias else linear_q
    norms = _squared_norms(selecting, bases.key_r, batch).sqrt()
    keep = valid & (norms > 0)
    weights = torch.where(keep, 1.0 / norms.clamp_min(torch.finfo(F64).tiny), 0.0)
    # sum_i u_i / ||u_i|| in the projections' precision, as ``cone.unit_vector_sum`` (~1e-7
    # relative): the tokens are read in place, (batch, seq, head, dk), not copied to float64.
    by_token = selecting.transpose(0, 1).reshape(batch, seq, n_heads, -1)
    summed = torch.einsum("bshk,bhs->bhk", by_token, weights.to(by_token.dtype)).to(F64)
    unit_sum = torch.einsum("bhk,hkd->bhd", summed, bases.key_heads.to(hidden.device))
    cone = cone_stats_from_unit_sum(unit_sum, keep.sum(-1))
    return {
        "query_energy_share": _mean_share(inside_q, total, valid),
        "key_energy_share": _mean_share(inside_k, total, valid),
        "selection_cone_index": cone.index,
        "selection_cone_normalized": cone.normalized,
        "selection_mean_cosine": cone.mean_cosine,
    }


def _compiled(*tensors: Tensor) -> bool:
    """Whether the compiled passes take these tensors: on the CPU, float32 or float64, one
    dtype."""
    dtype = tensors[0].dtype
    return dtype in (torch.float32, torch.float64) and all(
        t.device.type == "cpu" and t.dtype == dtype for t in tensors
    )


def _compiled_measures(
    hidden: Tensor,
    queries: Tensor,
    keys: Tensor,
    bases: ProjectionBases,
    n_heads: int,
    valid: Tensor,
    include_query_bias: bool,
) -> dict[str, Tensor]:
    """``projected_subspace_measures`` on the CPU: every float32 value as the torch path
    makes it (into reused buffers), the query bias subtracted and the selection vectors laid
    out for their weighted sum in one compiled pass (``subtract_bias_kernel``), the shares,
    masks and weights in another (``reduce_kernel``), the length of the sum of unit selection
    directions from the ``dk x dk`` factor (``||W_k^h^T v|| = ||R_k v||``, float64) rather
    than the d-wide directions."""
    batch, seq, width = queries.shape
    dtype, device = queries.dtype, hidden.device
    dk = width // n_heads
    factors = bases.in_dtype(dtype)

    def buffer(name: str, *shape: int) -> Tensor:
        return scratch(f"projected.{name}", math.prod(shape), dtype, device).view(*shape)

    def per_head(values: Tensor) -> Tensor:  # (batch, seq, H dk) -> (head, batch * seq, dk)
        return values.reshape(batch * seq, n_heads, dk).transpose(0, 1)

    def squared_norms(vectors: Tensor, factor: Tensor) -> Tensor:
        product = torch.bmm(vectors, factor, out=buffer("product", n_heads, batch * seq, dk))
        return product.square_().sum(-1).view(n_heads, batch, seq)

    linear_q = buffer("linear_q", batch, seq, width)
    by_input = buffer("by_input", batch, n_heads, dk, seq)
    selection_bias = torch.zeros_like(factors.bias_q) if include_query_bias else factors.bias_q
    subtract_bias_kernel(
        queries.contiguous().numpy(),
        factors.bias_q.numpy(),
        selection_bias.numpy(),
        linear_q.numpy(),
        by_input.numpy(),
    )
    linear_k = per_head(torch.sub(keys, factors.bias_k, out=buffer("linear_k", *keys.shape)))
    selecting = per_head(queries) if include_query_bias else per_head(linear_q)
    shares = np.zeros((2, batch, n_heads))
    share_counts = np.zeros((2, batch, n_heads), dtype=np.int64)
    weights = buffer("weights", batch, n_heads, seq)
    kept = np.zeros((batch, n_heads), dtype=np.int64)
    reduce_kernel(
        hidden.contiguous().numpy(),
        squared_norms(per_head(linear_q), factors.inverse_r_q).numpy(),
        squared_norms(linear_k, factors.inverse_r_k).numpy(),
        squared_norms(selecting, factors.key_r).numpy(),
        valid.to(torch.bool).numpy(),
        shares,
        share_counts,
        weights.numpy(),
        kept,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.where(share_counts > 0, shares / np.maximum(share_counts, 1), np.nan)
    # The product einsum("bshk,bhs->bhk", selecting, weights) makes, on the layout it makes.
    rows = batch * n_heads
    summed = torch.bmm(by_input.view(rows, dk, seq), weights.view(rows, seq, 1))
    summed = summed.view(batch, n_heads, dk).to(F64)
    unit_sum = torch.bmm(summed.transpose(0, 1), bases.key_r).transpose(0, 1)
    cone = cone_stats_from_unit_sum(unit_sum, torch.from_numpy(kept))
    return {
        "query_energy_share": torch.from_numpy(means[0]),
        "key_energy_share": torch.from_numpy(means[1]),
        "selection_cone_index": cone.index,
        "selection_cone_normalized": cone.normalized,
        "selection_mean_cosine": cone.mean_cosine,
    }
