"""Eager attention against PyTorch's fused ``sdpa`` kernel, the same model and batches, in one run.

The note of issue 10 (what sdpa would give analyze) and the reason the ablation's passes run on
sdpa: one model loaded once, its attention kernel switched between the runs
(``set_attn_implementation``), interleaved ``--repeats`` times, medians. Two workloads: MiniLM
on seeded sentences (8-30 words) at batch 32 and 8, and the shipped spike classifier on
``--spikes`` held-out spikes of the demo's dataset (about 427 tokens each) at batch 32.

    .venv/bin/python benchmarks/attention_kernels.py [--data demo-output/data] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from analyze_speed import model_directory, sentences  # benchmarks/ is on sys.path as a script
from classifier import machine

from bertgeom.analysis import AnalysisOptions, InputSpec, open_source
from bertgeom.capture.input_batch import InputBatch
from bertgeom.capture.loading import LoadedModel, load_model
from bertgeom.capture.text_source import TextSource
from bertgeom.genomics.dataset import build_dataset, save_dataset
from bertgeom.model.storage import default_model_directory


def seconds(loaded: LoadedModel, batches: list[InputBatch], kernel: str) -> float:
    loaded.model.set_attn_implementation(kernel)
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            loaded.model(**batch.encoding)
    return time.perf_counter() - started


def compare(name: str, loaded: LoadedModel, batches: list[InputBatch], repeats: int) -> None:
    times: dict[str, list[float]] = {"eager": [], "sdpa": []}
    for _ in range(repeats):
        for kernel, values in times.items():
            values.append(seconds(loaded, batches, kernel))
    eager, sdpa = statistics.median(times["eager"]), statistics.median(times["sdpa"])
    print(f"{name:<40} {eager:8.2f} {sdpa:8.2f} {eager / sdpa:8.2f}")
    loaded.model.set_attn_implementation("eager")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="dataset directory (default: built here)")
    parser.add_argument("--spikes", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    print(f"{'workload':<40} {'eager s':>8} {'sdpa s':>8} {'speed-up':>8}")
    with tempfile.TemporaryDirectory(prefix="bertgeom-kernels-") as scratch_name:
        scratch = Path(scratch_name)
        minilm_dir, name = model_directory(scratch)
        text = scratch / "sentences.txt"
        text.write_text("\n".join(sentences(400)) + "\n")
        minilm = load_model(minilm_dir)
        for batch_size in (32, 8):
            batches = list(TextSource(minilm, text).batches(batch_size))
            compare(f"{name}, 400 sentences, batch {batch_size}", minilm, batches, args.repeats)
        data = args.data
        if data is None:
            data = scratch / "data"
            save_dataset(*build_dataset(seed=42), data)
        spike_model = load_model(default_model_directory())
        options = AnalysisOptions(max_inputs=args.spikes)
        source = open_source(spike_model, InputSpec("data", data, split="test"), options)
        batches = list(source.batches(32))
        compare(f"spike classifier, {args.spikes} test spikes", spike_model, batches, args.repeats)


if __name__ == "__main__":
    main()
