"""The report's sections on the stream of token vectors (DESIGN 3.1 and 3.4): cone index,
distribution of the coordinates, and class separability of ``[CLS]``, from ``layers.parquet``,
``histograms.parquet`` and ``pca.parquet``."""

from __future__ import annotations

import pandas as pd

from bertgeom.names import DIST_PREFIX, STREAM_POINTS, Metric, ReportSection
from bertgeom.report import figures
from bertgeom.report.common import (
    MAX_LAYER_PANELS,
    evenly,
    layer_rows,
    metric_tables,
    ordered_classes,
)
from bertgeom.report.content import Figure, Missing, Section
from bertgeom.results.store import Results

GLOBAL_HINT = "run bertgeom analyze with --global"
LAYER_AXIS = "layer"
CLS_LAYER_AXIS = "layer (-1: embeddings)"
DISTRIBUTION_METRICS: tuple[str, ...] = (
    Metric.DIST_VARIANCE,
    Metric.DIST_SKEWNESS,
    Metric.DIST_EXCESS_KURTOSIS,
    Metric.DIST_PARTICIPATION_RATIO,
    Metric.DIST_OUTLIER_COUNT,
)
SEPARABILITY_METRICS: dict[str, str] = {
    Metric.CLS_SILHOUETTE: "silhouette (1 = separate, 0 = overlapping)",
    Metric.CLS_FISHER_RATIO: "Fisher ratio (between / within class)",
    Metric.CLS_PROBE_ACCURACY: "linear probe accuracy (held out)",
}
MAX_PCA_POINTS = 1500
"""Points drawn per PCA panel at most (a fixed random subset beyond that)."""
MAX_HISTOGRAM_LINES = 6


def _by_point_and_class(
    results: Results, metric: str
) -> list[tuple[str, dict[str, tuple[list[float], list[float]]]]]:
    layers = results.layers
    panels = []
    for point in STREAM_POINTS:
        rows = layer_rows(layers, metric, point)
        if rows.empty:
            continue
        series = {
            label: _xy(rows[rows["class"] == label])
            for label in ordered_classes(results, list(rows["class"].unique()))
        }
        panels.append((point, series))
    return panels


def _layer_axis(rows: pd.DataFrame) -> str:
    """The x label of a plot against layers (layer -1 is the embedding output)."""
    return CLS_LAYER_AXIS if (rows["layer"] < 0).any() else LAYER_AXIS


def _xy(rows: pd.DataFrame) -> tuple[list[float], list[float]]:
    rows = rows.sort_values("layer")
    return rows["layer"].astype(float).tolist(), rows["value"].astype(float).tolist()


def cone(results: Results) -> Section:
    """Cone index across layers per point and class, per head, and of the ``[CLS]`` vectors."""
    section = Section(ReportSection.CONE, "Cone index: how far the stream collapses (DESIGN 3.1)")
    colors = figures.class_colors(results.manifest.get("classes", []))
    if results.layers is None:
        section.blocks.append(Missing(f"No layers.parquet: {GLOBAL_HINT}."))
    for metric, label, meaning in (
        (
            Metric.CONE_NORMALIZED_MEAN,
            "I/n",
            "the cone index over n of each input's token vectors, averaged over inputs: "
            "1 = all tokens point the same way, about 1/sqrt(n) for random directions",
        ),
        (
            Metric.CONE_MEAN_COSINE,
            "mean cosine",
            "the mean pairwise cosine of each input's token vectors (anisotropy), averaged "
            "over inputs",
        ),
    ):
        panels = _by_point_and_class(results, metric)
        if panels:
            section.blocks.append(
                Figure(
                    figures.lines(
                        panels, _layer_axis(layer_rows(results.layers, metric)), label, colors
                    ),
                    f"{meaning.capitalize()}; one panel per measuring point, one line per class.",
                    metric,
                )
            )
    head_tables = metric_tables(
        results,
        {
            Metric.CONE_HEAD_OUTPUT_NORMALIZED_MEAN: "head output Z_h",
            Metric.CONE_ATTENTION_ROWS_NORMALIZED_MEAN: "attention rows",
        },
    )
    if head_tables:
        section.blocks.append(
            Figure(
                figures.heatmaps(head_tables, "I/n", "viridis", (0.0, 1.0)),
                "Per head (layer x head), the mean I/n of its output vectors Z_h and of the rows "
                "of its attention matrix (1 = every query attends alike).",
                "head cone index",
            )
        )
    elif results.layers is not None:
        section.blocks.append(Missing(f"No per-head cone index in heads.parquet: {GLOBAL_HINT}."))
    cls_rows = layer_rows(results.layers, Metric.CLS_CONE_NORMALIZED, "layer_output")
    if not cls_rows.empty:
        series = {
            label: _xy(cls_rows[cls_rows["class"] == label])
            for label in ordered_classes(results, list(cls_rows["class"].unique()))
        }
        section.blocks.append(
            Figure(
                figures.lines(
                    [("[CLS] at layer output", series)], _layer_axis(cls_rows), "I/n", colors
                ),
                "Cone index over n of the [CLS] vectors of all inputs of a class, per layer: how "
                "coherent a class is (near 1 = its inputs share one direction).",
                "[CLS] cone index",
            )
        )
    return section


def distribution(results: Results) -> Section:
    """The ``dist.*`` statistics across layers and points, and the coordinate histograms."""
    section = Section(ReportSection.DISTRIBUTION, "Distribution of the stream (DESIGN 3.4)")
    layers = results.layers
    present = set(layers["metric"]) if layers is not None else set()
    names = [m for m in DISTRIBUTION_METRICS if m in present]
    names += sorted(
        m for m in present if m.startswith(DIST_PREFIX) and m not in names and ".n_" not in m
    )
    panels = []
    for metric in names[:9]:
        rows = layer_rows(layers, metric, label="all")
        series = {point: _xy(rows[rows["point"] == point]) for point in STREAM_POINTS}
        series = {point: xy for point, xy in series.items() if xy[0]}
        if series:
            panels.append((metric.removeprefix(DIST_PREFIX), series))
    if panels:
        assert layers is not None
        section.blocks.append(
            Figure(
                figures.lines(panels, _layer_axis(layers[layers["metric"].isin(names)]), "value"),
                "Statistics of the hidden coordinates over all inputs, one panel per statistic, "
                "one line per measuring point: variance, skewness and excess kurtosis (0 for a "
                "Gaussian), participation ratio of the covariance and outlier dimensions.",
                "distribution statistics",
            )
        )
    else:
        section.blocks.append(Missing(f"No dist.* metrics in layers.parquet: {GLOBAL_HINT}."))
    head_captions = {
        Metric.DIST_HEAD_OUTPUT_PARTICIPATION_RATIO: "Per head (layer x head), the participation "
        "ratio of the covariance of its output vectors Z_h over all inputs, out of the head "
        "size: low, the head writes into few directions.",
        Metric.DIST_HEAD_OUTPUT_EXCESS_KURTOSIS: "Per head (layer x head), the excess kurtosis of "
        "the values of its output Z_h over all inputs: 0 for a Gaussian, large for heavy tails.",
    }
    for metric, caption in head_captions.items():
        for title, table in metric_tables(results, {metric: metric.split(".")[-1]}):
            section.blocks.append(
                Figure(figures.heatmaps([(title, table)], "value"), caption, metric)
            )
    histograms = results.histograms
    if histograms is None:
        section.blocks.append(Missing(f"No histograms.parquet: {GLOBAL_HINT}."))
        return section
    for kind, xlabel, caption in (
        (
            "values",
            "coordinate value",
            "Histogram of the hidden coordinates of all tokens, one panel per measuring point, "
            "one line per layer: heavy tails and far bins are outlier dimensions.",
        ),
        (
            "cone_normalized",
            "I/n per input",
            "Histogram over inputs of the cone index over n of each input's token vectors, one "
            "panel per measuring point, one line per layer: a shift to the right is collapse.",
        ),
    ):
        histogram_panels = _histogram_panels(histograms[histograms["kind"] == kind])
        if histogram_panels:
            section.blocks.append(
                Figure(figures.histograms(histogram_panels, xlabel), caption, f"{kind} histograms")
            )
    return section


def _histogram_panels(
    rows: pd.DataFrame,
) -> list[tuple[str, dict[str, pd.DataFrame]]]:
    if rows.empty:
        return []
    if (rows["class"] == "all").any():
        rows = rows[rows["class"] == "all"]
    else:  # only per-class counts: add them up over classes
        keys = ["layer", "point", "bin_left", "bin_right"]
        rows = rows.groupby(keys, as_index=False).agg(count=("count", "sum"))
    chosen = evenly(sorted(rows["layer"].unique()), MAX_HISTOGRAM_LINES)
    panels = []
    for point in STREAM_POINTS:
        at_point = rows[rows["point"] == point]
        groups = {
            f"layer {layer}": at_point[at_point["layer"] == layer]
            for layer in chosen
            if (at_point["layer"] == layer).any()
        }
        if groups:
            panels.append((point, groups))
    return panels


def separability(results: Results) -> Section:
    """How separable the classes are in ``[CLS]`` across layers, and its 2-D PCA per layer."""
    section = Section(ReportSection.SEPARABILITY, "Class separability of [CLS] (DESIGN 3.4)")
    panels = []
    for metric, title in SEPARABILITY_METRICS.items():
        rows = layer_rows(results.layers, metric, "layer_output", "all")
        if not rows.empty:
            panels.append((title, {"all": _xy(rows)}))
    if panels:
        section.blocks.append(
            Figure(
                figures.lines(panels, CLS_LAYER_AXIS, "value"),
                "How well the classes separate in the [CLS] vector after each layer: silhouette, "
                "Fisher discriminant ratio and a linear probe's held-out accuracy (higher = "
                "more separable).",
                "separability across layers",
            )
        )
    else:
        section.blocks.append(
            Missing(
                f"No cls.silhouette/fisher_ratio/probe_accuracy (labelled inputs): {GLOBAL_HINT}."
            )
        )
    pca = results.pca
    if pca is None or pca.empty:
        section.blocks.append(Missing(f"No pca.parquet: {GLOBAL_HINT} on labelled inputs."))
        return section
    colors = figures.class_colors(results.manifest.get("classes", []))
    scatter_panels = []
    for layer in evenly(sorted(pca["layer"].unique()), MAX_LAYER_PANELS):
        points = pca[pca["layer"] == layer]
        if len(points) > MAX_PCA_POINTS:
            points = points.sample(MAX_PCA_POINTS, random_state=0)
        scatter_panels.append((_pca_title(results, int(layer)), points))
    section.blocks.append(
        Figure(
            figures.scatters(scatter_panels, colors),
            "The [CLS] vectors of the inputs projected on their first two principal components "
            "at each layer, coloured by class (explained variance in the titles): classes "
            "pulling apart is the classifier at work.",
            "PCA of [CLS]",
        )
    )
    return section


def _pca_title(results: Results, layer: int) -> str:
    shares = []
    for metric in (Metric.CLS_PCA_EXPLAINED_1, Metric.CLS_PCA_EXPLAINED_2):
        rows = layer_rows(results.layers, metric, label="all")
        rows = rows[rows["layer"] == layer]
        if not rows.empty:
            shares.append(f"{float(rows['value'].iloc[0]):.0%}")
    name = "embeddings" if layer < 0 else f"layer {layer}"
    return f"{name} ({', '.join(shares)})" if shares else name
