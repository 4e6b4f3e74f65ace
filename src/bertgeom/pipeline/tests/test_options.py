"""The demo's contract with its caller: steps told in order and timed, a listener that hears
nothing by default, and a light import (the command line imports it for ``--help``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bertgeom.pipeline.options import AnalysisProgress, DemoListener, DemoSummary, StepTimer


class _Recorder(DemoListener):
    def __init__(self) -> None:
        self.heard: list[tuple[object, ...]] = []

    def step(self, number: int, count: int, title: str) -> None:
        self.heard.append(("step", number, count, title))

    def step_done(self, name: str, seconds: float) -> None:
        self.heard.append(("done", name))


def test_steps_are_numbered_told_and_timed() -> None:
    listener = _Recorder()
    steps = StepTimer(2, listener)
    with steps("preparing", "data"):
        pass
    with steps("training the tiny preset", "training"):
        pass
    assert listener.heard == [
        ("step", 1, 2, "preparing"),
        ("done", "data"),
        ("step", 2, 2, "training the tiny preset"),
        ("done", "training"),
    ]
    assert list(steps.seconds) == ["data", "training"]
    assert all(seconds >= 0 for seconds in steps.seconds.values())


def test_summary_totals_and_lists_the_steps() -> None:
    summary = DemoSummary(Path("report.html"), {"data": 12.4, "training": 95.6})
    assert summary.total() == 108.0
    assert summary.timings() == "data 12 s, training 96 s"


def test_the_default_listener_hands_no_callbacks() -> None:
    listener = DemoListener()
    with listener.training() as progress, listener.leaving_lineages_out() as lineages:
        assert progress is None and lineages == (None, None)
    with listener.analysing() as callbacks:
        assert callbacks == AnalysisProgress()


def test_the_command_line_imports_neither_torch_nor_the_pipeline_steps() -> None:
    heavy = {"torch", "bertgeom.pipeline.steps", "bertgeom.pipeline.demo"}
    code = f"import sys, bertgeom.cli.main; print(sorted(set(sys.modules) & {heavy!r}))"
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip() == "[]"
