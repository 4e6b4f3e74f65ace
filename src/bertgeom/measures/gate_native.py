"""The seven gate scores in two compiled passes per head: the CPU kernel of ``gates.gate_scores``
(issue 23: measures about as cheap as the forward pass they measure).

Why by hand: the torch kernel (``gate_kernel``) makes about fifteen passes over every attention
matrix, each a tensor operation with its own temporaries; on the short inputs of text models that
made the gates 40 % of the cost of the forward pass itself. Here a compiled loop (numba) reads
each row of a head once for the row statistics and copies the content block once; the cluster
score's one matrix product goes to torch (a batched BLAS product, 3-4x faster than a compiled
loop), and a second compiled loop sums the cluster score from it. No library computes these
scores.

For each head of each input with ``n`` valid keys (a prefix), ``m`` content queries ``C`` and the
formulas of ``gates`` and ``cluster`` (their docstrings):

    closed_i   = A[i, 0] + A[i, sep]                  backward_i = sum_{d=1..w, i-d >= 0} A[i, i-d]
    instance_i = A[i, i]                              forward_i  = sum_{d=1..w, i+d < n} A[i, i+d]
    entropy_i  = -sum_{j < n} A[i, j] log A[i, j] / log max(n, 2)      (0 log 0 = 0)
    a_j        = sum_{i in C} A[i, j] / m   (directional: the sum of the top-k a_j, j in C)
    off_i      = sum_{j in C, j != i} A[i, j]

each averaged over ``C``; the cluster score from ``B = A[C, C]`` with its diagonal zeroed (``D``):
norms ``||D_i||`` (0 where ``||D_i||^2 <= tol (||D_i||^2 + B_ii^2)``), on the queries ``R`` (all of
``C``, or ``r = min(max_rows, m)`` of them, content ranks ``floor(k m / r)``)

    s_ij = clip((D_i . D_j + D_ij D_ji) / (||D_i|| ||D_j||), 0, 1) ** power
    d_ij = D_ij - off_i / (m - 1)
    ratio = sum_{i in R, j != i} d_ij s_ij / sum_{i in R, j != i} max(d_ij, 0)
            (0 when the denominator is at most |R| sqrt(eps))
    cluster = clip(ratio, 0, 1) * mean_{i in C} off_i

Sums are kept in float64 (the products ``D_i . D_j`` in the attention's dtype, a matrix product),
so the scores differ from the torch kernel's float32 sums by rounding alone (tested: within 1e-6;
the cluster score on near-uniform rows most). Each input is read up to its own ``n`` and its
product taken at its own size, so its scores do not depend on the batch it came in.
"""

from __future__ import annotations

import itertools
import math
from functools import partial

import numba
import numpy as np
import numpy.typing as npt
import torch
from numba.extending import overload
from torch import Tensor

from bertgeom.compiled import kernel
from bertgeom.measures.cpu_workers import run_tasks
from bertgeom.measures.tokens import TokenMask

N_SCORES = 7
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
"""Reassociation lets the compiler vectorise the sums; no flag assumes away NaN or infinity, so
a NaN in the attention still reaches the scores."""

Floats = npt.NDArray[np.floating]

PARALLEL_ENTRIES = 1 << 22
"""A batch goes to a second worker thread only from this many attention entries of valid keys
(4M: 16 MB of float32). Measured inside ``analyze`` on 2 cores: the case study's batches (32
inputs of about 430 tokens, 4 heads: 24M entries) score in 1.8 s on two workers against 2.8 s on
one; MiniLM's chunks of short prose (32 x 12 heads x about 55^2: 1.2M) are no faster on two,
where the forward pass's threads, still spinning after each of its operations, take the
second core."""


def _row_plogp(row: Floats, n: int, scratch: Floats) -> float:
    """``sum_{j < n} row[j] log row[j]`` (0 log 0 = 0), in float64; ``scratch`` holds ``n``
    values of ``row``'s dtype. Compiled only (``_row_plogp_kernel``)."""
    raise NotImplementedError("compiled only")


@overload(_row_plogp, jit_options={"fastmath": _FASTMATH})
def _row_plogp_kernel(row, n, scratch):  # type: ignore[no-untyped-def]
    """float32 rows: a logarithm the compiler can vectorise (Cephes' ``logf``: the exponent
    from the bits, a degree-9 polynomial on the mantissa in [sqrt(1/2), sqrt(2)); relative error
    below 2e-7, tested). Why by hand: ``math.log`` is a scalar call that cost 2.7 ns per entry,
    twice the rest of the row statistics together, and numba's vector library (SVML) is not on
    PyPI's llvmlite. float64 rows keep ``math.log``. 0 log 0 = 0 either way: log 0 comes out
    finite here (-88), and is clamped to the smallest normal float there."""
    if row.dtype != numba.float32:

        def exact(row, n, scratch):  # type: ignore[no-untyped-def]
            tiny = np.finfo(np.float64).tiny
            total = 0.0
            for j in range(n):
                total += row[j] * math.log(max(row[j], tiny))
            return total

        return exact

    def fast(row, n, scratch):  # type: ignore[no-untyped-def]
        bits = row[:n].view(np.int32)
        mantissa_bits = scratch[:n].view(np.int32)
        for j in range(n):
            mantissa_bits[j] = (bits[j] & 0x007FFFFF) | 0x3F800000
        mantissa = scratch[:n]
        total = 0.0
        for j in range(n):
            exponent = np.float32(((bits[j] >> 23) & 0xFF) - 127)
            x = mantissa[j]
            high = x > np.float32(1.41421356)
            x = x * np.float32(0.5) if high else x
            exponent = exponent + np.float32(1.0) if high else exponent
            x = x - np.float32(1.0)
            z = x * x
            y = np.float32(7.0376836292e-2) * x - np.float32(1.1514610310e-1)
            y = y * x + np.float32(1.1676998740e-1)
            y = y * x - np.float32(1.2420140846e-1)
            y = y * x + np.float32(1.4249322787e-1)
            y = y * x - np.float32(1.6668057665e-1)
            y = y * x + np.float32(2.0000714765e-1)
            y = y * x - np.float32(2.4999993993e-1)
            y = y * x + np.float32(3.3333331174e-1)
            y = y * x * z + np.float32(-2.12194440e-4) * exponent - np.float32(0.5) * z
            total += row[j] * (x + y + np.float32(0.693359375) * exponent)
        return total

    return fast


def native_gate_scores(
    attn: Tensor,
    tokens: TokenMask,
    *,
    window: int,
    top_k: int,
    cluster_rows: int | None,
    power: int,
    self_tolerance: float,
    workers: int | None = None,
) -> Tensor:
    """The scores ``(batch, head, 7)`` of a CPU ``attn (batch, head, seq, seq)`` on a checked
    ``tokens`` whose content is every valid position but 0 and ``sep`` (``token_mask``'s), in
    float64 for float64 input and float32 otherwise; NaN for inputs that are not
    ``tokens.defined``.

    One input at a time: its heads' content blocks (``heads x m x m``) stay in the core's
    cache from the copy through the product to the cluster sums. With ``workers`` > 1 the
    inputs are shared out, in runs of about equal work, to single-threaded worker threads
    (``cpu_workers``; the compiled passes release the GIL); by default one worker per torch
    thread for every ``PARALLEL_ENTRIES`` attention entries of valid keys, at least one. The
    scores do not depend on the workers."""
    _check_layout(tokens)
    dtype = torch.float64 if attn.dtype == torch.float64 else torch.float32
    values = attn.detach().to(dtype).contiguous().numpy()
    batch, heads = values.shape[:2]
    scores = np.full((batch, heads, N_SCORES), np.nan, dtype=values.dtype)
    lengths = [
        n if defined else 0
        for n, defined in zip(tokens.n_valid.tolist(), tokens.defined.tolist(), strict=True)
    ]
    separators = tokens.sep.tolist()

    def share(start: int, stop: int) -> None:
        _share_scores(
            values[start:stop], lengths[start:stop], separators[start:stop], scores[start:stop],
            window=window, top_k=top_k, cluster_rows=cluster_rows, power=power,
            self_tolerance=self_tolerance,
        )  # fmt: skip

    work = [heads * n * n for n in lengths]
    if workers is None:
        workers = min(torch.get_num_threads(), max(1, sum(work) // PARALLEL_ENTRIES))
    bounds = _shares(work, workers)
    tasks = [partial(share, start, stop) for start, stop in itertools.pairwise(bounds)]
    run_tasks(tasks, len(tasks))
    return torch.from_numpy(scores)


def _shares(work: list[int], workers: int) -> list[int]:
    """Bounds ``0 = b_0 < ... < b_k = len(work)`` of at most ``workers`` runs of consecutive
    items of about equal total ``work`` (one run for an empty list)."""
    total, bounds, done = sum(work), [0], 0
    for index, amount in enumerate(work[:-1]):
        done += amount
        if len(bounds) < workers and done * workers >= total * len(bounds):
            bounds.append(index + 1)
    return [*bounds, len(work)]


def _share_scores(
    values: Floats,
    lengths: list[int],
    separators: list[int],
    scores: Floats,
    *,
    window: int,
    top_k: int,
    cluster_rows: int | None,
    power: int,
    self_tolerance: float,
) -> None:
    """``scores`` of the inputs of ``values`` (``lengths``: valid keys, 0 for an undefined
    input), one input at a time through buffers of this call's own."""
    heads, seq = values.shape[1:3]
    width = max(seq - 2, 1)
    height = width if cluster_rows is None else max(1, min(cluster_rows, width))
    block = np.empty(heads * width * width, dtype=values.dtype)
    queries = np.empty(heads * height * width, dtype=values.dtype)
    products = np.empty(heads * height * width, dtype=values.dtype)
    norms, off = np.empty((2, heads, width))
    flat = math.sqrt(float(np.finfo(values.dtype).eps))
    for b, n in enumerate(lengths):
        if n == 0:
            continue
        m = n - 2
        rows = m if cluster_rows is None else max(1, min(cluster_rows, m))
        content = block[: heads * m * m].reshape(heads, m, m)
        chosen = queries[: heads * rows * m].reshape(heads, rows, m)
        dots = products[: heads * rows * m].reshape(heads, rows, m)
        _row_scores(
            values[b], n, separators[b], rows, window, top_k, self_tolerance,
            content, chosen, norms, off, scores[b],
        )  # fmt: skip
        torch.matmul(
            torch.from_numpy(chosen),
            torch.from_numpy(content).transpose(-1, -2),
            out=torch.from_numpy(dots),
        )
        _cluster_scores(content, dots, norms, off, rows, power, flat, scores[b])


def _check_layout(tokens: TokenMask) -> None:
    """Refuse a mask whose valid positions are not a prefix or whose content is not every valid
    position but 0 and ``sep`` (``token_mask`` builds no other): the kernel reads that layout
    from ``n_valid`` and ``sep`` alone."""
    positions = torch.arange(tokens.valid.shape[1], device=tokens.valid.device)
    prefix = positions[None, :] < tokens.n_valid[:, None]
    content = prefix & (positions[None, :] != 0) & (positions[None, :] != tokens.sep[:, None])
    if not (torch.equal(tokens.valid, prefix) and torch.equal(tokens.content, content)):
        raise ValueError("the gate kernel needs a token mask built by token_mask")


@kernel(fastmath=_FASTMATH)
def _row_scores(
    attn: Floats,
    n: int,
    sep: int,
    rows: int,
    window: int,
    top_k: int,
    self_tolerance: float,
    block: Floats,
    queries: Floats,
    norms: npt.NDArray[np.float64],
    off: npt.NDArray[np.float64],
    out: Floats,
) -> None:
    """The six row scores of one input's heads ``attn (head, seq, seq)`` (``n`` valid keys,
    content ``1..n-1`` without ``sep``) into ``out[:, :6]``; the content blocks ``D``
    (``block (head, m, m)``), the cluster score's query rows of them (``queries (head, rows,
    m)``), ``||D_i||`` (``norms``) and ``off_i`` (``off``)."""
    heads = attn.shape[0]
    m = n - 2
    log_n = math.log(max(n, 2))
    columns = np.empty(n)
    scratch = np.empty(n, dtype=attn.dtype)
    for h in range(heads):
        a, d = attn[h], block[h]
        closed = entropy = backward = forward = instance = 0.0
        columns[:] = 0.0
        for r in range(m):
            i = r + 1 if r + 1 < sep else r + 2
            row = a[i]
            closed += row[0] + row[sep]
            entropy -= _row_plogp(row, n, scratch) / log_n
            for j in range(n):
                columns[j] += row[j]
            for step in range(1, window + 1):
                if i - step >= 0:
                    backward += row[i - step]
                if i + step < n:
                    forward += row[i + step]
            instance += row[i]
            target = d[r]
            for c in range(sep - 1):
                target[c] = row[c + 1]
            for c in range(sep - 1, m):
                target[c] = row[c + 2]
            total = rest = 0.0
            for c in range(m):
                value = float(target[c])
                total += value
                rest += value * value
            self_attention = float(row[i])
            target[r] = 0.0
            off[h, r] = total - self_attention
            rest -= self_attention * self_attention
            squared = rest + self_attention * self_attention
            norms[h, r] = math.sqrt(rest) if rest > self_tolerance * squared else 0.0
        for k in range(rows):
            queries[h, k] = d[(k * m) // rows]
        scores = out[h]
        scores[0] = closed / m
        scores[1] = _top_sum(columns, sep, top_k) / m
        scores[2] = entropy / m
        scores[3] = backward / m
        scores[4] = forward / m
        scores[5] = instance / m


@kernel(fastmath=_FASTMATH)
def _top_sum(columns: npt.NDArray[np.float64], sep: int, top_k: int) -> float:
    """The sum of the ``top_k`` largest content column sums (positions ``1..n-1`` but ``sep``;
    all of them when there are fewer): the directional score's numerator. The largest alone,
    the default, in one pass."""
    content = np.concatenate((columns[1:sep], columns[sep + 1 :]))
    if top_k == 1:
        return content.max()
    return np.sort(content)[::-1][:top_k].sum()


@kernel(fastmath=_FASTMATH)
def _cluster_scores(
    block: Floats,
    products: Floats,
    norms: npt.NDArray[np.float64],
    off: npt.NDArray[np.float64],
    rows: int,
    power: int,
    flat_tolerance: float,
    out: Floats,
) -> None:
    """The cluster score of one input's heads into ``out[:, 6]`` from ``products[h, k, j] =
    D_q . D_j`` (q the k-th query of ``R``) and the outputs of ``_row_scores``."""
    heads, m = block.shape[:2]
    inverse, column, similarity, weight = np.empty((4, m))
    for h in range(heads):
        d, dots, norm, mass = block[h], products[h], norms[h], off[h]
        for c in range(m):
            inverse[c] = 1.0 / norm[c] if norm[c] > 0.0 else 0.0
        numerator = denominator = 0.0
        for k in range(rows):
            q = (k * m) // rows
            mean_off = mass[q] / max(m - 1, 1)
            for c in range(m):
                column[c] = d[c, q]  # D_cq, read once per query
            query, dot, scale = d[q], dots[k], inverse[q]
            for part in range(2):  # the keys before q, then after it (never q itself)
                first, stop = (0, q) if part == 0 else (q + 1, m)
                for c in range(first, stop):
                    deviation = query[c] - mean_off
                    denominator += max(deviation, 0.0)
                    cosine = (dot[c] + query[c] * column[c]) * scale * inverse[c]
                    similarity[c] = min(max(cosine, 0.0), 1.0)
                    weight[c] = deviation
            similarity[q] = weight[q] = 0.0
            if power == 4:  # the default: two squarings, not a call to pow
                for c in range(m):
                    squared = similarity[c] * similarity[c]
                    numerator += weight[c] * squared * squared
            else:
                for c in range(m):
                    numerator += weight[c] * similarity[c] ** power
        ratio = 0.0 if denominator <= rows * flat_tolerance else numerator / denominator
        out[h, 6] = min(max(ratio, 0.0), 1.0) * mass[:m].sum() / m
