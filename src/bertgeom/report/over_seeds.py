"""An over-seeds directory read for the report (``bertgeom analyze --over-seeds``:
``seeds.parquet``, ``seeds_values.parquet``, ``seeds.json``, ``seeds/seed-N/``), and which of
its headline numbers hold across the seeds. Everything but :func:`read_over_seeds` is a pure
function of the tables."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from bertgeom.errors import InputError
from bertgeom.model.seed_models import seed_directory
from bertgeom.report.across_seeds import CATEGORICAL, SEEDS_SCHEMA
from bertgeom.results.store import Results

SEEDS_PARQUET = "seeds.parquet"
SEEDS_VALUES_PARQUET = "seeds_values.parquet"
SEEDS_JSON = "seeds.json"
SEEDS_DIRECTORY = "seeds"
"""The names ``bertgeom.pipeline.over_seeds`` writes (a test checks they are the same)."""
AGREEMENT_FLOOR = 2 / 3
"""A number holds across seeds only where at least this share of the seeds agree."""
_SLACK = 1e-9
"""Floating-point slack of the comparisons (2 of 3 seeds agree: 0.666..., not below 2/3)."""


@dataclass
class OverSeeds:
    """An over-seeds directory read back: ``seeds.parquet``, ``seeds_values.parquet`` (empty
    when absent), ``seeds.json`` and the results directory of its first seed (which the
    report's other sections show)."""

    path: Path
    table: pd.DataFrame
    values: pd.DataFrame
    record: dict[str, Any]
    seeds: list[int]
    first: Results
    first_directory: str
    """Where ``first`` is, relative to ``path`` (``seeds/seed-N``)."""

    @property
    def first_seed(self) -> int:
        return self.seeds[0]


def is_over_seeds(path: Path) -> bool:
    """Whether ``path`` is an over-seeds directory rather than a results directory."""
    path = Path(path)
    return (
        path.is_dir()
        and not (path / "manifest.json").exists()
        and ((path / SEEDS_PARQUET).exists() or (path / SEEDS_JSON).exists())
    )


def read_over_seeds(path: Path, read_results: Callable[[Path], Results]) -> OverSeeds:
    """An over-seeds directory, with every way it can fail one line; ``read_results`` reads
    the first seed's results directory (``report.build.read_results``)."""
    path = Path(path)
    hint = "make one with bertgeom analyze --over-seeds"
    if not (path / SEEDS_PARQUET).is_file():
        raise InputError(f"{path}: an over-seeds directory without {SEEDS_PARQUET}; {hint}")
    table = _read_table(path, SEEDS_PARQUET)
    values = (
        _read_table(path, SEEDS_VALUES_PARQUET)
        if (path / SEEDS_VALUES_PARQUET).is_file()
        else pd.DataFrame(columns=["seed", "finding", "layer", "statistic", "kind", "value"])
    )
    record_path = path / SEEDS_JSON
    try:
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: {SEEDS_JSON} cannot be read ({error})") from None
    record = record if isinstance(record, dict) else {}
    absent = [column for column in SEEDS_SCHEMA.names if column not in table.columns]
    if absent:
        raise InputError(
            f"{path}: {SEEDS_PARQUET} is not a seeds table (no column {absent[0]}); {hint}"
        )
    seeds = _seeds(path, record, values)
    if not seeds:
        raise InputError(f"{path}: no seeds in {SEEDS_JSON} or {SEEDS_DIRECTORY}/; {hint}")
    results = record.get("results")
    relative = results.get(seed_directory(seeds[0])) if isinstance(results, dict) else None
    directory = str(relative or f"{SEEDS_DIRECTORY}/{seed_directory(seeds[0])}")
    first = path / directory
    if not first.is_dir():
        raise InputError(f"{path}: no results directory of the first seed ({first}); {hint}")
    return OverSeeds(path, table, values, record, seeds, read_results(first), directory)


def _read_table(path: Path, name: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path / name)
    except (OSError, ValueError, pa.ArrowException) as error:
        raise InputError(f"{path}: {name} cannot be read ({error})") from None


def _seeds(path: Path, record: dict[str, Any], values: pd.DataFrame) -> list[int]:
    """The seeds in ``seeds.json``'s order; else those of the values, else of ``seeds/``."""
    listed = record.get("seeds")
    if isinstance(listed, list) and listed and all(isinstance(s, int) for s in listed):
        return list(listed)
    if "seed" in values.columns and not values.empty:
        return sorted(int(seed) for seed in values["seed"].unique())
    found = []
    for entry in (path / SEEDS_DIRECTORY).glob("seed-*"):
        number = entry.name.removeprefix("seed-")
        if entry.is_dir() and number.isdigit():
            found.append(int(number))
    return sorted(found)


def does_not_hold(row: pd.Series) -> bool:
    """Whether a row of ``seeds.parquet`` does not hold across the seeds: fewer than
    ``AGREEMENT_FLOOR`` of them agree, or (numeric) its standard deviation exceeds |mean|.
    A number no seed has (agreement NaN) is not said to fail."""
    agreement = float(row["agreement"])
    if not math.isnan(agreement) and agreement < AGREEMENT_FLOOR - _SLACK:
        return True
    if row["kind"] == CATEGORICAL:
        return False
    std, mean = float(row["std"]), float(row["mean"])
    return not math.isnan(std) and std > abs(mean) + _SLACK


def holding(table: pd.DataFrame) -> pd.Series:
    """``row -> bool``: whether each row of ``seeds.parquet`` holds across the seeds (the
    negation of :func:`does_not_hold`)."""
    if table.empty:
        return pd.Series(dtype=bool)
    return ~table.apply(does_not_hold, axis=1).astype(bool)


def seed_curves(values: pd.DataFrame, finding: str, statistic: str) -> dict[int, pd.Series]:
    """``seed -> (layer -> value)`` of one per-layer finding and statistic of
    ``seeds_values.parquet`` (-1: the embeddings), by seed."""
    if values.empty:
        return {}
    rows = values[(values["finding"] == finding) & (values["statistic"] == statistic)]
    curves: dict[int, pd.Series] = {}
    for seed in sorted(int(seed) for seed in rows["seed"].unique()):
        group = rows[rows["seed"] == seed]
        curve = group.set_index("layer")["value"].astype(float).sort_index()
        if curve.notna().any():
            curves[seed] = curve
    return curves
