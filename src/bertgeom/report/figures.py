"""The report's figures: small matplotlib functions, each returning an embedded PNG.

Figures are drawn with the object-oriented API (``matplotlib.figure.Figure`` on the Agg canvas),
never through ``pyplot``: nothing is registered globally, so nothing stays open. Tables given to
the heatmaps are ``layer x head`` (rows layers, columns heads), as ``Results.metric`` returns.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from bertgeom.report.content import Image

DPI = 100
PANEL_COLUMNS = 4
GATE_COLORS: dict[str, str] = {
    "closed": "#7f7f7f",
    "directional": "#d62728",
    "open": "#2ca02c",
    "backward": "#1f77b4",
    "forward": "#9467bd",
    "instance": "#ff7f0e",
    "cluster": "#8c564b",
    "mixed": "#e8e8e8",
}
"""One fixed colour per dominant gate, the same in every figure."""
_CLASS_PALETTE = (
    *("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"),
    *("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"),
)

Lines = Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]]
"""Lines of one panel: label -> (x, y)."""


def class_colors(classes: Sequence[str]) -> dict[str, str]:
    """A fixed colour per class (``all`` black), in the order the manifest lists them."""
    colors = {"all": "#000000"}
    others = [name for name in classes if name != "all"]
    for index, name in enumerate(others):
        colors[name] = _CLASS_PALETTE[index % len(_CLASS_PALETTE)]
    return colors


def embed(figure: Figure) -> Image:
    """Render ``figure`` as a PNG ``data:`` URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.08)
    data = buffer.getvalue()
    width, height = _png_size(data)
    return Image("data:image/png;base64," + base64.b64encode(data).decode("ascii"), width, height)


def _png_size(data: bytes) -> tuple[int, int]:
    # The IHDR chunk follows the 8-byte signature: length, type, then width and height.
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _grid(
    panels: int, panel_width: float, panel_height: float, columns: int = PANEL_COLUMNS
) -> tuple[Figure, list[Axes]]:
    columns = max(1, min(columns, panels))
    rows = max(1, math.ceil(panels / columns))
    figure = Figure(figsize=(panel_width * columns, panel_height * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for spare in axes[panels:]:
        spare.set_visible(False)
    return figure, axes[:panels]


def _layer_head_axes(axis: Axes, table: pd.DataFrame) -> None:
    axis.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], fontsize=7)
    axis.set_yticks(range(table.shape[0]), [str(r) for r in table.index], fontsize=7)
    axis.set_xlabel("head", fontsize=8)
    axis.set_ylabel("layer", fontsize=8)


def _panel_size(table: pd.DataFrame) -> tuple[float, float]:
    rows, columns = table.shape
    scale = 0.32 if max(rows, columns) <= 8 else 0.22
    return max(2.0, 0.8 + scale * columns), max(1.4, 0.7 + scale * rows)


def heatmaps(
    tables: Sequence[tuple[str, pd.DataFrame]],
    label: str,
    cmap: str = "viridis",
    limits: tuple[float, float] | None = None,
    annotate: bool | None = None,
    axis_names: tuple[str, str] = ("head", "layer"),
) -> Image:
    """One heatmap panel per table on a shared colour scale (``limits`` or the data's range);
    values are written in the cells when they fit (``annotate``: force on or off)."""
    values = np.concatenate([t.to_numpy(float).ravel() for _, t in tables])
    finite = values[np.isfinite(values)]
    low, high = limits or (
        (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    )
    if high <= low:
        high = low + 1e-9
    first = tables[0][1]
    figure, axes = _grid(len(tables), *_panel_size(first))
    write = annotate if annotate is not None else first.size <= 64
    image = None
    for axis, (title, table) in zip(axes, tables, strict=True):
        matrix = table.to_numpy(float)
        image = axis.imshow(matrix, cmap=cmap, vmin=low, vmax=high, aspect="auto")
        _layer_head_axes(axis, table)
        axis.set_xlabel(axis_names[0], fontsize=8)
        axis.set_ylabel(axis_names[1], fontsize=8)
        axis.set_title(title, fontsize=9)
        if write:
            _annotate(axis, matrix, low, high)
    assert image is not None
    figure.colorbar(image, ax=axes, label=label, shrink=0.9)
    return embed(figure)


def _annotate(axis: Axes, matrix: npt.NDArray[np.float64], low: float, high: float) -> None:
    middle = (low + high) / 2
    for (row, column), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            color = "white" if value < middle else "black"
            axis.text(
                column, row, f"{value:.2g}", ha="center", va="center", fontsize=6, color=color
            )


def gate_maps(maps: Sequence[tuple[str, pd.DataFrame]], reference: pd.DataFrame | None) -> Image:
    """Layer x head grids coloured by dominant gate; cells whose gate differs from
    ``reference`` (the overall map) are hatched and outlined."""
    names = list(GATE_COLORS)
    code = {name: index for index, name in enumerate(names)}
    cmap = ListedColormap([GATE_COLORS[name] for name in names])
    first = maps[0][1]
    figure, axes = _grid(len(maps), *_panel_size(first))
    for axis, (title, table) in zip(axes, maps, strict=True):
        codes = table.apply(lambda column: column.map(code)).to_numpy(float)
        axis.imshow(codes, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, aspect="auto")
        _layer_head_axes(axis, table)
        axis.set_title(title, fontsize=9)
        if reference is None or table is reference:
            continue
        aligned = reference.reindex(index=table.index, columns=table.columns)
        for row, column in zip(*np.nonzero((table != aligned).to_numpy()), strict=True):
            axis.add_patch(
                Rectangle(
                    (column - 0.5, row - 0.5), 1, 1, fill=False, hatch="///", edgecolor="black"
                )
            )
    present = [name for name in names if any((t == name).any().any() for _, t in maps)]
    handles = [Patch(facecolor=GATE_COLORS[n], edgecolor="#555", label=n) for n in present]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(8, len(handles)))
    return embed(figure)


def matrix(
    values: pd.DataFrame,
    label: str,
    title: str = "",
    cmap: str = "viridis",
    limits: tuple[float, float] | None = None,
) -> Image:
    """One labelled heatmap of any table (rows and columns named by its index and columns)."""
    return matrices([(title, values)], label, cmap, limits)


def matrices(
    panels: Sequence[tuple[str, pd.DataFrame]],
    label: str,
    cmap: str = "viridis",
    limits: tuple[float, float] | None = None,
) -> Image:
    """Heatmaps of tables with named rows and columns, side by side on one colour scale."""
    values = np.concatenate([t.to_numpy(float).ravel() for _, t in panels])
    finite = values[np.isfinite(values)]
    low, high = limits or ((float(finite.min()), float(finite.max())) if finite.size else (0, 1))
    if high <= low:
        high = low + 1e-9
    rows, columns = panels[0][1].shape
    width = max(2.4, 1.2 + 0.3 * columns)
    height = max(1.6, 0.8 + 0.16 * rows)
    figure, axes = _grid(len(panels), width, height, columns=min(4, max(1, int(12 // width))))
    image = None
    for axis, (title, table) in zip(axes, panels, strict=True):
        grid = table.to_numpy(float)
        image = axis.imshow(grid, cmap=cmap, vmin=low, vmax=high, aspect="auto")
        axis.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], fontsize=7)
        axis.tick_params(axis="x", labelrotation=60)
        step = max(1, math.ceil(table.shape[0] / 40))
        axis.set_yticks(
            range(0, table.shape[0], step), [str(r) for r in table.index[::step]], fontsize=6
        )
        axis.set_title(title, fontsize=9)
        if table.size <= 100:
            _annotate(axis, grid, low, high)
    assert image is not None
    figure.colorbar(image, ax=axes, label=label, shrink=0.9)
    return embed(figure)


def lines(
    panels: Sequence[tuple[str, Lines]],
    xlabel: str,
    ylabel: str,
    colors: Mapping[str, str] | None = None,
    markers: bool = True,
) -> Image:
    """Line plots, one panel each, one line per label (coloured by ``colors`` when given)."""
    figure, axes = _grid(len(panels), 3.4, 2.5, columns=3)
    for axis, (title, series) in zip(axes, panels, strict=True):
        for name, (x, y) in series.items():
            color = colors.get(name) if colors else None
            axis.plot(x, y, marker="o" if markers else None, ms=3, lw=1.4, label=name, color=color)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel(xlabel, fontsize=8)
        axis.set_ylabel(ylabel, fontsize=8)
        axis.tick_params(labelsize=7)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    shared_legend(figure, axes)
    return embed(figure)


def shared_legend(figure: Figure, axes: list[Axes]) -> None:
    handles: dict[str, Artist] = {}
    for axis in axes:
        for handle, name in zip(*axis.get_legend_handles_labels(), strict=True):
            handles.setdefault(name, handle)
    if len(handles) > 1:
        figure.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncols=min(6, len(handles)),
            fontsize=8,
        )


def histograms(
    panels: Sequence[tuple[str, Mapping[str, pd.DataFrame]]],
    xlabel: str,
    colors: Mapping[str, str] | None = None,
) -> Image:
    """Step histograms from fixed bins (frames with ``bin_left``, ``bin_right``, ``count``),
    normalised to densities so that groups of different sizes compare; bins with an infinite
    edge (under- and overflow) count in the total only."""
    figure, axes = _grid(len(panels), 3.4, 2.5, columns=3)
    for axis, (title, groups) in zip(axes, panels, strict=True):
        for name, all_bins in groups.items():
            total = float(all_bins["count"].sum())
            # Under- and overflow bins (infinite edges) count in the total but are not drawn.
            finite = np.isfinite(all_bins["bin_left"]) & np.isfinite(all_bins["bin_right"])
            bins = all_bins[finite].sort_values("bin_left")
            if bins.empty:
                continue
            widths = (bins["bin_right"] - bins["bin_left"]).to_numpy(float)
            counts = bins["count"].to_numpy(float)
            density = counts / (total * np.where(widths > 0, widths, 1)) if total else counts
            edges = [*bins["bin_left"].to_numpy(float), float(bins["bin_right"].iloc[-1])]
            color = colors.get(name) if colors else None
            axis.stairs(density, edges, label=name, color=color, lw=1.2)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel(xlabel, fontsize=8)
        axis.set_ylabel("density", fontsize=8)
        axis.tick_params(labelsize=7)
    shared_legend(figure, axes)
    return embed(figure)


def scatters(
    panels: Sequence[tuple[str, pd.DataFrame]],
    colors: Mapping[str, str],
    labels: tuple[str, str] = ("PC1", "PC2"),
) -> Image:
    """Scatter panels of frames with ``class``, ``pc1``, ``pc2``, points coloured by class."""
    figure, axes = _grid(len(panels), 2.6, 2.4)
    for axis, (title, points) in zip(axes, panels, strict=True):
        for name, group in points.groupby("class", sort=False):
            axis.scatter(
                group["pc1"],
                group["pc2"],
                s=5,
                alpha=0.6,
                color=colors.get(str(name)),
                label=str(name),
                linewidths=0,
            )
        axis.set_title(title, fontsize=9)
        axis.set_xlabel(labels[0], fontsize=7)
        axis.set_ylabel(labels[1], fontsize=7)
        axis.tick_params(labelsize=6)
    shared_legend(figure, axes)
    return embed(figure)


def confusion(counts: npt.NDArray[np.int64], classes: Sequence[str]) -> Image:
    """A confusion matrix: rows the true class, columns the predicted one, counts in cells."""
    size = max(3.0, 0.5 * len(classes) + 1.5)
    figure = Figure(figsize=(size + 0.8, size), layout="constrained")
    axis = figure.subplots()
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), value in np.ndenumerate(counts):
        color = "white" if shares[row, column] > 0.5 else "black"
        axis.text(column, row, str(value), ha="center", va="center", fontsize=8, color=color)
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(len(classes)), classes, fontsize=8)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    figure.colorbar(image, ax=axis, label="share of the true class", shrink=0.8)
    return embed(figure)


def attention_maps(
    maps: Sequence[tuple[str, npt.NDArray[np.floating]]], threshold: float | None = None
) -> Image:
    """Attention maps (query rows, key columns; NaN blank), each on its own colour scale, with
    the positions above ``threshold`` outlined by a contour."""
    figure, axes = _grid(len(maps), 3.3, 3.0)
    for axis, (title, attention) in zip(axes, maps, strict=True):
        values = np.asarray(attention, dtype=np.float32)
        image = axis.imshow(np.ma.masked_invalid(values), cmap="magma", vmin=0, aspect="equal")
        figure.colorbar(image, ax=axis, shrink=0.8)
        if threshold is not None and np.nanmax(values, initial=0) > threshold:
            axis.contour(np.nan_to_num(values), levels=[threshold], colors="cyan", linewidths=0.6)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("key position", fontsize=7)
        axis.set_ylabel("query position", fontsize=7)
        axis.tick_params(labelsize=6)
    return embed(figure)


def spike_profile(
    profiles: Lines,
    domains: Sequence[tuple[str, int, int]],
    colors: Mapping[str, str],
) -> Image:
    """Attention received along the spike (x: codon), one line per class, domains as bands."""
    figure = Figure(figsize=(10, 3.0), layout="constrained")
    axis = figure.subplots()
    _domain_bands(axis, domains)
    for name, (codons, values) in profiles.items():
        axis.plot(codons, values, lw=0.9, label=name, color=colors.get(name))
    axis.set_xlabel("spike codon")
    axis.set_ylabel("attention received")
    axis.legend(fontsize=7, ncols=min(5, len(profiles)), loc="upper right")
    return embed(figure)


def spike_heatmap(rows: pd.DataFrame, domains: Sequence[tuple[str, int, int]], title: str) -> Image:
    """Attention received along the spike per head: rows ``layer.head``, columns codons."""
    height = max(2.0, min(9.0, 0.8 + 0.08 * len(rows)))
    figure = Figure(figsize=(10, height), layout="constrained")
    axis = figure.subplots()
    codons = rows.columns.to_numpy(float)
    image = axis.imshow(
        rows.to_numpy(float),
        aspect="auto",
        cmap="viridis",
        extent=(codons.min() - 0.5, codons.max() + 0.5, len(rows) - 0.5, -0.5),
        interpolation="nearest",
    )
    step = max(1, math.ceil(len(rows) / 30))
    axis.set_yticks(range(0, len(rows), step), list(rows.index[::step]), fontsize=6)
    for _, first, _last in domains[1:]:
        axis.axvline(first - 0.5, color="white", lw=0.6, alpha=0.8)
    axis.set_xlabel("spike codon (white lines: domain starts)")
    axis.set_ylabel("layer.head")
    axis.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axis, label="attention received", shrink=0.9)
    return embed(figure)


def _domain_bands(axis: Axes, domains: Sequence[tuple[str, int, int]]) -> None:
    for index, (name, first, last) in enumerate(domains):
        axis.axvspan(first - 0.5, last + 0.5, color="#000", alpha=0.05 if index % 2 else 0.11)
        axis.text(
            (first + last) / 2,
            1.01,
            name,
            transform=axis.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=6,
        )
