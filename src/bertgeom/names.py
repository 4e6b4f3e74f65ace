"""Names that capture, the measurements, the results store and the report share, defined once:
the measuring points of DESIGN 3.1 and the tables and arrays of a results directory."""

from __future__ import annotations

from enum import StrEnum

MEASURING_POINTS: tuple[str, ...] = (
    "layer_input",
    "head_output",
    "multihead_output",
    "layer_output",
)
"""The measuring points of DESIGN 3.1, in stream order."""

STREAM_POINTS: tuple[str, ...] = ("layer_input", "multihead_output", "layer_output")
"""The points of ``layers.parquet``: the measuring points but the per-head ``head_output``
(its rows are in ``heads.parquet``)."""

EMBEDDING_LAYER = -1
"""``layer`` of the embedding output (the input of layer 0) in ``layers.parquet``."""


class Table(StrEnum):
    """The tables of a results directory (``<name>.parquet``, ``docs/results.md``)."""

    HEADS = "heads"
    LAYERS = "layers"
    INPUTS = "inputs"
    PREDICTIONS = "predictions"
    HISTOGRAMS = "histograms"
    PCA = "pca"
    OUTLIER_DIMENSIONS = "outlier_dimensions"
    MUTATIONS = "mutations"
    ABLATION = "ablation"


class Array(StrEnum):
    """The arrays of a results directory (``arrays/<name>.npy``); the head overlaps are
    ``overlap_<kind>``."""

    CLASS_MEAN_MAPS = "class_mean_maps"
    SPIKE_ATTENTION_PROFILE = "spike_attention_profile"
    SINGULAR_VALUES = "singular_values"
