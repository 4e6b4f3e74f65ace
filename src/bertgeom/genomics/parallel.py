"""Alignment in worker processes, a chunk at a time, so that it overlaps with classification.

Alignment (minimap2 through ``mappy``) is the floor of ``predict``: one core aligns about 120
genomes a second. :class:`SpikeExtractor` hands each chunk of records to a pool of worker
processes and returns at once; the caller classifies the previous chunk meanwhile and collects
this one later, in input order. Workers are started with ``spawn`` (a fork of a process running
torch's thread pool can deadlock) and only once a second chunk shows the input is worth it.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from multiprocessing.pool import Pool
from types import TracebackType

from bertgeom.genomics.fasta import FastaRecord
from bertgeom.genomics.spike import QCThresholds, SpikeRecord, extract_spike

Pending = Callable[[], list[SpikeRecord]]
"""Call to wait for a submitted chunk's spikes, in the chunk's order."""


def _extract(item: tuple[str, str, QCThresholds | None]) -> SpikeRecord:
    return extract_spike(*item)


class SpikeExtractor:
    """``submit(chunk)`` aligns a chunk of records (in ``workers`` processes when > 1)."""

    def __init__(self, workers: int = 1, thresholds: QCThresholds | None = None) -> None:
        self.workers = workers
        self.thresholds = thresholds
        self._pool: Pool | None = None
        self._chunks_seen = 0

    def submit(self, chunk: Sequence[FastaRecord]) -> Pending:
        """Start aligning ``chunk``; the returned callable waits for its spikes."""
        items = [(record.record_id, record.sequence, self.thresholds) for record in chunk]
        self._chunks_seen += 1
        if self.workers <= 1 or self._chunks_seen == 1:
            spikes = [_extract(item) for item in items]
            return lambda: spikes
        if self._pool is None:
            self._pool = multiprocessing.get_context("spawn").Pool(self.workers)
        size = max(1, len(items) // (4 * self.workers))
        return self._pool.map_async(_extract, items, chunksize=size).get

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> SpikeExtractor:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
