"""The measuring points: each distinct tensor once, layer inputs as copies of the previous
layer's outputs, the embedding output as layer -1."""

from __future__ import annotations

import pandas as pd
import torch

from bertgeom.capture.hooks import CapturedLayer
from bertgeom.capture.stream_points import stream_points, with_layer_inputs
from bertgeom.names import EMBEDDING_LAYER


def _captured(layer: int) -> CapturedLayer:
    tensors = {name: torch.full((1, 2, 4), float(i)) for i, name in enumerate("abcd")}
    return CapturedLayer(
        layer=layer,
        layer_input=tensors["a"],
        attention=torch.zeros(1, 1, 2, 2),
        head_outputs=torch.zeros(1, 1, 2, 4),
        multihead_output=tensors["b"],
        layer_output=tensors["c"],
        queries=tensors["d"],
        keys=tensors["d"],
    )


def test_layer_zero_adds_the_embedding_output() -> None:
    first = [(layer, point) for layer, point, _ in stream_points(_captured(0))]
    assert first == [
        (EMBEDDING_LAYER, "layer_output"),
        (0, "multihead_output"),
        (0, "layer_output"),
    ]
    later = [(layer, point) for layer, point, _ in stream_points(_captured(3))]
    assert later == [(3, "multihead_output"), (3, "layer_output")]
    embedding = next(stream_points(_captured(0)))[2]
    assert embedding is _captured(0).layer_input or torch.equal(embedding, _captured(0).layer_input)


def test_layer_inputs_are_the_previous_outputs() -> None:
    frame = pd.DataFrame(
        {
            "layer": [-1, 0, 0, 1, 1],
            "point": [
                "layer_output",
                "multihead_output",
                "layer_output",
                "multihead_output",
                "layer_output",
            ],
            "class": "all",
            "metric": "m",
            "value": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    out = with_layer_inputs(frame).set_index(["layer", "point"])["value"]
    assert out[(0, "layer_input")] == 1.0 and out[(1, "layer_input")] == 3.0
    assert (2, "layer_input") not in out.index  # no layer after the last
    assert len(out) == 7
    assert with_layer_inputs(frame.iloc[:0]).empty
