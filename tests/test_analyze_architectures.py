"""``bertgeom analyze`` end to end on tiny ESM-2 (rotary), ESM with absolute positions
(Nucleotide Transformer v1), ALBERT, MPNet, DeBERTa-v3 and ModernBERT models: every table, the
global measures included, and the architecture's caveats in the manifest; the head ablation of
ALBERT and ModernBERT classifiers (its numbers are proved in
``capture/tests/test_ablation_architectures.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

from bertgeom.capture.architectures import ADAPTERS
from bertgeom.capture.tests.tiny_models import (
    HEADS,
    LAYERS,
    OTHER_ARCHITECTURES,
    model_type,
    save_tiny_model,
    texts_for,
    tiny_model,
    tiny_tokenizer,
)
from bertgeom.cli.main import app
from bertgeom.measures.gates import GATE_NAMES
from bertgeom.results.store import load_results

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("architecture", OTHER_ARCHITECTURES)
def test_analyze_writes_every_table(architecture: str, tmp_path: Path) -> None:
    model = save_tiny_model(architecture, tmp_path / "model")
    lines = texts_for(architecture, 9, seed=2, longest=50)  # some longer than 40 tokens
    (tmp_path / "inputs.txt").write_text("\n".join(lines) + "\n")
    labels = ["short" if len(line) < 20 else "long" for line in lines]
    pd.DataFrame({"input_id": range(1, 10), "label": labels}).to_csv(
        tmp_path / "labels.tsv", sep="\t", index=False
    )
    out = tmp_path / "results"
    arguments = ["--model", model, "--text", tmp_path / "inputs.txt", "--out", out]
    arguments += ["--labels", tmp_path / "labels.tsv", "--batch-size", 4]
    result = runner.invoke(app, ["analyze", *(str(a) for a in arguments)])
    assert result.exit_code == 0, result.output
    assert "9 inputs" in result.output and "truncated" in result.output
    results = load_results(out)
    manifest = results.manifest
    assert manifest["model"]["model_type"] == model_type(architecture)
    assert manifest["model"]["caveats"] == list(ADAPTERS[model_type(architecture)].caveats)
    assert manifest["data"]["analysed"] == 9 and manifest["data"]["truncated"] > 0
    heads = results.heads
    assert set(heads["class"]) == {"all", "short", "long"}
    metrics = set(heads["metric"])
    assert {f"gate.{g}.score_mean" for g in GATE_NAMES} <= metrics
    assert {"subspace.symmetry_score", "subspace.query_energy_share"} <= metrics
    everything = heads[heads["class"] == "all"].set_index(["layer", "head", "metric"])["value"]
    for layer in range(LAYERS):
        for head in range(HEADS):
            share = everything[(layer, head, "subspace.query_energy_share")]
            # a share of the projections' input (LN(x) for ESM and ModernBERT)
            assert 0.0 < share < 1.0
    assert len(results.inputs()) == 9 * LAYERS * HEADS
    assert results.layers is not None
    assert set(results.layers["point"]) == {"layer_input", "multihead_output", "layer_output"}
    assert {-1, 0, LAYERS - 1} <= set(results.layers["layer"])
    assert np.isfinite(results.layers["value"].dropna()).all()


@pytest.mark.parametrize("architecture", ["albert", "modernbert"])
def test_analyze_ablates_every_head_of_a_classifier(architecture: str, tmp_path: Path) -> None:
    """``--ablation zero,mean`` on ALBERT (one layer at every depth) and ModernBERT: exit 0 and
    every head and block of every depth in ``ablation.parquet``, over the labelled inputs."""
    classes = ("short", "long")
    config = tiny_model(architecture).config
    config.num_labels, config.id2label = 2, dict(enumerate(classes))
    config.label2id = {label: index for index, label in enumerate(classes)}
    torch.manual_seed(0)
    model = tmp_path / "model"
    AutoModelForSequenceClassification.from_config(config).save_pretrained(model)
    tiny_tokenizer(architecture, model).save_pretrained(model)
    lines = texts_for(architecture, 9, seed=2)
    (tmp_path / "inputs.txt").write_text("\n".join(lines) + "\n")
    labels = ["short" if len(line) < 20 else "long" for line in lines]
    pd.DataFrame({"input_id": range(1, 10), "label": labels}).to_csv(
        tmp_path / "labels.tsv", sep="\t", index=False
    )
    out = tmp_path / "results"
    arguments = ["--model", model, "--text", tmp_path / "inputs.txt", "--out", out]
    arguments += ["--labels", tmp_path / "labels.tsv", "--batch-size", 4, "--ablation", "zero,mean"]
    result = runner.invoke(app, ["analyze", *(str(a) for a in arguments)])
    assert result.exit_code == 0, result.output
    ablation = pd.read_parquet(out / "ablation.parquet")
    keys = set(zip(ablation["layer"], ablation["head"], ablation["mode"], strict=True))
    expected = {
        (layer, head, mode)
        for layer in range(LAYERS)
        for head in range(-1, HEADS)
        for mode in ("zero", "mean")
    }
    assert keys == {(-1, -1, "none"), *expected}
    inputs = ablation.query("metric == 'inputs' and `class` == 'all'")["value"]
    assert (inputs == 9).all()
    assert np.isfinite(ablation["value"]).all()
    manifest = load_results(out).manifest
    assert manifest["ablation"]["labelled_inputs"] == 9 and manifest["ablation"]["passes"] == 2
