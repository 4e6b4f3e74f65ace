"""Forward hooks that hand each layer's tensors to a callback as the forward pass goes.

For every layer l of one batch the hooks collect, without copying:

- ``layer_input (batch, seq, d)``: the hidden states entering the layer (``hidden_states[l]``),
  from a forward pre-hook on the layer;
- ``attention (batch, head, query, key)``: the attention probabilities, the second output of the
  self-attention module (eager attention computes them; other kernels return ``None``; a module
  that returns them only when asked, MPNet's and DeBERTa's, is asked by a pre-hook:
  :meth:`~bertgeom.capture.layer_hooks.LayerHooks.request_attention`);
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

The hooks are registered by :class:`bertgeom.capture.layer_hooks.LayerHooks`, which the head
ablation (``capture.head_editor``) edits through as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from torch import Tensor, nn

from bertgeom.capture.adapters import (
    ArchitectureAdapter,
    projection_output,
)
from bertgeom.capture.layer_hooks import LAYER, InputHook, LayerHooks, OutputHook
from bertgeom.errors import ModelError


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
