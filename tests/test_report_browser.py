"""The report in a real browser: headless Chromium (Debian's) driven by Playwright.

Skipped when Chromium or Playwright is missing, unless ``BERTGEOM_REQUIRE_BROWSER=1`` (CI sets
it), which turns a missing browser into a failure. Never downloads a browser. Writes a
full-page screenshot and the measured load time to ``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from bertgeom.report.build import SECTION_IDS, build_report_summary
from bertgeom.report.tests.fabricated import write_fabricated_results

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

FIGURES_JS = """() => Array.from(document.querySelectorAll('figure')).map(figure => {
  const image = figure.querySelector('img');
  const svg = figure.querySelector('svg');
  const caption = figure.querySelector('figcaption');
  return {
    rendered: image ? (image.complete && image.naturalWidth > 0) : !!svg,
    width: image ? image.naturalWidth : (svg ? svg.getBoundingClientRect().width : 0),
    caption: caption ? caption.textContent.trim() : '',
  };
})"""
TIMING_JS = """() => {
  const entry = performance.getEntriesByType('navigation')[0];
  return {load_event_ms: entry.loadEventEnd, dom_content_loaded_ms: entry.domContentLoadedEventEnd};
}"""


def _require_browser() -> Any:
    """Playwright's ``sync_playwright``, or skip (fail when the browser is required)."""
    required = os.environ.get("BERTGEOM_REQUIRE_BROWSER") == "1"
    problem = None
    if not CHROMIUM.is_file():
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = problem or "playwright is not installed (pip install -e '.[dev]')"
    if problem:
        if required:
            pytest.fail(f"BERTGEOM_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    return sync_playwright


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The report of a results directory holding every table and array of the contract."""
    root = tmp_path_factory.mktemp("report")
    results = write_fabricated_results(root / "results", layers=3, heads=4)
    summary = build_report_summary(results, root / "report.html")
    assert summary.problems == {} and summary.missing == {}
    return summary.path, summary.size_bytes


def test_report_renders_in_chromium(report: tuple[Path, int], tmp_path: Path) -> None:
    sync_playwright = _require_browser()
    path, size = report
    console_errors: list[str] = []
    failed: list[str] = []
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console", lambda m: console_errors.append(m.text) if m.type == "error" else None
            )
            page.on("pageerror", lambda error: console_errors.append(str(error)))
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.on("request", lambda request: requested.append(request.url))
            started = time.perf_counter()
            page.goto(path.as_uri(), wait_until="load")
            wall_s = time.perf_counter() - started
            timing = page.evaluate(TIMING_JS)
            section_ids = page.eval_on_selector_all("section[id]", "s => s.map(e => e.id)")
            headings = page.eval_on_selector_all("section > h2", "h => h.map(e => e.textContent)")
            toc = page.eval_on_selector_all("nav.toc a", "a => a.map(e => e.getAttribute('href'))")
            rendered = page.evaluate(FIGURES_JS)
            screenshot = tmp_path / "report.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()

    assert console_errors == [] and failed == []
    outside = [url for url in requested if not url.startswith(("file://", "data:"))]
    assert outside == [], "the report fetched something outside itself"
    assert section_ids == list(SECTION_IDS)
    assert len(headings) == len(SECTION_IDS) and all(h.strip() for h in headings)
    assert toc == [f"#{section}" for section in SECTION_IDS]
    assert len(rendered) >= 20
    assert all(figure["rendered"] and figure["width"] > 0 for figure in rendered), rendered
    assert all(len(figure["caption"]) > 20 for figure in rendered)
    assert screenshot.stat().st_size > 10_000
    measured = {
        "report_bytes": size,
        "figures": len(rendered),
        "wall_s_to_load": round(wall_s, 3),
        **{key: round(value, 1) for key, value in timing.items()},
    }
    print("report render:", json.dumps(measured))
    assert timing["load_event_ms"] > 0
    (tmp_path / "report-timing.json").write_text(json.dumps(measured, indent=2))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(screenshot, ARTIFACTS / "report.png")
    shutil.copyfile(tmp_path / "report-timing.json", ARTIFACTS / "report-timing.json")
