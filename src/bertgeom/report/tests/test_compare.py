"""``bertgeom report A B``: the comparison of two fabricated results directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertgeom.report.build import SECTION_IDS, ReportSummary
from bertgeom.report.compare import (
    build_comparison,
    compared_findings,
    default_output,
    side_labels,
)
from bertgeom.report.content import Table
from bertgeom.report.tests.fabricated import write_fabricated_results
from bertgeom.results.store import load_results


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> ReportSummary:
    root = tmp_path_factory.mktemp("compare")
    first = write_fabricated_results(root / "model-a")
    second = write_fabricated_results(root / "model-b", seed=3, ablation=False, control=False)
    return build_comparison(first, second)


def test_the_comparison_holds_both_sides_section_by_section(compared: ReportSummary) -> None:
    assert compared.path.name == "compare-model-b.html" and compared.problems == {}
    html = compared.path.read_text()
    positions = [html.index(f'<section id="{section_id}">') for section_id in SECTION_IDS]
    assert positions == sorted(positions)
    assert html.count('<div class="columns"') == len(SECTION_IDS)
    assert html.count("<h3>model-a</h3>") == html.count("<h3>model-b</h3>") == len(SECTION_IDS)
    # the findings of both, and a table of A, B and A's untrained control
    assert "Zeroing head 1.2 costs most" in html  # A has the ablation table
    assert "<th>finding</th><th>model-a</th><th>model-b</th><th>model-a untrained</th>" in html
    assert "No ablation.parquet" in html  # B has none
    for shared in ("cone index of both sides", "separability of both sides", "gate maps of both"):
        assert shared in html
    assert "<details>" in html and "<script" not in html and "https://" not in html
    assert html.count("<figure>") == compared.figures > 40
    assert compared.missing["findings"]  # B's missing ablation and control


def test_names_and_default_path(tmp_path: Path) -> None:
    first = load_results(write_fabricated_results(tmp_path / "x" / "results", control=False))
    second = load_results(write_fabricated_results(tmp_path / "y" / "results", control=False))
    assert side_labels(first, second) == ("x/results", "y/results")
    assert side_labels(first, first) == ("A", "B")
    assert default_output(first.path, first.path / "control") == first.path / "compare-control.html"


def test_a_model_against_its_own_control_lists_the_control_once(tmp_path: Path) -> None:
    model = load_results(write_fabricated_results(tmp_path / "results"))
    control = load_results(tmp_path / "results" / "control")
    section = compared_findings(model, control, side_labels(model, control))
    tables = [block for block in section.blocks if isinstance(block, Table)]
    assert tables[-1].columns == ["finding", "results", "control"]
    assert len(section.figures) == 2
