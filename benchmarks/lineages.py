"""Benchmark: leave-lineage-out, the BERT against the k-mer baseline on lineages neither saw.

Each fold of :data:`bertgeom.model.lineages.DEFAULT_FOLDS` trains a BERT (the demo's recipe:
``small`` preset, 15 epochs unless ``--epochs``) and the k-mer logistic regression on the same
rows, without the fold's held-out lineages, then calls every held-out genome as ``bertgeom
predict`` does (whole genome aligned, placed on the clade tree, the ``unassigned`` rule), and its
spike alone and a window of that spike (40-80 %), each aligned again as a spike-only input.
Writes ``lineages.tsv``, ``lineages.json`` and ``lineages.md`` (the tables of BENCHMARKS.md).

    python benchmarks/lineages.py --out bench-output [--preset small] [--epochs 15] [--workers 3]
        [--members 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from classifier import machine  # benchmarks/ is on sys.path when run as a script

from bertgeom.model.lineage_tables import REASONS, summarise, write_lineages
from bertgeom.model.lineages import leave_lineage_out
from bertgeom.model.train import TrainingOptions


def markdown(table: pd.DataFrame, seconds: float, options: TrainingOptions) -> str:
    """The per-group table (BERT | LR in each cell) and the pooled summary."""
    lines = [
        f"Machine: {machine()}; folds: preset {options.preset}, "
        f"{options.epochs or 'the preset default'} epochs, seed {options.seed}; "
        f"{seconds:.0f} s in all.",
        "",
        "| fold | held-out group | input | expected | n | called so (BERT / LR) "
        "| unassigned (BERT / LR) | another class (BERT / LR) | arg-max right (BERT / LR) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    with_tree = table[table["rule"] == "clade tree"]
    for (fold, group, kind), rows in with_tree.groupby(["fold", "group", "input"], sort=False):
        bert = rows[rows["model"] == "bert"].iloc[0]
        lr = rows[rows["model"] == "kmer_logistic_regression"].iloc[0]

        def withheld(row: pd.Series) -> str:
            parts = [
                f"{row[f'unassigned_{reason}']} {reason}"
                for reason in REASONS
                if row[f"unassigned_{reason}"]
            ]
            return ", ".join(parts) or "0"

        lines.append(
            f"| {fold} | {group} | {kind} | {bert['expected']} | {bert['n']} | "
            f"{bert['called_expected']} / {lr['called_expected']} | "
            f"{withheld(bert)} / {withheld(lr)} | {bert['called_other']} / {lr['called_other']} "
            f"| {bert['argmax_expected']} / {lr['argmax_expected']} |"
        )
    lines += [
        "",
        "| input | model | `unassigned` rule | held-out genomes of the classes | called their "
        "class | unassigned | another class | arg-max right | outside (21C; for spikes, also the "
        "defined lineages; all folds) | unassigned |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summarise(table).itertuples():
        lines.append(
            f"| {row.input} | {row.model} | {row.rule} | {row.held_out_n} | "
            f"{row.held_out_called_class:.3f} | {row.held_out_unassigned:.3f} | "
            f"{row.held_out_wrong:.3f} | {row.held_out_argmax_right:.3f} | "
            f"{row.outside_n} | {row.outside_unassigned:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--workers", type=int, default=1, help="folds trained at once, one process each"
    )
    parser.add_argument(
        "--members",
        type=int,
        default=1,
        help="BERTs per fold (seeds SEED, SEED+1, ...): each alone and their mean, an ensemble",
    )
    args = parser.parse_args()
    options = TrainingOptions(args.preset, args.epochs, seed=args.seed)
    started = time.perf_counter()
    table = leave_lineage_out(options, announce=print, workers=args.workers, members=args.members)
    seconds = time.perf_counter() - started
    run = {
        "options": options.__dict__,
        "workers": args.workers,
        "members": args.members,
        "seconds": seconds,
    }
    write_lineages(table, args.out, run)
    text = markdown(table, seconds, options)
    (args.out / "lineages.md").write_text(text)
    print(text)
    print(json.dumps(summarise(table).to_dict(orient="records"), indent=1))


if __name__ == "__main__":
    main()
