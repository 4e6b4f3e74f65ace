"""An ensemble calls with its members' mean probabilities and calibrates its own threshold."""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bertgeom.errors import ModelError
from bertgeom.genomics.dataset import synthetic_spikes
from bertgeom.model.ensemble import (
    ENSEMBLE_FILE,
    Ensemble,
    fit_ensemble,
    load_ensemble,
    load_predictor,
    mean_probabilities,
    member_directory,
    write_ensemble_file,
)
from bertgeom.model.storage import Classifier, default_model_directory, load_classifier


@pytest.fixture(scope="module")
def shipped() -> Classifier:
    return load_classifier()


def _validation(sequences: list[str], labels: list[str]) -> pd.DataFrame:
    """A dataset whose validation rows are ``sequences`` labelled ``labels``."""
    return pd.DataFrame({"sequence": sequences, "label": labels, "split": "validation"})


@pytest.fixture(scope="module")
def spikes() -> tuple[list[str], list[str]]:
    drawn = synthetic_spikes((2, 0, 0), seed=3)
    return list(drawn["sequence"]), list(drawn["label"])


def _shifted(classifier: Classifier, shift: np.ndarray) -> Classifier:
    """``classifier`` with ``shift`` added to its logits (through the head's bias)."""
    model = copy.deepcopy(classifier.model)
    with torch.no_grad():
        model.classifier.bias += torch.as_tensor(shift, dtype=model.classifier.bias.dtype)
    return replace(classifier, model=model)


def test_the_ensemble_is_the_mean_of_its_members(
    shipped: Classifier, spikes: tuple[list[str], list[str]]
) -> None:
    sequences, labels = spikes
    shift = np.linspace(-2.0, 2.0, len(shipped.settings.classes))
    other = _shifted(shipped, shift)
    ensemble = fit_ensemble([shipped, other], _validation(sequences, labels))
    alone = shipped.probabilities(sequences)
    # the second member's logits are the first's plus ``shift``: its softmax, in closed form
    logits = np.log(alone) + shift
    second = np.exp(logits - logits.max(axis=1, keepdims=True))
    second /= second.sum(axis=1, keepdims=True)
    mean = ensemble.probabilities(sequences)
    np.testing.assert_allclose(mean, (alone + second) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, rtol=1e-6)
    assert not np.allclose(mean, alone, atol=1e-3)  # the shift moved it


def test_the_threshold_is_calibrated_on_the_mean(
    shipped: Classifier, spikes: tuple[list[str], list[str]]
) -> None:
    sequences, labels = spikes
    probabilities = shipped.probabilities(sequences)
    classes = shipped.settings.classes
    right = [
        row.max()
        for row, label in zip(probabilities, labels, strict=True)
        if classes[int(row.argmax())] == label
    ]
    expected = min(max(float(np.quantile(right, 0.01)), 0.5), 0.99)
    ensemble = fit_ensemble([shipped, shipped], _validation(sequences, labels))
    assert ensemble.unassigned_threshold == pytest.approx(expected)
    assert ensemble.classes == classes


def test_members_must_share_their_classes(
    shipped: Classifier, spikes: tuple[list[str], list[str]]
) -> None:
    renamed = replace(
        shipped, settings=replace(shipped.settings, classes=shipped.settings.classes[::-1])
    )
    with pytest.raises(ValueError, match="disagree on the classes"):
        mean_probabilities([shipped, renamed], spikes[0][:2])
    with pytest.raises(ValueError, match="at least one member"):
        fit_ensemble([], _validation(*spikes))


def _ensemble_directory(root: Path, members: int = 2, threshold: float = 0.7) -> Path:
    """An ensemble directory whose members are copies of the shipped model."""
    root.mkdir(parents=True, exist_ok=True)
    for number in range(1, members + 1):
        shutil.copytree(default_model_directory(), root / member_directory(number))
    write_ensemble_file(root, members, threshold)
    return root


def test_an_ensemble_directory_loads_with_its_members_and_threshold(
    shipped: Classifier, spikes: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    directory = _ensemble_directory(tmp_path / "ensemble", 2, 0.7)
    loaded = load_predictor(directory)
    assert isinstance(loaded, Ensemble) and len(loaded.members) == 2
    assert loaded.unassigned_threshold == 0.7 and loaded.classes == shipped.settings.classes
    assert loaded.change_check == shipped.change_check
    np.testing.assert_allclose(
        loaded.probabilities(spikes[0]), shipped.probabilities(spikes[0]), rtol=1e-6
    )
    assert isinstance(load_predictor(default_model_directory()), Classifier)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "not a bertgeom ensemble file"),
        ('{"members": ["member-1"]}', "not a bertgeom ensemble file"),
        ('{"members": [], "unassigned_threshold": 0.5}', "no members"),
        ('{"members": ["../elsewhere"], "unassigned_threshold": 0.5}', "not a directory inside"),
        ('{"members": ["member-9"], "unassigned_threshold": 0.5}', "not a directory inside"),
    ],
)
def test_a_bad_ensemble_file_is_refused_in_one_line(
    tmp_path: Path, document: str, message: str
) -> None:
    directory = _ensemble_directory(tmp_path / "ensemble", 1)
    (tmp_path / "elsewhere").mkdir()
    (directory / ENSEMBLE_FILE).write_text(document)
    with pytest.raises(ModelError, match=message):
        load_ensemble(directory)


def test_a_member_that_is_not_a_classifier_is_refused(tmp_path: Path) -> None:
    directory = _ensemble_directory(tmp_path / "ensemble", 2)
    (directory / member_directory(2) / "model.safetensors").unlink()
    with pytest.raises(ModelError):
        load_ensemble(directory)
