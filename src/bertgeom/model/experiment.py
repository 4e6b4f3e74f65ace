"""The case study's evaluation: held-out real spikes, synthetic Lambda and Mu reported apart,
and the real genomes kept out of the dataset (``other-VOI`` and ``disputed``), judged by the
class their Nextstrain clade gives them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertgeom.atomic import atomic_file
from bertgeom.genomics.mutations import CLASSES, SYNTHETIC_ONLY_CLASSES
from bertgeom.genomics.reference import data_path
from bertgeom.genomics.synthetic import OUTLIER
from bertgeom.model.ensemble import Predictor
from bertgeom.model.evaluate import (
    classification_metrics,
    plot_confusion_matrix,
)
from bertgeom.model.predict import UNASSIGNED, checked_calls, sequence_evidence


def calls(
    classifier: Predictor, sequences: list[str], batch_size: int = 64
) -> tuple[list[str], list[str], np.ndarray]:
    """Arg-max classes, calls with ``unassigned`` applied (clade tree, probability, change check),
    and best probabilities."""
    settings = classifier.settings
    probabilities = classifier.probabilities(sequences, batch_size)
    evidence = sequence_evidence(sequences, classifier.change_check)
    checked = checked_calls(
        probabilities,
        evidence.changes,
        settings.classes,
        settings.unassigned_threshold,
        classifier.change_check,
        evidence.placements,
        evidence.defining,
    )
    return checked.argmax, checked.called, checked.best


def evaluate_classifier(
    classifier: Predictor, dataset: pd.DataFrame, outside: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Metrics on the test split: real spikes (classes with real data), synthetic spikes (Lambda
    and Mu apart: they exist only synthetically here), and the outside-the-classes genomes."""
    classes = classifier.settings.classes
    all_test = dataset[dataset["split"] == "test"]
    test = all_test[all_test["label"].isin(classes)]
    outliers = all_test[all_test["label"] == OUTLIER]
    result: dict[str, Any] = {
        "unassigned_threshold": classifier.settings.unassigned_threshold,
        "note": "Lambda and Mu have no real sequences in the embedded data: their numbers are on "
        "synthetic spikes only.",
    }
    for source in ("real", "synthetic"):
        part = test[test["source"] == source]
        if part.empty:
            continue
        argmax, called, _ = calls(classifier, list(part["sequence"]))
        metrics = classification_metrics(list(part["label"]), argmax, classes)
        metrics["unassigned_share"] = float(np.mean([c == UNASSIGNED for c in called]))
        metrics["accuracy_with_unassigned"] = float(
            np.mean([c == t for c, t in zip(called, part["label"], strict=True)])
        )
        result[f"test_{source}"] = metrics
    synthetic_only = test[
        (test["source"] == "synthetic") & test["label"].isin(SYNTHETIC_ONLY_CLASSES)
    ]
    if not synthetic_only.empty:
        argmax, _, _ = calls(classifier, list(synthetic_only["sequence"]))
        result["test_synthetic_lambda_mu"] = {
            label: float(
                np.mean(
                    [
                        a == label
                        for a, t in zip(argmax, synthetic_only["label"], strict=True)
                        if t == label
                    ]
                )
            )
            for label in sorted(SYNTHETIC_ONLY_CLASSES)
        }
    if not outliers.empty:
        result["test_synthetic_outliers"] = _unassigned_summary(classifier, outliers)
    if outside is not None and not outside.empty:
        result["outside"] = _unassigned_summary(classifier, outside)
    return result


def _unassigned_summary(classifier: Predictor, part: pd.DataFrame) -> dict[str, Any]:
    _, called, best = calls(classifier, list(part["sequence"]))
    return {
        "n": len(part),
        "unassigned_share": float(np.mean([c == UNASSIGNED for c in called])),
        "calls": pd.Series(called).value_counts().to_dict(),
        "median_best_probability": float(np.median(best)),
        "by_clade": expectation_summary(called, clade_expectation(part)),
    }


def clade_expectation(outside: pd.DataFrame) -> list[str]:
    """What each outside spike should be called, by the tree definition of the classes.

    The embedded ``labels.tsv`` gives every genome its Nextstrain clade computed from
    ``nextstrain_clades.tsv``; the class of that clade (``who_from_clade``: every descendant of
    21K/21L/21M is Omicron, 25I/BA.3.2 included) is the right call, and a clade outside the
    eight (21B-21F) or no clade at all should be ``unassigned``. A row stands for a unique spike:
    its first genome decides. Records not in the embedded labels are expected ``unassigned``.
    """
    labels = pd.read_csv(data_path("labels.tsv"), sep="\t", dtype=str)
    by_clade = dict(zip(labels["record_name"], labels["who_from_clade"], strict=True))
    expected = []
    for record_ids in outside["record_ids"]:
        call = by_clade.get(str(record_ids).split(",")[0], "")
        expected.append(call if call in CLASSES else UNASSIGNED)
    return expected


def expectation_summary(called: list[str], expected: list[str]) -> dict[str, dict[str, int]]:
    """Per expected call (``unassigned`` or a class): how many, and how many were called so."""
    summary: dict[str, dict[str, int]] = {}
    for call, target in zip(called, expected, strict=True):
        entry = summary.setdefault(target, {"n": 0, "as_expected": 0})
        entry["n"] += 1
        entry["as_expected"] += int(call == target)
    return summary


def write_evaluation(metrics: dict[str, Any], directory: Path, title: str) -> None:
    """``metrics.json`` and ``confusion_matrix.png`` (real test spikes, else synthetic)."""
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_file(directory / "metrics.json") as path:
        path.write_text(json.dumps(metrics, indent=2, default=float))
    key = "test_real" if "test_real" in metrics else "test_synthetic"
    if key in metrics:
        with atomic_file(directory / "confusion_matrix.png") as path:
            plot_confusion_matrix(metrics[key], path, f"{title}: {key.replace('_', ' ')}")
