"""The measurements of an analysis, built empty for one model and source, and the per-input
predictions of a classifier that stream beside them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bertgeom.analysis.options import AnalysisOptions
from bertgeom.capture.engine import Measurement
from bertgeom.capture.inputs import InputBatch, InputSource
from bertgeom.capture.loading import LoadedModel
from bertgeom.capture.measurements import (
    ClassMeanMapMeasurement,
    ConeMeasurement,
    GateMeasurement,
    HeadConeMeasurement,
    SpikeAttentionMeasurement,
    SubspaceDataMeasurement,
)
from bertgeom.capture.stream_measurements import (
    ClsSeparabilityMeasurement,
    DistributionMeasurement,
    HeadDistributionMeasurement,
)
from bertgeom.measures.gates import DEFAULT_THRESHOLDS

CLASS_COVARIANCE_BUDGET = 256 * 2**20
"""Bytes allowed for per-class covariance matrices (d^2 float64 per layer, point and class);
above it only the ``all`` covariance is kept (per-class effective rank NaN)."""


class RowWriter(Protocol):
    """Where per-input rows go: a ``ResultsWriter``, or a shard's collector on a Dask worker."""

    def add_rows(self, name: str, frame: pd.DataFrame) -> None: ...


class Predictions:
    """Per-input predictions of a classification head, streamed to ``predictions.parquet``."""

    def __init__(self, writer: RowWriter, class_names: Sequence[str]) -> None:
        self.writer = writer
        self.class_names = np.asarray(class_names, dtype=object)
        self.correct = 0
        self.labelled = 0

    def __call__(self, batch: InputBatch, logits: Tensor | None) -> None:
        if logits is None:
            return
        probabilities = torch.softmax(logits.detach().float().cpu(), dim=-1).numpy()
        predicted = self.class_names[probabilities.argmax(axis=1)]
        labels = list(batch.labels) if batch.labels is not None else [None] * len(batch)
        frame = pd.DataFrame(
            {
                "input_index": batch.indices,
                "input_id": list(batch.input_ids),
                "class": labels,
                "predicted_class": predicted,
                "probability": probabilities.max(axis=1),
            }
        )
        known = [label in set(self.class_names) for label in labels]
        self.labelled += sum(known)
        self.correct += int(
            sum(k and p == y for k, p, y in zip(known, predicted, labels, strict=True))
        )
        self.writer.add_rows("predictions", frame)

    def add_counts(self, correct: int, labelled: int) -> None:
        """Count a shard's inputs too (their rows were written apart)."""
        self.correct += correct
        self.labelled += labelled

    def summary(self) -> dict[str, Any]:
        return {
            "labelled_inputs": self.labelled,
            "accuracy": self.correct / self.labelled if self.labelled else None,
        }


def build_measurements(
    loaded: LoadedModel,
    source: InputSource,
    options: AnalysisOptions,
    map_heads: Sequence[tuple[int, int]],
    map_length: int,
    writer: RowWriter,
) -> dict[str, Measurement]:
    """The measurements of an analysis by name, empty; per-input gate rows go to ``writer``."""
    classes = source.declared_classes
    padding = options.include_padding
    qk = loaded.query_key_weights()
    measurements: dict[str, Measurement] = {
        "gates": GateMeasurement(
            loaded.n_layers,
            loaded.n_heads,
            classes,
            DEFAULT_THRESHOLDS,
            options.window,
            options.cluster_rows,
            padding,
            records=(lambda frame: writer.add_rows("inputs", frame))
            if options.input_records
            else None,
        ),
        "class_mean_maps": ClassMeanMapMeasurement(
            map_length, loaded.n_layers, loaded.n_heads, classes, map_heads, padding
        ),
        "subspace_data": SubspaceDataMeasurement(qk, loaded.n_heads, padding),
    }
    if options.global_measures:
        measurements["head_cone"] = HeadConeMeasurement(padding)
        measurements["cone"] = ConeMeasurement(padding)
        measurements["distribution"] = DistributionMeasurement(
            padding, class_covariance=_class_covariance_fits(loaded, len(classes))
        )
        measurements["head_distribution"] = HeadDistributionMeasurement(padding)
        if classes:
            measurements["cls_separability"] = ClsSeparabilityMeasurement()
    if source.spike_layouts:
        measurements["spike_attention"] = SpikeAttentionMeasurement(
            loaded.n_layers, loaded.n_heads, classes, padding
        )
    return measurements


def _class_covariance_fits(loaded: LoadedModel, n_classes: int) -> bool:
    # States are kept for the embedding output and each layer's two measured points (layer
    # inputs are copies), for every class and "all".
    keys = (2 * loaded.n_layers + 1) * (n_classes + 1)
    return keys * loaded.hidden_size**2 * 8 <= CLASS_COVARIANCE_BUDGET
