"""ESM (pre-LayerNorm, rotary or absolute positions), ALBERT (one layer at every depth), MPNet
(relative position bias; probabilities returned only when asked), DeBERTa-v3 (disentangled
attention) and ModernBERT (fused ``Wqkv``, pre-LayerNorm, global and sliding-window layers):
the captured tensors are the model's own, each measuring point is what docs/models.md says,
and checkpoints load exactly or are refused."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import (
    AlbertConfig,
    AlbertForMaskedLM,
    AlbertForPreTraining,
    AlbertForSequenceClassification,
    AlbertModel,
    DebertaV2ForMaskedLM,
    DebertaV2ForSequenceClassification,
    DebertaV2Model,
    EsmForMaskedLM,
    EsmForSequenceClassification,
    ModernBertForMaskedLM,
    ModernBertForSequenceClassification,
    MPNetForMaskedLM,
    MPNetForSequenceClassification,
    PreTrainedModel,
)
from transformers.models.esm.modeling_esm import apply_rotary_pos_emb
from transformers.models.modernbert import modeling_modernbert

from bertgeom.capture.adapters import linear, projection_weights, submodule
from bertgeom.capture.architectures import ADAPTERS
from bertgeom.capture.attention_input import AttentionInputMeasurement, AttentionNorms
from bertgeom.capture.hooks import CapturedLayer, LayerCapture
from bertgeom.capture.layer_hooks import LayerHooks
from bertgeom.capture.loading import LoadedModel, load_model
from bertgeom.capture.measurement import BatchContext, MeasurementOutputs
from bertgeom.capture.projected_subspace import ProjectionBases, projected_subspace_measures
from bertgeom.capture.tests.tiny_models import (
    HEADS,
    HIDDEN,
    LAYERS,
    MODERNBERT_WINDOW,
    OTHER_ARCHITECTURES,
    POSITIONS,
    VOCABULARY,
    deberta_config,
    model_type,
    save_tiny_model,
    texts_for,
    tiny_model,
    tiny_tokenizer,
    tokenizer,
)
from bertgeom.errors import InputError, ModelError
from bertgeom.measures.gates import gate_scores
from bertgeom.measures.subspace_data import subspace_data_measures
from bertgeom.measures.tests.test_gates import reference_scores
from bertgeom.measures.tokens import token_mask

WEIGHTS = "model.safetensors"
PRE_LN = ("esm", "esm-absolute", "modernbert")
FINAL_NORM = {
    "esm": "encoder.emb_layer_norm_after",
    "esm-absolute": "encoder.emb_layer_norm_after",
    "modernbert": "final_norm",
}
"""The encoder's LayerNorm after the last layer, which transformers' last hidden state includes
and which is no measuring point."""
POST_LN_NORM = {
    "albert": "attention.LayerNorm",
    "mpnet": "attention.LayerNorm",
    "deberta-v2": "attention.output.LayerNorm",
}
"""The LayerNorm after the attention's residual in the post-LayerNorm layers."""


@pytest.fixture(scope="module")
def directories(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("other-architectures")
    return {name: save_tiny_model(name, root / name) for name in OTHER_ARCHITECTURES}


@pytest.fixture(scope="module")
def loaded(directories: dict[str, Path]) -> dict[str, LoadedModel]:
    return {name: load_model(path) for name, path in directories.items()}


def _batch(model: LoadedModel, architecture: str, count: int = 5) -> dict[str, Tensor]:
    assert model.tokenizer is not None
    encoded = model.tokenizer(
        texts_for(architecture, count, seed=3),
        padding=True,
        return_tensors="pt",
        return_token_type_ids=False,
    )
    assert bool((encoded["attention_mask"] == 0).any())  # padding is present
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _capture(model: LoadedModel, batch: dict[str, Tensor], passes: int = 1) -> list[CapturedLayer]:
    captured: list[CapturedLayer] = []
    with (
        torch.inference_mode(),
        LayerCapture(model.encoder, model.adapter, model.n_heads, captured.append) as capture,
    ):
        for _ in range(passes):
            model.model(**batch)
        assert capture._pending == {}
    return captured


def _layer_norm(layer: nn.Module, path: str, value: Tensor) -> Tensor:
    norm = submodule(layer, path)
    assert isinstance(norm, nn.LayerNorm | nn.Identity)  # ModernBERT's layer 0: Identity
    return norm(value)


def _project(layer: nn.Module, model: LoadedModel, which: str, read: Tensor) -> Tensor:
    """The ``which`` projection of ``read`` from the layer's weights (a fused block or not)."""
    weight, bias = projection_weights(layer, model.adapter, which)
    return torch.nn.functional.linear(read, weight, bias)


@pytest.mark.parametrize("architecture", OTHER_ARCHITECTURES)
def test_every_other_architecture_loads_with_its_shape(
    architecture: str, loaded: dict[str, LoadedModel]
) -> None:
    model = loaded[architecture]
    assert model.config._attn_implementation == "eager"
    assert (model.n_layers, model.n_heads, model.hidden_size) == (LAYERS, HEADS, HIDDEN)
    assert model.max_tokens == POSITIONS  # positions numbered from pad + 1 (ESM), or from 0
    summary = model.summary()
    assert summary["model_type"] == model_type(architecture)
    assert summary["caveats"] == list(model.adapter.caveats) and summary["caveats"]
    assert model.ignored_weights in (
        ("pooler.dense.bias", "pooler.dense.weight"),
        ("pooler.bias", "pooler.weight"),
        (),  # DeBERTa and ModernBERT have no pooler in the bare model
    )


@pytest.mark.parametrize("architecture", OTHER_ARCHITECTURES)
def test_captured_attention_and_stream_are_the_models_own(
    architecture: str, loaded: dict[str, LoadedModel]
) -> None:
    """Attention equals ``output_attentions`` at every depth (padding in the batch), the layer
    input and output ``output_hidden_states``; ESM's and ModernBERT's last hidden state is after
    the encoder's final LayerNorm (``emb_layer_norm_after``, ``final_norm``), which is not a
    measuring point: the captured layer output is the residual stream before it. MPNet and
    DeBERTa return the probabilities only when asked: the capture asks their attention module
    alone, the reference asks the model."""
    model = loaded[architecture]
    batch = _batch(model, architecture)
    captured = _capture(model, batch)
    assert [layer.layer for layer in captured] == list(range(LAYERS))
    with torch.inference_mode():
        reference = model.model(**batch, output_attentions=True, output_hidden_states=True)
    assert len(reference.attentions) == LAYERS
    for layer in captured:
        torch.testing.assert_close(layer.attention, reference.attentions[layer.layer])
        torch.testing.assert_close(layer.layer_input, reference.hidden_states[layer.layer])
        expected = reference.hidden_states[layer.layer + 1]
        if architecture in FINAL_NORM and layer.layer == LAYERS - 1:
            final = submodule(model.encoder, FINAL_NORM[architecture])
            with torch.inference_mode():
                torch.testing.assert_close(final(layer.layer_output), expected)
        else:
            torch.testing.assert_close(layer.layer_output, expected)
    # The hooks see the stream move on: layer 1 reads layer 0's output (ALBERT: same module).
    torch.testing.assert_close(captured[1].layer_input, captured[0].layer_output)


@pytest.mark.parametrize("architecture", OTHER_ARCHITECTURES)
def test_head_and_multihead_outputs_equal_a_manual_recomputation(
    architecture: str, loaded: dict[str, LoadedModel]
) -> None:
    """``Z_h = A V_h`` with V from the projections' input (``LN(x)`` in a pre-LayerNorm layer;
    ModernBERT's layer 0 reads ``x``); the multi-head output is ``x + W_O z + b_O`` (ESM,
    ModernBERT: no LayerNorm after the residual) or ``LN(x + W_O z + b_O)`` (ALBERT, MPNet,
    DeBERTa); queries and keys are the projections of that input (ESM, ModernBERT: before the
    rotation, which acts inside the attention; ModernBERT: the q and k blocks of ``Wqkv``;
    DeBERTa: the tokens' projections, not those of its relative position embeddings)."""
    model = loaded[architecture]
    batch = _batch(model, architecture)
    layers = model.layers()
    adapter = model.adapter
    for captured in _capture(model, batch):
        module = layers[captured.layer]
        x = captured.layer_input
        batch_size, seq, hidden = x.shape
        dk = hidden // HEADS
        with torch.inference_mode():
            read = x
            if adapter.attention_norm is not None:
                read = _layer_norm(module, adapter.attention_norm, x)
            values = _project(module, model, "value", read)
            value_heads = values.view(batch_size, seq, HEADS, dk).transpose(1, 2)
            head_outputs = captured.attention @ value_heads
            torch.testing.assert_close(captured.head_outputs, head_outputs)
            concatenated = head_outputs.transpose(1, 2).reshape(batch_size, seq, hidden)
            projected = linear(module, adapter.output_projection)(concatenated)
            if architecture in PRE_LN:
                expected = x + projected
            else:
                expected = _layer_norm(module, POST_LN_NORM[architecture], x + projected)
            torch.testing.assert_close(captured.multihead_output, expected)
            torch.testing.assert_close(captured.queries, _project(module, model, "query", read))
            torch.testing.assert_close(captured.keys, _project(module, model, "key", read))


def test_esm_attention_is_softmax_of_the_rotated_captured_queries_and_keys(
    loaded: dict[str, LoadedModel],
) -> None:
    """The captured ``queries``/``keys`` are the projections before the rotary rotation: rotated
    by position (and the query scaled by ``dk^-1/2``, as ESM does) they give the captured
    attention; unrotated they do not."""
    model = loaded["esm"]
    batch = _batch(model, "esm")
    mask = batch["attention_mask"]
    rotary = model.encoder.rotary_embeddings
    assert rotary is not None
    for captured in _capture(model, batch):
        batch_size, seq, hidden = captured.queries.shape
        q = _heads(captured.queries) * (hidden // HEADS) ** -0.5
        k = _heads(captured.keys)
        with torch.inference_mode():
            positions = torch.arange(seq)[None].expand(batch_size, seq)
            cos, sin = rotary(captured.layer_input, positions)
            q_rotated, k_rotated = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
        rotated = _softmax_attention(q_rotated, k_rotated, mask)
        torch.testing.assert_close(rotated, captured.attention)
        assert not torch.allclose(_softmax_attention(q, k, mask), captured.attention, atol=1e-3)


def _heads(values: Tensor) -> Tensor:
    """``(batch, seq, H dk)`` -> ``(batch, head, seq, dk)``."""
    batch_size, seq, hidden = values.shape
    return values.view(batch_size, seq, HEADS, hidden // HEADS).transpose(1, 2)


def _softmax_attention(
    queries: Tensor,
    keys: Tensor,
    mask: Tensor,
    bias: Tensor | None = None,
    window: int | None = None,
) -> Tensor:
    """Eager attention probabilities of already scaled queries (plus ``bias``), padded keys
    masked out, and keys beyond ``window`` positions on either side."""
    scores = queries @ keys.transpose(-1, -2)
    if bias is not None:
        scores = scores + bias
    hidden = mask[:, None, None, :] == 0
    if window is not None:
        positions = torch.arange(scores.shape[-1])
        hidden = hidden | ((positions[:, None] - positions[None, :]).abs() > window)
    scores = scores.masked_fill(hidden, torch.finfo(scores.dtype).min)
    return scores.softmax(-1)


@pytest.mark.parametrize("architecture", PRE_LN)
def test_pre_layer_norm_subspace_measures_read_the_projections_input(
    architecture: str, loaded: dict[str, LoadedModel]
) -> None:
    """``AttentionNorms`` gives exactly the tensor the query projection received; the projected
    subspace measures from it equal the reference definition on ``LN(x)``, and would not on the
    stream ``x`` (what the measurement would read without the wrapper)."""
    model = loaded[architecture]
    batch = _batch(model, architecture)
    mask = batch["attention_mask"]
    received: dict[int, Tensor] = {}
    captured: list[CapturedLayer] = []
    with (
        torch.inference_mode(),
        LayerHooks(model.encoder, model.adapter) as hooks,
        LayerCapture(model.encoder, model.adapter, HEADS, captured.append),
    ):
        hooks.before(model.adapter.query, lambda index, args: received.setdefault(index, args[0]))
        model.model(**batch)
    norms = AttentionNorms(model.encoder, model.adapter)
    weights = model.query_key_weights()
    for layer in captured:
        with torch.inference_mode():
            normed = norms.apply(layer.layer, layer.layer_input)
        assert torch.equal(normed, received[layer.layer])
        wq, bq, wk, bk = weights[layer.layer]
        bases = ProjectionBases.of(wq, bq, wk, bk, HEADS)
        assert bases is not None
        got = projected_subspace_measures(normed, layer.queries, layer.keys, bases, HEADS, mask)
        expected = subspace_data_measures(normed, mask, wq, wk, HEADS)
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=2e-5, atol=1e-6)
        if norms.parameters[layer.layer] is None:  # ModernBERT's layer 0 reads the stream
            assert torch.equal(normed, layer.layer_input)
            continue
        stream = projected_subspace_measures(
            layer.layer_input, layer.queries, layer.keys, bases, HEADS, mask
        )
        assert not torch.allclose(stream["query_energy_share"], got["query_energy_share"])


class _Recorder:
    """A measurement that keeps the layer inputs it is given."""

    name = "recorder"
    parameters = None

    def __init__(self) -> None:
        self.inputs: list[Tensor] = []

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        self.inputs.append(captured.layer_input)

    def merge(self, other: _Recorder) -> _Recorder:
        merged = _Recorder()
        merged.inputs = self.inputs + other.inputs
        return merged

    def write(self, outputs: MeasurementOutputs) -> None:
        outputs.add_table("recorded", __import__("pandas").DataFrame({"n": [len(self.inputs)]}))


def test_the_attention_input_wrapper_hands_on_the_normed_layer_input(
    loaded: dict[str, LoadedModel],
) -> None:
    model = loaded["esm"]
    batch = _batch(model, "esm")
    norms = AttentionNorms(model.encoder, model.adapter)
    inner = _Recorder()
    wrapper = AttentionInputMeasurement(inner, norms)
    assert wrapper.name == "recorder" and wrapper.parameters is None
    context: Any = None
    layers = model.layers()
    for layer in _capture(model, batch):
        wrapper.update(layer, context)
        with torch.inference_mode():
            expected = _layer_norm(layers[layer.layer], "attention.LayerNorm", layer.layer_input)
        torch.testing.assert_close(inner.inputs[-1], expected, rtol=0, atol=0)
    merged = wrapper.merge(AttentionInputMeasurement(_Recorder(), norms))
    assert isinstance(merged, AttentionInputMeasurement) and len(merged.inner.inputs) == LAYERS
    outputs = MeasurementOutputs()
    merged.write(outputs)
    assert list(outputs.tables) == ["recorded"]


def test_albert_reports_every_depth_of_its_shared_layer(loaded: dict[str, LoadedModel]) -> None:
    """One module at every depth: the hooks number its calls 0..L-1 in every forward pass, and
    the weight-based measures see the shared weights at each depth."""
    model = loaded["albert"]
    layers = model.layers()
    assert len(layers) == LAYERS and all(layer is layers[0] for layer in layers)
    captured = _capture(model, _batch(model, "albert"), passes=3)
    assert [layer.layer for layer in captured] == list(range(LAYERS)) * 3
    weights = model.attention_weights()
    assert len(weights) == LAYERS
    assert all(torch.equal(w.weight_q, weights[0].weight_q) for w in weights)
    assert weights[0].weight_o.shape == (HIDDEN, HIDDEN)


def test_albert_groups_and_inner_layers_run_in_depth_order(tmp_path: Path) -> None:
    """Four depths over two groups of two inner layers each: eight AlbertLayer calls, each
    told its depth, equal to transformers' own hidden states and attentions."""
    torch.manual_seed(0)
    config = AlbertConfig(
        vocab_size=40,
        hidden_size=HIDDEN,
        num_hidden_layers=4,
        num_hidden_groups=2,
        inner_group_num=2,
        num_attention_heads=HEADS,
        intermediate_size=2 * HIDDEN,
        embedding_size=16,
        max_position_embeddings=POSITIONS,
        pad_token_id=0,
    )
    AlbertModel(config).save_pretrained(tmp_path / "albert")
    tokenizer().save_pretrained(tmp_path / "albert")
    model = load_model(tmp_path / "albert")
    groups = model.encoder.encoder.albert_layer_groups
    order = [groups[0].albert_layers[0], groups[0].albert_layers[1]] * 2
    order += [groups[1].albert_layers[0], groups[1].albert_layers[1]] * 2
    assert model.n_layers == 8 and all(a is b for a, b in zip(model.layers(), order, strict=True))
    batch = _batch(model, "albert")
    captured = _capture(model, batch)
    assert [layer.layer for layer in captured] == list(range(8))
    with torch.inference_mode():
        reference = model.model(**batch, output_attentions=True, output_hidden_states=True)
    for layer in captured:
        torch.testing.assert_close(layer.attention, reference.attentions[layer.layer])
        torch.testing.assert_close(layer.layer_output, reference.hidden_states[layer.layer + 1])


def test_a_shared_layer_called_beyond_its_depths_is_an_error(
    loaded: dict[str, LoadedModel],
) -> None:
    model = loaded["albert"]
    batch = _batch(model, "albert")
    layer = model.layers()[0]
    with torch.inference_mode(), LayerHooks(model.encoder, model.adapter) as hooks:
        hooks.after("attention", lambda index, output: None)
        model.model(**batch)
        hidden = torch.zeros(1, 3, HIDDEN)
        with pytest.raises(ModelError, match="ran more than the 2 times"):
            layer(hidden)  # a third call outside any encoder pass


def test_a_hook_below_a_shared_layer_reads_the_depth_of_the_call_under_way(
    loaded: dict[str, LoadedModel],
) -> None:
    """The depth of a call of a module below a shared layer is the count of the *layer's*
    calls: a layer call that skips its attention (a replayed depth) does not shift the depth
    the next attention call is told."""
    model = loaded["albert"]
    batch = _batch(model, "albert")
    layer = model.layers()[0]
    seen: list[int] = []
    with torch.inference_mode(), LayerHooks(model.encoder, model.adapter) as hooks:
        hooks.after("attention", lambda index, output: seen.append(index))
        first = True

        def skip_first(*args: Any, **kwargs: Any) -> Any:
            nonlocal first
            if first:
                first = False
                return args[0]
            return type(layer).forward(layer, *args, **kwargs)

        layer.forward = skip_first
        try:
            model.model(**batch)
        finally:
            del layer.forward
    assert seen == [1]


def _save(model: PreTrainedModel, directory: Path, architecture: str) -> Path:
    model.save_pretrained(directory)
    tiny_tokenizer(architecture, directory).save_pretrained(directory)
    return directory


def _with_config_of(architecture: str, kind: Any, **extra: Any) -> PreTrainedModel:
    config = tiny_model(architecture).config
    for name, value in extra.items():
        setattr(config, name, value)
    torch.manual_seed(1)
    model: PreTrainedModel = kind(config)
    return model.eval()


CLASSIFIERS: dict[str, Any] = {
    "esm": EsmForSequenceClassification,
    "esm-absolute": EsmForSequenceClassification,
    "albert": AlbertForSequenceClassification,
    "mpnet": MPNetForSequenceClassification,
    "deberta-v2": DebertaV2ForSequenceClassification,
    "modernbert": ModernBertForSequenceClassification,
}


def _classifier(architecture: str) -> PreTrainedModel:
    kind = CLASSIFIERS[architecture]
    return _with_config_of(
        architecture, kind, num_labels=2, id2label={0: "no", 1: "yes"}, label2id={"no": 0, "yes": 1}
    )


@pytest.mark.parametrize("architecture", OTHER_ARCHITECTURES)
def test_a_sequence_classifier_loads_with_its_head(architecture: str, tmp_path: Path) -> None:
    directory = _save(_classifier(architecture), tmp_path / "classifier", architecture)
    model = load_model(directory)
    assert type(model.model).__name__.endswith("ForSequenceClassification")
    assert model.encoder is model.model.base_model and model.class_names == ("no", "yes")
    assert model.ignored_weights == ()
    batch = _batch(model, architecture)
    captured = _capture(model, batch)
    with torch.inference_mode():
        reference = model.model(**batch, output_attentions=True)
    for layer in captured:
        torch.testing.assert_close(layer.attention, reference.attentions[layer.layer])


@pytest.mark.parametrize(
    ("architecture", "kind", "head"),
    [
        ("esm", EsmForMaskedLM, "lm_head."),
        ("esm-absolute", EsmForMaskedLM, "lm_head."),
        ("albert", AlbertForMaskedLM, "predictions."),
        ("albert", AlbertForPreTraining, "sop_classifier."),
        ("mpnet", MPNetForMaskedLM, "lm_head."),
        ("deberta-v2", DebertaV2ForMaskedLM, "cls."),
        ("modernbert", ModernBertForMaskedLM, "head."),
    ],
)
def test_a_pretraining_checkpoint_loads_as_the_encoder_with_its_head_listed(
    architecture: str, kind: Any, head: str, tmp_path: Path
) -> None:
    original = _with_config_of(architecture, kind)
    directory = _save(original, tmp_path / "mlm", architecture)
    model = load_model(directory)
    bare = ("EsmModel", "AlbertModel", "MPNetModel", "DebertaV2Model", "ModernBertModel")
    assert type(model.model).__name__ in bare
    assert any(name.startswith(head) for name in model.ignored_weights)
    prefix = original.base_model_prefix
    for name in model.ignored_weights:  # only heads (and the pooler) are ignored
        path = name.removeprefix(f"{prefix}.").split(".")
        assert path[0] in model.adapter.heads, name
    # Every weight of the encoder came from the file: the same stream as the checkpoint's (to
    # rounding: the original runs transformers' default attention kernel, not eager) at the
    # real tokens (ModernBERT's sdpa path treats padded queries a local layer cannot see
    # otherwise; no measure reads them).
    batch = _batch(model, architecture)
    valid = batch["attention_mask"].bool()
    with torch.inference_mode():
        expected = original.base_model(**batch, output_hidden_states=True).hidden_states
        got = model.model(**batch, output_hidden_states=True).hidden_states
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a[valid], b[valid])


def test_a_deberta_v3_pretraining_checkpoint_loads_with_both_heads_listed(tmp_path: Path) -> None:
    """DeBERTa-v3's masked-LM layout (``legacy`` off: ``lm_predictions``) with the replaced-token
    detection head its released files also carry (``mask_predictions``, a head transformers
    drops on load itself): the encoder loads, both heads are listed."""
    original = _with_config_of("deberta-v2", DebertaV2ForMaskedLM, legacy=False)
    directory = _save(original, tmp_path / "mlm", "deberta-v2")
    weights = load_file(directory / WEIGHTS)
    weights["mask_predictions.dense.weight"] = torch.zeros(HIDDEN, HIDDEN)
    weights["mask_predictions.classifier.bias"] = torch.zeros(1)
    save_file(weights, directory / WEIGHTS, metadata={"format": "pt"})
    model = load_model(directory)
    assert type(model.model).__name__ == "DebertaV2Model"
    heads = {name.split(".")[0] for name in model.ignored_weights}
    assert heads == {"lm_predictions", "mask_predictions"}


@pytest.mark.parametrize(
    ("architecture", "weight"),
    [
        # transformers saves ESM's LayerNorms under their original names (gamma, beta)
        ("esm", "encoder.layer.1.attention.LayerNorm.gamma"),
        ("esm-absolute", "embeddings.position_embeddings.weight"),
        ("albert", "encoder.albert_layer_groups.0.albert_layers.0.attention.query.weight"),
        ("albert", "encoder.embedding_hidden_mapping_in.weight"),
        ("mpnet", "encoder.layer.1.attention.attn.q.weight"),
        ("mpnet", "encoder.relative_attention_bias.weight"),
        ("deberta-v2", "encoder.layer.0.attention.self.key_proj.bias"),
        ("deberta-v2", "encoder.rel_embeddings.weight"),
        ("modernbert", "layers.1.attn.Wqkv.weight"),
        ("modernbert", "layers.1.attn_norm.weight"),
    ],
)
def test_a_missing_encoder_weight_is_refused_by_name(
    architecture: str, weight: str, directories: dict[str, Path], tmp_path: Path
) -> None:
    directory = Path(shutil.copytree(directories[architecture], tmp_path / architecture))
    weights = load_file(directory / WEIGHTS)
    del weights[weight]
    save_file(weights, directory / WEIGHTS, metadata={"format": "pt"})
    with pytest.raises(ModelError) as refused:
        load_model(directory)
    named = weight.replace(".gamma", ".weight")  # the module's own name for it
    assert str(refused.value) == (
        f"{directory}: 1 weight of the encoder is missing from model.safetensors: {named}; "
        "bertgeom measures only weights that loaded"
    )


def test_an_esm_checkpoint_with_per_layer_rotary_frequencies_loads(
    directories: dict[str, Path], tmp_path: Path
) -> None:
    """Checkpoints saved by older transformers (the hub's ESM-2 files) keep ``inv_freq`` in
    every layer; transformers moves it to the model, and nothing is refused or ignored (but
    the pooler of the bare model)."""
    directory = Path(shutil.copytree(directories["esm"], tmp_path / "esm"))
    weights = load_file(directory / WEIGHTS)
    (saved,) = [name for name in weights if name.endswith("inv_freq")]
    frequencies = weights.pop(saved)
    for layer in range(LAYERS):
        name = f"encoder.layer.{layer}.attention.self.rotary_embeddings.inv_freq"
        weights[name] = frequencies.clone()
    save_file(weights, directory / WEIGHTS, metadata={"format": "pt"})
    model = load_model(directory)
    assert torch.equal(model.encoder.rotary_embeddings.inv_freq, frequencies)
    assert model.ignored_weights == ("pooler.dense.bias", "pooler.dense.weight")


def test_a_tokenizer_without_a_closing_token_is_refused(
    directories: dict[str, Path], tmp_path: Path
) -> None:
    """An ESM tokenizer without ``<eos>`` adds only ``<cls>``: the last residue would count as
    [SEP] in the gates, so the model is refused."""
    directory = Path(shutil.copytree(directories["esm"], tmp_path / "esm"))
    path = directory / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "eos_token": None}))
    with pytest.raises(ModelError, match=r"turns 'L' into \['<cls>', 'L'\]; .* adds both$"):
        load_model(directory)


@pytest.mark.parametrize("kind", ["gpt2", "deberta", "t5"])
def test_unsupported_model_types_are_refused_by_name(kind: str, tmp_path: Path) -> None:
    assert kind not in ADAPTERS
    directory = tmp_path / kind
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": kind}))
    with pytest.raises(ModelError) as refused:
        load_model(directory)
    message = str(refused.value)
    assert f"model type {kind!r} is not supported" in message and "\n" not in message
    for supported in ("albert", "esm", "mpnet", "deberta-v2", "modernbert"):
        assert supported in message


@pytest.mark.parametrize("architecture", OTHER_ARCHITECTURES)
def test_gate_scores_of_the_captured_attention_equal_the_loop_reference(
    architecture: str, loaded: dict[str, LoadedModel]
) -> None:
    """The seven gate scores of every head, from the captured probabilities of a padded batch,
    equal the plain loops over DESIGN's definitions on each matrix (ModernBERT's local layer:
    the banded matrix its window leaves)."""
    model = loaded[architecture]
    batch = _batch(model, architecture)
    mask = batch["attention_mask"]
    for layer in _capture(model, batch):
        attention = layer.attention.double()
        scores = gate_scores(attention, token_mask(mask))
        for b in range(attention.shape[0]):
            for h in range(HEADS):
                expected = reference_scores(attention[b, h].numpy(), mask[b].numpy())
                torch.testing.assert_close(
                    scores[b, h], torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0
                )


@pytest.mark.parametrize("architecture", ["mpnet", "deberta-v2"])
def test_attention_returned_only_when_asked_is_asked_of_the_attention_module_alone(
    architecture: str, loaded: dict[str, LoadedModel]
) -> None:
    """Without the flag the capture gets no probabilities (the module returns them only when
    asked); with it, the model still returns none: DeBERTa's layer passes on None, MPNet's
    layer passes on the very tensor the capture got (no copy), which its encoder drops when
    the next layer returns. The model's output is the same with and without the capture."""
    model = loaded[architecture]
    batch = _batch(model, architecture)
    unasked = replace(model.adapter, attention_flag=None)
    with (
        torch.inference_mode(),
        LayerCapture(model.encoder, unasked, HEADS, lambda layer: None),
        pytest.raises(ModelError, match="layer 0 returned no attention probabilities"),
    ):
        model.model(**batch)
    outputs: list[Any] = []
    layers: list[CapturedLayer] = []
    with torch.inference_mode(), LayerHooks(model.encoder, model.adapter) as hooks:
        hooks.after("", lambda index, output: outputs.append(output))
        with LayerCapture(model.encoder, model.adapter, HEADS, layers.append):
            captured = model.model(**batch)
        plain = model.model(**batch)
    assert captured.attentions is None
    for output, layer in zip(outputs[:LAYERS], layers, strict=True):
        assert output[1] is (layer.attention if architecture == "mpnet" else None)
    unasked_output = outputs[LAYERS]  # the first layer of the pass without the capture
    assert len(unasked_output) == 1 if architecture == "mpnet" else unasked_output[1] is None
    assert torch.equal(captured.last_hidden_state, plain.last_hidden_state)


def test_mpnet_attention_is_softmax_of_the_content_scores_plus_the_position_bias(
    loaded: dict[str, LoadedModel],
) -> None:
    """The captured probabilities are softmax(q.k / sqrt(dk) + relative position bias), the
    bias the encoder computes once for every layer; the content term alone is not them (what
    ``M_h = W_q^T W_k`` and the subspace measures describe)."""
    model = loaded["mpnet"]
    batch = _batch(model, "mpnet")
    mask = batch["attention_mask"]
    for captured in _capture(model, batch):
        q = _heads(captured.queries) / math.sqrt(HIDDEN // HEADS)
        k = _heads(captured.keys)
        with torch.inference_mode():
            bias = model.encoder.encoder.compute_position_bias(captured.layer_input)
        with_bias = _softmax_attention(q, k, mask, bias)
        torch.testing.assert_close(with_bias, captured.attention)
        assert not torch.allclose(_softmax_attention(q, k, mask), captured.attention, atol=1e-3)


def _deberta_content_attention(captured: CapturedLayer, mask: Tensor) -> Tensor:
    """Softmax of DeBERTa's content-to-content term alone, ``q.k / sqrt(3 dk)`` (both position
    terms present: ``scale_factor`` 3), over the valid keys."""
    q = _heads(captured.queries) / math.sqrt(3 * HIDDEN // HEADS)
    return _softmax_attention(q, _heads(captured.keys), mask)


def test_deberta_attention_holds_the_position_terms_beyond_the_content_term(
    loaded: dict[str, LoadedModel],
) -> None:
    """The captured probabilities (the model's own: the earlier test) are not those of the
    content-to-content term alone: the c2p and p2c terms are in them, and only the c2c term is
    what the query/key measures describe. Valid queries give padded keys no mass."""
    model = loaded["deberta-v2"]
    batch = _batch(model, "deberta-v2")
    mask = batch["attention_mask"]
    for captured in _capture(model, batch):
        content = _deberta_content_attention(captured, mask)
        valid = mask.bool()[:, None, :, None].expand_as(content)
        assert not torch.allclose(content[valid], captured.attention[valid], atol=1e-3)
        padded_keys = captured.attention.masked_select(valid & (mask[:, None, None, :] == 0))
        assert bool((padded_keys == 0).all())


def test_deberta_without_shared_position_keys_is_captured_exactly(tmp_path: Path) -> None:
    """DeBERTa-v2 with its own position projections (``share_att_key`` off: ``pos_key_proj``,
    ``pos_query_proj``) and linear relative positions (no buckets)."""
    common = {"vocab_size": len(VOCABULARY), "pad_token_id": 0}
    bert_like = {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": 2 * HIDDEN,
        "max_position_embeddings": POSITIONS,
    }
    config = deberta_config(common, bert_like, share_att_key=False, position_buckets=-1)
    torch.manual_seed(2)
    original = DebertaV2Model(config)
    with torch.no_grad():
        for parameter in original.parameters():
            parameter.normal_(0.0, 0.3)
    directory = _save(original.eval(), tmp_path / "deberta", "deberta-v2")
    model = load_model(directory)
    assert hasattr(model.layers()[0].attention.self, "pos_key_proj")
    batch = _batch(model, "deberta-v2")
    captured = _capture(model, batch)
    with torch.inference_mode():
        reference = model.model(**batch, output_attentions=True, output_hidden_states=True)
    for layer in captured:
        torch.testing.assert_close(layer.attention, reference.attentions[layer.layer])
        torch.testing.assert_close(layer.layer_output, reference.hidden_states[layer.layer + 1])
        query = model.layers()[layer.layer].attention.self.query_proj
        with torch.inference_mode():
            torch.testing.assert_close(layer.queries, query(layer.layer_input))


def test_deberta_with_a_convolution_after_the_first_layer_is_refused(
    directories: dict[str, Path], tmp_path: Path
) -> None:
    directory = Path(shutil.copytree(directories["deberta-v2"], tmp_path / "deberta"))
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "conv_kernel_size": 3}))
    with pytest.raises(ModelError) as refused:
        load_model(directory)
    assert str(refused.value) == (
        f"{directory}: DeBERTa-v2 models with a convolution after the first layer "
        "(conv_kernel_size 3) are not supported: the stream entering layer 1 is not the output "
        "of layer 0 (DeBERTa-v3 has none)"
    )


def test_modernbert_local_layers_attend_within_their_window(
    loaded: dict[str, LoadedModel],
) -> None:
    """Layer 0 is global, layer 1 local: its captured probabilities are zero beyond
    ``MODERNBERT_WINDOW`` positions on either side (the sliding-window mask is in them, as in
    the model's own ``output_attentions``), the global layer's are not; the padded batch stays
    ``(batch, head, seq, seq)`` (no unpadding on the eager path)."""
    model = loaded["modernbert"]
    assert model.config.layer_types == ["full_attention", "sliding_attention"]
    batch = _batch(model, "modernbert")
    seq = batch["input_ids"].shape[1]
    positions = torch.arange(seq)
    outside = (positions[:, None] - positions[None, :]).abs() > MODERNBERT_WINDOW
    global_layer, local_layer = _capture(model, batch)
    for layer in (global_layer, local_layer):
        assert layer.attention.shape == (len(batch["input_ids"]), HEADS, seq, seq)
        assert layer.queries.shape == (len(batch["input_ids"]), seq, HIDDEN)
    # (batch, head, query): the mass beyond the window of each valid query (a padded query
    # too far from every real token sees no key and spreads evenly: never measured).
    valid = batch["attention_mask"].bool()[:, None, :].expand(-1, HEADS, -1)
    local_reach = local_layer.attention.masked_fill(~outside, 0.0).sum(-1)
    assert bool((local_reach[valid] == 0).all())
    global_reach = global_layer.attention.masked_fill(~outside, 0.0).sum(-1)
    assert bool((global_reach[valid] > 0).any())


def test_modernbert_attention_is_softmax_of_the_rotated_captured_queries_and_keys(
    loaded: dict[str, LoadedModel],
) -> None:
    """The captured q/k (the first two blocks of ``Wqkv``, before the rotation) rotated by
    position, scaled by ``dk^-1/2`` and masked as the layer's kind (window or not) give the
    captured attention."""
    model = loaded["modernbert"]
    batch = _batch(model, "modernbert")
    mask = batch["attention_mask"]
    rotary = model.encoder.rotary_emb
    for captured in _capture(model, batch):
        kind = model.config.layer_types[captured.layer]
        seq = captured.queries.shape[1]
        q = _heads(captured.queries) * (HIDDEN // HEADS) ** -0.5
        k = _heads(captured.keys)
        with torch.inference_mode():
            cos, sin = rotary(captured.layer_input, torch.arange(seq)[None], kind)
            q, k = modeling_modernbert.apply_rotary_pos_emb(q, k, cos, sin)
        window = None if kind == "full_attention" else MODERNBERT_WINDOW
        torch.testing.assert_close(
            _softmax_attention(q, k, mask, window=window), captured.attention
        )


def test_modernbert_fused_projection_is_split_into_query_key_and_value_blocks(
    loaded: dict[str, LoadedModel],
) -> None:
    """``Wqkv``'s rows ``[q | k | v]``: the weight-based measures and the subspace measures get
    the query and key blocks (no biases), each head's rows where ModernBERT's attention
    ``view(..., 3, H, dk)`` puts them."""
    model = loaded["modernbert"]
    width = HIDDEN  # H dk
    for layer, weights, (wq, bq, wk, bk) in zip(
        model.layers(), model.attention_weights(), model.query_key_weights(), strict=True
    ):
        fused = layer.attn.Wqkv.weight.detach()
        assert fused.shape == (3 * width, HIDDEN) and layer.attn.Wqkv.bias is None
        assert torch.equal(wq, fused[:width]) and torch.equal(wk, fused[width : 2 * width])
        assert bq is None and bk is None
        assert torch.equal(weights.weight_q, wq) and torch.equal(weights.weight_k, wk)
        assert torch.equal(weights.weight_v, fused[2 * width :])
        by_view = fused.view(3, HEADS, width // HEADS, HIDDEN)
        assert torch.equal(by_view[1, 2], wk[2 * (width // HEADS) : 3 * (width // HEADS)])


def test_an_architecture_whose_adapter_refuses_ablation_is_refused_by_name(
    tmp_path: Path,
) -> None:
    """``ArchitectureAdapter.no_ablation`` (no supported architecture sets it today: ALBERT's
    shared layers and ModernBERT's pooling are handled) refuses ``--ablation`` with its reason."""
    from bertgeom.capture.ablation_plan import check_ablation

    directory = _save(_classifier("albert"), tmp_path / "albert", "albert")
    model = load_model(directory)
    assert check_ablation(model, ["zero"])  # supported as it is
    model.adapter = replace(model.adapter, no_ablation="a reason")
    with pytest.raises(InputError, match="not supported for albert models: a reason"):
        check_ablation(model, ["zero"])
