"""The cluster score of DESIGN 3.2 (block structure of a head's content block), its row sampling
and its row similarity. Re-exported by ``bertgeom.measures.gates``; the definition and its
rationale are in ``docs/gates.md``."""

from __future__ import annotations

import torch
from torch import Tensor

from bertgeom.measures.gate_layout import TokenMask, content_mean

DEFAULT_CLUSTER_ROWS = 64
"""At most this many content queries (evenly spaced) enter the cluster score's similarity
products; all of them when the input has no more content tokens than this."""

CLUSTER_SIMILARITY_POWER = 4
"""In the cluster score the cosine of two attention rows is raised to this power, so that
identical rows (cosine 1) count fully and partly overlapping rows count little (the rows of
neighbours in a band of two equal weights: cosine 1/2, counting 1/16)."""

CLUSTER_SELF_TOLERANCE = 1e-4
"""In the cluster score, a row whose squared norm without its self-attention is below this share
of its squared norm (a row almost all on itself) has similarity 0 to every other row."""


def cluster_rows(tokens: TokenMask, max_rows: int | None) -> tuple[Tensor, Tensor]:
    """Evenly spaced content queries used by the cluster score.

    For an input with m content tokens and ``r = min(max_rows, m)``, the queries of content rank
    ``floor(k m / r)``, k = 0..r-1. Returns positions ``(batch, rows)`` (0 for the rows past r)
    and their validity.
    """
    seq = tokens.content.shape[1]
    rows = seq if max_rows is None else max(1, min(max_rows, seq))
    # Stable sort puts the content positions first, in order.
    by_rank = torch.argsort((~tokens.content).to(torch.int8), dim=1, stable=True)
    used = tokens.n_content.clamp_max(rows)
    k = torch.arange(rows, device=tokens.content.device)
    rank = (k[None, :] * tokens.n_content[:, None]) // used.clamp_min(1)[:, None]
    row_valid = k[None, :] < used[:, None]
    positions = by_rank.gather(1, rank.clamp_max(seq - 1)).masked_fill_(~row_valid, 0)
    return positions, row_valid


def _gather_rows(values: Tensor, positions: Tensor) -> Tensor:
    """``values[b, h, positions[b]]``: ``(batch, head, seq, x)``, ``positions (batch, rows)`` ->
    ``(batch, head, rows, x)``, copied as whole rows (several times faster than ``gather``)."""
    batch, heads, seq, width = values.shape
    rows = positions.shape[1]
    first = torch.arange(batch * heads, device=values.device).view(batch, heads, 1) * seq
    flat = (first + positions[:, None, :]).reshape(-1)
    return (
        values.reshape(batch * heads * seq, width)
        .index_select(0, flat)
        .view(batch, heads, rows, width)
    )


def _inverse(values: Tensor) -> Tensor:
    """``1 / values``, 0 where a value is 0 (a zero norm: cosine 0)."""
    return torch.where(values > 0, 1.0 / values.clamp_min(torch.finfo(values.dtype).tiny), 0.0)


def pair_similarity(
    off: Tensor, self_attention: Tensor, query_rows: Tensor, positions: Tensor | None, power: int
) -> Tensor:
    """``s_ij = cos(r_i, r_j) ** power``: do the queries i and j attend alike?

    ``r_i`` is the content row of i without its self-attention ``B_ii``, ``r_j`` that of j
    without ``B_jj``, their entries aligned on the same keys except that i's attention to j is
    aligned with j's attention to i (each one's attention to the other member of the pair):

        r_i . r_j = sum_{k in C, k != i, j} B_ik B_jk + B_ij B_ji
                  = B_i . B_j - B_ii B_ji - B_ij B_jj + B_ij B_ji,   ||r_i||^2 = ||B_i||^2 - B_ii^2

    With ``C = B`` without its diagonal, ``r_i . r_j = C_i . C_j + C_ij C_ji`` (i != j) and
    ``||r_i||^2 = ||C_i||^2``: one product and one correction. The cosine is clipped to [0, 1],
    and is 0 for a row with less than ``CLUSTER_SELF_TOLERANCE`` of its squared norm
    ``||C_i||^2 + B_ii^2`` outside its diagonal. ``off (batch, head, seq, seq)`` is ``C`` (the
    non-content columns and the diagonal zeroed, contiguous), ``self_attention (batch, head,
    seq)`` the diagonal ``B_ii``; ``positions (batch, rows)`` are the queries i and
    ``query_rows`` their rows of ``C`` (None and ``off``: every position, read without
    gathering). Returns ``(batch, head, rows, seq)``.
    """
    batch, heads, seq, _ = off.shape
    rest = torch.linalg.vector_norm(off, dim=-1).square()
    squared = rest + self_attention.square()
    norm = torch.where(rest > CLUSTER_SELF_TOLERANCE * squared, rest.sqrt(), 0.0)
    if positions is None:
        key_to_query, query_norm = off.transpose(-1, -2), norm[..., None]
    else:
        rows = positions.shape[1]
        row_index = positions.view(batch, 1, rows).expand(batch, heads, rows)
        key_to_query = off.gather(3, row_index[:, :, None, :].expand(batch, heads, seq, rows))
        key_to_query = key_to_query.transpose(-1, -2)  # C_ji
        query_norm = norm.gather(2, row_index)[..., None]
    dot = (query_rows @ off.transpose(-1, -2)).addcmul_(query_rows, key_to_query)
    # Divide by both norms through their inverses (0 for a zero norm: cosine 0), in place.
    cosine = dot.mul_(_inverse(query_norm)).mul_(_inverse(norm)[:, :, None, :]).clamp_(0.0, 1.0)
    if power == 4:  # the default: two squarings are several times faster than pow
        return cosine.square_().square_()
    return cosine.pow_(power)


def cluster_ratio(
    off: Tensor,
    self_attention: Tensor,
    off_mass: Tensor,
    tokens: TokenMask,
    positions: Tensor | None,
    row_valid: Tensor,
    power: int = CLUSTER_SIMILARITY_POWER,
) -> Tensor:
    """The ``ratio`` of ``cluster_score`` ``(batch, head)``, not clipped, from ``off``: ``C``
    (contiguous), ``self_attention``: ``B_ii (batch, head, seq)`` and ``off_mass (batch, head,
    seq)``: ``sum_{j in C, j != i} B_ij``. ``positions (batch, rows)`` are the queries R,
    ``row_valid (batch, rows)`` those used (``cluster_rows``); or None and ``tokens.content``:
    every content query, all rows taken as they lie (no gathers). ``d_ij`` for j != i only needs
    ``C`` (j = i is masked)."""
    batch, heads, seq, _ = off.shape
    mean_off = off_mass / (tokens.n_content - 1).clamp_min(1)[:, None, None]
    keys = torch.arange(seq, device=off.device)
    if positions is None:
        similarity = pair_similarity(off, self_attention, off, None, power)
        deviation = off - mean_off[..., None]
        pairs = tokens.content[:, None, :] & (keys[None, None, :] != keys[None, :, None])
    else:
        rows = positions.shape[1]
        query_rows = _gather_rows(off, positions)  # C_ij
        similarity = pair_similarity(off, self_attention, query_rows, positions, power)
        row_index = positions.view(batch, 1, rows).expand(batch, heads, rows)
        deviation = query_rows - mean_off.gather(2, row_index)[..., None]
        pairs = tokens.content[:, None, :] & (keys[None, None, :] != positions[:, :, None])
    pairs = pairs & row_valid[:, :, None]
    deviation = deviation.mul_(pairs[:, None].to(off.dtype))
    denominator = deviation.clamp_min(0.0).sum(dim=(-1, -2))
    numerator = deviation.mul_(similarity).sum(dim=(-1, -2))
    # Rows with no attention above their mean (uniform rows) leave only rounding error here.
    tolerance = row_valid.sum(dim=1)[:, None] * torch.finfo(off.dtype).eps ** 0.5
    flat = denominator <= tolerance
    return torch.where(flat, 0.0, numerator / torch.where(flat, 1.0, denominator))


def cluster_score(
    attn: Tensor,
    tokens: TokenMask,
    max_rows: int | None = DEFAULT_CLUSTER_ROWS,
    power: int = CLUSTER_SIMILARITY_POWER,
) -> Tensor:
    """Cluster head: block structure of the content block ``B = A[C, C]``.

    With ``s_ij`` the similarity of the attention rows of i and j (``pair_similarity``: cosine
    without self-attention, to the power ``power``) and, for i != j,
    ``d_ij = B_ij - mean_{l in C, l != i} B_il`` (attention above the row's mean):

        ratio   = sum_{i in R} sum_{j != i} d_ij s_ij / sum_{i in R} sum_{j != i} max(d_ij, 0)
        cluster = clip(ratio, 0, 1) * mean_{i in C} sum_{j in C, j != i} B_ij

    ``ratio`` is the share of the above-average attention that goes to tokens attending where
    the query attends (1 for blocks, whatever their diagonal; ~0 for a stripe or uniform rows,
    where every row looks alike, for a diagonal, and for bands); the factor is the off-diagonal
    content mass. R = all content queries, or ``max_rows`` evenly spaced ones (cost ``batch *
    head * |R| * seq^2``). The ratio is 0 when the denominator is below ``|R| sqrt(eps)`` (no
    attention above the row means: uniform rows). ``attn (batch, head, query, key)`` ->
    ``(batch, head)``.
    """
    # Content columns only; non-content rows are never queries and are masked out as keys.
    block = attn * tokens.content.to(attn.dtype)[:, None, None, :]
    diagonal = block.diagonal(0, -2, -1)
    self_attention = diagonal.clone()
    off_mass = block.sum(dim=-1) - self_attention
    diagonal.zero_()  # block is C now
    positions, row_valid = None, tokens.content
    if max_rows is not None and max_rows < int(tokens.n_content.max()):
        positions, row_valid = cluster_rows(tokens, max_rows)
    ratio = cluster_ratio(block, self_attention, off_mass, tokens, positions, row_valid, power)
    return ratio.clamp(0.0, 1.0) * content_mean(off_mass, tokens)
