"""The report's over-seeds section (``bertgeom report OUT`` on the output of ``analyze
--over-seeds``): which headline numbers hold across the seeds of one recipe. A sentence on the
seeds and how they are compared (by layer and rank, never by head id), the numbers that do not
hold as a list, every number of ``seeds.parquet`` in a table (mean ± std or the modal layer,
min to max, seeds, agreement), and the cone index per layer of each seed as a figure."""

from __future__ import annotations

import math
from fractions import Fraction

import pandas as pd

from bertgeom.names import Metric, ReportSection
from bertgeom.report import figures
from bertgeom.report.across_seeds import (
    CATEGORICAL,
    CONE_INDEX,
    COSTLIEST_HEAD_COST,
    COSTLIEST_HEAD_LAYER,
    COSTLIEST_LAYER,
    GATE_MIX,
    KEY_MASKING_EXCESS,
    KEY_MASKING_HEAD_LAYER,
    LAYER_ABLATION_COST,
    SEPARABILITY,
    SEPARATION_LAYER,
    TRAINED_MINUS_CONTROL,
)
from bertgeom.report.content import Bullets, Figure, Missing, Paragraph, Section, Table
from bertgeom.report.global_sections import CLS_LAYER_AXIS
from bertgeom.report.over_seeds import AGREEMENT_FLOOR, OverSeeds, does_not_hold, seed_curves

DOES_NOT_HOLD = "does not hold across seeds"
"""The mark of a number that does not hold (in the list and the table)."""
HOLDS = "holds"
MAX_LISTED = 12
"""Numbers that do not hold listed as sentences at most (the table has them all)."""
FINDING_NAMES: dict[str, str] = {
    CONE_INDEX: "token cone index I/n",
    SEPARABILITY: "[CLS] separability",
    SEPARATION_LAYER: "first layer where the [CLS] classes separate",
    GATE_MIX: "gate mix (share of heads x inputs)",
    LAYER_ABLATION_COST: "cost of ablating a layer's attention block",
    COSTLIEST_LAYER: "costliest layer to ablate",
    COSTLIEST_HEAD_LAYER: "layer of the costliest head",
    COSTLIEST_HEAD_COST: "cost of ablating the costliest head",
    KEY_MASKING_EXCESS: "key-masking excess (mutations minus matched)",
    KEY_MASKING_HEAD_LAYER: "layer of the head with the largest key-masking excess",
    TRAINED_MINUS_CONTROL: "trained minus untrained control",
}
"""What each finding of ``seeds.parquet`` is, in words (``report.across_seeds``)."""
_EMBEDDING_FINDINGS = {CONE_INDEX, SEPARABILITY, TRAINED_MINUS_CONTROL}
"""Findings whose layer -1 is the embeddings (for the others it is the model's number)."""
_ROUNDING = 1e-9
"""A standard deviation at most this fraction of |mean| is shown as 0 (summation rounding)."""
_SEED_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


def over_seeds(data: OverSeeds) -> Section:
    """The over-seeds section of an over-seeds directory."""
    section = Section(ReportSection.OVER_SEEDS, "Over seeds: what holds across seeds")
    seeds = ", ".join(str(seed) for seed in data.seeds)
    section.blocks.append(
        Paragraph(
            f"{len(data.seeds)} seeds of one recipe (seeds {seeds}), each model analysed on the "
            "same inputs with the same options; the other sections of this report show the "
            f"first seed (seed {data.first_seed}). Heads are compared by layer and rank, never "
            "by id: head 3 of layer 1 of one seed has no reason to do what head 3 of layer 1 "
            "of another does, so every number here is a layer's or a rank's (the costliest "
            "head, whichever it is, and the layer it lies in)."
        )
    )
    table = data.table
    if table.empty:
        section.blocks.append(Missing("No headline numbers in seeds.parquet."))
        return section
    failing = table.apply(does_not_hold, axis=1).astype(bool)
    section.blocks.append(
        Paragraph(
            f"{int((~failing).sum())} of {len(table)} headline numbers hold across the seeds; "
            f"{int(failing.sum())} do not (marked '{DOES_NOT_HOLD}'): fewer than "
            f"{Fraction(AGREEMENT_FLOOR).limit_denominator(10)} of the seeds agree (have the sign "
            "of the mean, or give the modal layer) or, for a number, its standard deviation "
            "exceeds its |mean|."
        )
    )
    if failing.any():
        sentences = [_sentence(row) for _, row in table[failing].iterrows()]
        if len(sentences) > MAX_LISTED:
            rest = len(sentences) - MAX_LISTED
            sentences = [*sentences[:MAX_LISTED], f"... and {rest} more (see the table)."]
        section.blocks.append(Bullets(sentences))
    section.blocks.append(_table(table, failing))
    section.blocks.append(_cone_figure(data))
    return section


def where(finding: str, layer: int) -> str:
    """The layer cell: the layer, the embeddings (-1 of a per-layer finding), or the model."""
    if layer >= 0:
        return str(layer)
    return "embeddings" if finding in _EMBEDDING_FINDINGS else "model"


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


def summary_cells(row: pd.Series) -> tuple[str, str, str]:
    """The value across seeds (mean ± std, or the modal layer), min to max, and agreement
    (agreeing seeds / seeds) of a row of ``seeds.parquet``."""
    n_seeds = int(row["n_seeds"])
    agreement = float(row["agreement"])
    agreeing = "-" if math.isnan(agreement) else f"{round(agreement * n_seeds)}/{n_seeds}"
    low, high = float(row["min"]), float(row["max"])
    if row["kind"] == CATEGORICAL:
        mode = float(row["mode"])
        value = "never (mode)" if math.isnan(mode) else f"layer {int(mode)} (mode)"
        span = "-" if math.isnan(low) else f"{int(low)} to {int(high)}"
        return value, span, agreeing
    mean, std = float(row["mean"]), float(row["std"])
    if std <= _ROUNDING * abs(mean):
        std = 0.0  # the same value in every seed, up to rounding
    value = _number(mean) if math.isnan(std) else f"{mean:.3g} ± {std:.2g}"
    span = "-" if math.isnan(low) else f"{low:.3g} to {high:.3g}"
    return value, span, agreeing


def _sentence(row: pd.Series) -> str:
    name = FINDING_NAMES.get(str(row["finding"]), str(row["finding"]))
    value, span, agreeing = summary_cells(row)
    at = where(str(row["finding"]), int(row["layer"]))
    place = "" if at == "model" else f" at {'the ' if at == 'embeddings' else 'layer '}{at}"
    return (
        f"The {name}{place} ({row['statistic']}) {DOES_NOT_HOLD}: {value}, {span}, "
        f"{agreeing} seeds agree."
    )


def _table(table: pd.DataFrame, failing: pd.Series) -> Table:
    rows = []
    for (_, row), fails in zip(table.iterrows(), failing, strict=True):
        value, span, agreeing = summary_cells(row)
        finding = str(row["finding"])
        rows.append(
            [
                FINDING_NAMES.get(finding, finding),
                where(finding, int(row["layer"])),
                str(row["statistic"]),
                value,
                span,
                str(int(row["n_seeds"])),
                agreeing,
                DOES_NOT_HOLD if fails else HOLDS,
            ]
        )
    columns = ["finding", "layer", "statistic", "across seeds", "min to max", "seeds", "agree"]
    return Table(
        [*columns, "across seeds?"],
        rows,
        "Every headline number across the seeds (seeds.parquet): mean ± sample standard "
        "deviation, or for a layer the modal layer ('never': no such layer); agree: the seeds "
        "with the sign of the mean, or with the modal layer, of those that have the number.",
    )


def _cone_figure(data: OverSeeds) -> Figure | Missing:
    statistic = str(Metric.CONE_NORMALIZED_MEAN)
    panels = []
    for finding, title in (
        (CONE_INDEX, "token cone index I/n"),
        (TRAINED_MINUS_CONTROL, "I/n, trained minus untrained control"),
    ):
        curves = seed_curves(data.values, finding, statistic)
        if curves:
            series = {
                f"seed {seed}": (curve.index.tolist(), curve.tolist())
                for seed, curve in curves.items()
            }
            panels.append((title, series))
    if not panels:
        return Missing("No cone index per seed in seeds_values.parquet.")
    colors = {
        f"seed {seed}": _SEED_COLORS[index % len(_SEED_COLORS)]
        for index, seed in enumerate(data.seeds)
    }
    return Figure(
        figures.lines(panels, CLS_LAYER_AXIS, "I/n", colors),
        "The token cone index I/n of each layer's output (class all), one line per seed (and, "
        "with a control, the same minus the untrained control's): where the lines agree, the "
        "cone is the recipe's, not a seed's.",
        "cone index per layer, one line per seed",
    )
