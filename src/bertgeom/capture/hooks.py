"""Forward hooks that hand each layer's tensors to a callback as the forward pass goes.

For every layer l of one batch the hooks collect, without copying:

- ``layer_input (batch, seq, d)``: the hidden states entering the layer (``hidden_states[l]``),
  from a forward pre-hook on the layer;
- ``attention (batch, head, query, key)``: the attention probabilities, the second output of the
  self-attention module (eager attention computes them; other kernels return ``None``);
- ``head_outputs (batch, head, seq, dk)``: ``Z_h = A V_h`` before concatenation, the input of the
  output projection ``W_O`` (a pre-hook on it), reshaped;
- ``multihead_output (batch, seq, d)``: ``LayerNorm(W_O z + b_O + x)``, the output of the module
  named by the adapter;
- ``layer_output (batch, seq, d)``: the layer's output (``hidden_states[l + 1]``);
- ``queries``, ``keys (batch, seq, H dk)``: the outputs of the query and key projections
  (``W_q x + b_q``, ``W_k x + b_k``), which the data-based subspace measures reuse.

When the layer's forward returns, the callback receives a :class:`CapturedLayer` and the hooks
drop their references, so at most one layer's tensors are held beyond what the model itself keeps
(``docs/capture.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from bertgeom.capture.adapters import ArchitectureAdapter, encoder_layers, submodule
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
        self._handles: list[RemovableHandle] = []
        self._pending: dict[int, dict[str, Tensor | None]] = {}

    def __enter__(self) -> LayerCapture:
        for index, layer in enumerate(encoder_layers(self.encoder, self.adapter)):
            self._register(index, layer)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending.clear()

    def _register(self, index: int, layer: nn.Module) -> None:
        adapter = self.adapter

        def on_layer_start(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> None:
            hidden = args[0] if args else kwargs.get("hidden_states")
            self._pending[index] = {"layer_input": _first_tensor(hidden)}

        def on_attention(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            probabilities = (
                output[1] if isinstance(output, tuple | list) and len(output) > 1 else None
            )
            self._pending.setdefault(index, {})["attention"] = probabilities

        def on_projection_input(module: nn.Module, args: tuple[Any, ...]) -> None:
            self._pending.setdefault(index, {})["head_outputs"] = _first_tensor(args)

        def on_multihead(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            self._pending.setdefault(index, {})["multihead_output"] = _first_tensor(output)

        def on_query(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            self._pending.setdefault(index, {})["queries"] = _first_tensor(output)

        def on_key(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            self._pending.setdefault(index, {})["keys"] = _first_tensor(output)

        def on_layer_end(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            pieces = self._pending.pop(index, {})
            pieces["layer_output"] = _first_tensor(output)
            self._dispatch(index, pieces)

        self._handles += [
            layer.register_forward_pre_hook(on_layer_start, with_kwargs=True),
            submodule(layer, adapter.self_attention).register_forward_hook(on_attention),
            submodule(layer, adapter.output_projection).register_forward_pre_hook(
                on_projection_input
            ),
            submodule(layer, adapter.multihead_output).register_forward_hook(on_multihead),
            submodule(layer, adapter.query).register_forward_hook(on_query),
            submodule(layer, adapter.key).register_forward_hook(on_key),
            layer.register_forward_hook(on_layer_end),
        ]

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
