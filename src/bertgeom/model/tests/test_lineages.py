"""Leave-lineage-out: groups follow the tree, a fold never trains on what it holds out, and a
fold runs end to end (tiny preset) with both models called on every held-out genome."""

from __future__ import annotations

import pandas as pd
import pytest

from bertgeom.genomics.clades import clade_tree
from bertgeom.genomics.mutations import CLASSES
from bertgeom.model.lineage_folds import (
    DEFAULT_FOLDS,
    NEVER_TRAINED,
    OUTSIDE_DEFINITIONS,
    EmbeddedGenome,
    Fold,
    LineageGroup,
    embedded_genomes,
    expected_call,
    fold_dataset,
    group_members,
)
from bertgeom.model.lineage_tables import INPUT_KINDS, summarise
from bertgeom.model.lineages import leave_lineage_out
from bertgeom.model.train import TrainingOptions


@pytest.fixture(scope="module")
def genomes() -> list[EmbeddedGenome]:
    return embedded_genomes()


def test_a_group_is_a_subtree_within_its_class() -> None:
    tree = clade_tree()
    pre_voc_20b = LineageGroup("20B", ("20B",))
    assert pre_voc_20b.holds("20B", tree) and pre_voc_20b.holds("20D", tree)
    assert not pre_voc_20b.holds("20I", tree)  # Alpha descends from 20B but is another class
    assert not pre_voc_20b.holds("21M", tree)
    later = LineageGroup("23I", ("23I",))
    assert later.holds("26B", tree) and later.holds("24A", tree) and not later.holds("22B", tree)
    assert expected_call(NEVER_TRAINED[0], tree) == "unassigned"  # 21C
    assert expected_call(NEVER_TRAINED[1], tree) == "Omicron"  # 25I


def test_every_class_is_held_out_and_multi_clade_classes_twice(
    genomes: list[EmbeddedGenome],
) -> None:
    tree = clade_tree()
    groups_per_class: dict[str, int] = {}
    for fold in DEFAULT_FOLDS:
        for group in fold.groups:
            members = group_members(genomes, group, tree, agreeing=True)
            assert members, group.name
            label = expected_call(group, tree)
            groups_per_class[label] = groups_per_class.get(label, 0) + 1
    real_classes = {g.label for g in genomes if g.label in CLASSES}
    assert set(groups_per_class) == real_classes
    clades_per_class = {label: {g.clade for g in genomes if g.label == label} for label in CLASSES}
    for label, count in groups_per_class.items():
        assert count >= (2 if len(clades_per_class[label]) > 1 else 1), label


@pytest.mark.parametrize("fold", DEFAULT_FOLDS, ids=[fold.name for fold in DEFAULT_FOLDS])
def test_a_fold_never_trains_on_a_held_out_genome_or_its_spike(
    genomes: list[EmbeddedGenome], fold: Fold
) -> None:
    tree = clade_tree()
    dataset = fold_dataset(genomes, fold, tree, seed=1, synthetic_per_split=(5, 2))
    held_out = [g for g in genomes if any(group.holds(g.clade, tree) for group in fold.groups)]
    held_ids = {g.record_id for g in held_out}
    real = dataset[dataset["source"] == "real"]
    trained_ids = {rid for ids in real["record_ids"] for rid in ids.split(",")}
    assert not trained_ids & held_ids
    assert not set(dataset["sequence"]) & {g.spike.sequence for g in held_out}
    assert set(dataset["split"]) == {"train", "validation"}


@pytest.fixture(scope="module")
def one_fold() -> pd.DataFrame:
    """Fold 3 with the tiny preset, one epoch: the table."""
    return leave_lineage_out(
        TrainingOptions("tiny", epochs=1), folds=[DEFAULT_FOLDS[2]], synthetic_per_split=(10, 4)
    )


def test_one_fold_end_to_end_with_the_tiny_preset(one_fold: pd.DataFrame) -> None:
    fold, table = DEFAULT_FOLDS[2], one_fold
    assert set(table["model"]) == {"bert", "kmer_logistic_regression"}
    outcome_columns = [c for c in table.columns if c.startswith(("called_", "unassigned_"))]
    assert (table[outcome_columns].sum(axis=1) == table["n"]).all()  # every genome counted once
    # every input not called its class is named, with its arg-max and what it was called
    missed = table["missed"].map(lambda text: text.split("; ") if text else [])
    assert (missed.map(len) == table["n"] - table["called_expected"]).all()
    named = [entry for entries in missed for entry in entries]
    assert named and all("/" in entry.rsplit(": ", 1)[1] for entry in named)
    groups = {g.name for g in (*fold.groups, *NEVER_TRAINED)}
    assert set(table["group"]) == groups | {OUTSIDE_DEFINITIONS}
    defined = table[table["group"] == OUTSIDE_DEFINITIONS]
    assert set(defined["input"]) == {"spike", "partial spike"} and (defined["n"] == 9).all()
    assert (defined["expected"] == "unassigned").all() and not defined["held_out"].any()
    assert set(table["rule"]) == {"clade tree", "changes only"}
    assert set(table["input"]) == set(INPUT_KINDS)  # genomes, their spikes, windows of them
    summary = summarise(table)
    assert len(summary) == 4 * len(INPUT_KINDS) and set(summary["model"]) == {
        "bert",
        "kmer_logistic_regression",
    }
    assert (summary["held_out_n"] == 183 + 104).all()


def test_an_ensemble_fold_calls_each_member_and_their_mean(one_fold: pd.DataFrame) -> None:
    table = leave_lineage_out(
        TrainingOptions("tiny", epochs=1),
        folds=[DEFAULT_FOLDS[2]],
        synthetic_per_split=(10, 4),
        members=2,
    )
    models = ["bert", "bert member 2", "bert ensemble", "kmer_logistic_regression"]
    assert list(table["model"].unique()) == models
    # the first member is the model a single-member run trains: the same rows
    for model in ("bert", "kmer_logistic_regression"):
        pd.testing.assert_frame_equal(
            table[table["model"] == model].reset_index(drop=True),
            one_fold[one_fold["model"] == model].reset_index(drop=True),
        )
    outcome_columns = [c for c in table.columns if c.startswith(("called_", "unassigned_"))]
    assert (table[outcome_columns].sum(axis=1) == table["n"]).all()


def test_folds_in_worker_processes_give_the_sequential_table() -> None:
    import os

    import torch

    folds = [DEFAULT_FOLDS[2], DEFAULT_FOLDS[1]]
    options = TrainingOptions("tiny", epochs=1)
    finished: list[int] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # as each of the two workers
    try:
        sequential = leave_lineage_out(options, folds=folds, synthetic_per_split=(10, 4))
    finally:
        torch.set_num_threads(threads)
    parallel = leave_lineage_out(
        options,
        folds=folds,
        synthetic_per_split=(10, 4),
        workers=2,
        progress=lambda stage, done, total: finished.append(done),
    )
    assert list(sequential["fold"].unique()) == ["fold 3", "fold 2"]  # in the folds' order
    pd.testing.assert_frame_equal(parallel, sequential)
    assert finished == [0, 1, 2]
