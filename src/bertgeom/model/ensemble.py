"""Several BERTs of one recipe, trained on the same rows from different seeds, calling as one.

Which held-out genomes a BERT gets wrong changes with its training seed (BENCHMARKS.md,
Leave-lineage-out: the sets of misses of two seeds never coincide), the mark of variance that
averaging removes (a *deep ensemble*, Lakshminarayanan et al., 2017). The ensemble's class
probabilities are the mean of its members',

    p(c | x) = (1 / M) sum_m p_m(c | x),

and its ``unassigned`` threshold is calibrated on those means over the validation split, as
each member's is on its own (:func:`bertgeom.model.evaluate.calibrate_unassigned_threshold`):
members that disagree give a flatter mean, so the members' thresholds do not carry over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bertgeom.model.evaluate import calibrate_unassigned_threshold, predict_probabilities
from bertgeom.model.storage import Classifier


def classifier_probabilities(
    classifier: Classifier, sequences: Sequence[str], batch_size: int = 64
) -> NDArray[np.float64]:
    """``classifier``'s softmax probabilities ``(n_sequences, n_classes)`` of spike sequences."""
    settings = classifier.settings
    return predict_probabilities(
        classifier.model,
        classifier.tokenizer,
        list(sequences),
        settings.k,
        settings.stride,
        batch_size=batch_size,
        max_length=settings.max_length,
    )


@dataclass(frozen=True)
class Ensemble:
    """``members`` (one class list) and the threshold of their mean probabilities."""

    members: tuple[Classifier, ...]
    unassigned_threshold: float

    @property
    def classes(self) -> tuple[str, ...]:
        return self.members[0].settings.classes

    def probabilities(self, sequences: Sequence[str]) -> NDArray[np.float64]:
        """The members' mean probabilities ``(n_sequences, n_classes)``."""
        return mean_probabilities(self.members, sequences)


def mean_probabilities(
    members: Sequence[Classifier], sequences: Sequence[str]
) -> NDArray[np.float64]:
    """The mean of ``members``' probabilities ``(n_sequences, n_classes)`` (module docstring)."""
    classes = {member.settings.classes for member in members}
    if len(classes) != 1:
        raise ValueError(f"ensemble members disagree on the classes: {sorted(classes)}")
    return np.mean([classifier_probabilities(m, sequences) for m in members], axis=0)


def fit_ensemble(
    members: Sequence[Classifier], sequences: Sequence[str], labels: Sequence[str]
) -> Ensemble:
    """The ensemble of ``members``, its threshold calibrated on the validation ``sequences``
    and their ``labels`` (classes of the members)."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    probabilities = mean_probabilities(members, sequences)
    index = {label: i for i, label in enumerate(members[0].settings.classes)}
    true = np.array([index[label] for label in labels], dtype=np.int64)
    return Ensemble(tuple(members), calibrate_unassigned_threshold(probabilities, true))
