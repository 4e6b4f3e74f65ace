"""Where the token stream is measured, named as in ``layers.parquet``.

DESIGN 3.1 measures the stream at the input, multi-head output and output of every layer. The
input of layer l is the output of layer l - 1 (the same tensor), and the input of layer 0 is the
embedding output, written as layer -1's ``layer_output``. So each distinct tensor is measured
once (:func:`stream_points`), and :func:`with_layer_inputs` writes the ``layer_input`` rows of
layer l as copies of layer l - 1's ``layer_output`` rows: the identity
``layer_input(l) == layer_output(l - 1)`` holds by construction and the work is two thirds of
measuring all three points.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from torch import Tensor

from bertgeom.capture.hooks import CapturedLayer
from bertgeom.names import EMBEDDING_LAYER


def stream_points(captured: CapturedLayer) -> Iterator[tuple[int, str, Tensor]]:
    """The distinct ``(layer, point, hidden (batch, seq, d))`` of one captured layer: the
    embedding output (layer -1, ``layer_output``) for layer 0, then the layer's
    ``multihead_output`` and ``layer_output``."""
    if captured.layer == 0:
        yield EMBEDDING_LAYER, "layer_output", captured.layer_input
    yield captured.layer, "multihead_output", captured.multihead_output
    yield captured.layer, "layer_output", captured.layer_output


def with_layer_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (columns ``layer``, ``point``, ...) plus, for every ``layer_output`` row of a
    layer l below the last, the same row as ``layer_input`` of layer l + 1."""
    if frame.empty:
        return frame
    last = int(frame["layer"].max())
    outputs = frame[(frame["point"] == "layer_output") & (frame["layer"] < last)]
    inputs = outputs.assign(layer=outputs["layer"] + 1, point="layer_input")
    return pd.concat([frame, inputs], ignore_index=True)
