"""The numbers behind docs/findings.md, read from a results directory (the demo's by default).

    .venv/bin/python benchmarks/findings.py demo-output/analysis

Prints, as Markdown tables: the cone index (I / n) and mean cosine of the token stream at each
layer and measuring point; the [CLS] separability per layer; the dominant gate of every head,
overall and per class; and for the classifier the heads' enrichment on defining mutations, on
other changes (the control) and on spike domains, with the most enriched mutations; when the
results hold ``ablation.parquet`` (``analyze --ablation``), the drops when each head is ablated
and the key-masking test; when they hold ``control/`` (``analyze --control``), the trained model
against its untrained control.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from bertgeom.names import (
    GATE_SHARE_PATTERN,
    SPIKE_DOMAIN_ENRICHMENT_PATTERN,
    STREAM_POINTS,
    AblationMetric,
    Metric,
)
from bertgeom.results.store import Results, load_results


def _layers(results: Results, metrics: list[str], point: str, label: str = "all") -> pd.DataFrame:
    layers = results.layers
    assert layers is not None, "run analyze with the global measures"
    rows = layers[
        (layers["point"] == point) & (layers["class"] == label) & layers["metric"].isin(metrics)
    ]
    return rows.pivot(index="layer", columns="metric", values="value")[metrics]


def stream(results: Results) -> pd.DataFrame:
    """I / n and mean cosine of each input's tokens, all classes, per layer and point."""
    frames = []
    for point in STREAM_POINTS:
        table = _layers(results, [Metric.CONE_NORMALIZED_MEAN, Metric.CONE_MEAN_COSINE], point)
        frames.append(table.add_prefix(f"{point}: "))
    return pd.concat(frames, axis=1).sort_index()


def cls_cone(results: Results) -> pd.DataFrame:
    """Cone index I / n of the [CLS] vectors of each class, per layer."""
    layers = results.layers
    assert layers is not None
    rows = layers[(layers["metric"] == Metric.CLS_CONE_NORMALIZED)]
    return rows.pivot(index="layer", columns="class", values="value")


def separability(results: Results) -> pd.DataFrame:
    metrics: list[str] = [
        Metric.CLS_SILHOUETTE,
        Metric.CLS_FISHER_RATIO,
        Metric.CLS_PROBE_ACCURACY,
        Metric.CLS_N_POINTS,
    ]
    return _layers(results, metrics, "layer_output")


def gates(results: Results) -> pd.DataFrame:
    """Dominant gate and its share for every head, overall and per class."""
    heads = results.heads
    rows = heads[heads["metric"].str.match(GATE_SHARE_PATTERN)]
    rows = rows.assign(gate=rows["metric"].str.split(".").str[1])
    top = rows.loc[rows.groupby(["layer", "head", "class"])["value"].idxmax()]
    top = top.assign(cell=top["gate"] + " " + top["value"].map("{:.2f}".format))
    return top.pivot(index=["layer", "head"], columns="class", values="cell")


def mutation_enrichment(
    results: Results, metric: str = Metric.SPIKE_MUTATIONS_ENRICHMENT
) -> pd.DataFrame:
    heads = results.heads
    rows = heads[heads["metric"] == metric]
    return rows.pivot(index=["layer", "head"], columns="class", values="value")


def domain_enrichment(results: Results) -> pd.DataFrame:
    heads = results.heads
    rows = heads[
        heads["metric"].str.match(SPIKE_DOMAIN_ENRICHMENT_PATTERN) & (heads["class"] == "all")
    ]
    rows = rows.assign(domain=rows["metric"].str.split(".").str[2])
    return rows.pivot(index=["layer", "head"], columns="domain", values="value")


def top_mutations(results: Results, count: int = 12) -> pd.DataFrame:
    table = results.mutations
    assert table is not None
    columns = ["layer", "head", "class", "mutation", "aa_effect", "received", "background"]
    columns += ["enrichment", "n_carrying", "n_background"]
    return table.sort_values("enrichment", ascending=False).head(count)[columns]


def ablation_costs(path: Path, mode: str) -> pd.DataFrame:
    """Per head (and block, head -1) of one ablation mode: the drop of accuracy, macro-F1 and
    mean true-class log-probability from the unablated baseline, all inputs, costliest first."""
    table = pd.read_parquet(path)
    everyone = table[table["class"] == "all"]
    baseline = everyone[everyone["mode"] == "none"].set_index("metric")["value"]
    rows = everyone[everyone["mode"] == mode].pivot(
        index=["layer", "head"], columns="metric", values="value"
    )
    metrics = [
        AblationMetric.ACCURACY,
        AblationMetric.MACRO_F1,
        AblationMetric.TRUE_LOG_PROBABILITY,
    ]
    costs = baseline[metrics] - rows[metrics]
    ranking = f"{AblationMetric.TRUE_LOG_PROBABILITY} drop"
    return costs.add_suffix(" drop").sort_values(ranking, ascending=False)


def ablation_by_class(path: Path, mode: str = "zero") -> pd.DataFrame:
    """Accuracy per class with each head (and block) ablated, the baseline first."""
    table = pd.read_parquet(path)
    accuracy = table["metric"] == AblationMetric.ACCURACY
    rows = table[accuracy & table["mode"].isin(["none", mode])]
    return rows.pivot(index=["layer", "head"], columns="class", values="value")


def key_masking(path: Path) -> pd.DataFrame:
    """Per head: the true-class log-probability and accuracy drops when its attention to the
    defining-mutation tokens is masked, against as many position-matched tokens."""
    frames = {
        mode.removeprefix("mask_").removesuffix("_keys"): ablation_costs(path, mode)
        for mode in ("mask_mutation_keys", "mask_matched_keys")
    }
    return pd.concat(frames, axis=1).sort_index()


def trained_vs_control(results: Results, control: Results) -> pd.DataFrame:
    """Cone index I / n of the stream and [CLS] probe accuracy per layer, trained | control."""
    columns = {}
    for name, source in (("trained", results), ("control", control)):
        cone = _layers(source, [Metric.CONE_NORMALIZED_MEAN], "layer_output")
        probe = _layers(source, [Metric.CLS_PROBE_ACCURACY], "layer_output")
        columns[f"I / n {name}"] = cone[Metric.CONE_NORMALIZED_MEAN]
        columns[f"[CLS] probe {name}"] = probe[Metric.CLS_PROBE_ACCURACY]
    return pd.DataFrame(columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, nargs="?", default=Path("demo-output/analysis"))
    arguments = parser.parse_args()
    results = load_results(arguments.results)
    data = results.manifest["data"]
    print(f"{data['analysed']} inputs; classes {data['classes']}\n")
    sections = [
        ("Cone index of the token stream (all inputs)", stream(results)),
        ("Cone index I / n of the [CLS] vectors per class", cls_cone(results)),
        ("[CLS] separability", separability(results)),
        ("Dominant gate per head", gates(results)),
    ]
    if results.mutations is not None:
        sections += [
            ("Enrichment on defining mutations per head and class", mutation_enrichment(results)),
            (
                "Control: enrichment on other changes per head and class",
                mutation_enrichment(results, Metric.SPIKE_CHANGES_ENRICHMENT),
            ),
            ("Enrichment on spike domains per head (all inputs)", domain_enrichment(results)),
            ("Most enriched (head, class, mutation)", top_mutations(results)),
        ]
    ablation = arguments.results / "ablation.parquet"
    if ablation.is_file():
        modes = set(pd.read_parquet(ablation, columns=["mode"])["mode"])
        for mode in ("zero", "mean"):
            if mode in modes:
                sections.append(
                    (f"Ablation ({mode}): drops from the baseline", ablation_costs(ablation, mode))
                )
        sections.append(("Accuracy per class, heads zeroed", ablation_by_class(ablation)))
        if "mask_mutation_keys" in modes:
            sections.append(
                ("Key masking: mutation tokens vs matched tokens", key_masking(ablation))
            )
    if (arguments.results / "control").is_dir():
        control = load_results(arguments.results / "control")
        sections += [
            ("Trained vs untrained control", trained_vs_control(results, control)),
            ("Control: dominant gate per head", gates(control)),
            ("Control: [CLS] separability", separability(control)),
        ]
        if control.mutations is not None:
            sections.append(
                ("Control: enrichment on defining mutations", mutation_enrichment(control))
            )
    for title, table in sections:
        print(f"### {title}\n")
        print(table.to_markdown(floatfmt=".3g"))
        print()


if __name__ == "__main__":
    main()
