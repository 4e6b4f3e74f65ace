"""What a head ablation run ablates (``docs/ablation.md``): the kinds ``--ablation`` takes, the
plan of ablations they make for a model, and the keys each key-masking ablation keeps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from bertgeom.capture.input_batch import InputBatch
from bertgeom.capture.loading import LoadedModel
from bertgeom.errors import InputError
from bertgeom.genomics.token_map import NO_POSITION
from bertgeom.measures.ablation import (
    BASELINE,
    MASK_MATCHED_KEYS,
    MASK_MUTATION_KEYS,
    MEAN,
    WHOLE_BLOCK,
    ZERO,
    Ablation,
    matched_keys,
    mutation_keys,
)

ABLATION_KINDS: tuple[str, ...] = ("zero", "mean", "keys")
"""What ``--ablation`` takes: ``zero`` and ``mean`` replace a head's output (every head and every
layer's whole attention block); ``keys`` masks the defining-mutation keys of one head (and of
all the layer's heads at once), and as many position-matched keys as a control (spike
classifiers only)."""

MATCHED_OFFSET = 24
"""Tokens between a masked mutation token and its position-matched control (24 tokens of
stride 9 are 216 nucleotides, 72 codons: the same neighbourhood, away from the mutation)."""


def ablation_plan(n_layers: int, n_heads: int, kinds: Sequence[str], spike: bool) -> list[Ablation]:
    """The baseline, then for each of ``kinds`` its ablations layer by layer: ``zero``/``mean``
    of every head and of the whole block (head -1); ``keys`` (when ``spike``) the mutation and
    the matched key masks of every head and of every head of the layer at once (head -1: heads
    can stand in for each other)."""
    unknown = sorted(set(kinds) - set(ABLATION_KINDS))
    if unknown:
        raise InputError(
            f"--ablation: unknown {', '.join(unknown)}; choose from {', '.join(ABLATION_KINDS)}"
        )
    plan = [BASELINE]
    for kind in ABLATION_KINDS:
        if kind not in kinds:
            continue
        for layer in range(n_layers):
            if kind == "keys":
                if spike:
                    for head in (*range(n_heads), WHOLE_BLOCK):
                        plan += [
                            Ablation(layer, head, MASK_MUTATION_KEYS),
                            Ablation(layer, head, MASK_MATCHED_KEYS),
                        ]
                continue
            mode = ZERO if kind == "zero" else MEAN
            plan += [Ablation(layer, head, mode) for head in range(n_heads)]
            plan.append(Ablation(layer, WHOLE_BLOCK, mode))
    return plan


def check_ablation(loaded: LoadedModel, kinds: Sequence[str]) -> list[Ablation]:
    """The plan of ``kinds`` for ``loaded``; :class:`InputError` when it cannot run (unknown
    kinds, a model without a classification head, an architecture whose adapter refuses it:
    ``ArchitectureAdapter.no_ablation``)."""
    plan = ablation_plan(loaded.n_layers, loaded.n_heads, kinds, loaded.kmers is not None)
    if loaded.class_names is None:
        raise InputError(
            f"{loaded.directory}: --ablation measures a classifier's calls; this model has no "
            "sequence-classification head"
        )
    if loaded.adapter.no_ablation is not None:
        raise InputError(
            f"{loaded.directory}: --ablation is not supported for {loaded.config.model_type} "
            f"models: {loaded.adapter.no_ablation}"
        )
    return plan


def key_masks(batch: InputBatch, attention_mask: Tensor, offset: int) -> dict[str, Tensor]:
    """``keep (batch, key)`` of the two key-masking modes: every key but the tokens covering a
    defining mutation the input carries, or but as many position-matched tokens ``offset``
    tokens away. Empty when the batch carries no spike layout."""
    layout = batch.spike
    if layout is None:
        return {}
    device = attention_mask.device
    span_lo, span_hi = layout.span_lo.long().to(device), layout.span_hi.long().to(device)
    starts = torch.tensor([m.start for m in layout.mutations], dtype=torch.long, device=device)
    ends = torch.tensor([m.end for m in layout.mutations], dtype=torch.long, device=device)
    masked = mutation_keys(span_lo, span_hi, starts, ends, layout.carries.to(device))
    placed = (span_lo != NO_POSITION) & attention_mask.bool()
    matched = matched_keys(masked, placed, offset)
    return {MASK_MUTATION_KEYS: ~masked, MASK_MATCHED_KEYS: ~matched}
