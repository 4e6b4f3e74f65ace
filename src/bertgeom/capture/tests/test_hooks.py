"""The captured tensors are the model's own: attention, head outputs, multi-head output."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from bertgeom.capture.adapters import linear, submodule
from bertgeom.capture.hooks import CapturedLayer, LayerCapture
from bertgeom.capture.layer_hooks import LAYER, LayerHooks
from bertgeom.capture.loading import LoadedModel
from bertgeom.capture.tests.tiny_models import ARCHITECTURES, HEADS, LAYERS, sentences

LAYER_NORM = {"bert": "attention.output.LayerNorm", "distilbert": "sa_layer_norm"}


def _batch(loaded: LoadedModel) -> dict[str, torch.Tensor]:
    assert loaded.tokenizer is not None
    encoded = loaded.tokenizer(
        sentences(5, seed=3), padding=True, return_tensors="pt", return_token_type_ids=False
    )
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _capture(loaded: LoadedModel, batch: dict[str, torch.Tensor]) -> list[CapturedLayer]:
    captured: list[CapturedLayer] = []
    with (
        torch.inference_mode(),
        LayerCapture(loaded.encoder, loaded.adapter, loaded.n_heads, captured.append) as capture,
    ):
        loaded.model(**batch)
        assert capture._pending == {}  # nothing kept once a layer is handed over
    return captured


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_captured_tensors_equal_the_models_outputs(
    architecture: str, loaded_models: dict[str, LoadedModel]
) -> None:
    loaded = loaded_models[architecture]
    batch = _batch(loaded)
    assert bool((batch["attention_mask"] == 0).any())  # padding is present
    captured = _capture(loaded, batch)
    assert [c.layer for c in captured] == list(range(LAYERS))
    with torch.inference_mode():
        reference = loaded.model(**batch, output_attentions=True, output_hidden_states=True)
    for layer in captured:
        torch.testing.assert_close(layer.attention, reference.attentions[layer.layer])
        torch.testing.assert_close(layer.layer_input, reference.hidden_states[layer.layer])
        torch.testing.assert_close(layer.layer_output, reference.hidden_states[layer.layer + 1])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_head_and_multihead_outputs_equal_a_manual_recomputation(
    architecture: str, loaded_models: dict[str, LoadedModel]
) -> None:
    loaded = loaded_models[architecture]
    batch = _batch(loaded)
    layers = loaded.layers()
    for captured in _capture(loaded, batch):
        module = layers[captured.layer]
        x = captured.layer_input
        batch_size, seq, hidden = x.shape
        dk = hidden // HEADS
        with torch.inference_mode():
            values = linear(module, loaded.adapter.value)(x)
            value_heads = values.view(batch_size, seq, HEADS, dk).transpose(1, 2)
            head_outputs = captured.attention @ value_heads  # Z_h = A V_h
            torch.testing.assert_close(captured.head_outputs, head_outputs)
            concatenated = head_outputs.transpose(1, 2).reshape(batch_size, seq, hidden)
            projected = linear(module, loaded.adapter.output_projection)(concatenated)
            norm_path = LAYER_NORM["distilbert" if architecture == "distilbert" else "bert"]
            norm = submodule(module, norm_path)
            assert isinstance(norm, torch.nn.LayerNorm)
            expected = functional.layer_norm(
                projected + x, norm.normalized_shape, norm.weight, norm.bias, norm.eps
            )
            torch.testing.assert_close(captured.multihead_output, expected)
            torch.testing.assert_close(captured.queries, linear(module, loaded.adapter.query)(x))
            torch.testing.assert_close(captured.keys, linear(module, loaded.adapter.key)(x))


def test_hooks_are_removed_on_exit(loaded_models: dict[str, LoadedModel]) -> None:
    loaded = loaded_models["bert"]
    seen: list[int] = []
    with LayerCapture(loaded.encoder, loaded.adapter, loaded.n_heads, lambda c: seen.append(1)):
        pass
    with torch.inference_mode():
        loaded.model(**_batch(loaded))
    assert seen == []


def _hidden(output: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A layer's hidden states: its output, or the first element (by transformers version)."""
    return output if isinstance(output, torch.Tensor) else output[0]


def test_layer_hooks_tell_the_layer_and_replace_inputs_until_removed(
    loaded_models: dict[str, LoadedModel],
) -> None:
    """``before`` may replace a module's input (here W_O's, zeroed in layer 1 only), ``after``
    sees each layer's output with its index, and nothing stays once the hooks are removed."""
    loaded = loaded_models["bert"]
    batch = _batch(loaded)
    with torch.inference_mode():
        clean = loaded.model(**batch, output_hidden_states=True).hidden_states
    seen: dict[int, torch.Tensor] = {}

    def zero_layer_one(index: int, args: tuple) -> tuple | None:
        return (torch.zeros_like(args[0]), *args[1:]) if index == 1 else None

    with torch.inference_mode(), LayerHooks(loaded.encoder, loaded.adapter) as hooks:
        hooks.before(loaded.adapter.output_projection, zero_layer_one)
        hooks.after(LAYER, lambda index, output: seen.setdefault(index, _hidden(output)))
        loaded.model(**batch)
    assert sorted(seen) == list(range(LAYERS))
    torch.testing.assert_close(seen[0], clean[1])  # before the edited layer: unchanged
    assert not torch.allclose(seen[1], clean[2])
    seen.clear()
    with torch.inference_mode():
        again = loaded.model(**batch, output_hidden_states=True).hidden_states
    assert seen == {}
    torch.testing.assert_close(again[-1], clean[-1])
