"""``predict`` on Dask: each worker aligns and classifies one contiguous shard of the FASTA
records; the client puts the shards' rows back together in input order.

Why whole rows and no merging: a call depends on its record alone, so a shard's table is final
and the tables of the shards, in shard order, are the single-process table.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import pandas as pd
import torch

from bertgeom.errors import InputError
from bertgeom.genomics.fasta import read_fasta
from bertgeom.genomics.text_lines import STDIN, display_name
from bertgeom.model.ensemble import Predictor, load_predictor
from bertgeom.model.predict import predict_records, prediction_columns, with_change_alpha
from bertgeom.model.resolve import ModelName
from bertgeom.scale.cluster import ClusterSpec, dask_client, run_shards, shard_positions


@dataclass(frozen=True)
class PredictTask:
    """One shard of ``predict``: the records at ``positions`` of ``fasta``, called by the
    classifier in ``model`` (None: the worker's shipped model), both read on the worker."""

    fasta: Path
    model: Path | None
    positions: range
    batch_size: int = 64
    change_alpha: float | None = None
    torch_threads: int | None = None


_classifiers = threading.local()


def _worker_classifier(model: Path | None) -> Predictor:
    """The classifier (or ensemble) of this worker thread, loaded once per directory."""
    cached: tuple[Path | None, Predictor] | None = getattr(_classifiers, "cached", None)
    if cached is None or cached[0] != model:
        _classifiers.cached = cached = (model, load_predictor(model))
    return cached[1]


def predict_shard(task: PredictTask) -> pd.DataFrame:
    """Run on a worker: the calls of the shard's records, in order (alignment in-process)."""
    if task.torch_threads is not None:
        torch.set_num_threads(task.torch_threads)
    classifier = with_change_alpha(_worker_classifier(task.model), task.change_alpha)
    records = islice(read_fasta(task.fasta), task.positions.start, task.positions.stop)
    return predict_records(records, classifier, batch_size=task.batch_size, workers=1)


def _require_shared_file(fasta: Path) -> None:
    """Each worker opens the FASTA file itself, so a stream (standard input, a pipe) cannot be
    sharded: say so rather than fail on a path named ``-`` or a drained pipe."""
    path = Path(fasta)
    if str(fasta) == STDIN or (path.exists() and not path.is_file() and not path.is_dir()):
        raise InputError(
            f"{display_name(fasta)}: --scheduler and --dask-workers need a FASTA file that the "
            "workers can open, not standard input or a pipe; save it to a file first"
        )


def predict_on_dask(
    fasta: Path,
    classifier: Predictor,
    cluster: ClusterSpec,
    model: ModelName | None = None,
    batch_size: int = 64,
    change_alpha: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """:func:`~bertgeom.model.predict.predict_records` of every record of ``fasta`` on the
    Dask cluster ``cluster``, one row per record in input order. ``classifier`` is the client's
    copy of ``model`` (its classes name the columns of an empty table; the workers load the
    directory it was loaded from, so a hub id is resolved once, by the client)."""
    _require_shared_file(fasta)
    fasta = Path(fasta).resolve()
    count = sum(1 for _ in read_fasta(fasta))
    loaded = classifier.directory
    directory = loaded.resolve() if model is not None and loaded is not None else None
    parts: dict[int, pd.DataFrame] = {}
    with dask_client(cluster) as client:
        tasks = [
            PredictTask(fasta, directory, shard, batch_size, change_alpha, cluster.torch_threads())
            for shard in shard_positions(client, count)
        ]
        for index, table in run_shards(client, predict_shard, tasks):
            parts[index] = table
            if progress is not None:
                progress(len(table))
    if not parts:
        return pd.DataFrame(columns=prediction_columns(classifier.settings.classes))
    return pd.concat([parts[index] for index in sorted(parts)], ignore_index=True)
