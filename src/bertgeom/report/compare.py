"""``bertgeom report A B``: two results directories (two models, or a model and its untrained
control) compared section by section in one self-contained HTML file.

The findings of both come first, with one table and shared figures of both (and of their
controls); then every section of the single report, A and B side by side, preceded where it
means something by one figure of both: the token cone index per layer, the [CLS] separability
per layer, and B's gate map with the heads whose dominant gate differs from A's hatched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from bertgeom.names import STREAM_POINTS, Metric, ReportSection
from bertgeom.report import figures
from bertgeom.report.build import (
    SECTION_IDS,
    SECTIONS,
    ReportSummary,
    draw_section,
    output_path,
    read_results,
    render_page,
    subtitle,
    write_page,
)
from bertgeom.report.common import layer_rows
from bertgeom.report.content import Block, Columns, Figure, Section
from bertgeom.report.findings import Summary, load_control, summarize
from bertgeom.report.findings_blocks import SUMMARY_COLORS
from bertgeom.report.findings_section import missing_lines, side_by_side_blocks, summary_blocks
from bertgeom.report.global_sections import CLS_LAYER_AXIS, SEPARABILITY_METRICS
from bertgeom.results.store import Results

COMPARED_IDS = tuple(
    section_id for section_id in SECTION_IDS if section_id != ReportSection.FINDINGS
)


def default_output(a_dir: Path, b_dir: Path) -> Path:
    """``A/compare-<B's folder name>.html``."""
    return Path(a_dir) / f"compare-{Path(b_dir).resolve().name}.html"


def build_comparison(
    a_dir: Path,
    b_dir: Path,
    out_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    overwrite: bool = False,
) -> ReportSummary:
    """Write the comparison of ``a_dir`` and ``b_dir`` to ``out_path`` (default
    :func:`default_output`) atomically; ``progress(section_id)`` is called before each
    section."""
    out = output_path(out_path, default_output(a_dir, b_dir), overwrite, [Path(a_dir), Path(b_dir)])
    a, b = read_results(a_dir), read_results(b_dir)
    labels = side_labels(a, b)
    sections, problems = compare_sections(a, b, labels, progress)
    html = render_page(
        f"bertgeom comparison: {labels[0]} and {labels[1]}",
        f"{labels[0]}: {subtitle(a)}. {labels[1]}: {subtitle(b)}.",
        sections,
        f"{a.path.name} and {b.path.name}",
    )
    return write_page(out, html, sections, problems)


def side_labels(a: Results, b: Results) -> tuple[str, str]:
    """How the two sides are named: their folder names, with their parents when those are
    the same, "A" and "B" as a last resort."""
    first, second = a.path.resolve(), b.path.resolve()
    for depth in (1, 2):
        names = ("/".join(first.parts[-depth:]), "/".join(second.parts[-depth:]))
        if names[0] != names[1]:
            return names
    return "A", "B"


def compare_sections(
    a: Results,
    b: Results,
    labels: tuple[str, str],
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Section], dict[str, str]]:
    """The compared findings, then each section of the single report for both sides."""
    if progress is not None:
        progress(ReportSection.FINDINGS)
    sections = [compared_findings(a, b, labels)]
    problems: dict[str, str] = {}
    for function, section_id in zip(SECTIONS, SECTION_IDS, strict=True):
        if section_id == ReportSection.FINDINGS:
            continue
        if progress is not None:
            progress(section_id)
        drawn = []
        for results, label in zip((a, b), labels, strict=True):
            section, problem = draw_section(function, section_id, results)
            if problem is not None:
                problems[f"{section_id} ({label})"] = problem
            drawn.append(section)
        blocks: list[Block] = [*shared_figures(section_id, a, b, labels)]
        blocks.append(Columns([(label, s.blocks) for label, s in zip(labels, drawn, strict=True)]))
        sections.append(Section(section_id, drawn[0].title, blocks, folded=drawn[0].folded))
    return sections, problems


def compared_findings(a: Results, b: Results, labels: tuple[str, str]) -> Section:
    """Each side's findings (sentences, costliest heads, missing lines) in two columns, then
    one table and shared figures of both sides and of their controls."""
    section = Section(ReportSection.FINDINGS, "Findings")
    columns = []
    summaries: list[Summary] = []
    controls: list[Summary] = []
    sides = {a.path.resolve(), b.path.resolve()}
    for results, label in zip((a, b), labels, strict=True):
        summary = summarize(results, label)
        control_results, problem = load_control(results)
        control = None
        if control_results is not None:
            control = summarize(control_results, f"{label} untrained")
            if control_results.path.resolve() not in sides:  # B may be A's control itself
                controls.append(control)
        summaries.append(summary)
        blocks = [*summary_blocks(summary, control), *missing_lines(summary, control, problem)]
        columns.append((label, blocks))
    section.blocks.append(Columns(columns))
    section.blocks.extend(side_by_side_blocks(summaries + controls))
    return section


def shared_figures(
    section_id: str, a: Results, b: Results, labels: tuple[str, str]
) -> list[Figure]:
    """One figure of both sides where it means something, before the two columns."""
    colors = dict(zip(labels, SUMMARY_COLORS, strict=False))
    if section_id == ReportSection.CONE:
        cones = [(point, Metric.CONE_NORMALIZED_MEAN, point) for point in STREAM_POINTS]
        panels = _panels(cones, a, b, labels)
        if panels:
            image = figures.lines(panels, CLS_LAYER_AXIS, "I/n", colors)
            caption = (
                "Cone index over n of each input's tokens (mean over all inputs) per layer, "
                "one panel per measuring point, one line per side."
            )
            return [Figure(image, caption, "cone index of both sides")]
    if section_id == ReportSection.SEPARABILITY:
        specs = [(title, metric, "layer_output") for metric, title in SEPARABILITY_METRICS.items()]
        panels = _panels(specs, a, b, labels)
        if panels:
            image = figures.lines(panels, CLS_LAYER_AXIS, "value", colors)
            caption = "Separability of the classes in [CLS] per layer, one line per side."
            return [Figure(image, caption, "separability of both sides")]
    if section_id == ReportSection.GATES:
        maps = [a.gate_map("all"), b.gate_map("all")]
        same_shape = maps[0].shape == maps[1].shape and not maps[0].empty
        if same_shape and maps[0].index.equals(maps[1].index):
            image = figures.gate_maps(list(zip(labels, maps, strict=True)), maps[0])
            caption = (
                f"Most frequent dominant gate of each head, all inputs; hatched: heads of "
                f"{labels[1]} whose gate differs from {labels[0]}'s."
            )
            return [Figure(image, caption, "gate maps of both sides")]
    return []


def _panels(
    specs: Sequence[tuple[str, str, str]], a: Results, b: Results, labels: tuple[str, str]
) -> list[tuple[str, dict[str, tuple[list[float], list[float]]]]]:
    """``(title, metric, point)`` -> line panels with one line per side (class ``all``)."""
    panels = []
    for title, metric, point in specs:
        series = {}
        for results, label in zip((a, b), labels, strict=True):
            rows: pd.DataFrame = layer_rows(results.layers, metric, point, "all")
            if not rows.empty:
                series[label] = (
                    rows["layer"].astype(float).tolist(),
                    rows["value"].astype(float).tolist(),
                )
        if series:
            panels.append((title, series))
    return panels
