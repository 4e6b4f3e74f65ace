"""The report in a real browser: headless Chromium (Debian's) driven by Playwright.

Skipped when Chromium or Playwright is missing, unless ``BERTGEOM_REQUIRE_BROWSER=1`` (CI sets
it), which turns a missing browser into a failure. Never downloads a browser. Checks that the
findings start on the first screen, that the metadata is folded and last, and that the page
loads in under 2 s; and the same of the reports of an over-training and an over-seeds
directory, their own section's figures and table drawn. Writes full-page screenshots and the
measured load time to ``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bertgeom.names import ReportSection
from bertgeom.report.browser import browser_problem, visit
from bertgeom.report.build import (
    OVER_SEEDS_SECTION_IDS,
    OVER_TRAINING_SECTION_IDS,
    SECTION_IDS,
    build_report_summary,
)
from bertgeom.report.tests.fabricated import write_fabricated_results
from bertgeom.report.tests.fabricated_seeds import write_fabricated_over_seeds
from bertgeom.report.tests.fabricated_training import PLANTED, write_fabricated_over_training

pytestmark = pytest.mark.browser

LOAD_LIMIT_MS = 2000

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _require_browser() -> None:
    """Skip when no browser visit is possible here (fail when the browser is required)."""
    problem = browser_problem()
    if problem:
        if os.environ.get("BERTGEOM_REQUIRE_BROWSER") == "1":
            pytest.fail(f"BERTGEOM_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The report of a results directory holding every table and array of the contract (the
    ablation table and an untrained control included)."""
    root = tmp_path_factory.mktemp("report")
    results = write_fabricated_results(root / "results", layers=3, heads=4)
    summary = build_report_summary(results, root / "report.html")
    assert summary.problems == {} and summary.missing == {}
    return summary.path, summary.size_bytes


def test_report_renders_in_chromium(report: tuple[Path, int], tmp_path: Path) -> None:
    _require_browser()
    path, size = report
    screenshot = tmp_path / "report.png"
    seen = visit(path, screenshot)

    assert seen.console_errors == [] and seen.failed_requests == []
    assert seen.outside_requests == [], "the report fetched something outside itself"
    assert seen.section_ids == list(SECTION_IDS)
    assert len(seen.headings) == len(SECTION_IDS) and all(h.strip() for h in seen.headings)
    assert seen.toc == [f"#{section}" for section in SECTION_IDS]
    assert len(seen.figures) >= 20
    assert all(f["rendered"] and f["width"] > 0 for f in seen.figures), seen.figures
    assert all(len(f["caption"]) > 20 for f in seen.figures)
    assert screenshot.stat().st_size > 10_000
    assert 0 < seen.timing["load_event_ms"] < LOAD_LIMIT_MS, seen.timing
    tops = {section["id"]: section for section in seen.sections}
    assert tops["findings"]["top"] < seen.viewport_height, (
        "the findings are not on the first screen"
    )
    assert [s["id"] for s in seen.sections if s["folded"]] == ["metadata"]
    assert seen.sections[-1]["id"] == "metadata"
    measured = {
        "report_bytes": size,
        "figures": len(seen.figures),
        "wall_s_to_load": round(seen.wall_s, 3),
        "findings_top_px": round(tops["findings"]["top"]),
        **{key: round(value, 1) for key, value in seen.timing.items()},
    }
    print("report render:", json.dumps(measured))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(screenshot, ARTIFACTS / "report.png")
    (ARTIFACTS / "report-timing.json").write_text(json.dumps(measured, indent=2))


OVER_REPORTS = {
    ReportSection.OVER_TRAINING: (write_fabricated_over_training, OVER_TRAINING_SECTION_IDS, 5),
    ReportSection.OVER_SEEDS: (write_fabricated_over_seeds, OVER_SEEDS_SECTION_IDS, 1),
}
"""Per section of its own: the fabricated directory's writer, the report's sections and the
figures of that section (``report.training_section``, ``report.seeds_section``)."""


@pytest.mark.parametrize("own", list(OVER_REPORTS))
def test_over_training_and_over_seeds_reports_render_in_chromium(
    own: ReportSection, tmp_path: Path
) -> None:
    """The report of an over-training (over-seeds) directory: the page of the last checkpoint
    (first seed) with its own section second, every figure drawn, its table of milestones
    (of every headline number) laid out with a row each, and nothing in the console."""
    _require_browser()
    write, section_ids, own_figures = OVER_REPORTS[own]
    directory = write(tmp_path / "over")
    summary = build_report_summary(directory, tmp_path / "report.html")
    assert summary.problems == {} and own not in summary.missing
    screenshot = tmp_path / "report.png"
    seen = visit(summary.path, screenshot)

    assert seen.console_errors == [] and seen.failed_requests == []
    assert seen.outside_requests == [], "the report fetched something outside itself"
    assert seen.section_ids == list(section_ids) and seen.section_ids[1] == own
    assert seen.toc == [f"#{section}" for section in section_ids]
    assert len(seen.headings) == len(section_ids) and all(h.strip() for h in seen.headings)
    assert all(f["rendered"] and f["width"] > 0 for f in seen.figures), seen.figures
    assert all(len(f["caption"]) > 20 for f in seen.figures)
    figures = [f for f in seen.figures if f["section"] == own]
    assert len(figures) == own_figures
    assert len(seen.figures) >= 20 + own_figures
    section = next(s for s in seen.sections if s["id"] == own)
    assert not section["folded"]
    if own == ReportSection.OVER_SEEDS:
        rows = len(pd.read_parquet(directory / "seeds.parquet"))
    else:
        rows = len(PLANTED)  # one milestone per planted curve
    assert [table["rows"] for table in section["tables"]] == [rows]
    assert all(table["height"] > 20 * table["rows"] for table in section["tables"])
    assert seen.sections[-1]["id"] == "metadata" and seen.sections[-1]["folded"]
    assert 0 < seen.timing["load_event_ms"] < LOAD_LIMIT_MS, seen.timing
    print(f"{own} report render:", json.dumps({"bytes": summary.size_bytes, **seen.timing}))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(screenshot, ARTIFACTS / f"report-{own}.png")
