"""Measurements of the token stream as a distribution (DESIGN 3.4), for the ``layers`` table.

- :class:`DistributionMeasurement`: moments, normality test, histograms, outlier dimensions and
  effective rank of the hidden coordinates at each measuring point (``DistributionAccumulator``);
- :class:`HeadDistributionMeasurement`: the same statistics of each head's output ``Z_h``;
- :class:`ClsSeparabilityMeasurement`: how separable the classes are in the ``[CLS]`` vectors
  of every layer, and their 2-D PCA (``ClsSeparabilityAccumulator``).

Both read the stream at the points of ``capture.stream_points`` (the embedding output is layer
-1); :class:`HeadDistributionMeasurement` reads each head's output.
"""

from __future__ import annotations

import pandas as pd

from bertgeom.capture.engine import AccumulatorMeasurement, BatchContext
from bertgeom.capture.hooks import CapturedLayer
from bertgeom.capture.inputs import UNLABELLED
from bertgeom.capture.stream_points import stream_points, with_layer_inputs
from bertgeom.measures.distribution import DistributionAccumulator
from bertgeom.measures.head_distribution import HeadDistributionAccumulator
from bertgeom.measures.histograms import histogram_frame
from bertgeom.measures.separability import ClsSeparabilityAccumulator

PCA_COLUMNS = ["layer", "class", "pc1", "pc2"]


class DistributionMeasurement(AccumulatorMeasurement):
    """The distribution of the hidden coordinates per (layer, point, class); ``point`` is one of
    ``layer_input``, ``multihead_output``, ``layer_output`` (each head's output is measured
    apart: :class:`HeadDistributionMeasurement`). ``class_covariance=False`` keeps the
    covariance (for the effective rank) of ``all`` only, as it costs d^2 floats per key."""

    table = "layers"

    def __init__(
        self,
        include_padding: bool = False,
        per_class: bool = True,
        class_covariance: bool = True,
    ) -> None:
        self.accumulator = DistributionAccumulator(
            per_class=per_class,
            include_padding=include_padding,
            class_covariance=class_covariance,
        )

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        mask, labels = context.attention_mask, context.labels
        for layer, point, hidden in stream_points(captured):
            self.accumulator.update(layer, point, hidden, mask, labels)

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


class HeadDistributionMeasurement(AccumulatorMeasurement):
    """The distribution of each head's output ``Z_h = A V_h`` (DESIGN 3.1's head-output point,
    before concatenation) per (layer, head, class): ``dist.head_output.*`` in the ``heads``
    table."""

    table = "heads"

    def __init__(self, include_padding: bool = False, per_class: bool = True) -> None:
        self.accumulator = HeadDistributionAccumulator(per_class, include_padding)

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        self.accumulator.update(
            captured.layer, captured.head_outputs, context.attention_mask, context.labels
        )


class ClsSeparabilityMeasurement(AccumulatorMeasurement):
    """Separability of the classes in the ``[CLS]`` vectors at every ``layer_output`` (and the
    embedding output, layer -1): silhouette, Fisher ratio, held-out probe accuracy (rows at point
    ``layer_output``, class ``all``) and the 2-D PCA (:meth:`pca`, with the explained variance
    ratios as ``cls.pca.explained_1`` and ``_2``). Inputs without a class are left out."""

    table = "layers"

    def __init__(self, max_points: int | None = 4000, seed: int = 0) -> None:
        self.accumulator = ClsSeparabilityAccumulator(max_points=max_points, seed=seed)

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
