"""Benchmark: the shipped BERT against a k-mer logistic regression, side by side, on the same data.

Both are trained on exactly the same split of the embedded data (the BERT by
``benchmarks/train_default_model.sh``, the baseline here) and scored on held-out test spikes
that neither saw (split by unique sequence): real spikes per class, synthetic Lambda and Mu apart,
distant test spikes, one domain masked with N, partial spikes, sequences outside the eight
classes. Then ``bertgeom predict`` is timed on the embedded genomes, start-up included.

    python benchmarks/classifier.py --out bench-output [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertgeom.genomics.dataset import GENOME_FILES, build_dataset
from bertgeom.genomics.kmers import kmers
from bertgeom.genomics.mutations import CLASSES, SYNTHETIC_ONLY_CLASSES
from bertgeom.genomics.reference import SPIKE_DOMAINS, data_path
from bertgeom.genomics.spike import extract_spike
from bertgeom.model.baseline import fit_baseline
from bertgeom.model.change_check import ChangeCheck
from bertgeom.model.evaluate import classification_metrics
from bertgeom.model.experiment import calls, clade_expectation, expectation_summary
from bertgeom.model.predict import checked_calls, sequence_evidence
from bertgeom.model.robustness import mask_domain, partial_spike
from bertgeom.model.storage import load_classifier

Predictor = Callable[[list[str]], tuple[list[str], list[str]]]
"""sequences -> (arg-max classes, calls with 'unassigned')"""


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    versions = f"Python {platform.python_version()}, torch {__import__('torch').__version__}"
    return f"{os.cpu_count()} CPU cores ({cpu}), {versions}"


def checkout_command(src: Path) -> tuple[list[str], dict[str, str]]:
    """The ``bertgeom`` command of another checkout (``src``: its ``src`` folder) and the
    environment that imports it: its console-script function, ``main``, or ``app`` in
    checkouts from before ``main`` existed. For before / after runs interleaved in one run."""
    entry = "import sys; from bertgeom.cli import main as m; sys.exit(getattr(m, 'main', m.app)())"
    return [sys.executable, "-c", entry], {**os.environ, "PYTHONPATH": str(src.resolve())}


def baseline_predictor(
    dataset: pd.DataFrame, check: ChangeCheck | None
) -> tuple[Predictor, dict[str, Any]]:
    """Fit the baseline (:func:`fit_baseline`); its calls go through the same rule as the
    BERT's (clade tree, then the change check; ``None``: the tree and the probability only)."""
    started = time.perf_counter()
    model, threshold = fit_baseline(dataset, CLASSES)

    def predict(sequences: list[str]) -> tuple[list[str], list[str]]:
        evidence = sequence_evidence(sequences, check)
        checked = checked_calls(
            model.predict_proba(sequences),
            evidence.changes,
            model.classes_,
            threshold,
            check,
            evidence.placements,
            evidence.defining,
        )
        return checked.argmax, checked.called

    return predict, {
        "C": model.C,
        "unassigned_threshold": threshold,
        "fit_seconds": time.perf_counter() - started,
    }


def score(predict: Predictor, sequences: list[str], labels: list[str]) -> dict[str, Any]:
    argmax, called = predict(sequences)
    metrics = classification_metrics(labels, argmax, CLASSES)
    metrics["unassigned_share"] = (
        float(np.mean([c == "unassigned" for c in called])) if called else float("nan")
    )
    return metrics


def outside_summary(
    predict: Predictor, sequences: list[str], expected: list[str]
) -> dict[str, Any]:
    """Calls on the outside genomes, against what a spike classifier should say of each."""
    _, called = predict(sequences)
    return {
        "n": len(called),
        "unassigned_share": float(np.mean([c == "unassigned" for c in called])),
        "calls": pd.Series(called).value_counts().to_dict(),
        "by_clade": expectation_summary(called, expected),
        "per_spike": [list(pair) for pair in zip(expected, called, strict=True)],
    }


def kmer_distance_to_training(test: list[str], train: list[str]) -> np.ndarray:
    """For each test spike, the fewest k-mer tokens by which it differs from any training spike."""
    train_sets = [set(kmers(sequence)) for sequence in train]
    distances = []
    for sequence in test:
        tokens = set(kmers(sequence))
        distances.append(min(len(tokens ^ other) for other in train_sets))
    return np.array(distances)


def predict_throughput(model: Path | None, work: Path) -> dict[str, float]:
    """Time ``bertgeom predict`` on all embedded genomes, process start-up included."""
    fasta = work / "embedded_genomes.fa"
    with fasta.open("w") as handle:
        for name in GENOME_FILES:
            with lzma.open(data_path(name), "rt") as genomes:
                handle.write(genomes.read())
    n_records = sum(1 for line in fasta.open() if line.startswith(">"))
    command = [
        str(Path(sys.executable).with_name("bertgeom")),
        "predict",
        "--fasta",
        str(fasta),
        "--out",
        str(work / "calls.tsv"),
    ]
    if model is not None:
        command += ["--model", str(model)]
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        runs.append(time.perf_counter() - started)
    seconds = float(np.median(runs))
    return {
        "records": n_records,
        "seconds_median_of_3": seconds,
        "genomes_per_second": n_records / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    parser.add_argument("--model", type=Path, default=None, help="classifier (default: shipped)")
    parser.add_argument(
        "--seed", type=int, default=42, help="the dataset seed the model was trained with"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    dataset, outside = build_dataset(seed=args.seed)
    train = dataset[dataset["split"] == "train"]
    test = dataset[dataset["split"] == "test"]
    real = test[test["source"] == "real"]
    synthetic = test[test["source"] == "synthetic"]

    classifier = load_classifier(args.model)
    bert: Predictor = lambda sequences: calls(classifier, sequences)[:2]  # noqa: E731
    check = classifier.change_check
    baseline, baseline_info = baseline_predictor(dataset, check)
    models = {"bert": bert, "kmer_logistic_regression": baseline}
    unchecked = replace(classifier, change_check=None)
    bert_unchecked: Predictor = lambda sequences: calls(unchecked, sequences)[:2]  # noqa: E731
    baseline_unchecked, _ = baseline_predictor(dataset, None)
    expected = clade_expectation(outside)

    spikes = [
        extract_spike(sid, sequence)
        for sid, sequence in zip(real["sequence_id"], real["sequence"], strict=True)
    ]
    distance = kmer_distance_to_training(list(real["sequence"]), list(train["sequence"]))
    distant = distance >= 6
    partial = {f: [partial_spike(s, f, rng) for s in real["sequence"]] for f in (0.5, 0.7, 0.9)}
    partial_aligned = {
        f: [extract_spike("p", s).sequence for s in seqs] for f, seqs in partial.items()
    }

    results: dict[str, Any] = {"machine": machine(), "baseline": baseline_info}
    labels = list(real["label"])
    for name, predict in models.items():
        started = time.perf_counter()
        entry: dict[str, Any] = {"real_test": score(predict, list(real["sequence"]), labels)}
        entry["predict_seconds_real_test"] = time.perf_counter() - started
        entry["synthetic_test"] = score(
            predict, list(synthetic["sequence"]), list(synthetic["label"])
        )
        entry["distant_real_test"] = score(
            predict,
            list(real["sequence"][distant]),
            [label for label, d in zip(labels, distant, strict=True) if d],
        )
        entry["masked_domain"] = {
            domain: score(predict, [mask_domain(s, domain) for s in spikes], labels)
            for domain, _, _ in SPIKE_DOMAINS
            if domain in ("NTD", "RBD", "SD1/SD2", "S2' / FP")
        }
        entry["partial"] = {
            str(f): score(predict, seqs, labels) for f, seqs in partial_aligned.items()
        }
        entry["outside"] = outside_summary(predict, list(outside["sequence"]), expected)
        results[name] = entry
    for name, predict in (
        ("bert", bert_unchecked),
        ("kmer_logistic_regression", baseline_unchecked),
    ):
        results[name]["outside_without_check"] = outside_summary(
            predict, list(outside["sequence"]), expected
        )
        _, called = predict(list(real["sequence"]))
        results[name]["real_test_unassigned_without_check"] = float(
            np.mean([c == "unassigned" for c in called])
        )
    results["distant_definition"] = (
        "real test spikes differing from every training spike by >= 6 k-mer tokens"
    )
    results["n_distant"] = int(distant.sum())
    results["predict_throughput"] = predict_throughput(args.model, args.out)
    (args.out / "classifier.json").write_text(json.dumps(results, indent=2, default=float))
    (args.out / "classifier.md").write_text(markdown(results))
    print(markdown(results))


def fmt(m: dict[str, Any]) -> str:
    """F1 / precision / recall / specificity of one class."""
    return f"{m['f1']:.3f} / {m['precision']:.3f} / {m['recall']:.3f} / {m['specificity']:.3f}"


def markdown(results: dict[str, Any]) -> str:
    names = ("bert", "kmer_logistic_regression")
    lines = [
        f"Machine: {results['machine']}",
        "",
        "| test set | BERT macro-F1 | BERT accuracy | LR macro-F1 | LR accuracy |",
        "|---|---|---|---|---|",
    ]

    def row(title: str, get: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        cells = []
        for name in names:
            metrics = get(results[name])
            cells += [f"{metrics['macro_f1']:.4f}", f"{metrics['accuracy']:.4f}"]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")

    row(f"real test spikes (n={results['bert']['real_test']['n']})", lambda r: r["real_test"])
    row(f"distant real test spikes (n={results['n_distant']})", lambda r: r["distant_real_test"])
    row(
        f"synthetic test spikes, 8 classes (n={results['bert']['synthetic_test']['n']})",
        lambda r: r["synthetic_test"],
    )
    for domain in results["bert"]["masked_domain"]:
        row(f"real test, {domain} masked with N", lambda r, d=domain: r["masked_domain"][d])
    for fraction in results["bert"]["partial"]:
        row(
            f"real test, partial spike ({float(fraction):.0%})",
            lambda r, f=fraction: r["partial"][f],
        )
    lines += [
        "",
        "Per class, real test spikes (F1 / precision / recall / specificity, support):",
        "",
        "| class | BERT | LR | support |",
        "|---|---|---|---|",
    ]
    for label in CLASSES:
        b, lr = (
            results["bert"]["real_test"]["per_class"][label],
            results["kmer_logistic_regression"]["real_test"]["per_class"][label],
        )
        if b["support"]:
            lines.append(f"| {label} | {fmt(b)} | {fmt(lr)} | {b['support']} |")
    lines += [
        "",
        "Synthetic-only classes (recall on synthetic test spikes; no real sequences exist here):",
        "",
    ]
    for label in sorted(SYNTHETIC_ONLY_CLASSES):
        b, lr = (
            results["bert"]["synthetic_test"]["per_class"][label],
            results["kmer_logistic_regression"]["synthetic_test"]["per_class"][label],
        )
        lines.append(
            f"- {label}: BERT recall {b['recall']:.3f}, LR recall {lr['recall']:.3f} "
            f"(n={b['support']})"
        )
    lines += [
        "",
        "Genomes kept out of the dataset (real other-VOI and disputed genomes, unique spikes), "
        "against the class of their Nextstrain clade (as expected / n):",
        "",
        "| model | unassigned expected (21B-21F, no clade) | a class expected (by clade) | calls |",
        "|---|---|---|---|",
    ]
    for name in names:
        for key, title in (
            ("outside", "the clade tree, then the change check"),
            ("outside_without_check", "the clade tree, then the probability only"),
        ):
            o = results[name][key]
            by = o["by_clade"]
            blank = by.get("unassigned", {"n": 0, "as_expected": 0})
            named = [v for k, v in by.items() if k != "unassigned"]
            n_named, ok_named = sum(v["n"] for v in named), sum(v["as_expected"] for v in named)
            lines.append(
                f"| {name}, {title} | {blank['as_expected']} / {blank['n']} | "
                f"{ok_named} / {n_named} | {o['calls']} |"
            )
    lines += [
        "",
        "Real test spikes withheld (`unassigned`): "
        + ", ".join(
            f"{name} {results[name]['real_test']['unassigned_share']:.3f} with the check, "
            f"{results[name]['real_test_unassigned_without_check']:.3f} without"
            for name in names
        ),
    ]
    t = results["predict_throughput"]
    lines += [
        "",
        f"`bertgeom predict` on the {t['records']} embedded genomes (alignment and start-up "
        f"included): {t['seconds_median_of_3']:.1f} s, {t['genomes_per_second']:.0f} genomes/s "
        "(median of 3 runs).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
