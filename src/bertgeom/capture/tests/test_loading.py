"""Loading model directories: every supported architecture, and one clear error otherwise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2Model

from bertgeom.capture import loading
from bertgeom.capture.loading import LoadedModel, check_attention_output, load_model
from bertgeom.capture.tests.tiny_models import (
    ARCHITECTURES,
    HEADS,
    HIDDEN,
    LAYERS,
    POSITIONS,
    save_tiny_classifier,
    tiny_model,
    tiny_tokenizer,
)
from bertgeom.errors import ModelError


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_loads_with_eager_attention(
    architecture: str, loaded_models: dict[str, LoadedModel]
) -> None:
    loaded = loaded_models[architecture]
    assert loaded.config._attn_implementation == "eager"
    assert (loaded.n_layers, loaded.n_heads, loaded.hidden_size) == (LAYERS, HEADS, HIDDEN)
    assert loaded.max_tokens == POSITIONS
    assert loaded.class_names is None and loaded.kmers is None
    weights = loaded.attention_weights()
    assert len(weights) == LAYERS and weights[0].weight_o.shape == (HIDDEN, HIDDEN)
    summary = loaded.summary()
    assert summary["model_type"] == architecture and summary["n_heads"] == HEADS


def test_a_bertgeom_classifier_keeps_its_head(tmp_path: Path) -> None:
    directory = save_tiny_classifier(tmp_path / "classifier", ("Alpha", "Beta"))
    loaded = load_model(directory)
    assert type(loaded.model).__name__ == "BertForSequenceClassification"
    assert loaded.encoder is loaded.model.base_model
    assert loaded.class_names == ("Alpha", "Beta")
    assert loaded.kmers is not None and (loaded.kmers.k, loaded.kmers.stride) == (12, 9)


def _config_only(directory: Path, config: dict[str, object]) -> Path:
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_unusable_directories_are_refused(
    tmp_path: Path, model_directories: dict[str, Path]
) -> None:
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (tmp_path / "absent", "model directory not found")
    (tmp_path / "file").write_text("x")
    cases["file"] = (tmp_path / "file", "not a directory")
    (tmp_path / "empty").mkdir()
    cases["no config"] = (tmp_path / "empty", "no config.json")
    gpt2 = tmp_path / "gpt2"
    GPT2Model(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=10)).save_pretrained(gpt2)
    cases["unsupported"] = (gpt2, "model type 'gpt2' is not supported")
    pickled = tmp_path / "pickled"
    shutil.copytree(model_directories["bert"], pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    cases["pickled"] = (pickled, "only pickled weights")
    cases["no weights"] = (_config_only(tmp_path / "bare", {"model_type": "bert"}), "no weights")
    for name, (directory, message) in cases.items():
        with pytest.raises(ModelError, match=message):
            load_model(directory)
        print(name, "refused")


def test_a_model_without_attention_probabilities_is_refused(
    loaded_models: dict[str, LoadedModel],
) -> None:
    loaded = loaded_models["bert"]
    model = loaded.model
    try:
        model.set_attn_implementation("sdpa")
        with pytest.raises(ModelError, match="no attention probabilities"):
            check_attention_output(loaded)
    finally:
        model.set_attn_implementation("eager")
    check_attention_output(loaded)


def test_loading_with_another_kernel_is_refused(
    model_directories: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loading, "ATTENTION_IMPLEMENTATION", "sdpa")
    with pytest.raises(ModelError, match="no attention probabilities"):
        load_model(model_directories["distilbert"])


def test_mpnet_numbers_positions_from_its_fixed_padding_index(tmp_path: Path) -> None:
    """MPNet's embeddings number positions from 2 whatever the config's ``pad_token_id``, so
    its longest input is ``max_position_embeddings - 2`` even with ``pad_token_id`` 0 (reading
    the config's would allow one position more, and the last would index past the table)."""
    from transformers import MPNetConfig, MPNetModel

    config = MPNetConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=42,
        pad_token_id=0,
    )
    MPNetModel(config).save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.max_tokens == 40
    ids = (torch.arange(40) % 38 + 2).unsqueeze(0)  # 40 tokens, none of them id 1 (padding)
    with torch.no_grad():
        loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids))  # the longest input runs


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_are_measured_in_float32(dtype: torch.dtype, tmp_path: Path) -> None:
    """A file saved in half precision loads in its own dtype; bertgeom upcasts it (exactly), so
    the forward pass and every measure run in float32."""
    model = tiny_model("bert").to(dtype)
    model.save_pretrained(tmp_path)
    tiny_tokenizer("bert", tmp_path).save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    stored = dict(model.named_parameters())
    for name, parameter in loaded.encoder.named_parameters():
        assert parameter.dtype == torch.float32, name
        assert torch.equal(parameter, stored[name].float()), name
