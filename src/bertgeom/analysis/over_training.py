"""The analysis over training: ``bertgeom analyze --model MODEL --over-training``.

A model trained with ``bertgeom train --checkpoints`` keeps the weights at chosen steps in
``MODEL/checkpoints/step-N/`` (``bertgeom.model.training_checkpoints``). The analysis over
training runs one and the same analysis (the same inputs, options and measurement parameters)
on every checkpoint, in step order, each a unit of work of its own on the run's executor, and
writes::

    OUT/
      training.parquet           step, epoch, train_loss, validation_macro_f1, table, layer,
                                 head, point, class, metric, value
      training_ablation.parquet  step, epoch, then ablation.parquet's columns (--ablation)
      training.json              the model, the checkpoints and their records, the timings
      checkpoints/step-N/        the results directory of each checkpoint (docs/results.md)

``training.parquet`` holds every row of each checkpoint's ``heads.parquet`` (``table`` =
``heads``, ``point`` null) and ``layers.parquet`` (``table`` = ``layers``, ``head`` -1, as
for the whole-layer rows of ``heads.parquet``), prefixed with the checkpoint's step, epoch,
training loss and validation macro-F1 (``checkpoint.json``). A step's rows are those of an
``analyze`` of that checkpoint alone. The checkpoints are analysed one after the other, so
memory stays that of one analysis, and the table is written a checkpoint at a time; on a Dask
cluster each checkpoint's inputs are sharded over it as in any analysis, in one session.
The directory appears whole or not at all (``bertgeom.atomic``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bertgeom.analysis.executor import Executor, executor_for
from bertgeom.analysis.options import AnalysisOptions, InputSpec, ProgressCallback
from bertgeom.analysis.run import StageCallback, StartCallback, analyze_in_turn
from bertgeom.atomic import atomic_directory
from bertgeom.errors import InputError
from bertgeom.model.resolve import ModelName, resolve_model
from bertgeom.model.training_checkpoints import (
    CHECKPOINTS_DIRECTORY,
    Checkpoint,
    list_checkpoints,
    step_directory,
)
from bertgeom.names import Table
from bertgeom.outputs import OVER_TRAINING, check_output_directory

TRAINING_TABLE = "training"
"""``training.parquet``: the long table of every checkpoint's heads and layers rows."""
TRAINING_ABLATION_TABLE = "training_ablation"
"""``training_ablation.parquet``: every checkpoint's ablation rows (with ``--ablation``)."""
TRAINING_MANIFEST = "training.json"
CHECKPOINT_COLUMNS = ("step", "epoch", "train_loss", "validation_macro_f1")
"""The columns that name the checkpoint of a row, first in ``training.parquet``."""

TRAINING_SCHEMA = pa.schema(
    [
        ("step", pa.int64()),
        ("epoch", pa.float64()),
        ("train_loss", pa.float64()),
        ("validation_macro_f1", pa.float64()),
        ("table", pa.string()),
        ("layer", pa.int64()),
        ("head", pa.int64()),
        ("point", pa.string()),
        ("class", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
    ]
)

CheckpointCallback = Callable[[Checkpoint, int, int], None]
"""``on_checkpoint(checkpoint, index, count)``: before the analysis of each checkpoint."""


@dataclass
class OverTrainingSummary:
    """What the command prints: checkpoints, inputs per checkpoint, seconds, the path."""

    out: Path
    steps: list[int] = field(default_factory=list)
    inputs: int = 0
    seconds: float = 0.0


def checkpoints_of(model: ModelName) -> list[Checkpoint]:
    """The checkpoints of a model directory, or an :class:`InputError` in one line when it
    has none."""
    directory = resolve_model(model).directory
    checkpoints = list_checkpoints(directory)
    if not checkpoints:
        raise InputError(
            f"--over-training: {directory} has no checkpoints ({CHECKPOINTS_DIRECTORY}/step-N); "
            "train it with 'bertgeom train --checkpoints'"
        )
    return checkpoints


def analyze_over_training(
    model_directory: ModelName,
    spec: InputSpec,
    out: Path,
    options: AnalysisOptions | None = None,
    progress: ProgressCallback | None = None,
    on_start: StartCallback | None = None,
    on_stage: StageCallback | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    *,
    overwrite: bool = False,
    executor: Executor | None = None,
    measurements: Mapping[str, Any] | None = None,
) -> OverTrainingSummary:
    """Analyse every checkpoint of ``model_directory`` on ``spec``'s inputs into ``out``
    (module docstring). The callbacks are those of :func:`bertgeom.analysis.analyze`, for
    each checkpoint's analysis in turn; ``measurements`` as there. The parameters of the
    measurements are worked out on the first checkpoint and kept for the others."""
    options = options or AnalysisOptions()
    if options.control is not None:
        raise InputError(
            "--control with --over-training: step 0 of the checkpoints is the untrained model"
        )
    started = time.perf_counter()
    directory = resolve_model(model_directory).directory
    checkpoints = checkpoints_of(directory)
    check_output_directory(
        out, OVER_TRAINING, inputs=[directory, spec.path, spec.labels], overwrite=overwrite
    )
    if executor is None:
        executor = executor_for(options)
    summary = OverTrainingSummary(out)
    timings: dict[str, float] = {}
    with atomic_directory(Path(out)) as staging, executor.session():
        tables = _TrainingTables(staging)

        def jobs() -> Iterator[tuple[Path, Path]]:
            for index, checkpoint in enumerate(checkpoints):
                if on_checkpoint is not None:
                    on_checkpoint(checkpoint, index, len(checkpoints))
                yield (
                    checkpoint.directory,
                    staging / CHECKPOINTS_DIRECTORY / step_directory(checkpoint.step),
                )

        analyses = analyze_in_turn(
            jobs(),
            spec,
            options,
            progress,
            on_start,
            on_stage,
            executor=executor,
            measurements=measurements,
        )
        for checkpoint, one in zip(checkpoints, analyses, strict=True):
            results = staging / CHECKPOINTS_DIRECTORY / step_directory(checkpoint.step)
            tables.add(checkpoint, results)
            summary.steps.append(checkpoint.step)
            summary.inputs = one.inputs
            timings[step_directory(checkpoint.step)] = round(one.seconds, 4)
        tables.close()
        summary.seconds = time.perf_counter() - started
        record = {
            "format_version": 1,
            "model": str(directory),
            "checkpoints": [
                {"path": f"{CHECKPOINTS_DIRECTORY}/{step_directory(c.step)}", **c.record.to_json()}
                for c in checkpoints
            ],
            "timings": {"per_checkpoint_s": timings, "total_s": round(summary.seconds, 4)},
        }
        (staging / TRAINING_MANIFEST).write_text(json.dumps(record, indent=1))
    return summary


class _TrainingTables:
    """``training.parquet`` (and ``training_ablation.parquet``) written a checkpoint at a
    time."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self.writers: dict[str, pq.ParquetWriter] = {}

    def add(self, checkpoint: Checkpoint, results: Path) -> None:
        rows = [_rows(checkpoint, results, Table.HEADS), _rows(checkpoint, results, Table.LAYERS)]
        present = [frame for frame in rows if frame is not None]
        if present:
            table = pa.Table.from_pandas(
                pd.concat(present, ignore_index=True), TRAINING_SCHEMA, preserve_index=False
            )
            self._write(TRAINING_TABLE, table)
        ablation_path = results / f"{Table.ABLATION}.parquet"
        if ablation_path.is_file():
            ablation = pd.read_parquet(ablation_path)
            ablation.insert(0, "epoch", checkpoint.record.epoch)
            ablation.insert(0, "step", checkpoint.step)
            self._write(
                TRAINING_ABLATION_TABLE, pa.Table.from_pandas(ablation, preserve_index=False)
            )

    def _write(self, name: str, table: pa.Table) -> None:
        writer = self.writers.get(name)
        if writer is None:
            writer = pq.ParquetWriter(self.staging / f"{name}.parquet", table.schema)
            self.writers[name] = writer
        writer.write_table(table.cast(writer.schema))

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def _rows(checkpoint: Checkpoint, results: Path, table: Table) -> pd.DataFrame | None:
    """One checkpoint's ``heads`` or ``layers`` rows in the columns of ``training.parquet``;
    None when the analysis wrote no such table (``layers`` without global measures)."""
    path = results / f"{table}.parquet"
    if not path.is_file():
        return None
    frame = pd.read_parquet(path)
    record = checkpoint.record
    frame["step"] = checkpoint.step
    frame["epoch"] = record.epoch
    frame["train_loss"] = record.train_loss
    frame["validation_macro_f1"] = record.validation_macro_f1
    frame["table"] = str(table)
    if table == Table.LAYERS:
        frame["head"] = -1
    else:
        frame["point"] = None
    return frame[list(TRAINING_SCHEMA.names)]


def training_rows(
    training: pd.DataFrame, step: int, table: str = str(Table.LAYERS)
) -> pd.DataFrame:
    """The rows of one step and one table of ``training.parquet`` in the columns of that
    table of a results directory (``heads``: layer, head, class, metric, value; ``layers``:
    layer, point, class, metric, value), to set beside a separate analysis."""
    rows = training[(training["step"] == step) & (training["table"] == table)]
    columns = [
        "layer",
        "head" if table == str(Table.HEADS) else "point",
        "class",
        "metric",
        "value",
    ]
    return rows[columns].reset_index(drop=True)
