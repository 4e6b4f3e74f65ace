"""The case study's dataset: real spikes from the embedded genomes, synthetic spikes, and
train/validation/test splits by unique spike sequence, stratified by class, seeded.

One row per unique (spike sequence, label); ``n_records`` counts the genomes behind it. Splitting
unique sequences, not records, is what keeps identical pre-VOC spikes out of two splits, which
would inflate accuracy. A synthetic spike identical to a real one is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertgeom.genomics.fasta import FastaRecord, read_fasta
from bertgeom.genomics.labels import read_label_table, refuse_unknown_labels
from bertgeom.genomics.mutations import CLASSES
from bertgeom.genomics.profiles import BACKGROUND_CLASS, lineage_backgrounds
from bertgeom.genomics.reference import data_path
from bertgeom.genomics.spike import QCStatus, SpikeRecord, extract_spike
from bertgeom.genomics.synthetic import Background, GeneratorSettings, synthesize_table

GENOME_FILES = ("genomes_ncbi.fasta.xz", "genomes_nextstrain_early.fasta.xz")
OUTSIDE_LABELS = ("other-VOI", "disputed")
"""Labels of real genomes outside the eight classes: kept apart to test ``unassigned``."""
SPLITS = ("train", "validation", "test")
DATASET_COLUMNS = [
    "sequence_id",
    "label",
    "source",
    "split",
    "n_records",
    "record_ids",
    "status",
    "sequence",
]


def read_labels(path: Path) -> dict[str, str]:
    """A labels TSV with columns ``record_id`` and ``label`` as a dict (InputError if unusable).

    Every label must be one of the eight classes or of :data:`OUTSIDE_LABELS` (case counts):
    any other label would silently leave its records out of both ``dataset.parquet`` and
    ``outside.parquet`` at ``data split``.
    """
    labels = read_label_table(path, ("record_id",))
    known_text = (
        f"the classes are {', '.join(CLASSES)}, and {', '.join(OUTSIDE_LABELS)} for the genomes "
        "outside them (outside.parquet)"
    )
    refuse_unknown_labels(labels, path, (*CLASSES, *OUTSIDE_LABELS), known_text)
    return labels


@dataclass
class LabelMatch:
    """How the records of ``--fasta`` files met the ``--labels``: ``records`` read,
    ``labelled`` among them (the others are skipped), and ``labels`` given, of which
    ``unmatched_labels`` name no record."""

    records: int = 0
    labelled: int = 0
    labels: int = 0
    unmatched_labels: int = 0

    @property
    def unlabelled(self) -> int:
        return self.records - self.labelled


def embedded_labelled_records() -> Iterator[tuple[FastaRecord, Any]]:
    """Each embedded genome with its ``labels.tsv`` row (``label``, ``nextstrain_clade_computed``,
    ...); genomes the table does not list are skipped."""
    table = pd.read_csv(data_path("labels.tsv"), sep="\t", dtype=str)
    rows = {(row.file, row.record_name): row for row in table.itertuples()}
    for file_name in GENOME_FILES:
        for record in read_fasta(data_path(file_name)):
            row = rows.get((file_name, record.description)) or rows.get(
                (file_name, record.record_id)
            )
            if row is not None:
                yield record, row


@cache
def embedded_aligned() -> tuple[tuple[FastaRecord, Any, SpikeRecord], ...]:
    """Each embedded genome with its ``labels.tsv`` row and its aligned spike, aligned once per
    process: the demo's dataset and its leave-lineage-out folds read the same alignments (about
    10 s of minimap2 each time). Treat the records as read-only."""
    return tuple(
        (record, row, extract_spike(record.record_id, record.sequence))
        for record, row in embedded_labelled_records()
    )


def _labelled_records(
    fasta_paths: Sequence[Path] | None,
    labels: dict[str, str] | None,
    match: LabelMatch | None = None,
) -> Iterator[tuple[str, str, str]]:
    """``(record_id, label, raw sequence)`` of every labelled record (default: embedded data);
    ``match`` counts how the records met the labels."""
    if fasta_paths is None:
        for record, row in embedded_labelled_records():
            yield record.record_id, str(row.label), record.sequence
        return
    labels = labels or {}
    match = match if match is not None else LabelMatch()
    match.labels = len(labels)
    seen: set[str] = set()
    for path in fasta_paths:
        for record in read_fasta(path):
            match.records += 1
            label = labels.get(record.record_id)
            if label is not None:
                match.labelled += 1
                seen.add(record.record_id)
                yield record.record_id, label, record.sequence
    match.unmatched_labels = len(labels.keys() - seen)


def real_spikes(
    fasta_paths: Sequence[Path] | None = None,
    labels: dict[str, str] | None = None,
    match: LabelMatch | None = None,
) -> pd.DataFrame:
    """Spikes of labelled records, one row per record: ``record_id, label, status, sequence``.

    Default: the embedded genomes and ``labels.tsv``; else the given FASTA files, labelled by
    ``labels`` (record id to class; unlabelled records are skipped, and counted in ``match``).
    A record whose spike cannot be extracted keeps its row, with its hard QC status.
    """
    if fasta_paths is None:
        labelled = [
            (record.record_id, str(row.label), spike) for record, row, spike in embedded_aligned()
        ]
    else:
        labelled = [
            (record_id, label, extract_spike(record_id, raw))
            for record_id, label, raw in _labelled_records(fasta_paths, labels, match)
        ]
    rows = [
        (record_id, label, spike.status.value, spike.sequence)
        for record_id, label, spike in labelled
    ]
    return pd.DataFrame(rows, columns=["record_id", "label", "status", "sequence"])


def unique_sequences(records: pd.DataFrame, source: str) -> pd.DataFrame:
    """Collapse records to one row per (sequence, label); a sequence with two labels is dropped."""
    usable = records[records["sequence"].str.len() > 0]
    grouped = usable.groupby("sequence", sort=False)
    table = grouped.agg(
        label=("label", "first"),
        n_labels=("label", "nunique"),
        n_records=("label", "size"),
        record_ids=("record_id", lambda ids: ",".join(ids)),
        status=("status", "first"),
    ).reset_index()
    table = table[table["n_labels"] == 1].drop(columns="n_labels")
    table["source"] = source
    return table


def split_by_sequence(
    table: pd.DataFrame, fractions: tuple[float, float, float], seed: int
) -> pd.Series:
    """Assign each row (a unique sequence) to a split, stratified by ``label``, seeded.

    Within each class the rows are shuffled and cut at the fractions, rounding so that a class
    with three or more sequences has at least one in validation and one in test (a class with
    two puts one in train and one in test; a class with one, in train).
    """
    train_share, validation_share, test_share = fractions
    if not np.isclose(train_share + validation_share + test_share, 1.0) or min(fractions) <= 0:
        raise ValueError(f"split fractions must be positive and sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    split = pd.Series("train", index=table.index, dtype=object)
    for label in sorted(table["label"].unique()):
        members = table.index[table["label"] == label].to_numpy()
        members = members[rng.permutation(len(members))]
        count = len(members)
        n_test = max(round(count * test_share), 1) if count >= 2 else 0
        n_validation = max(round(count * validation_share), 1) if count >= 3 else 0
        split[members[:n_test]] = "test"
        split[members[n_test : n_test + n_validation]] = "validation"
    return split


def synthetic_spikes(
    per_split: tuple[int, int, int] = (250, 40, 60),
    seed: int = 42,
    outliers: bool = False,
    settings: GeneratorSettings | None = None,
    profiles: pd.DataFrame | None = None,
    backgrounds: Sequence[Background] = (),
) -> pd.DataFrame:
    """Synthetic spikes per class for each split (drawn with separate seeds, sometimes on one
    of ``backgrounds``, the changes of real training spikes), and as many spikes of no class
    (label ``outlier``) when ``outliers``, drawn from ``profiles`` (default: the embedded
    ones): columns ``record_id, label, status, sequence, mutations, split``."""
    parts = []
    for offset, (split, count) in enumerate(zip(SPLITS, per_split, strict=True)):
        if count == 0:
            continue
        drawn = synthesize_table(
            count,
            seed=seed * 1000 + offset,
            settings=settings,
            outliers=count if outliers else 0,
            profiles=profiles,
            backgrounds=backgrounds,
        )
        drawn["record_id"] = [f"synthetic-{split}-{i}" for i in range(len(drawn))]
        drawn["status"] = QCStatus.OK.value
        drawn["split"] = split
        parts.append(drawn)
    return pd.concat(parts, ignore_index=True)


def _usable(real: pd.DataFrame) -> pd.DataFrame:
    hard = [status.value for status in QCStatus if status.is_hard_failure]
    return real[~real["status"].isin(hard)]


def split_real(
    real: pd.DataFrame, fractions: tuple[float, float, float], seed: int
) -> pd.DataFrame:
    """The usable real spikes of the eight classes, one row per unique sequence, with the
    ``split`` :func:`split_dataset` gives them."""
    usable = _usable(real)
    table = unique_sequences(usable[usable["label"].isin(CLASSES)], "real").reset_index(drop=True)
    if table.empty:
        raise ValueError("no usable labelled spikes of the eight classes")
    table["split"] = split_by_sequence(table, fractions, seed)
    return table


def training_backgrounds(
    real: pd.DataFrame, fractions: tuple[float, float, float], seed: int
) -> tuple[Background, ...]:
    """The lineage backgrounds (:func:`~bertgeom.genomics.profiles.lineage_backgrounds`) of the
    real pre-VOC spikes that :func:`split_dataset` with ``fractions`` and ``seed`` puts in
    training, each spike aligned again as a spike-only input: what the synthetic spikes of a
    dataset are drawn on, none from a validation or test spike."""
    table = split_real(real, fractions, seed)
    rows = table[(table["split"] == "train") & (table["label"] == BACKGROUND_CLASS)]
    names = [str(ids).split(",")[0] for ids in rows["record_ids"]]
    spikes = [
        extract_spike(name, str(seq)) for name, seq in zip(names, rows["sequence"], strict=True)
    ]
    return lineage_backgrounds(spikes, [BACKGROUND_CLASS] * len(spikes))


def split_dataset(
    real: pd.DataFrame,
    synthetic: pd.DataFrame | None,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 42,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The dataset (eight classes, split) and the real spikes outside the eight classes.

    Real unique spikes of the classes are split ``fractions``, stratified by class; synthetic
    spikes keep the split they were drawn for, and any synthetic spike equal to a real one, or
    to one drawn for another split, is dropped: no sequence is in two splits.
    """
    usable = _usable(real)
    real_table = split_real(real, fractions, seed)
    seen = set(real_table["sequence"])
    parts = [real_table]
    drawn = synthetic if synthetic is not None else real.iloc[:0].assign(split="")
    for split in SPLITS:
        part = unique_sequences(drawn[drawn["split"] == split], "synthetic")
        part = part[~part["sequence"].isin(seen)].copy()
        seen.update(part["sequence"])
        part["split"] = split
        parts.append(part)
    dataset = pd.concat(parts, ignore_index=True)
    dataset["sequence_id"] = [f"{source}-{i:05d}" for i, source in enumerate(dataset["source"])]
    outside = unique_sequences(usable[usable["label"].isin(OUTSIDE_LABELS)], "real")
    outside["split"] = "outside"
    outside["sequence_id"] = [f"outside-{i:05d}" for i in range(len(outside))]
    return dataset[DATASET_COLUMNS], outside[DATASET_COLUMNS]


def build_dataset(
    synthetic_per_split: tuple[int, int, int] = (250, 40, 60),
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 42,
    settings: GeneratorSettings | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The embedded dataset, prepared, synthesised and split in one call: the synthetic spikes
    are drawn on the lineage backgrounds of the real pre-VOC spikes of the training split."""
    real = real_spikes()
    backgrounds = training_backgrounds(real, fractions, seed)
    synthetic = synthetic_spikes(
        synthetic_per_split, seed, settings=settings, backgrounds=backgrounds
    )
    return split_dataset(real, synthetic, fractions, seed)


def save_dataset(dataset: pd.DataFrame, outside: pd.DataFrame, directory: Path) -> None:
    """Write ``dataset.parquet`` and ``outside.parquet`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(directory / "dataset.parquet", index=False)
    outside.to_parquet(directory / "outside.parquet", index=False)


def load_dataset(directory: Path) -> pd.DataFrame:
    """Read a dataset written by :func:`save_dataset` (raises InputError when absent)."""
    from bertgeom.errors import InputError

    path = directory / "dataset.parquet"
    if not path.is_file():
        step = (
            f"split it first: 'bertgeom data split {directory}'"
            if (directory / "real.parquet").is_file()
            else "prepare and split it first: 'bertgeom data prepare', then 'bertgeom data split'"
        )
        raise InputError(f"{directory}: no dataset.parquet here; {step}")
    return read_table(path)


def read_table(path: Path) -> pd.DataFrame:
    """A Parquet table of a dataset directory, or one InputError line naming the file."""
    from bertgeom.errors import InputError, first_line

    try:
        return pd.read_parquet(path)
    except (ValueError, OSError) as error:  # pyarrow's errors for a file that is not Parquet
        raise InputError(f"{path}: not a readable Parquet table ({first_line(error)})") from error
