"""Benchmark: what checkpoints cost, side by side with the baseline in one run.

- training: the ``small`` preset on a dataset directory with and without ``--checkpoints``
  (the default schedule, ``0,log,epochs``), runs alternated, medians; the difference split into
  the checkpoints it kept (each a validation pass, unless at an epoch's end where the epoch's
  own is reused, and a model directory written);
- analysis (``--analysis``): ``analyze --over-training`` of the checkpoints on the test split
  against one ``analyze`` of one checkpoint on the same inputs, times the number of
  checkpoints (target: at most 10 % above).

    python benchmarks/checkpoints.py --data demo-output/data [--epochs 2] [--repeats 2]
        [--analysis]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from classifier import machine  # benchmarks/ is on sys.path when run as a script

from bertgeom.genomics.dataset import load_dataset
from bertgeom.model.train import TrainingOptions, train_classifier
from bertgeom.model.training_checkpoints import DEFAULT_SCHEDULE, list_checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--analysis", action="store_true")
    arguments = parser.parse_args()
    dataset = load_dataset(arguments.data)
    seconds: dict[str, list[float]] = {"without": [], "with": []}
    kept = 0
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for repeat in range(arguments.repeats):
            for name, schedule in (("without", None), ("with", DEFAULT_SCHEDULE)):
                options = TrainingOptions("small", arguments.epochs, checkpoints=schedule)
                out = root / f"{name}-{repeat}"
                started = time.perf_counter()
                report = train_classifier(dataset, out, options)
                seconds[name].append(time.perf_counter() - started)
                kept = max(kept, len(report.checkpoints))
        without, with_ = (statistics.median(seconds[name]) for name in ("without", "with"))
        print(f"machine: {machine()}")
        print(
            f"training small, {arguments.epochs} epochs, {len(dataset)} rows: without "
            f"checkpoints {without:.1f} s, with {kept} checkpoints ({DEFAULT_SCHEDULE}) "
            f"{with_:.1f} s: +{100 * (with_ / without - 1):.1f} % "
            f"({(with_ - without) / kept:.2f} s a checkpoint)"
        )
        if arguments.analysis:
            analysis(root / "with-0", arguments.data, root)


def analysis(model: Path, data: Path, root: Path) -> None:
    """``analyze --over-training`` against ``analyze`` of one checkpoint times their number."""
    from bertgeom.analysis import AnalysisOptions, InputSpec, analyze
    from bertgeom.analysis.over_training import analyze_over_training

    checkpoints = list_checkpoints(model)
    spec = InputSpec("data", data, split="test")
    options = AnalysisOptions()
    started = time.perf_counter()
    analyze(checkpoints[-1].directory, spec, root / "one", options)
    one = time.perf_counter() - started
    started = time.perf_counter()
    analyze_over_training(model, spec, root / "over", options)
    over = time.perf_counter() - started
    print(
        f"analysis of the test split: one checkpoint {one:.1f} s; over training, "
        f"{len(checkpoints)} checkpoints {over:.1f} s = {over / (one * len(checkpoints)):.3f} x "
        f"({len(checkpoints)} x one)"
    )


if __name__ == "__main__":
    main()
