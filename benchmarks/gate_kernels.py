"""The gate kernels against an earlier version of them (issue 23), interleaved in one process.

Times ``gate_scores`` and ``ClassMeanAttentionAccumulator.update`` (every head of the layer
chosen, two classes) on synthetic right-padded attention (softmax of random logits with a block
structure over the real keys; padding rows attend to the real keys, as in a Hugging Face BERT),
for each shape ``batch x heads x seq x seq`` with every input at full length ("full") and with
lengths drawn from seq/3..seq ("mixed"). Each repeat runs the earlier and the current version
back to back; the table gives medians in ms and their ratio (earlier / current), and checks
that both give the same scores and the same class-mean maps (the largest difference; the maps
are float16). The machine's load average is printed with the table: on a shared machine the
earlier version's many-threaded steps slow down far more than the current single-threaded
workers, so compare ``--threads 1`` too.

    git worktree add /tmp/gates-before <commit>   # or copy the two files into a folder
    .venv/bin/python benchmarks/gate_kernels.py --before /tmp/gates-before/src/bertgeom/measures
    .venv/bin/python benchmarks/gate_kernels.py --before DIR --threads 1 --shape 32,4,512

``--before DIR``: the folder holding the earlier ``gates.py`` and ``class_mean_maps.py`` (or
``gate_accumulators.py``)
(loaded as modules of their own; whatever they import from ``bertgeom`` comes from this
checkout).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from classifier import machine  # benchmarks/ is on sys.path as a script

from bertgeom.measures import class_mean_maps, gates
from bertgeom.measures.tokens import token_mask

SHAPES = ((32, 4, 512), (8, 12, 60), (32, 12, 120), (8, 12, 512))


def load(directory: Path, name: str) -> ModuleType:
    """The module ``directory/name.py``, imported as ``before_<name>``."""
    spec = importlib.util.spec_from_file_location(f"before_{name}", directory / f"{name}.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {directory / name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def synthetic(
    batch: int, heads: int, seq: int, mixed: bool, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 attention ``(batch, heads, seq, seq)`` and its right-padded mask."""
    generator = torch.Generator().manual_seed(seed)
    if mixed:
        lengths = torch.randint(max(seq // 3, 4), seq + 1, (batch,), generator=generator)
        lengths[0] = seq
    else:
        lengths = torch.full((batch,), seq)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).to(torch.int64)
    logits = torch.randn(batch, heads, seq, seq, generator=generator).mul_(2.0)
    groups = torch.randint(0, 6, (seq,), generator=generator)
    logits.add_(3.0 * (groups[:, None] == groups[None, :]))
    logits.masked_fill_(mask[:, None, None, :] == 0, -torch.inf)
    return logits.softmax(dim=-1), mask


def parse_shape(text: str) -> tuple[int, int, int]:
    batch, heads, seq = (int(part) for part in text.split(","))
    return batch, heads, seq


def load_average() -> str:
    return "load average " + ", ".join(f"{value:.1f}" for value in os.getloadavg())


def milliseconds(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return 1e3 * (time.perf_counter() - started)


def compare(
    before_gates: ModuleType,
    before_accumulators: ModuleType,
    shape: tuple[int, int, int],
    mixed: bool,
    repeats: int,
) -> None:
    batch, heads, seq = shape
    attn, mask = synthetic(batch, heads, seq, mixed)
    labels = ["a" if k % 3 else "b" for k in range(batch)]

    def accumulator(module: ModuleType) -> class_mean_maps.ClassMeanAttentionAccumulator:
        built: class_mean_maps.ClassMeanAttentionAccumulator
        built = module.ClassMeanAttentionAccumulator(seq, 1, heads, ["a", "b"])
        return built

    old_map, new_map = accumulator(before_accumulators), accumulator(class_mean_maps)
    times: dict[str, list[float]] = {key: [] for key in ("gb", "ga", "mb", "ma")}
    for _ in range(repeats):
        times["gb"].append(milliseconds(lambda: before_gates.gate_scores(attn, mask)))
        times["ga"].append(milliseconds(lambda: gates.gate_scores(attn, token_mask(mask))))
        times["mb"].append(milliseconds(lambda: old_map.update(0, attn, mask, labels)))
        times["ma"].append(milliseconds(lambda: new_map.update(0, attn, mask, labels)))
    old, new = before_gates.gate_scores(attn, mask), gates.gate_scores(attn, token_mask(mask))
    score_error = float((old - new).abs().nan_to_num(0.0).max())
    same_nan = bool(torch.equal(old.isnan(), new.isnan()))
    old_maps, new_maps = old_map.result_maps().maps, new_map.result_maps().maps
    map_error = float(np.nanmax(np.abs(old_maps.astype(np.float64) - new_maps)))
    same_nan = same_nan and bool(np.array_equal(np.isnan(old_maps), np.isnan(new_maps)))
    median = {key: statistics.median(values) for key, values in times.items()}
    name = f"{batch} x {heads} x {seq} x {seq} {'mixed' if mixed else 'full'}"
    print(
        f"{name:<26} {median['gb']:9.1f} {median['ga']:8.1f} {median['gb'] / median['ga']:6.1f}"
        f" {median['mb']:9.1f} {median['ma']:8.1f} {median['mb'] / median['ma']:6.1f}"
        f"   {score_error:.1e} {map_error:.1e} {'' if same_nan else 'NaN differ'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="earlier measures folder")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument(
        "--shape", action="append", help="batch,heads,seq (repeatable; default: four shapes)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    before_gates = load(args.before, "gates")
    # The maps' accumulator lived in gate_accumulators.py before the module split.
    maps = (
        "class_mean_maps" if (args.before / "class_mean_maps.py").exists() else "gate_accumulators"
    )
    before_accumulators = load(args.before, maps)
    shapes: list[tuple[int, int, int]] = list(SHAPES)
    if args.shape:
        shapes = [parse_shape(text) for text in args.shape]
    print(machine())
    print(f"{torch.get_num_threads()} torch threads, medians of {args.repeats}, {load_average()}")
    print(
        f"{'attention':<26} {'scores ms':>9} {'now ms':>8} {'ratio':>6}"
        f" {'maps ms':>9} {'now ms':>8} {'ratio':>6}   {'max |d score|':<8} {'|d map|'}"
    )
    for shape in shapes:
        for mixed in (False, True):
            compare(before_gates, before_accumulators, shape, mixed, args.repeats)
    print(load_average())


if __name__ == "__main__":
    main()
