"""Where each supported architecture keeps its layers and attention weights.

One small table maps a Hugging Face ``model_type`` to the attribute paths, relative to the
encoder (``model.base_model``), of the layer stack and, relative to a layer, of the
self-attention module, the query/key/value/output projections and the module whose output is
the multi-head output (after ``W_O``, the residual and the LayerNorm). Everything else in
``capture`` reads the model through this table, so a new BERT-shaped architecture is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

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

ADAPTERS = MappingProxyType(
    {
        "bert": _BERT_LIKE,
        "electra": _ELECTRA,
        "roberta": _ROBERTA_LIKE,
        "xlm-roberta": _ROBERTA_LIKE,
        "camembert": _ROBERTA_LIKE,
        "distilbert": _DISTILBERT,
    }
)
"""Supported ``model_type`` values (MiniLM checkpoints are ``bert``) and their adapters."""


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
    """The layers of ``encoder`` in order."""
    stack = submodule(encoder, adapter.layers)
    if not isinstance(stack, nn.ModuleList):
        raise TypeError(f"{adapter.layers} is not a list of layers")
    return list(stack)


def attention_weights(
    encoder: nn.Module, adapter: ArchitectureAdapter, n_heads: int
) -> list[AttentionWeights]:
    """The q/k/v/o weights of every layer (Hugging Face layout, detached), for
    :func:`bertgeom.measures.subspace_weights.weight_subspace_measures`."""
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
