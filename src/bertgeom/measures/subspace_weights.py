"""Directionality of subspace selection from the weights (DESIGN 3.3).

Head h of a layer scores query token x_i against key token x_j with the bilinear form
``x_i^T M_h x_j`` plus bias terms, ``M_h = W_q^h^T W_k^h`` (d x d, rank <= dk). Weights are in
Hugging Face layout: ``W_q`` is (d x d, out x in), head h owns rows ``h*dk:(h+1)*dk``
(``W_q^h``, dk x d); ``W_O^h`` is the d x dk block of the output projection's *columns*.
Every function takes plain tensors, so any BERT-family model can be measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import Tensor

from bertgeom.measures.base import ALL_CLASSES
from bertgeom.measures.bilinear_forms import (
    asymmetries,
    asymmetry,
    directionality_from_norms,
    directionality_score,
    effective_rank,
    eigen_signature,
    head_qr,
    reduced_forms,
    split_heads,
    split_output_heads,
    symmetric_part_spectrum,
    symmetry_score,
    symmetry_scores,
)

F64 = torch.float64
OVERLAP_KINDS = ("query", "key", "value", "write", "query_key")
ORDERED_HEAD_VALUES = (
    "norm_frobenius",
    "spectral_norm",
    "effective_rank",
    "asymmetry",
    "symmetry_score",
    "directionality_score",
    "eig_positive_mass",
    "query_key_overlap",
    "query_key_max_cos",
)
"""The per-head values computed for all heads at once, in table order (the eigenvalue counts
go between the first six and the rest)."""


def orthonormal_basis(matrix: Tensor, rtol: float | None = None) -> Tensor:
    """Orthonormal basis ``(d, r)`` of the column space of ``matrix (d, p)`` (left singular
    vectors with sigma > rtol * sigma_max; default rtol = eps * max(d, p), as scipy.linalg.orth)."""
    u, s, _ = torch.linalg.svd(matrix.to(F64), full_matrices=False)
    if rtol is None:
        rtol = torch.finfo(F64).eps * max(matrix.shape)
    keep = s > rtol * s.max() if s.numel() and s.max() > 0 else s > math.inf
    return u[:, keep]


def principal_angles(a: Tensor, b: Tensor) -> Tensor:
    """Principal angles (radians, ascending) between col(a) and col(b), ``a (d, p)``,
    ``b (d, q)``: arccos of the singular values of Q_a^T Q_b, and for angles below 45 degrees
    the arcsin of the singular values of the residual (accurate for small angles; the method of
    scipy.linalg.subspace_angles, which returns them descending)."""
    qa, qb = orthonormal_basis(a), orthonormal_basis(b)
    if qa.shape[1] < qb.shape[1]:
        qa, qb = qb, qa
    cross = qa.T @ qb
    cosines = torch.linalg.svdvals(cross).clamp(-1.0, 1.0)
    sines = torch.linalg.svdvals(qb - qa @ cross).clamp(-1.0, 1.0)
    from_cos = torch.arccos(cosines)
    from_sin = torch.arcsin(sines.flip(0))
    return torch.where(cosines**2 >= 0.5, from_sin, from_cos)


def subspace_overlap(a: Tensor, b: Tensor) -> float:
    """Mean cos^2 of the principal angles between col(a) and col(b):
    ``||Q_a^T Q_b||_F^2 / min(r_a, r_b)`` in [0, 1]; 1 = one contains the other, 0 = orthogonal,
    about max(r_a, r_b) / d for random subspaces."""
    qa, qb = orthonormal_basis(a), orthonormal_basis(b)
    return float((qa.T @ qb).square().sum() / min(qa.shape[1], qb.shape[1]))


def _overlap_matrix(bases_a: Tensor, bases_b: Tensor) -> Tensor:
    """Overlaps between every pair of (head, d, dk) orthonormal bases: ``(head, head)``."""
    heads_a, d, dk_a = bases_a.shape
    heads_b, _, dk_b = bases_b.shape
    # Every Q_a^h^T Q_b^g block of one (heads * dk) x (heads * dk) product.
    flat_a = bases_a.transpose(0, 1).reshape(d, heads_a * dk_a)
    flat_b = bases_b.transpose(0, 1).reshape(d, heads_b * dk_b)
    cross = (flat_a.T @ flat_b).reshape(heads_a, dk_a, heads_b, dk_b).square().sum((1, 3))
    return cross / min(dk_a, dk_b)


def query_key_max_cosines(
    weight_q: Tensor,
    weight_k: Tensor,
    n_heads: int,
    factors: tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
) -> Tensor:
    """Per head, the largest cosine of the principal angles between its query subspace
    row(W_q^h) and its key subspace row(W_k^h): ``(head,)``, float64.

    When every head has full rank (``W^h`` and its R share their singular values, none below
    ``orthonormal_basis``'s tolerance) the Q of the thin QR (``head_qr``, or ``factors``) is an
    orthonormal basis of the subspace; otherwise ``orthonormal_basis`` head by head."""
    q_factors, k_factors = factors or (head_qr(weight_q, n_heads), head_qr(weight_k, n_heads))
    for basis, r in (q_factors, k_factors):
        s = torch.linalg.svdvals(r)
        rtol = torch.finfo(F64).eps * max(basis.shape[1:])
        if not bool((s > rtol * s.amax(-1, keepdim=True)).all()):
            blocks = [split_heads(w.to(F64), n_heads).transpose(1, 2) for w in (weight_q, weight_k)]
            pairs = zip(blocks[0], blocks[1], strict=True)
            return torch.stack(
                [
                    torch.linalg.svdvals(orthonormal_basis(q).T @ orthonormal_basis(k)).max()
                    for q, k in pairs
                ]
            )
    return torch.linalg.svdvals(q_factors[0].transpose(1, 2) @ k_factors[0]).amax(-1)


def head_bases(blocks: Tensor) -> Tensor:
    """Orthonormal bases ``(head, d, dk)`` of the column spaces of ``blocks (head, d, dk)``."""
    return torch.linalg.qr(blocks.to(F64)).Q


@dataclass(frozen=True)
class AttentionWeights:
    """The attention weights of one layer, Hugging Face layout (out x in)."""

    weight_q: Tensor
    weight_k: Tensor
    weight_v: Tensor
    weight_o: Tensor
    n_heads: int


@dataclass(frozen=True)
class WeightSubspaceResult:
    """``table``: long table ``layer, head, class, metric, value`` (class ``"all"``; head -1 =
    the whole layer); ``overlaps``: kind -> ``(layer, head, head)`` overlap matrices;
    ``singular_values``: ``(layer, head, dk)``."""

    table: pd.DataFrame
    overlaps: dict[str, npt.NDArray[np.float64]]
    singular_values: npt.NDArray[np.float64]


def layer_overlaps(
    weights: AttentionWeights, bases: dict[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """Head x head overlap matrices of one layer: ``query`` (row(W_q^h) vs row(W_q^g)), ``key``,
    ``value`` (row(W_v^h)), ``write`` (col(W_O^h)), ``query_key`` (row(W_q^h) vs row(W_k^g)).
    ``bases``: the ``head_bases`` of some of ``query``, ``key`` and ``value`` if known."""
    n = weights.n_heads
    known = bases or {}
    spaces = {
        name: known[name] if name in known else head_bases(split_heads(w, n).transpose(1, 2))
        for name, w in (
            ("query", weights.weight_q),
            ("key", weights.weight_k),
            ("value", weights.weight_v),
        )
    }
    spaces["write"] = head_bases(split_output_heads(weights.weight_o, n))
    out = {name: _overlap_matrix(basis, basis) for name, basis in spaces.items()}
    out["query_key"] = _overlap_matrix(spaces["query"], spaces["key"])
    return out


def layer_weight_measures(
    weights: AttentionWeights, layer: int, num_std: float = 2.0, eig_rtol: float = 1e-3
) -> tuple[list[tuple[object, ...]], dict[str, Tensor], Tensor]:
    """Rows ``(layer, head, "all", metric, value)``, overlap matrices and singular values of one
    layer (see ``weight_subspace_measures``)."""
    n = weights.n_heads
    d = weights.weight_q.shape[1]
    basis, reduced = reduced_forms(weights.weight_q, weights.weight_k, n)
    # One thin QR per projection serves the singular values, the overlaps and the cosines.
    factors = (head_qr(weights.weight_q, n), head_qr(weights.weight_k, n))
    singular = torch.linalg.svdvals(factors[0][1] @ factors[1][1].transpose(1, 2))
    eigenvalues = symmetric_part_spectrum(reduced)
    overlaps = layer_overlaps(weights, {"query": factors[0][0], "key": factors[1][0]})
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    # Every head at once, from its form on its support (``reduced_forms``): the Frobenius
    # norm, asymmetry and symmetry score do not change under B, the row and column norms of
    # M_h are those of the rows of B (B^T M_h B) and B (B^T M_h B)^T.
    row_norms = torch.linalg.vector_norm(basis @ reduced, dim=-1)
    column_norms = torch.linalg.vector_norm(basis @ reduced.transpose(1, 2), dim=-1)
    per_head = {
        "norm_frobenius": torch.linalg.matrix_norm(reduced),
        "spectral_norm": singular[:, 0],
        "effective_rank": effective_rank(singular),
        "asymmetry": asymmetries(reduced),
        "symmetry_score": symmetry_scores(reduced),
        "directionality_score": directionality_from_norms(row_norms, column_norms, num_std),
        "eig_positive_mass": eigenvalues.clamp_min(0).sum(-1) / eigenvalues.abs().sum(-1),
        "query_key_overlap": overlaps["query_key"].diagonal(),
        "query_key_max_cos": query_key_max_cosines(weights.weight_q, weights.weight_k, n, factors),
    }
    head_values = {name: values.tolist() for name, values in per_head.items()}
    rows: list[tuple[object, ...]] = []
    for head in range(n):
        positive, negative, zero = eigen_signature(eigenvalues[head], d, eig_rtol)
        values = {name: head_values[name][head] for name in ORDERED_HEAD_VALUES[:6]}
        values |= {"eig_positive": positive, "eig_negative": negative, "eig_zero": zero}
        values |= {name: head_values[name][head] for name in ORDERED_HEAD_VALUES[6:]}
        for kind in ("query", "key", "value", "write"):
            values[f"{kind}_overlap_mean"] = float(overlaps[kind][head][off_diagonal[head]].mean())
        rows.extend(
            (layer, head, ALL_CLASSES, f"subspace.{k}", float(v)) for k, v in values.items()
        )
    full = weights.weight_q.to(F64).T @ weights.weight_k.to(F64)
    layer_values = {
        "symmetry_score": symmetry_score(full),
        "directionality_score": directionality_score(full, num_std),
        "asymmetry": asymmetry(full),
        "effective_rank": float(effective_rank(torch.linalg.svdvals(full))),
        "overlap_chance": singular.shape[1] / d,
    }
    for kind in OVERLAP_KINDS:
        matrix = overlaps[kind]
        layer_values[f"{kind}_overlap_mean"] = float(
            matrix[off_diagonal].mean() if kind != "query_key" else matrix.diagonal().mean()
        )
    rows.extend(
        (layer, -1, ALL_CLASSES, f"subspace.layer.{k}", float(v)) for k, v in layer_values.items()
    )
    return rows, overlaps, singular


def weight_subspace_measures(
    layers: Sequence[AttentionWeights], num_std: float = 2.0, eig_rtol: float = 1e-3
) -> WeightSubspaceResult:
    """All weight-based measures of DESIGN 3.3 for a stack of layers.

    Per head (metric ``subspace.<name>``): ``norm_frobenius``, ``spectral_norm``,
    ``effective_rank``, ``asymmetry``, ``symmetry_score``, ``directionality_score`` (Saponati et
    al., on M_h), ``eig_positive`` / ``eig_negative`` / ``eig_zero`` and ``eig_positive_mass`` =
    sum lambda_+ / sum |lambda| of the symmetric part, ``query_key_overlap`` and
    ``query_key_max_cos`` (own query vs key subspace), ``<kind>_overlap_mean`` (mean overlap with
    the other heads). Per layer (head -1, ``subspace.layer.<name>``): the Saponati scores,
    asymmetry and effective rank of the full ``W_qk = W_q^T W_k = sum_h M_h`` (the matrix their
    paper scores), mean off-diagonal overlaps, and ``overlap_chance`` = dk / d.
    """
    rows: list[tuple[object, ...]] = []
    overlaps: dict[str, list[npt.NDArray[np.float64]]] = {k: [] for k in OVERLAP_KINDS}
    singular_values = []
    for layer, weights in enumerate(layers):
        layer_rows, layer_overlap, singular = layer_weight_measures(
            weights, layer, num_std, eig_rtol
        )
        rows.extend(layer_rows)
        for kind in OVERLAP_KINDS:
            overlaps[kind].append(layer_overlap[kind].cpu().numpy())
        singular_values.append(singular.cpu().numpy())
    table = pd.DataFrame(rows, columns=["layer", "head", "class", "metric", "value"])
    table["value"] = table["value"].astype(np.float64)
    return WeightSubspaceResult(
        table,
        {kind: np.stack(mats) for kind, mats in overlaps.items()},
        np.stack(singular_values),
    )
