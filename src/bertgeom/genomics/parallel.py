"""Alignment in worker processes, a chunk at a time, so that it overlaps with classification.

Alignment (minimap2 through ``mappy``) is the floor of ``predict``: one core aligns about 120
genomes a second. :func:`spike_extractor` hands each chunk of records to a pool of worker
processes and returns at once; the caller classifies the previous chunk meanwhile and collects
this one later, in input order. Workers are started with ``spawn`` (a fork of a process running
torch's thread pool can deadlock; :func:`bertgeom.processes.spawn_pool`, whose workers end with
this process) and only once a second chunk shows the input is worth it, or
at once (``eager``) when the caller knows it is: then they start while the caller imports
torch and loads its model, and take the first chunk too. The pool is ``concurrent.futures``'
rather than ``multiprocessing.Pool``, whose ``get`` waits forever for the chunk of a worker
the system killed (out of memory, a crash): here that chunk raises, and the run stops with
one line instead of hanging.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from bertgeom.errors import BertgeomError
from bertgeom.genomics.fasta import FastaRecord
from bertgeom.genomics.spike import QCThresholds, SpikeRecord, extract_spike
from bertgeom.processes import spawn_pool

Pending = Callable[[], list[SpikeRecord]]
"""Call to wait for a submitted chunk's spikes, in the chunk's order."""
SpikeExtractor = Callable[[Sequence[FastaRecord]], Pending]
"""``submit(chunk)``: starts aligning a chunk of records, returns its :data:`Pending`."""


def _extract(item: tuple[str, str, QCThresholds | None]) -> SpikeRecord:
    return extract_spike(*item)


@contextmanager
def spike_extractor(
    workers: int = 1, thresholds: QCThresholds | None = None, eager: bool = False
) -> Iterator[SpikeExtractor]:
    """Yield ``submit(chunk)``, which starts aligning a chunk of records (in ``workers``
    processes when > 1, from the second chunk on, or from the first when ``eager``) and returns
    a callable that waits for them."""
    pool: ProcessPoolExecutor | None = None
    if eager and workers > 1:
        pool = spawn_pool(workers)
    chunks_seen = 0

    def submit(chunk: Sequence[FastaRecord]) -> Pending:
        nonlocal pool, chunks_seen
        items = [(record.record_id, record.sequence, thresholds) for record in chunk]
        chunks_seen += 1
        if workers <= 1 or (chunks_seen == 1 and pool is None):
            spikes = [_extract(item) for item in items]
            return lambda: spikes
        if pool is None:
            pool = spawn_pool(workers)
        size = max(1, len(items) // (4 * workers))
        pending = pool.map(_extract, items, chunksize=size)  # submitted now, collected later
        return lambda: _collect(pending)

    try:
        yield submit
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _collect(spikes: Iterable[SpikeRecord]) -> list[SpikeRecord]:
    try:
        return list(spikes)
    except BrokenProcessPool as error:
        raise BertgeomError(
            "an alignment worker process was killed (out of memory?); nothing was written. "
            "Run again with fewer --workers, or --workers 1 to align in this process"
        ) from error
