"""The head edits of an ablation run (``docs/ablation.md``): :class:`HeadEditor` records the
clean pass and replaces the ablated heads' outputs in the ablated ones.

Every edit happens at one hook point, the input of the output projection ``W_O`` (the
concatenated head outputs ``Z``, ``(batch, seq, head * dk)``), so the same code serves every
architecture of ``capture.adapters`` and every replacement of ``measures.ablation``. The hooks
are registered through ``capture.hooks.LayerHooks``, as the capture's are; this module holds
only what they record and how they edit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from bertgeom.capture.adapters import projection_output
from bertgeom.capture.layer_hooks import LAYER, LayerHooks, OutputHook
from bertgeom.capture.loading import LoadedModel
from bertgeom.measures.ablation import (
    BASELINE,
    MEAN,
    WHOLE_BLOCK,
    ZERO,
    Ablation,
    key_masked,
    mean_replaced,
    zeroed,
)


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
        self._hooks = LayerHooks(loaded.encoder, loaded.adapter)
        self.layers = self._hooks.layers
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

    def __enter__(self) -> HeadEditor:
        adapter = self.loaded.adapter
        self._hooks.before(adapter.output_projection, self._edit)
        self._hooks.after(LAYER, self._recorder(self.outputs))
        if self.keep_attention:
            self._hooks.request_attention(adapter)
            self._hooks.after(adapter.self_attention, self._recorder(self.attention, 1))
            self._hooks.after(adapter.value, self._recorder(self.values, value=True))
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.remove()

    def clear(self) -> None:
        """Forget the batch: the recorded tensors, the ablation and its key mask."""
        self.ablation, self.keep = BASELINE, None
        self.outputs.clear()
        self.head_outputs.clear()
        self.attention.clear()
        self.values.clear()

    def means(self) -> Tensor:
        """``(layer, head * dk)``: ``fixed_means`` when set (the means over every shard),
        else each head's output averaged over every valid token this editor has seen."""
        if self.fixed_means is not None:
            return self.fixed_means
        if self._means is None:
            self._means = (self.sums / self.tokens.clamp_min(1)[:, None]).float()
        return self._means

    def _recorder(
        self, into: dict[int, Any], item: int | None = None, value: bool = False
    ) -> OutputHook:
        """A hook keeping a module's output (or its ``item``-th element; with ``value``, the
        value projection's block of it) of the clean pass."""

        def record(index: int, output: Any) -> None:
            if self.recording:
                kept = output if item is None else output[item]
                into[index] = (
                    projection_output(self.loaded.adapter, "value", kept) if value else kept
                )

        return record

    def _edit(self, index: int, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """On ``W_O``'s input of layer ``index``: record ``Z`` in the clean pass; replace it by
        the ablated ``Z`` at the ablated layer."""
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
        """Within the block, the layers at depths ``0 .. upto-1`` return their recorded outputs
        (cut to the first ``length`` positions when given) without running.

        Each layer module's ``forward`` is replaced, for the block, by one that asks the hooks
        the depth of the call under way (``LayerHooks.depth_of``) and returns that depth's
        record if it is below ``upto``: a module run at several depths (ALBERT) is replayed
        at its depths below ``upto`` and runs at the others. The module's own hooks still
        fire (they count a shared module's calls); those of the modules below it do not.
        """
        recorded = {
            depth: output if length is None else _first_positions(output, length)
            for depth, output in self.outputs.items()
            if depth < upto
        }
        replaced: list[tuple[nn.Module, Any]] = []
        try:
            for module in {id(layer): layer for layer in self.layers[:upto]}.values():
                replaced.append((module, vars(module).get("forward")))
                module.forward = self._replayer(module, recorded, upto)
            yield
        finally:
            for module, own in replaced:
                del module.forward  # the class's forward again, or the module's own below
                if own is not None:
                    module.forward = own

    def _replayer(
        self, module: nn.Module, recorded: dict[int, Any], upto: int
    ) -> Callable[..., Any]:
        """``module``'s forward while replaying: the record of its depth below ``upto``, its
        own forward at the others."""
        run = module.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            depth = self._hooks.depth_of(module)
            return recorded[depth] if depth < upto else run(*args, **kwargs)

        return forward


def _first_positions(value: Any, length: int) -> Any:
    """A layer's output (a tensor, or a tuple led by one) cut to its first ``length`` positions."""
    if isinstance(value, Tensor):
        return value[:, :length]
    return (value[0][:, :length], *value[1:])
