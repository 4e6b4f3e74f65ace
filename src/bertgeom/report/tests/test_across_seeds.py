"""The headline numbers of fabricated results with planted numbers, and their statistics
across seeds against a hand computation (categorical and numeric, a tie, a "never")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertgeom.pipeline.over_seeds import seed_values
from bertgeom.report.across_seeds import (
    CATEGORICAL,
    NUMERIC,
    SEEDS_SCHEMA,
    VALUE_COLUMNS,
    across_seeds,
)
from bertgeom.report.tests.fabricated import (
    EMBEDDING_CONE,
    PLANTED_MASK_HEAD,
    PLANTED_ZERO_DROP,
    planted_head,
    write_fabricated_results,
)


@pytest.fixture(scope="module")
def values(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The headline numbers of three fabricated seeds (each its own random heads)."""
    root = tmp_path_factory.mktemp("seeds")
    frames = []
    for seed in (0, 1, 2):
        path = write_fabricated_results(root / f"seed-{seed}", seed=seed)
        frames.append(seed_values(path).assign(seed=seed))
    return pd.concat(frames, ignore_index=True)


def _value(values: pd.DataFrame, finding: str, layer: int, statistic: str) -> np.ndarray:
    rows = values[
        (values["finding"] == finding)
        & (values["layer"] == layer)
        & (values["statistic"] == statistic)
    ]
    return rows.sort_values("seed")["value"].to_numpy()


def test_headline_values_find_the_planted_numbers(values: pd.DataFrame) -> None:
    assert list(values.columns) == [*VALUE_COLUMNS, "seed"]
    planted_layer, _ = planted_head(2, 4)
    assert (_value(values, "ablation.costliest_head_layer", -1, "zero") == planted_layer).all()
    costs = _value(values, "ablation.costliest_head_cost", -1, "zero.accuracy")
    np.testing.assert_allclose(costs, PLANTED_ZERO_DROP)
    # zeroing layer 1's block costs 0.6 in accuracy, layer 0's 0.5
    assert (_value(values, "ablation.costliest_layer", -1, "zero") == 1).all()
    np.testing.assert_allclose(_value(values, "ablation.layer_cost", 0, "zero.accuracy"), 0.5)
    # the planted masking head: 0.6 against 0.05 matched; blocks: 1.5 - layer against 0.1
    excess = _value(values, "key_masking.excess", -1, "true_log_probability")
    np.testing.assert_allclose(excess, 0.55)
    layer = _value(values, "key_masking.top_head_layer", -1, "layer")
    assert (layer == PLANTED_MASK_HEAD[0]).all()
    for block in (0, 1):
        found = _value(values, "key_masking.excess", block, "true_log_probability")
        np.testing.assert_allclose(found, 1.5 - block - 0.1)
    # the embeddings' cone index, trained and trained minus its control
    cone = "cone.normalized_mean"
    np.testing.assert_allclose(_value(values, "cone_index", -1, cone), EMBEDDING_CONE[False])
    difference = EMBEDDING_CONE[False] - EMBEDDING_CONE[True]
    np.testing.assert_allclose(_value(values, "trained_minus_control", -1, cone), difference)
    # the gate mix of a layer sums to 1 in every seed
    mix = values[(values["finding"] == "gate_mix") & (values["layer"] == 0)]
    np.testing.assert_allclose(mix.groupby("seed")["value"].sum(), 1.0)
    assert set(values.loc[values["kind"] == CATEGORICAL, "finding"]) == {
        "separation_layer",
        "ablation.costliest_layer",
        "ablation.costliest_head_layer",
        "key_masking.top_head_layer",
    }


def test_across_seeds_equals_a_hand_computation(values: pd.DataFrame) -> None:
    table = across_seeds(values)
    assert list(table.columns) == SEEDS_SCHEMA.names
    keys = ["finding", "layer", "statistic"]
    assert not table.duplicated(keys).any()
    assert len(table) == len(values.drop_duplicates(keys))
    for _, row in table[table["kind"] == NUMERIC].iterrows():
        numbers = _value(values, row["finding"], row["layer"], row["statistic"])
        numbers = numbers[np.isfinite(numbers)]
        assert row["n_seeds"] == len(numbers)
        assert row["mean"] == pytest.approx(np.mean(numbers))
        assert row["std"] == pytest.approx(np.std(numbers, ddof=1), nan_ok=True)
        assert (row["min"], row["max"]) == pytest.approx((min(numbers), max(numbers)))
        assert row["agreement"] == np.mean(np.sign(numbers) == np.sign(np.mean(numbers)))


def test_agreement_of_layers_counts_never_and_breaks_ties_by_the_smaller_layer() -> None:
    def rows(finding: str, kind: str, numbers: list[float]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "finding": finding,
                "layer": -1,
                "statistic": "s",
                "kind": kind,
                "value": numbers,
                "seed": range(len(numbers)),
            }
        )

    nan = float("nan")
    values = pd.concat(
        [
            rows("separation_layer", CATEGORICAL, [2, nan, 2, 3]),
            rows("ablation.costliest_layer", CATEGORICAL, [3, 1, 3, 1]),
            rows("key_masking.top_head_layer", CATEGORICAL, [nan, nan, 0]),
            rows("cone_index", NUMERIC, [0.5, -0.1, nan, 0.2]),
        ]
    )
    table = across_seeds(values).set_index("finding")
    separation = table.loc["separation_layer"]
    assert (separation["mode"], separation["agreement"], separation["n_seeds"]) == (2, 0.5, 4)
    assert separation["mean"] == pytest.approx(7 / 3)
    tie = table.loc["ablation.costliest_layer"]
    assert (tie["mode"], tie["agreement"]) == (1, 0.5)
    never = table.loc["key_masking.top_head_layer"]
    assert np.isnan(never["mode"]) and never["agreement"] == pytest.approx(2 / 3)
    cone = table.loc["cone_index"]
    assert cone["n_seeds"] == 3 and cone["agreement"] == pytest.approx(2 / 3)
    assert cone["std"] == pytest.approx(np.std([0.5, -0.1, 0.2], ddof=1))
    assert np.isnan(cone["mode"])


def test_a_seed_without_ablation_or_control_has_only_its_layers(tmp_path: Path) -> None:
    path = write_fabricated_results(tmp_path / "plain", ablation=False, control=False)
    found = set(seed_values(path)["finding"])
    assert found == {"cone_index", "cls_separability", "separation_layer", "gate_mix"}
