"""A real results directory for the report's tests: ``bertgeom.analysis.analyze`` with the
global measures, run by a tiny random classifier on labelled synthetic spikes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from bertgeom.analysis import AnalysisOptions, InputSpec, analyze
from bertgeom.capture.tests.tiny_models import save_tiny_classifier
from bertgeom.genomics.fasta import write_fasta
from bertgeom.genomics.synthetic import synthesize_table

CLASSES = ("Alpha", "Delta", "Lambda")


def analyse_tiny_classifier(root: Path, per_class: int = 2) -> Path:
    """Analyse ``per_class`` synthetic spikes of each of ``CLASSES`` into ``root/results``."""
    root.mkdir(parents=True, exist_ok=True)
    model = save_tiny_classifier(root / "model", CLASSES)
    table = synthesize_table(per_class, seed=5, classes=CLASSES)
    records = [(f"s{i}", str(sequence)) for i, sequence in enumerate(table["sequence"])]
    write_fasta(records, root / "spikes.fa")
    labels = root / "labels.tsv"
    pd.DataFrame({"record_id": [r[0] for r in records], "label": list(table["label"])}).to_csv(
        labels, sep="\t", index=False
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        analyze(
            model,
            InputSpec("fasta", root / "spikes.fa", labels=labels),
            root / "results",
            AnalysisOptions(batch_size=4, global_measures=True),
        )
    finally:
        torch.set_num_threads(threads)
    return root / "results"
