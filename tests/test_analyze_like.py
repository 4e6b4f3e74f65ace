"""``bertgeom analyze --like RESULTS``: an analysis repeated from its manifest alone gives the
same tables, with every measurement's recorded parameters, and options given beside it change
the plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_reference import assert_same_table
from typer.testing import CliRunner

from bertgeom.analysis import AnalysisOptions, InputSpec, analyze
from bertgeom.analysis.like import plan_from_results
from bertgeom.capture.stream_measurements import DistributionParameters
from bertgeom.capture.tests.tiny_models import save_tiny_model, sentences
from bertgeom.cli.main import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A first analysis with parameters that are not the defaults: the gates' window and
    cluster rows through the options, the distribution's histogram through its parameters."""
    root = tmp_path_factory.mktemp("like")
    model = save_tiny_model("bert", root / "model")
    lines = sentences(9, seed=4, longest=30)
    (root / "inputs.txt").write_text("\n".join(lines) + "\n")
    labels = ["short" if len(line.split()) < 12 else "long" for line in lines]
    pd.DataFrame({"input_id": range(1, 10), "label": labels}).to_csv(
        root / "labels.tsv", sep="\t", index=False
    )
    spec = InputSpec("text", root / "inputs.txt", labels=root / "labels.tsv")
    options = AnalysisOptions(batch_size=4, window=3, cluster_rows=5)
    histogram = DistributionParameters(histogram_range=(-4.0, 4.0), histogram_bins=37)
    analyze(model, spec, root / "first", options, measurements={"distribution": histogram})
    return root / "first"


def _manifest(results: Path) -> dict[str, object]:
    manifest: dict[str, object] = json.loads((results / "manifest.json").read_text())
    return manifest


def test_like_repeats_the_analysis_from_its_manifest(analysed: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    result = runner.invoke(app, ["analyze", "--like", str(analysed), "--out", str(again)])
    assert result.exit_code == 0, result.output
    first, second = _manifest(analysed), _manifest(again)
    for key in ("input", "parameters", "measurements", "classes", "data"):
        assert second[key] == first[key], key
    measurements = second["measurements"]
    assert isinstance(measurements, dict)
    assert measurements["gates"]["window"] == 3 and measurements["gates"]["cluster_rows"] == 5
    assert measurements["distribution"]["histogram_bins"] == 37
    tables = sorted(path.name for path in analysed.glob("*.parquet"))
    assert tables == sorted(path.name for path in again.glob("*.parquet"))
    assert {"heads.parquet", "layers.parquet", "histograms.parquet"} <= set(tables)
    for name in tables:
        assert_same_table(pd.read_parquet(again / name), pd.read_parquet(analysed / name), name)
    values = pd.read_parquet(again / "histograms.parquet")
    assert values[values["kind"] == "values"]["bin_left"].nunique() == 37 + 2  # overflows
    for name in ("class_mean_maps", "singular_values"):
        np.testing.assert_array_equal(
            np.load(again / "arrays" / f"{name}.npy"), np.load(analysed / "arrays" / f"{name}.npy")
        )


def test_options_given_beside_like_change_the_plan(analysed: Path, tmp_path: Path) -> None:
    changed = tmp_path / "changed"
    result = runner.invoke(
        app,
        ["analyze", "--like", str(analysed), "--out", str(changed), "--map-length", "7"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    measurements = _manifest(changed)["measurements"]
    assert isinstance(measurements, dict)
    assert measurements["class_mean_maps"]["length"] == 7  # worked out again
    assert measurements["distribution"]["histogram_bins"] == 37  # kept
    assert np.load(changed / "arrays" / "class_mean_maps.npy").shape[-1] == 7


def test_plan_leaves_out_how_the_passes_ran(analysed: Path) -> None:
    plan = plan_from_results(analysed)
    assert plan.options.window == 3 and plan.options.device == "cpu"
    assert plan.spec.kind == "text" and plan.spec.labels is not None


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda root: root / "missing", "no such results directory"),
        (lambda root: root, "not a results directory"),
    ],
)
def test_like_refuses_what_is_not_a_results_directory(
    make: object, expected: str, tmp_path: Path
) -> None:
    assert callable(make)
    result = runner.invoke(
        app, ["analyze", "--like", str(make(tmp_path)), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code != 0
    assert expected in result.output
    assert not (tmp_path / "out").exists()


def test_like_refuses_a_manifest_without_measurements(analysed: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    manifest = _manifest(analysed)
    del manifest["measurements"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["analyze", "--like", str(old), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "earlier bertgeom" in result.output
