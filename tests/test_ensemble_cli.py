"""An ensemble end to end: ``train --members`` trains the models that separate ``train --seed``
runs train, and ``predict`` and ``evaluate`` call with their mean probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_reference import one_thread
from safetensors.torch import load_file
from typer.testing import CliRunner

from bertgeom.cli.main import app
from bertgeom.genomics.dataset import save_dataset
from bertgeom.genomics.mutations import CLASSES
from bertgeom.genomics.reference import reference_genome

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ("--preset", "tiny", "--epochs", 1)
RECIPE = (*TINY, "--seed", 3)


def run(*arguments: str | Path | int) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in arguments])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, tiny_dataset: tuple[pd.DataFrame, pd.DataFrame]
) -> tuple[Path, Path]:
    """An ensemble of two tiny models (seeds 3 and 4) and its dataset."""
    root = tmp_path_factory.mktemp("ensemble")
    save_dataset(*tiny_dataset, root / "data")
    with one_thread():
        code, output = run(
            "train", "--data", root / "data", *RECIPE, "--members", 2, "--out", root / "models"
        )
    assert code == 0, output
    assert "trained an ensemble of 2 tiny models" in output
    return root / "models", root / "data"


def test_each_member_is_the_model_of_a_separate_train(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    models, data = trained
    assert json.loads((models / "ensemble.json").read_text())["members"] == [
        "member-1",
        "member-2",
    ]
    for number, seed in ((1, 3), (2, 4)):
        alone = tmp_path / f"seed-{seed}"
        code, output = run("train", "--data", data, *TINY, "--seed", seed, "--out", alone)
        assert code == 0, output
        member = load_file(models / f"member-{number}" / "model.safetensors")
        separate = load_file(alone / "model.safetensors")
        assert member.keys() == separate.keys()
        assert all(member[name].equal(separate[name]) for name in member)


def test_predict_calls_with_the_members_mean(trained: tuple[Path, Path], tmp_path: Path) -> None:
    models, _ = trained
    fasta = tmp_path / "two.fa"
    genome = reference_genome()
    fasta.write_text(f">a\n{genome}\n>b\n{genome[:21000]}{'N' * 2000}{genome[23000:]}\n")
    columns = [f"p_{c}" for c in CLASSES]
    tables = {}
    for name, model in (
        ("ensemble", models),
        ("one", models / "member-1"),
        ("two", models / "member-2"),
    ):
        code, output = run("predict", "--fasta", fasta, "--model", model, "--out", tmp_path / name)
        assert code == 0, output
        tables[name] = pd.read_csv(tmp_path / name, sep="\t")
    mean = (tables["one"][columns].to_numpy() + tables["two"][columns].to_numpy()) / 2
    np.testing.assert_allclose(tables["ensemble"][columns].to_numpy(), mean, atol=2e-6)
    assert not np.allclose(tables["one"][columns], tables["two"][columns], atol=1e-4)


def test_evaluate_takes_an_ensemble(trained: tuple[Path, Path], tmp_path: Path) -> None:
    models, data = trained
    out = tmp_path / "evaluation"
    code, output = run("evaluate", "--model", models, "--data", data, "--out", out)
    assert code == 0, output
    threshold = json.loads((models / "ensemble.json").read_text())["unassigned_threshold"]
    assert json.loads((out / "metrics.json").read_text())["unassigned_threshold"] == threshold


def test_members_and_seeds_together_are_refused(tmp_path: Path) -> None:
    code, output = run("train", *TINY, "--members", 2, "--seeds", "0,1", "--out", tmp_path / "m")
    assert code == 1 and output.strip() == "error: --members and --seeds: choose one"
    assert not (tmp_path / "m").exists()


def test_analyze_refuses_an_ensemble_naming_a_member(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    models, data = trained
    out = tmp_path / "results"
    code, output = run("analyze", "--model", models, "--data", data, "--out", out)
    assert code == 1 and "an ensemble of models" in output and "member-1" in output, output
    assert len(output.strip().splitlines()) == 1 and not out.exists()
