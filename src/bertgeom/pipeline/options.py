"""What a demo run takes and tells: its options, the listener that hears its progress, the
timer of its steps and its summary (light: no torch, so the command line can import it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from bertgeom.analysis import AnalysisSummary, ProgressCallback
    from bertgeom.analysis.over_training import OverTrainingSummary
    from bertgeom.analysis.run import StageCallback, StartCallback
    from bertgeom.model.train import ProgressCallback as TrainingProgress

Announce = Callable[[str], None]

DEMO_ABLATION = ("zero", "mean", "keys")
"""The demo ablates every head and block (zeroed, mean-replaced) and masks mutation keys."""

DEMO_CHECKPOINTS = "0,16,last"
"""The demo keeps the initial weights, one early step and the end of training, and analyses
them over training: three checkpoints keep the added time near that of three analyses without
ablation (about 11 s each on the test split, 2 cores), where the default schedule's 24 would
add minutes."""

DEMO_LINEAGE_WORKERS = 3
"""The demo trains its three leave-lineage-out folds at once, each in its own process (on 2
cores, three single-threaded folds finish sooner than two at once and then the third)."""


@dataclass(frozen=True)
class DemoOptions:
    """The demo's choices: the model's preset and epochs (None: the preset's), the seed of the
    data and the training, whether (and how) lineages are left out, with the tiny preset, and
    the checkpoints kept and analysed over training (``checkpoints``, a schedule of
    ``model.training_checkpoints``; None: neither)."""

    preset: str = "small"
    epochs: int | None = None
    seed: int = 42
    lineages: bool = True
    lineage_epochs: int = 10
    lineage_workers: int = DEMO_LINEAGE_WORKERS
    checkpoints: str | None = DEMO_CHECKPOINTS


@dataclass(frozen=True)
class AnalysisProgress:
    """The callbacks of :func:`bertgeom.analysis.analyze`: ``progress(n)`` after each batch,
    ``on_start(loaded, expected)`` once the model and inputs are open, ``on_stage(title,
    expected)`` before the ablation and the control passes."""

    progress: ProgressCallback | None = None
    on_start: StartCallback | None = None
    on_stage: StageCallback | None = None


class DemoListener:
    """What a demo run tells its caller, in the order it happens. This one hears nothing; the
    command line's draws progress bars and prints (``bertgeom.cli.demo``).

    The context managers are entered around a step's long work: what they yield (progress
    callbacks, or None) is handed to that work."""

    def step(self, number: int, count: int, title: str) -> None:
        """Step ``number`` of ``count`` starts."""

    def step_done(self, name: str, seconds: float) -> None:
        """The step called ``name`` took ``seconds``."""

    @contextmanager
    def building_dataset(self) -> Iterator[None]:
        """Around the alignment of the embedded genomes and the drawing of synthetic spikes."""
        yield

    @contextmanager
    def training(self) -> Iterator[TrainingProgress | None]:
        """Around training; yields ``progress(stage, done, total)``."""
        yield None

    def evaluated(self, metrics: dict[str, Any], out: Path) -> None:
        """The metrics written to ``out`` (metrics.json, the confusion matrix)."""

    @contextmanager
    def leaving_lineages_out(self) -> Iterator[tuple[TrainingProgress | None, Announce | None]]:
        """Around leave-lineage-out; yields ``progress(stage, done, total)`` and
        ``announce(line)``."""
        yield None, None

    def lineages_left_out(self, table: pd.DataFrame, seconds: float, out: Path) -> None:
        """Leave-lineage-out's table, its time, and the directory it was written to."""

    @contextmanager
    def analysing(self) -> Iterator[AnalysisProgress]:
        """Around the analysis (with its ablation and control passes)."""
        yield AnalysisProgress()

    def analysed(self, summary: AnalysisSummary) -> None:
        """What the analysis read and wrote."""

    @contextmanager
    def analysing_over_training(self) -> Iterator[AnalysisProgress]:
        """Around the analysis of the checkpoints (``on_start`` once per checkpoint)."""
        yield AnalysisProgress()

    def analysed_over_training(self, summary: OverTrainingSummary) -> None:
        """What the analysis over training read and wrote."""

    @contextmanager
    def drawing_report(self) -> Iterator[None]:
        """Around the drawing of the report's figures."""
        yield


class StepTimer:
    """Numbered steps of a long run, each timed and told to a listener (``step`` when it
    starts, ``step_done`` when it ends); ``seconds`` holds the times by name."""

    def __init__(self, count: int, listener: DemoListener) -> None:
        self.count = count
        self.listener = listener
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, title: str, name: str) -> Iterator[None]:
        self.listener.step(len(self.seconds) + 1, self.count, title)
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started
        self.listener.step_done(name, self.seconds[name])


@dataclass(frozen=True)
class DemoSummary:
    """What a demo run made: the report's path and each step's seconds, by name."""

    page: Path
    seconds: dict[str, float]

    def total(self) -> float:
        """Seconds of all the steps."""
        return sum(self.seconds.values())

    def timings(self) -> str:
        """Each step's seconds in one line: ``data 12 s, training 95 s, ...``."""
        return ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.seconds.items())
