"""The analysis across seeds: ``bertgeom analyze --model DIR --over-seeds``.

``DIR`` holds the models of one recipe trained under several seeds (``bertgeom train --seeds``,
``bertgeom.model.seed_models``). The same analysis (the same inputs, options and measurement
parameters, as ``--over-training`` passes them on) runs on each model, in the order of
``DIR/seeds.json``, inside one executor session, and writes::

    OUT/
      seeds.parquet         one row per headline number: its mean, spread and agreement
                            across the seeds (bertgeom.report.across_seeds)
      seeds_values.parquet  seed, then the headline numbers of that seed's results
      seeds.json            the models, the seeds, the timings
      seeds/seed-N/         the results directory of the model of seed N (its control too)

The headline numbers are read from each seed's results directory as the report's findings
read them (``bertgeom.report.findings``); they compare layers and ranks, never head ids
(head 3 of one seed is not head 3 of another). It lives here, above both ``analysis`` and
``report``, because it needs both. The directory appears whole or not at all.
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
from bertgeom.model.seed_models import SeedModel, list_seed_models, seed_directory
from bertgeom.outputs import OVER_SEEDS, check_output_directory
from bertgeom.report.across_seeds import SEEDS_SCHEMA, across_seeds, headline_values
from bertgeom.report.findings import summarize
from bertgeom.results.store import load_results

SEEDS_DIRECTORY = "seeds"
"""Where the results of each seed are, inside the output."""
SEEDS_TABLE = "seeds"
"""``seeds.parquet``: the headline numbers across the seeds."""
SEEDS_VALUES_TABLE = "seeds_values"
"""``seeds_values.parquet``: the headline numbers of each seed."""
SEEDS_RESULTS_MANIFEST = "seeds.json"

SeedCallback = Callable[[SeedModel, int, int], None]
"""``on_seed(model, index, count)``: before the analysis of each seed's model."""


@dataclass
class OverSeedsSummary:
    """What the command prints: the seeds, inputs per seed, seconds, the path."""

    out: Path
    seeds: list[int] = field(default_factory=list)
    inputs: int = 0
    seconds: float = 0.0


def seed_values(results_directory: Path) -> pd.DataFrame:
    """The headline numbers of one results directory (with its control's, when it has one)."""
    results = load_results(results_directory)
    path = results.control_path
    control = summarize(load_results(path), "control") if path is not None else None
    return headline_values(summarize(results, "trained"), control)


def analyze_over_seeds(
    models: Path,
    spec: InputSpec,
    out: Path,
    options: AnalysisOptions | None = None,
    progress: ProgressCallback | None = None,
    on_start: StartCallback | None = None,
    on_stage: StageCallback | None = None,
    on_seed: SeedCallback | None = None,
    *,
    overwrite: bool = False,
    executor: Executor | None = None,
    measurements: Mapping[str, Any] | None = None,
) -> OverSeedsSummary:
    """Analyse every model of ``models`` (a directory of ``train --seeds``) on ``spec``'s
    inputs into ``out`` (module docstring). The callbacks are those of
    :func:`bertgeom.analysis.analyze`, for each seed's analysis in turn; the parameters of the
    measurements are worked out on the first seed's model and kept for the others."""
    options = options or AnalysisOptions()
    started = time.perf_counter()
    directory = Path(models)
    seed_models = list_seed_models(directory)
    check_output_directory(
        out, OVER_SEEDS, inputs=[directory, spec.path, spec.labels], overwrite=overwrite
    )
    if executor is None:
        executor = executor_for(options)
    summary = OverSeedsSummary(Path(out))
    timings: dict[str, float] = {}
    values = []
    with atomic_directory(Path(out)) as staging, executor.session():

        def jobs() -> Iterator[tuple[Path, Path]]:
            for index, model in enumerate(seed_models):
                if on_seed is not None:
                    on_seed(model, index, len(seed_models))
                yield model.directory, staging / SEEDS_DIRECTORY / seed_directory(model.seed)

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
        for model, one in zip(seed_models, analyses, strict=True):
            results = staging / SEEDS_DIRECTORY / seed_directory(model.seed)
            values.append(seed_values(results).assign(seed=model.seed))
            summary.seeds.append(model.seed)
            summary.inputs = one.inputs
            timings[seed_directory(model.seed)] = round(one.seconds, 4)
        every = pd.concat(values, ignore_index=True)
        every = every[["seed", *every.columns.drop("seed")]]
        every.to_parquet(staging / f"{SEEDS_VALUES_TABLE}.parquet", index=False)
        table = pa.Table.from_pandas(across_seeds(every), SEEDS_SCHEMA, preserve_index=False)
        pq.write_table(table, staging / f"{SEEDS_TABLE}.parquet")
        summary.seconds = time.perf_counter() - started
        record = {
            "format_version": 1,
            "models": str(directory),
            "seeds": summary.seeds,
            "results": {
                seed_directory(seed): f"{SEEDS_DIRECTORY}/{seed_directory(seed)}"
                for seed in summary.seeds
            },
            "comparison": "layers and ranks; head ids are not compared across seeds",
            "timings": {"per_seed_s": timings, "total_s": round(summary.seconds, 4)},
        }
        (staging / SEEDS_RESULTS_MANIFEST).write_text(json.dumps(record, indent=1))
    return summary
