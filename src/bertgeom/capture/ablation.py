"""Running a classifier with one head ablated at a time (``docs/ablation.md``): the passes over
the inputs and what they count.

Per batch the clean pass runs once and records each layer's output; an ablation at layer ``l``
then *replays* layers ``0 .. l-1`` from that record (they cannot differ) and computes only layers
``l ..``. The mean replacement needs the mean over all the data first, so it takes a second
pass over the inputs. What is ablated is ``capture.ablation_plan``'s, how a head's output is
replaced ``capture.head_editor``'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bertgeom.capture.ablation_plan import (
    MATCHED_OFFSET,
    check_ablation,
    key_masks,
)
from bertgeom.capture.head_editor import HeadEditor
from bertgeom.capture.input_batch import InputBatch
from bertgeom.capture.loading import LoadedModel
from bertgeom.measures.ablation import (
    BASELINE,
    MASK_MATCHED_KEYS,
    MASK_MUTATION_KEYS,
    MEAN,
    Ablation,
    AblationAccumulator,
)


@contextmanager
def attention_kernel(model: nn.Module, kernel: str) -> Iterator[None]:
    """Within the block ``model`` runs the ``kernel`` attention (e.g. ``sdpa``, about twice as
    fast as eager on a CPU), where Hugging Face can switch it; eager again afterwards."""
    switch = getattr(model, "set_attn_implementation", None)
    previous = getattr(getattr(model, "config", None), "_attn_implementation", None)
    try:
        if switch is not None and previous is not None:
            switch(kernel)
    except (ValueError, ImportError, NotImplementedError):
        switch = None
    try:
        yield
    finally:
        if switch is not None and previous is not None:
            switch(previous)


@dataclass
class AblationPart:
    """One pass of an ablation over some inputs, mergeable with the same pass over others:
    the accumulator, the labelled and unlabelled inputs, and (first pass, with ``mean``) the
    sums of each head's outputs and the token counts behind the means, ``(layer, head * dk)``
    and ``(layer,)`` float64."""

    accumulator: AblationAccumulator
    labelled: int = 0
    unlabelled: int = 0
    sums: Tensor | None = None
    tokens: Tensor | None = None

    def merge(self, other: AblationPart) -> AblationPart:
        merged = AblationPart(
            self.accumulator.merge(other.accumulator),
            self.labelled + other.labelled,
            self.unlabelled + other.unlabelled,
        )
        if self.sums is not None and other.sums is not None:
            merged.sums = self.sums + other.sums
        if self.tokens is not None and other.tokens is not None:
            merged.tokens = self.tokens + other.tokens
        return merged

    def means(self) -> Tensor:
        """``(layer, head * dk)``: each head's output averaged over every valid token seen."""
        if self.sums is None or self.tokens is None:
            raise ValueError("the means come from a first pass run with 'mean' among the kinds")
        return (self.sums / self.tokens.clamp_min(1)[:, None]).float()


@dataclass
class AblationRun:
    """The accumulator, the inputs counted and skipped (no known class), and the seconds."""

    accumulator: AblationAccumulator
    labelled: int = 0
    unlabelled: int = 0
    seconds: float = 0.0
    passes: int = 1


def ablation_pass(
    loaded: LoadedModel,
    batches: Iterable[InputBatch],
    kinds: Sequence[str],
    second: bool = False,
    means: Tensor | None = None,
    *,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] | None = None,
    matched_offset: int = MATCHED_OFFSET,
) -> AblationPart:
    """One pass of :func:`run_ablation` over ``batches``: the first (every ablation but the
    mean replacements; with ``mean`` among the kinds it also sums the head outputs), or the
    ``second`` (the mean replacements, with the ``means`` of the first pass over all inputs).
    Passes over parts of the inputs merge (``AblationPart.merge``): this is what shards."""
    plan = check_ablation(loaded, kinds)
    assert loaded.class_names is not None  # checked above
    part = AblationPart(AblationAccumulator(plan, loaded.class_names))
    ablations = [a for a in plan if (a.mode == MEAN) == second]
    if second and means is None:
        raise ValueError("the second pass needs the means of the first")
    if not ablations:
        return part
    class_index = {name: i for i, name in enumerate(loaded.class_names)}
    keep_attention = any(a.mode in (MASK_MUTATION_KEYS, MASK_MATCHED_KEYS) for a in ablations)
    with torch.inference_mode(), HeadEditor(loaded, keep_attention) as editor:
        editor.accumulating = not second and MEAN in {a.mode for a in plan}
        editor.fixed_means = means
        for batch in batches:
            labels = batch.labels or ()
            rows = [i for i, label in enumerate(labels) if label in class_index]
            true = torch.tensor([class_index[labels[i]] for i in rows], dtype=torch.long)
            part.labelled += len(rows)
            part.unlabelled += len(batch) - len(rows)
            _ablate_batch(
                loaded, editor, batch, rows, true, ablations, part, device, matched_offset
            )
            if on_batch is not None:
                on_batch(len(batch))
        if editor.accumulating:
            part.sums, part.tokens = editor.sums, editor.tokens
    return part


def run_ablation(
    loaded: LoadedModel,
    batches: Callable[[], Iterable[InputBatch]],
    kinds: Sequence[str] = ("zero",),
    *,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] | None = None,
    matched_offset: int = MATCHED_OFFSET,
) -> AblationRun:
    """Every ablation of :func:`ablation_plan` on the labelled inputs of ``batches()`` (called
    once per pass: twice with ``mean``). ``on_batch(n)`` after each batch of each pass."""
    started = time.perf_counter()
    options: dict[str, Any] = {
        "device": device,
        "on_batch": on_batch,
        "matched_offset": matched_offset,
    }
    first = ablation_pass(loaded, batches(), kinds, **options)
    run = AblationRun(first.accumulator, first.labelled, first.unlabelled)
    if MEAN in {a.mode for a in first.accumulator.ablations}:
        second = ablation_pass(loaded, batches(), kinds, True, first.means(), **options)
        run.accumulator, run.passes = run.accumulator.merge(second.accumulator), 2
    run.seconds = time.perf_counter() - started
    return run


def _ablate_batch(
    loaded: LoadedModel,
    editor: HeadEditor,
    batch: InputBatch,
    rows: list[int],
    true: Tensor,
    ablations: Sequence[Ablation],
    part: AblationPart,
    device: torch.device | str,
    matched_offset: int,
) -> None:
    """The clean pass (eager, recording; the baseline when it is in ``ablations``), then each
    ablation on the labelled ``rows`` of ``batch`` (``true``: their class indices).

    An ablation at layer l replays layers 0 .. l-1; at the last layer only ``[CLS]`` (position
    0, which the classification head reads) can change the logits, and every layer before it
    is replayed, so that pass runs on the first position alone (not where the classifier
    pools every position: ``ArchitectureAdapter.pools_every_position``).
    """
    encoding = {name: tensor.to(device) for name, tensor in batch.encoding.items()}
    editor.attention_mask = encoding["attention_mask"]
    editor.ablation, editor.recording = BASELINE, True
    logits = loaded.model(**encoding).logits
    editor.recording = False
    if BASELINE in ablations and rows:
        part.accumulator.update(BASELINE, true, logits[rows])
    if not rows:
        return
    # The key masks (a Python loop per input for the matched keys) only when a pass uses them.
    keeps = (
        key_masks(batch, encoding["attention_mask"], matched_offset)
        if editor.keep_attention
        else {}
    )
    first_position = {name: tensor[:, :1] for name, tensor in encoding.items()}
    # The last layer on the first position alone: what it computes after the substituted Z
    # (W_O, residual, LayerNorm, feed-forward) is position by position, so [CLS] is exact;
    # a classifier pooling every position needs them all.
    pools = loaded.adapter.pools_every_position
    first_only = pools is None or not pools(loaded.config)
    with attention_kernel(loaded.model, "sdpa"):
        for ablation in ablations:
            if ablation == BASELINE:
                continue
            editor.ablation = ablation
            editor.keep = keeps.get(ablation.mode)
            last = first_only and ablation.layer == loaded.n_layers - 1
            with editor.replaying(ablation.layer, 1 if last else None):
                logits = loaded.model(**(first_position if last else encoding)).logits
            part.accumulator.update(ablation, true, logits[rows])
    editor.clear()
