"""A check that a call is consistent with the spike's changes, beside the BERT's probability.

A BERT trained on eight classes spreads all its probability over them, so a lineage it never saw
that looks like one of them (Epsilon, B.1.427/429, is a pre-VOC spike with S13I, W152C and L452R)
gets a confident call. Nextclade flags such sequences by their *private mutations* and pangolin
checks constellations; this check does the same with what the classifier was trained on:

- the **expected** changes of a class are those carried by at least ``min_frequency`` (and by at
  least two) of its real training spikes; a class with no real spikes (Lambda, Mu) expects its
  public definition (``spike_mutation_profiles.tsv``);
- a call's **unexpected** changes are the spike's changes (:mod:`bertgeom.genomics.changes`) that
  its called class does not expect;
- their number ``u`` is tested against the class's own spikes: ``p = (1 + #{calibration spikes
  with >= u unexpected}) / (1 + n)``, over the class's real training spikes (each left out of its
  own class's profile) and real validation spikes. A class with fewer than ``1 / alpha - 1``
  calibration spikes cannot reach ``alpha`` on its own and is tested against all classes' pooled.

A call with ``p < alpha`` (default 0.05) is ``unassigned``: the spike carries more changes its
class never showed than 95 % of the class's own spikes do.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bertgeom.errors import ModelError
from bertgeom.model.defining_changes import defining_changes

CHANGE_CHECK_FILE = "change_check.json"


class NoChangeCheck(UserWarning):
    """A classifier directory without ``change_check.json``: its calls are made on the BERT's
    probability alone (a model saved before the change check existed)."""


def no_change_check_note(directory: Path) -> str:
    """The one-line note of :class:`NoChangeCheck`."""
    return (
        f"{directory}: no {CHANGE_CHECK_FILE}, so calls are not checked against the spike's "
        "changes (only the probability threshold makes a call unassigned); retrain the model "
        "with 'bertgeom train' to add the check"
    )


@dataclass(frozen=True)
class ChangeCheck:
    """Per class: the expected changes, the calibration counts of unexpected changes and the
    defining changes (:mod:`bertgeom.model.defining_changes`; empty in models saved before)."""

    expected: Mapping[str, frozenset[str]]
    calibration: Mapping[str, tuple[int, ...]]
    alpha: float = 0.05
    min_frequency: float = 0.02
    defining: Mapping[str, frozenset[str]] = field(default_factory=dict)
    pooled: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "pooled", tuple(count for counts in self.calibration.values() for count in counts)
        )

    def unexpected(self, label: str, changes: Sequence[str]) -> tuple[str, ...]:
        """The changes of ``changes`` that class ``label`` does not expect, in order."""
        expected = self.expected.get(label, frozenset())
        return tuple(change for change in changes if change not in expected)

    def p_value(self, label: str, n_unexpected: int) -> float:
        """``(1 + #{calibration counts >= n_unexpected}) / (1 + n)`` for class ``label``."""
        counts = self.calibration.get(label, ())
        if len(counts) + 1 < 1 / self.alpha:
            counts = self.pooled
        array = np.asarray(counts)
        return float((1 + np.count_nonzero(array >= n_unexpected)) / (1 + len(array)))

    def rejects(self, label: str, changes: Sequence[str]) -> bool:
        """Whether a call of ``label`` on a spike with ``changes`` should be ``unassigned``."""
        return self.p_value(label, len(self.unexpected(label, changes))) < self.alpha

    def to_json(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "min_frequency": self.min_frequency,
            "expected": {label: sorted(changes) for label, changes in self.expected.items()},
            "calibration": {label: list(counts) for label, counts in self.calibration.items()},
            "defining": {label: sorted(changes) for label, changes in self.defining.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChangeCheck:
        return cls(
            expected={label: frozenset(names) for label, names in data["expected"].items()},
            calibration={
                label: tuple(int(count) for count in counts)
                for label, counts in data["calibration"].items()
            },
            alpha=float(data["alpha"]),
            min_frequency=float(data["min_frequency"]),
            defining={label: frozenset(names) for label, names in data.get("defining", {}).items()},
        )

    def save(self, directory: Path) -> None:
        (Path(directory) / CHANGE_CHECK_FILE).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, directory: Path) -> ChangeCheck | None:
        """The check saved in a model directory, or ``None`` when it has none (older models);
        an unreadable file is a ``ModelError`` naming it."""
        path = Path(directory) / CHANGE_CHECK_FILE
        if not path.is_file():
            return None
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
            raise ModelError(
                f"{path}: unreadable change check ({type(error).__name__}: {error}); retrain "
                "the model or restore the file"
            ) from error


def _expected(counts: Counter[str], n: int, min_frequency: float) -> frozenset[str]:
    return frozenset(change for change, k in counts.items() if k >= 2 and k >= min_frequency * n)


def fit_change_check(
    train_changes: Sequence[Sequence[str]],
    train_labels: Sequence[str],
    validation_changes: Sequence[Sequence[str]],
    validation_labels: Sequence[str],
    definitions: Mapping[str, Sequence[str]],
    classes: Sequence[str],
    alpha: float = 0.05,
    min_frequency: float = 0.02,
) -> ChangeCheck:
    """Fit the check on real spikes' changes (see the module docstring).

    ``definitions`` gives the changes of the classes without real training spikes: what they
    expect and what defines them (:mod:`bertgeom.model.defining_changes`).
    """
    counts: dict[str, Counter[str]] = {label: Counter() for label in classes}
    sizes: Counter[str] = Counter(train_labels)
    for changes, label in zip(train_changes, train_labels, strict=True):
        counts[label].update(set(changes))
    expected = {
        label: _expected(counts[label], sizes[label], min_frequency)
        if sizes[label]
        else frozenset(definitions.get(label, ()))
        for label in classes
    }
    calibration: dict[str, list[int]] = {label: [] for label in classes}
    for changes, label in zip(train_changes, train_labels, strict=True):
        # Left out of its own class's profile: a spike's private change counts against it.
        own = Counter(set(changes))
        without = _expected(counts[label] - own, sizes[label] - 1, min_frequency)
        calibration[label].append(sum(change not in without for change in changes))
    for changes, label in zip(validation_changes, validation_labels, strict=True):
        calibration[label].append(sum(change not in expected[label] for change in changes))
    observed = defining_changes(train_changes, train_labels)
    return ChangeCheck(
        expected=expected,
        calibration={label: tuple(values) for label, values in calibration.items()},
        alpha=alpha,
        min_frequency=min_frequency,
        defining={
            label: observed[label] if sizes[label] else frozenset(definitions.get(label, ()))
            for label in classes
        },
    )
