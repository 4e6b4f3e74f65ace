"""Training pieces: soft targets for outliers, the unassigned threshold, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertgeom.model.evaluate import calibrate_unassigned_threshold, classification_metrics
from bertgeom.model.train import soft_targets


def test_soft_targets_one_hot_and_uniform() -> None:
    targets = soft_targets(["b", "outlier", "a"], ("a", "b"))
    assert torch.equal(targets, torch.tensor([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="neither a class"):
        soft_targets(["c"], ("a", "b"))


def test_threshold_is_a_low_quantile_of_correct_confidences() -> None:
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    truth = np.array([0, 0, 1, 1])  # the last one is wrong and must not count
    assert calibrate_unassigned_threshold(probabilities, truth, quantile=0.0) == pytest.approx(0.7)
    assert (
        calibrate_unassigned_threshold(probabilities, np.array([1, 1, 0, 1])) == 0.5
    )  # none correct


def test_metrics_against_hand_counts() -> None:
    metrics = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b", "c"])
    assert metrics["accuracy"] == 0.75
    a, b = metrics["per_class"]["a"], metrics["per_class"]["b"]
    assert (a["precision"], a["recall"], a["specificity"]) == (1.0, 0.5, 1.0)
    assert (b["precision"], b["recall"], b["specificity"]) == (2 / 3, 1.0, 0.5)
    # 'c' has no true members: left out of macro-F1, not counted as a zero
    assert metrics["classes_scored"] == ["a", "b"]
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert metrics["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
