"""What ``analyze`` shows while it runs and when it finishes: the progress bar of its passes and
the one-line summary (``analyze``, ``demo``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from bertgeom.cli.common import console, progress_bar
from bertgeom.pipeline.options import AnalysisProgress

if TYPE_CHECKING:  # heavy imports (torch) stay out of 'bertgeom --help'
    from bertgeom.analysis import AnalysisSummary
    from bertgeom.capture.loading import LoadedModel


@contextmanager
def analysis_bar() -> Iterator[AnalysisProgress]:
    """A progress bar for an analysis: one task per pass (the ablation and control passes
    add theirs), sized once the inputs are counted (also used by ``demo``)."""
    with progress_bar() as bar:
        current = [bar.add_task("analysing", total=None)]

        def on_start(loaded: LoadedModel, expected: int | None) -> None:
            bar.update(current[0], total=expected)

        def on_stage(title: str, expected: int | None) -> None:
            current[0] = bar.add_task(title, total=expected)

        yield AnalysisProgress(lambda n: bar.advance(current[0], n), on_start, on_stage)


def print_analysis_summary(summary: AnalysisSummary) -> None:
    """One line: inputs, seconds, what was skipped or truncated, and the results path."""
    notes = []
    if summary.skipped:
        notes.append("skipped " + ", ".join(f"{n} {why}" for why, n in summary.skipped.items()))
    if summary.truncated:
        notes.append(f"{summary.truncated} truncated")
    if summary.labels_unmatched:
        notes.append(f"{summary.labels_unmatched} labels naming no input")
    console.print(
        f"{summary.inputs} inputs in {summary.seconds:.1f} s"
        + (f" ({'; '.join(notes)})" if notes else "")
        + f" -> {summary.out}",
        highlight=False,
    )
