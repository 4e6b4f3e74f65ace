"""Classification metrics, probabilities in batches, the ``unassigned`` threshold, and the
confusion-matrix figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support
from transformers import BertForSequenceClassification, PreTrainedTokenizerBase

from bertgeom.model.tokenizer import encode


@torch.inference_mode()
def predict_probabilities(
    model: BertForSequenceClassification,
    tokenizer: PreTrainedTokenizerBase,
    sequences: Sequence[str],
    k: int,
    stride: int,
    batch_size: int = 64,
    max_length: int = 512,
) -> NDArray[np.float64]:
    """Softmax class probabilities ``(n_sequences, n_classes)`` for spike sequences."""
    was_training = model.training
    model.eval()
    parts = []
    for start in range(0, len(sequences), batch_size):
        batch = encode(tokenizer, sequences[start : start + batch_size], k, stride, max_length)
        logits = model(**batch).logits
        parts.append(torch.softmax(logits.float(), dim=-1).numpy().astype(np.float64))
    model.train(was_training)
    if not parts:
        return np.zeros((0, len(model.config.id2label or {})), dtype=np.float64)
    return np.concatenate(parts)


def classification_metrics(
    true_labels: Sequence[str], predicted_labels: Sequence[str], classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 (over the classes present in ``true_labels``), per-class precision,
    recall, F1, specificity TN / (TN + FP) and support, and the confusion matrix (rows = true)."""
    labels = list(classes)
    true = np.asarray(true_labels, dtype=object)
    predicted = np.asarray(predicted_labels, dtype=object)
    present = [label for label in labels if (true == label).any()]
    matrix = confusion_matrix(true, predicted, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        true, predicted, labels=labels, zero_division=0
    )
    total = matrix.sum()
    per_class = {}
    for index, label in enumerate(labels):
        true_positive = matrix[index, index]
        false_positive = matrix[:, index].sum() - true_positive
        false_negative = matrix[index, :].sum() - true_positive
        true_negative = total - true_positive - false_positive - false_negative
        negatives = true_negative + false_positive
        per_class[label] = {
            "precision": float(precision[index]),
            "recall": float(recall[index]),
            "f1": float(f1[index]),
            "specificity": float(true_negative / negatives) if negatives else float("nan"),
            "support": int(support[index]),
        }
    return {
        "n": len(true),
        "accuracy": float((true == predicted).mean()) if len(true) else float("nan"),
        "macro_f1": float(
            f1_score(true, predicted, labels=present, average="macro", zero_division=0)
        )
        if present
        else float("nan"),
        "classes_scored": present,
        "per_class": per_class,
        "confusion_matrix": {"labels": labels, "matrix": matrix.tolist()},
    }


def calibrate_unassigned_threshold(
    probabilities: NDArray[np.float64], true_indices: NDArray[np.int64], quantile: float = 0.01
) -> float:
    """The best-probability level below which a call is ``unassigned``.

    Set to the ``quantile`` (default 1 %) of the best probability over *correctly* classified
    validation sequences, so that about 1 % of correct calls would be withheld; clipped to
    [0.5, 0.99]. Sequences outside the training classes tend to fall below it.
    """
    best = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == true_indices
    if not correct.any():
        return 0.5
    return float(np.clip(np.quantile(best[correct], quantile), 0.5, 0.99))


def plot_confusion_matrix(metrics: dict[str, Any], path: Path, title: str) -> None:
    """Save the confusion matrix of :func:`classification_metrics` as a PNG (counts annotated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = metrics["confusion_matrix"]["labels"]
    matrix = np.asarray(metrics["confusion_matrix"]["matrix"])
    columns = [*labels, *(c for c in ["unassigned"] if matrix.shape[1] > len(labels))]
    figure, axes = plt.subplots(figsize=(6.5, 5.5))
    axes.imshow(np.log1p(matrix), cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        if count:
            axes.text(column, row, str(count), ha="center", va="center", fontsize=8)
    axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120, format="png")
    plt.close(figure)
