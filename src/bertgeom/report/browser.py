"""Open a report in a real headless Chromium (Debian's ``chromium``) through Playwright, for the
browser test and ``benchmarks/report_render.py``. Playwright is a development dependency
(``pip install -e '.[dev]'``); it is imported only here, and no browser is ever downloaded."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT_HEIGHT = 900
"""The first screen: a 1280 x 900 window."""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # without these, Chromium tries (and fails) to reach Google's services at every start
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

FIGURES_JS = """() => Array.from(document.querySelectorAll('figure')).map(figure => {
  const image = figure.querySelector('img');
  const svg = figure.querySelector('svg');
  const caption = figure.querySelector('figcaption');
  const section = figure.closest('section[id]');
  return {
    section: section ? section.id : null,
    rendered: image ? (image.complete && image.naturalWidth > 0) : !!svg,
    width: image ? image.naturalWidth : (svg ? svg.getBoundingClientRect().width : 0),
    caption: caption ? caption.textContent.trim() : '',
  };
})"""
SECTIONS_JS = """() => Array.from(document.querySelectorAll('section[id]')).map(section => ({
  id: section.id,
  top: section.getBoundingClientRect().top + window.scrollY,
  folded: !!section.querySelector(':scope > details:not([open])'),
  tables: Array.from(section.querySelectorAll('table')).map(table => ({
    rows: table.querySelectorAll('tbody tr').length,
    height: table.getBoundingClientRect().height,
  })),
}))"""
TIMING_JS = """() => {
  const entry = performance.getEntriesByType('navigation')[0];
  return {load_event_ms: entry.loadEventEnd, dom_content_loaded_ms: entry.domContentLoadedEventEnd};
}"""


@dataclass
class PageVisit:
    """What a visit saw: console errors, failed and outside requests, the section ids, headings
    and table-of-contents links, each figure's rendering, where each section starts, and the
    load timings (ms)."""

    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    section_ids: list[str] = field(default_factory=list)
    headings: list[str] = field(default_factory=list)
    toc: list[str] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)
    sections: list[dict[str, Any]] = field(default_factory=list)
    """Per section: ``id``, ``top`` (CSS pixels from the top of the page), ``folded`` (a
    closed ``<details>``) and ``tables``, each table's body ``rows`` and rendered ``height``
    (CSS pixels; 0 when folded). Each of ``figures`` names its ``section``."""
    timing: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    viewport_height: int = 0

    @property
    def outside_requests(self) -> list[str]:
        """Requests for anything but the file itself and its data: URLs."""
        return [url for url in self.requests if not url.startswith(("file://", "data:"))]


def browser_problem() -> str | None:
    """Why a browser visit is impossible here, or None."""
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


def visit(path: Path, screenshot: Path | None = None) -> PageVisit:
    """Load ``path`` in headless Chromium, record what happened, optionally save a full-page
    screenshot."""
    from playwright.sync_api import sync_playwright

    seen = PageVisit()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": VIEWPORT_HEIGHT})
            seen.viewport_height = VIEWPORT_HEIGHT
            page.on(
                "console",
                lambda m: seen.console_errors.append(m.text) if m.type == "error" else None,
            )
            page.on("pageerror", lambda error: seen.console_errors.append(str(error)))
            page.on("requestfailed", lambda request: seen.failed_requests.append(request.url))
            page.on("request", lambda request: seen.requests.append(request.url))
            started = time.perf_counter()
            page.goto(Path(path).resolve().as_uri(), wait_until="load")
            seen.wall_s = time.perf_counter() - started
            seen.timing = page.evaluate(TIMING_JS)
            seen.section_ids = page.eval_on_selector_all("section[id]", "s => s.map(e => e.id)")
            seen.headings = page.eval_on_selector_all(
                "section > h2, section > details > summary > h2", "h => h.map(e => e.textContent)"
            )
            seen.toc = page.eval_on_selector_all(
                "nav.toc a", "a => a.map(e => e.getAttribute('href'))"
            )
            seen.figures = page.evaluate(FIGURES_JS)
            seen.sections = page.evaluate(SECTIONS_JS)
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return seen
