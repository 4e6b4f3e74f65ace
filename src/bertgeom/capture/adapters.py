"""Where each supported architecture keeps its layers and attention weights.

An :class:`ArchitectureAdapter` holds the attribute paths, relative to the encoder
(``model.base_model``), of the layer stack and, relative to a layer, of the self-attention module,
the query/key/value/output projections and the module whose output is the multi-head output (after
``W_O``, the residual and, in a post-LayerNorm layer, the LayerNorm); the functions below read a
model through it. The table of supported types is ``capture.architectures.ADAPTERS``: everything
else in ``capture`` reads the model through it, so a new BERT-shaped architecture is one entry; the
few ways an architecture departs from BERT's layer (a LayerNorm before attention, one layer's
weights run at every depth, attention probabilities returned only when asked, one fused q/k/v
projection) are fields of the entry, each documented where it is declared (``docs/models.md`` has
the table of what each measuring point is for each architecture).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from bertgeom.measures.subspace_weights import AttentionWeights

PROJECTIONS = ("query", "key", "value")
"""The input projections, in the order a fused ``Wqkv`` holds them (``fused_qkv``)."""


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Attribute paths of one architecture (dotted, ``getattr`` by ``getattr``).

    ``layers``: the ``nn.ModuleList`` of layers, from the encoder; the others are from a layer:
    ``self_attention`` (returns ``(output, attention_probabilities)``), ``query``, ``key``,
    ``value`` (input projections, ``nn.Linear`` (H dk, d)), ``output_projection`` (``W_O``,
    ``nn.Linear`` (d, H dk), whose *input* is the concatenated head outputs),
    ``multihead_output`` (module whose output is ``LayerNorm(W_O z + b_O + x)``).
    ``position_offset_from_pad``: the architecture numbers positions from ``pad_token_id + 1``
    (RoBERTa), so its longest input is ``max_position_embeddings - pad_token_id - 1``;
    ``padding_idx``: the padding index it numbers from whatever the config's ``pad_token_id``
    (MPNet's embeddings hard-code 1), ``None`` to read ``pad_token_id``.

    ``heads``: the top-level modules of transformers' task heads of the architecture (masked-LM,
    next-sentence, token and sequence classification, question answering) and its pooler.
    A checkpoint's weights under one of these names that the loaded model does not have (a
    masked-LM checkpoint loaded as the bare encoder) are ignored and listed in the manifest:
    the analysis never runs them. Any other weight that does not load refuses the model.
    ``optional_pooler``: the bare model takes ``add_pooling_layer``; without a classification
    head it is loaded without its pooler, which the analysis never runs either.
    ``never_run``: top-level modules of the bare model itself that the analysis never runs
    and that released checkpoints may lack (ESM's ``contact_head``, run only by
    ``predict_contacts``; SaProt's checkpoints have none). Their weights missing from the files
    do not refuse the model: they keep the values transformers initialises, which nothing
    reads, and the manifest lists them (``absent_weights``). Present, they load as any other.

    ``attention_norm``: pre-LayerNorm layers (ESM): the path of the LayerNorm the layer applies
    to its input before the q/k/v projections (``LN(x)`` is what ``W_q``, ``W_k``, ``W_v``
    read). Such a layer has no LayerNorm after the attention's residual: ``multihead_output``
    then names the module whose output is the residual stream after attention,
    ``x + W_O z + b_O``, and the data-based subspace measures are taken of ``LN(x)``, the input
    of the projections, not of the stream ``x`` (:mod:`bertgeom.capture.attention_input`).
    ``None`` for post-LayerNorm layers (BERT), whose projections read the stream itself.

    ``depths``: for architectures whose layer modules are not one ``nn.ModuleList`` run once
    each in order (ALBERT runs one layer's weights at every depth): the layer module run at
    each depth, in order, from the encoder; the same module may appear at several depths. The
    hooks then tell each call of a shared module its depth by counting calls within the
    forward pass (:class:`bertgeom.capture.hooks.LayerHooks`), and the weight-based measures
    report the shared weights at every depth that runs them. ``layers`` is then the path of
    the modules holding the distinct weights (for messages only).

    ``attention_flag``: the self-attention module returns its probabilities only when called
    with this argument true (MPNet's and DeBERTa's ``output_attentions``; by keyword or by
    position, as its caller passes it). The capture passes it true to that module alone (a
    forward pre-hook, :meth:`bertgeom.capture.hooks.LayerHooks.request_attention`): the
    encoder still runs without ``output_attentions``, so it keeps no layer's probabilities for
    the whole pass (MPNet's layer hands them up until the next layer returns: at most two
    layers' at once), and nothing is computed differently (the module multiplies the same
    tensor with ``V`` either way).

    ``fused_qkv``: ``query``, ``key`` and ``value`` name one ``nn.Linear`` (ModernBERT's
    ``Wqkv``, ``3 H dk`` outputs) whose output features are ``[q | k | v]``, each block
    ``H dk`` wide and head-major as an unfused projection (head h at ``h dk .. (h+1) dk`` of its
    block): ``ModernBertAttention`` splits it by ``view(..., 3, H, dk)``. Every reader of the
    projections takes its block (:func:`projection_weights`, :func:`projection_output`).

    ``multihead_output_is_input``: ``multihead_output`` names the module whose *input* is the
    multi-head output (ModernBERT's ``mlp_norm``, which reads ``x + W_O z``, a sum no module
    returns), not its output.

    ``pools_every_position``: a check of the config: whether the architecture's sequence
    classifier pools the last layer's output over every valid position (ModernBERT's
    ``classifier_pooling = "mean"``) instead of reading the first position alone (``[CLS]``,
    as BERT's pooler). The head ablation at the last layer then runs every position, not the
    first alone (``capture.ablation``). None: the first position alone.

    ``no_ablation``: why ``--ablation`` is refused for the architecture (None: it runs).
    ``refuse``: a check of the config for variants of the type that are not supported; it
    returns the reason (one line), or None.
    ``caveats``: what the manifest says about where this architecture's numbers depart from
    DESIGN's BERT (``LoadedModel.summary``; ``docs/models.md`` has the long form).
    """

    layers: str
    self_attention: str
    query: str
    key: str
    value: str
    output_projection: str
    multihead_output: str
    position_offset_from_pad: bool = False
    padding_idx: int | None = None
    heads: tuple[str, ...] = ()
    optional_pooler: bool = False
    never_run: tuple[str, ...] = ()
    attention_norm: str | None = None
    depths: Callable[[nn.Module], list[nn.Module]] | None = None
    attention_flag: str | None = None
    fused_qkv: bool = False
    multihead_output_is_input: bool = False
    pools_every_position: Callable[[Any], bool] | None = None
    no_ablation: str | None = None
    refuse: Callable[[Any], str | None] | None = None
    caveats: tuple[str, ...] = ()

    @property
    def shared_layers(self) -> bool:
        """Whether one layer module may run at several depths (``depths`` is given)."""
        return self.depths is not None


def submodule(root: nn.Module, path: str) -> nn.Module:
    """The module at dotted ``path`` below ``root`` (list items by index: ``layer.3``)."""
    module = root
    for name in path.split("."):
        module = getattr(module, name)
    if not isinstance(module, nn.Module):
        raise TypeError(f"{path} is not a module of {type(root).__name__}")
    return module


def linear(root: nn.Module, path: str) -> nn.Linear:
    """The ``nn.Linear`` at dotted ``path`` below ``root``."""
    module = submodule(root, path)
    if not isinstance(module, nn.Linear):
        raise TypeError(f"{path} is a {type(module).__name__}, expected a Linear projection")
    return module


def encoder_layers(encoder: nn.Module, adapter: ArchitectureAdapter) -> list[nn.Module]:
    """The layer module run at each depth of ``encoder``, in order (one per depth: the same
    module at several depths where the architecture shares a layer's weights across depth)."""
    if adapter.depths is not None:
        return adapter.depths(encoder)
    stack = submodule(encoder, adapter.layers)
    if not isinstance(stack, nn.ModuleList):
        raise TypeError(f"{adapter.layers} is not a list of layers")
    return list(stack)


def attention_weights(
    encoder: nn.Module, adapter: ArchitectureAdapter, n_heads: int
) -> list[AttentionWeights]:
    """The q/k/v/o weights of every layer (Hugging Face layout, detached), for
    :func:`bertgeom.measures.subspace_weights.weight_subspace_measures`: one entry per depth,
    so shared weights (ALBERT) are reported at every depth that runs them. In a
    pre-LayerNorm layer these are the weights as they act on ``LN(x)`` (the LayerNorm's scale
    is not folded in)."""
    return [
        AttentionWeights(
            weight_q=projection_weights(layer, adapter, "query")[0],
            weight_k=projection_weights(layer, adapter, "key")[0],
            weight_v=projection_weights(layer, adapter, "value")[0],
            weight_o=linear(layer, adapter.output_projection).weight.detach(),
            n_heads=n_heads,
        )
        for layer in encoder_layers(encoder, adapter)
    ]


def _block(adapter: ArchitectureAdapter, which: str, width: int) -> slice:
    """The features of ``which`` (one of :data:`PROJECTIONS`) among a projection's ``width``
    outputs: all of them, or its third of a fused ``[q | k | v]``."""
    if which not in PROJECTIONS:
        raise ValueError(f"{which!r} is not one of {PROJECTIONS}")
    if not adapter.fused_qkv:
        return slice(None)
    if width % 3:
        raise ValueError(f"a fused q/k/v projection with {width} outputs (not 3 H dk)")
    index, size = PROJECTIONS.index(which), width // 3
    return slice(index * size, (index + 1) * size)


def projection_weights(
    layer: nn.Module, adapter: ArchitectureAdapter, which: str
) -> tuple[Tensor, Tensor | None]:
    """``(W, b)`` of ``layer``'s ``which`` projection (``"query"``, ``"key"``, ``"value"``),
    detached, ``W (H dk, d)`` in Hugging Face's layout (b None where absent): the Linear's own,
    or its rows of a fused ``Wqkv`` (``fused_qkv``; views, not copies)."""
    module = linear(layer, getattr(adapter, which))
    rows = _block(adapter, which, module.out_features)
    bias = None if module.bias is None else module.bias.detach()[rows]
    return module.weight.detach()[rows], bias


def projection_output(adapter: ArchitectureAdapter, which: str, output: Tensor) -> Tensor:
    """The ``which`` projection's part of its module's ``output (..., features)``: the whole
    output, or its block of a fused ``[q | k | v]`` (a view)."""
    return output[..., _block(adapter, which, output.shape[-1])]
