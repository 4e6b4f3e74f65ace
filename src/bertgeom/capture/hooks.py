"""Forward hooks that hand each layer's tensors to a callback as the forward pass goes.

For every layer l of one batch the hooks collect, without copying:

- ``layer_input (batch, seq, d)``: the hidden states entering the layer (``hidden_states[l]``),
  from a forward pre-hook on the layer;
- ``attention (batch, head, query, key)``: the attention probabilities, the second output of the
  self-attention module (eager attention computes them; other kernels return ``None``; a module
  that returns them only when asked, MPNet's and DeBERTa's, is asked by a pre-hook:
  :meth:`LayerHooks.request_attention`);
- ``head_outputs (batch, head, seq, dk)``: ``Z_h = A V_h`` before concatenation, the input of the
  output projection ``W_O`` (a pre-hook on it), reshaped;
- ``multihead_output (batch, seq, d)``: ``LayerNorm(W_O z + b_O + x)``, the output of the module
  named by the adapter (in a pre-LayerNorm layer, ESM: ``x + W_O z + b_O``, the residual stream
  after attention, for no LayerNorm follows it; ModernBERT: the input of ``mlp_norm``, for no
  module returns that sum);
- ``layer_output (batch, seq, d)``: the layer's output (``hidden_states[l + 1]``);
- ``queries``, ``keys (batch, seq, H dk)``: the outputs of the query and key projections
  (``W_q x + b_q``, ``W_k x + b_k``; ``x`` is ``LN(x)`` in a pre-LayerNorm layer, and with
  rotary positions these are before the rotation; their blocks of a fused ``Wqkv``; the first
  call of the projection in the layer, the tokens', where DeBERTa projects its relative
  position embeddings with the same module afterwards), which the data-based subspace measures
  reuse.

When the layer's forward returns, the callback receives a :class:`CapturedLayer` and the hooks
drop their references, so at most one layer's tensors are held beyond what the model itself keeps
(``docs/capture.md``).

:class:`LayerHooks` is the registration itself (a hook on one module of every layer, told the
layer's index, removed together): :class:`LayerCapture` reads through it, and the head ablation
(``capture.head_editor``) edits through it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from bertgeom.capture.adapters import (
    ArchitectureAdapter,
    encoder_layers,
    projection_output,
    submodule,
)
from bertgeom.errors import ModelError

MEASURING_POINTS: tuple[str, ...] = (
    "layer_input",
    "head_output",
    "multihead_output",
    "layer_output",
)
"""The measuring points of DESIGN 3.1, named once for capture, measures, results and report."""


@dataclass(frozen=True)
class CapturedLayer:
    """The tensors of one layer for one batch (shapes by name; ``dk = d / head``)."""

    layer: int
    layer_input: Tensor  # (batch, seq, d)
    attention: Tensor  # (batch, head, query, key)
    head_outputs: Tensor  # (batch, head, seq, dk)
    multihead_output: Tensor  # (batch, seq, d)
    layer_output: Tensor  # (batch, seq, d)
    queries: Tensor  # (batch, seq, head * dk), bias included
    keys: Tensor  # (batch, seq, head * dk), bias included


_REQUIRED = ("layer_input", "head_outputs", "multihead_output", "layer_output", "queries", "keys")

LayerCallback = Callable[[CapturedLayer], None]


def _first_tensor(value: Any) -> Tensor | None:
    """The tensor itself, or the first element of a tuple/list output."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, tuple | list) and value and isinstance(value[0], Tensor):
        return value[0]
    return None


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
    ``ArchitectureAdapter.depths``) it gets one hook per point, which tells each call its depth
    by counting the module's calls since the encoder's forward pass began.

    A point is a module path below a layer as the adapter names it (``adapter.value``,
    ``adapter.output_projection``), or :data:`LAYER` for the layer itself. This is the one place
    the capture (:class:`LayerCapture`) and the head ablation (``capture.head_editor``) attach
    to a model.
    """

    def __init__(self, encoder: nn.Module, adapter: ArchitectureAdapter) -> None:
        self.layers = encoder_layers(encoder, adapter)
        self._handles: list[RemovableHandle] = []
        self._counters: list[_DepthCounter] = []
        if len({id(layer) for layer in self.layers}) < len(self.layers):
            # Shared layers count their calls from the start of each forward pass.
            self._handles.append(encoder.register_forward_pre_hook(self._reset_counters))

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
        depth it runs at (an ``int``), or a :class:`_DepthCounter` when it runs at several
        (one hook per module: a hook per depth would fire at every depth)."""
        depths: dict[int, list[int]] = {}
        for index, layer in enumerate(self.layers):
            depths.setdefault(id(layer), []).append(index)
        modules: list[tuple[Depth, nn.Module]] = []
        for indices in depths.values():
            layer = self.layers[indices[0]]
            module = layer if point == LAYER else submodule(layer, point)
            if len(indices) == 1:
                modules.append((indices[0], module))
            else:
                counter = _DepthCounter(tuple(indices))
                self._counters.append(counter)
                modules.append((counter, module))
        return modules

    def _reset_counters(self, module: nn.Module, args: Any) -> None:
        for counter in self._counters:
            counter.calls = 0


class _DepthCounter:
    """The depth of each call of a module that runs at several depths: its calls within one
    forward pass of the encoder, in order, are ``depths[0]``, ``depths[1]``, ... (the counts
    restart with each forward pass of the encoder; a call beyond the last depth is an error,
    not a guess)."""

    def __init__(self, depths: tuple[int, ...]) -> None:
        self.depths = depths
        self.calls = 0

    def next(self) -> int:
        if self.calls >= len(self.depths):
            raise ModelError(
                f"a shared layer ran more than the {len(self.depths)} times its depths "
                "allow in one forward pass; its depth is unknown"
            )
        depth = self.depths[self.calls]
        self.calls += 1
        return depth


Depth = int | _DepthCounter
"""A hook's layer index: fixed, or counted call by call (shared layers)."""


def _depth(depth: Depth) -> int:
    return depth if isinstance(depth, int) else depth.next()


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


class LayerCapture:
    """Context manager that registers the hooks on every layer of ``encoder`` and calls
    ``callback(captured)`` at the end of each layer's forward pass.

    ``n_heads`` splits the output projection's input into heads. Raises :class:`ModelError`
    from inside the forward pass when a layer yields no attention probabilities (a kernel other
    than eager attention).
    """

    def __init__(
        self,
        encoder: nn.Module,
        adapter: ArchitectureAdapter,
        n_heads: int,
        callback: LayerCallback,
    ) -> None:
        self.encoder = encoder
        self.adapter = adapter
        self.n_heads = n_heads
        self.callback = callback
        self._hooks: LayerHooks | None = None
        self._pending: dict[int, dict[str, Tensor | None]] = {}

    def __enter__(self) -> LayerCapture:
        adapter = self.adapter
        hooks = self._hooks = LayerHooks(self.encoder, adapter)
        hooks.before_call(LAYER, self._on_layer_start)
        hooks.request_attention(adapter)
        hooks.after(adapter.self_attention, self._on_attention)
        hooks.before(adapter.output_projection, self._on_projection_input)
        if adapter.multihead_output_is_input:
            hooks.before(adapter.multihead_output, self._keep_input("multihead_output"))
        else:
            hooks.after(adapter.multihead_output, self._keep_output("multihead_output"))
        hooks.after(adapter.query, self._keep_projection("queries", "query"))
        hooks.after(adapter.key, self._keep_projection("keys", "key"))
        hooks.after(LAYER, self._on_layer_end)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._hooks is not None:
            self._hooks.remove()
            self._hooks = None
        self._pending.clear()

    def _on_layer_start(self, index: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        self._pending[index] = {"layer_input": _first_tensor(hidden)}

    def _on_attention(self, index: int, output: Any) -> None:
        probabilities = output[1] if isinstance(output, tuple | list) and len(output) > 1 else None
        self._pending.setdefault(index, {})["attention"] = probabilities

    def _on_projection_input(self, index: int, args: tuple[Any, ...]) -> None:
        self._pending.setdefault(index, {})["head_outputs"] = _first_tensor(args)

    def _keep_output(self, name: str) -> OutputHook:
        def keep(index: int, output: Any) -> None:
            self._pending.setdefault(index, {})[name] = _first_tensor(output)

        return keep

    def _keep_input(self, name: str) -> InputHook:
        def keep(index: int, args: tuple[Any, ...]) -> None:
            self._pending.setdefault(index, {})[name] = _first_tensor(args)

        return keep

    def _keep_projection(self, name: str, which: str) -> OutputHook:
        """Keep the ``which`` projection's output of the layer's first call of its module
        (DeBERTa-v3 with ``share_att_key`` calls ``query_proj`` and ``key_proj`` again on the
        relative position embeddings, after the tokens)."""

        def keep(index: int, output: Any) -> None:
            pending = self._pending.setdefault(index, {})
            tensor = _first_tensor(output)
            if pending.get(name) is None and tensor is not None:
                pending[name] = projection_output(self.adapter, which, tensor)

        return keep

    def _on_layer_end(self, index: int, output: Any) -> None:
        pieces = self._pending.pop(index, {})
        pieces["layer_output"] = _first_tensor(output)
        self._dispatch(index, pieces)

    def _dispatch(self, index: int, pieces: dict[str, Tensor | None]) -> None:
        attention = pieces.get("attention")
        if attention is None or attention.ndim != 4:
            raise ModelError(
                f"layer {index} returned no attention probabilities: the model must run with "
                "eager attention (attn_implementation='eager')"
            )
        missing = [name for name in _REQUIRED if pieces.get(name) is None]
        if missing:
            raise ModelError(f"layer {index}: the hooks captured no {', '.join(missing)}")
        concatenated = pieces["head_outputs"]
        assert concatenated is not None
        batch, seq, width = concatenated.shape
        head_outputs = concatenated.reshape(batch, seq, self.n_heads, width // self.n_heads)
        captured = CapturedLayer(
            layer=index,
            layer_input=_required(pieces, "layer_input"),
            attention=attention,
            head_outputs=head_outputs.permute(0, 2, 1, 3),
            multihead_output=_required(pieces, "multihead_output"),
            layer_output=_required(pieces, "layer_output"),
            queries=_required(pieces, "queries"),
            keys=_required(pieces, "keys"),
        )
        pieces.clear()
        self.callback(captured)


def _required(pieces: dict[str, Tensor | None], name: str) -> Tensor:
    value = pieces[name]
    assert value is not None
    return value
