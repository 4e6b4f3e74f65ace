"""The baseline a user would pick instead: logistic regression on k-mer counts (scikit-learn).

It sees exactly the tokens the BERT sees (the same k, stride and padding) as a bag of k-mers, so
the comparison isolates what attention over token order adds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from bertgeom.genomics.kmers import DEFAULT_K, DEFAULT_STRIDE, kmers


class KmerLogisticRegression:
    """``CountVectorizer`` over the k-mer tokens, then multinomial logistic regression.

    Parameters are stored unchanged; ``classes_`` and ``pipeline_`` are set by :meth:`fit`.
    """

    def __init__(
        self, k: int = DEFAULT_K, stride: int = DEFAULT_STRIDE, C: float = 1.0, max_iter: int = 2000
    ) -> None:
        self.k = k
        self.stride = stride
        self.C = C
        self.max_iter = max_iter

    def _tokens(self, sequence: str) -> list[str]:
        return kmers(sequence, self.k, self.stride)

    def fit(self, sequences: Sequence[str], labels: Sequence[str]) -> KmerLogisticRegression:
        """Learn the k-mer vocabulary and the regression from training spikes."""
        self.pipeline_ = Pipeline(
            [
                ("counts", CountVectorizer(analyzer=self._tokens, binary=True)),
                ("regression", LogisticRegression(C=self.C, max_iter=self.max_iter)),
            ]
        )
        self.pipeline_.fit(list(sequences), list(labels))
        self.classes_: list[str] = list(self.pipeline_.classes_)
        return self

    def predict_proba(self, sequences: Sequence[str]) -> NDArray[np.float64]:
        """Class probabilities ``(n_sequences, n_classes)``, columns in ``classes_`` order."""
        if len(sequences) == 0:
            return np.zeros((0, len(self.classes_)))
        return np.asarray(self.pipeline_.predict_proba(list(sequences)), dtype=np.float64)

    def predict(self, sequences: Sequence[str]) -> list[str]:
        """The most probable class of each spike."""
        probabilities = self.predict_proba(sequences)
        return [self.classes_[index] for index in probabilities.argmax(axis=1)]


def fit_baseline(
    dataset: pd.DataFrame, classes: Sequence[str], Cs: Sequence[float] = (0.1, 1.0, 10.0)
) -> tuple[KmerLogisticRegression, float]:
    """The baseline trained on a split dataset's ``train`` rows, ``C`` chosen on validation
    macro-F1 (as the BERT chooses its epoch), and its ``unassigned`` threshold calibrated on
    validation as the BERT's is."""
    from bertgeom.model.evaluate import calibrate_unassigned_threshold, classification_metrics

    train = dataset[dataset["split"] == "train"]
    validation = dataset[(dataset["split"] == "validation") & dataset["label"].isin(classes)]
    sequences, labels = list(validation["sequence"]), list(validation["label"])
    best: tuple[float, KmerLogisticRegression] | None = None
    for C in Cs:
        model = KmerLogisticRegression(C=C).fit(list(train["sequence"]), list(train["label"]))
        score = classification_metrics(labels, model.predict(sequences), classes)["macro_f1"]
        if best is None or score > best[0]:
            best = (score, model)
    assert best is not None
    model = best[1]
    index = {label: i for i, label in enumerate(model.classes_)}
    threshold = calibrate_unassigned_threshold(
        model.predict_proba(sequences), np.array([index[label] for label in labels])
    )
    return model, threshold
