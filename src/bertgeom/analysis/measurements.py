"""The measurements of an analysis, built empty for one model and source, and the per-input
predictions of a classifier that stream beside them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bertgeom.analysis.options import AnalysisOptions
from bertgeom.capture.attention_input import AttentionInputMeasurement, AttentionNorms
from bertgeom.capture.input_batch import InputBatch
from bertgeom.capture.input_source import InputSource
from bertgeom.capture.loading import LoadedModel
from bertgeom.capture.measurement import Measurement, MeasurementSetup, parameters_from_json
from bertgeom.capture.measurements import (
    ClassMeanMapMeasurement,
    GateMeasurement,
    GateParameters,
    MapParameters,
    SpikeAttentionMeasurement,
    SpikeAttentionParameters,
    SubspaceDataMeasurement,
    SubspaceDataParameters,
)
from bertgeom.capture.stream_measurements import (
    ClsSeparabilityMeasurement,
    ConeMeasurement,
    ConeParameters,
    DistributionMeasurement,
    DistributionParameters,
    HeadConeMeasurement,
    HeadConeParameters,
    HeadDistributionMeasurement,
    HeadDistributionParameters,
    SeparabilityParameters,
)
from bertgeom.names import Table

CLASS_COVARIANCE_BUDGET = 256 * 2**20
"""Bytes allowed for per-class covariance matrices (d^2 float64 per layer, point and class);
above it only the ``all`` covariance is kept (per-class participation ratio NaN)."""


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
        self.writer.add_rows(Table.PREDICTIONS, frame)

    def add_counts(self, correct: int, labelled: int) -> None:
        """Count a shard's inputs too (their rows were written apart)."""
        self.correct += correct
        self.labelled += labelled

    def summary(self) -> dict[str, Any]:
        return {
            "labelled_inputs": self.labelled,
            "accuracy": self.correct / self.labelled if self.labelled else None,
        }


PARAMETERS: dict[str, type[Any]] = {
    GateMeasurement.name: GateParameters,
    ClassMeanMapMeasurement.name: MapParameters,
    SubspaceDataMeasurement.name: SubspaceDataParameters,
    HeadConeMeasurement.name: HeadConeParameters,
    ConeMeasurement.name: ConeParameters,
    DistributionMeasurement.name: DistributionParameters,
    HeadDistributionMeasurement.name: HeadDistributionParameters,
    ClsSeparabilityMeasurement.name: SeparabilityParameters,
    SpikeAttentionMeasurement.name: SpikeAttentionParameters,
}
"""The parameters dataclass of each measurement, by the name the manifest records it under."""


def measurement_parameters(
    loaded: LoadedModel,
    source: InputSource,
    options: AnalysisOptions,
    map_heads: Sequence[tuple[int, int]],
    map_length: int,
) -> dict[str, Any]:
    """The parameters of every measurement ``options`` ask for, by name, in the order they run:
    the defaults of each measurement with the options' choices (gate window and cluster rows,
    per-input rows, mapped heads and their length) and the model's budget for per-class
    covariances."""
    classes = source.declared_classes
    parameters: dict[str, Any] = {
        GateMeasurement.name: GateParameters(
            window=options.window, cluster_rows=options.cluster_rows, records=options.input_records
        ),
        ClassMeanMapMeasurement.name: MapParameters(map_length, tuple(map_heads)),
        SubspaceDataMeasurement.name: SubspaceDataParameters(),
    }
    if options.global_measures:
        parameters[HeadConeMeasurement.name] = HeadConeParameters()
        parameters[ConeMeasurement.name] = ConeParameters()
        parameters[DistributionMeasurement.name] = DistributionParameters(
            class_covariance=_class_covariance_fits(loaded, len(classes))
        )
        parameters[HeadDistributionMeasurement.name] = HeadDistributionParameters()
        if classes:
            parameters[ClsSeparabilityMeasurement.name] = SeparabilityParameters()
    if source.spike_layouts:
        parameters[SpikeAttentionMeasurement.name] = SpikeAttentionParameters()
    return parameters


def parameters_to_json(parameters: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's ``measurements`` entry: each measurement's parameters by name."""
    return {name: asdict(values) for name, values in parameters.items()}


def parameters_from_manifest(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters recorded by :func:`parameters_to_json`, as dataclasses again."""
    unknown = sorted(set(entry) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"unknown measurements {unknown}; known: {', '.join(PARAMETERS)}")
    return {name: parameters_from_json(PARAMETERS[name], dict(v)) for name, v in entry.items()}


def build_measurements(
    loaded: LoadedModel,
    source: InputSource,
    options: AnalysisOptions,
    parameters: Mapping[str, Any],
    writer: RowWriter,
) -> dict[str, Measurement]:
    """The measurements named in ``parameters`` (``measurement_parameters``, or a manifest's),
    empty, by name; per-input gate rows go to ``writer``."""
    setup = MeasurementSetup(
        loaded.n_layers,
        loaded.n_heads,
        tuple(source.declared_classes),
    )
    built: dict[str, Measurement] = {}
    for name, values in parameters.items():
        if name == GateMeasurement.name:
            built[name] = GateMeasurement(
                setup, values, records=lambda frame: writer.add_rows(Table.INPUTS, frame)
            )
        elif name == SubspaceDataMeasurement.name:
            subspace: Measurement = SubspaceDataMeasurement(
                setup, loaded.query_key_weights(), values
            )
            if loaded.adapter.attention_norm is not None:
                # Pre-LayerNorm layers: the projections read LN(x), not the stream x.
                norms = AttentionNorms(loaded.encoder, loaded.adapter)
                subspace = AttentionInputMeasurement(subspace, norms)
            built[name] = subspace
        elif name in PARAMETERS:
            built[name] = _MEASUREMENTS[name](setup, values)
        else:
            raise ValueError(f"unknown measurement {name!r}")
    return built


_MEASUREMENTS: dict[str, Any] = {
    kind.name: kind
    for kind in (
        ClassMeanMapMeasurement,
        HeadConeMeasurement,
        ConeMeasurement,
        DistributionMeasurement,
        HeadDistributionMeasurement,
        ClsSeparabilityMeasurement,
        SpikeAttentionMeasurement,
    )
}


def _class_covariance_fits(loaded: LoadedModel, n_classes: int) -> bool:
    # States are kept for the embedding output and each layer's two measured points (layer
    # inputs are copies), for every class and "all".
    keys = (2 * loaded.n_layers + 1) * (n_classes + 1)
    return keys * loaded.hidden_size**2 * 8 <= CLASS_COVARIANCE_BUDGET
