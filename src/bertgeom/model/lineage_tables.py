"""The tables of leave-lineage-out (``bertgeom.model.lineages``): the outcomes counted per row,
the summary pooled per model and rule, and ``lineages.tsv`` / ``lineages.json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bertgeom.atomic import atomic_file
from bertgeom.model.predict import DEFINING_DISAGREES, UNASSIGNED, Calls

QC_FAILED = "qc_failed"
"""An input that fails QC (``predict`` gives it a status and no call)."""
REASONS = (
    "clade_outside_classes",
    "clade_disagrees",
    DEFINING_DISAGREES,
    "low_probability",
    "unexpected_changes",
    QC_FAILED,
)
"""Why a call was withheld (``unassigned``): one ``unassigned_<reason>`` count each."""
INPUT_KINDS = ("genome", "spike", "partial spike")
"""How each held-out genome is called: whole, its spike alone (cut from the genome's
alignment, aligned again as a spike-only input), and a window of that spike."""
RULES = ("clade tree", "changes only")
"""The ``unassigned`` rule of each row: ``predict``'s (the clade tree first), or the probability
and change check alone (the rule before the tree, kept to show what the tree changes)."""


def count_outcomes(calls: Calls, expected: str, record_ids: Sequence[str]) -> dict[str, int | str]:
    """How many ``calls`` were the ``expected`` class, withheld for each reason, another
    class, and the expected class by the arg-max alone; and ``missed``: each input of
    ``record_ids`` not called ``expected``, as ``record_id: argmax/outcome`` (the outcome is the
    class called, or the reason withheld), ``; ``-separated."""
    counts = {"called_expected": 0, "called_other": 0, "argmax_expected": 0}
    counts.update({f"unassigned_{reason}": 0 for reason in REASONS})
    missed = []
    rows = zip(record_ids, calls.argmax, calls.called, calls.reasons, strict=True)
    for record_id, argmax, called, reason in rows:
        counts["argmax_expected"] += int(argmax == expected)
        if called == expected:
            counts["called_expected"] += 1
            continue
        outcome = reason if called == UNASSIGNED else called
        counts[f"unassigned_{reason}" if called == UNASSIGNED else "called_other"] += 1
        missed.append(f"{record_id}: {argmax or '-'}/{outcome}")
    return {**counts, "missed": "; ".join(missed)}


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per input kind, model and rule: the held-out groups of the eight classes and the outside
    ones, pooled."""
    parts = []
    for (kind, model, rule), rows in table.groupby(["input", "model", "rule"], sort=False):
        inside = rows[rows["held_out"] & (rows["expected"] != UNASSIGNED)]
        outside = rows[rows["expected"] == UNASSIGNED]
        unassigned = inside[[f"unassigned_{reason}" for reason in REASONS]].to_numpy().sum()
        parts.append(
            {
                "input": kind,
                "model": model,
                "rule": rule,
                "held_out_n": int(inside["n"].sum()),
                "held_out_called_class": float(inside["called_expected"].sum() / inside["n"].sum()),
                "held_out_unassigned": float(unassigned / inside["n"].sum()),
                "held_out_wrong": float(inside["called_other"].sum() / inside["n"].sum()),
                "held_out_argmax_right": float(inside["argmax_expected"].sum() / inside["n"].sum()),
                "outside_n": int(outside["n"].sum()),
                "outside_unassigned": float(outside["called_expected"].sum() / outside["n"].sum())
                if len(outside)
                else np.nan,
            }
        )
    return pd.DataFrame(parts)


def write_lineages(table: pd.DataFrame, directory: Path, run: dict[str, object]) -> None:
    """``lineages.tsv`` (one row per fold, group and model) and ``lineages.json`` (the same,
    the pooled summary and ``run``: options, seconds)."""
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_file(directory / "lineages.tsv") as path:
        table.to_csv(path, sep="\t", index=False)
    document = {
        **run,
        "summary": summarise(table).to_dict(orient="records"),
        "groups": table.to_dict(orient="records"),
    }
    with atomic_file(directory / "lineages.json") as path:
        path.write_text(json.dumps(document, indent=2, default=str))
