"""load_classifier loads a classifier exactly or refuses it in one line that names the reason."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from bertgeom.capture.tests.tiny_models import HIDDEN, save_tiny_classifier, save_tiny_model
from bertgeom.cli.main import app
from bertgeom.errors import ModelError
from bertgeom.model.change_check import CHANGE_CHECK_FILE, NoChangeCheck
from bertgeom.model.storage import default_model_directory, load_classifier

CLASSES = ("Alpha", "Beta")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("classifier") / "model", CLASSES)


@pytest.fixture()
def copy(classifier: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(classifier, tmp_path / "copy"))


def _load_quietly(directory: Path | None = None) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoChangeCheck)
        return load_classifier(directory)


def test_the_shipped_classifier_loads_exactly_with_its_change_check() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoChangeCheck)
        classifier = load_classifier()
    assert classifier.ignored_weights == () and classifier.change_check is not None
    assert classifier.directory == default_model_directory()
    assert classifier.source is not None and classifier.source.repo_id is None


def test_a_classifier_without_a_change_check_loads_with_a_note(classifier: Path) -> None:
    assert not (classifier / CHANGE_CHECK_FILE).exists()
    with pytest.warns(NoChangeCheck) as notes:
        loaded = load_classifier(classifier)
    assert loaded.change_check is None
    (note,) = notes
    assert str(note.message).startswith(f"{classifier}: no {CHANGE_CHECK_FILE}, so calls are not")
    assert "\n" not in str(note.message)


def test_an_unreadable_change_check_is_named(copy: Path) -> None:
    (copy / CHANGE_CHECK_FILE).write_text('{"alpha": 0.05')
    with pytest.raises(ModelError, match=rf"{CHANGE_CHECK_FILE}: unreadable change check"):
        load_classifier(copy)


def test_a_classifier_without_tokenizer_files_is_refused(copy: Path) -> None:
    """transformers would build a BertTokenizer of the special tokens from config.json alone:
    every k-mer [UNK]."""
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (copy / name).unlink()
    with pytest.raises(ModelError, match=r"no tokenizer files \(none of tokenizer.json, vocab"):
        _load_quietly(copy)


def test_a_classifier_that_ships_its_own_code_is_refused(copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "imported.txt"
    (copy / "modeling_dna.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
    )
    config = json.loads((copy / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_dna.DnaClassifier"}
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"ships its own code .*modeling_dna\.DnaClassifier"):
        _load_quietly(copy)
    assert not marker.exists()


def test_weights_that_do_not_load_exactly_are_refused(copy: Path, tmp_path: Path) -> None:
    weights = load_file(copy / "model.safetensors")
    del weights["bert.encoder.layer.0.attention.self.key.bias"]
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        ModelError,
        match=r"1 weight of the encoder is missing from model.safetensors: "
        r"bert.encoder.layer.0.attention.self.key.bias; bertgeom measures only weights",
    ):
        _load_quietly(copy)


def test_corrupt_or_misshapen_weights_are_one_line(classifier: Path, tmp_path: Path) -> None:
    truncated = Path(shutil.copytree(classifier, tmp_path / "truncated"))
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[:-100])
    wider = Path(shutil.copytree(classifier, tmp_path / "wider"))
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "hidden_size": 2 * HIDDEN}))
    pickled = Path(shutil.copytree(classifier, tmp_path / "pickled"))
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    cases = {
        truncated: "model.safetensors: unreadable safetensors file (",
        wider: "do not have the shapes config.json gives",
        pickled: "only pickled weights",
    }
    for directory, message in cases.items():
        with pytest.raises(ModelError) as refused:
            _load_quietly(directory)
        assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_model_of_another_type_is_refused_with_the_true_reason(tmp_path: Path) -> None:
    roberta = save_tiny_model("roberta", tmp_path / "roberta")
    with pytest.raises(
        ModelError, match="model type 'roberta' is not a bertgeom variant classifier"
    ):
        load_classifier(roberta)
    bert = save_tiny_model("bert", tmp_path / "bert")
    with pytest.raises(ModelError, match=r"config\.json has no 'bertgeom' settings"):
        load_classifier(bert)


def test_predict_refuses_a_bad_model_in_one_line(tmp_path: Path) -> None:
    roberta = save_tiny_model("roberta", tmp_path / "roberta")
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\nACGT\n")
    result = CliRunner().invoke(
        app,
        [
            "predict",
            "--fasta",
            str(fasta),
            "--out",
            str(tmp_path / "calls.tsv"),
            "--model",
            str(roberta),
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 1, result.output
    assert "model type 'roberta' is not a bertgeom variant classifier" in result.output
    assert "Traceback" not in result.output
