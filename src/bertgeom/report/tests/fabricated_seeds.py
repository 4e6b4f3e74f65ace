"""A fabricated over-seeds directory (what ``analyze --over-seeds`` writes): three seeds'
fabricated results directories (``fabricated.write_fabricated_results``, each with its
control), their headline numbers with some planted to hold or not, ``seeds.parquet``,
``seeds_values.parquet`` and ``seeds.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bertgeom.pipeline.over_seeds import seed_values
from bertgeom.report.across_seeds import SEEDS_SCHEMA, across_seeds
from bertgeom.report.tests.fabricated import write_fabricated_results

SEEDS = (0, 1, 2)
Key = tuple[str, int, str]
NOT_HOLDING: dict[Key, tuple[float, ...]] = {
    # 2 of 3 share the sign of the mean (-0.05), but the std (0.31) exceeds |mean|
    ("cone_index", 0, "cone.normalized_mean"): (0.3, -0.2, -0.25),
    # each seed another costliest layer ("never" included): 1/3 agree
    ("ablation.costliest_layer", -1, "zero"): (0.0, 1.0, float("nan")),
}
"""Planted numbers that do not hold across the seeds, each seed's value."""
HOLDING: dict[Key, tuple[float, ...]] = {
    ("key_masking.excess", -1, "true_log_probability"): (0.55, 0.5, 0.6),
    # exactly 2 of 3 agree: not below 2/3
    ("ablation.costliest_head_layer", -1, "zero"): (1.0, 1.0, 0.0),
}
"""Planted numbers that hold across the seeds."""


def fabricated_values(root: Path) -> pd.DataFrame:
    """The headline numbers of the seeds' results directories under ``root/seeds/``, the
    planted ones replaced."""
    frames = []
    for seed in SEEDS:
        path = root / "seeds" / f"seed-{seed}"
        frames.append(seed_values(path).assign(seed=seed))
    values = pd.concat(frames, ignore_index=True)
    for (finding, layer, statistic), numbers in {**NOT_HOLDING, **HOLDING}.items():
        for seed, number in zip(SEEDS, numbers, strict=True):
            rows = (
                (values["finding"] == finding)
                & (values["layer"] == layer)
                & (values["statistic"] == statistic)
                & (values["seed"] == seed)
            )
            assert rows.sum() == 1, (finding, layer, statistic, seed)
            values.loc[rows, "value"] = number
    return values[["seed", *values.columns.drop("seed")]]


def write_fabricated_over_seeds(path: Path) -> Path:
    """Write an over-seeds directory at ``path``: three fabricated seeds' results directories,
    the planted ``seeds_values.parquet`` and its ``seeds.parquet``, and ``seeds.json``."""
    path.mkdir(parents=True)
    for seed in SEEDS:
        write_fabricated_results(path / "seeds" / f"seed-{seed}", seed=seed)
    values = fabricated_values(path)
    values.to_parquet(path / "seeds_values.parquet", index=False)
    table = pa.Table.from_pandas(across_seeds(values), SEEDS_SCHEMA, preserve_index=False)
    pq.write_table(table, path / "seeds.parquet")
    record = {
        "format_version": 1,
        "models": "/models/fabricated-seeds",
        "seeds": list(SEEDS),
        "results": {f"seed-{seed}": f"seeds/seed-{seed}" for seed in SEEDS},
        "comparison": "layers and ranks; head ids are not compared across seeds",
    }
    (path / "seeds.json").write_text(json.dumps(record, indent=1))
    return path
