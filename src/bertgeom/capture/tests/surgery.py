"""Head ablation done by weight surgery, the independent computation the ablation tests compare
with: a copy of the model whose chosen heads' value vectors are a constant ``v_h`` (the value
projection's weight rows zero, its bias rows ``v_h``), so that ``Z_h = A 1 v_h^T = v_h``
without any hook, on any architecture whose adapter names a value projection (with a bias,
unless ``v_h = 0``; ModernBERT's fused ``Wqkv`` holds the value rows in its third block)."""

from __future__ import annotations

import copy

import torch

from bertgeom.capture.adapters import encoder_layers, linear, submodule
from bertgeom.capture.input_batch import InputBatch
from bertgeom.capture.loading import LoadedModel


def head_output_means(loaded: LoadedModel, batch: InputBatch) -> list[torch.Tensor]:
    """Each depth's ``Z`` (the input of ``W_O``) averaged over the valid tokens, in the order
    the depths run (one hook per distinct module: a layer shared across depth, ALBERT, runs
    its ``W_O`` once per depth it is at)."""
    means: list[torch.Tensor] = []
    valid = batch.encoding["attention_mask"].bool()

    def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        means.append(args[0][valid].double().mean(0).float())

    layers = {id(layer): layer for layer in encoder_layers(loaded.encoder, loaded.adapter)}
    handles = [
        submodule(layer, loaded.adapter.output_projection).register_forward_pre_hook(hook)
        for layer in layers.values()
    ]
    with torch.inference_mode():
        loaded.model(**batch.encoding)
    for handle in handles:
        handle.remove()
    assert len(means) == loaded.n_layers
    return means


def surgery(
    loaded: LoadedModel, layer: int, heads: list[int], bias: torch.Tensor
) -> torch.nn.Module:
    """A copy whose heads' value vectors are the constant ``bias`` (their slices of it) at
    depth ``layer`` (where a module runs at several depths, at every one of them)."""
    model = copy.deepcopy(loaded.model)
    value = linear(encoder_layers(model.base_model, loaded.adapter)[layer], loaded.adapter.value)
    size, width = loaded.head_size, loaded.n_heads * loaded.head_size
    # A fused [q | k | v] projection: the value rows are its third block, head-major.
    offset = 2 * width if loaded.adapter.fused_qkv else 0
    assert value.out_features == offset + width
    with torch.no_grad():
        for head in heads:
            part = slice(offset + head * size, offset + (head + 1) * size)
            value.weight[part] = 0.0
            if value.bias is not None:
                value.bias[part] = bias[head * size : (head + 1) * size]
            else:
                assert not bias[head * size : (head + 1) * size].any(), "no bias to hold v_h"
    return model
