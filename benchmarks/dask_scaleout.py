"""``analyze`` in one process against a local Dask cluster of two worker processes.

The shipped classifier (``src/bertgeom/model/default``) analyses the first N embedded genomes
(``genomes_ncbi.fasta.xz``: alignment, spike cut, tokens, forward pass and every measure,
global ones included), once in this process with every core's torch threads, once with
``AnalysisOptions(dask_workers=2)``: a ``LocalCluster`` of two single-threaded worker
processes, each with cores // 2 torch threads, started and stopped inside the timed call. Both
times are of the whole ``analyze`` call (loading, writing and, for Dask, the cluster's start-up
included); the speed-up is their ratio. The two results directories are checked to hold the
same number of inputs. It also prints what starting and stopping the cluster alone costs.

    .venv/bin/python benchmarks/dask_scaleout.py                 # 100 and 400 genomes
    .venv/bin/python benchmarks/dask_scaleout.py --genomes 100 --workers 2
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import subprocess
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch

from bertgeom.analysis import AnalysisOptions, Executor, InputSpec, analyze
from bertgeom.genomics.fasta import read_fasta, write_fasta
from bertgeom.genomics.reference import data_path
from bertgeom.model.storage import default_model_directory
from bertgeom.scale.executor import DaskExecutor


def cpu_model() -> str:
    """``lscpu``'s model name (or the platform's processor)."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    names = [line.split(":", 1)[1].strip() for line in lines.splitlines() if "Model name" in line]
    return names[0] if names else "unknown"


def timed(
    model: Path,
    spec: InputSpec,
    out: Path,
    options: AnalysisOptions,
    executor: Executor | None = None,
) -> tuple[float, int]:
    """Seconds of one whole ``analyze`` call, and the inputs it analysed."""
    started = time.perf_counter()
    summary = analyze(model, spec, out, options, executor=executor)
    return time.perf_counter() - started, summary.inputs


def startup_seconds(workers: int) -> float:
    """Seconds to start a local cluster whose workers have imported the analysis, and stop it:
    the fixed cost a Dask run pays before its first shard."""
    from bertgeom.scale.cluster import ClusterSpec, dask_client

    started = time.perf_counter()
    with dask_client(ClusterSpec(workers=workers)) as client:
        client.run(importlib.import_module, "bertgeom.scale.analysis")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genomes", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"machine: {cpu_model()}, {cores} cores; torch {torch.__version__}")
    print(f"start-up of {args.workers} local Dask workers: {startup_seconds(args.workers):.1f} s")
    model = default_model_directory()
    genomes = list(islice(read_fasta(data_path("genomes_ncbi.fasta.xz")), max(args.genomes)))
    print(
        "| genomes | one process (s) | genomes/s | "
        f"{args.workers} Dask workers (s) | genomes/s | speed-up |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for count in args.genomes:
            fasta = root / f"genomes-{count}.fa"
            write_fasta([(g.record_id, g.sequence) for g in genomes[:count]], fasta)
            spec = InputSpec("fasta", fasta)
            torch.set_num_threads(cores)
            single_s, single_n = timed(
                model, spec, root / f"single-{count}", AnalysisOptions(batch_size=args.batch_size)
            )
            options = AnalysisOptions(batch_size=args.batch_size, dask_workers=args.workers)
            executor = DaskExecutor.from_options(options)
            dask_s, dask_n = timed(model, spec, root / f"dask-{count}", options, executor)
            assert single_n == dask_n, (single_n, dask_n)
            print(
                f"| {count} | {single_s:.1f} | {single_n / single_s:.1f} | {dask_s:.1f} | "
                f"{dask_n / dask_s:.1f} | {single_s / dask_s:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
