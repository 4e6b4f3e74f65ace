"""Benchmark: ``bertgeom predict`` on spikes alone against the same records' whole genomes.

The embedded genomes are written twice: whole, and as their spikes alone (cut from each
genome's alignment by bertgeom, the sequence a lab that sequences only S would submit). Each
file is called by ``bertgeom predict`` as a whole process (the default alignment workers),
interleaved, best of ``--repeats``; the table gives records per second and the ratio. A spike
is aligned once, as a genome is (no second pass); it is shorter, so it should be faster.

    python benchmarks/predict_spikes.py [--repeats 3] [--copies 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from classifier import machine  # benchmarks/ is on sys.path when run as a script

from bertgeom.genomics.dataset import GENOME_FILES
from bertgeom.genomics.fasta import read_fasta, write_fasta
from bertgeom.genomics.reference import data_path
from bertgeom.genomics.spike import extract_spike


def predict_seconds(fasta: Path, out: Path) -> float:
    """Wall seconds of one ``bertgeom predict`` process over ``fasta``."""
    command = [str(Path(sys.executable).with_name("bertgeom")), "predict"]
    started = time.perf_counter()
    subprocess.run(
        [*command, "--fasta", str(fasta), "--out", str(out), "--overwrite"],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--copies", type=int, default=1)
    args = parser.parse_args()
    records = [r for name in GENOME_FILES for r in read_fasta(data_path(name))]
    spikes = [extract_spike(r.record_id, r.sequence) for r in records]
    kept = [(r, s) for r, s in zip(records, spikes, strict=True) if s.usable]
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        genomes, cut = root / "genomes.fa", root / "spikes.fa"
        write_fasta(
            [(f"{r.record_id}#{c}", r.sequence) for c in range(args.copies) for r, _ in kept],
            genomes,
        )
        write_fasta(
            [(f"{r.record_id}#{c}", s.sequence) for c in range(args.copies) for r, s in kept],
            cut,
        )
        n = len(kept) * args.copies
        times: dict[str, list[float]] = {"genomes": [], "spikes": []}
        for _ in range(args.repeats):
            times["genomes"].append(predict_seconds(genomes, root / "genomes.tsv"))
            times["spikes"].append(predict_seconds(cut, root / "spikes.tsv"))
    best = {kind: min(values) for kind, values in times.items()}
    print(f"Machine: {machine()}; {n} records; best of {args.repeats}, interleaved.\n")
    print("| input | seconds | records/s | per record vs genomes |")
    print("|---|---|---|---|")
    for kind in ("genomes", "spikes"):
        print(
            f"| {kind} | {best[kind]:.1f} | {n / best[kind]:.0f} | "
            f"{best['genomes'] / best[kind]:.2f}x |"
        )


if __name__ == "__main__":
    main()
