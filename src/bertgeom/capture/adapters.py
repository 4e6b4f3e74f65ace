"""Where each supported architecture keeps its layers and attention weights.

One small table maps a Hugging Face ``model_type`` to the attribute paths, relative to the
encoder (``model.base_model``), of the layer stack and, relative to a layer, of the
self-attention module, the query/key/value/output projections and the module whose output is
the multi-head output (after ``W_O``, the residual and, in a post-LayerNorm layer, the
LayerNorm). Everything else in ``capture`` reads the model through this table, so a new
BERT-shaped architecture is one entry; the few ways an architecture departs from BERT's layer
(a LayerNorm before attention, one layer's weights run at every depth, attention probabilities
returned only when asked, one fused q/k/v projection) are fields of the entry, each documented
where it is declared (``docs/models.md`` has the table of what each measuring point is for each
architecture).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
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
    heads: tuple[str, ...] = ()
    optional_pooler: bool = False
    attention_norm: str | None = None
    depths: Callable[[nn.Module], list[nn.Module]] | None = None
    attention_flag: str | None = None
    fused_qkv: bool = False
    multihead_output_is_input: bool = False
    no_ablation: str | None = None
    refuse: Callable[[Any], str | None] | None = None
    caveats: tuple[str, ...] = ()

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
    caveats=(
        "pre-LayerNorm layers: multihead_output is the residual stream after attention, "
        "x + W_O z + b_O (no LayerNorm follows it); the data-based subspace measures are of "
        "LN(x), the input of the projections",
        "the last layer's layer_output is before the encoder's final LayerNorm "
        "(emb_layer_norm_after, the last of transformers' hidden_states)",
        "rotary positions (ESM-2): queries and keys are captured before the rotation; the "
        "weight-based M_h = W_q^T W_k and the selection directions are the content part at "
        "relative offset 0",
    ),
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
    # The ablated passes replay the layers before the ablated one by swapping them out of the
    # layer list, which a layer module run at every depth does not allow.
    no_ablation="their layers share one module's weights across depth",
    caveats=(
        "one layer's weights run at every depth: each depth is reported as a layer, and the "
        "weight-based subspace measures repeat the shared weights at every depth",
        "embedding_size != hidden_size: layer 0's input is after embedding_hidden_mapping_in",
    ),
)

_MPNET = ArchitectureAdapter(
    layers="encoder.layer",
    # MPNetSelfAttention holds q/k/v and W_O (o); it returns (W_O z + b_O, probabilities), the
    # probabilities only with output_attentions (passed by keyword by MPNetAttention).
    self_attention="attention.attn",
    query="attention.attn.q",
    key="attention.attn.k",
    value="attention.attn.v",
    output_projection="attention.attn.o",
    # MPNetAttention: LayerNorm(dropout(W_O z + b_O) + x), post-LayerNorm as BERT.
    multihead_output="attention",
    # MPNetEmbeddings numbers positions from padding_idx + 1 (padding_idx is 1, as pad_token_id).
    position_offset_from_pad=True,
    heads=("lm_head", "classifier", "qa_outputs", "pooler"),
    optional_pooler=True,
    attention_flag="output_attentions",
    no_ablation="the ablated passes are not yet proven for them",
    caveats=(
        "a learned relative position bias (one per head and distance bucket, shared by all "
        "layers) is added to the scores: the captured probabilities include it, the "
        "weight-based M_h = W_q^T W_k and the data-based query/key subspace measures cover "
        "the content term q.k / sqrt(dk) only",
    ),
)


def _deberta_refusal(config: Any) -> str | None:
    """DeBERTa-v2 xlarge/xxlarge add a convolution to the first layer's output outside the
    layer (``ConvLayer``, ``conv_kernel_size > 0``): the stream entering layer 1 is then no
    layer's output, which no measuring point covers."""
    kernel = int(getattr(config, "conv_kernel_size", 0) or 0)
    if kernel > 0:
        return (
            f"DeBERTa-v2 models with a convolution after the first layer (conv_kernel_size "
            f"{kernel}) are not supported: the stream entering layer 1 is not the output of "
            "layer 0 (DeBERTa-v3 has none)"
        )
    return None


_DEBERTA_V2 = ArchitectureAdapter(
    layers="encoder.layer",
    # DisentangledSelfAttention returns (z, probabilities), the probabilities only with
    # output_attentions (passed by position by DebertaV2Attention).
    self_attention="attention.self",
    query="attention.self.query_proj",
    key="attention.self.key_proj",
    value="attention.self.value_proj",
    output_projection="attention.output.dense",
    # DebertaV2SelfOutput: LayerNorm(dropout(W_O z + b_O) + x), post-LayerNorm as BERT.
    multihead_output="attention.output",
    heads=("cls", "lm_predictions", "mask_predictions", "pooler", "classifier", "qa_outputs"),
    attention_flag="output_attentions",
    no_ablation="the ablated passes are not yet proven for them",
    refuse=_deberta_refusal,
    caveats=(
        "disentangled attention: the scores add content-to-position and position-to-content "
        "terms (relative position embeddings) to the content-to-content term, all over "
        "sqrt(dk * scale_factor); the captured probabilities are the model's own, but the "
        "weight-based M_h = W_q^T W_k and the data-based query/key subspace measures (of the "
        "query_proj and key_proj outputs) cover the content-to-content term only",
    ),
)

_MODERNBERT = ArchitectureAdapter(
    layers="layers",
    # ModernBertAttention: Wqkv, rotary, eager attention, Wo; returns (W_O z, probabilities).
    self_attention="attn",
    query="attn.Wqkv",
    key="attn.Wqkv",
    value="attn.Wqkv",
    output_projection="attn.Wo",
    # The layer adds W_O z to x itself; mlp_norm reads that sum.
    multihead_output="mlp_norm",
    multihead_output_is_input=True,
    heads=("head", "decoder", "classifier"),
    # attn_norm: LayerNorm before the attention, Identity in the first layer (after the
    # embeddings' own LayerNorm).
    attention_norm="attn_norm",
    fused_qkv=True,
    no_ablation="the ablated passes are not yet proven for them (a mean-pooling classifier "
    "reads every position, not [CLS] alone)",
    caveats=(
        "pre-LayerNorm layers (layer 0 has none: its attention reads the embeddings' output): "
        "multihead_output is the residual stream after attention, x + W_O z; the data-based "
        "subspace measures are of LN(x), the input of the projections",
        "the fused Wqkv is split as [q | k | v], H dk outputs each, head-major",
        "alternating global and local layers: a local (sliding_attention) layer's "
        "probabilities are zero beyond local_attention / 2 positions on either side, and its "
        "gates are of that banded matrix",
        "rotary positions: queries and keys are captured before the rotation; the "
        "weight-based M_h = W_q^T W_k and the selection directions are the content part at "
        "relative offset 0",
        "the last layer's layer_output is before the final LayerNorm (final_norm, the last of "
        "transformers' hidden_states)",
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
        "esm": _ESM,
        "albert": _ALBERT,
        "mpnet": _MPNET,
        "deberta-v2": _DEBERTA_V2,
        "modernbert": _MODERNBERT,
    }
)
"""Supported ``model_type`` values (MiniLM checkpoints are ``bert``; ESM-2 and Nucleotide
Transformer v1 checkpoints are ``esm``; DeBERTa-v3 checkpoints are ``deberta-v2``) and their
adapters."""


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
