"""Several BERTs of one recipe, trained on the same rows from different seeds, calling as one.

Which held-out genomes a BERT gets wrong changes with its training seed (BENCHMARKS.md,
Leave-lineage-out: the sets of misses of two seeds never coincide), the mark of variance that
averaging removes (a *deep ensemble*, Lakshminarayanan et al., 2017). The ensemble's class
probabilities are the mean of its members',

    p(c | x) = (1 / M) sum_m p_m(c | x),

and its ``unassigned`` threshold is calibrated on those means over the validation split, as
each member's is on its own (:func:`bertgeom.model.evaluate.calibrate_unassigned_threshold`):
members that disagree give a flatter mean, so the members' thresholds do not carry over. The
members share their training rows, so they share the change check; the ensemble uses the
first member's.

An **ensemble directory** holds ``ensemble.json`` (the member directories, in order, and the
threshold) and the members, ``member-1/``, ``member-2/``, ... (each a classifier directory of
:mod:`bertgeom.model.storage`). ``predict`` and ``evaluate`` take one wherever they take a
classifier (:func:`load_predictor`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bertgeom.atomic import atomic_file
from bertgeom.errors import ModelError
from bertgeom.model.change_check import ChangeCheck
from bertgeom.model.evaluate import calibrate_unassigned_threshold
from bertgeom.model.resolve import ModelName
from bertgeom.model.storage import Classifier, ClassifierSettings, load_classifier

ENSEMBLE_FILE = "ensemble.json"
FORMAT = "bertgeom-ensemble"


def member_directory(number: int) -> str:
    """The directory name of the ``number``-th member (1-based)."""
    return f"member-{number}"


@dataclass(frozen=True)
class Ensemble:
    """``members`` (one class list), the ``settings`` of their calls (the first member's, with
    the ensemble's threshold) and the ``change_check`` (the first member's)."""

    members: tuple[Classifier, ...]
    settings: ClassifierSettings
    change_check: ChangeCheck | None = None
    directory: Path | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return self.settings.classes

    @property
    def unassigned_threshold(self) -> float:
        return self.settings.unassigned_threshold

    def probabilities(self, sequences: Sequence[str], batch_size: int = 64) -> NDArray[np.float64]:
        """The members' mean probabilities ``(n_sequences, n_classes)``."""
        return mean_probabilities(self.members, sequences, batch_size)


Predictor = Classifier | Ensemble
"""What calls spikes: one classifier or an ensemble (``settings``, ``change_check`` and
``probabilities`` alike)."""


def mean_probabilities(
    members: Sequence[Classifier], sequences: Sequence[str], batch_size: int = 64
) -> NDArray[np.float64]:
    """The mean of ``members``' probabilities ``(n_sequences, n_classes)`` (module docstring)."""
    _shared_classes(members)
    return np.mean([m.probabilities(sequences, batch_size) for m in members], axis=0)


def _shared_classes(members: Sequence[Classifier]) -> tuple[str, ...]:
    classes = {member.settings.classes for member in members}
    if len(classes) != 1:
        raise ValueError(f"ensemble members disagree on the classes: {sorted(classes)}")
    return classes.pop()


def ensemble_of(
    members: Sequence[Classifier], threshold: float, directory: Path | None = None
) -> Ensemble:
    """The ensemble of ``members`` with ``threshold``."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    _shared_classes(members)
    first = members[0]
    settings = replace(first.settings, unassigned_threshold=float(threshold))
    return Ensemble(tuple(members), settings, first.change_check, directory)


def fit_ensemble(members: Sequence[Classifier], dataset: pd.DataFrame) -> Ensemble:
    """The ensemble of ``members``, its threshold calibrated on the ``validation`` rows of
    ``dataset`` (a split dataset) whose label is one of the members' classes."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    classes = members[0].settings.classes
    rows = dataset[(dataset["split"] == "validation") & dataset["label"].isin(classes)]
    probabilities = mean_probabilities(members, list(rows["sequence"]))
    index = {label: i for i, label in enumerate(classes)}
    true = np.array([index[label] for label in rows["label"]], dtype=np.int64)
    return ensemble_of(members, calibrate_unassigned_threshold(probabilities, true))


def write_ensemble_file(directory: Path, members: int, threshold: float) -> None:
    """``directory/ensemble.json`` for ``members`` members ``member-1`` ... in ``directory``."""
    document = {
        "format": FORMAT,
        "members": [member_directory(n) for n in range(1, members + 1)],
        "unassigned_threshold": threshold,
    }
    with atomic_file(Path(directory) / ENSEMBLE_FILE) as path:
        path.write_text(json.dumps(document, indent=2) + "\n")


def is_ensemble_directory(model: ModelName | None) -> bool:
    """Whether ``model`` names a local directory holding ``ensemble.json``."""
    if not isinstance(model, str | os.PathLike):
        return False
    return (Path(model) / ENSEMBLE_FILE).is_file()


def load_ensemble(directory: Path) -> Ensemble:
    """The ensemble of ``directory`` (module docstring), each member loaded exactly
    (:func:`bertgeom.model.storage.load_classifier`) or the ensemble refused in one line."""
    directory = Path(directory)
    path = directory / ENSEMBLE_FILE
    try:
        document = json.loads(path.read_text())
        names = [str(name) for name in document["members"]]
        threshold = float(document["unassigned_threshold"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelError(f"{path}: not a bertgeom ensemble file ({error})") from error
    if not names:
        raise ModelError(f"{path}: an ensemble with no members")
    members = []
    for name in names:
        member = (directory / name).resolve()
        if not member.is_relative_to(directory.resolve()) or not member.is_dir():
            raise ModelError(f"{path}: member {name!r} is not a directory inside {directory}")
        members.append(load_classifier(member))
    try:
        return ensemble_of(members, threshold, directory)
    except ValueError as error:
        raise ModelError(f"{path}: {error}") from error


def load_predictor(model: ModelName | None = None) -> Predictor:
    """What ``predict`` and ``evaluate`` call with: the ensemble of an ensemble directory, else
    the classifier ``model`` names (default: the shipped model)."""
    if isinstance(model, str | os.PathLike) and is_ensemble_directory(model):
        return load_ensemble(Path(model))
    return load_classifier(model)
