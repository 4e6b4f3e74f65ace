"""What the classifier commands print when they finish: the test metrics and the
leave-lineage-out table (``train``, ``evaluate``, ``demo``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from bertgeom.cli.common import console


def print_lineages(table: pd.DataFrame, seconds: float, out: Path) -> None:
    """Leave-lineage-out's calls per fold and group, its time, and the files written."""
    console.print(_lineage_table(table))
    console.print(f"leave-lineage-out finished in {seconds:.0f} s", highlight=False)
    console.print(f"-> {out / 'lineages.tsv'}, {out / 'lineages.json'}", highlight=False)


def print_metrics(metrics: dict[str, object], out: Path) -> None:
    """The test metrics in lines, and the files written."""
    for key in ("test_real", "test_synthetic"):
        part = metrics.get(key)
        if isinstance(part, dict):
            console.print(
                f"{key.replace('_', ' ')}: n={part['n']} accuracy={part['accuracy']:.4f} "
                f"macro-F1={part['macro_f1']:.4f} unassigned={part['unassigned_share']:.3f}",
                highlight=False,
            )
    for key, title in (
        ("test_synthetic_outliers", "synthetic outliers"),
        ("outside", "real genomes kept out of the dataset (other-VOI, disputed)"),
    ):
        part = metrics.get(key)
        if isinstance(part, dict):
            by_clade = ", ".join(
                f"{target} {entry['as_expected']}/{entry['n']}"
                for target, entry in part.get("by_clade", {}).items()
            )
            console.print(
                f"{title}: n={part['n']} unassigned={part['unassigned_share']:.2f}"
                + (f" (called as their clade says: {by_clade})" if by_clade else ""),
                highlight=False,
            )
    console.print(f"-> {out / 'metrics.json'}, {out / 'confusion_matrix.png'}", highlight=False)


def _lineage_table(table: pd.DataFrame) -> Table:
    from bertgeom.model.lineage_tables import REASONS

    names = {"bert": "BERT", "kmer_logistic_regression": "k-mer LR"}
    order = " | ".join(names.get(str(m), str(m)) for m in table["model"].unique())
    view = Table(
        title=f"leave-lineage-out: held-out genomes and their spikes, as predict calls them "
        f"({order})"
    )
    columns = ("fold", "group", "input", "expected", "n", "called so", "unassigned", "other class")
    for column in columns:
        view.add_column(column, justify="left" if column in columns[:3] else "right")
    with_tree = table[table["rule"] == "clade tree"]
    for (fold, group, kind), rows in with_tree.groupby(["fold", "group", "input"], sort=False):
        models = list(rows.itertuples())
        view.add_row(
            str(fold),
            str(group),
            str(kind),
            str(models[0].expected),
            str(models[0].n),
            " | ".join(str(row.called_expected) for row in models),
            " | ".join(_withheld(row, REASONS) for row in models),
            " | ".join(str(row.called_other) for row in models),
        )
    return view


def _withheld(row: Any, reasons: tuple[str, ...]) -> str:
    counts = {reason: getattr(row, f"unassigned_{reason}") for reason in reasons}
    return ", ".join(f"{count} {reason}" for reason, count in counts.items() if count) or "0"
