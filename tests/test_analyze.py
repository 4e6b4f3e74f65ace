"""``bertgeom analyze`` end to end on tiny models of every architecture, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bertgeom.capture import loading
from bertgeom.capture.tests.tiny_models import (
    ARCHITECTURES,
    HEADS,
    LAYERS,
    save_tiny_classifier,
    save_tiny_model,
    sentences,
)
from bertgeom.cli.main import app
from bertgeom.genomics.fasta import write_fasta
from bertgeom.genomics.synthetic import synthesize_table
from bertgeom.measures.gates import DOMINANT_NAMES, GATE_NAMES
from bertgeom.results.store import load_results

runner = CliRunner()


def run(*arguments: str | Path | int) -> tuple[int, str]:
    result = runner.invoke(app, ["analyze", *(str(a) for a in arguments)])
    return result.exit_code, result.output


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: save_tiny_model(name, root / name) for name in ARCHITECTURES}


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("text")
    lines = sentences(11, seed=2, longest=60)  # some longer than the 40-token models
    (root / "inputs.txt").write_text("\n".join(lines) + "\n")
    labels = ["short" if len(line.split()) < 20 else "long" for line in lines]
    pd.DataFrame({"input_id": range(1, 12), "label": labels}).to_csv(
        root / "labels.tsv", sep="\t", index=False
    )
    return root / "inputs.txt", root / "labels.tsv"


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_analyze_text_writes_every_table(
    architecture: str, models: dict[str, Path], text: tuple[Path, Path], tmp_path: Path
) -> None:
    inputs, labels = text
    out = tmp_path / "results"
    code, output = run(
        "--model",
        models[architecture],
        "--text",
        inputs,
        "--labels",
        labels,
        "--out",
        out,
        "--batch-size",
        4,
        "--no-global",
    )
    assert code == 0, output
    assert "11 inputs" in output and "truncated" in output
    results = load_results(out)
    heads = results.heads
    assert list(heads.columns) == ["layer", "head", "class", "metric", "value"]
    assert set(heads["class"]) == {"all", "short", "long"}
    metrics = set(heads["metric"])
    assert {f"gate.{g}.score_mean" for g in GATE_NAMES} <= metrics
    assert {f"gate.{g}.share" for g in DOMINANT_NAMES} <= metrics
    assert {"subspace.symmetry_score", "subspace.query_energy_share"} <= metrics
    layer_rows = heads[heads["head"] == -1]
    assert set(layer_rows["metric"].str.slice(0, 15)) == {"subspace.layer."}
    shares = heads[(heads["class"] == "all") & heads["metric"].str.endswith(".share")]
    assert shares.groupby(["layer", "head"])["value"].sum().round(12).eq(1).all()
    records = results.inputs()
    assert len(records) == 11 * LAYERS * HEADS
    assert {"input_index", "input_id", "class", "layer", "head", "gate"} <= set(records.columns)
    assert set(records["gate"]) <= {*DOMINANT_NAMES, "undefined"}
    manifest = results.manifest
    assert manifest["model"]["model_type"] == architecture
    assert manifest["data"]["analysed"] == 11 and manifest["data"]["truncated"] > 0
    assert {"bertgeom", "torch", "transformers", "numpy"} <= set(manifest["versions"])
    assert manifest["classes"] == ["all", "long", "short"]
    assert results.arrays["class_mean_maps"].dtype == "float16"
    assert results.arrays["overlap_query"].shape == (LAYERS, HEADS, HEADS)
    assert results.layers is None and results.predictions is None


def test_analyze_global_measures_write_layers(
    models: dict[str, Path], text: tuple[Path, Path], tmp_path: Path
) -> None:
    code, output = run(
        "--model",
        models["bert"],
        "--text",
        text[0],
        "--out",
        tmp_path / "r",
        "--labels",
        text[1],
        "--max-inputs",
        5,
        "--heads",
        "1:*",
        "--include-padding",
    )
    assert code == 0, output
    results = load_results(tmp_path / "r")
    assert results.layers is not None
    assert list(results.layers.columns) == ["layer", "point", "class", "metric", "value"]
    points = {"layer_input", "multihead_output", "layer_output"}
    assert set(results.layers["point"]) == points
    layers = results.layers.set_index(["layer", "point", "class", "metric"])["value"]
    # The embedding output is layer -1; each layer's input is the previous layer's output.
    assert {-1, 0, LAYERS - 1} <= set(results.layers["layer"])
    for layer in range(LAYERS):
        for metric in ("cone.index_mean", "dist.variance", "dist.participation_ratio"):
            key = ("all", metric)
            assert layers[(layer, "layer_input", *key)] == layers[(layer - 1, "layer_output", *key)]
    metrics = set(results.layers["metric"])
    assert {
        "cone.index_mean",
        "cone.index_std",
        "cone.normalized_mean",
        "cone.mean_cosine",
    } <= metrics
    assert {"cls.cone.index", "cls.silhouette", "cls.probe_accuracy", "cls.fisher_ratio"} <= metrics
    assert {"dist.skewness", "dist.excess_kurtosis", "dist.normaltest_k2"} <= metrics
    head_metrics = set(results.heads["metric"])
    assert {"cone.head_output.index_mean", "cone.attention_rows.index_mean"} <= head_metrics
    head_distribution = {"dist.head_output.participation_ratio", "dist.head_output.excess_kurtosis"}
    assert head_distribution <= head_metrics
    assert results.histograms is not None and results.pca is not None
    assert set(results.histograms["kind"]) == {"values", "cone_normalized"}
    assert set(results.pca["layer"]) == set(range(-1, LAYERS))
    assert results.array_index["class_mean_maps"]["labels"]["pair"] == [[1, h] for h in range(4)]
    assert results.manifest["parameters"]["include_padding"] is True
    assert results.manifest["data"]["analysed"] == 5


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("clf") / "m", ("Alpha", "Delta"))


def test_analyze_fasta_with_a_classifier(classifier: Path, tmp_path: Path) -> None:
    table = synthesize_table(1, seed=5, classes=("Alpha", "Delta"))
    records = [(f"s{i}", str(seq)) for i, seq in enumerate(table["sequence"])]
    write_fasta([*records, ("bad", "NOT A SEQUENCE!")], tmp_path / "spikes.fa")
    labels = tmp_path / "labels.tsv"
    pd.DataFrame({"record_id": ["s0", "s1"], "label": list(table["label"])}).to_csv(
        labels, sep="\t", index=False
    )
    out = tmp_path / "r"
    code, output = run(
        "--model", classifier, "--fasta", tmp_path / "spikes.fa", "--labels", labels, "--out", out
    )
    assert code == 0, output
    assert "skipped 1 invalid_characters" in output
    results = load_results(out)
    assert results.predictions is not None
    assert list(results.predictions["input_id"]) == ["s0", "s1"]
    assert set(results.predictions["predicted_class"]) <= {"Alpha", "Delta"}
    assert results.manifest["data"]["skipped"] == {"invalid_characters": 1}
    assert results.manifest["predictions"]["labelled_inputs"] == 2


def test_analyze_a_dataset_split(classifier: Path, tmp_path: Path) -> None:
    table = synthesize_table(2, seed=6, classes=("Alpha", "Delta"))
    table["sequence_id"] = [f"q{i}" for i in range(len(table))]
    table["split"] = ["train", "test"] * 2
    (tmp_path / "data").mkdir()
    table.to_parquet(tmp_path / "data" / "dataset.parquet")
    code, output = run(
        "--model",
        classifier,
        "--data",
        tmp_path / "data",
        "--split",
        "test",
        "--out",
        tmp_path / "r",
        "--max-length",
        64,
    )
    assert code == 0, output
    results = load_results(tmp_path / "r")
    assert sorted(set(results.inputs()["input_id"])) == ["q1", "q3"]
    assert results.manifest["data"]["split"] == "test"
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["data"]["truncated"] == 2


def test_bad_input_is_one_line_and_leaves_no_results(
    models: dict[str, Path],
    text: tuple[Path, Path],
    classifier: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers import GPT2Config, GPT2Model

    (tmp_path / "not-a-model").mkdir()
    GPT2Model(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=10)).save_pretrained(
        tmp_path / "gpt2"
    )
    (tmp_path / "empty.txt").write_text("")
    write_fasta([("bad", "NOT A SEQUENCE!")], tmp_path / "bad.fa")
    bert, inputs = models["bert"], text[0]
    cases: list[tuple[list[str | Path], str]] = [
        (["--model", tmp_path / "absent", "--text", inputs], "model directory not found"),
        (["--model", tmp_path / "not-a-model", "--text", inputs], "no config.json"),
        (["--model", tmp_path / "gpt2", "--text", inputs], "model type 'gpt2' is not supported"),
        (["--model", bert, "--text", tmp_path / "empty.txt"], "empty"),
        (["--model", bert, "--text", tmp_path / "absent.txt"], "no such file"),
        (["--model", bert], "exactly one of --text, --fasta or --data"),
        (["--model", bert, "--text", inputs, "--data", tmp_path], "exactly one of"),
        (["--model", bert, "--fasta", tmp_path / "bad.fa"], "bertgeom variant classifier"),
        (["--model", classifier, "--fasta", tmp_path / "bad.fa"], "no input to analyse"),
        (["--model", bert, "--text", inputs, "--heads", "9:0"], "--heads"),
        (["--model", bert, "--text", inputs, "--split", "test"], "--split is for --data"),
        (["--model", bert, "--text", inputs, "--ablation", "zero"], "no sequence-classification"),
        (["--model", classifier, "--text", inputs, "--ablation", "shuffle"], "unknown shuffle"),
        (["--model", bert, "--text", inputs, "--control", "shuffled"], "--control"),
    ]
    out = tmp_path / "results"
    for arguments, message in cases:
        code, output = run(*arguments, "--out", out)
        assert code == 1, (arguments, output)
        assert message in output, (arguments, output)
        assert "Traceback" not in output and output.strip().count("\n") == 0, output
        assert not out.exists()
    monkeypatch.setattr(loading, "ATTENTION_IMPLEMENTATION", "sdpa")
    code, output = run("--model", bert, "--text", inputs, "--out", out)
    assert code == 1 and "no attention probabilities" in output, output
    assert output.strip().count("\n") == 0 and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    keys = [column for column in table.columns if column not in ("value", "count", "pc1", "pc2")]
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


def test_results_at_batch_8_equal_batch_32(models: dict[str, Path], tmp_path: Path) -> None:
    """Batches of 8 are measured in chunks of 32 inputs (``capture.chunks``, padding joined in):
    every table equals that of batches of 32, to the float32 rounding of another batch size."""
    from bertgeom.analysis import AnalysisOptions, InputSpec, analyze

    lines = sentences(45, seed=4, longest=30)
    (tmp_path / "inputs.txt").write_text("\n".join(lines) + "\n")
    labels = ["short" if len(line.split()) < 15 else "long" for line in lines]
    pd.DataFrame({"input_id": range(1, 46), "label": labels}).to_csv(
        tmp_path / "labels.tsv", sep="\t", index=False
    )
    spec = InputSpec("text", tmp_path / "inputs.txt", labels=tmp_path / "labels.tsv")
    results = {}
    for batch_size in (8, 32):
        out = tmp_path / f"batch{batch_size}"
        analyze(models["bert"], spec, out, AnalysisOptions(batch_size=batch_size))
        results[batch_size] = load_results(out)
    small, large = results[8], results[32]
    assert small.manifest["timings"]["chunks"] == 2  # 4 x 8 inputs, then 8 + 5
    for name in ("heads", "layers", "pca"):
        a, b = _sorted(getattr(small, name)), _sorted(getattr(large, name))
        value_columns = [c for c in a.columns if c in ("value", "pc1", "pc2")]
        pd.testing.assert_frame_equal(a.drop(columns=value_columns), b.drop(columns=value_columns))
        for column in value_columns:
            # As test_engine's batch-size test: the Fisher ratio amplifies float32 rounding.
            np.testing.assert_allclose(a[column], b[column], rtol=1e-4, atol=1e-5)
    a, b = _sorted(small.inputs()), _sorted(large.inputs())
    pd.testing.assert_frame_equal(a, b, rtol=0, atol=2e-6)
    a, b = _sorted(small.histograms), _sorted(large.histograms)
    pd.testing.assert_frame_equal(a.drop(columns="count"), b.drop(columns="count"))
    assert np.abs(a["count"].to_numpy() - b["count"].to_numpy()).sum() <= 4  # values at edges
    for name, array in small.arrays.items():
        np.testing.assert_allclose(array, large.arrays[name], rtol=1e-3, atol=1e-6, err_msg=name)
