"""Joining the captured layers of consecutive forward batches into one chunk.

Every measurement pays a fixed cost per update (Python, small tensor operations, float64
``d x d`` sums), so at small forward batches that cost, not the arithmetic, is what grows. The
engine therefore hands the measurements chunks of at least ``CHUNK_INPUTS`` inputs: the layers
of several small batches, joined here along the batch axis.

Batches differ in sequence length: each one's tensors are right-padded with zeros to the longest
of the chunk, and its attention mask with 0, exactly as a tokenizer pads a batch. Every
measurement that excludes padding reads the same tokens of every input as batch by batch, so a
chunk changes no result beyond the rounding of float32 products over other groupings of tokens
(the same as another batch size). With ``include_padding`` the padding counts as tokens, so the
engine does not join batches then.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from bertgeom.capture.hooks import CapturedLayer
from bertgeom.capture.input_batch import InputBatch

CHUNK_INPUTS = 32
"""The engine joins forward batches smaller than this until a chunk holds this many inputs."""

CHUNK_BYTES = 64 * 2**20
"""Most bytes of captured tensors (all layers of the joined batches) a chunk may hold; a batch
whose layers alone would exceed it is measured as it comes, layer by layer."""


def captured_bytes(captured: CapturedLayer) -> int:
    """Bytes of the tensors of one captured layer (the layer input counted apart from the
    previous layer's output, which it usually is)."""
    tensors = (
        captured.layer_input,
        captured.attention,
        captured.head_outputs,
        captured.multihead_output,
        captured.layer_output,
        captured.queries,
        captured.keys,
    )
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def join_sequences(tensors: Sequence[Tensor], dims: Sequence[int]) -> Tensor:
    """``tensors`` joined along axis 0, each first right-padded with zeros along the sequence
    axes ``dims`` to the longest of them (one copy of each, into one zeroed tensor)."""
    if len(tensors) == 1:
        return tensors[0]
    lengths = [[tensor.shape[dim] for dim in dims] for tensor in tensors]
    if all(length == lengths[0] for length in lengths):
        return torch.cat(list(tensors), dim=0)
    shape = list(tensors[0].shape)
    shape[0] = sum(tensor.shape[0] for tensor in tensors)
    for dim in dims:
        shape[dim] = max(tensor.shape[dim] for tensor in tensors)
    out = tensors[0].new_zeros(shape)
    start = 0
    for tensor in tensors:
        index: list[slice] = [slice(start, start + tensor.shape[0])]
        index += [slice(None)] * (tensor.ndim - 1)
        for dim in dims:
            index[dim] = slice(0, tensor.shape[dim])
        out[tuple(index)] = tensor
        start += tensor.shape[0]
    return out


def join_batches(batches: Sequence[InputBatch]) -> InputBatch:
    """One batch holding the inputs of ``batches`` in order; every encoding tensor right-padded
    with 0 to the longest (only the attention mask is read after the forward pass). Batches
    with a spike layout are not joined."""
    if len(batches) == 1:
        return batches[0]
    if any(batch.spike is not None for batch in batches):
        raise ValueError("batches with a spike layout are measured one by one, not joined")
    labelled = {batch.labels is not None for batch in batches}
    if len(labelled) > 1:
        raise ValueError("cannot join batches with and without labels")
    labels = [label for batch in batches for label in (batch.labels or ())]
    encoding = {
        name: join_sequences([batch.encoding[name] for batch in batches], (1,))
        for name in batches[0].encoding
    }
    return InputBatch(
        indices=np.concatenate([batch.indices for batch in batches]),
        input_ids=tuple(input_id for batch in batches for input_id in batch.input_ids),
        labels=tuple(labels) if labelled == {True} else None,
        encoding=encoding,
    )


def join_layers(
    layers: Sequence[CapturedLayer], previous: tuple[Sequence[CapturedLayer], CapturedLayer] | None
) -> CapturedLayer:
    """One layer of several batches joined (``layers``: the same layer of each batch, in order).

    ``previous``: the captures of the layer before and their join. A layer's input is the
    previous layer's output tensor, so the joined previous output serves as the joined input
    (one copy fewer)."""
    if len(layers) == 1:
        return layers[0]
    first = layers[0]
    if previous is not None and all(
        layer.layer_input is before.layer_output
        for layer, before in zip(layers, previous[0], strict=True)
    ):
        layer_input = previous[1].layer_output
    else:
        layer_input = join_sequences([layer.layer_input for layer in layers], (1,))
    # Head outputs are a view (batch, head, seq, dk) of the (batch, seq, head, dk) input of the
    # output projection: joined in that layout, as the hooks hand them over.
    by_token = join_sequences([layer.head_outputs.transpose(1, 2) for layer in layers], (1,))
    return CapturedLayer(
        layer=first.layer,
        layer_input=layer_input,
        attention=join_sequences([layer.attention for layer in layers], (2, 3)),
        head_outputs=by_token.transpose(1, 2),
        multihead_output=join_sequences([layer.multihead_output for layer in layers], (1,)),
        layer_output=join_sequences([layer.layer_output for layer in layers], (1,)),
        queries=join_sequences([layer.queries for layer in layers], (1,)),
        keys=join_sequences([layer.keys for layer in layers], (1,)),
    )
