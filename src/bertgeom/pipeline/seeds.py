"""One training recipe under several seeds: ``bertgeom train --seeds 0,1,2 --out DIR``.

Each seed's model is trained exactly as ``bertgeom train --seed N`` would train it (the same
options but the seed, the same dataset for that seed; the checkpoints too when asked) into
``DIR/seed-N/``, and ``DIR/seeds.json`` records the seeds, the recipe and each model's
training summary (``bertgeom.model.seed_models``). The seeds are trained one after the other;
the directory appears whole or not at all (``bertgeom.atomic``), so a failed or interrupted
seed leaves nothing behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from bertgeom.atomic import atomic_directory
from bertgeom.model.seed_models import SEEDS_MANIFEST, seed_directory
from bertgeom.model.train import ProgressCallback, TrainingOptions, TrainingReport
from bertgeom.pipeline.steps import train_and_record

SeedCallback = Callable[[int, int, int], None]
"""``on_seed(seed, index, count)``: before each seed's training."""


@dataclass
class SeedsTraining:
    """What ``train --seeds`` did: each seed's training report, the seconds, the path."""

    out: Path
    reports: dict[int, TrainingReport] = field(default_factory=dict)
    seconds: float = 0.0


def model_summary(seed: int, report: TrainingReport) -> dict[str, Any]:
    """One model's line in ``seeds.json``: its seed and directory, best epoch, its validation
    macro-F1 there, the unassigned threshold, the checkpoints kept and the seconds."""
    best = report.history[report.best_epoch - 1] if report.best_epoch else {}
    return {
        "seed": seed,
        "path": seed_directory(seed),
        "best_epoch": report.best_epoch,
        "validation_macro_f1": best.get("validation_macro_f1"),
        "unassigned_threshold": report.unassigned_threshold,
        "checkpoints": len(report.checkpoints),
        "seconds": round(report.seconds, 4),
    }


def train_over_seeds(
    seeds: Sequence[int],
    out: Path,
    options: TrainingOptions,
    dataset_for: Callable[[int], pd.DataFrame],
    progress: ProgressCallback | None = None,
    on_seed: SeedCallback | None = None,
) -> SeedsTraining:
    """Train ``options`` once per seed of ``seeds`` into ``out/seed-N`` (module docstring);
    ``dataset_for(seed)`` gives the dataset the seed trains on (one dataset directory for all,
    or the embedded data split with that seed, as ``train --seed N`` does)."""
    started = time.perf_counter()
    summary = SeedsTraining(Path(out))
    with atomic_directory(Path(out)) as staging:
        for index, seed in enumerate(seeds):
            if on_seed is not None:
                on_seed(seed, index, len(seeds))
            summary.reports[seed] = train_and_record(
                dataset_for(seed),
                staging / seed_directory(seed),
                replace(options, seed=seed),
                progress,
            )
        summary.seconds = time.perf_counter() - started
        recipe = {key: value for key, value in options.__dict__.items() if key != "seed"}
        record = {
            "format_version": 1,
            "seeds": list(seeds),
            "options": recipe,
            "models": [model_summary(seed, report) for seed, report in summary.reports.items()],
            "seconds": round(summary.seconds, 4),
        }
        (staging / SEEDS_MANIFEST).write_text(json.dumps(record, indent=1, default=str))
    return summary
