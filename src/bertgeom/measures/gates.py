"""The gates of DESIGN 3.2: seven scores in [0, 1] per (input, head) and the dominant gate.

A gate is a state of one head on one input. Each score is computed from the attention matrix
``A`` of the head (rows = queries, row-stochastic over the valid keys) and averaged over the
content queries ``C = 1..n-2`` of an input with ``n`` real tokens ([CLS] = 0, [SEP] = n-1).
Padding is excluded unless ``include_padding`` (the authors' code: every position of the padded
sequence is a token, the padding counts as content, [SEP] stays at n-1). Inputs with fewer than
``MIN_TOKENS`` real tokens have no scores (NaN). The definitions, the choices DESIGN leaves open
and the calibration of ``DEFAULT_THRESHOLDS`` are in ``docs/gates.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

GATE_NAMES: tuple[str, ...] = (
    "closed",
    "directional",
    "open",
    "backward",
    "forward",
    "instance",
    "cluster",
)
"""The seven gates, in the order of the last axis of every score tensor."""

MIXED = len(GATE_NAMES)
"""Dominant-gate index of a head on which no score exceeds its threshold."""

UNDEFINED = -1
"""Dominant-gate index of an input too short to be scored (fewer than ``MIN_TOKENS`` tokens)."""

DOMINANT_NAMES: tuple[str, ...] = (*GATE_NAMES, "mixed")
"""Names of the dominant-gate indices 0..7 (``UNDEFINED`` is named ``"undefined"``)."""

MIN_TOKENS = 4
"""Fewest real tokens ([CLS], two content tokens, [SEP]) for which the scores are defined."""

HIGH_ATTENTION_THRESHOLD = 0.3
"""The paper's threshold for "high attention" in an attention map."""

DEFAULT_WINDOW = 2
"""Neighbours read by the backward and forward contextual gates (w in DESIGN 3.2)."""

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


DEFAULT_THRESHOLDS: Mapping[str, float] = MappingProxyType(
    {
        "closed": 0.5,
        "directional": 0.45,
        "open": 0.9,
        "backward": 0.5,
        "forward": 0.5,
        "instance": 0.5,
        "cluster": 0.25,
    }
)
"""Thresholds of the dominant gate (read-only). Each is the midpoint, rounded to 0.05, between
the 99th percentile of the score on matrices planted with the other gates and its 1st percentile
on noisy matrices planted with the gate (``benchmarks/calibrate_gates.py``, ``docs/gates.md``)."""


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


def _content_mean(values: Tensor, layout: TokenLayout) -> Tensor:
    """Mean of ``values (batch, head, query)`` over the content queries -> ``(batch, head)``."""
    weights = layout.content.to(values.dtype) / layout.n_content.clamp_min(1)[:, None]
    return (values * weights[:, None, :]).sum(dim=-1)


def closed_score(attn: Tensor, layout: TokenLayout) -> Tensor:
    """Closed gate: mean over content rows i of ``A[i, 0] + A[i, n-1]`` (mass on [CLS] and [SEP]).

    ``attn (batch, head, query, key)`` -> ``(batch, head)``.
    """
    batch, heads, seq, _ = attn.shape
    sep_index = layout.sep.view(batch, 1, 1, 1).expand(batch, heads, seq, 1)
    mass = attn[..., 0] + attn.gather(-1, sep_index).squeeze(-1)
    return _content_mean(mass, layout)


def directional_score(attn: Tensor, layout: TokenLayout, top_k: int = 1) -> Tensor:
    """Directional gate: mean over content rows of the mass on the top-k content columns, the
    columns ranked by their mean attention over content rows.

    Equals the sum of the k largest content-column means ``a_j = mean_{i in C} A[i, j]``, j in C
    (k is capped at the number of content tokens). ``attn (batch, head, query, key)`` ->
    ``(batch, head)``.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    weights = layout.content.to(attn.dtype) / layout.n_content.clamp_min(1)[:, None]
    column_means = (weights[:, None, None, :] @ attn).squeeze(-2)
    column_means = column_means * layout.content[:, None, :].to(attn.dtype)
    k = min(top_k, attn.shape[-1])
    return column_means.topk(k, dim=-1).values.sum(dim=-1)


def open_score(attn: Tensor, layout: TokenLayout) -> Tensor:
    """Open gate: mean over content rows of the normalised entropy ``H(A_i) / log n``.

    ``H(A_i) = -sum_j A[i, j] log A[i, j]`` over the n valid keys (0 log 0 = 0).
    ``attn (batch, head, query, key)`` -> ``(batch, head)``.
    """
    # -a log a, with 0 log 0 = 0 (log of the clamped 0 is finite): faster than special.entr.
    plogp = attn * attn.clamp_min(torch.finfo(attn.dtype).tiny).log()
    entropy = -(plogp @ layout.valid.to(attn.dtype)[:, None, :, None]).squeeze(-1)
    log_n = torch.log(layout.n_valid.clamp_min(2).to(attn.dtype))
    return _content_mean(entropy / log_n[:, None, None], layout)


def _diagonal_sum(attn: Tensor, layout: TokenLayout, offsets: Sequence[int]) -> Tensor:
    """``sum_{d in offsets} A[i, i + d]`` over valid keys, per query: ``(batch, head, query)``."""
    batch, heads, seq, _ = attn.shape
    total = attn.new_zeros(batch, heads, seq)
    valid_keys = layout.valid.to(attn.dtype)
    for offset in offsets:
        if abs(offset) >= seq:
            continue
        values = torch.diagonal(attn, offset=offset, dim1=-2, dim2=-1)
        if offset > 0:
            total[..., : seq - offset] += values * valid_keys[:, None, offset:]
        else:
            total[..., -offset:] += values * valid_keys[:, None, : seq + offset]
    return total


def backward_score(attn: Tensor, layout: TokenLayout, window: int = DEFAULT_WINDOW) -> Tensor:
    """Backward contextual gate: mean over content rows of ``sum_{d=1..w} A[i, i-d]``.

    Neighbours are any valid position, so [CLS] is the preceding neighbour of the first content
    token. ``attn (batch, head, query, key)`` -> ``(batch, head)``.
    """
    return _content_mean(_diagonal_sum(attn, layout, range(-1, -window - 1, -1)), layout)


def forward_score(attn: Tensor, layout: TokenLayout, window: int = DEFAULT_WINDOW) -> Tensor:
    """Forward contextual gate: mean over content rows of ``sum_{d=1..w} A[i, i+d]`` over valid
    keys ([SEP] is the following neighbour of the last content token).

    ``attn (batch, head, query, key)`` -> ``(batch, head)``.
    """
    return _content_mean(_diagonal_sum(attn, layout, range(1, window + 1)), layout)


def instance_score(attn: Tensor, layout: TokenLayout) -> Tensor:
    """Instance gate: mean over content rows of ``A[i, i]``.

    ``attn (batch, head, query, key)`` -> ``(batch, head)``.
    """
    return _content_mean(torch.diagonal(attn, dim1=-2, dim2=-1), layout)


def _cluster_rows(layout: TokenLayout, max_rows: int | None) -> tuple[Tensor, Tensor]:
    """Evenly spaced content queries used by the cluster score.

    For an input with m content tokens and ``r = min(max_rows, m)``, the queries of content rank
    ``floor(k m / r)``, k = 0..r-1. Returns positions ``(batch, rows)`` and their validity.
    """
    seq = layout.content.shape[1]
    rows = seq if max_rows is None else max(1, min(max_rows, seq))
    # Stable sort puts the content positions first, in order.
    by_rank = torch.argsort((~layout.content).to(torch.int8), dim=1, stable=True)
    used = layout.n_content.clamp_max(rows)
    k = torch.arange(rows, device=layout.content.device)
    rank = (k[None, :] * layout.n_content[:, None]) // used.clamp_min(1)[:, None]
    row_valid = k[None, :] < used[:, None]
    positions = by_rank.gather(1, rank.clamp_max(seq - 1))
    return positions, row_valid


def _pair_similarity(block: Tensor, positions: Tensor | None, power: int) -> Tensor:
    """``s_ij = cos(r_i, r_j) ** power``: do the queries i and j attend alike?

    ``r_i`` is the content row of i without its self-attention ``B_ii``, ``r_j`` that of j
    without ``B_jj``, their entries aligned on the same keys except that i's attention to j is
    aligned with j's attention to i (each one's attention to the other member of the pair):

        r_i . r_j = sum_{k in C, k != i, j} B_ik B_jk + B_ij B_ji
                  = B_i . B_j - B_ii B_ji - B_ij B_jj + B_ij B_ji,   ||r_i||^2 = ||B_i||^2 - B_ii^2

    The cosine is clipped to [0, 1], and is 0 for a row with less than ``CLUSTER_SELF_TOLERANCE``
    of its squared norm outside its diagonal. ``block (batch, head, seq, seq)`` has the
    non-content columns zeroed; ``positions (batch, rows)`` are the queries i (None: every
    position, read without gathering). Returns ``(batch, head, rows, seq)``.
    """
    batch, heads, seq, _ = block.shape
    # With C = B without its diagonal, r_i . r_j = C_i . C_j + C_ij C_ji (i != j) and
    # ||r_i||^2 = ||C_i||^2 = C_i . C_i + C_ii C_ii: one product and one correction.
    off = block.clone()
    off.diagonal(0, -2, -1).zero_()
    rest = torch.linalg.vector_norm(off, dim=-1).square()
    squared = rest + torch.diagonal(block, 0, -2, -1).square()
    norm = torch.where(rest > CLUSTER_SELF_TOLERANCE * squared, rest.sqrt(), 0.0)
    if positions is None:
        query_rows, key_to_query, query_norm = off, off.transpose(-1, -2), norm[..., None]
    else:
        rows = positions.shape[1]
        row_index = positions.view(batch, 1, rows).expand(batch, heads, rows)
        query_rows = off.gather(2, row_index[..., None].expand(batch, heads, rows, seq))  # C_ij
        key_to_query = off.gather(3, row_index[:, :, None, :].expand(batch, heads, seq, rows))
        key_to_query = key_to_query.transpose(-1, -2)  # C_ji
        query_norm = norm.gather(2, row_index)[..., None]
    dot = (query_rows @ off.transpose(-1, -2)).addcmul_(query_rows, key_to_query)
    # Divide by both norms through their inverses (0 for a zero norm: cosine 0), in place.
    inverse = torch.where(norm > 0, 1.0 / norm.clamp_min(torch.finfo(norm.dtype).tiny), 0.0)
    query_inverse = torch.where(
        query_norm > 0, 1.0 / query_norm.clamp_min(torch.finfo(norm.dtype).tiny), 0.0
    )
    cosine = dot.mul_(query_inverse).mul_(inverse[:, :, None, :]).clamp_(0.0, 1.0)
    if power == 4:  # the default: two squarings are several times faster than pow
        return cosine.square_().square_()
    return cosine.pow_(power)


def cluster_score(
    attn: Tensor,
    layout: TokenLayout,
    max_rows: int | None = DEFAULT_CLUSTER_ROWS,
    power: int = CLUSTER_SIMILARITY_POWER,
) -> Tensor:
    """Cluster head: block structure of the content block ``B = A[C, C]``.

    With ``s_ij`` the similarity of the attention rows of i and j (``_pair_similarity``: cosine
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
    batch, heads, seq, _ = attn.shape
    content = layout.content.to(attn.dtype)
    # Content columns only; non-content rows are never queries and are masked out as keys.
    block = attn * content[:, None, None, :]
    off_mass = block.sum(dim=-1) - torch.diagonal(block, 0, -2, -1)
    mean_off = off_mass / (layout.n_content - 1).clamp_min(1)[:, None, None]

    keys = torch.arange(seq, device=attn.device)
    if max_rows is None or max_rows >= int(layout.n_content.max()):
        # Every content query is used: take all rows as they lie (no gathers), and let
        # row_valid drop the non-content ones. Same sums as the gathered form.
        row_valid = layout.content
        similarity = _pair_similarity(block, None, power)
        deviation = block - mean_off[..., None]
        pairs = layout.content[:, None, :] & (keys[None, None, :] != keys[None, :, None])
    else:
        positions, row_valid = _cluster_rows(layout, max_rows)
        rows = positions.shape[1]
        similarity = _pair_similarity(block, positions, power)
        row_index = positions.view(batch, 1, rows).expand(batch, heads, rows)
        deviation = block.gather(2, row_index[..., None].expand(batch, heads, rows, seq))
        deviation -= mean_off.gather(2, row_index)[..., None]
        pairs = layout.content[:, None, :] & (keys[None, None, :] != positions[:, :, None])
    pairs = pairs & row_valid[:, :, None]
    deviation = deviation.mul_(pairs[:, None].to(attn.dtype))
    denominator = deviation.clamp_min(0.0).sum(dim=(-1, -2))
    numerator = deviation.mul_(similarity).sum(dim=(-1, -2))
    # Rows with no attention above their mean (uniform rows) leave only rounding error here.
    tolerance = row_valid.sum(dim=1)[:, None] * torch.finfo(attn.dtype).eps ** 0.5
    flat = denominator <= tolerance
    ratio = torch.where(flat, 0.0, numerator / torch.where(flat, 1.0, denominator))
    return ratio.clamp(0.0, 1.0) * _content_mean(off_mass, layout)


def gate_scores(
    attn: Tensor,
    attention_mask: Tensor,
    *,
    window: int = DEFAULT_WINDOW,
    top_k: int = 1,
    include_padding: bool = False,
    cluster_rows: int | None = DEFAULT_CLUSTER_ROWS,
) -> Tensor:
    """The seven gate scores of every head on every input, in the order of ``GATE_NAMES``.

    ``attn (batch, head, query, key)``, ``attention_mask (batch, seq)`` right-padded ->
    ``(batch, head, 7)``, computed in float64 for float64 input and in float32 otherwise.
    Inputs with fewer than ``MIN_TOKENS`` real tokens get NaN.
    """
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must be (batch, head, query, key), got {tuple(attn.shape)}")
    if tuple(attention_mask.shape) != (attn.shape[0], attn.shape[-1]):
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match (batch, seq) = "
            f"{(attn.shape[0], attn.shape[-1])}"
        )
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    attn = attn.detach().to(torch.promote_types(attn.dtype, torch.float32))
    attention_mask = attention_mask.to(attn.device)
    if attn.shape[0] == 0:
        return attn.new_zeros(0, attn.shape[1], len(GATE_NAMES))
    if not include_padding:
        # Padding shared by every input of the batch takes no part: drop it.
        longest = max(int((attention_mask != 0).sum(dim=1).max()), 1)
        attn, attention_mask = attn[..., :longest, :longest], attention_mask[:, :longest]
    layout = token_layout(attention_mask, include_padding)
    scores = torch.stack(
        [
            closed_score(attn, layout),
            directional_score(attn, layout, top_k),
            open_score(attn, layout),
            backward_score(attn, layout, window),
            forward_score(attn, layout, window),
            instance_score(attn, layout),
            cluster_score(attn, layout, cluster_rows),
        ],
        dim=-1,
    )
    return scores.masked_fill(~layout.defined[:, None, None], float("nan"))


def threshold_vector(
    thresholds: Mapping[str, float] | Sequence[float] | Tensor = DEFAULT_THRESHOLDS,
) -> Tensor:
    """The thresholds as a float64 tensor ``(7,)`` in the order of ``GATE_NAMES``."""
    if isinstance(thresholds, Mapping):
        missing = [name for name in GATE_NAMES if name not in thresholds]
        if missing:
            raise ValueError(f"thresholds lack the gates {missing}")
        values = torch.tensor([float(thresholds[name]) for name in GATE_NAMES])
    else:
        values = torch.as_tensor(thresholds, dtype=torch.float64).flatten()
    values = values.to(torch.float64)
    if values.shape != (len(GATE_NAMES),) or not bool(((values >= 0) & (values < 1)).all()):
        raise ValueError(f"need one threshold in [0, 1) per gate {GATE_NAMES}, got {values}")
    return values


def gate_margins(
    scores: Tensor, thresholds: Mapping[str, float] | Sequence[float] | Tensor = DEFAULT_THRESHOLDS
) -> Tensor:
    """How far each score exceeds its threshold: ``score - t``, float64.

    ``scores (..., 7)`` -> ``(..., 7)``; positive where the gate is open to being dominant.
    """
    return scores.to(torch.float64) - threshold_vector(thresholds).to(scores.device)


def dominant_gate(
    scores: Tensor, thresholds: Mapping[str, float] | Sequence[float] | Tensor = DEFAULT_THRESHOLDS
) -> Tensor:
    """The dominant gate: the gate whose score most exceeds its threshold (largest positive
    ``score - t``), ``MIXED`` when no score exceeds its threshold, ``UNDEFINED`` when the scores
    are NaN (input too short).

    ``scores (..., 7)`` -> int64 ``(...)``, e.g. ``(batch, head)``.
    """
    margins = gate_margins(scores, thresholds)
    best = margins.nan_to_num(nan=-torch.inf).max(dim=-1)
    dominant = torch.where(best.values > 0, best.indices, MIXED)
    return dominant.masked_fill(scores.isnan().any(dim=-1), UNDEFINED)


def dominant_name(index: int) -> str:
    """Name of a dominant-gate index: a gate name, ``"mixed"`` or ``"undefined"``."""
    return "undefined" if index == UNDEFINED else DOMINANT_NAMES[index]


def high_attention_positions(
    attention_map: Tensor | npt.ArrayLike,
    threshold: float = HIGH_ATTENTION_THRESHOLD,
    n_tokens: int | None = None,
) -> npt.NDArray[np.int64]:
    """The (query, key) positions of an attention map ``(query, key)`` with attention above
    ``threshold`` (the paper's 0.3), restricted to the first ``n_tokens`` rows and columns when
    given; NaN entries never count.

    Returns an int64 array ``(hits, 2)`` sorted by query, then key.
    """
    values = torch.as_tensor(attention_map).detach().to("cpu", torch.float64)
    if values.ndim != 2:
        raise ValueError(f"attention_map must be (query, key), got {tuple(values.shape)}")
    if n_tokens is not None:
        values = values[:n_tokens, :n_tokens]
    hits = torch.nonzero(values > threshold)
    return hits.numpy().astype(np.int64)
