"""A fabricated over-training directory (what ``analyze --over-training`` writes):
``training.parquet`` with planted curves whose milestones are known, ``training.json``, and the
last checkpoint's results directory (``fabricated.write_fabricated_results``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bertgeom.measures.gates import DOMINANT_NAMES
from bertgeom.names import STREAM_POINTS
from bertgeom.report.tests.fabricated import write_fabricated_results
from bertgeom.report.training import TRAINING_COLUMNS

STEPS = (0, 1, 2, 4, 8, 16, 32, 64)
STEPS_PER_EPOCH = 16
MACRO_F1 = (0.1, 0.12, 0.15, 0.3, 0.5, 0.8, 0.92, 1.0)
"""Reaches 90 % of its final value (0.9) at step 32."""
TRAIN_LOSS = (float("nan"), 2.0, 1.9, 1.6, 1.2, 0.8, 0.4, 0.2)
LAST_CONE = (0.2, 0.3, 0.5, 0.8, 0.86, 0.88, 0.9, 0.9)
"""The last layer's I/n: first within 10 % of its final 0.9 (0.81..0.99) at step 8."""
LAST_PROBE = (0.2, 0.2, 0.25, 0.4, 0.6, 0.95, 1.0, 1.0)
"""Reaches 0.9 at step 16."""
LAST_SILHOUETTE = (0.0, 0.0, 0.02, 0.05, 0.1, 0.3, 0.46, 0.5)
"""Reaches 0.45 at step 32."""
SETTLED = 4
"""The last layer's gate mix: mostly open until step 2, within 0.05 of its final from step 4."""
PLANTED = {
    "validation macro-F1": 32,
    "last layer's token cone index I/n": 8,
    "last layer's [CLS] probe accuracy": 16,
    "last layer's [CLS] silhouette": 32,
    "last layer's gate mix": SETTLED,
}
"""The milestone steps of the planted curves."""
LAYERS, HEADS = 2, 4


def training_table(layers: int = LAYERS, heads: int = HEADS) -> pd.DataFrame:
    """``training.parquet``'s table of the planted curves (class ``all``)."""
    rows: list[dict[str, Any]] = []
    last = layers - 1
    for index, step in enumerate(STEPS):
        checkpoint = {
            "step": step,
            "epoch": step / STEPS_PER_EPOCH,
            "train_loss": TRAIN_LOSS[index],
            "validation_macro_f1": MACRO_F1[index],
            "class": "all",
        }
        for layer in range(layers):
            for head in range(heads):
                shares = {"open": 0.5, "backward": 0.5}
                if layer == last and step == STEPS[-1]:
                    shares = {"closed": 1.0}
                elif layer == last and step >= SETTLED:
                    shares = {"closed": 0.95, "mixed": 0.05}  # 0.05 from the final mix
                elif layer == last:
                    shares = {"open": 0.8, "closed": 0.2}  # 0.8 from it
                for gate in DOMINANT_NAMES:
                    rows.append(
                        {**checkpoint, "table": "heads", "layer": layer, "head": head}
                        | {"point": None, "metric": f"gate.{gate}.share"}
                        | {"value": shares.get(gate, 0.0)}
                    )
        values: list[tuple[int, str, str, float]] = [
            (-1, "layer_output", "cone.normalized_mean", 0.2)
        ]
        for layer in range(layers):
            for position, point in enumerate(STREAM_POINTS):
                value = LAST_CONE[index] * (0.8 + 0.1 * position) ** (last - layer + 1)
                if layer == last and point == "layer_output":
                    value = LAST_CONE[index]
                values.append((layer, point, "cone.normalized_mean", value))
        for layer in range(-1, layers):
            scale = 1.0 if layer == last else 0.5
            values.append((layer, "layer_output", "cls.probe_accuracy", LAST_PROBE[index] * scale))
            values.append((layer, "layer_output", "cls.silhouette", LAST_SILHOUETTE[index] * scale))
        for layer, point, metric, value in values:
            rows.append(
                {**checkpoint, "table": "layers", "layer": layer, "head": -1, "point": point}
                | {"metric": metric, "value": value}
            )
    return pd.DataFrame(rows)[list(TRAINING_COLUMNS)]


def write_fabricated_over_training(path: Path) -> Path:
    """Write an over-training directory at ``path``: the planted ``training.parquet``,
    ``training.json`` and the last checkpoint's (fabricated) results directory."""
    path.mkdir(parents=True)
    table = pa.Table.from_pandas(training_table(), preserve_index=False)
    pq.write_table(table, path / "training.parquet")
    write_fabricated_results(
        path / "checkpoints" / f"step-{STEPS[-1]}", LAYERS, HEADS, control=False
    )
    checkpoints = [
        {
            "path": f"checkpoints/step-{step}",
            "step": step,
            "epoch": step / STEPS_PER_EPOCH,
            "validation_macro_f1": MACRO_F1[index],
        }
        for index, step in enumerate(STEPS)
    ]
    record = {"format_version": 1, "model": "/models/fabricated", "checkpoints": checkpoints}
    (path / "training.json").write_text(json.dumps(record, indent=1))
    return path
