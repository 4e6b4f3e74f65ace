"""The tables and figures of the findings: the costliest heads, summaries side by side (a
model and its control, or two models), and per-layer figures of all of them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as PlotFigure
from matplotlib.patches import Patch

from bertgeom.names import AblationMetric, Metric
from bertgeom.report import figures
from bertgeom.report.content import Figure, Image, Table
from bertgeom.report.findings import (
    MEAN,
    ZERO,
    Summary,
    cell,
    head_name,
    head_profile,
    masking_costs,
    separation_phrase,
)
from bertgeom.report.global_sections import CLS_LAYER_AXIS

TOP_HEADS = 5
SUMMARY_COLORS = ("#2f5d9f", "#d62728", "#8fa9cf", "#f0a0a0")
"""Line colours of the summaries compared (the model, then its control or a second model)."""
PER_LAYER_PANELS: dict[str, str] = {
    "I/n": "token cone index I/n",
    Metric.CLS_PROBE_ACCURACY: "[CLS] linear probe accuracy",
    Metric.CLS_SILHOUETTE: "[CLS] silhouette",
}


def top_heads_table(summary: Summary) -> Table | None:
    """The ``TOP_HEADS`` heads whose zeroing costs most, with what they attend to."""
    zero = summary.head_costs(ZERO).head(TOP_HEADS)
    if zero.empty:
        return None
    mean = summary.head_costs(MEAN).set_index(["layer", "head"])
    masking = masking_costs(summary).set_index(["layer", "head"])
    rows = []
    for _, row in zero.iterrows():
        key = (int(row["layer"]), int(row["head"]))
        profile = head_profile(summary.results, *key)
        record: dict[str, object] = {
            "head": head_name(row),
            "accuracy drop": row[AblationMetric.ACCURACY],
            "macro-F1 drop": row[AblationMetric.MACRO_F1],
            "log-prob drop": row[AblationMetric.TRUE_LOG_PROBABILITY],
        }
        if not mean.empty:
            record["mean ablation: accuracy drop"] = (
                mean.loc[key, AblationMetric.ACCURACY] if key in mean.index else None
            )
        gate = profile.get("gate")
        record["dominant gate"] = f"{gate} {profile['gate_share']:.0%}" if gate else None
        if "mutations" in profile:
            record["mutation enrichment"] = profile["mutations"]
        if "domain" in profile:
            record["top domain"] = f"{profile['domain']} {profile['domain_enrichment']:.2g}"
        if not masking.empty and key in masking.index:
            record["log-prob drop, mutations / matched masked"] = (
                f"{cell(masking, key, 'mutations'):.3g} / {cell(masking, key, 'matched'):.3g}"
            )
        rows.append(record)
    return Table.from_frame(
        pd.DataFrame(rows),
        f"{summary.label.capitalize()}: the heads whose output zeroed costs most (cost = "
        "baseline minus ablated; ranked by accuracy drop, ties by the drop in mean log-probability "
        "of the true class), with their most frequent dominant gate and, for the classifier, "
        "their attention on defining mutations and spike domains (enrichment).",
        digits=3,
    )


def comparison_table(summaries: Sequence[Summary]) -> Table:
    """One column per summary, one row per number that at least one of them has."""
    rows: list[list[str]] = []

    def add(name: str, cells: list[str]) -> None:
        if any(cell != "-" for cell in cells):
            rows.append([name, *cells])

    def number(value: float | None) -> str:
        return "-" if value is None or not np.isfinite(value) else f"{value:.3g}"

    def at(summary: Summary, table: pd.DataFrame, column: str, layer: int | None) -> float | None:
        if layer is None or column not in table or layer not in table.index:
            return None
        return cell(table, layer, column)

    add("classifier accuracy", [number(s.accuracy) for s in summaries])
    add("I/n at the embeddings", [number(at(s, s.cone, "I/n", -1)) for s in summaries])
    add("I/n after the last layer", [number(at(s, s.cone, "I/n", s.last_layer)) for s in summaries])
    add(
        "mean cosine after the last layer",
        [number(at(s, s.cone, "mean cosine", s.last_layer)) for s in summaries],
    )
    for metric, name in (
        (Metric.CLS_PROBE_ACCURACY, "probe accuracy"),
        (Metric.CLS_SILHOUETTE, "silhouette"),
    ):
        add(
            f"[CLS] {name}, last layer",
            [number(at(s, s.separability, metric, _last(s.separability))) for s in summaries],
        )
    add("[CLS] classes separate at", [separation_phrase(s) or "-" for s in summaries])
    add("most common gate (all layers)", [_overall_gate(s) for s in summaries])
    add("costliest head, zeroed", [_costliest(s) for s in summaries])
    return Table(
        ["finding", *[s.label for s in summaries]],
        rows,
        "The numbers above side by side (I/n: cone index over n of each input's tokens, mean "
        "over inputs; separation as defined above).",
    )


def _last(table: pd.DataFrame) -> int | None:
    return int(table.index.max()) if not table.empty else None


def _overall_gate(summary: Summary) -> str:
    if summary.gate_mix.empty:
        return "-"
    shares = summary.gate_mix.mean(axis=0)
    return f"{shares.idxmax()} {shares.max():.0%}"


def _costliest(summary: Summary) -> str:
    zero = summary.head_costs(ZERO)
    if zero.empty:
        return "-"
    top = zero.iloc[0]
    return f"{head_name(top)} (accuracy {-top[AblationMetric.ACCURACY]:+.3g})"


def per_layer_figure(summaries: Sequence[Summary]) -> Figure | None:
    """Token cone index and [CLS] separability per layer, one line per summary."""
    panels = []
    for column, title in PER_LAYER_PANELS.items():
        series = {}
        for summary in summaries:
            table = summary.cone if column == "I/n" else summary.separability
            if column in table:
                values = table[column].dropna()
                if not values.empty:
                    series[summary.label] = (values.index.tolist(), values.tolist())
        if series:
            panels.append((title, series))
    if not panels:
        return None
    colors = {s.label: SUMMARY_COLORS[i % len(SUMMARY_COLORS)] for i, s in enumerate(summaries)}
    return Figure(
        figures.lines(panels, CLS_LAYER_AXIS, "value", colors),
        "Per layer output, the cone index over n of each input's tokens (mean over inputs) and "
        "how well the [CLS] vectors separate the classes, one line per "
        + ("model." if len(summaries) > 1 else "layer."),
        "cone index and separability per layer",
    )


def gate_mix_figure(summaries: Sequence[Summary]) -> Figure | None:
    """Stacked bars: the share of each dominant gate per layer, one panel per summary."""
    mixes = [(s.label, s.gate_mix) for s in summaries if not s.gate_mix.empty]
    if not mixes:
        return None
    return Figure(
        stacked_shares(mixes, "share of heads x inputs"),
        "The gate mix of each layer: the share of its heads x inputs in each dominant gate "
        "(mixed: no gate above its threshold), one panel per model.",
        "gate mix per layer",
    )


def stacked_shares(panels: Sequence[tuple[str, pd.DataFrame]], ylabel: str) -> Image:
    """One panel per ``layer x gate`` table of shares: stacked bars per layer."""
    figure = PlotFigure(figsize=(3.2 * len(panels), 2.3), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False).ravel()
    seen: dict[str, Patch] = {}
    for axis, (title, table) in zip(axes, panels, strict=True):
        bottom = np.zeros(len(table))
        for gate in table.columns:
            color = figures.GATE_COLORS.get(str(gate), "#cccccc")
            values = table[gate].to_numpy(float)
            axis.bar(table.index.astype(int), values, bottom=bottom, color=color, width=0.8)
            bottom += values
            seen.setdefault(str(gate), Patch(facecolor=color, edgecolor="#555", label=str(gate)))
        axis.set_ylim(0, 1)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("layer", fontsize=8)
        axis.set_ylabel(ylabel, fontsize=8)
        axis.set_xticks(table.index.astype(int))
        axis.tick_params(labelsize=7)
    figure.legend(handles=list(seen.values()), loc="outside right center", fontsize=7)
    return figures.embed(figure)
