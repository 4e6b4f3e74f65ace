"""Benchmark: ``bertgeom predict`` against its floor, the alignment alone, in one run.

The floor is minimap2 (``mappy``, the same preset and reference) mapping the same genomes in
one process per CPU core, nothing else. Against it, ``bertgeom predict`` as whole processes
(start-up, reading, alignment, spike cut, clade placement, change check, tokenising, forward
pass, writing), with alignment in one worker process per core (the default) and in-process
(``--workers 1``); then where the time of an in-process run goes, stage by stage.
``--copies N`` writes the embedded genomes N times (renamed) so that start-up weighs less;
``--compare SRC`` also times ``bertgeom predict`` from another checkout's ``src`` folder,
interleaved, for a before / after ratio from one run.

    python benchmarks/predict_speed.py [--repeats 3] [--copies 1] [--compare /tmp/before/src]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from classifier import checkout_command, machine  # benchmarks/ is on sys.path when run as a script

from bertgeom.genomics.dataset import GENOME_FILES
from bertgeom.genomics.fasta import read_fasta, write_fasta
from bertgeom.genomics.reference import data_path


def _map_all(sequences: list[str]) -> int:
    from bertgeom.genomics.spike import reference_aligner

    aligner = reference_aligner()
    return sum(len(list(aligner.map(sequence))) for sequence in sequences)


def floor_seconds(sequences: list[str], processes: int) -> float:
    """Wall time of mapping every sequence, split over ``processes`` (pool start excluded)."""
    shares = [sequences[i::processes] for i in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_map_all, [[sequences[0]]] * processes)  # index built, imports done
        started = time.perf_counter()
        pool.map(_map_all, shares)
        return time.perf_counter() - started


def predict_seconds(
    fasta: Path, out: Path, workers: int | None, checkout: Path | None = None
) -> float:
    """Wall seconds of one ``bertgeom predict`` process (of ``checkout`` when given)."""
    command, env = [str(Path(sys.executable).with_name("bertgeom"))], None
    if checkout is not None:
        command, env = checkout_command(checkout)
    command += ["predict", "--fasta", str(fasta), "--out", str(out)]
    command += ["--workers", str(workers)] if workers else []
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def stage_profile(fasta: Path) -> dict[str, float]:
    """Seconds per stage of an in-process run over the same records (batch 64)."""
    import numpy as np

    from bertgeom.genomics.spike import extract_spike
    from bertgeom.model.evaluate import predict_probabilities
    from bertgeom.model.predict import checked_calls, spike_evidence
    from bertgeom.model.storage import load_classifier

    seconds: dict[str, float] = {}

    def timed(name: str, started: float) -> float:
        now = time.perf_counter()
        seconds[name] = now - started
        return now

    now = time.perf_counter()
    classifier = load_classifier()
    now = timed("load the model", now)
    records = list(read_fasta(fasta))
    now = timed("read the FASTA", now)
    spikes = [extract_spike(record.record_id, record.sequence) for record in records]
    now = timed("align, cut the spike, QC, read the clade sites", now)
    evidence = spike_evidence(spikes, classifier.change_check)
    now = timed("changes and clade placement", now)
    settings = classifier.settings
    probabilities = predict_probabilities(
        classifier.model,
        classifier.tokenizer,
        [spike.sequence for spike in spikes if spike.usable],
        settings.k,
        settings.stride,
    )
    now = timed("tokenise and forward pass", now)
    usable = [index for index, spike in enumerate(spikes) if spike.usable]
    checked_calls(
        probabilities,
        [evidence.changes[i] for i in usable],
        settings.classes,
        settings.unassigned_threshold,
        classifier.change_check,
        [evidence.placements[i] for i in usable],
        [evidence.defining[i] for i in usable],
    )
    timed("the unassigned rule", now)
    assert np.isfinite(probabilities).all()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--copies", type=int, default=1, help="the embedded genomes N times")
    parser.add_argument("--compare", type=Path, help="src folder of another bertgeom checkout")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as directory:
        fasta = Path(directory) / "embedded.fa"
        embedded = [record for name in GENOME_FILES for record in read_fasta(data_path(name))]
        write_fasta(
            [
                (f"{record.record_id}_{copy}", record.sequence)
                for copy in range(args.copies)
                for record in embedded
            ],
            fasta,
        )
        sequences = [record.sequence for record in read_fasta(fasta)]
        n = len(sequences)
        runs: dict[str, list[float]] = {"floor": [], "default": [], "workers 1": []}
        if args.compare:
            runs["compared"] = []
        for _ in range(args.repeats):  # interleaved, so that drift hits all alike
            runs["floor"].append(floor_seconds(sequences, cores))
            runs["default"].append(predict_seconds(fasta, Path(directory) / "a.tsv", None))
            runs["workers 1"].append(predict_seconds(fasta, Path(directory) / "b.tsv", 1))
            if args.compare:
                compared = predict_seconds(fasta, Path(directory) / "c.tsv", None, args.compare)
                runs["compared"].append(compared)
        profile = stage_profile(fasta)
    median = {name: statistics.median(values) for name, values in runs.items()}
    rate = {name: n / seconds for name, seconds in median.items()}
    print(f"Machine: {machine()}; {n} genomes, median of {args.repeats} interleaved runs.\n")
    print("| run | seconds | genomes/s | ratio to the floor |")
    print("|---|---|---|---|")
    titles = {
        "floor": f"floor: mappy alone, {cores} processes",
        "default": f"`bertgeom predict` (whole process, {cores} alignment workers)",
        "workers 1": "`bertgeom predict --workers 1` (whole process, in-process alignment)",
        "compared": f"`bertgeom predict` of {args.compare} (whole process, the default)",
    }
    for name, title in titles.items():
        if name not in median:
            continue
        print(
            f"| {title} | {median[name]:.1f} | {rate[name]:.0f} | "
            f"{rate[name] / rate['floor']:.2f} |"
        )
    print("\nIn-process stages (one run):\n\n| stage | seconds | share |\n|---|---|---|")
    total = sum(profile.values())
    for stage, seconds in profile.items():
        print(f"| {stage} | {seconds:.2f} | {seconds / total:.0%} |")


if __name__ == "__main__":
    main()
