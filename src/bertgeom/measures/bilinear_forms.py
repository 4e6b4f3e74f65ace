"""The bilinear form of each attention head and the scores read from one matrix (DESIGN 3.3).

Head h of a layer scores query token x_i against key token x_j with ``x_i^T M_h x_j`` plus bias
terms, ``M_h = W_q^h^T W_k^h`` (d x d, rank <= dk). Weights are in Hugging Face layout: ``W_q``
is (d x d, out x in), head h owns rows ``h*dk:(h+1)*dk``; ``W_O^h`` is the d x dk block of the
output projection's columns. ``measures.subspace_weights`` builds the per-head tables on these.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

F64 = torch.float64


def split_heads(weight: Tensor, n_heads: int) -> Tensor:
    """Per-head row blocks of an input projection: ``weight (n_heads*dk, d)`` ->
    ``(head, dk, d)``; block h is ``weight[h*dk:(h+1)*dk, :]``."""
    out_features, in_features = weight.shape
    if out_features % n_heads:
        raise ValueError(f"{out_features} output features do not split into {n_heads} heads")
    return weight.reshape(n_heads, out_features // n_heads, in_features)


def split_output_heads(weight_o: Tensor, n_heads: int) -> Tensor:
    """Per-head column blocks of the output projection: ``W_o (d, n_heads*dk)`` ->
    ``(head, d, dk)``; block h is ``W_o[:, h*dk:(h+1)*dk]`` (= ``W_O^h``)."""
    out_features, in_features = weight_o.shape
    if in_features % n_heads:
        raise ValueError(f"{in_features} input features do not split into {n_heads} heads")
    return weight_o.reshape(out_features, n_heads, in_features // n_heads).permute(1, 0, 2)


def bilinear_forms(weight_q: Tensor, weight_k: Tensor, n_heads: int) -> Tensor:
    """``M_h = W_q^h^T W_k^h`` for every head: ``(head, d, d)``, float64."""
    q = split_heads(weight_q.to(F64), n_heads)
    k = split_heads(weight_k.to(F64), n_heads)
    return torch.einsum("hri,hrj->hij", q, k)


def attention_scores(
    hidden: Tensor,
    weight_q: Tensor,
    bias_q: Tensor | None,
    weight_k: Tensor,
    bias_k: Tensor | None,
    n_heads: int,
) -> Tensor:
    """Pre-softmax scores through the bilinear form, ``hidden (batch, seq, d)`` ->
    ``(batch, head, query, key)``:
    ``(x_i^T M_h x_j + x_i^T W_q^h^T b_k^h + b_q^h^T W_k^h x_j + b_q^h . b_k^h) / sqrt(dk)``.

    Only the key-side term ``b_q^h^T W_k^h x_j`` changes the softmax; the other two are constant
    along each row.
    """
    x = hidden.to(F64)
    forms = bilinear_forms(weight_q, weight_k, n_heads)
    q_heads = split_heads(weight_q.to(F64), n_heads)
    k_heads = split_heads(weight_k.to(F64), n_heads)
    dk = q_heads.shape[1]
    scores = torch.einsum("bid,hde,bje->bhij", x, forms, x)
    if bias_k is not None:
        query_side = torch.einsum("hrd,hr->hd", q_heads, bias_k.to(F64).reshape(n_heads, dk))
        scores = scores + torch.einsum("bid,hd->bhi", x, query_side)[..., None]
    if bias_q is not None:
        key_side = torch.einsum("hrd,hr->hd", k_heads, bias_q.to(F64).reshape(n_heads, dk))
        scores = scores + torch.einsum("bjd,hd->bhj", x, key_side)[:, :, None, :]
    if bias_q is not None and bias_k is not None:
        constant = (bias_q.to(F64) * bias_k.to(F64)).reshape(n_heads, dk).sum(-1)
        scores = scores + constant[None, :, None, None]
    return scores / math.sqrt(dk)


def head_singular_values(weight_q: Tensor, weight_k: Tensor, n_heads: int) -> Tensor:
    """The dk largest singular values of each ``M_h`` (the rest are zero), ``(head, dk)``,
    descending. With ``W_q^h^T = Q_q R_q`` and ``W_k^h^T = Q_k R_k`` (thin QR),
    ``M_h = Q_q (R_q R_k^T) Q_k^T``, so sigma(M_h) = sigma(R_q R_k^T) (dk x dk)."""
    r_q, r_k = head_qr(weight_q, n_heads)[1], head_qr(weight_k, n_heads)[1]
    return torch.linalg.svdvals(r_q @ r_k.transpose(1, 2))


def head_qr(weight: Tensor, n_heads: int) -> tuple[Tensor, Tensor]:
    """Thin QR ``W^h^T = Q R`` of every head of an input projection ``weight (n_heads*dk, d)``:
    ``Q (head, d, dk)``, ``R (head, dk, dk)``, float64."""
    q, r = torch.linalg.qr(split_heads(weight.to(F64), n_heads).transpose(1, 2))
    return q, r


def effective_rank(singular_values: Tensor) -> Tensor:
    """exp of the Shannon entropy of p_i = sigma_i / sum sigma (Roy and Vetterli 2007), over the
    last axis; in [1, number of values]. NaN for an all-zero spectrum."""
    s = singular_values.to(F64)
    total = s.sum(-1, keepdim=True)
    p = s / total
    entropy = -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(-1)
    return torch.where(total.squeeze(-1) > 0, torch.exp(entropy), torch.nan)


def asymmetry(matrix: Tensor) -> float:
    """``||M - M^T||_F / ||M||_F`` in [0, 2]: 0 for symmetric, sqrt(2 (1 - s)) with s the
    symmetry score."""
    return float(asymmetries(matrix[None])[0])


def asymmetries(matrices: Tensor) -> Tensor:
    """``asymmetry`` of each of ``matrices (..., n, n)``, float64 ``(...)``."""
    m = matrices.to(F64)
    return torch.linalg.matrix_norm(m - m.transpose(-1, -2)) / torch.linalg.matrix_norm(m)


def symmetry_score(matrix: Tensor) -> float:
    """Symmetry score of Saponati et al. 2025 (arXiv 2502.10927, Definition 3.1; their released
    code computes ||M_s||_F^2 / ||M||_F^2 and reports 2 x - 1):
    ``s = (||M_s||_F^2 - ||M_n||_F^2) / ||M||_F^2 = tr(M M) / ||M||_F^2`` in [-1, 1], with
    ``M_s = (M + M^T) / 2``, ``M_n = (M - M^T) / 2``: 1 symmetric, -1 skew-symmetric, ~0 random."""
    return float(symmetry_scores(matrix[None])[0])


def symmetry_scores(matrices: Tensor) -> Tensor:
    """``symmetry_score`` of each of ``matrices (..., n, n)``, float64 ``(...)``."""
    m = matrices.to(F64)
    # tr(M M) = sum_ij M_ij M_ji
    return (m * m.transpose(-1, -2)).sum((-1, -2)) / (m * m).sum((-1, -2))


def directionality_score(matrix: Tensor, num_std: float = 2.0, mode: str = "excess") -> float:
    """Directionality score of Saponati et al. 2025 (Definition 3.2), as plotted in their paper:
    ``d = (r - c) / (r + c)`` in [-1, 1], 0 when no row or column stands out.

    Row norms ``||M_{i,:}||`` and column norms ``||M_{:,j}||``; threshold mean + num_std * std
    (sample std) of each set. ``mode="excess"`` (their released code): r, c = sums of
    (norm - threshold) over the rows / columns above threshold; ``mode="norm"``: sums of those
    norms. Negative = column-dominant (a few key directions attract every query, the decoder
    pattern); positive = row-dominant.
    """
    return float(directionality_scores(matrix[None], num_std, mode)[0])


def directionality_scores(matrices: Tensor, num_std: float = 2.0, mode: str = "excess") -> Tensor:
    """``directionality_score`` of each of ``matrices (..., n, n)``, float64 ``(...)``."""
    m = matrices.to(F64)
    rows, columns = torch.linalg.vector_norm(m, dim=-1), torch.linalg.vector_norm(m, dim=-2)
    return directionality_from_norms(rows, columns, num_std, mode)


def directionality_from_norms(
    row_norms: Tensor, column_norms: Tensor, num_std: float = 2.0, mode: str = "excess"
) -> Tensor:
    """``directionality_score`` from the row and column norms ``(..., n)`` of the matrices."""
    if mode not in ("excess", "norm"):
        raise ValueError(f"mode must be 'excess' or 'norm', got {mode!r}")
    totals = []
    for norms in (row_norms, column_norms):
        threshold = (norms.mean(-1) + num_std * norms.std(-1))[..., None]
        kept = norms - threshold if mode == "excess" else norms
        totals.append(torch.where(norms > threshold, kept, 0.0).sum(-1))
    rows, columns = totals
    both = rows + columns
    return torch.where(both == 0, 0.0, (rows - columns) / torch.where(both == 0, 1.0, both))


def reduced_forms(weight_q: Tensor, weight_k: Tensor, n_heads: int) -> tuple[Tensor, Tensor]:
    """Each head's bilinear form on its support: an orthonormal basis ``B (head, d, r)`` of
    U = col(W_q^h^T) + col(W_k^h^T) (r = min(d, 2 dk); thin QR) and
    ``B^T M_h B = (W_q^h B)^T (W_k^h B)`` ``(head, r, r)``, float64.

    M_h's rows and columns lie in U, so ``M_h = B (B^T M_h B) B^T``: its norms, trace products
    and spectrum are those of the small matrix, and its row i is row i of ``B (B^T M_h B)``
    times the orthonormal ``B^T`` (same norm). No ``d x d`` form is built.
    """
    q = split_heads(weight_q.to(F64), n_heads)
    k = split_heads(weight_k.to(F64), n_heads)
    basis = torch.linalg.qr(torch.cat([q, k], dim=1).transpose(1, 2)).Q
    return basis, (q @ basis).transpose(1, 2) @ (k @ basis)


def symmetric_part_eigenvalues(weight_q: Tensor, weight_k: Tensor, n_heads: int) -> Tensor:
    """Eigenvalues of ``S_h = (M_h + M_h^T) / 2`` on its support, ``(head, 2 dk)`` ascending.

    S_h vanishes on the complement of U = col(W_q^h^T) + col(W_k^h^T) (dimension <= 2 dk), so with
    B an orthonormal basis of U its nonzero eigenvalues are those of B^T S_h B; the other
    d - 2 dk eigenvalues are exactly 0 (``reduced_forms``).
    """
    _, reduced = reduced_forms(weight_q, weight_k, n_heads)
    return symmetric_part_spectrum(reduced)


def symmetric_part_spectrum(reduced: Tensor) -> Tensor:
    """Eigenvalues, ascending, of the symmetric parts of ``reduced (head, r, r)``."""
    return torch.linalg.eigvalsh((reduced + reduced.transpose(1, 2)) / 2)


def eigen_signature(eigenvalues: Tensor, d: int, rtol: float = 1e-3) -> tuple[int, int, int]:
    """(positive, negative, near-zero) counts of a symmetric d x d matrix whose eigenvalues off
    ``eigenvalues`` are 0; near zero means |lambda| <= rtol * max |lambda|."""
    tol = rtol * float(eigenvalues.abs().max()) if eigenvalues.numel() else 0.0
    positive = int((eigenvalues > tol).sum())
    negative = int((eigenvalues < -tol).sum())
    return positive, negative, d - positive - negative
