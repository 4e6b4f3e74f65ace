"""Head ablation done by weight surgery, the independent computation the ablation tests compare
with: a copy of the model whose chosen heads' value vectors are a constant ``v_h`` (the value
projection's weight rows zero, its bias rows ``v_h``), so that ``Z_h = A 1 v_h^T = v_h``
without any hook, on any architecture whose adapter names a value projection with a bias."""

from __future__ import annotations

import copy

import torch

from bertgeom.capture.adapters import encoder_layers, linear, submodule
from bertgeom.capture.input_batch import InputBatch
from bertgeom.capture.loading import LoadedModel


def head_output_means(loaded: LoadedModel, batch: InputBatch) -> list[torch.Tensor]:
    """Each layer's ``Z`` (the input of ``W_O``) averaged over the valid tokens."""
    means: list[torch.Tensor] = []
    valid = batch.encoding["attention_mask"].bool()

    def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        means.append(args[0][valid].double().mean(0).float())

    handles = [
        submodule(layer, loaded.adapter.output_projection).register_forward_pre_hook(hook)
        for layer in encoder_layers(loaded.encoder, loaded.adapter)
    ]
    with torch.inference_mode():
        loaded.model(**batch.encoding)
    for handle in handles:
        handle.remove()
    return means


def surgery(
    loaded: LoadedModel, layer: int, heads: list[int], bias: torch.Tensor
) -> torch.nn.Module:
    """A copy whose heads' value vectors are the constant ``bias`` (their slices of it)."""
    model = copy.deepcopy(loaded.model)
    value = linear(encoder_layers(model.base_model, loaded.adapter)[layer], loaded.adapter.value)
    assert value.bias is not None
    size = loaded.head_size
    with torch.no_grad():
        for head in heads:
            part = slice(head * size, (head + 1) * size)
            value.weight[part] = 0.0
            value.bias[part] = bias[part]
    return model
