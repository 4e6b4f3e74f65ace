"""Whole genomes (or spikes) in, variant calls out: one row per input record, in input order.

Each record is aligned and QC'd (:mod:`bertgeom.genomics.spike`); records with a hard QC failure
keep their status and get empty predictions; the others are classified in batches. A call whose
best probability is below the model's calibrated threshold, or whose spike carries more changes
its class never showed than the class's own spikes do (:mod:`bertgeom.model.change_check`), is
``unassigned`` (as pangolin and Nextclade withhold such calls), so recombinants and lineages
outside the eight classes are not forced into one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
import pandas as pd

from bertgeom.genomics.changes import spike_changes
from bertgeom.genomics.fasta import FastaRecord
from bertgeom.genomics.spike import QCThresholds, SpikeRecord, extract_spike
from bertgeom.model.change_check import ChangeCheck
from bertgeom.model.evaluate import predict_probabilities
from bertgeom.model.storage import Classifier

UNASSIGNED = "unassigned"
LOW_PROBABILITY = "low_probability"
UNEXPECTED_CHANGES = "unexpected_changes"
BASE_COLUMNS = (
    "record_id",
    "status",
    "qc_flags",
    "input_kind",
    "spike_length",
    "spike_coverage",
    "spike_n_fraction",
    "predicted_class",
    "probability",
    "unassigned_reason",
    "unexpected_changes",
    "changes_p_value",
)


def call_classes(
    probabilities: np.ndarray, classes: Sequence[str], threshold: float
) -> tuple[list[str], list[str], np.ndarray]:
    """Arg-max classes, calls with :data:`UNASSIGNED` below ``threshold``, best probabilities,
    for ``probabilities (n_sequences, n_classes)``."""
    best = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
    argmax = [classes[index] for index in probabilities.argmax(axis=1)] if len(best) else []
    called = [UNASSIGNED if p < threshold else c for c, p in zip(argmax, best, strict=True)]
    return argmax, called, best


@dataclass(frozen=True)
class Calls:
    """The calls of ``n`` spikes: ``argmax`` (the best class), ``called`` (``unassigned`` where
    withheld), ``best`` (its probability), ``reasons`` (why withheld, else ``""``) and, for the
    best class, the ``unexpected`` changes and their ``p_values`` (NaN without a check)."""

    argmax: list[str]
    called: list[str]
    best: np.ndarray
    reasons: list[str]
    unexpected: list[tuple[str, ...]]
    p_values: np.ndarray


def checked_calls(
    probabilities: np.ndarray,
    changes: Sequence[Sequence[str]],
    classes: Sequence[str],
    threshold: float,
    check: ChangeCheck | None,
) -> Calls:
    """Calls withheld for a low probability (first) or for unexpected changes (then)."""
    argmax, called, best = call_classes(probabilities, classes, threshold)
    reasons = [LOW_PROBABILITY if call == UNASSIGNED else "" for call in called]
    unexpected: list[tuple[str, ...]] = []
    p_values = np.full(len(argmax), np.nan)
    for row, (label, carried) in enumerate(zip(argmax, changes, strict=True)):
        if check is None:
            unexpected.append(())
            continue
        unexpected.append(check.unexpected(label, carried))
        p_values[row] = check.p_value(label, len(unexpected[-1]))
        if p_values[row] < check.alpha and not reasons[row]:
            called[row], reasons[row] = UNASSIGNED, UNEXPECTED_CHANGES
    return Calls(argmax, called, best, reasons, unexpected, p_values)


def prediction_columns(classes: Iterable[str]) -> list[str]:
    """The output table's columns: :data:`BASE_COLUMNS`, then one ``p_<class>`` per class."""
    return [*BASE_COLUMNS, *(f"p_{label}" for label in classes)]


def _chunks(records: Iterable[FastaRecord], size: int) -> Iterator[list[FastaRecord]]:
    iterator = iter(records)
    while chunk := list(islice(iterator, size)):
        yield chunk


def classify_spikes(
    spikes: list[SpikeRecord], classifier: Classifier, batch_size: int = 64
) -> pd.DataFrame:
    """Predictions for already extracted spikes, one row each, in order."""
    settings = classifier.settings
    usable = [index for index, spike in enumerate(spikes) if spike.usable]
    probabilities = predict_probabilities(
        classifier.model,
        classifier.tokenizer,
        [spikes[index].sequence for index in usable],
        settings.k,
        settings.stride,
        batch_size=batch_size,
        max_length=settings.max_length,
    )
    table = pd.DataFrame(
        {
            "record_id": [spike.record_id for spike in spikes],
            "status": [spike.status.value for spike in spikes],
            "qc_flags": [",".join(spike.flags) for spike in spikes],
            "input_kind": [spike.input_kind for spike in spikes],
            "spike_length": [len(spike.sequence) if spike.usable else pd.NA for spike in spikes],
            "spike_coverage": [
                round(spike.coverage, 4) if spike.usable else np.nan for spike in spikes
            ],
            "spike_n_fraction": [
                round(spike.n_fraction, 4) if spike.usable else np.nan for spike in spikes
            ],
            "predicted_class": "",
            "probability": np.nan,
        }
    )
    table["spike_length"] = table["spike_length"].astype("Int64")
    table["unassigned_reason"] = ""
    table["unexpected_changes"] = ""
    table["changes_p_value"] = np.nan
    full = np.full((len(spikes), len(settings.classes)), np.nan)
    if usable:
        full[usable] = probabilities
        calls = checked_calls(
            probabilities,
            [spike_changes(spikes[index]) for index in usable],
            settings.classes,
            settings.unassigned_threshold,
            classifier.change_check,
        )
        table.loc[usable, "predicted_class"] = calls.called
        table.loc[usable, "probability"] = calls.best
        table.loc[usable, "unassigned_reason"] = calls.reasons
        table.loc[usable, "unexpected_changes"] = [",".join(u) for u in calls.unexpected]
        table.loc[usable, "changes_p_value"] = np.round(calls.p_values, 4)
    for column, label in enumerate(settings.classes):
        table[f"p_{label}"] = full[:, column]
    return table


def predict_records(
    records: Iterable[FastaRecord],
    classifier: Classifier,
    batch_size: int = 64,
    chunk_size: int = 256,
    thresholds: QCThresholds | None = None,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Classify every record; memory is bounded by ``chunk_size`` records at a time."""
    parts = []
    for chunk in _chunks(records, chunk_size):
        spikes = [extract_spike(record.record_id, record.sequence, thresholds) for record in chunk]
        parts.append(classify_spikes(spikes, classifier, batch_size))
        if progress:
            progress(len(chunk))
    if not parts:
        return pd.DataFrame(columns=prediction_columns(classifier.settings.classes))
    return pd.concat(parts, ignore_index=True)
