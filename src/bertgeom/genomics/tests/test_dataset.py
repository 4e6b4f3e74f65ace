"""Splits by unique sequence: no sequence in two splits, stratified, seeded."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertgeom.genomics import dataset as dataset_module
from bertgeom.genomics.dataset import (
    build_dataset,
    embedded_aligned,
    split_by_sequence,
    split_dataset,
    synthetic_spikes,
)
from bertgeom.genomics.profiles import nucleotide_mutations


@pytest.fixture(scope="module")
def embedded() -> tuple[pd.DataFrame, pd.DataFrame]:
    return build_dataset(synthetic_per_split=(10, 3, 3))


def test_no_sequence_in_two_splits(embedded: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    dataset, outside = embedded
    assert dataset["sequence"].is_unique
    splits_per_sequence = dataset.groupby("sequence")["split"].nunique()
    assert (splits_per_sequence == 1).all()
    assert (
        not set(outside["sequence"]) & set(dataset[dataset["split"] != "train"]["sequence"]) - set()
    )


def test_every_real_class_is_in_every_split(embedded: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    dataset, outside = embedded
    real = dataset[dataset["source"] == "real"]
    for split in ("train", "validation", "test"):
        assert set(real[real["split"] == split]["label"]) == {
            "pre-VOC",
            "Alpha",
            "Beta",
            "Gamma",
            "Delta",
            "Omicron",
        }
    assert set(dataset[dataset["source"] == "synthetic"]["label"]) >= {"Lambda", "Mu"}
    assert set(outside["label"]) <= {"other-VOI", "disputed"} and len(outside) > 0
    # pre-VOC genomes are redundant: unique rows carry their duplicates' count
    assert real["n_records"].sum() > len(real)


def test_synthetic_backgrounds_come_from_training_spikes_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn: list[Any] = []

    def recording(*args: Any, **kwargs: Any) -> pd.DataFrame:
        drawn.append(kwargs["backgrounds"])
        return synthetic_spikes(*args, **kwargs)

    monkeypatch.setattr(dataset_module, "synthetic_spikes", recording)
    dataset, _ = dataset_module.build_dataset(synthetic_per_split=(2, 1, 1))
    split_of = dict(zip(dataset["sequence"], dataset["split"], strict=True))
    changes: dict[str, set[tuple[str, ...]]] = {"train": set(), "validation": set(), "test": set()}
    for _, row, spike in embedded_aligned():
        if str(row.label) == "pre-VOC" and spike.sequence in split_of and spike.usable:
            changes[split_of[spike.sequence]].add(nucleotide_mutations(spike))
    backgrounds = {tuple(m.name for m in background) for background in drawn[0]}
    assert len(backgrounds) > 50
    held_out_only = (changes["validation"] | changes["test"]) - changes["train"]
    assert held_out_only and not backgrounds & held_out_only


def test_split_is_seeded() -> None:
    synthetic = synthetic_spikes((2, 1, 1), seed=0)
    real = synthetic.drop(columns="split")
    first = split_dataset(real, None, seed=5)[0]
    second = split_dataset(real, None, seed=5)[0]
    assert first.equals(second)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=30, max_size=120), st.integers(0, 1000))
def test_split_by_sequence_partitions_and_stratifies(labels: list[str], seed: int) -> None:
    table = pd.DataFrame({"label": labels})
    if table["label"].value_counts().min() < 7:
        return
    split = split_by_sequence(table, (0.6, 0.2, 0.2), seed)
    assert set(split) == {"train", "validation", "test"}
    for label in set(labels):
        assert (split[table["label"] == label] == "train").mean() == pytest.approx(0.6, abs=0.15)
