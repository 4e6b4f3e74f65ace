"""The gates of DESIGN 3.2: seven scores in [0, 1] per (input, head) and the dominant gate.

A gate is a state of one head on one input. Each score is computed from the attention matrix
``A`` of the head (rows = queries, row-stochastic over the valid keys) and averaged over the
content queries ``C = 1..n-2`` of an input with ``n`` real tokens ([CLS] = 0, [SEP] = n-1).
Padding is excluded unless the run counts it (``include_padding``, the authors' code: every
position of the padded sequence is a token, the padding counts as content, [SEP] stays at n-1;
``tokens.TokenMask``). Inputs with fewer than
``MIN_TOKENS`` real tokens have no scores (NaN). The definitions, the choices DESIGN leaves open
and the calibration of ``DEFAULT_THRESHOLDS`` are in ``docs/gates.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from bertgeom.measures.cluster import (
    CLUSTER_SELF_TOLERANCE,
    CLUSTER_SIMILARITY_POWER,
    DEFAULT_CLUSTER_ROWS,
)
from bertgeom.measures.gate_kernel import fused_gate_scores
from bertgeom.measures.gate_layout import (
    content_mean,
    content_weights,
    log_valid,
    top_columns,
)
from bertgeom.measures.tokens import TokenMask

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

HIGH_ATTENTION_THRESHOLD = 0.3
"""The paper's threshold for "high attention" in an attention map."""

DEFAULT_WINDOW = 2
"""Neighbours read by the backward and forward contextual gates (w in DESIGN 3.2)."""


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


def closed_score(attn: Tensor, tokens: TokenMask) -> Tensor:
    """Closed gate: mean over content rows i of ``A[i, 0] + A[i, n-1]`` (mass on [CLS] and [SEP]).

    ``attn (batch, head, query, key)`` -> ``(batch, head)``.
    """
    batch, heads, seq, _ = attn.shape
    sep_index = tokens.sep.view(batch, 1, 1, 1).expand(batch, heads, seq, 1)
    mass = attn[..., 0] + attn.gather(-1, sep_index).squeeze(-1)
    return content_mean(mass, tokens)


def directional_score(attn: Tensor, tokens: TokenMask, top_k: int = 1) -> Tensor:
    """Directional gate: mean over content rows of the mass on the top-k content columns, the
    columns ranked by their mean attention over content rows.

    Equals the sum of the k largest content-column means ``a_j = mean_{i in C} A[i, j]``, j in C
    (k is capped at the number of content tokens). ``attn (batch, head, query, key)`` ->
    ``(batch, head)``.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    weights = content_weights(tokens, attn.dtype)
    column_means = (weights[:, None, None, :] @ attn).squeeze(-2)
    return top_columns(column_means, tokens, top_k)


def open_score(attn: Tensor, tokens: TokenMask) -> Tensor:
    """Open gate: mean over content rows of the normalised entropy ``H(A_i) / log n``.

    ``H(A_i) = -sum_j A[i, j] log A[i, j]`` over the n valid keys (0 log 0 = 0).
    ``attn (batch, head, query, key)`` -> ``(batch, head)``.
    """
    # -a log a, with 0 log 0 = 0 (log of the clamped 0 is finite): faster than special.entr,
    # and log(0) is many times slower than log of the smallest normal float.
    plogp = attn * attn.clamp_min(torch.finfo(attn.dtype).tiny).log()
    entropy = -(plogp @ tokens.valid.to(attn.dtype)[:, None, :, None]).squeeze(-1)
    return content_mean(entropy / log_valid(tokens, attn.dtype)[:, None, None], tokens)


def _diagonal_sum(attn: Tensor, tokens: TokenMask, offsets: Sequence[int]) -> Tensor:
    """``sum_{d in offsets} A[i, i + d]`` over valid keys, per query: ``(batch, head, query)``."""
    batch, heads, seq, _ = attn.shape
    total = attn.new_zeros(batch, heads, seq)
    valid_keys = tokens.valid.to(attn.dtype)
    for offset in offsets:
        if abs(offset) >= seq:
            continue
        values = torch.diagonal(attn, offset=offset, dim1=-2, dim2=-1)
        if offset > 0:
            total[..., : seq - offset] += values * valid_keys[:, None, offset:]
        else:
            total[..., -offset:] += values * valid_keys[:, None, : seq + offset]
    return total


def backward_score(attn: Tensor, tokens: TokenMask, window: int = DEFAULT_WINDOW) -> Tensor:
    """Backward contextual gate: mean over content rows of ``sum_{d=1..w} A[i, i-d]``.

    Neighbours are any valid position, so [CLS] is the preceding neighbour of the first content
    token. ``attn (batch, head, query, key)`` -> ``(batch, head)``.
    """
    return content_mean(_diagonal_sum(attn, tokens, range(-1, -window - 1, -1)), tokens)


def forward_score(attn: Tensor, tokens: TokenMask, window: int = DEFAULT_WINDOW) -> Tensor:
    """Forward contextual gate: mean over content rows of ``sum_{d=1..w} A[i, i+d]`` over valid
    keys ([SEP] is the following neighbour of the last content token).

    ``attn (batch, head, query, key)`` -> ``(batch, head)``.
    """
    return content_mean(_diagonal_sum(attn, tokens, range(1, window + 1)), tokens)


def instance_score(attn: Tensor, tokens: TokenMask) -> Tensor:
    """Instance gate: mean over content rows of ``A[i, i]``.

    ``attn (batch, head, query, key)`` -> ``(batch, head)``.
    """
    return content_mean(torch.diagonal(attn, dim1=-2, dim2=-1), tokens)


def gate_scores(
    attn: Tensor,
    tokens: TokenMask,
    *,
    window: int = DEFAULT_WINDOW,
    top_k: int = 1,
    cluster_rows: int | None = DEFAULT_CLUSTER_ROWS,
) -> Tensor:
    """The seven gate scores of every head on every input, in the order of ``GATE_NAMES``.

    ``attn (batch, head, query, key)``, ``tokens`` its :class:`TokenMask` ->
    ``(batch, head, 7)``, computed in float64 for float64 input and in float32 otherwise.
    Inputs with fewer than ``MIN_TOKENS`` real tokens get NaN. The scores are those of the
    functions above: on the CPU from the compiled kernel ``gate_native.native_gate_scores``
    (float64 sums: equal to them within float32 rounding, tested), elsewhere chunk by chunk by
    ``gate_kernel.fused_gate_scores`` (bit for bit but the open score's last bit, on the batch
    cut to its longest input).
    """
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must be (batch, head, query, key), got {tuple(attn.shape)}")
    tokens.check(attn.shape[0], attn.shape[-1])
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if attn.device.type == "cpu":
        # Imported here: numba's import (about 0.4 s) is paid only where gates are scored.
        from bertgeom.measures.gate_native import native_gate_scores

        return native_gate_scores(
            attn,
            tokens,
            window=window,
            top_k=top_k,
            cluster_rows=cluster_rows,
            power=CLUSTER_SIMILARITY_POWER,
            self_tolerance=CLUSTER_SELF_TOLERANCE,
        )
    return fused_gate_scores(
        attn.detach(), tokens, window=window, top_k=top_k, cluster_rows=cluster_rows
    )


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
