"""The registration of forward hooks on one module of every layer of an encoder.

:class:`LayerHooks` puts a hook on the same module (a path the architecture's adapter names, or
the layer itself) of every layer, tells each call its layer's index (its depth, where one layer
module runs at several depths: ALBERT) and removes them together. It is the one place bertgeom
attaches to a model: the capture (:class:`bertgeom.capture.hooks.LayerCapture`) reads through
it, and the head ablation (``capture.head_editor``) edits through it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from bertgeom.capture.adapters import ArchitectureAdapter, encoder_layers, submodule
from bertgeom.errors import ModelError

LAYER = ""
"""The point of :class:`LayerHooks` that is the layer itself (the others are the adapter's
module paths below it: ``adapter.self_attention``, ``adapter.output_projection``, ...)."""

OutputHook = Callable[[int, Any], None]
"""``hook(layer index, output)`` after a module's forward pass."""
InputHook = Callable[[int, tuple[Any, ...]], tuple[Any, ...] | None]
"""``hook(layer index, args)`` before a module's forward pass; a tuple it returns replaces
the positional arguments."""
CallHook = Callable[[int, tuple[Any, ...], dict[str, Any]], None]
"""``hook(layer index, args, kwargs)`` before a module's forward pass, reading both."""
CallEdit = Callable[
    [int, tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]] | None
]
"""``hook(layer index, args, kwargs)`` before a module's forward pass; the ``(args, kwargs)``
it returns replace the call's."""


class LayerHooks:
    """PyTorch hooks on one module of every layer of ``encoder``, each told its layer index;
    all removed together (:meth:`remove`, or on leaving the ``with`` block).

    The index is the depth. Where one layer module runs at several depths (ALBERT,
    ``ArchitectureAdapter.depths``) it gets one hook per point, and the depth of each call is
    the count of the layer module's calls since the encoder's forward pass began (a pre-hook on
    the layer counts them; the hooks of the modules below it read the count of the layer call
    under way, so they stay right when a call runs only some of them).

    A point is a module path below a layer as the adapter names it (``adapter.value``,
    ``adapter.output_projection``), or :data:`LAYER` for the layer itself. This is the one place
    the capture (:class:`LayerCapture`) and the head ablation (``capture.head_editor``) attach
    to a model.
    """

    def __init__(self, encoder: nn.Module, adapter: ArchitectureAdapter) -> None:
        self.layers = encoder_layers(encoder, adapter)
        self._handles: list[RemovableHandle] = []
        self._depths: dict[int, Depth] = {}
        self._counters: list[_DepthCounter] = []
        indices: dict[int, list[int]] = {}
        for index, layer in enumerate(self.layers):
            indices.setdefault(id(layer), []).append(index)
        for index, layer in enumerate(self.layers):
            depths = indices[id(layer)]
            if len(depths) == 1:
                self._depths[id(layer)] = index
            elif id(layer) not in self._depths:
                # One counter per shared layer module, advanced by a pre-hook on the layer
                # registered before any point's hook: every hook below the layer reads the
                # depth of the layer call it runs in, so a call that skips a submodule (a
                # replayed depth) cannot shift the depths of the others.
                counter = _DepthCounter(tuple(depths))
                self._depths[id(layer)] = counter
                self._counters.append(counter)
                self._handles.append(layer.register_forward_pre_hook(counter.enter))
        if self._counters:
            # Shared layers count their calls from the start of each forward pass.
            self._handles.append(encoder.register_forward_pre_hook(self._reset_counters))

    def depth_of(self, layer: nn.Module) -> int:
        """The depth ``layer`` (one of :attr:`layers`) runs at in its current call: its
        index, or for a module run at several depths the depth its call counts to."""
        return _depth(self._depths[id(layer)])

    def after(self, point: str, hook: OutputHook) -> None:
        """``hook(index, output)`` after each layer's ``point`` module has run."""
        self._handles += [
            module.register_forward_hook(_output_hook(hook, depth))
            for depth, module in self._modules(point)
        ]

    def before(self, point: str, hook: InputHook) -> None:
        """``hook(index, args)`` before each layer's ``point`` module runs; what it returns
        (other than ``None``) is the module's input instead."""
        self._handles += [
            module.register_forward_pre_hook(_input_hook(hook, depth))
            for depth, module in self._modules(point)
        ]

    def before_call(self, point: str, hook: CallHook) -> None:
        """``hook(index, args, kwargs)`` before each layer's ``point`` module runs (for inputs
        that may come by keyword, such as a layer's ``hidden_states``)."""
        self._handles += [
            module.register_forward_pre_hook(_call_hook(hook, depth), with_kwargs=True)
            for depth, module in self._modules(point)
        ]

    def edit_call(self, point: str, hook: CallEdit) -> None:
        """``hook(index, args, kwargs)`` before each layer's ``point`` module runs; the
        ``(args, kwargs)`` it returns (other than ``None``) are the call's instead."""
        self._handles += [
            module.register_forward_pre_hook(_edit_hook(hook, depth), with_kwargs=True)
            for depth, module in self._modules(point)
        ]

    def request_attention(self, adapter: ArchitectureAdapter) -> None:
        """Where the self-attention module returns its probabilities only when asked
        (``adapter.attention_flag``), pass it that argument true, by keyword or in its place
        among the positional arguments as its caller gives it; nothing otherwise. Only that
        module sees the flag: the encoder, called without it, keeps no layer's probabilities
        for the pass (MPNet's layer hands them up, and its encoder drops them when the next
        layer returns)."""
        flag = adapter.attention_flag
        if flag is None or not self.layers:
            return
        attention = submodule(self.layers[0], adapter.self_attention)
        names = list(inspect.signature(attention.forward).parameters)
        if flag not in names:
            raise TypeError(f"{type(attention).__name__}.forward takes no {flag!r}")
        position = names.index(flag)

        def ask(
            index: int, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]]:
            if len(args) > position:
                return (*args[:position], True, *args[position + 1 :]), kwargs
            return args, {**kwargs, flag: True}

        self.edit_call(adapter.self_attention, ask)

    def remove(self) -> None:
        """Remove every hook registered so far."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._counters.clear()

    def __enter__(self) -> LayerHooks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _modules(self, point: str) -> list[tuple[Depth, nn.Module]]:
        """``(depth, module)``: the ``point`` module of each distinct layer module, with the
        depth it runs at (an ``int``), or its layer's :class:`_DepthCounter` when it runs at
        several (one hook per module: a hook per depth would fire at every depth)."""
        distinct = {id(layer): layer for layer in self.layers}
        return [
            (self._depths[key], layer if point == LAYER else submodule(layer, point))
            for key, layer in distinct.items()
        ]

    def _reset_counters(self, module: nn.Module, args: Any) -> None:
        for counter in self._counters:
            counter.reset()


class _DepthCounter:
    """The depth of each call of a layer module that runs at several depths: its calls within
    one forward pass of the encoder, in order, are ``depths[0]``, ``depths[1]``, ... (counted
    by :meth:`enter`, a pre-hook on the layer; the counts restart with each forward pass of the
    encoder; a call beyond the last depth is an error, not a guess). The hooks of the layer and
    of the modules below it read the depth of the call under way (:meth:`depth`)."""

    def __init__(self, depths: tuple[int, ...]) -> None:
        self.depths = depths
        self.calls = 0
        self.current: int | None = None

    def enter(self, module: nn.Module, args: Any) -> None:
        if self.calls >= len(self.depths):
            raise ModelError(
                f"a shared layer ran more than the {len(self.depths)} times its depths "
                "allow in one forward pass; its depth is unknown"
            )
        self.current = self.depths[self.calls]
        self.calls += 1

    def reset(self) -> None:
        self.calls, self.current = 0, None

    def depth(self) -> int:
        if self.current is None:
            raise ModelError("a module of a shared layer ran outside a call of its layer")
        return self.current


Depth = int | _DepthCounter
"""A hook's layer index: fixed, or counted call by call (shared layers)."""


def _depth(depth: Depth) -> int:
    return depth if isinstance(depth, int) else depth.depth()


def _output_hook(hook: OutputHook, depth: Depth) -> Callable[[nn.Module, Any, Any], None]:
    def forward_hook(module: nn.Module, args: Any, output: Any) -> None:
        hook(_depth(depth), output)

    return forward_hook


def _input_hook(
    hook: InputHook, depth: Depth
) -> Callable[[nn.Module, tuple[Any, ...]], tuple[Any, ...] | None]:
    def forward_pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        return hook(_depth(depth), args)

    return forward_pre_hook


def _call_hook(
    hook: CallHook, depth: Depth
) -> Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], None]:
    def forward_pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hook(_depth(depth), args, kwargs)

    return forward_pre_hook


def _edit_hook(
    hook: CallEdit, depth: Depth
) -> Callable[
    [nn.Module, tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]] | None
]:
    def forward_pre_hook(
        module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        return hook(_depth(depth), args, kwargs)

    return forward_pre_hook
