"""Whole genomes (or spikes) in, variant calls out: one row per input record, in input order.

Each record is aligned and QC'd (:mod:`bertgeom.genomics.spike`, which gives every record a
status and never raises, so one bad record never costs the others their rows); records with a
hard QC failure keep their status and get empty predictions; the others are classified in
batches. A call whose placement on the Nextstrain clade tree (:mod:`bertgeom.genomics.clades`)
falls outside the eight classes or under another class is ``unassigned`` (as pangolin and
Nextclade withhold such calls); a call the placement confirms is kept, whatever private changes
its lineage carries. Where the sites read cannot tell the class (a spike alone cannot tell
pre-VOC from Gamma), a call is withheld when its best probability is below the model's
calibrated threshold or its spike carries more changes its class never showed than the class's
own spikes do (:mod:`bertgeom.model.change_check`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from itertools import islice
from typing import TypeVar

import numpy as np
import pandas as pd
import torch

from bertgeom.genomics.changes import spike_changes, unread_changes
from bertgeom.genomics.clades import OUTSIDE_CLASSES, Placement, clade_tree
from bertgeom.genomics.fasta import FastaRecord
from bertgeom.genomics.parallel import Pending, SpikeExtractor, spike_extractor
from bertgeom.genomics.spike import QCThresholds, SpikeRecord, extract_spike
from bertgeom.model.change_check import ChangeCheck
from bertgeom.model.defining_changes import DefiningCall, defining_call
from bertgeom.model.ensemble import Predictor

P = TypeVar("P", bound=Predictor)

UNASSIGNED = "unassigned"
LOW_PROBABILITY = "low_probability"
UNEXPECTED_CHANGES = "unexpected_changes"
CLADE_OUTSIDE_CLASSES = "clade_outside_classes"
CLADE_DISAGREES = "clade_disagrees"
DEFINING_DISAGREES = "defining_changes_disagree"
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
    "clade",
    "clade_class",
    "clade_support",
    "defining_class",
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
    placements: Sequence[Placement | None] | None = None,
    defining: Sequence[DefiningCall | None] | None = None,
) -> Calls:
    """The arg-max calls, kept or withheld by the clade tree where the placement tells the
    class, else by the defining changes where they tell it, else withheld for a low
    probability (first) or unexpected changes (then); see the module docstring."""
    argmax, called, best = call_classes(probabilities, classes, threshold)
    reasons = [LOW_PROBABILITY if call == UNASSIGNED else "" for call in called]
    unexpected: list[tuple[str, ...]] = []
    p_values = np.full(len(argmax), np.nan)
    for row, (label, carried) in enumerate(zip(argmax, changes, strict=True)):
        if check is not None:
            unexpected.append(check.unexpected(label, carried))
            p_values[row] = check.p_value(label, len(unexpected[-1]))
        else:
            unexpected.append(())
        placed = placements[row] if placements is not None else None
        if placed is not None and placed.clade_class:
            if placed.clade_class == label:
                called[row], reasons[row] = label, ""
            else:
                reason = (
                    CLADE_OUTSIDE_CLASSES
                    if placed.clade_class == OUTSIDE_CLASSES
                    else CLADE_DISAGREES
                )
                called[row], reasons[row] = UNASSIGNED, reason
        elif (told := _told(defining, row)) and told != label:
            called[row], reasons[row] = UNASSIGNED, DEFINING_DISAGREES
        elif told and check is not None and check.defining.get(told):
            called[row], reasons[row] = label, ""
        elif check is not None and p_values[row] < check.alpha and not reasons[row]:
            called[row], reasons[row] = UNASSIGNED, UNEXPECTED_CHANGES
    return Calls(argmax, called, best, reasons, unexpected, p_values)


def _told(defining: Sequence[DefiningCall | None] | None, row: int) -> str:
    call = defining[row] if defining is not None else None
    return call.label if call is not None else ""


@dataclass(frozen=True)
class Evidence:
    """What the calls of ``n`` spikes are checked against: each spike's ``changes``, its clade
    ``placements`` (``None`` without aligned sites) and its ``defining`` call (``None`` when
    the model has no defining changes)."""

    changes: list[tuple[str, ...]]
    placements: list[Placement | None]
    defining: list[DefiningCall | None]


def spike_evidence(spikes: Sequence[SpikeRecord], check: ChangeCheck | None = None) -> Evidence:
    """The :class:`Evidence` of ``spikes``; defining calls need ``check``'s defining changes."""
    tree = clade_tree()
    placements = [
        tree.place(spike.clade_bases) if len(spike.clade_bases) else None for spike in spikes
    ]
    changes = [spike_changes(spike) for spike in spikes]
    defining: list[DefiningCall | None] = [None] * len(spikes)
    if check is not None and check.defining:
        names = frozenset().union(*check.defining.values())
        defining = [
            defining_call(carried, unread_changes(spike, names), check.defining)
            for spike, carried in zip(spikes, changes, strict=True)
        ]
    return Evidence(changes, placements, defining)


def sequence_evidence(sequences: Sequence[str], check: ChangeCheck | None = None) -> Evidence:
    """:func:`spike_evidence` of sequences (genomes or spikes), each aligned as any input is."""
    return spike_evidence([extract_spike("sequence", s) for s in sequences], check)


def with_change_alpha(classifier: P, alpha: float | None) -> P:
    """``classifier`` with its change check at level ``alpha`` (None: the model's; 0: off)."""
    if alpha is None or classifier.change_check is None:
        return classifier
    check = replace(classifier.change_check, alpha=alpha) if alpha else None
    return replace(classifier, change_check=check)


def prediction_columns(classes: Iterable[str]) -> list[str]:
    """The output table's columns: :data:`BASE_COLUMNS`, then one ``p_<class>`` per class."""
    return [*BASE_COLUMNS, *(f"p_{label}" for label in classes)]


def _chunks(records: Iterable[FastaRecord], size: int) -> Iterator[list[FastaRecord]]:
    iterator = iter(records)
    while chunk := list(islice(iterator, size)):
        yield chunk


def forward_threads(workers: int, cores: int | None = None) -> int:
    """Torch threads for the forward pass beside ``workers`` alignment processes: a third of
    the cores, at least one. Alignment takes about twice the forward pass's core-seconds
    (BENCHMARKS.md), and more OpenMP threads than the cores the workers leave wait on each other
    (2 cores: 9.7-10.1 s with one thread against 10.8 s with two)."""
    if workers <= 1:
        return torch.get_num_threads()
    return max(1, round((cores or os.cpu_count() or 1) / 3))


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Within the block torch runs ``threads`` intra-op threads; the previous number after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def classify_spikes(
    spikes: list[SpikeRecord], classifier: Predictor, batch_size: int = 64
) -> pd.DataFrame:
    """Predictions for already extracted spikes, one row each, in order, by a classifier or
    an ensemble (:mod:`bertgeom.model.ensemble`)."""
    settings = classifier.settings
    usable = [index for index, spike in enumerate(spikes) if spike.usable]
    probabilities = classifier.probabilities(
        [spikes[index].sequence for index in usable], batch_size=batch_size
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
    table["clade"] = ""
    table["clade_class"] = ""
    table["clade_support"] = np.nan
    table["defining_class"] = ""
    table["unexpected_changes"] = ""
    table["changes_p_value"] = np.nan
    full = np.full((len(spikes), len(settings.classes)), np.nan)
    if usable:
        full[usable] = probabilities
        evidence = spike_evidence([spikes[index] for index in usable], classifier.change_check)
        placements = evidence.placements
        calls = checked_calls(
            probabilities,
            evidence.changes,
            settings.classes,
            settings.unassigned_threshold,
            classifier.change_check,
            placements,
            evidence.defining,
        )
        table.loc[usable, "predicted_class"] = calls.called
        table.loc[usable, "probability"] = calls.best
        table.loc[usable, "unassigned_reason"] = calls.reasons
        table.loc[usable, "clade"] = [p.clade if p else "" for p in placements]
        table.loc[usable, "clade_class"] = [p.clade_class if p else "" for p in placements]
        table.loc[usable, "clade_support"] = [
            round(p.support, 4) if p else np.nan for p in placements
        ]
        table.loc[usable, "defining_class"] = [d.label if d else "" for d in evidence.defining]
        table.loc[usable, "unexpected_changes"] = [",".join(u) for u in calls.unexpected]
        table.loc[usable, "changes_p_value"] = np.round(calls.p_values, 4)
    for column, label in enumerate(settings.classes):
        table[f"p_{label}"] = full[:, column]
    return table


def predict_records(
    records: Iterable[FastaRecord],
    classifier: Predictor,
    batch_size: int = 64,
    chunk_size: int = 256,
    thresholds: QCThresholds | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
    extractor: SpikeExtractor | None = None,
) -> pd.DataFrame:
    """Classify every record, in input order; spikes are held ``chunk_size`` records at a time.

    With ``workers > 1`` the records are aligned in that many processes, one chunk ahead of
    the classifier (:func:`bertgeom.genomics.parallel.spike_extractor`; or ``extractor``, one
    the caller opened, e.g. before loading the model, with the same ``workers``), and the
    forward pass takes :func:`forward_threads` torch threads.
    """
    parts = []

    def classify(chunk: list[FastaRecord], pending: Pending) -> None:
        parts.append(classify_spikes(pending(), classifier, batch_size))
        if progress:
            progress(len(chunk))

    with (
        nullcontext(extractor) if extractor else spike_extractor(workers, thresholds) as submit,
        torch_threads(forward_threads(workers)),
    ):
        previous: tuple[list[FastaRecord], Pending] | None = None
        for chunk in _chunks(records, chunk_size):
            submitted = (chunk, submit(chunk))
            if previous is not None:
                classify(*previous)
            previous = submitted
        if previous is not None:
            classify(*previous)
    if not parts:
        return pd.DataFrame(columns=prediction_columns(classifier.settings.classes))
    return pd.concat(parts, ignore_index=True)
