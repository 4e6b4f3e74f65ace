"""The streamed measures' update kernels against an earlier version of them, same inputs, one run.

Issues 22 and 23: ``HeadConeAccumulator``, ``ConeAccumulator`` (+ ``ClassConeAccumulator``),
``DistributionAccumulator``, ``HeadDistributionAccumulator`` and ``SpikeAttentionAccumulator``
on synthetic batches of the shapes ``analyze`` gives them: the shipped spike classifier (2 x 4
heads, hidden 64, 512 tokens, batch 32; padded to 400-512 real tokens as its inputs are, and
unpadded), MiniLM (12 heads, hidden 384, 40 or 120 tokens, batch 8 or 32) and a paper-shaped
BERT (12 heads, hidden 768, 512 tokens, batch 8). The earlier modules are loaded from a copy of
``src/bertgeom/measures`` of another commit (``--before``; make one with ``mkdir
/tmp/stream-before && git archive f048eda src | tar -x -C /tmp/stream-before``); both versions
run in this process, interleaved ``--repeats`` times, and each line gives their median
milliseconds per update, before / after, and the largest relative difference of their
``result()`` tables.

    .venv/bin/python benchmarks/stream_kernels.py [--before DIR] [--repeats 7] [--threads N]
        [--clock wall|cpu] [--measures ...] [--shapes 0 1 ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import torch

import bertgeom
from bertgeom.genomics.reference import SPIKE_START
from bertgeom.genomics.token_map import SpikeLayout, defining_mutations, layout_mutations
from bertgeom.measures import (
    cone_accumulators,
    distribution_accumulator,
    head_distribution,
    spike_attention,
)
from bertgeom.measures.tokens import token_mask

MODULES = {
    "cone": ("cone_accumulators", "cone"),
    "distribution": ("distribution_accumulator", "distribution"),
    "head_distribution": ("head_distribution",),
    "spike_attention": ("spike_attention",),
}
"""The module of each measure's accumulators, by its names in the layouts of the package over
time (the first that the earlier directory has is loaded)."""

PACKAGE = "bertgeom.measures"


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    heads: int
    seq: int
    head_dim: int
    shortest: int  # real tokens per input drawn from [shortest, seq]
    classes: int
    spike: bool = False


SHAPES = (
    Shape("spike classifier b32 s512 padded", 32, 4, 512, 16, 400, 5, spike=True),
    Shape("spike classifier b32 s512 full", 32, 4, 512, 16, 512, 5, spike=True),
    Shape("MiniLM b8 s40", 8, 12, 40, 32, 12, 2),
    Shape("MiniLM b32 s40", 32, 12, 40, 32, 12, 2),
    Shape("MiniLM b32 s120", 32, 12, 120, 32, 30, 2),
    Shape("BERT b8 s512", 8, 12, 512, 64, 400, 2),
)


def load_before(directory: Path) -> dict[str, ModuleType]:
    """The accumulator modules of ``directory`` (a copy of ``bertgeom/measures``), loaded as
    the package ``bertgeom.measures`` of that copy, so that their imports of each other (any
    module of the package) bind the earlier versions; the current package is put back
    afterwards."""
    ours = [name for name in sys.modules if name == PACKAGE or name.startswith(PACKAGE + ".")]
    saved = {name: sys.modules.pop(name) for name in ours}
    loaded: dict[str, ModuleType] = {}
    try:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, directory / "__init__.py", submodule_search_locations=[str(directory)]
        )
        if spec is None or spec.loader is None:
            raise FileNotFoundError(directory / "__init__.py")
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
        for short, candidates in MODULES.items():
            found = [name for name in candidates if (directory / f"{name}.py").is_file()]
            if not found:
                raise FileNotFoundError(f"none of {candidates} in {directory}")
            loaded[short] = importlib.import_module(f"{PACKAGE}.{found[0]}")
    finally:
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        sys.modules.update(saved)
        bertgeom.measures = saved[PACKAGE]  # the parent package's attribute, rebound by imports
    return loaded


@dataclass
class Batch:
    attention: torch.Tensor
    head_outputs: torch.Tensor
    hidden: torch.Tensor
    mask: torch.Tensor
    labels: list[str]
    layout: SpikeLayout | None


def make_batch(shape: Shape, seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    b, h, s, dk = shape.batch, shape.heads, shape.seq, shape.head_dim
    lengths = torch.randint(shape.shortest, s + 1, (b,), generator=generator)
    lengths[0] = s
    mask = (torch.arange(s)[None, :] < lengths[:, None]).long()
    attention = torch.randn(b, h, s, s, generator=generator).mul_(3.0)
    attention.masked_fill_(~mask.bool()[:, None, None, :], -math.inf)
    attention = torch.softmax(attention, dim=-1)
    concatenated = torch.randn(b, s, h * dk, generator=generator)
    concatenated[..., 3] += 20.0
    head_outputs = concatenated.view(b, s, h, dk).permute(0, 2, 1, 3)  # the hooks' layout
    hidden = torch.randn(b, s, h * dk, generator=generator) * 2.0
    hidden[..., 5] *= 30.0
    classes = sorted(defining_mutations())[: shape.classes]
    labels = [classes[i % len(classes)] for i in range(b)]
    layout = spike_layout(lengths, s, generator) if shape.spike else None
    return Batch(attention, head_outputs, hidden, mask, labels, layout)


def spike_layout(lengths: torch.Tensor, seq: int, generator: torch.Generator) -> SpikeLayout:
    """12-mers at stride 7 along the spike, ``[CLS]``, ``[SEP]`` and padding unplaced."""
    batch = len(lengths)
    mutations = layout_mutations()
    position = torch.arange(seq)
    lo = (SPIKE_START + 7 * (position - 1)).expand(batch, seq).clone().to(torch.int32)
    lo[:, 0] = 0
    lo[position[None, :] >= (lengths[:, None] - 1)] = 0
    hi = torch.where(lo > 0, lo + 11, 0).to(torch.int32)
    carries = torch.rand(batch, len(mutations), generator=generator) < 0.3
    observed = torch.rand(batch, len(mutations), generator=generator) < 0.9
    changed = torch.rand(batch, seq, generator=generator) < 0.02
    return SpikeLayout(lo, hi, carries, observed, mutations, changed)


Factory = Callable[[dict[str, ModuleType]], tuple[Any, Callable[[Any, Batch], None]]]


def _head_cone(modules: dict[str, ModuleType]) -> tuple[Any, Callable[[Any, Batch], None]]:
    def update(acc: Any, batch: Batch) -> None:
        acc.update_head_outputs(0, batch.head_outputs, batch.mask, batch.labels)
        acc.update_attention_rows(0, batch.attention, batch.mask, batch.labels)

    return modules["cone"].HeadConeAccumulator(), update


def _cone(modules: dict[str, ModuleType]) -> tuple[Any, Callable[[Any, Batch], None]]:
    def update(acc: Any, batch: Batch) -> None:
        tokens, cls = acc
        tokens.update(0, "layer_output", batch.hidden, batch.mask, batch.labels)
        cls.update(0, batch.hidden[:, 0], batch.labels)

    module = modules["cone"]
    return (module.ConeAccumulator(), module.ClassConeAccumulator()), update


def _distribution(modules: dict[str, ModuleType]) -> tuple[Any, Callable[[Any, Batch], None]]:
    def update(acc: Any, batch: Batch) -> None:
        acc.update(0, "layer_output", batch.hidden, batch.mask, batch.labels)

    return modules["distribution"].DistributionAccumulator(per_class=True), update


def _head_distribution(
    modules: dict[str, ModuleType],
) -> tuple[Any, Callable[[Any, Batch], None]]:
    def update(acc: Any, batch: Batch) -> None:
        acc.update(0, batch.head_outputs, batch.mask, batch.labels)

    return modules["head_distribution"].HeadDistributionAccumulator(per_class=True), update


def _spike(modules: dict[str, ModuleType]) -> tuple[Any, Callable[[Any, Batch], None]]:
    def update(acc: Any, batch: Batch) -> None:
        # The current accumulator takes the batch's token mask, an earlier one the raw mask.
        takes_tokens = "tokens" in inspect.signature(acc.update).parameters
        mask = token_mask(batch.mask) if takes_tokens else batch.mask
        acc.update(0, batch.attention, mask, batch.layout, batch.labels)

    accumulator = modules["spike_attention"].SpikeAttentionAccumulator(
        1, 4, layout_mutations(), defining_mutations(), sorted(defining_mutations())[:5]
    )
    return accumulator, update


MEASURES: dict[str, Factory] = {
    "head_cone": _head_cone,
    "cone": _cone,
    "distribution": _distribution,
    "head_distribution": _head_distribution,
    "spike_attention": _spike,
}


def result_frame(accumulator: Any) -> pd.DataFrame:
    if isinstance(accumulator, tuple):
        return pd.concat([part.result() for part in accumulator], ignore_index=True)
    return accumulator.result()


def largest_difference(before: pd.DataFrame, after: pd.DataFrame) -> float:
    """The largest ``|a - b| / max(|b|, 1e-9)`` over the ``value`` columns (tables in the same
    row order), NaN where both are NaN counting as equal; inf when the keys differ."""
    keys = [c for c in before.columns if c != "value"]
    if not before[keys].equals(after[keys]):
        return math.inf
    a, b = after["value"].to_numpy(), before["value"].to_numpy()
    both_nan = np.isnan(a) & np.isnan(b)
    relative = np.abs(a - b) / np.maximum(np.abs(b), 1e-9)
    relative = np.where(both_nan, 0.0, relative)
    return float(np.nanmax(relative)) if relative.size else 0.0


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""``cpu``: the process's processor time, which leaves out the time other processes hold the
cores (steadier on a shared machine; with several threads it counts each thread's time)."""


def milliseconds(
    update: Callable[[Any, Batch], None], accumulator: Any, batch: Batch, clock: str
) -> float:
    now = CLOCKS[clock]
    started = now()
    update(accumulator, batch)
    return (now() - started) * 1e3


def compare(
    measure: str,
    shape: Shape,
    batch: Batch,
    versions: dict[str, dict[str, ModuleType]],
    repeats: int,
    clock: str,
) -> None:
    built = {name: MEASURES[measure](modules) for name, modules in versions.items()}
    times: dict[str, list[float]] = {name: [] for name in versions}
    order = list(versions)
    for name in order:  # warm up: first calls allocate
        accumulator, update = built[name]
        update(accumulator, batch)
    for round_index in range(repeats):
        for name in order if round_index % 2 == 0 else order[::-1]:
            accumulator, update = built[name]
            times[name].append(milliseconds(update, accumulator, batch, clock))
    before, after = (statistics.median(times[name]) for name in ("before", "after"))
    difference = largest_difference(
        result_frame(built["before"][0]), result_frame(built["after"][0])
    )
    print(
        f"{shape.name:<34} {measure:<18} {before:9.2f} {after:9.2f} {before / after:7.2f}x"
        f" {difference:10.1e}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--before",
        type=Path,
        default=Path("/tmp/stream-before/src/bertgeom/measures"),
        help="the earlier bertgeom/measures directory",
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall")
    parser.add_argument("--measures", nargs="*", default=list(MEASURES), choices=list(MEASURES))
    parser.add_argument("--shapes", nargs="*", type=int, help="indices into SHAPES (default all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    current = {
        "cone": cone_accumulators,
        "distribution": distribution_accumulator,
        "head_distribution": head_distribution,
        "spike_attention": spike_attention,
    }
    versions = {"before": load_before(args.before), "after": current}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock")
    header = ("shape", "measure", "before ms", "after ms", "ratio", "max rel")
    print("{:<34} {:<18} {:>9} {:>9} {:>8} {:>10}".format(*header))
    chosen = [SHAPES[i] for i in args.shapes] if args.shapes else list(SHAPES)
    for shape in chosen:
        batch = make_batch(shape)
        for measure in args.measures:
            if measure == "spike_attention" and not shape.spike:
                continue
            if measure == "spike_attention" and shape.heads != 4:
                continue
            compare(measure, shape, batch, versions, args.repeats, args.clock)


if __name__ == "__main__":
    main()
