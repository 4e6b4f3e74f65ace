"""The results directory: written whole or not at all, read back as written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertgeom.errors import InputError
from bertgeom.results import store
from bertgeom.results.store import HEAD_COLUMNS, ResultsWriter, load_results, tidy


def _heads() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "layer": [1, 0, 0, 0],
            "head": [0, 1, 0, -1],
            "class": ["all", "all", "all", "all"],
            "metric": ["gate.open.score_mean"] * 3 + ["subspace.layer.asymmetry"],
            "value": [0.5, 0.25, 0.75, 1.0],
        }
    )


def test_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "_ROW_GROUP_ROWS", 3)  # several row groups
    maps = np.arange(2 * 2 * 3 * 3, dtype=np.float16).reshape(2, 2, 3, 3)
    with ResultsWriter(tmp_path / "results") as writer:
        for start in range(0, 8, 2):
            writer.add_rows(
                "inputs",
                pd.DataFrame(
                    {"input_index": [start, start + 1], "layer": [0, 0], "gate": ["open", "mixed"]}
                ),
            )
        writer.write_table("heads", tidy(_heads(), HEAD_COLUMNS))
        writer.write_array(
            "class_mean_maps",
            maps,
            ["class", "pair", "query", "key"],
            "maps",
            {"class": ["all", "x"], "pair": [[0, 0], [1, 2]]},
        )
        writer.write_manifest({"model": {"path": "m"}})
    results = load_results(tmp_path / "results")
    assert results.manifest["format_version"] == store.FORMAT_VERSION
    assert list(results.heads["layer"]) == [0, 0, 0, 1]  # sorted by layer, head
    assert list(results.heads["head"]) == [-1, 0, 1, 0]
    assert results.layers is None and results.predictions is None
    inputs = results.inputs()
    assert list(inputs["input_index"]) == list(range(8))
    assert list(results.inputs(columns=["gate"], gate="mixed")["gate"]) == ["mixed"] * 4
    np.testing.assert_array_equal(results.class_mean_map("x", 1, 2), maps[1, 1])
    with pytest.raises(KeyError):
        results.class_mean_map("x", 3, 3)
    index = json.loads((tmp_path / "results" / "arrays" / "index.json").read_text())
    assert index["class_mean_maps"]["dims"] == ["class", "pair", "query", "key"]
    assert results.metric("gate.open.score_mean").loc[0, 1] == 0.25


def test_an_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "results"
    with pytest.raises(KeyboardInterrupt), ResultsWriter(target) as writer:
        writer.add_rows("inputs", pd.DataFrame({"input_index": [0]}))
        writer.write_table("heads", tidy(_heads(), HEAD_COLUMNS))
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_an_existing_results_directory_is_replaced_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "results"
    with ResultsWriter(target) as writer:
        writer.write_table("heads", tidy(_heads(), HEAD_COLUMNS))
        writer.write_manifest({"run": 1})
    with pytest.raises(RuntimeError), ResultsWriter(target) as writer:
        writer.write_manifest({"run": 2})
        raise RuntimeError("failed")
    assert load_results(target).manifest["run"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["results"]


def test_load_refuses_a_directory_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a results directory"):
        load_results(tmp_path)


def test_arrays_need_one_name_per_axis(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="axes"), ResultsWriter(tmp_path / "r") as writer:
        writer.write_array("x", np.zeros((2, 2)), ["layer"], "bad")
    assert not (tmp_path / "r").exists()
