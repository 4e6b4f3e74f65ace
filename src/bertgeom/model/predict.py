"""Whole genomes (or spikes) in, variant calls out: one row per input record, in input order.

Each record is aligned and QC'd (:mod:`bertgeom.genomics.spike`); records with a hard QC failure
keep their status and get empty predictions; the others are classified in batches. A call whose
best probability is below the model's calibrated threshold is ``unassigned`` (as pangolin does),
so recombinants and lineages outside the eight classes are not forced into one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice

import numpy as np
import pandas as pd

from bertgeom.genomics.fasta import FastaRecord
from bertgeom.genomics.spike import QCThresholds, SpikeRecord, extract_spike
from bertgeom.model.evaluate import predict_probabilities
from bertgeom.model.storage import Classifier

UNASSIGNED = "unassigned"
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
    full = np.full((len(spikes), len(settings.classes)), np.nan)
    if usable:
        full[usable] = probabilities
        _, called, best = call_classes(
            probabilities, settings.classes, settings.unassigned_threshold
        )
        table.loc[usable, "predicted_class"] = called
        table.loc[usable, "probability"] = best
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
