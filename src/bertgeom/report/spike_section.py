"""The report's case-study section (DESIGN 3.5): where along the spike each head looks, per
class, and whether it attends to the mutations that define each variant."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bertgeom.genomics.reference import SPIKE_DOMAIN_SLUGS, SPIKE_DOMAINS
from bertgeom.names import (
    SPIKE_DOMAIN_ENRICHMENT_PATTERN,
    SPIKE_PREFIX,
    Array,
    Metric,
    ReportSection,
    spike_domain,
)
from bertgeom.report import figures
from bertgeom.report.common import MAX_CLASS_PANELS, ordered_classes
from bertgeom.report.content import Figure, Missing, Section, Table
from bertgeom.results.store import Results

PROFILE_ARRAY = Array.SPIKE_ATTENTION_PROFILE
MUTATION_COLUMNS = [
    "layer",
    "head",
    "class",
    "mutation",
    "aa_effect",
    "received",
    "background",
    "enrichment",
    "n_carrying",
    "n_background",
]
TOP_MUTATION_ROWS = 20
SMOOTHING_CODONS = 9
MAX_PROFILE_ROWS = 144
"""Heads drawn in the spike heatmap at most (all of BERT-base's)."""


def log2(table: pd.DataFrame) -> pd.DataFrame:
    """log2 of a table of ratios (NaN where a ratio is not positive)."""
    positive = table.where(table > 0)
    return pd.DataFrame(np.log2(positive.to_numpy(float)), positive.index, positive.columns)


def symmetric_limits(panels: list[tuple[str, pd.DataFrame]]) -> tuple[float, float]:
    """Colour limits centred on 0 (a ratio of 1) that cover every finite value."""
    values = np.concatenate([t.to_numpy(float).ravel() for _, t in panels])
    finite = np.abs(values[np.isfinite(values)])
    bound = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return -bound, bound


def _head_label(layer: int, head: int) -> str:
    return f"{layer}.{head}"


def spike(results: Results) -> Section:
    """Domain and mutation enrichment per head and class, attention along the spike, and the
    most enriched mutations."""
    section = Section(ReportSection.SPIKE, "The spike: where the heads look (DESIGN 3.5)")
    heads = results.heads
    spike_rows = heads[heads["metric"].str.startswith(SPIKE_PREFIX)]
    has_profile = PROFILE_ARRAY in results.arrays
    if spike_rows.empty and results.mutations is None and not has_profile:
        section.blocks.append(
            Missing(
                "No spike measures: they are made for a bertgeom variant classifier analysed on "
                "spikes (bertgeom analyze --fasta or --data)."
            )
        )
        return section
    _domain_enrichment(results, spike_rows, section)
    _mutation_enrichment(results, spike_rows, section)
    if has_profile:
        _profiles(results, section)
    _top_mutations(results, section)
    return section


def _domain_enrichment(results: Results, rows: pd.DataFrame, section: Section) -> None:
    slugs = {SPIKE_DOMAIN_SLUGS[name]: name for name, _, _ in SPIKE_DOMAINS}
    pattern = SPIKE_DOMAIN_ENRICHMENT_PATTERN
    domain_rows = rows[rows["metric"].str.match(pattern)]
    if domain_rows.empty:
        section.blocks.append(Missing(f"No {spike_domain('<domain>', 'enrichment')} metrics."))
        return
    domain_rows = domain_rows.assign(domain=domain_rows["metric"].str.extract(pattern)[0])
    order = [s for s in slugs if s in set(domain_rows["domain"])]
    order += sorted(set(domain_rows["domain"]) - set(order))
    panels = []
    for label in ordered_classes(results, list(domain_rows["class"].unique())):
        of_class = domain_rows[domain_rows["class"] == label]
        table = of_class.pivot_table(
            index=["layer", "head"], columns="domain", values="value", aggfunc="first"
        ).reindex(columns=order)
        table.index = [_head_label(layer, head) for layer, head in table.index]
        panels.append((label, table))
    logged = [(label, log2(table)) for label, table in panels]
    section.blocks.append(
        Figure(
            figures.matrices(logged, "log2 enrichment", "RdBu_r", symmetric_limits(logged)),
            "Enrichment of each head's attention on each spike domain, log2 (rows layer.head, "
            "columns domains, one panel per class): red, the head attends to the domain more "
            "than its share of the tokens (+1 = twice); blue, less; white, as much.",
            "domain enrichment",
        )
    )


def _mutation_enrichment(results: Results, rows: pd.DataFrame, section: Section) -> None:
    mutation_rows = rows[rows["metric"] == Metric.SPIKE_MUTATIONS_ENRICHMENT]
    if mutation_rows.empty:
        section.blocks.append(Missing(f"No {Metric.SPIKE_MUTATIONS_ENRICHMENT} metric."))
        return
    table = mutation_rows.pivot_table(
        index=["layer", "head"], columns="class", values="value", aggfunc="first"
    )
    classes = ordered_classes(results, list(table.columns))
    table = table.reindex(columns=classes)
    changes = rows[(rows["metric"] == Metric.SPIKE_CHANGES_ENRICHMENT) & (rows["class"] == "all")]
    if not changes.empty:  # the control: changes away from every listed mutation
        table["other changes"] = changes.set_index(["layer", "head"])["value"]
    table.index = [_head_label(layer, head) for layer, head in table.index]
    logged = log2(table)
    section.blocks.append(
        Figure(
            figures.matrix(
                logged, "log2 enrichment", cmap="RdBu_r", limits=symmetric_limits([("", logged)])
            ),
            "Attention on the tokens that carry a class's defining mutations over a "
            "position-matched background (the same positions in inputs without the mutation), "
            "log2, per head (rows layer.head) and class: red, the head looks at the mutations "
            "(+10 = a thousand times the background); blank, a class without defining "
            "mutations. Last column, the control: tokens that differ from the reference away "
            "from every listed mutation, against unchanged tokens at the same codon.",
            "mutation enrichment",
        )
    )


def _profiles(results: Results, section: Section) -> None:
    profile = np.asarray(results.arrays[PROFILE_ARRAY], dtype=np.float32)
    labels = results.array_index[PROFILE_ARRAY].get("labels", {})
    classes = list(labels.get("class") or [f"class {i}" for i in range(profile.shape[0])])
    codons = _codons(labels.get("codon"), profile.shape[-1])
    colors = figures.class_colors(results.manifest.get("classes", []))
    shown = ordered_classes(results, classes)[: MAX_CLASS_PANELS + 1]
    with np.errstate(all="ignore"):
        means = {
            name: (codons, _smooth(np.nanmean(profile[classes.index(name)], axis=(0, 1))))
            for name in shown
        }
    section.blocks.append(
        Figure(
            figures.spike_profile(means, SPIKE_DOMAINS, colors),
            "Attention received by each spike codon, averaged over all heads and layers and "
            f"smoothed over {SMOOTHING_CODONS} codons, one line per class; shaded bands are the "
            "spike's domains.",
            "attention along the spike",
        )
    )
    first = shown[0]
    per_head = profile[classes.index(first)].reshape(-1, profile.shape[-1])
    layers, heads = profile.shape[1], profile.shape[2]
    names = [_head_label(layer, head) for layer in range(layers) for head in range(heads)]
    rows = pd.DataFrame(per_head, index=names, columns=codons)
    if len(rows) > MAX_PROFILE_ROWS:
        rows = rows.iloc[:MAX_PROFILE_ROWS]
    section.blocks.append(
        Figure(
            figures.spike_heatmap(rows, SPIKE_DOMAINS, f"class {first}"),
            f"Attention received by each codon per head for class {first} (rows layer.head, "
            "columns codons); white lines mark where each domain starts.",
            "attention along the spike per head",
        )
    )


def _codons(label: object, count: int) -> np.ndarray:
    """The codon of each position of the profile's last axis: a list, a ``"first..last"`` range
    or, without a label, 1..count."""
    if isinstance(label, str) and ".." in label:
        first, last = (int(part) for part in label.split(".."))
        codons = np.arange(first, last + 1, dtype=float)
    elif isinstance(label, list):
        codons = np.asarray(label, dtype=float)
    else:
        codons = np.arange(1, count + 1, dtype=float)
    if len(codons) != count:
        raise ValueError(f"{PROFILE_ARRAY}: {count} codons but labels {label!r}")
    return codons


def _smooth(values: np.ndarray) -> np.ndarray:
    """A centred running mean over ``SMOOTHING_CODONS`` codons (NaN ignored)."""
    series = pd.Series(values)
    return series.rolling(SMOOTHING_CODONS, center=True, min_periods=1).mean().to_numpy()


def _top_mutations(results: Results, section: Section) -> None:
    table = results.mutations
    if table is None:
        section.blocks.append(Missing("No mutations.parquet."))
        return
    columns = [c for c in MUTATION_COLUMNS if c in table.columns]
    top = table.sort_values("enrichment", ascending=False).head(TOP_MUTATION_ROWS)
    section.blocks.append(
        Table.from_frame(
            top[columns],
            f"The {len(top)} (head, class, mutation) triples with the largest enrichment: "
            "attention received by the tokens carrying the mutation over the position-matched "
            "background, with the number of inputs carrying it.",
            digits=3,
        )
    )
