"""The input of the attention projections in pre-LayerNorm layers (ESM, ModernBERT).

A post-LayerNorm layer (BERT) feeds the stream ``x`` entering it to ``W_q``, ``W_k``, ``W_v``;
a pre-LayerNorm layer feeds them ``LN(x)``, its own LayerNorm of the stream
(``ArchitectureAdapter.attention_norm``). The data-based subspace measures of DESIGN 3.3 are
defined from the vector the query and key projections read: the energy share of a token in a
head's query subspace is ``||P_q^h v||^2 / ||v||^2`` of that vector ``v``, and the projected
path (:mod:`bertgeom.capture.projected_subspace`) recovers ``P_q^h v`` from the captured
``q = W_q v + b_q``. Given the stream ``x`` for ``v`` in a pre-LayerNorm layer, the numerator
would come from ``LN(x)`` and the denominator from ``x``: a number that is neither.

:class:`AttentionInputMeasurement` hands the measurement it wraps each layer with
``layer_input`` replaced by ``LN_l(layer_input)``, computed with the layer's own LayerNorm
parameters by the same function ``nn.LayerNorm`` calls (``F.layer_norm``), on the same input:
the tensor the projections received (tested equal to the projections' captured input). The
LayerNorm runs on the tensors the measurement receives, so it also serves layers joined into
chunks (``capture.chunks``); padding rows, zero after joining, are excluded by the measures.
A layer whose attention norm is an ``nn.Identity`` (ModernBERT's first layer, which reads the
embeddings' own LayerNorm) hands on ``layer_input`` itself: that is what its projections read.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import Tensor, nn
from torch.nn import functional

from bertgeom.capture.adapters import ArchitectureAdapter, encoder_layers, submodule
from bertgeom.capture.hooks import CapturedLayer
from bertgeom.capture.measurement import BatchContext, Measurement, MeasurementOutputs

_NormParameters = tuple[tuple[int, ...], Tensor | None, Tensor | None, float]
"""A LayerNorm's ``normalized_shape``, weight, bias and eps, as ``F.layer_norm`` takes them."""


class AttentionNorms:
    """The parameters of each depth's attention LayerNorm (detached, on the model's device),
    applied by :meth:`apply` exactly as the layer applies them."""

    def __init__(self, encoder: nn.Module, adapter: ArchitectureAdapter) -> None:
        if adapter.attention_norm is None:
            raise ValueError("the architecture has no LayerNorm before its attention")
        self.parameters: list[_NormParameters | None] = []
        for layer in encoder_layers(encoder, adapter):
            norm = submodule(layer, adapter.attention_norm)
            if isinstance(norm, nn.Identity):
                self.parameters.append(None)
                continue
            if not isinstance(norm, nn.LayerNorm):
                raise TypeError(f"{adapter.attention_norm} is a {type(norm).__name__}")
            self.parameters.append(
                (
                    tuple(norm.normalized_shape),
                    None if norm.weight is None else norm.weight.detach(),
                    None if norm.bias is None else norm.bias.detach(),
                    float(norm.eps),
                )
            )

    def apply(self, layer: int, hidden: Tensor) -> Tensor:
        """``LN_layer(hidden)``: the input of layer ``layer``'s q/k/v projections (``hidden``
        itself where the layer has no norm there)."""
        parameters = self.parameters[layer]
        if parameters is None:
            return hidden
        shape, weight, bias, eps = parameters
        return functional.layer_norm(hidden, shape, weight, bias, eps)


class AttentionInputMeasurement:
    """A measurement that reads ``layer_input`` as the input of the attention projections:
    each captured layer reaches ``inner`` with ``layer_input = LN_l(layer_input)`` (see the
    module). Everything else (name, parameters, merging, writing) is ``inner``'s."""

    def __init__(self, inner: Measurement, norms: AttentionNorms) -> None:
        self.inner = inner
        self.norms = norms
        self.name = inner.name

    @property
    def parameters(self) -> Any:
        return self.inner.parameters

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        normed = self.norms.apply(captured.layer, captured.layer_input)
        self.inner.update(replace(captured, layer_input=normed), context)

    def merge(self, other: AttentionInputMeasurement) -> AttentionInputMeasurement:
        return AttentionInputMeasurement(self.inner.merge(other.inner), self.norms)

    def write(self, outputs: MeasurementOutputs) -> None:
        self.inner.write(outputs)

    def __getattr__(self, name: str) -> Any:
        # Only for attributes not found normally (``table``, ``result``, ...); never during
        # unpickling, before ``inner`` exists.
        if name.startswith("__") or "inner" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["inner"], name)
