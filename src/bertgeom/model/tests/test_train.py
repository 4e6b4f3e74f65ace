"""Training pieces: soft targets for outliers, the unassigned threshold, metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bertgeom.errors import InputError
from bertgeom.model.augmentation import soft_targets, window_tokens
from bertgeom.model.evaluate import calibrate_unassigned_threshold, classification_metrics
from bertgeom.model.tokenizer import build_vocabulary


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


def test_windows_keep_one_run_of_content_in_place() -> None:
    """Each windowed row keeps one contiguous run of its own content tokens, at their
    positions, of ``U(fraction)`` of its length; the rest is ``[UNK]``; specials untouched."""
    generator = torch.Generator().manual_seed(0)
    rows, width, unknown = 200, 60, 1
    lengths = torch.randint(5, width - 1, (rows,), generator=generator)
    ids = torch.zeros(rows, width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths.tolist()):
        ids[row, 0], ids[row, 1 : length + 1], ids[row, length + 1] = 2, 100 + row, 3
        mask[row, : length + 2] = 1
    windowed = window_tokens(ids, mask, 1.0, (0.3, 0.6), unknown, generator)
    for row, length in enumerate(lengths.tolist()):
        content = windowed[row, 1 : length + 1]
        kept = torch.nonzero(content != unknown).flatten()
        assert len(kept) and torch.equal(kept, torch.arange(int(kept[0]), int(kept[-1]) + 1))
        assert torch.equal(content[kept], ids[row, 1 : length + 1][kept])
        assert np.ceil(0.3 * length) <= len(kept) <= np.ceil(0.6 * length)
        assert windowed[row, 0] == 2 and windowed[row, length + 1] == 3
        assert torch.equal(windowed[row, length + 2 :], ids[row, length + 2 :])
    assert torch.equal(window_tokens(ids, mask, 0.0, (0.3, 0.6), unknown, generator), ids)
    some = window_tokens(ids, mask, 0.5, (0.3, 0.6), unknown, generator)
    changed = (some != ids).any(dim=1).float().mean()
    assert 0.35 < float(changed) < 0.65


def test_vocabulary_holds_only_called_kmers() -> None:
    vocabulary = build_vocabulary(["ACGTACGTACGTNNNACGTACGTACGTACGTA"], k=12, stride=9)
    assert vocabulary[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert vocabulary[5:] and all("n" not in token for token in vocabulary[5:])


def test_a_diverged_training_saves_nothing(tmp_path: Path) -> None:
    """A learning rate of 1e10 turns the weights to NaN in the first epoch: refused, with the
    learning rates named, and no model directory left that predict would later trip over."""
    from bertgeom.genomics.dataset import split_dataset, synthetic_spikes
    from bertgeom.model.train import TrainingOptions, train_classifier

    drawn = synthetic_spikes((6, 0, 0), seed=7).drop(columns="split")
    dataset, _ = split_dataset(drawn, synthetic_spikes((2, 1, 1), seed=8), seed=7)
    options = TrainingOptions("tiny", epochs=2, learning_rate=1e10)
    with pytest.raises(InputError, match=r"training diverged.*epoch 1.*--learning-rate"):
        train_classifier(dataset, tmp_path / "model", options)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", 0), ("batch_size", -4), ("learning_rate", float("nan")), ("preset", "huge")],
)
def test_options_that_train_nothing_are_refused(field: str, value: object) -> None:
    from bertgeom.model.train import TrainingOptions

    with pytest.raises(InputError):
        TrainingOptions(**{field: value})  # type: ignore[arg-type]
