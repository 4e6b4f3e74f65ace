"""The names of ``bertgeom.names`` are the names the code writes and the report draws: every
``Metric`` (and every name of the gate and spike-domain families) is in the metric column of
the stored reference results, the ``AblationMetric`` names are exactly the metric column of its
``ablation.parquet``, and every ``ReportSection`` is a section of a built report (the
over-training section: of an over-training directory's report; the over-seeds section: of an
over-seeds directory's)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from analysis_reference import REFERENCE

from bertgeom.genomics.reference import SPIKE_DOMAIN_SLUGS
from bertgeom.measures.gates import DOMINANT_NAMES, GATE_NAMES
from bertgeom.names import (
    GATE_SHARE_PATTERN,
    SPIKE_DOMAIN_ENRICHMENT_PATTERN,
    AblationMetric,
    Metric,
    ReportSection,
    Table,
    gate_score_mean,
    gate_share,
    spike_domain,
)
from bertgeom.report.build import build_report_summary, draw_sections, render_html
from bertgeom.report.tests.fabricated import write_fabricated_results
from bertgeom.report.tests.fabricated_seeds import write_fabricated_over_seeds
from bertgeom.report.tests.fabricated_training import write_fabricated_over_training
from bertgeom.results.store import load_results


@pytest.fixture(scope="module")
def stored_metrics() -> set[str]:
    """The metric names of every ``heads`` and ``layers`` table of the stored reference (the
    text case, the spike classifier and its control)."""
    tables = [
        path
        for table in (Table.HEADS, Table.LAYERS)
        for path in REFERENCE.rglob(f"{table}.parquet")
    ]
    assert len(tables) == 6, tables  # text, spike and spike/control, two tables each
    return {str(name) for path in tables for name in pd.read_parquet(path)["metric"].unique()}


def test_every_metric_is_written_by_analyze(stored_metrics: set[str]) -> None:
    missing = sorted(metric.value for metric in Metric if metric not in stored_metrics)
    assert missing == [], f"Metric names no stored reference holds: {missing}"


def test_the_metric_families_are_the_names_written(stored_metrics: set[str]) -> None:
    shares = {gate_share(gate) for gate in DOMINANT_NAMES}
    scores = {gate_score_mean(gate) for gate in GATE_NAMES}
    slugs = [*SPIKE_DOMAIN_SLUGS.values(), "other"]
    domains = {spike_domain(slug, s) for slug in slugs for s in ("share", "enrichment")}
    assert shares | scores | domains <= stored_metrics
    assert {m for m in stored_metrics if re.match(GATE_SHARE_PATTERN, m)} == shares
    enrichments = {m for m in stored_metrics if re.match(SPIKE_DOMAIN_ENRICHMENT_PATTERN, m)}
    assert enrichments == {spike_domain(slug, "enrichment") for slug in slugs}


def test_the_ablation_metrics_are_the_names_written() -> None:
    # the stored reference's ablation (spike: zero, mean, keys); the control has none
    tables = list(REFERENCE.rglob(f"{Table.ABLATION}.parquet"))
    assert len(tables) == 1, tables
    written = {str(name) for name in pd.read_parquet(tables[0])["metric"].unique()}
    assert written == {metric.value for metric in AblationMetric}


def test_every_report_section_is_drawn(tmp_path: Path) -> None:
    # a results directory's report: every section but the over-training and over-seeds ones
    results = load_results(write_fabricated_results(tmp_path / "results", control=False))
    sections, problems = draw_sections(results)
    assert problems == {}
    over = (ReportSection.OVER_TRAINING, ReportSection.OVER_SEEDS)
    single = [s.value for s in ReportSection if s not in over]
    assert [section.id for section in sections] == single
    html = render_html(results, sections)
    assert re.findall(r'<section id="([^"]+)">', html) == single
    # an over-training directory's report: every section but the over-seeds one, in order
    summary = build_report_summary(write_fabricated_over_training(tmp_path / "over"))
    assert summary.problems == {}
    html = summary.path.read_text()
    training = [s.value for s in ReportSection if s != ReportSection.OVER_SEEDS]
    assert re.findall(r'<section id="([^"]+)">', html) == training
    # an over-seeds directory's report: every section but the over-training one, in order
    summary = build_report_summary(write_fabricated_over_seeds(tmp_path / "seeds"))
    assert summary.problems == {}
    html = summary.path.read_text()
    seeds = [s.value for s in ReportSection if s != ReportSection.OVER_TRAINING]
    assert re.findall(r'<section id="([^"]+)">', html) == seeds
    # every section is in one of the three
    assert set(single) | set(training) | set(seeds) == {s.value for s in ReportSection}
