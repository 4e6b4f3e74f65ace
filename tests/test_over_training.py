"""Checkpoints of a training run and the analysis over training, end to end: ``bertgeom train
--checkpoints`` keeps loadable model directories without changing the model it trains, and
``bertgeom analyze --over-training`` gives, for every step, the tables of a separate analysis
of that checkpoint, which ``bertgeom report`` draws over training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from analysis_reference import assert_same_table
from safetensors.torch import load_file
from typer.testing import CliRunner

from bertgeom.analysis.over_training import TRAINING_SCHEMA, training_rows
from bertgeom.cli.main import app
from bertgeom.genomics.dataset import save_dataset
from bertgeom.genomics.fasta import write_fasta
from bertgeom.model.presets import PRESETS
from bertgeom.model.storage import load_classifier, new_classifier
from bertgeom.model.train import TrainingOptions, train_classifier
from bertgeom.model.training_checkpoints import list_checkpoints
from bertgeom.report.build import OVER_TRAINING_SECTION_IDS
from bertgeom.results.store import load_results
from bertgeom.scale.tests.same_results import assert_same_results, assert_same_values

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")

SCHEDULE = "0,2,epochs"
"""The tiny dataset's 95 training rows make 6 steps an epoch: steps 0, 2, 6 and 12."""


def run(*arguments: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in arguments])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def checkpointed(
    tmp_path_factory: pytest.TempPathFactory, tiny_dataset: tuple[pd.DataFrame, pd.DataFrame]
) -> tuple[Path, Path, list[dict[str, float]]]:
    """The tiny model trained as ``tiny_model`` is, keeping checkpoints; its dataset
    directory; the training history."""
    root = tmp_path_factory.mktemp("checkpointed")
    save_dataset(*tiny_dataset, root / "data")
    options = TrainingOptions(preset="tiny", epochs=2, checkpoints=SCHEDULE)
    report = train_classifier(tiny_dataset[0], root / "model", options)
    assert [entry["step"] for entry in report.checkpoints] == [0, 2, 6, 12]
    return root / "model", root / "data", report.history


def test_checkpoints_are_models_and_change_nothing_of_the_training(
    checkpointed: tuple[Path, Path, list[dict[str, float]]], tiny_model: Path
) -> None:
    model, _, history = checkpointed
    # the same run without checkpoints (tiny_model) saved the very same final weights
    final = load_file(model / "model.safetensors")
    without = load_file(tiny_model / "model.safetensors")
    assert final.keys() == without.keys()
    assert all(torch.equal(final[name], without[name]) for name in final)
    checkpoints = list_checkpoints(model)
    assert [c.step for c in checkpoints] == [0, 2, 6, 12]
    for checkpoint in checkpoints:
        classifier = load_classifier(checkpoint.directory)  # predict's loader: exactly
        assert classifier.change_check is not None
        record = checkpoint.record
        assert record.epoch == checkpoint.step / 6 and record.steps_per_epoch == 6
        assert classifier.settings.unassigned_threshold == record.unassigned_threshold
        assert 0 <= record.validation_macro_f1 <= 1
        assert not (checkpoint.directory / "checkpoints").exists()
    # step 0 is the initialisation; the epochs' ends carry the epochs' numbers
    vocabulary = load_classifier(model).tokenizer.vocab_size
    initial = new_classifier(PRESETS["tiny"].architecture(), vocabulary, ("x",) * 8, 42)
    step0 = load_file(checkpoints[0].directory / "model.safetensors")
    assert all(torch.equal(step0[name], tensor) for name, tensor in initial.state_dict().items())
    assert pd.isna(checkpoints[0].record.train_loss)
    for checkpoint, epoch in zip(checkpoints[2:], history, strict=True):
        assert checkpoint.record.validation_macro_f1 == epoch["validation_macro_f1"]
        assert checkpoint.record.train_loss == pytest.approx(epoch["train_loss"])
    # nothing shared: every checkpoint has its own files, no links
    files = [path for path in model.rglob("*") if path.is_file()]
    assert not any(path.is_symlink() for path in files)
    assert len({path.stat().st_ino for path in files}) == len(files)
    assert not list(model.parent.glob(".*partial"))


def test_analysis_over_training_equals_separate_analyses(
    checkpointed: tuple[Path, Path, list[dict[str, float]]], tmp_path: Path
) -> None:
    model, data, _ = checkpointed
    out = tmp_path / "over"
    common = ["--data", data, "--split", "test", "--max-inputs", 6, "--batch-size", 4]
    code, output = run(
        "analyze", "--model", model, "--over-training", *common, "--ablation", "zero", "--out", out
    )
    assert code == 0, output
    assert "4 checkpoints (steps 0..12)" in output
    training = pd.read_parquet(out / "training.parquet")
    assert list(training.columns) == TRAINING_SCHEMA.names
    assert sorted(training["step"].unique()) == [0, 2, 6, 12]
    assert set(training["table"]) == {"heads", "layers"}
    assert (training.loc[training["table"] == "layers", "head"] == -1).all()
    assert training.loc[training["table"] == "heads", "point"].isna().all()
    per_step = training.drop_duplicates("step").set_index("step")
    records = {c.step: c.record for c in list_checkpoints(model)}
    for step, record in records.items():
        assert per_step.loc[step, "epoch"] == record.epoch
        assert per_step.loc[step, "validation_macro_f1"] == record.validation_macro_f1
    ablation = pd.read_parquet(out / "training_ablation.parquet")
    assert sorted(ablation["step"].unique()) == [0, 2, 6, 12]
    manifest = json.loads((out / "training.json").read_text())
    assert [entry["step"] for entry in manifest["checkpoints"]] == [0, 2, 6, 12]
    # the last step's rows are those of a separate analysis of the last checkpoint
    separate = tmp_path / "separate"
    code, output = run(
        "analyze", "--model", model / "checkpoints" / "step-12", *common, "--out", separate
    )
    assert code == 0, output
    alone = load_results(separate)
    assert alone.layers is not None
    assert_same_table(training_rows(training, 12, "layers"), alone.layers, "layers")
    assert_same_table(training_rows(training, 12, "heads"), alone.heads, "heads")
    # each checkpoint's results directory is a results directory of its own
    inside = load_results(out / "checkpoints" / "step-12")
    assert_same_table(inside.heads, alone.heads, "heads")
    assert inside.ablation is not None and inside.manifest["input"] == alone.manifest["input"]
    first = load_results(out / "checkpoints" / "step-0")
    assert first.manifest["measurements"] == inside.manifest["measurements"]
    # its report: the over-training section, then the last checkpoint's sections
    code, output = run("report", out)
    assert code == 0 and "warning" not in output, output
    html = (out / "report.html").read_text()
    assert re.findall(r'<section id="([^"]+)">', html) == list(OVER_TRAINING_SECTION_IDS)
    start, end = html.index('<section id="over-training">'), html.index('<section id="overview">')
    assert html[start:end].count("<figure>") == 5
    assert "4 checkpoints of the training run, steps 0 to 12" in html[start:end]
    assert "The validation macro-F1 came to 90% of its final value at step" in html[start:end]
    assert "every other section shows the last checkpoint, step 12 (epoch 2)" in html
    # an earlier over-training output may be replaced; a results directory may not
    code, output = run("analyze", "--model", model, "--over-training", *common, "--out", out)
    assert code == 0, output
    code, output = run("analyze", "--model", model, "--over-training", *common, "--out", separate)
    assert code != 0 and "not an over-training results directory" in output


@pytest.mark.filterwarnings("ignore:Port .* is already in use")
def test_over_training_on_two_dask_workers_equals_one_process(
    checkpointed: tuple[Path, Path, list[dict[str, float]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--dask-workers 2``: every checkpoint's inputs are sharded over one local cluster,
    started once for all of them, and ``training.parquet``, ``training_ablation.parquet`` and
    each checkpoint's results equal the analysis in one process to the tolerance of any
    sharded analysis (``scale/tests/same_results.py``)."""
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
    started: list[int] = []

    class CountedCluster(distributed.LocalCluster):  # type: ignore[misc,name-defined]
        def __init__(self, *args: object, **kwargs: object) -> None:
            started.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(distributed, "LocalCluster", CountedCluster)
    model, data, _ = checkpointed
    # every test input: with --max-inputs a shard reads fewer rows than one process
    # (docs/dask.md, limits), and the manifests' counts would differ
    common = ["--data", data, "--split", "test", "--batch-size", 8, "--ablation", "zero"]
    single, sharded = tmp_path / "single", tmp_path / "dask"
    code, output = run("analyze", "--model", model, "--over-training", *common, "--out", single)
    assert code == 0, output
    assert started == []
    code, output = run(
        "analyze", "--model", model, "--over-training", *common, "--dask-workers", 2,
        "--out", sharded,
    )  # fmt: skip
    assert code == 0, output
    assert started == [1]
    keys = ["step", "table", "layer", "head", "point", "class", "metric"]
    expected = pd.read_parquet(single / "training.parquet")
    actual = pd.read_parquet(sharded / "training.parquet")
    assert list(actual.columns) == TRAINING_SCHEMA.names
    assert sorted(actual["step"].unique()) == [0, 2, 6, 12]
    checkpoint_columns = ["step", "epoch", "train_loss", "validation_macro_f1"]
    pd.testing.assert_frame_equal(
        actual[checkpoint_columns].drop_duplicates().reset_index(drop=True),
        expected[checkpoint_columns].drop_duplicates().reset_index(drop=True),
    )
    assert_same_values(expected.fillna({"point": ""}), actual.fillna({"point": ""}), keys)
    ablation_keys = ["step", "layer", "head", "mode", "class", "metric"]
    assert_same_values(
        pd.read_parquet(single / "training_ablation.parquet"),
        pd.read_parquet(sharded / "training_ablation.parquet"),
        ablation_keys,
    )
    for step in (0, 2, 6, 12):
        alone = load_results(single / "checkpoints" / f"step-{step}")
        on_dask = load_results(sharded / "checkpoints" / f"step-{step}")
        assert_same_results(alone, on_dask)
        assert on_dask.manifest["measurements"] == alone.manifest["measurements"]
        assert on_dask.manifest["parameters"]["dask_workers"] == 2
        # sharded: each shard starts its own batches (one process: 32 inputs, 4 batches)
        assert on_dask.manifest["timings"]["batches"] > alone.manifest["timings"]["batches"]


def test_over_training_without_checkpoints_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    text = tmp_path / "inputs.txt"
    text.write_text("acgt\n")
    out = tmp_path / "out"
    code, output = run(
        "analyze", "--model", tiny_model, "--over-training", "--text", text, "--out", out
    )
    assert code != 0
    assert "has no checkpoints" in output and "bertgeom train --checkpoints" in output
    assert len(output.strip().splitlines()) == 1, output
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
    code, output = run(
        "analyze", "--model", tiny_model, "--over-training", "--control", "random-init",
        "--text", text, "--out", out,
    )  # fmt: skip
    assert code != 0 and "step 0 of the checkpoints is the untrained model" in output


def test_train_command_keeps_checkpoints_that_predict_loads(
    tiny_dataset: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    save_dataset(*tiny_dataset, data)
    model = tmp_path / "model"
    train = ["train", "--data", data, "--preset", "tiny", "--epochs", 1, "--out", model]
    code, output = run(*train, "--checkpoint-schedule", "0,often")
    assert code != 0 and "--checkpoint-schedule: 'often'" in output and not model.exists()
    code, output = run(*train, "--checkpoints")
    assert code == 0, output
    assert "5 checkpoints" in output
    assert [c.step for c in list_checkpoints(model)] == [0, 1, 2, 4, 6]
    recorded = json.loads((model / "training.json").read_text())
    assert recorded["options"]["checkpoints"] == "0,log,epochs"
    assert [entry["step"] for entry in recorded["checkpoints"]] == [0, 1, 2, 4, 6]
    spikes = tmp_path / "spikes.fa"
    test = tiny_dataset[0][tiny_dataset[0]["split"] == "test"].head(3)
    write_fasta([(f"s{i}", seq) for i, seq in enumerate(test["sequence"])], spikes)
    calls = tmp_path / "calls.tsv"
    step = list_checkpoints(model)[1].directory
    code, output = run(
        "predict", "--fasta", spikes, "--model", step, "--out", calls, "--workers", 1
    )
    assert code == 0, output
    assert len(pd.read_csv(calls, sep="\t")) == 3
    # a model with checkpoints is still a model directory train may replace
    code, output = run(*train)
    assert code == 0, output
    assert not (model / "checkpoints").exists()
