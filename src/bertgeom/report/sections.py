"""The report's sections on what was analysed (overview, and the folded metadata), the
classifier, and the local measures of DESIGN 3.2-3.3: each a function ``Results -> Section``
that reads only what it needs and says in one line what is missing when its data is not in the
results."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from bertgeom.genomics.mutations import SYNTHETIC_ONLY_CLASSES
from bertgeom.names import (
    GATE_SHARE_PATTERN,
    Array,
    Metric,
    ReportSection,
    gate_score_mean,
    gate_share,
)
from bertgeom.report import figures
from bertgeom.report.common import (
    MAX_CLASS_PANELS,
    analysed_classes,
    evenly,
    has_metric,
    metric_tables,
)
from bertgeom.report.content import Figure, Missing, Paragraph, Section, Table
from bertgeom.results.store import Results

GATES = tuple(name for name in figures.GATE_COLORS if name != "mixed")
WEIGHT_FIGURES: tuple[tuple[tuple[Metric, ...], str, str, tuple[float, float] | None, str], ...] = (
    (
        (Metric.SUBSPACE_SYMMETRY_SCORE, Metric.SUBSPACE_DIRECTIONALITY_SCORE),
        "score",
        "coolwarm",
        (-1.0, 1.0),
        "Saponati et al.'s scores of each head's W_q^T W_k: symmetry near 1 means a symmetric "
        "bilinear form (typical of encoders); directionality below 0 means column-dominant (a "
        "few key directions select for every query).",
    ),
    (
        (Metric.SUBSPACE_ASYMMETRY, Metric.SUBSPACE_QUERY_KEY_OVERLAP),
        "value",
        "viridis",
        None,
        "Asymmetry ||M - Mᵀ|| / ||M|| of each head's bilinear form and the overlap of its own "
        "query and key subspaces (1 = a head reads queries and keys alike).",
    ),
)
"""Figures of the weight measures of DESIGN 3.3: metrics (``subspace.<name>``, a panel each,
titled ``<name>``), colour-bar label, colour map, limits (None: the data's range) and caption."""


def classifier(results: Results) -> Section:
    """Accuracy, macro-F1, per-class metrics and the confusion matrix of a classifier."""
    section = Section(ReportSection.CLASSIFIER, "The classifier")
    predictions = results.predictions
    if predictions is None:
        section.blocks.append(
            Missing(
                "No predictions.parquet: the model has no sequence-classification head "
                "(analyse a bertgeom classifier to get this section)."
            )
        )
        return section
    model_classes = list(results.manifest.get("model", {}).get("classes") or [])
    model_classes = model_classes or sorted(predictions["predicted_class"].dropna().unique())
    labelled = predictions[predictions["class"].isin(model_classes)]
    if labelled.empty:
        section.blocks.append(
            Missing(
                "No input has a label among the model's classes: give labels (--labels, or a "
                "dataset) to measure accuracy."
            )
        )
        return section
    truth = labelled["class"].astype(str)
    predicted = labelled["predicted_class"].astype(str)
    seen = set(truth) | set(predicted)
    classes = [name for name in model_classes if name in seen]
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=classes, zero_division=0
    )
    present = [name in set(truth) for name in classes]
    accuracy = float((truth == predicted).mean())
    macro_f1 = float(np.mean(f1[present]))
    section.blocks.append(
        Paragraph(
            f"{len(labelled)} labelled inputs (of {len(predictions)}): accuracy "
            f"{accuracy:.4f}, macro-F1 {macro_f1:.4f} (over the {sum(present)} classes present), "
            "of the arg-max calls of the model's head: the unassigned rules of bertgeom predict "
            "(probability threshold, change check) are not applied here."
        )
    )
    frame = pd.DataFrame(
        {"class": classes, "precision": precision, "recall": recall, "F1": f1, "support": support}
    )
    synthetic = sorted(SYNTHETIC_ONLY_CLASSES & set(truth))
    note = ""
    if synthetic:
        verb = "are synthetic-only classes" if len(synthetic) > 1 else "is a synthetic-only class"
        note = (
            f" {' and '.join(synthetic)} {verb}: every such input was drawn by the generator, "
            "none is a real genome."
        )
    section.blocks.append(
        Table.from_frame(frame, "Per-class precision, recall, F1 and support." + note)
    )
    counts = confusion_matrix(truth, predicted, labels=classes)
    section.blocks.append(
        Figure(
            figures.confusion(counts, classes),
            "Confusion matrix: rows are the true class, columns the predicted one; cells give "
            "counts, shaded by the share of the true class (a dark diagonal is good)." + note,
            "confusion matrix",
        )
    )
    return section


def gates(results: Results) -> Section:
    """The gate map overall and per class, per-class differences, and the gate score means."""
    section = Section(ReportSection.GATES, "Gates: what each head does (DESIGN 3.2)")
    overall = results.gate_map("all")
    if overall.empty:
        section.blocks.append(
            Missing(
                f"No gate shares in heads.parquet ({gate_share('<g>')}): rerun bertgeom analyze."
            )
        )
        return section
    classes = [
        c for c in analysed_classes(results) if has_metric(results, Metric.GATE_MIXED_SHARE, c)
    ]
    shown = classes[:MAX_CLASS_PANELS]
    maps = [("all inputs", overall)] + [(name, results.gate_map(name)) for name in shown]
    more = (
        f" ({len(classes) - len(shown)} more classes not drawn)"
        if len(shown) < len(classes)
        else ""
    )
    section.blocks.append(
        Figure(
            figures.gate_maps(maps, overall),
            "Each cell is a head (rows layers, columns heads), coloured by its most frequent "
            "dominant gate over the inputs; in the per-class panels, hatched cells are heads "
            f"whose dominant gate differs from the overall map{more}.",
            "gate maps",
        )
    )
    if classes:
        difference, which = _largest_share_difference(results, classes)
        section.blocks.append(
            Figure(
                figures.heatmaps([("largest per-class difference", difference)], "share"),
                "For each head, the largest difference between a class's share of inputs in a "
                "gate and the overall share (over gates and classes): bright heads change "
                "behaviour with the class. " + _top_heads_sentence(difference, which),
                "largest per-class gate share difference",
            )
        )
    score_tables = metric_tables(results, {gate_score_mean(gate): gate for gate in GATES})
    if score_tables:
        section.blocks.append(
            Figure(
                figures.heatmaps(score_tables, "mean score", limits=(0.0, 1.0)),
                "Mean of each gate's score over all inputs, one panel per gate (layer x head): "
                "the full score vector behind the dominant gate, 1 = the pattern is pure.",
                "gate score means",
            )
        )
    section.blocks.append(_gate_counts(maps))
    return section


def _largest_share_difference(
    results: Results, classes: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    heads = results.heads
    shares = heads[heads["metric"].str.match(GATE_SHARE_PATTERN)]
    shares = shares[shares["head"] >= 0]
    table = shares.pivot_table(
        index=["layer", "head", "metric"], columns="class", values="value", aggfunc="first"
    )
    differences = table[classes].sub(table["all"], axis=0).abs()
    per_class = differences.groupby(level=["layer", "head"]).max()
    largest = per_class.max(axis=1)
    which = per_class.idxmax(axis=1)
    return largest.unstack("head"), which.unstack("head")


def _top_heads_sentence(difference: pd.DataFrame, which: pd.DataFrame) -> str:
    values = difference.to_numpy(float)
    order = np.argsort(np.nan_to_num(values, nan=-1.0), axis=None)[::-1][:3]
    parts = []
    for row, column in zip(*np.unravel_index(order, values.shape), strict=True):
        if np.isfinite(values[row, column]):
            layer, head = difference.index[row], difference.columns[column]
            label = which.to_numpy()[row, column]
            parts.append(f"layer {layer} head {head} ({label}, {values[row, column]:.2f})")
    if not parts:
        return ""
    return "Largest: " + "; ".join(parts) + "."


def _gate_counts(maps: list[tuple[str, pd.DataFrame]]) -> Table:
    names = list(figures.GATE_COLORS)
    frame = pd.DataFrame(
        {title: [int((table == name).sum().sum()) for name in names] for title, table in maps},
        index=names,
    )
    frame = frame[frame.sum(axis=1) > 0].reset_index(names="dominant gate")
    return Table.from_frame(frame, "Number of heads dominated by each gate, overall and per class.")


def attention_maps(results: Results) -> Section:
    """One example class-mean attention map for each gate that is dominant on some head."""
    section = Section(ReportSection.ATTENTION_MAPS, "Attention maps: one example per gate")
    entry = results.array_index.get(Array.CLASS_MEAN_MAPS)
    if entry is None or Array.CLASS_MEAN_MAPS not in results.arrays:
        section.blocks.append(
            Missing("No class-mean maps (arrays/class_mean_maps.npy): rerun bertgeom analyze.")
        )
        return section
    stored = [(int(layer), int(head)) for layer, head in entry["labels"]["pair"]]
    overall = results.gate_map("all")
    dominant = [gate for gate in GATES if (overall == gate).any().any()]
    if not dominant:
        section.blocks.append(
            Missing("No head has a dominant gate other than mixed: there is no example to show.")
        )
        return section
    maps_parameters = results.manifest.get("measurements", {}).get("class_mean_maps", {})
    threshold = maps_parameters.get(
        "high_attention_threshold",
        results.manifest.get("parameters", {}).get("high_attention_threshold"),  # before 0.9
    )
    maps = []
    for gate in dominant:
        shares = results.metric(gate_share(gate))
        candidates = [(_cell(shares, *pair), *pair) for pair in stored if _has(shares, *pair)]
        if not candidates:
            continue
        share, layer, head = max(candidates)
        title = f"{gate}: layer {layer} head {head} ({share:.0%} of inputs)"
        maps.append((title, results.class_mean_map("all", layer, head)))
    if not maps:
        section.blocks.append(
            Missing("No stored class-mean map belongs to a head with a dominant gate (--heads).")
        )
        return section
    above = f"; cyan contours enclose attention above {threshold}" if threshold else ""
    section.blocks.append(
        Figure(
            figures.attention_maps(maps, threshold),
            "For each gate that dominates some head, the mean attention map over all inputs of "
            "the stored head with the largest share of that gate: rows are queries, columns keys"
            f"{above}.",
            "example attention maps",
        )
    )
    return section


def _cell(table: pd.DataFrame, layer: int, head: int) -> float:
    return float(np.asarray(table.loc[layer, head], dtype=float))


def _has(table: pd.DataFrame, layer: int, head: int) -> bool:
    present = layer in table.index and head in table.columns
    return present and bool(np.isfinite(_cell(table, layer, head)))


def subspace(results: Results) -> Section:
    """Overlaps between the heads' subspaces, and the weight measures of each head (DESIGN 3.3)."""
    section = Section(ReportSection.SUBSPACE, "Subspaces: what each head reads (DESIGN 3.3)")
    kinds = [
        name.removeprefix("overlap_") for name in results.arrays if name.startswith("overlap_")
    ]
    chance = results.metric(Metric.SUBSPACE_LAYER_OVERLAP_CHANCE)
    chance_text = (
        f" Chance level (random subspaces) is {float(chance.to_numpy(float)[0, 0]):.3g}."
        if not chance.empty
        else ""
    )
    for kind in kinds:
        overlaps = np.asarray(results.arrays[f"overlap_{kind}"], dtype=float)
        layers = evenly(list(range(overlaps.shape[0])), 12)
        panels = [(f"layer {layer}", pd.DataFrame(overlaps[layer])) for layer in layers]
        section.blocks.append(
            Figure(
                figures.heatmaps(
                    panels, "overlap", "magma", (0.0, 1.0), axis_names=("head", "head")
                ),
                f"Overlap of the {kind.replace('_', '-')} subspaces between the heads of each "
                "layer (mean cos² of the principal angles): 1 = the same subspace, near the "
                f"chance level = unrelated.{chance_text}",
                f"{kind} overlaps",
            )
        )
    if not kinds:
        section.blocks.append(Missing("No overlap arrays (arrays/overlap_<kind>.npy)."))
    drawn = 0
    for metrics, label, cmap, limits, caption in WEIGHT_FIGURES:
        names = [metric.split(".")[-1] for metric in metrics]
        tables = metric_tables(results, dict(zip(metrics, names, strict=True)))
        if tables:
            image = figures.heatmaps(tables, label, cmap, limits)
            section.blocks.append(Figure(image, caption, " and ".join(names)))
            drawn += 1
    if not drawn:
        section.blocks.append(Missing("No subspace.* weight measures in heads.parquet."))
    return section
