"""Measurements of the token stream (DESIGN 3.1, 3.4), each owning its parameters and outputs
(``capture.measurement``):

- :class:`ConeMeasurement`: the cone index at the measuring points and of the ``[CLS]``
  vectors of each class (``layers``), with the histograms of the per-input index;
- :class:`HeadConeMeasurement`: the cone index of each head's output and attention rows;
- :class:`DistributionMeasurement`: moments, normality test, histograms, outlier dimensions and
  participation ratio of the hidden coordinates at each measuring point;
- :class:`HeadDistributionMeasurement`: the same statistics of each head's output ``Z_h``;
- :class:`ClsSeparabilityMeasurement`: how separable the classes are in the ``[CLS]`` vectors
  of every layer, and their 2-D PCA.

The stream is read at the points of ``capture.stream_points`` (the embedding output is layer
-1; ``layer_input`` rows are copies, ``with_layer_inputs``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bertgeom.capture.hooks import CapturedLayer
from bertgeom.capture.input_labels import UNLABELLED
from bertgeom.capture.measurement import (
    AccumulatorMeasurement,
    BatchContext,
    MeasurementOutputs,
    MeasurementSetup,
)
from bertgeom.capture.stream_points import stream_points, with_layer_inputs
from bertgeom.measures.cone_accumulators import (
    ClassConeAccumulator,
    ConeAccumulator,
    HeadConeAccumulator,
)
from bertgeom.measures.distribution_accumulator import DistributionAccumulator
from bertgeom.measures.head_distribution import HeadDistributionAccumulator
from bertgeom.measures.histograms import histogram_frame
from bertgeom.measures.separability import ClsSeparabilityAccumulator
from bertgeom.names import Table

PCA_COLUMNS = ["layer", "class", "pc1", "pc2"]


@dataclass(frozen=True)
class ConeParameters:
    """``histogram_bins``: bins over [0, 1] of the per-input ``I / n``."""

    histogram_bins: int = 50


class ConeMeasurement:
    """Cone index of the token vectors at the measuring points (the embedding output as layer
    -1, then each layer's ``multihead_output`` and ``layer_output``), and of the ``[CLS]``
    vectors of each class at each ``layer_output``: rows of ``layers`` and the
    ``cone_normalized`` histograms. The ``head_output`` point is per head:
    :class:`HeadConeMeasurement`."""

    name = "cone"

    def __init__(self, setup: MeasurementSetup, parameters: ConeParameters | None = None) -> None:
        self.parameters = parameters or ConeParameters()
        self.tokens = ConeAccumulator(self.parameters.histogram_bins)
        self.cls = ClassConeAccumulator()

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        labels = context.labels
        for layer, point, hidden in stream_points(captured):
            self.tokens.update(layer, point, hidden, context.tokens.valid, labels)
            if point == "layer_output":
                self.cls.update(layer, hidden[:, 0], labels)

    def merge(self, other: ConeMeasurement) -> ConeMeasurement:
        merged = ConeMeasurement.__new__(ConeMeasurement)
        merged.parameters = self.parameters
        merged.tokens = self.tokens.merge(other.tokens)
        merged.cls = self.cls.merge(other.cls)
        return merged

    def result(self) -> pd.DataFrame:
        tokens = with_layer_inputs(self.tokens.result())
        return pd.concat([tokens, self.cls.result()], ignore_index=True)

    def histograms(self) -> pd.DataFrame:
        """Counts of the per-input ``I / n`` (kind ``cone_normalized``) in the long format of
        ``histogram_frame``."""
        frame = histogram_frame(self.tokens.histograms(), self.tokens.bin_edges, "cone_normalized")
        return with_layer_inputs(frame)

    def write(self, outputs: MeasurementOutputs) -> None:
        outputs.add_table(Table.LAYERS, self.result())
        outputs.add_table(Table.HISTOGRAMS, self.histograms())


@dataclass(frozen=True)
class HeadConeParameters:
    """The head cone index has no parameters of its own."""


class HeadConeMeasurement(AccumulatorMeasurement):
    """Cone index of each head's output rows ``Z_h = A V_h`` and of its attention rows."""

    name = "head_cone"

    def __init__(
        self, setup: MeasurementSetup, parameters: HeadConeParameters | None = None
    ) -> None:
        self.parameters = parameters or HeadConeParameters()
        self.accumulator = HeadConeAccumulator()

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        valid, labels = context.tokens.valid, context.labels
        self.accumulator.update_head_outputs(captured.layer, captured.head_outputs, valid, labels)
        self.accumulator.update_attention_rows(captured.layer, captured.attention, valid, labels)


@dataclass(frozen=True)
class DistributionParameters:
    """``histogram_range`` and ``histogram_bins`` of the coordinate histograms;
    ``outlier_factor``: a coordinate is an outlier when its mean magnitude exceeds this many
    times the median's; ``per_class``: every statistic per class too; ``class_covariance``:
    the covariance (for the participation ratio) per class too, not only of ``all`` (d^2
    floats per key)."""

    histogram_range: tuple[float, float] = (-10.0, 10.0)
    histogram_bins: int = 200
    outlier_factor: float = 6.0
    per_class: bool = True
    class_covariance: bool = True


class DistributionMeasurement(AccumulatorMeasurement):
    """The distribution of the hidden coordinates per (layer, point, class); ``point`` is one of
    ``layer_input``, ``multihead_output``, ``layer_output`` (each head's output is measured
    apart: :class:`HeadDistributionMeasurement`): rows of ``layers``, the ``values``
    histograms and the ``outlier_dimensions`` table."""

    name = "distribution"
    table = Table.LAYERS

    def __init__(
        self, setup: MeasurementSetup, parameters: DistributionParameters | None = None
    ) -> None:
        self.parameters = parameters = parameters or DistributionParameters()
        self.accumulator = DistributionAccumulator(
            histogram_range=parameters.histogram_range,
            n_bins=parameters.histogram_bins,
            outlier_factor=parameters.outlier_factor,
            per_class=parameters.per_class,
            class_covariance=parameters.class_covariance,
        )

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        valid, labels = context.tokens.valid, context.labels
        for layer, point, hidden in stream_points(captured):
            self.accumulator.update(layer, point, hidden, valid, labels)

    def result(self) -> pd.DataFrame:
        return with_layer_inputs(self.accumulator.result())

    def histograms(self) -> pd.DataFrame:
        """Counts of the hidden coordinates (kind ``values``), ``histogram_frame`` format."""
        accumulator = self.accumulator
        frame = histogram_frame(accumulator.histograms(), accumulator.bin_edges, "values")
        return with_layer_inputs(frame)

    def outlier_dimensions(self) -> pd.DataFrame:
        """The outlier coordinates: rows ``layer, point, class, coordinate`` (class ``all``)."""
        table = with_layer_inputs(self.accumulator.per_coordinate())
        if table.empty:
            return pd.DataFrame(columns=["layer", "point", "class", "coordinate"])
        rows = table[table["is_outlier"] & (table["class"] == "all")]
        return rows[["layer", "point", "class", "coordinate"]].reset_index(drop=True)

    def write(self, outputs: MeasurementOutputs) -> None:
        super().write(outputs)
        outputs.add_table(Table.HISTOGRAMS, self.histograms())
        outputs.add_table(Table.OUTLIER_DIMENSIONS, self.outlier_dimensions())


@dataclass(frozen=True)
class HeadDistributionParameters:
    """``per_class``: per class too; ``outlier_factor``: as for the stream."""

    per_class: bool = True
    outlier_factor: float = 6.0


class HeadDistributionMeasurement(AccumulatorMeasurement):
    """The distribution of each head's output ``Z_h = A V_h`` (DESIGN 3.1's head-output point,
    before concatenation) per (layer, head, class): ``dist.head_output.*`` in ``heads``."""

    name = "head_distribution"

    def __init__(
        self, setup: MeasurementSetup, parameters: HeadDistributionParameters | None = None
    ) -> None:
        self.parameters = parameters = parameters or HeadDistributionParameters()
        self.accumulator = HeadDistributionAccumulator(
            parameters.per_class, parameters.outlier_factor
        )

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        self.accumulator.update(
            captured.layer, captured.head_outputs, context.tokens.valid, context.labels
        )


@dataclass(frozen=True)
class SeparabilityParameters:
    """``max_points``: ``[CLS]`` vectors kept per layer (a seeded reservoir; None: all);
    ``seed``: of the reservoir and the probe's folds; ``n_splits``: folds of the held-out
    probe; ``ridge``: its regularisation."""

    max_points: int | None = 4000
    seed: int = 0
    n_splits: int = 5
    ridge: float = 1e-3


class ClsSeparabilityMeasurement(AccumulatorMeasurement):
    """Separability of the classes in the ``[CLS]`` vectors at every ``layer_output`` (and the
    embedding output, layer -1): silhouette, Fisher ratio, held-out probe accuracy (rows at point
    ``layer_output``, class ``all``) and the 2-D PCA (the ``pca`` table, with the explained
    variance ratios as ``cls.pca.explained_1`` and ``_2``). Inputs without a class are left
    out."""

    name = "cls_separability"
    table = Table.LAYERS

    def __init__(
        self, setup: MeasurementSetup, parameters: SeparabilityParameters | None = None
    ) -> None:
        self.parameters = parameters = parameters or SeparabilityParameters()
        self.accumulator = ClsSeparabilityAccumulator(
            parameters.max_points, parameters.seed, parameters.n_splits, parameters.ridge
        )

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        labels = context.labels
        if labels is None:
            return
        keep = [i for i, label in enumerate(labels) if label != UNLABELLED]
        if not keep:
            return
        kept_labels = [labels[i] for i in keep]
        for layer, point, hidden in stream_points(captured):
            if point == "layer_output":
                cls = hidden[:, 0] if len(keep) == len(labels) else hidden[keep, 0]
                self.accumulator.update(layer, cls, kept_labels)

    def result(self) -> pd.DataFrame:
        table = self.accumulator.result()
        explained = [
            (layer, "all", f"cls.pca.explained_{axis + 1}", float(ratios[axis]))
            for layer, (_, _, ratios) in self.accumulator.pca().items()
            for axis in range(2)
        ]
        table = pd.concat(
            [table, pd.DataFrame(explained, columns=["layer", "class", "metric", "value"])],
            ignore_index=True,
        )
        table.insert(1, "point", "layer_output")
        return table

    def pca(self) -> pd.DataFrame:
        """The ``[CLS]`` vectors of each layer on their first two principal axes: columns
        ``layer, class, pc1, pc2``."""
        frames = [
            pd.DataFrame(
                {"layer": layer, "class": labels, "pc1": coords[:, 0], "pc2": coords[:, 1]}
            )
            for layer, (coords, labels, _) in self.accumulator.pca().items()
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PCA_COLUMNS)

    def write(self, outputs: MeasurementOutputs) -> None:
        super().write(outputs)
        outputs.add_table(Table.PCA, self.pca())
