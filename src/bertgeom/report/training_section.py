"""The report's over-training section (``bertgeom report OVER`` on the output of ``analyze
--over-training``): when the geometry forms relative to accuracy. The milestones of training
as sentences and a table (``report.training``), then curves against the optimiser step on a
symmetric-log axis (step 0, the initialisation, at 0, the later steps log-spaced): every curve
as a fraction of its final value, validation macro-F1 and training loss, the token cone index
per layer and measuring point, the ``[CLS]`` separability per layer, and the gate mix of each
layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure as PlotFigure
from matplotlib.patches import Patch

from bertgeom.names import STREAM_POINTS, Metric, ReportSection
from bertgeom.report import figures
from bertgeom.report.common import MAX_LAYER_PANELS, evenly
from bertgeom.report.content import Bullets, Figure, Image, Missing, Paragraph, Section, Table
from bertgeom.report.global_sections import GLOBAL_HINT
from bertgeom.report.training import (
    WITHIN_TOLERANCE,
    Milestone,
    OverTraining,
    checkpoint_table,
    column_pairs,
    gate_mix_curves,
    last_layer_curve,
    layer_curves,
    milestones,
    of_layer,
    order_sentence,
)

STEP_AXIS = "optimiser step (symmetric log: 0, then log-spaced)"
MAX_GATE_PANELS = 6
"""Layers whose gate mix is drawn at most (evenly chosen, first and last kept)."""
SEPARABILITY_PANELS: dict[str, str] = {
    Metric.CLS_SILHOUETTE: "[CLS] silhouette",
    Metric.CLS_PROBE_ACCURACY: "[CLS] linear probe accuracy (held out)",
}
PROGRESS_COLORS = ("#000000", "#d62728", "#1f77b4", "#2ca02c", "#9467bd")

Series = Mapping[str, tuple[Sequence[float], Sequence[float], str | None]]
"""Lines of one panel: label -> (steps, values, colour)."""


def over_training(data: OverTraining, others: str | None = None) -> Section:
    """The over-training section of an over-training directory; ``others``: what the
    report's other sections show (default: the last checkpoint)."""
    section = Section(ReportSection.OVER_TRAINING, "Over training: when the geometry forms")
    training = data.training
    checkpoints = checkpoint_table(training)
    steps = checkpoints.index.tolist()
    others = others or f"the last checkpoint (step {steps[-1]})"
    section.blocks.append(
        Paragraph(
            f"{len(steps)} checkpoints of the training run, steps {steps[0]} to {steps[-1]} "
            f"(epoch {checkpoints['epoch'].iloc[-1]:.3g}), each analysed on the same inputs with "
            f"the same options; the other sections of this report show {others}. A milestone "
            "is the first checkpoint at which a curve comes close to its final value, so its "
            "step is only as fine as the checkpoint schedule."
        )
    )
    found = milestones(training)
    sentences = [_sentence(milestone) for milestone in found]
    order, held = order_sentence(found), order_sentence(found, held=True)
    if order is not None:
        sentences.append(order)
    if held is not None and held != order:
        sentences.append(f"Counting from when each holds for good: {held[0].lower()}{held[1:]}")
    if sentences:
        section.blocks.append(Bullets(sentences))
        section.blocks.append(_milestone_table(found))
    for block in (
        _progress_figure(found, training),
        _accuracy_figure(checkpoints),
        _cone_figure(training),
        _separability_figure(training),
        _gate_figure(training),
    ):
        section.blocks.append(block)
    return section


def _sentence(milestone: Milestone) -> str:
    if milestone.step is None:
        return (
            f"The {milestone.what} never came {milestone.rule} (final value {milestone.final:.3g})."
        )
    held = (
        f"; it fell back, and holds from step {milestone.held} on"
        if milestone.held is not None and milestone.held != milestone.step
        else ""
    )
    return (
        f"The {milestone.what} came {milestone.rule} at step {milestone.step} (epoch "
        f"{milestone.epoch:.3g}): {milestone.value:.3g}, final {milestone.final:.3g}{held}."
    )


def _milestone_table(found: list[Milestone]) -> Table:
    frame = pd.DataFrame(
        {
            "curve": [m.what for m in found],
            "rule": [m.rule for m in found],
            "first step": pd.Series([m.step for m in found], dtype=object),
            "holds from step": pd.Series([m.held for m in found], dtype=object),
            "epoch": [m.epoch for m in found],
            "value then": [m.value for m in found],
            "final value": [m.final for m in found],
        }
    )
    return Table.from_frame(
        frame,
        "The milestones of training: the first checkpoint at which each curve meets its rule "
        "(a dash: never), and the one from which it meets it at every later checkpoint.",
        digits=3,
    )


def _progress_figure(found: list[Milestone], training: pd.DataFrame) -> Figure | Missing:
    curves: dict[str, pd.Series] = {
        "validation macro-F1": checkpoint_table(training)["validation_macro_f1"]
    }
    for metric, name in (
        (Metric.CONE_NORMALIZED_MEAN, "last layer's token cone index I/n"),
        (Metric.CLS_PROBE_ACCURACY, "last layer's [CLS] probe accuracy"),
        (Metric.CLS_SILHOUETTE, "last layer's [CLS] silhouette"),
    ):
        curves[name] = last_layer_curve(training, metric)
    series: dict[str, tuple[Sequence[float], Sequence[float], str | None]] = {}
    for index, (name, curve) in enumerate(curves.items()):
        values = curve.dropna()
        if values.empty or not values.iloc[-1] > 0:
            continue
        color = PROGRESS_COLORS[index % len(PROGRESS_COLORS)]
        series[name] = (values.index.tolist(), (values / values.iloc[-1]).tolist(), color)
    if not series:
        return Missing("No curves to draw over training.")
    reached = sorted({m.step for m in found if m.step is not None})
    band = (1 - WITHIN_TOLERANCE, 1 + WITHIN_TOLERANCE)
    image = step_lines([("fraction of the final value", series)], "value / final", reached, band)
    return Figure(
        image,
        "Each curve as a fraction of its final value against the step (shaded: within 10 % "
        "of it; dotted: the milestone steps), so what forms first rises first.",
        "curves as fractions of their final values",
    )


def _accuracy_figure(checkpoints: pd.DataFrame) -> Figure | Missing:
    panels = []
    for column, title in (
        ("validation_macro_f1", "validation macro-F1"),
        ("train_loss", "training loss (mean over the epoch so far)"),
    ):
        values = checkpoints[column].dropna()
        if not values.empty:
            line = (values.index.tolist(), values.tolist(), "#000000")
            panels.append((title, {f"_{title}": line}))  # "_": no legend entry
    if not panels:
        return Missing("No validation macro-F1 or training loss in training.parquet.")
    return Figure(
        step_lines(panels, "value"),
        "Validation macro-F1 and training loss of each checkpoint (step 0, the initialisation, "
        "has no training loss).",
        "validation macro-F1 and training loss",
    )


def _layer_series(
    table: pd.DataFrame, point: str
) -> dict[str, tuple[list[float], list[float], str | None]]:
    layers = sorted(layer for layer, at in column_pairs(table) if at == point)
    chosen = evenly(layers, MAX_LAYER_PANELS)
    trained = [layer for layer in chosen if layer >= 0]
    palette = colormaps["viridis"]
    series: dict[str, tuple[list[float], list[float], str | None]] = {}
    for layer in chosen:
        values = table[(layer, point)].dropna()
        if values.empty:
            continue
        if layer < 0:
            name, color = "embeddings", "#7f7f7f"
        else:
            name = f"layer {layer}"
            position = trained.index(layer) / max(1, len(trained) - 1)
            color = to_hex(palette(0.9 * position))
        series[name] = (values.index.tolist(), values.tolist(), color)
    return series


def _cone_figure(training: pd.DataFrame) -> Figure | Missing:
    table = layer_curves(training, Metric.CONE_NORMALIZED_MEAN)
    if table.empty:
        return Missing(f"No cone index over training (no layers rows): {GLOBAL_HINT}.")
    points = [point for point in STREAM_POINTS if any(at == point for _, at in column_pairs(table))]
    panels = [(point, _layer_series(table, point)) for point in points]
    return Figure(
        step_lines(panels, "I/n"),
        "The token cone index I/n (class all, mean over inputs) of each layer against the step, "
        "one panel per measuring point (the embeddings with layer_output).",
        "cone index over training",
    )


def _separability_figure(training: pd.DataFrame) -> Figure | Missing:
    panels = []
    for metric, title in SEPARABILITY_PANELS.items():
        table = layer_curves(training, metric, "layer_output")
        if not table.empty:
            panels.append((title, _layer_series(table, "layer_output")))
    if not panels:
        return Missing(f"No [CLS] separability over training: {GLOBAL_HINT}.")
    return Figure(
        step_lines(panels, "value"),
        "How well the [CLS] vectors of each layer separate the classes against the step: "
        "silhouette (1 = separate) and held-out linear probe accuracy.",
        "[CLS] separability over training",
    )


def _gate_figure(training: pd.DataFrame) -> Figure | Missing:
    mix = gate_mix_curves(training)
    if mix.empty:
        return Missing("No gate shares over training in training.parquet.")
    layers = evenly(sorted({layer for layer, _ in column_pairs(mix)}), MAX_GATE_PANELS)
    present = {gate for _, gate in column_pairs(mix)}
    order = [gate for gate in figures.GATE_COLORS if gate in present]
    order += sorted(present - set(order))
    panels = [
        (f"layer {layer}", of_layer(mix, layer).reindex(columns=order, fill_value=0.0))
        for layer in layers
    ]
    return Figure(
        stacked_steps(panels),
        "The gate mix of each layer against the step: the share of its heads x inputs in each "
        "dominant gate (mixed: no gate above its threshold).",
        "gate mix over training",
    )


def _step_axis(axis: Axes, steps: Sequence[float]) -> None:
    axis.set_xscale("symlog", linthresh=1.0)
    if len(steps):
        axis.set_xlim(min(steps), max(max(steps), 1) * 1.15)
    axis.set_xlabel(STEP_AXIS, fontsize=8)
    axis.tick_params(labelsize=7)
    axis.grid(alpha=0.3)


def step_lines(
    panels: Sequence[tuple[str, Series]],
    ylabel: str,
    marks: Sequence[int] = (),
    band: tuple[float, float] | None = None,
) -> Image:
    """Line plots against the step on a symmetric-log axis, one panel each, one line per label;
    ``marks``: steps drawn as dotted vertical lines; ``band``: a shaded horizontal band."""
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure = PlotFigure(figsize=(3.6 * columns, 2.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for spare in axes[len(panels) :]:
        spare.set_visible(False)
    for axis, (title, series) in zip(axes, panels, strict=True):
        steps: list[float] = []
        for name, (x, y, color) in series.items():
            axis.plot(x, y, marker="o", ms=3, lw=1.4, label=name, color=color)
            steps.extend(x)
        if band is not None:
            axis.axhspan(*band, color="#dddddd", alpha=0.6, lw=0)
        for step in marks:
            axis.axvline(step, color="#555555", lw=0.8, ls=":")
        _step_axis(axis, steps)
        axis.set_title(title, fontsize=9)
        axis.set_ylabel(ylabel, fontsize=8)
    figures.shared_legend(figure, axes[: len(panels)])
    return figures.embed(figure)


def stacked_steps(panels: Sequence[tuple[str, pd.DataFrame]]) -> Image:
    """One panel per ``step x gate`` table of shares: stacked areas against the step."""
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure = PlotFigure(figsize=(3.4 * columns, 2.3 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for spare in axes[len(panels) :]:
        spare.set_visible(False)
    seen: dict[str, Patch] = {}
    for axis, (title, table) in zip(axes, panels, strict=True):
        gates = [str(gate) for gate in table.columns]
        colors = [figures.GATE_COLORS.get(gate, "#cccccc") for gate in gates]
        steps = table.index.to_numpy(float)
        axis.stackplot(steps, table.to_numpy(float).T, colors=colors, edgecolor="#555", lw=0.3)
        for gate, color in zip(gates, colors, strict=True):
            seen.setdefault(gate, Patch(facecolor=color, edgecolor="#555", label=gate))
        _step_axis(axis, steps.tolist())
        axis.set_xlim(float(np.min(steps)), float(np.max(steps)))
        axis.set_ylim(0, 1)
        axis.set_title(title, fontsize=9)
        axis.set_ylabel("share of heads x inputs", fontsize=8)
    figure.legend(handles=list(seen.values()), loc="outside right center", fontsize=7)
    return figures.embed(figure)
