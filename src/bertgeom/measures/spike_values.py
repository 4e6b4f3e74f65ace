"""Per-input spike attention values of one layer (DESIGN 3.5; formulas in ``docs/spike.md``): the
mapping of tokens onto spike codons, domains and mutations, and the attention they receive.

The attention token ``j`` receives from a head is the column sum over the valid queries,
``r_j = sum_i A[i, j]`` (1 under uniform attention, whatever the length): one row-vector
product over the batch. Tokens are placed on the spike by a
:class:`~bertgeom.genomics.token_map.SpikeLayout`; every per-token sum below is a scatter of r by
index (domain, mutation, codon), not a product with a one-hot matrix, and the sums with the
token counts that go with them are one scatter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bertgeom.genomics.mutations import Mutation
from bertgeom.genomics.reference import (
    SPIKE_CODONS,
    SPIKE_DOMAIN_SLUGS,
    SPIKE_DOMAINS,
    SPIKE_START,
)
from bertgeom.genomics.token_map import NO_POSITION
from bertgeom.measures.tokens import TokenMask, every_token

OTHER_DOMAIN = "other"
"""Tokens centred on no domain (the linkers 306-318 and 834-911, the stop codon)."""
DOMAINS: tuple[str, ...] = (
    *(SPIKE_DOMAIN_SLUGS[name] for name, _, _ in SPIKE_DOMAINS),
    OTHER_DOMAIN,
)
"""Domain slugs in metric order, ``other`` last."""


def _codon_domains() -> Tensor:
    """Domain index of codons 0..SPIKE_CODONS + 1 (index 0 and the stop codon: ``other``)."""
    table = torch.full((SPIKE_CODONS + 2,), len(DOMAINS) - 1, dtype=torch.long)
    for index, (_, first, last) in enumerate(SPIKE_DOMAINS):
        table[first : last + 1] = index
    return table


_CODON_DOMAINS = _codon_domains()


def received_attention(attention: Tensor, valid: Tensor) -> Tensor:
    """``r (batch, head, key)``: the attention each key receives from the valid queries,
    ``r_j = sum_{i valid} A[i, j]``; ``valid (batch, seq)`` bool."""
    # A batched row-vector product: einsum lowers this to a far slower contraction on CPU.
    weights = valid.to(torch.float32)[:, None, None, :]
    return torch.matmul(weights, attention.float()).squeeze(2).double()


def codons(span_lo: Tensor, span_hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(first, last, centre)`` codons (1-based, int64) of each token span, from reference
    nucleotide positions: ``codon(p) = (p - 21563) // 3 + 1``, centre ``codon((lo + hi) // 2)``."""
    lo, hi = span_lo.long(), span_hi.long()
    first = torch.div(lo - SPIKE_START, 3, rounding_mode="floor") + 1
    last = torch.div(hi - SPIKE_START, 3, rounding_mode="floor") + 1
    centre = torch.div((lo + hi) // 2 - SPIKE_START, 3, rounding_mode="floor") + 1
    return first, last, centre


@dataclass(frozen=True)
class SpikeAttentionBatch:
    """Per-input values of one layer (float64).

    ``special_share (batch, head)``: share of the received attention on ``[CLS]`` + ``[SEP]``;
    ``domain_share (batch, head, domain)``: share of the attention received by placed tokens
    that falls on tokens centred in each domain; ``domain_tokens (batch, domain)``: share of the
    placed tokens centred there; ``placed (batch,)``: number of placed tokens;
    ``mutation_mean (batch, head, mutation)``: mean r of the tokens at each mutation,
    ``mutation_tokens (batch, mutation)`` their count; ``codon_mean (batch, head, codon)``,
    ``codon_tokens (batch, codon)``: the same for the tokens covering each codon 1..1273;
    ``change_sum (batch, head, codon)``, ``change_count (batch, codon)``: the summed r and the
    number of the tokens that differ from the reference away from every listed mutation,
    by centre codon; ``plain_sum``, ``plain_count``: the same for the unchanged tokens.
    """

    special_share: Tensor
    domain_share: Tensor
    domain_tokens: Tensor
    placed: Tensor
    mutation_mean: Tensor
    mutation_tokens: Tensor
    codon_mean: Tensor
    codon_tokens: Tensor
    change_sum: Tensor
    change_count: Tensor
    plain_sum: Tensor
    plain_count: Tensor


def spike_attention_values(
    attention: Tensor,
    tokens: TokenMask | None,
    span_lo: Tensor,
    span_hi: Tensor,
    mutations: Sequence[Mutation],
    changed: Tensor | None = None,
) -> SpikeAttentionBatch:
    """The per-input values of ``attention (batch, head, query, key)`` for tokens placed by
    ``span_lo``, ``span_hi (batch, seq)``; ``[CLS]`` is position 0 and ``[SEP]`` the last real
    position (right padding); ``tokens``: the batch's token mask (``None``: no padding)."""
    batch, heads, seq, _ = attention.shape
    device = attention.device
    if tokens is None:
        tokens = every_token(batch, seq, device)
    tokens.check(batch, seq)
    valid = tokens.valid.to(device)
    r = received_attention(attention.detach(), valid)
    span_lo, span_hi = span_lo.to(device), span_hi.to(device)
    placed = (span_lo != NO_POSITION) & valid

    special = torch.zeros(batch, seq, dtype=torch.bool, device=device)
    special[:, 0] = True
    special[torch.arange(batch, device=device), tokens.sep.to(device)] = True
    valid_r = r * valid[:, None, :]
    special_share = (valid_r * special[:, None, :]).sum(-1) / valid_r.sum(-1)

    first, last, centre = codons(span_lo, span_hi)
    domain = _CODON_DOMAINS.to(device)[centre.clamp(0, SPIKE_CODONS + 1)]
    by_domain = _scatter(_with_counts(r, placed), domain, len(DOMAINS))  # (batch, head + 1, D)
    domain_r, domain_count = by_domain[:, :heads], by_domain[:, heads]
    n_placed = domain_count.sum(dim=1)
    domain_share = domain_r / domain_r.sum(-1, keepdim=True)
    domain_tokens = domain_count / n_placed[:, None]

    mutation_tokens, mutation_sum, at_any = _mutation_sums(r, span_lo, span_hi, placed, mutations)
    mutation_mean = mutation_sum / mutation_tokens[:, None, :]

    codon_tokens, codon_sum = _codon_sums(r, first, last, placed)
    codon_mean = codon_sum / codon_tokens[:, None, :]
    differs = changed.to(device) if changed is not None else torch.zeros_like(placed)
    change_count, change_sum, plain_count, plain_sum = _centre_sums(
        r, centre, placed & ~at_any & differs, placed & ~differs
    )
    return SpikeAttentionBatch(
        special_share,
        domain_share,
        domain_tokens,
        n_placed,
        mutation_mean,
        mutation_tokens,
        codon_mean,
        codon_tokens,
        change_sum,
        change_count,
        plain_sum,
        plain_count,
    )


def _with_counts(r: Tensor, chosen: Tensor) -> Tensor:
    """``(batch, head + 1, seq)``: r of the ``chosen (batch, seq)`` tokens (0 elsewhere) and, as
    a last row, 1 for them: one scatter then gives the sums and the token counts."""
    weight = chosen.to(torch.float64)[:, None, :]
    return torch.cat([r * weight, weight], dim=1)


def _scatter(values: Tensor, index: Tensor, size: int) -> Tensor:
    """``(batch, rows, size)``: ``values (batch, rows, n)`` summed by ``index (batch, n)``."""
    batch, rows, _ = values.shape
    out = torch.zeros(batch, rows, size, dtype=values.dtype, device=values.device)
    return out.scatter_add_(2, index[:, None, :].expand_as(values), values)


def _mutation_sums(
    r: Tensor, span_lo: Tensor, span_hi: Tensor, placed: Tensor, mutations: Sequence[Mutation]
) -> tuple[Tensor, Tensor, Tensor]:
    """Per mutation: the number of placed tokens whose span overlaps it ``(batch, mutation)``
    and the sum of their r ``(batch, head, mutation)``; and ``(batch, seq)`` whether a token
    overlaps any mutation.

    Token ``[lo, hi]`` overlaps mutation ``[start, end]`` when ``start <= hi`` and
    ``end >= lo``, so only the mutations with ``lo - L <= start <= hi`` can (L the longest
    ``end - start``): with the mutations by start those are a window found by binary search,
    and the overlaps are tested in ``(batch, seq, window)``, not ``(batch, seq, mutation)``.
    The few overlaps are summed from their indices (float64, exact)."""
    batch, heads, seq = r.shape
    count = len(mutations)
    device = r.device
    tokens = torch.zeros(batch, count, dtype=torch.float64, device=device)
    sums = torch.zeros(batch * count, heads, dtype=torch.float64, device=device)
    at_any = torch.zeros(batch, seq, dtype=torch.bool, device=device)
    if count == 0:
        return tokens, sums.view(batch, count, heads).transpose(1, 2), at_any
    order = sorted(range(count), key=lambda m: mutations[m].start)
    starts = torch.tensor([mutations[m].start for m in order], dtype=torch.long, device=device)
    ends = torch.tensor([mutations[m].end for m in order], dtype=torch.long, device=device)
    original = torch.tensor(order, dtype=torch.long, device=device)
    longest = int((ends - starts).max())
    lo, hi = span_lo.long(), span_hi.long()
    first = torch.searchsorted(starts, lo - longest, right=False)
    stop = torch.searchsorted(starts, hi, right=True)
    width = int((stop - first).clamp_min(0).max()) if placed.any() else 0
    if width > 0:
        candidate = first[..., None] + torch.arange(width, device=device)  # (batch, seq, w)
        inside = (candidate < stop[..., None]) & placed[..., None]
        candidate = candidate.clamp_max(count - 1)
        inside &= ends[candidate] >= lo[..., None]
        b, s, w = inside.nonzero(as_tuple=True)
        m = original[candidate[b, s, w]]
        pair = b * count + m
        tokens = torch.bincount(pair, minlength=batch * count).to(torch.float64)
        tokens = tokens.view(batch, count)
        sums.index_add_(0, pair, r[b, :, s])
        at_any[b, s] = True
    return tokens, sums.view(batch, count, heads).transpose(1, 2), at_any


def _centre_sums(
    r: Tensor, centre: Tensor, changes: Tensor, plain: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per centre codon 1..1273, for the ``changes`` and the ``plain (batch, seq)`` tokens: the
    number of them ``(batch, codon)`` and the sum of their r ``(batch, head, codon)``; one
    scatter for both."""
    heads = r.shape[1]
    on_spike = (centre >= 1) & (centre <= SPIKE_CODONS)
    index = (centre.clamp(1, SPIKE_CODONS) - 1).long()
    values = torch.cat([_with_counts(r, changes & on_spike), _with_counts(r, plain & on_spike)], 1)
    summed = _scatter(values, index, SPIKE_CODONS)
    change, plain_part = summed[:, : heads + 1], summed[:, heads + 1 :]
    return change[:, heads], change[:, :heads], plain_part[:, heads], plain_part[:, :heads]


def _codon_sums(r: Tensor, first: Tensor, last: Tensor, placed: Tensor) -> tuple[Tensor, Tensor]:
    """Per codon 1..1273: the number of placed tokens covering it ``(batch, codon)`` and the sum
    of their r ``(batch, head, codon)``, as differences at each token's first and one past its
    last codon, summed cumulatively (no ``(token, codon)`` matrix); one scatter for both."""
    heads = r.shape[1]
    inside = placed & (first <= SPIKE_CODONS) & (last >= 1)
    first = first.clamp(1, SPIKE_CODONS + 1)
    after = last.clamp(0, SPIKE_CODONS) + 1
    weighted = _with_counts(r, inside)  # (batch, head + 1, seq)
    differences = _scatter(
        torch.cat([weighted, -weighted], dim=2), torch.cat([first, after], dim=1), SPIKE_CODONS + 2
    )
    totals = differences.cumsum(-1)[..., 1 : SPIKE_CODONS + 1]
    return totals[:, heads].round(), totals[:, :heads]
