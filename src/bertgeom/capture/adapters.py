"""Where each supported architecture keeps its layers and attention weights.

One small table maps a Hugging Face ``model_type`` to the attribute paths, relative to the
encoder (``model.base_model``), of the layer stack and, relative to a layer, of the
self-attention module, the query/key/value/output projections and the module whose output is
the multi-head output (after ``W_O``, the residual and, in a post-LayerNorm layer, the
LayerNorm). Everything else in ``capture`` reads the model through this table, so a new
BERT-shaped architecture is one entry; the few ways an architecture departs from BERT's layer
(a LayerNorm before attention, one layer's weights run at every depth) are fields of the entry,
each documented where it is declared (``docs/models.md`` has the table of what each measuring
point is for each architecture).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import nn

from bertgeom.measures.subspace_weights import AttentionWeights


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Attribute paths of one architecture (dotted, ``getattr`` by ``getattr``).

    ``layers``: the ``nn.ModuleList`` of layers, from the encoder; the others are from a layer:
    ``self_attention`` (returns ``(output, attention_probabilities)``), ``query``, ``key``,
    ``value`` (input projections, ``nn.Linear`` (H dk, d)), ``output_projection`` (``W_O``,
    ``nn.Linear`` (d, H dk), whose *input* is the concatenated head outputs),
    ``multihead_output`` (module whose output is ``LayerNorm(W_O z + b_O + x)``).
    ``position_offset_from_pad``: the architecture numbers positions from ``pad_token_id + 1``
    (RoBERTa), so its longest input is ``max_position_embeddings - pad_token_id - 1``.

    ``heads``: the top-level modules of transformers' task heads of the architecture (masked-LM,
    next-sentence, token and sequence classification, question answering) and its pooler.
    A checkpoint's weights under one of these names that the loaded model does not have (a
    masked-LM checkpoint loaded as the bare encoder) are ignored and listed in the manifest:
    the analysis never runs them. Any other weight that does not load refuses the model.
    ``optional_pooler``: the bare model takes ``add_pooling_layer``; without a classification
    head it is loaded without its pooler, which the analysis never runs either.

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
    """

    layers: str
    self_attention: str
    query: str
    key: str
    value: str
    output_projection: str
    multihead_output: str
    position_offset_from_pad: bool = False
    heads: tuple[str, ...] = ()
    optional_pooler: bool = False
    attention_norm: str | None = None
    depths: Callable[[nn.Module], list[nn.Module]] | None = None

    @property
    def shared_layers(self) -> bool:
        """Whether one layer module may run at several depths (``depths`` is given)."""
        return self.depths is not None


_BERT_LIKE = ArchitectureAdapter(
    layers="encoder.layer",
    self_attention="attention.self",
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    output_projection="attention.output.dense",
    multihead_output="attention.output",
    heads=("cls", "classifier", "qa_outputs", "pooler"),
    optional_pooler=True,
)
_ROBERTA_LIKE = ArchitectureAdapter(
    **{
        **_BERT_LIKE.__dict__,
        "position_offset_from_pad": True,
        "heads": ("lm_head", "classifier", "qa_outputs", "pooler"),
    }
)
_ELECTRA = ArchitectureAdapter(
    **{
        **_BERT_LIKE.__dict__,
        "heads": (
            "discriminator_predictions",
            "generator_predictions",
            "generator_lm_head",
            "classifier",
            "qa_outputs",
            "sequence_summary",
        ),
        "optional_pooler": False,
    }
)
_DISTILBERT = ArchitectureAdapter(
    layers="transformer.layer",
    self_attention="attention",
    query="attention.q_lin",
    key="attention.k_lin",
    value="attention.v_lin",
    output_projection="attention.out_lin",
    multihead_output="sa_layer_norm",
    heads=(
        "vocab_transform",
        "vocab_layer_norm",
        "vocab_projector",
        "pre_classifier",
        "classifier",
        "qa_outputs",
    ),
)

_ESM = ArchitectureAdapter(
    layers="encoder.layer",
    self_attention="attention.self",
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    output_projection="attention.output.dense",
    # EsmSelfOutput: dense, dropout, + the layer input: x + W_O z + b_O (no LayerNorm).
    multihead_output="attention.output",
    # Positions are numbered from pad_token_id + 1, as RoBERTa's (absolute positions of
    # Nucleotide Transformer v1; ESM-2's rotary positions count the same way).
    position_offset_from_pad=True,
    # EsmModel itself holds the contact head (run only by predict_contacts, never here), so its
    # weights load with the encoder; lm_head is the masked-LM head.
    heads=("lm_head", "classifier", "pooler"),
    optional_pooler=True,
    attention_norm="attention.LayerNorm",
)


def _albert_depths(encoder: nn.Module) -> list[nn.Module]:
    """The ``AlbertLayer`` run at each depth, in the order of ``AlbertTransformer.forward``:
    ``num_hidden_layers`` applications of a layer group (depth i runs group
    ``i * num_hidden_groups // num_hidden_layers``), each running its ``inner_group_num``
    layers in order. Released ALBERT checkpoints have one group of one layer: the same module
    at every depth."""
    config: Any = encoder.config
    groups = submodule(encoder, "encoder.albert_layer_groups")
    if not isinstance(groups, nn.ModuleList):
        raise TypeError("encoder.albert_layer_groups is not a list of layer groups")
    n_layers, n_groups = int(config.num_hidden_layers), int(config.num_hidden_groups)
    depths: list[nn.Module] = []
    for depth in range(n_layers):
        group = groups[int(depth / (n_layers / n_groups))]
        inner = submodule(group, "albert_layers")
        if not isinstance(inner, nn.ModuleList):
            raise TypeError("albert_layers is not a list of layers")
        depths.extend(inner)
    return depths


_ALBERT = ArchitectureAdapter(
    layers="encoder.albert_layer_groups",
    # AlbertAttention holds q/k/v, W_O (dense) and the LayerNorm; it returns
    # (LayerNorm(x + W_O z + b_O), probabilities): self-attention and multi-head output at once.
    self_attention="attention",
    query="attention.query",
    key="attention.key",
    value="attention.value",
    output_projection="attention.dense",
    multihead_output="attention",
    heads=("predictions", "sop_classifier", "classifier", "qa_outputs", "pooler"),
    optional_pooler=True,
    depths=_albert_depths,
)

ADAPTERS = MappingProxyType(
    {
        "bert": _BERT_LIKE,
        "electra": _ELECTRA,
        "roberta": _ROBERTA_LIKE,
        "xlm-roberta": _ROBERTA_LIKE,
        "camembert": _ROBERTA_LIKE,
        "distilbert": _DISTILBERT,
        "esm": _ESM,
        "albert": _ALBERT,
    }
)
"""Supported ``model_type`` values (MiniLM checkpoints are ``bert``; ESM-2 and Nucleotide
Transformer v1 checkpoints are ``esm``) and their adapters."""


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
            weight_q=linear(layer, adapter.query).weight.detach(),
            weight_k=linear(layer, adapter.key).weight.detach(),
            weight_v=linear(layer, adapter.value).weight.detach(),
            weight_o=linear(layer, adapter.output_projection).weight.detach(),
            n_heads=n_heads,
        )
        for layer in encoder_layers(encoder, adapter)
    ]
