"""The report in a real browser: headless Chromium (Debian's) driven by Playwright.

Skipped when Chromium or Playwright is missing, unless ``BERTGEOM_REQUIRE_BROWSER=1`` (CI sets
it), which turns a missing browser into a failure. Never downloads a browser. Checks that the
findings start on the first screen, that the metadata is folded and last, and that the page
loads in under 2 s. Writes a full-page screenshot and the measured load time to
``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bertgeom.report.browser import browser_problem, visit
from bertgeom.report.build import SECTION_IDS, build_report_summary
from bertgeom.report.tests.fabricated import write_fabricated_results

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
