"""Running a classifier with one head ablated at a time (``docs/ablation.md``).

Every edit happens at one hook point, the input of the output projection ``W_O`` (the
concatenated head outputs ``Z``, ``(batch, seq, head * dk)``), so the same code serves every
architecture of ``capture.adapters`` and every replacement of ``measures.ablation``. Per batch
the clean pass runs once and records each layer's output; an ablation at layer ``l`` then
*replays* layers ``0 .. l-1`` from that record (they cannot differ) and computes only layers
``l ..``. The mean replacement needs the mean over all the data first, so it takes a second
pass over the inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from bertgeom.capture.adapters import encoder_layers, submodule
from bertgeom.capture.inputs import InputBatch
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
    AblationAccumulator,
    key_masked,
    matched_keys,
    mean_replaced,
    mutation_keys,
    zeroed,
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
    kinds, a model without a classification head)."""
    plan = ablation_plan(loaded.n_layers, loaded.n_heads, kinds, loaded.kmers is not None)
    if loaded.class_names is None:
        raise InputError(
            f"{loaded.directory}: --ablation measures a classifier's calls; this model has no "
            "sequence-classification head"
        )
    return plan


class _Replay(nn.Module):
    """Stands in for a layer whose output for this batch is already known."""

    def __init__(self, output: Any) -> None:
        super().__init__()
        self.output = output

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.output


def _first_positions(value: Any, length: int) -> Any:
    """A layer's output (a tensor, or a tuple led by one) cut to its first ``length`` positions."""
    if isinstance(value, Tensor):
        return value[:, :length]
    return (value[0][:, :length], *value[1:])


class HeadEditor:
    """Context manager holding the hooks of an ablation run on ``loaded``'s layers.

    The clean pass (``recording``) keeps, per layer, the output (for :meth:`replaying`), the
    head outputs ``Z`` entering ``W_O`` and, with ``keep_attention``, the attention
    probabilities and value vectors; with ``accumulating`` it also adds the head outputs of
    valid tokens (``attention_mask``) to the sums behind :meth:`means`. In an ablated pass
    (``ablation`` set; ``keep (batch, key)`` for key masking) the hook on ``W_O``'s input of the
    ablated layer substitutes the recorded ``Z`` with the ablated heads replaced: the layers
    before it cannot differ, so nothing of the ablated pass itself is needed there, and the
    pass may run on a faster attention kernel.
    """

    def __init__(self, loaded: LoadedModel, keep_attention: bool = False) -> None:
        self.loaded = loaded
        self.layers = encoder_layers(loaded.encoder, loaded.adapter)
        self.head_size = loaded.head_size
        self.keep_attention = keep_attention
        self.ablation: Ablation = BASELINE
        self.keep: Tensor | None = None
        self.attention_mask: Tensor | None = None
        self.recording = False
        self.accumulating = False
        self.outputs: dict[int, Any] = {}
        self.head_outputs: dict[int, Tensor] = {}
        self.attention: dict[int, Tensor] = {}
        self.values: dict[int, Tensor] = {}
        width = loaded.n_heads * loaded.head_size
        self.sums = torch.zeros(len(self.layers), width, dtype=torch.float64)
        self.tokens = torch.zeros(len(self.layers), dtype=torch.float64)
        self.fixed_means: Tensor | None = None
        self._means: Tensor | None = None
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> HeadEditor:
        adapter = self.loaded.adapter
        for index, layer in enumerate(self.layers):
            self._handles += [
                submodule(layer, adapter.output_projection).register_forward_pre_hook(
                    self._edit_hook(index)
                ),
                layer.register_forward_hook(self._record(index, self.outputs)),
            ]
            if self.keep_attention:
                attention = submodule(layer, adapter.self_attention)
                value = submodule(layer, adapter.value)
                self._handles += [
                    attention.register_forward_hook(self._record(index, self.attention, 1)),
                    value.register_forward_hook(self._record(index, self.values)),
                ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def means(self) -> Tensor:
        """``(layer, head * dk)``: ``fixed_means`` when set (the means over every shard),
        else each head's output averaged over every valid token this editor has seen."""
        if self.fixed_means is not None:
            return self.fixed_means
        if self._means is None:
            self._means = (self.sums / self.tokens.clamp_min(1)[:, None]).float()
        return self._means

    def _record(
        self, index: int, into: dict[int, Any], item: int | None = None
    ) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if self.recording:
                into[index] = output if item is None else output[item]

        return hook

    def _edit_hook(self, index: int) -> Callable[..., tuple[Any, ...] | None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            z = args[0]  # (batch, seq, head * dk)
            if self.recording:
                self.head_outputs[index] = z
                if self.accumulating and self.attention_mask is not None:
                    valid = self.attention_mask.to(z.dtype)
                    self.sums[index] += torch.einsum("bs,bsw->w", valid, z).double().cpu()
                    self.tokens[index] += float(valid.sum())
            if self.ablation.layer != index:
                return None
            return (self._edited(index, z.shape[1]).to(z.dtype), *args[1:])

        return hook

    def _edited(self, index: int, length: int) -> Tensor:
        """The recorded ``Z`` of layer ``index`` (first ``length`` queries), ablated."""
        ablation, size = self.ablation, self.head_size
        heads = range(self.loaded.n_heads) if ablation.head == WHOLE_BLOCK else [ablation.head]
        z = self.head_outputs[index][:, :length].clone()
        for head in heads:
            part = slice(head * size, (head + 1) * size)
            if ablation.mode == ZERO:
                z[..., part] = zeroed(z[..., part])
            elif ablation.mode == MEAN:
                z[..., part] = mean_replaced(z[..., part], self.means()[index, part].to(z.device))
            else:
                assert self.keep is not None, "key masking needs keep"
                attention = self.attention[index][:, head, :length]
                values = self.values[index][..., part]
                z[..., part] = key_masked(attention, values, self.keep).to(z.dtype)
        return z

    @contextmanager
    def replaying(self, upto: int, length: int | None = None) -> Iterator[None]:
        """Within the block, layers ``0 .. upto-1`` return their recorded outputs (cut to the
        first ``length`` positions when given)."""
        stack = submodule(self.loaded.encoder, self.loaded.adapter.layers)
        assert isinstance(stack, nn.ModuleList)
        originals = [stack[i] for i in range(upto)]
        try:
            for i in range(upto):
                output = self.outputs[i]
                stack[i] = _Replay(output if length is None else _first_positions(output, length))
            yield
        finally:
            for i, original in enumerate(originals):
                stack[i] = original


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
    is replayed, so that pass runs on the first position alone.
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
        _key_masks(batch, encoding["attention_mask"], matched_offset)
        if editor.keep_attention
        else {}
    )
    first_position = {name: tensor[:, :1] for name, tensor in encoding.items()}
    last_layer = loaded.n_layers - 1
    with attention_kernel(loaded.model, "sdpa"):
        for ablation in ablations:
            if ablation == BASELINE:
                continue
            editor.ablation = ablation
            editor.keep = keeps.get(ablation.mode)
            last = ablation.layer == last_layer
            with editor.replaying(ablation.layer, 1 if last else None):
                logits = loaded.model(**(first_position if last else encoding)).logits
            part.accumulator.update(ablation, true, logits[rows])
    editor.ablation, editor.keep = BASELINE, None
    editor.outputs.clear()
    editor.head_outputs.clear()
    editor.attention.clear()
    editor.values.clear()


def _key_masks(batch: InputBatch, attention_mask: Tensor, offset: int) -> dict[str, Tensor]:
    """``keep (batch, key)`` of the two key-masking modes: every key but the tokens covering a
    defining mutation the input carries, or but as many position-matched tokens."""
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
