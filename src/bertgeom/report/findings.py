"""The numbers behind the report's findings, computed from one results directory: the cone
index along the stream, the layer where the ``[CLS]`` classes separate, the gate mix per layer,
and the cost of each head ablation (``ablation.parquet``). Nothing here is written by hand:
every sentence of the findings is made from a :class:`Summary`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from bertgeom.names import (
    GATE_SHARE_PATTERN,
    SPIKE_DOMAIN_ENRICHMENT_PATTERN,
    AblationMetric,
    Metric,
    spike_domain,
)
from bertgeom.report import figures
from bertgeom.report.common import layer_rows
from bertgeom.results.store import Results, load_results

SEPARATION_RULES = (
    (Metric.CLS_PROBE_ACCURACY, 0.9, "the linear probe's held-out accuracy on [CLS]"),
    (Metric.CLS_SILHOUETTE, 0.5, "the silhouette of the [CLS] vectors"),
)
"""How "the classes separate" is decided: the first metric present, and the first layer where
it reaches its threshold (a probe right 9 times in 10; a silhouette of "reasonable structure",
Kaufman and Rousseeuw)."""
COST_METRICS = (
    AblationMetric.ACCURACY,
    AblationMetric.MACRO_F1,
    AblationMetric.TRUE_LOG_PROBABILITY,
)
"""Ablation metrics whose drop (baseline minus ablated) is an ablation's cost."""
BASELINE_MODE, ZERO, MEAN = "none", "zero", "mean"
MASK_MUTATIONS, MASK_MATCHED = "mask_mutation_keys", "mask_matched_keys"
GATE_ORDER = tuple(figures.GATE_COLORS)


@dataclass(frozen=True)
class Separation:
    """Where the classes separate by one metric: the first layer reaching the threshold (None:
    never), and the metric's best value and its layer."""

    metric: str
    description: str
    threshold: float
    layer: int | None
    value: float
    best: float
    best_layer: int


@dataclass
class Summary:
    """The findings' numbers of one results directory (``label`` names it in tables)."""

    label: str
    results: Results
    cone: pd.DataFrame
    """Index layer (-1: embeddings), columns ``I/n`` and ``mean cosine`` at the layer output."""
    stream: list[tuple[str, float]]
    """I/n along the stream in order: embeddings, then each layer's attention and MLP output."""
    separability: pd.DataFrame
    """Index layer, one column per ``cls.*`` separability metric (layer output, all classes)."""
    separation: Separation | None
    gate_mix: pd.DataFrame
    """Index layer, one column per dominant gate: its share of the layer's heads x inputs."""
    costs: pd.DataFrame | None
    """One row per ablation of the table: mode, layer, head, class and the drop of each metric
    of ``COST_METRICS``; None without ``ablation.parquet``."""
    baseline: dict[str, float]
    """The unablated metrics of class ``all``."""
    accuracy: float | None
    """The classifier's arg-max accuracy on its labelled inputs (None: no classifier)."""

    @property
    def last_layer(self) -> int | None:
        return int(self.cone.index.max()) if not self.cone.empty else None

    def head_costs(self, mode: str, label: str = "all") -> pd.DataFrame:
        """Single-head ablations of one mode, costliest first: by accuracy drop, ties by the
        drop in the mean log-probability of the true class."""
        if self.costs is None:
            return pd.DataFrame(columns=["layer", "head", *COST_METRICS])
        rows = self.costs[
            (self.costs["mode"] == mode)
            & (self.costs["class"] == label)
            & (self.costs["head"] >= 0)
        ]
        return rank_costs(rows)

    def layer_costs(self, mode: str = ZERO) -> pd.DataFrame:
        """Whole-attention-block ablations (head -1) of one mode, costliest first."""
        if self.costs is None:
            return pd.DataFrame(columns=["layer", "head", *COST_METRICS])
        rows = self.costs[
            (self.costs["mode"] == mode)
            & (self.costs["class"] == "all")
            & (self.costs["head"] < 0)
            & (self.costs["layer"] >= 0)
        ]
        return rank_costs(rows)


def cell(table: pd.DataFrame, row: object, column: str) -> float:
    """One value of ``table`` as a float."""
    value: Any = table.loc[row, column]  # type: ignore[index]
    return float(np.asarray(value, dtype=float))


def rank_costs(rows: pd.DataFrame) -> pd.DataFrame:
    ranking = (AblationMetric.ACCURACY, AblationMetric.TRUE_LOG_PROBABILITY)
    keys = [name for name in ranking if name in rows]
    ranked = rows.sort_values(keys, ascending=False, na_position="last", kind="stable")
    return ranked.reset_index(drop=True)


def summarize(results: Results, label: str) -> Summary:
    """Every number of the findings of ``results``."""
    separability = separability_by_layer(results)
    costs, baseline = ablation_costs(results.ablation)
    return Summary(
        label=label,
        results=results,
        cone=cone_by_layer(results),
        stream=stream_steps(results),
        separability=separability,
        separation=separation(separability),
        gate_mix=gate_mix(results),
        costs=costs,
        baseline=baseline,
        accuracy=classifier_accuracy(results),
    )


def cone_by_layer(results: Results) -> pd.DataFrame:
    """I/n and mean cosine of each input's tokens (class ``all``) at each layer's output; the
    embeddings are layer -1 (or, in older results, layer 0's input)."""
    columns = {Metric.CONE_NORMALIZED_MEAN: "I/n", Metric.CONE_MEAN_COSINE: "mean cosine"}
    frame = pd.DataFrame(columns=list(columns.values()), dtype=float)
    for metric, name in columns.items():
        rows = layer_rows(results.layers, metric, "layer_output", "all")
        values = rows.set_index("layer")["value"].astype(float)
        embeddings = layer_rows(results.layers, metric, "layer_input", "all")
        embeddings = embeddings[embeddings["layer"] == 0]
        if -1 not in values.index and not embeddings.empty:
            values = pd.concat([values, pd.Series({-1: float(embeddings["value"].iloc[0])})])
        frame = frame.reindex(frame.index.union(values.index))
        frame[name] = values
    frame.index = frame.index.astype(int)
    frame.index.name = "layer"
    return frame.sort_index()


def stream_steps(results: Results) -> list[tuple[str, float]]:
    """I/n (class ``all``) along the stream: the embeddings, then each layer's multi-head
    output ("attention") and layer output ("MLP")."""
    steps = []
    embeddings = cone_by_layer(results)
    if -1 in embeddings.index and np.isfinite(cell(embeddings, -1, "I/n")):
        steps.append(("the embeddings", cell(embeddings, -1, "I/n")))
    rows = layer_rows(results.layers, Metric.CONE_NORMALIZED_MEAN, label="all")
    rows = rows[rows["layer"] >= 0]
    for layer in sorted(rows["layer"].unique()):
        for point, name in (("multihead_output", "attention block"), ("layer_output", "MLP")):
            value = rows[(rows["layer"] == layer) & (rows["point"] == point)]["value"]
            if not value.empty and np.isfinite(value.iloc[0]):
                steps.append((f"layer {layer}'s {name}", float(value.iloc[0])))
    return steps


def separability_by_layer(results: Results) -> pd.DataFrame:
    """``layer x metric`` table of the ``[CLS]`` separability metrics (all classes)."""
    metrics: list[str] = [metric for metric, _, _ in SEPARATION_RULES]
    metrics.append(Metric.CLS_FISHER_RATIO)
    layers = results.layers
    if layers is None:
        return pd.DataFrame(columns=metrics, dtype=float)
    rows = layers[
        layers["metric"].isin(metrics)
        & (layers["point"] == "layer_output")
        & (layers["class"] == "all")
    ]
    table = rows.pivot_table(index="layer", columns="metric", values="value", aggfunc="first")
    return table.reindex(columns=[m for m in metrics if m in table.columns]).sort_index()


def separation(table: pd.DataFrame) -> Separation | None:
    """The first layer where the first available metric of ``SEPARATION_RULES`` reaches its
    threshold; None when no such metric has a finite value."""
    for metric, threshold, description in SEPARATION_RULES:
        if metric not in table.columns:
            continue
        values = table[metric].astype(float).dropna()
        if values.empty:
            continue
        reached = values[values >= threshold]
        layer = int(reached.index[0]) if not reached.empty else None
        return Separation(
            metric=metric,
            description=description,
            threshold=threshold,
            layer=layer,
            value=float(reached.iloc[0]) if layer is not None else float("nan"),
            best=float(values.max()),
            best_layer=int(values.index[int(np.argmax(values.to_numpy()))]),
        )
    return None


def gate_mix(results: Results) -> pd.DataFrame:
    """Share of each dominant gate over the heads x inputs of each layer (class ``all``): the
    mean over the layer's heads of ``gate.<g>.share``; rows sum to 1."""
    heads = results.heads
    rows = heads[
        (heads["class"] == "all")
        & (heads["head"] >= 0)
        & heads["metric"].str.match(GATE_SHARE_PATTERN)
    ]
    if rows.empty:
        return pd.DataFrame(dtype=float)
    rows = rows.assign(gate=rows["metric"].str.split(".").str[1])
    table = rows.pivot_table(index="layer", columns="gate", values="value", aggfunc="mean")
    order = [gate for gate in GATE_ORDER if gate in table.columns]
    return table.reindex(columns=order + sorted(set(table.columns) - set(order))).fillna(0.0)


def ablation_costs(table: pd.DataFrame | None) -> tuple[pd.DataFrame | None, dict[str, float]]:
    """The drop of each metric of ``COST_METRICS`` (baseline minus ablated) for every ablation
    and class, and the baseline metrics of class ``all``."""
    if table is None or table.empty:
        return None, {}
    wide = table.pivot_table(
        index=["mode", "layer", "head", "class"], columns="metric", values="value", aggfunc="first"
    ).reindex(columns=list(COST_METRICS))
    if BASELINE_MODE not in wide.index.get_level_values("mode"):
        raise ValueError("ablation.parquet has no baseline row (mode 'none')")
    baseline = wide.xs(BASELINE_MODE, level="mode").droplevel(["layer", "head"])
    ablated = wide.drop(index=BASELINE_MODE, level="mode")
    labels = ablated.index.get_level_values("class")
    reference = baseline.reindex(labels).to_numpy(float)
    costs = pd.DataFrame(reference - ablated.to_numpy(float), ablated.index, ablated.columns)
    overall = baseline.loc["all"] if "all" in baseline.index else pd.Series(dtype=float)
    numbers = {str(key): float(np.asarray(value, dtype=float)) for key, value in overall.items()}
    return costs.reset_index(), {key: value for key, value in numbers.items() if np.isfinite(value)}


def classifier_accuracy(results: Results) -> float | None:
    """The arg-max accuracy on the inputs labelled with one of the model's classes."""
    predictions = results.predictions
    if predictions is None or "predicted_class" not in predictions:
        return None
    classes = results.manifest.get("model", {}).get("classes") or sorted(
        predictions["predicted_class"].dropna().astype(str).unique()
    )
    labelled = predictions[predictions["class"].isin(list(classes))]
    if labelled.empty:
        return None
    return float((labelled["class"].astype(str) == labelled["predicted_class"].astype(str)).mean())


def head_profile(results: Results, layer: int, head: int) -> dict[str, float | str]:
    """What one head attends to: its most frequent dominant gate and that gate's share, and for
    the classifier its enrichment on defining mutations and its most enriched spike domain."""
    heads = results.heads
    rows = heads[(heads["layer"] == layer) & (heads["head"] == head) & (heads["class"] == "all")]
    values = rows.set_index("metric")["value"].astype(float)
    profile: dict[str, float | str] = {}
    shares = values[values.index.str.match(GATE_SHARE_PATTERN)].dropna()
    if not shares.empty:
        profile["gate"] = str(shares.idxmax()).split(".")[1]
        profile["gate_share"] = float(shares.max())
    if Metric.SPIKE_MUTATIONS_ENRICHMENT in values.index:
        profile["mutations"] = float(values[Metric.SPIKE_MUTATIONS_ENRICHMENT])
    domains = values[values.index.str.match(SPIKE_DOMAIN_ENRICHMENT_PATTERN)].dropna()
    domains = domains.drop(spike_domain("other", "enrichment"), errors="ignore")
    if not domains.empty:
        profile["domain"] = str(domains.idxmax()).split(".")[2]
        profile["domain_enrichment"] = float(domains.max())
    return profile


def load_control(results: Results) -> tuple[Results | None, str | None]:
    """The control results of ``results`` (None without one), and why it could not be read."""
    path: Path | None = results.control_path
    if path is None:
        return None, None
    try:
        return load_results(path), None
    except (OSError, ValueError, json.JSONDecodeError, pa.ArrowException) as error:
        return None, f"{path}: cannot be read ({error})"


def results_label(results: Results, default: str) -> str:
    """``default``, or for a control directory "untrained (seed s)"."""
    control = results.manifest.get("control")
    if isinstance(control, dict):
        seed = control.get("seed")
        return "untrained" + (f" (seed {seed})" if seed is not None else "")
    return default


def layer_name(layer: int) -> str:
    return "the embeddings" if layer < 0 else f"layer {layer}"


def head_name(row: pd.Series) -> str:
    return f"{int(row['layer'])}.{int(row['head'])}"


def separation_phrase(summary: Summary) -> str | None:
    """Where the classes separate, e.g. "layer 1 (0.93)" or "never (best 0.35, layer 0)"."""
    found = summary.separation
    if found is None:
        return None
    if found.layer is None:
        return f"never (best {found.best:.3g}, at {layer_name(found.best_layer)})"
    return f"{layer_name(found.layer)} ({found.value:.3g})"


def masking_costs(summary: Summary, block: bool = False) -> pd.DataFrame:
    """Per head (``block``: per layer, the keys masked in all its heads at once), the drop of
    the true class's log-probability (``mutations``, ``matched``) and of accuracy
    (``mutations accuracy``, ``matched accuracy``) when the mutation tokens' keys are masked
    and when as many position-matched keys are; largest log-probability excess first."""
    pieces = []
    for mode, name in ((MASK_MUTATIONS, "mutations"), (MASK_MATCHED, "matched")):
        costs = summary.layer_costs(mode) if block else summary.head_costs(mode)
        rows = costs.set_index(["layer", "head"])
        pieces.append(rows[AblationMetric.TRUE_LOG_PROBABILITY].rename(name))
        pieces.append(rows[AblationMetric.ACCURACY].rename(f"{name} accuracy"))
    table = pd.concat(pieces, axis=1).dropna()
    if table.empty:
        columns = ["mutations", "matched", "mutations accuracy", "matched accuracy"]
        return pd.DataFrame(columns=["layer", "head", *columns])
    order = (table["mutations"] - table["matched"]).sort_values(ascending=False).index
    return table.loc[order].reset_index()
