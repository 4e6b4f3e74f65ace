"""The seven gate scores of a batch, chunk by chunk: the kernel of ``gates.gate_scores`` (issue
23: measures about as cheap as the forward pass).

The per-gate functions of ``gates`` (``closed_score`` ... ``cluster_score``) each read the whole
batch and allocate batch-sized temporaries at every step; on a CPU the page faults of those
fresh allocations cost more than the arithmetic. Here the batch goes through in chunks of
inputs (and of heads, for an input larger than a chunk) of about ``CHUNK_ELEMENTS`` attention
entries, on single-threaded workers (``cpu_workers``). Each chunk is copied once into a reused
buffer, with the keys that are not valid zeroed, a few inputs or heads at a time
(``STREAM_ELEMENTS``) so that ``A log A`` and the column means are read from the core's cache;
the per-query statistics are read from that copy without key masks:

    closed_i   = A[i, 0] + A[i, n-1]             backward_i = sum_{d=1..w} A[i, i-d]
    instance_i = A[i, i]                         forward_i  = sum_{d=1..w} A[i, i+d]
    entropy_i  = -sum_j A[i, j] log A[i, j] / log n       (invalid keys are 0: 0 log 0 = 0)
    a_j        = sum_{i in C} A[i, j] / m         (directional: top-k content columns)

and the copy then becomes the cluster score's block in place (columns 0 and n-1 zeroed, then
its diagonal). The formulas are those of ``gates`` and ``cluster`` (their docstrings).

Every reduction keeps the length and the order of operations of the per-gate functions on the
whole batch cut to its longest input, so the scores are theirs bit for bit (tested; the open
score's row sums, products with a vector of ones, may differ in the last bit). That matters for
the cluster score: its ratio is a difference of near-equal sums, and on near-uniform attention
float32 rounding moves it by up to about 1e-6 (more than the score, for scores of 1e-6) when
merely the length the rows are cut to changes. So a chunk is not cut to its own longest input,
and the scores stay those the stored analyses (``tests/data/reference``) were computed with.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor

from bertgeom.measures import cluster
from bertgeom.measures.cpu_workers import ThreadBuffers, run_tasks
from bertgeom.measures.gate_layout import TokenMask, content_weights, log_valid, top_columns

CHUNK_ELEMENTS = 1 << 22
"""On the CPU, the batch goes through in chunks of about this many attention entries (16 MB of
float32; at least one head of one input each): the chunk's buffers are reused, where
whole-batch temporaries cost a page fault per 4 kB of every fresh allocation; and a chunk is
work enough that the workers seldom wait for each other's Python (the GIL) between steps
(measured on 2 cores: 4 to 15 % faster than chunks of 4 or 8 MB, as fast as 32 MB)."""

MIN_SHARE = 1 << 18
"""A worker takes a share of a batch only if the share holds at least this many entries (a
smaller batch goes to fewer workers, one chunk of it runs in the calling thread): below that,
handing the work over costs more than sharing it saves."""

CHUNK_ELEMENTS_ACCELERATOR = 1 << 26
"""The chunk size on other devices (256 MB of float32), where it only bounds the memory the
temporaries take: a GPU is fastest on the largest tensors."""

STREAM_ELEMENTS = 1 << 18
"""On the CPU, a chunk is copied and its ``A log A`` taken in groups of inputs or heads of about
this many entries (1 MB of float32, at least one head): the group and its ``A log A`` stay in a
core's L2 cache between the steps."""

N_SCORES = 7


class Chunk(NamedTuple):
    """Inputs ``start:stop`` and heads ``first:last`` of a batch."""

    start: int
    stop: int
    first: int
    last: int


def chunk_plan(batch: int, heads: int, per_head: int, budget: int) -> list[Chunk]:
    """Chunks of consecutive inputs holding at most ``budget`` entries (``per_head`` per head of
    an input), or of consecutive heads of one input when an input holds more (at least one)."""
    per_input = heads * per_head
    if per_input <= budget:
        size = max(1, budget // per_input)
        return [Chunk(a, min(a + size, batch), 0, heads) for a in range(0, batch, size)]
    group = max(1, budget // per_head)
    return [
        Chunk(b, b + 1, first, min(first + group, heads))
        for b in range(batch)
        for first in range(0, heads, group)
    ]


def fused_gate_scores(
    attn: Tensor,
    tokens: TokenMask,
    *,
    window: int,
    top_k: int,
    cluster_rows: int | None,
    budget: int | None = None,
    workers: int | None = None,
) -> Tensor:
    """The scores ``(batch, head, 7)`` of ``attn (batch, head, seq, seq)`` on a checked
    ``tokens`` (``tokens.token_mask``), in float64 for float64 input and in float32
    otherwise; NaN for inputs that are not ``tokens.defined``.

    The batch is cut to its longest valid length (without ``include_padding``: positions past
    it are never valid) and goes through in chunks of about ``budget`` entries (default
    ``CHUNK_ELEMENTS`` on the CPU and at most a share of the batch per worker (``MIN_SHARE``),
    ``CHUNK_ELEMENTS_ACCELERATOR`` elsewhere). On the CPU several chunks run on ``workers``
    single-threaded workers (``cpu_workers``; default one, the calling thread); one chunk,
    or the chunks on another device, run one after the other in the calling thread.
    """
    dtype = torch.promote_types(attn.dtype, torch.float32)
    batch, heads = attn.shape[:2]
    scores = attn.new_full((batch, heads, N_SCORES), torch.nan, dtype=dtype)
    if batch == 0:
        return scores
    on_cpu = attn.device.type == "cpu"
    if workers is None:
        # One: inside analyze the forward pass's OpenMP threads keep spinning for a while after
        # each region and take the cores that worker threads would need (gates 2.4 s with one
        # worker against 3.9 s with two, MiniLM, 500 texts, batch 8, BENCHMARKS.md).
        workers = 1
    seq = max(int(tokens.n_valid.max()), 1)
    if budget is None:
        budget = CHUNK_ELEMENTS if on_cpu else CHUNK_ELEMENTS_ACCELERATOR
        total = batch * heads * seq * seq
        shares = max(1, min(workers, total // MIN_SHARE))
        budget = min(budget, -(-total // shares))
    lengths, defined = tokens.n_valid.tolist(), tokens.defined.tolist()
    plan = [c for c in chunk_plan(batch, heads, seq * seq, budget) if any(defined[c[0] : c[1]])]
    if not plan:
        return scores
    tokens = tokens.part(0, batch, seq)
    # Batch-wide as in cluster_score: all content rows or the sampled ones, for every chunk.
    positions: Tensor | None = None
    row_valid = tokens.content
    if cluster_rows is not None and cluster_rows < int(tokens.n_content.max()):
        positions, row_valid = cluster.cluster_rows(tokens, cluster_rows)
    area = seq * seq
    work_size = max((c.stop - c.start) * (c.last - c.first) * area for c in plan)
    shapes = {(c.stop - c.start, c.last - c.first) for c in plan}
    spare_size = max(_stream_size(*shape, area, on_cpu) for shape in shapes)
    buffers = ThreadBuffers((work_size, spare_size), dtype, attn.device)

    def chunk_scores(chunk: Chunk) -> Tensor:
        start, stop, first, last = chunk
        source = attn[start:stop, first:last, :seq, :seq]
        work_buffer, spare = buffers.get()
        work = work_buffer[: source.numel()].view(source.shape)
        part = tokens.part(start, stop, seq)
        queries = (None if positions is None else positions[start:stop], row_valid[start:stop])
        uniform = all(length == seq for length in lengths[start:stop])
        return _chunk_scores(source, work, spare, part, uniform, queries, window, top_k)

    tasks = [partial(chunk_scores, chunk) for chunk in plan]
    # One chunk runs in the calling thread, as the per-gate functions would (no hand-over).
    for chunk, result in zip(plan, run_tasks(tasks, workers if len(tasks) > 1 else 1), strict=True):
        scores[chunk.start : chunk.stop, chunk.first : chunk.last] = result
    return scores.masked_fill_(~tokens.defined[:, None, None], torch.nan)


def _streams(batch: int, heads: int, area: int, on_cpu: bool) -> list[Chunk]:
    """The groups of a chunk of ``batch`` inputs and ``heads`` heads (``area`` entries each)
    copied and read together: ``STREAM_ELEMENTS`` on the CPU (contiguous in the chunk: whole
    inputs, or heads of one input), the whole chunk elsewhere."""
    return chunk_plan(batch, heads, area, STREAM_ELEMENTS if on_cpu else batch * heads * area)


def _stream_size(batch: int, heads: int, area: int, on_cpu: bool) -> int:
    """Entries of the largest of ``_streams``."""
    groups = _streams(batch, heads, area, on_cpu)
    return max((g.stop - g.start) * (g.last - g.first) * area for g in groups)


def _band(work: Tensor, offsets: range) -> Tensor:
    """``sum_{d in offsets} A[i, i + d]`` per query (0 where i + d is outside the block or not a
    valid key: the copy holds 0 there), added in the order of ``offsets``."""
    seq = work.shape[-1]
    total = work.new_zeros(work.shape[:-1])
    for offset in offsets:
        if abs(offset) >= seq:
            continue
        values = work.diagonal(offset, -2, -1)
        if offset > 0:
            total[..., : seq - offset] += values
        else:
            total[..., -offset:] += values
    return total


def _chunk_scores(
    source: Tensor,
    work: Tensor,
    spare: Tensor,
    tokens: TokenMask,
    uniform: bool,
    queries: tuple[Tensor | None, Tensor],
    window: int,
    top_k: int,
) -> Tensor:
    """The seven scores ``(batch, head, 7)`` of one chunk ``source (batch, head, seq, seq)``,
    every input ``seq`` long when ``uniform``. ``work`` (its shape, contiguous) receives its copy
    and ``spare`` (flat, the largest of its ``_streams``) its ``A log A``; ``queries``: the cluster
    score's ``positions`` and ``row_valid`` (``cluster.cluster_ratio``)."""
    batch, heads, seq, _ = source.shape
    weights = content_weights(tokens, work.dtype)
    valid_keys = tokens.valid.to(work.dtype)
    tiny = torch.finfo(work.dtype).tiny
    entropy, column_means = work.new_empty(2, batch, heads, seq).unbind(0)
    for start, stop, first, last in _streams(batch, heads, seq * seq, work.device.type == "cpu"):
        block = work[start:stop, first:last]
        keys = valid_keys[start:stop]
        # The copy, with the keys that are not valid zeroed: no statistic needs a key mask then.
        if uniform:
            block.copy_(source[start:stop, first:last])
        else:
            torch.mul(source[start:stop, first:last], keys[:, None, None, :], out=block)
        # a log a with 0 log 0 = 0 through the clamp: log(0) is many times slower than log(tiny).
        plogp = spare[: block.numel()].view(block.shape)
        torch.clamp_min(block, tiny, out=plogp).log_().mul_(block)
        entropy[start:stop, first:last] = (plogp @ keys[:, None, :, None]).squeeze(-1)
        means = weights[start:stop, None, None, :] @ block
        column_means[start:stop, first:last] = means.squeeze(-2)
    entropy_rows = -entropy / log_valid(tokens, work.dtype)[:, None, None]
    directional = top_columns(column_means, tokens, top_k)

    items = torch.arange(batch, device=work.device)
    closed = work[..., 0] + work[items, :, :, tokens.sep]  # (batch, head, query)
    backward = _band(work, range(-1, -window - 1, -1))
    forward = _band(work, range(1, window + 1))
    diagonal = work.diagonal(0, -2, -1)
    instance = diagonal.clone()
    # The cluster score's block B = A on the content keys, in place, then C (no diagonal).
    work[..., 0] = 0.0
    work[items, :, :, tokens.sep] = 0.0
    self_attention = diagonal.clone()  # B_ii (0 off the content)
    off_mass = work.sum(dim=-1) - self_attention  # sum_{j in C, j != i} B_ij
    diagonal.zero_()
    positions, row_valid = queries
    ratio = cluster.cluster_ratio(work, self_attention, off_mass, tokens, positions, row_valid)
    # The content means of six statistics at once (as content_mean, row by row).
    rows = torch.stack([closed, entropy_rows, backward, forward, instance, off_mass], dim=2)
    closed, opened, backward, forward, instance, mass = (
        (rows * weights[:, None, None, :]).sum(dim=-1).unbind(-1)
    )
    clustered = ratio.clamp(0.0, 1.0) * mass
    return torch.stack([closed, directional, opened, backward, forward, instance, clustered], -1)
