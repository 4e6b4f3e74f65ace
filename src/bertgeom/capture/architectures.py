"""The table of supported architectures: each Hugging Face ``model_type`` and its
:class:`~bertgeom.capture.adapters.ArchitectureAdapter` (where the layers, the attention and
its projections live, and how the architecture departs from BERT's layer). A new architecture
is an entry here (``docs/architecture.md``; ``docs/models.md`` has what each measuring point
is for each).
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

from torch import nn

from bertgeom.capture.adapters import ArchitectureAdapter, submodule

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
_ROBERTA_LIKE = replace(
    _BERT_LIKE,
    position_offset_from_pad=True,
    heads=("lm_head", "classifier", "qa_outputs", "pooler"),
)
_ELECTRA = replace(
    _BERT_LIKE,
    heads=(
        "discriminator_predictions",
        "generator_predictions",
        "generator_lm_head",
        "classifier",
        "qa_outputs",
        "sequence_summary",
    ),
    optional_pooler=False,
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

_ESM = replace(
    _BERT_LIKE,
    # BERT's module paths; EsmSelfOutput (attention.output) is dense, dropout, + the layer
    # input: x + W_O z + b_O (no LayerNorm).
    # Positions are numbered from pad_token_id + 1, as RoBERTa's (absolute positions of
    # Nucleotide Transformer v1; ESM-2's rotary positions count the same way).
    position_offset_from_pad=True,
    # EsmModel itself holds the contact head (run only by predict_contacts, never here): its
    # weights load with the encoder when the file has them (ESM-2's do, SaProt's do not);
    # lm_head is the masked-LM head.
    heads=("lm_head", "classifier", "pooler"),
    never_run=("contact_head",),
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
    # MPNetEmbeddings numbers positions from padding_idx + 1, its padding_idx fixed at 1
    # whatever the config's pad_token_id.
    position_offset_from_pad=True,
    padding_idx=1,
    heads=("lm_head", "classifier", "qa_outputs", "pooler"),
    optional_pooler=True,
    attention_flag="output_attentions",
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


_DEBERTA_V2 = replace(
    _BERT_LIKE,
    # DisentangledSelfAttention returns (z, probabilities), the probabilities only with
    # output_attentions (passed by position by DebertaV2Attention); DebertaV2SelfOutput is
    # LayerNorm(dropout(W_O z + b_O) + x), post-LayerNorm as BERT.
    query="attention.self.query_proj",
    key="attention.self.key_proj",
    value="attention.self.value_proj",
    optional_pooler=False,
    heads=("cls", "lm_predictions", "mask_predictions", "pooler", "classifier", "qa_outputs"),
    attention_flag="output_attentions",
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
    # ModernBertForSequenceClassification reads [CLS] ("cls") or the mean over the valid
    # positions ("mean") of the final_norm'd last layer.
    pools_every_position=lambda config: getattr(config, "classifier_pooling", "cls") == "mean",
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
