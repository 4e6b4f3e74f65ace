"""Size and render time of a report in headless Chromium (the issue's bounds: under 15 MB and
under 2 s for the demo's report).

    .venv/bin/python benchmarks/report_render.py demo-output/report.html [--repeats 5]

Each visit is a fresh browser; the time is the page's ``loadEventEnd`` (navigation start to the
end of the load event, every embedded figure decoded), the median over the visits.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bertgeom.report.browser import browser_problem, visit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path, nargs="?", default=Path("demo-output/report.html"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--screenshot", type=Path)
    arguments = parser.parse_args()
    problem = browser_problem()
    if problem:
        raise SystemExit(problem)
    visits = [visit(arguments.report, arguments.screenshot) for _ in range(arguments.repeats)]
    loads = [v.timing["load_event_ms"] for v in visits]
    last = visits[-1]
    size = arguments.report.stat().st_size
    print(f"{arguments.report}: {size / 1e6:.2f} MB (bound 15 MB), {len(last.figures)} figures")
    print(
        f"load event: median {statistics.median(loads):.0f} ms over {len(loads)} visits "
        f"({', '.join(f'{x:.0f}' for x in loads)}; bound 2000 ms)"
    )
    print(
        f"console errors {len(last.console_errors)}, outside requests "
        f"{len(last.outside_requests)}, sections {last.section_ids}"
    )


if __name__ == "__main__":
    main()
