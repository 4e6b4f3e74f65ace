"""Benchmark: head ablation of every head against ``analyze``, on the same spikes, in one run.

Issue 11's target: ablating all heads of the demo model on the held-out test spikes within 2x
the time of ``analyze`` on them. Both are timed as the library calls the CLI makes, loading and
reading included, interleaved ``--repeats`` times: ``analyze`` with its defaults (global
measures on, no ablation, no control) and the ablation alone (``capture.ablation.run_ablation``
on a fresh source) for each set of kinds: ``zero`` (every head and every block zeroed),
``zero,mean`` (the mean needs a second pass) and ``zero,mean,keys`` (the demo's: the key masks
of every head too). Prints the medians and the ratios.

    .venv/bin/python benchmarks/ablation.py [--data DIR] [--model DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from classifier import machine  # benchmarks/ is on sys.path when run as a script

from bertgeom.analysis import AnalysisOptions, InputSpec, analyze, open_source
from bertgeom.capture.ablation import run_ablation
from bertgeom.capture.loading import load_model
from bertgeom.genomics.dataset import build_dataset, save_dataset

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "src" / "bertgeom" / "model" / "default"
KINDS = (("zero",), ("zero", "mean"), ("zero", "mean", "keys"))


def analyze_seconds(model: Path, spec: InputSpec, scratch: Path) -> float:
    started = time.perf_counter()
    analyze(model, spec, scratch / f"results-{time.monotonic_ns()}", AnalysisOptions())
    return time.perf_counter() - started


def ablation_seconds(model: Path, spec: InputSpec, kinds: tuple[str, ...]) -> tuple[float, int]:
    started = time.perf_counter()
    loaded = load_model(model)
    options = AnalysisOptions()
    run = run_ablation(
        loaded,
        lambda: open_source(loaded, spec, options).batches(options.batch_size),
        kinds,
    )
    return time.perf_counter() - started, len(run.accumulator.ablations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="dataset directory (default: the demo's)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="bertgeom-ablation-") as scratch_name:
        scratch = Path(scratch_name)
        data = args.data
        if data is None:
            data = scratch / "data"
            save_dataset(*build_dataset(seed=42), data)
        spec = InputSpec("data", data, split="test")
        analyze_seconds(args.model, spec, scratch)  # warm-up: imports, caches
        times: dict[str, list[float]] = {"analyze": []}
        counts: dict[str, int] = {}
        for _ in range(args.repeats):
            times["analyze"].append(analyze_seconds(args.model, spec, scratch))
            for kinds in KINDS:
                seconds, count = ablation_seconds(args.model, spec, kinds)
                times.setdefault(",".join(kinds), []).append(seconds)
                counts[",".join(kinds)] = count
    base = statistics.median(times["analyze"])
    print(f"{'run':<20} {'ablations':>9} {'median s':>9} {'x analyze':>9}")
    print(f"{'analyze':<20} {'':>9} {base:9.1f} {1.0:9.2f}")
    for name, values in times.items():
        if name != "analyze":
            median = statistics.median(values)
            print(f"{'ablation ' + name:<20} {counts[name]:9d} {median:9.1f} {median / base:9.2f}")


if __name__ == "__main__":
    main()
