"""A fabricated results directory holding every table and array the report reads (the whole
contract of ``docs/results.md``, the global and spike outputs, the ablation table and an
untrained control included), small and random but shaped like the real thing, so that every
section of the report is exercised; a few numbers are planted for the findings to find."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertgeom.genomics.reference import SPIKE_DOMAIN_SLUGS, SPIKE_DOMAINS
from bertgeom.measures.gates import DOMINANT_NAMES, GATE_NAMES
from bertgeom.names import STREAM_POINTS as POINTS
from bertgeom.results.store import HEAD_COLUMNS, LAYER_COLUMNS, ResultsWriter, tidy

CLASSES = ("Alpha", "Delta", "Lambda")
CODONS = 1273
ABLATION_COLUMNS = ["layer", "head", "mode", "class", "metric", "value"]
BASELINE_ACCURACY = 0.9
PLANTED_ZERO_DROP = 0.4
"""Accuracy drop of zeroing the planted head (every other head costs at most 0.03)."""
PLANTED_MASK_HEAD = (0, 1)
"""The head whose mutation tokens, masked, cost most (log-probability drop 0.6 vs 0.05)."""
EMBEDDING_CONE = {False: 0.2, True: 0.65}
"""I/n at the embeddings (class all), trained and untrained."""
CONTROL_SEED_OFFSET = 1000


def planted_head(layers: int, heads: int) -> tuple[int, int]:
    """The head whose zeroing costs most: (1, 2) in the default 2 x 4 model."""
    return layers - 1, min(2, heads - 1)


def write_fabricated_results(
    path: Path,
    layers: int = 2,
    heads: int = 4,
    classes: tuple[str, ...] = CLASSES,
    inputs: int = 60,
    map_length: int = 48,
    seed: int = 0,
    ablation: bool = True,
    control: bool = True,
    untrained: bool = False,
) -> Path:
    """Write a results directory at ``path`` with every table and array of the contract; with
    ``control``, also ``path/control``, the same shape ``untrained`` (a flatter, higher cone,
    classes that never separate, open gates)."""
    rng = np.random.default_rng(seed)
    labels = ["all", *classes]
    input_classes = [classes[i % len(classes)] for i in range(inputs)]
    with ResultsWriter(path) as writer:
        head_rows = _heads(rng, layers, heads, labels, untrained)
        writer.write_table("heads", tidy(head_rows, HEAD_COLUMNS))
        writer.write_table("layers", tidy(_layers(rng, layers, labels, untrained), LAYER_COLUMNS))
        writer.write_table("predictions", _predictions(rng, input_classes, untrained))
        if ablation:
            rows = _ablation(rng, layers, heads, classes)
            writer.write_table("ablation", tidy(rows, ABLATION_COLUMNS))
        writer.write_table("pca", _pca(rng, layers, input_classes))
        writer.write_table("histograms", _histograms(rng, layers, labels))
        writer.write_table("mutations", _mutations(rng, layers, heads, classes))
        pairs = [[layer, head] for layer in range(layers) for head in range(heads)]
        maps = rng.dirichlet(np.ones(map_length), size=(len(labels), len(pairs), map_length))
        maps[..., map_length - 4 :, :] = np.nan  # positions no input reached
        writer.write_array(
            "class_mean_maps",
            maps.astype(np.float16),
            ["class", "pair", "query", "key"],
            "class-mean attention maps",
            {"class": labels, "pair": pairs, "inputs": [[inputs] * len(pairs)] * len(labels)},
        )
        for kind in ("query", "key", "value", "write", "query_key"):
            overlap = rng.uniform(0, 0.5, size=(layers, heads, heads))
            overlap = (overlap + overlap.transpose(0, 2, 1)) / 2
            overlap[:, np.arange(heads), np.arange(heads)] = 1.0
            writer.write_array(f"overlap_{kind}", overlap, ["layer", "head", "head"], kind)
        writer.write_array(
            "singular_values",
            np.sort(rng.uniform(0, 3, size=(layers, heads, 8)))[..., ::-1].copy(),
            ["layer", "head", "rank"],
            "singular values",
        )
        writer.write_array(
            "spike_attention_profile",
            rng.gamma(2.0, 0.01, size=(len(labels), layers, heads, CODONS)).astype(np.float32),
            ["class", "layer", "head", "codon"],
            "mean attention received by each spike codon",
            {"class": labels},
        )
        manifest = _manifest(layers, heads, labels, input_classes)
        if control:
            manifest["control"] = "control"
        if untrained:
            manifest["control"] = {"kind": "random-init", "seed": seed}
        writer.write_manifest(manifest)
    if control:
        write_fabricated_results(
            path / "control",
            layers,
            heads,
            classes,
            inputs,
            map_length,
            seed + CONTROL_SEED_OFFSET,
            ablation=False,
            control=False,
            untrained=True,
        )
    return path


def _rows(records: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(records)


def _heads(
    rng: np.random.Generator, layers: int, heads: int, labels: list[str], untrained: bool
) -> pd.DataFrame:
    records: list[dict[str, Any]] = []
    slugs = [SPIKE_DOMAIN_SLUGS[name] for name, _, _ in SPIKE_DOMAINS] + ["other"]
    for layer in range(layers):
        records.append(_row(layer, -1, "all", "subspace.layer.overlap_chance", 0.25))
        for head in range(heads):
            favourite = (layer * heads + head) % len(DOMINANT_NAMES)
            if untrained:
                favourite = DOMINANT_NAMES.index("open")
            for label in labels:
                weights = np.full(len(DOMINANT_NAMES), 0.3)
                # Some classes move some heads to another gate: per-class differences to draw.
                shift = label != "all" and (head + len(label)) % 3 == 0
                weights[(favourite + 1) % len(DOMINANT_NAMES) if shift else favourite] = 6.0
                shares = rng.dirichlet(weights)
                for gate, share in zip(DOMINANT_NAMES, shares, strict=True):
                    records.append(_row(layer, head, label, f"gate.{gate}.share", share))
                for gate in GATE_NAMES:
                    records.append(
                        _row(layer, head, label, f"gate.{gate}.score_mean", rng.uniform())
                    )
                records.append(_row(layer, head, label, "gate.inputs", 20.0))
                for point in ("head_output", "attention_rows"):
                    metric = f"cone.{point}.normalized_mean"
                    records.append(_row(layer, head, label, metric, rng.uniform(0.2, 0.9)))
                for slug in slugs:
                    metric = f"spike.domain.{slug}.enrichment"
                    records.append(_row(layer, head, label, metric, rng.gamma(4.0, 0.25)))
                metric = "spike.mutations.enrichment"
                records.append(_row(layer, head, label, metric, rng.gamma(4.0, 0.25)))
                for name, value in (("participation_ratio", 8.0), ("excess_kurtosis", 1.0)):
                    metric = f"dist.head_output.{name}"
                    records.append(_row(layer, head, label, metric, value * rng.uniform(0.5, 1)))
            for name, value in (
                ("symmetry_score", rng.uniform(0, 1)),
                ("directionality_score", rng.uniform(-1, 0.3)),
                ("asymmetry", rng.uniform(0, 1.2)),
                ("query_key_overlap", rng.uniform(0, 1)),
                ("participation_ratio", rng.uniform(1, 8)),
            ):
                records.append(_row(layer, head, "all", f"subspace.{name}", value))
    return _rows(records)


def _row(layer: int, head: int, label: str, metric: str, value: float) -> dict[str, Any]:
    return {"layer": layer, "head": head, "class": label, "metric": metric, "value": value}


def _layers(
    rng: np.random.Generator, layers: int, labels: list[str], untrained: bool
) -> pd.DataFrame:
    records: list[dict[str, Any]] = []
    for label in labels:  # the embedding output, layer -1
        level = EMBEDDING_CONE[untrained]
        for metric, value in (("cone.normalized_mean", level), ("cone.mean_cosine", level**2)):
            records.append(_layer_row(-1, "layer_output", label, metric, value))
    for layer in range(layers):
        for point_index, point in enumerate(POINTS):
            for label in labels:
                level = min(0.98, 0.3 + 0.2 * layer + 0.05 * point_index + rng.uniform(0, 0.05))
                if untrained:
                    level = 0.7 + 0.01 * layer + 0.01 * point_index
                for metric, value in (
                    ("cone.normalized_mean", level),
                    ("cone.normalized_std", 0.05),
                    ("cone.index_std", 1.5),
                    ("cone.mean_cosine", level**2),
                ):
                    records.append(_layer_row(layer, point, label, metric, value))
            for metric, value in (
                ("dist.variance", rng.uniform(0.5, 2)),
                ("dist.skewness", rng.normal(0, 0.3)),
                ("dist.excess_kurtosis", rng.uniform(0, 8)),
                ("dist.participation_ratio", rng.uniform(5, 30)),
                ("dist.outlier_count", float(rng.integers(0, 4))),
            ):
                records.append(_layer_row(layer, point, "all", metric, value))
        for label in labels:
            value = 0.5 + 0.1 * layer
            records.append(_layer_row(layer, "layer_output", label, "cls.cone.normalized", value))
    for layer in range(-1, layers):
        # trained: the probe reaches 0.9 at the last layer of the default 2-layer model
        probe = 0.35 if untrained else min(1.0, 0.5 + 0.2 * (layer + 1))
        for metric, value in (
            ("cls.silhouette", 0.02 if untrained else 0.1 + 0.2 * (layer + 1)),
            ("cls.fisher_ratio", 0.1 if untrained else 0.5 + layer + 1),
            ("cls.probe_accuracy", probe),
            ("cls.pca.explained_1", 0.4),
            ("cls.pca.explained_2", 0.2),
        ):
            records.append(_layer_row(layer, "layer_output", "all", metric, value))
    return _rows(records)


def _layer_row(layer: int, point: str, label: str, metric: str, value: float) -> dict[str, Any]:
    return {"layer": layer, "point": point, "class": label, "metric": metric, "value": value}


def _predictions(
    rng: np.random.Generator, input_classes: list[str], untrained: bool
) -> pd.DataFrame:
    classes = sorted(set(input_classes))
    hit = 0.0 if untrained else 0.85
    predicted = [
        label if rng.uniform() < hit else classes[int(rng.integers(len(classes)))]
        for label in input_classes
    ]
    return pd.DataFrame(
        {
            "input_index": range(len(input_classes)),
            "input_id": [f"s{i}" for i in range(len(input_classes))],
            "class": input_classes,
            "predicted_class": predicted,
            "probability": rng.uniform(0.5, 1.0, len(input_classes)),
        }
    )


def _pca(rng: np.random.Generator, layers: int, input_classes: list[str]) -> pd.DataFrame:
    frames = []
    classes = sorted(set(input_classes))
    centres = {label: rng.normal(0, 1, 2) for label in classes}
    for layer in range(-1, layers):
        spread = 1.0 / (layer + 2)
        points = np.array([centres[c] for c in input_classes]) * (layer + 2)
        points += rng.normal(0, spread * 3, points.shape)
        frames.append(
            pd.DataFrame(
                {"layer": layer, "class": input_classes, "pc1": points[:, 0], "pc2": points[:, 1]}
            )
        )
    return pd.concat(frames, ignore_index=True)


def _ablation(
    rng: np.random.Generator, layers: int, heads: int, classes: tuple[str, ...]
) -> pd.DataFrame:
    """Baseline, zero and mean ablation of every head and attention block, and the two key
    maskings per head and per layer, for class all and each class; the planted heads cost
    most."""
    planted = planted_head(layers, heads)
    labels = ["all", *classes]
    records = []

    def add(layer: int, head: int, mode: str, accuracy_drop: float, log_drop: float) -> None:
        for label in labels:
            # the planted head hurts the second class most
            hurt = 2.0 if (layer, head) == planted and label == classes[1] else 1.0
            accuracy = BASELINE_ACCURACY - min(BASELINE_ACCURACY, accuracy_drop * hurt)
            metrics = {
                "accuracy": accuracy,
                "true_log_probability": -0.3 - log_drop * hurt,
                "inputs": 60.0 if label == "all" else 20.0,
            }
            if label == "all":
                metrics["macro_f1"] = accuracy - 0.02
            for metric, value in metrics.items():
                records.append(
                    {"layer": layer, "head": head, "mode": mode, "class": label}
                    | {"metric": metric, "value": value}
                )

    add(-1, -1, "none", 0.0, 0.0)
    for mode, scale in (("zero", 1.0), ("mean", 0.75)):
        for layer in range(layers):
            add(layer, -1, mode, scale * (0.5 + 0.1 * layer), scale * (1.0 + 0.2 * layer))
            for head in range(heads):
                drop = PLANTED_ZERO_DROP if (layer, head) == planted else rng.uniform(0, 0.03)
                add(layer, head, mode, scale * drop, scale * 2 * drop + rng.uniform(0, 0.01))
    for layer in range(layers):
        for head in range(heads):
            mutation_drop = 0.6 if (layer, head) == PLANTED_MASK_HEAD else rng.uniform(0, 0.1)
            add(layer, head, "mask_mutation_keys", 0.0, mutation_drop)
            add(layer, head, "mask_matched_keys", 0.0, 0.05)
        # every head of the layer at once: layer 0's mutation keys cost most
        add(layer, -1, "mask_mutation_keys", 0.3 - 0.2 * layer, 1.5 - layer)
        add(layer, -1, "mask_matched_keys", 0.01, 0.1)
    return pd.DataFrame.from_records(records)


def _histograms(rng: np.random.Generator, layers: int, labels: list[str]) -> pd.DataFrame:
    frames = []
    for kind, edges in (
        ("values", np.linspace(-4, 4, 33)),
        ("cone_normalized", np.linspace(0, 1, 21)),
    ):
        centres = (edges[:-1] + edges[1:]) / 2
        for layer in range(layers):
            for point in POINTS:
                for label in labels:
                    middle = 0.0 if kind == "values" else 0.3 + 0.2 * layer
                    width = 1.0 if kind == "values" else 0.1
                    density = np.exp(-0.5 * ((centres - middle) / width) ** 2)
                    # An underflow and an overflow bin, with infinite edges, first and last.
                    bins = pd.DataFrame(
                        {
                            "bin_left": np.concatenate([[-np.inf], edges]),
                            "bin_right": np.concatenate([edges, [np.inf]]),
                            "count": [3, *rng.poisson(200 * density), 1],
                        }
                    )
                    frames.append(
                        bins.assign(layer=layer, point=point, kind=kind, **{"class": label})
                    )
    columns = ["layer", "point", "class", "kind", "bin_left", "bin_right", "count"]
    return pd.concat(frames, ignore_index=True)[columns]


def _mutations(
    rng: np.random.Generator, layers: int, heads: int, classes: tuple[str, ...]
) -> pd.DataFrame:
    records = []
    for layer in range(layers):
        for head in range(heads):
            for label in classes:
                for index, (mutation, effect, start) in enumerate(
                    (("A23403G", "D614G", 23403), ("C23604A", "P681H", 23604))
                ):
                    received = rng.uniform(0.001, 0.02)
                    background = rng.uniform(0.002, 0.01)
                    records.append(
                        {
                            "layer": layer,
                            "head": head,
                            "class": label,
                            "mutation": mutation,
                            "aa_effect": effect,
                            "start": start,
                            "received": received,
                            "background": background,
                            "enrichment": received / background,
                            "n_carrying": 20 - index,
                            "n_background": 40,
                        }
                    )
    return pd.DataFrame.from_records(records)


def _manifest(
    layers: int, heads: int, labels: list[str], input_classes: list[str]
) -> dict[str, Any]:
    counts = {label: input_classes.count(label) for label in labels[1:]}
    return {
        "model": {
            "path": "/models/fabricated",
            "model_type": "bert",
            "architectures": ["BertForSequenceClassification"],
            "name_or_path": "fabricated-classifier",
            "n_layers": layers,
            "n_heads": heads,
            "hidden_size": 16 * heads,
            "head_size": 16,
            "max_tokens": 512,
            "classes": list(labels[1:]),
        },
        "data": {
            "source": "fasta",
            "path": "/data/spikes.fa",
            "read": len(input_classes) + 2,
            "analysed": len(input_classes),
            "skipped": {"too_many_n": 2},
            "truncated": 0,
            "unlabelled": 0,
            "classes": counts,
        },
        "classes": labels,
        "parameters": {
            "batch_size": 16,
            "global_measures": True,
            "thresholds": {"closed": 0.6, "directional": 0.5},
            "high_attention_threshold": 0.3,
        },
        "predictions": {"labelled_inputs": len(input_classes), "accuracy": 0.85},
        "versions": {"python": "3.11", "bertgeom": "0.1.0"},
        "timings": {"load_s": 0.1, "total_s": 2.5, "per_measurement_s": {"gates": 0.4}},
    }
