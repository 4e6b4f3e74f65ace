"""Benchmark: the demo's training-side speed-ups, each against what it replaced, in one run.

- tokenising spikes: ``encode`` (dictionary look-up) against the Hugging Face tokenizer over
  the space-joined k-mers, the path ``encode`` took before;
- dropout: :class:`bertgeom.model.dropout.FastDropout` against ``torch.nn.Dropout`` on a
  ``small``-preset activation, and whole training steps of the ``small`` classifier with each;
- synthetic spikes: a table drawn with the profiles parsed once (``synthesize_table``) against
  the same draws re-parsing the profiles for every spike (what ``synthesize`` does when handed
  the table itself);
- leave-lineage-out: the three folds in one process against ``--workers`` processes.

Runs are interleaved; medians. ``--lineage-epochs 0`` skips the leave-lineage-out comparison
(about 2 minutes at 2 epochs on 2 cores).

    python benchmarks/training_speed.py --data demo-output/data [--repeats 3] [--lineage-epochs 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from classifier import machine  # benchmarks/ is on sys.path when run as a script

from bertgeom.genomics.kmers import kmer_sentence
from bertgeom.genomics.mutations import CLASSES, mutation_profiles
from bertgeom.genomics.synthetic import synthesize, synthesize_table
from bertgeom.model.dropout import FastDropout, with_fast_dropout
from bertgeom.model.lineages import leave_lineage_out
from bertgeom.model.presets import PRESETS
from bertgeom.model.storage import new_classifier
from bertgeom.model.tokenizer import build_vocabulary, encode, make_tokenizer, tokenize
from bertgeom.model.train import TrainingOptions


def interleaved(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall seconds of each run, the runs alternated ``repeats`` times."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}


def training_steps(
    encoded: dict[str, torch.Tensor], fast: bool, vocabulary_size: int, steps: int = 30
) -> Callable[[], None]:
    """``steps`` optimiser steps of the ``small`` classifier at batch 16, shuffled rows."""
    model = new_classifier(PRESETS["small"].architecture(), vocabulary_size, CLASSES, 0)
    if fast:
        with_fast_dropout(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    order = torch.randperm(len(encoded["input_ids"]), generator=torch.Generator().manual_seed(0))

    def run() -> None:
        for step in range(steps):
            index = order[step * 16 : (step + 1) * 16]
            mask = encoded["attention_mask"][index]
            width = int(mask.sum(dim=1).max())
            logits = model(
                input_ids=encoded["input_ids"][index, :width], attention_mask=mask[:, :width]
            ).logits
            logits.logsumexp(dim=-1).mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("demo-output/data"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lineage-epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    dataset = pd.read_parquet(args.data / "dataset.parquet")
    train = dataset[dataset["split"] == "train"]
    sequences = list(train["sequence"].sample(512, random_state=0))
    vocabulary = build_vocabulary(train["sequence"])
    tokenizer = make_tokenizer(vocabulary)
    rows: list[str] = []

    def compare(what: str, seconds: dict[str, float], unit: str, per: float) -> None:
        """A table row: the first run is the one replaced, the second its replacement."""
        (old, before), (new, after) = seconds.items()
        rows.append(
            f"| {what} | {old}: {before / per * 1e3:.2f} {unit} | {new}: {after / per * 1e3:.2f} "
            f"{unit} | **{before / after:.2f}x** |"
        )

    seconds = interleaved(
        {
            "tokenizer": lambda: tokenize(tokenizer, [kmer_sentence(s) for s in sequences], 512),
            "encode": lambda: encode(tokenizer, sequences),
        },
        args.repeats,
    )
    compare("tokenising 512 spikes", seconds, "ms/spike", len(sequences))

    activation = torch.randn(16, 322, 64)
    torch_dropout, fast_dropout = torch.nn.Dropout(0.1).train(), FastDropout(0.1).train()
    seconds = interleaved(
        {
            "nn.Dropout": lambda: [torch_dropout(activation) for _ in range(50)],
            "FastDropout": lambda: [fast_dropout(activation) for _ in range(50)],
        },
        args.repeats,
    )
    compare("dropout of a (16, 322, 64) activation", seconds, "ms/call", 50)

    encoded = encode(tokenizer, list(train["sequence"]))
    seconds = interleaved(
        {
            "nn.Dropout steps": training_steps(encoded, False, len(vocabulary)),
            "FastDropout steps": training_steps(encoded, True, len(vocabulary)),
        },
        args.repeats,
    )
    compare("`small` training step, batch 16", seconds, "ms/step", 30)

    def parsed_each_spike() -> None:
        rng = np.random.default_rng(7)
        profiles = mutation_profiles()
        for label in CLASSES:
            for _ in range(25):
                synthesize(label, rng, None, profiles)

    seconds = interleaved(
        {"parsed per spike": parsed_each_spike, "parsed once": lambda: synthesize_table(25, 7)},
        args.repeats,
    )
    compare("200 synthetic spikes", seconds, "ms/spike", 200)

    if args.lineage_epochs:
        options = TrainingOptions("tiny", args.lineage_epochs, seed=42)
        seconds = interleaved(
            {
                "1 process": lambda: leave_lineage_out(options),
                f"{args.workers} workers": lambda: leave_lineage_out(options, workers=args.workers),
            },
            1,
        )
        compare(f"leave-lineage-out, `tiny`, {args.lineage_epochs} epochs", seconds, "ms", 1)

    print(f"Machine: {machine()}, {torch.get_num_threads()} torch threads")
    print()
    print("| what | before | after | speed-up |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
