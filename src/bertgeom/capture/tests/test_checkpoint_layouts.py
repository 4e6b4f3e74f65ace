"""Checkpoints laid out as the released ones of each new architecture load exactly, or are
refused by name.

The released files (ESM-2, Nucleotide Transformer v1, SaProt, DeBERTa-v3, ModernBERT, ALBERT,
MPNet) could not be downloaded here, so each layout is rebuilt from what transformers and the
public record say those files hold: the state dict of the pretraining class they were saved
from (``EsmForMaskedLM``, ``DebertaV2ForMaskedLM``, ...), in the names of the transformers
version that saved them, plus the tensors older versions of those classes saved and the current
ones no longer have (``LAYOUTS`` says for each where it comes from), minus the tied copies
``save_pretrained`` leaves out. Every weight is random and tiny (2 layers, hidden 32).

For each: the encoder's every tensor is the file's, bit for bit; the head weights and nothing
else are listed as ignored; ``bertgeom analyze`` runs on it. And the refusals a user meets with
such files: pickled weights only, a shard missing, one encoder tensor of another shape.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import (
    AlbertConfig,
    AlbertForMaskedLM,
    DebertaV2ForMaskedLM,
    EsmConfig,
    EsmForMaskedLM,
    EsmForSequenceClassification,
    EsmTokenizer,
    ModernBertConfig,
    ModernBertForMaskedLM,
    MPNetConfig,
    MPNetForMaskedLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from typer.testing import CliRunner

from bertgeom.capture.loading import LoadedModel, load_model
from bertgeom.capture.tests.tiny_models import (
    ESM_VOCABULARY,
    HEADS,
    HIDDEN,
    LAYERS,
    MPNET_VOCABULARY,
    POSITIONS,
    VOCABULARY,
    deberta_config,
    esm_tokenizer,
    mpnet_tokenizer,
    protein_sequences,
    sentences,
    tokenizer,
)
from bertgeom.cli.main import app
from bertgeom.errors import ModelError

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
_BERT_LIKE: dict[str, Any] = {
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "intermediate_size": 2 * HIDDEN,
    "max_position_embeddings": POSITIONS,
}
NT_SPECIALS = ["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>"]
NT_VOCABULARY = [
    *NT_SPECIALS,
    *("".join(kmer) for kmer in itertools.product("ATCG", repeat=6)),
    *"ATCGN",
]
"""Nucleotide Transformer v1's vocabulary: its special tokens (``<pad>`` = 1, ``<mask>`` = 2,
``<cls>`` = 3), every 6-mer, then single nucleotides for what is left over."""


def _esm(rotary: bool, vocabulary: int, mask: int) -> EsmForMaskedLM:
    return EsmForMaskedLM(
        EsmConfig(
            vocab_size=vocabulary,
            pad_token_id=1,
            mask_token_id=mask,
            position_embedding_type="rotary" if rotary else "absolute",
            token_dropout=rotary,
            emb_layer_norm_before=False,
            **{**_BERT_LIKE, "max_position_embeddings": POSITIONS + 2},
        )
    )


def _modernbert() -> ModernBertForMaskedLM:
    config = ModernBertConfig(
        vocab_size=len(VOCABULARY),
        pad_token_id=0,
        cls_token_id=2,
        sep_token_id=3,
        bos_token_id=2,
        eos_token_id=3,
        local_attention=4,
        global_attn_every_n_layers=2,
        **_BERT_LIKE,
    )
    return ModernBertForMaskedLM(config)


def _random(*shape: int) -> Callable[[dict[str, Tensor]], Tensor]:
    return lambda state: torch.randn(*shape)


def _positions(length: int) -> Callable[[dict[str, Tensor]], Tensor]:
    return lambda state: torch.arange(length).expand((1, -1)).contiguous()


def _esm_inv_freq(state: dict[str, Tensor]) -> Tensor:
    return state["esm.rotary_embeddings.inv_freq"].clone()


def _nt_tokenizer(directory: Path, eos: bool = True) -> EsmTokenizer:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(NT_VOCABULARY) + "\n")
    return EsmTokenizer(
        str(directory / "vocab.txt"), eos_token="<eos>" if eos else None, model_max_length=1000
    )


def _dna(count: int) -> list[str]:
    generator = torch.Generator().manual_seed(3)
    lengths = torch.randint(12, 60, (count,), generator=generator)
    return [
        "".join("ACGT"[int(i)] for i in torch.randint(0, 4, (int(n),), generator=generator))
        for n in lengths
    ]


@dataclass(frozen=True)
class Layout:
    """A released checkpoint's layout. ``build``: its pretraining class, tiny; ``extra``: the
    tensors its files carry beyond that class's state dict (name: how to make it from the
    state dict); ``drop``: names of the state dict its files lack; ``config``: config.json
    entries as released (None removes one); ``heads``: the top-level names, in the file, of the
    weights the bare encoder does not load (the expected ``ignored_weights``);
    ``dropped_on_load``: file tensors transformers itself drops (non-persistent buffers, unused
    position embeddings of ``_keys_to_ignore_on_load_unexpected``); ``renamed``: encoder
    weights that come from another name of the file."""

    build: Callable[[], PreTrainedModel]
    tokenizer: Callable[[Path], PreTrainedTokenizerBase]
    texts: Callable[[int], list[str]]
    extra: dict[str, Callable[[dict[str, Tensor]], Tensor]] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    heads: tuple[str, ...] = ()
    dropped_on_load: tuple[str, ...] = ()
    renamed: dict[str, str] = field(default_factory=dict)
    shards: int = 1


_ESM2_LAYERS = [
    f"esm.encoder.layer.{i}.attention.self.rotary_embeddings.inv_freq" for i in range(2)
]
LAYOUTS: dict[str, Layout] = {
    # facebook/esm2_t6_8M_UR50D (EsmForMaskedLM, saved by transformers 4.2x): the 2022 class
    # kept position_ids as a persistent buffer, made position_embeddings for rotary models too
    # (hence EsmPreTrainedModel._keys_to_ignore_on_load_unexpected; SaProt's load warnings name
    # it) and one rotary inv_freq per layer (EsmModel.load_hook's docstring); the tied
    # lm_head.decoder.weight is in the state dict (EsmForMaskedLM._tied_weights_keys).
    "esm-2": Layout(
        build=lambda: _esm(True, len(ESM_VOCABULARY), ESM_VOCABULARY.index("<mask>")),
        tokenizer=esm_tokenizer,
        texts=lambda count: protein_sequences(count, seed=4),
        extra={
            "esm.embeddings.position_ids": _positions(POSITIONS + 2),
            "esm.embeddings.position_embeddings.weight": _random(POSITIONS + 2, HIDDEN),
            **dict.fromkeys(_ESM2_LAYERS, _esm_inv_freq),
        },
        drop=("esm.rotary_embeddings.inv_freq",),
        config={"architectures": ["EsmForMaskedLM"], "is_folding_model": False},
        heads=("lm_head",),
        dropped_on_load=(
            "esm.embeddings.position_ids",
            "esm.embeddings.position_embeddings.weight",
            *_ESM2_LAYERS[1:],
        ),
        renamed={"rotary_embeddings.inv_freq": _ESM2_LAYERS[0]},
    ),
    # InstaDeepAI/nucleotide-transformer-500m-human-ref (EsmForMaskedLM, absolute positions,
    # 6-mer vocabulary, no token dropout), sharded here as the larger NT v1 releases are.
    "nucleotide-transformer-v1": Layout(
        build=lambda: _esm(False, len(NT_VOCABULARY), NT_VOCABULARY.index("<mask>")),
        tokenizer=_nt_tokenizer,
        texts=_dna,
        extra={"esm.embeddings.position_ids": _positions(POSITIONS + 2)},
        config={"architectures": ["EsmForMaskedLM"]},
        heads=("lm_head",),
        dropped_on_load=("esm.embeddings.position_ids",),
        shards=2,
    ),
    # microsoft/deberta-v3-base: the discriminator of replaced-token detection, with the
    # generator's masked-LM head in v3's layout (lm_predictions.lm_head.*: DebertaV2ForMaskedLM
    # with legacy False) and the RTD head mask_predictions.* (DebertaV2ForMaskedLM's
    # _keys_to_ignore_on_load_unexpected; the load warnings of v3 checkpoints name its dense,
    # LayerNorm and classifier), an unused embeddings.position_embeddings
    # (DebertaV2PreTrainedModel._keys_to_ignore_on_load_unexpected); its config.json names no
    # architectures and gives pos_att_type as "p2c|c2p".
    "deberta-v3": Layout(
        build=lambda: DebertaV2ForMaskedLM(
            deberta_config(
                {"vocab_size": len(VOCABULARY), "pad_token_id": 0}, _BERT_LIKE, legacy=False
            )
        ),
        tokenizer=lambda directory: tokenizer(),
        texts=lambda count: sentences(count, seed=4),
        extra={
            "deberta.embeddings.position_embeddings.weight": _random(POSITIONS, HIDDEN),
            "mask_predictions.dense.weight": _random(HIDDEN, HIDDEN),
            "mask_predictions.dense.bias": _random(HIDDEN),
            "mask_predictions.LayerNorm.weight": _random(HIDDEN),
            "mask_predictions.LayerNorm.bias": _random(HIDDEN),
            "mask_predictions.classifier.weight": _random(1, HIDDEN),
            "mask_predictions.classifier.bias": _random(1),
        },
        config={"architectures": None, "pos_att_type": "p2c|c2p", "legacy": None},
        heads=("lm_predictions", "mask_predictions"),
        dropped_on_load=("deberta.embeddings.position_embeddings.weight",),
    ),
    # answerdotai/ModernBERT-base (ModernBertForMaskedLM): head.dense, head.norm (no biases),
    # decoder.bias; decoder.weight is tied to the token embeddings
    # (ModernBertForMaskedLM._tied_weights_keys), which save_pretrained leaves out.
    "modernbert": Layout(
        build=_modernbert,
        tokenizer=lambda directory: tokenizer(),
        texts=lambda count: sentences(count, seed=4),
        drop=("decoder.weight",),
        config={"architectures": ["ModernBertForMaskedLM"], "classifier_pooling": "mean"},
        heads=("head", "decoder"),
    ),
    # albert-base-v2 (AlbertForMaskedLM, converted from TF's pretraining checkpoint): the
    # pooler albert.pooler.* that AlbertForMaskedLM does not build, predictions.* with the
    # tied decoder; no embeddings.position_ids (transformers issue 6700).
    "albert": Layout(
        build=lambda: AlbertForMaskedLM(
            AlbertConfig(vocab_size=len(VOCABULARY), embedding_size=16, **_BERT_LIKE)
        ),
        tokenizer=lambda directory: tokenizer(),
        texts=lambda count: sentences(count, seed=4),
        extra={
            "albert.pooler.weight": _random(HIDDEN, HIDDEN),
            "albert.pooler.bias": _random(HIDDEN),
        },
        config={"architectures": ["AlbertForMaskedLM"]},
        heads=("predictions", "albert.pooler"),
    ),
    # microsoft/mpnet-base (MPNetForMaskedLM, transformers 4.x): position_ids persistent then,
    # the pooler mpnet.pooler.dense.*, lm_head.* with the tied decoder.
    "mpnet": Layout(
        build=lambda: MPNetForMaskedLM(
            MPNetConfig(
                vocab_size=len(MPNET_VOCABULARY),
                pad_token_id=1,
                **{**_BERT_LIKE, "max_position_embeddings": POSITIONS + 2},
            )
        ),
        tokenizer=mpnet_tokenizer,
        texts=lambda count: sentences(count, seed=4),
        extra={
            "mpnet.embeddings.position_ids": _positions(POSITIONS + 2),
            "mpnet.pooler.dense.weight": _random(HIDDEN, HIDDEN),
            "mpnet.pooler.dense.bias": _random(HIDDEN),
        },
        config={"architectures": ["MPNetForMaskedLM"]},
        heads=("lm_head", "mpnet.pooler"),
        dropped_on_load=("mpnet.embeddings.position_ids",),
    ),
}


def save_layout(name: str, directory: Path) -> dict[str, Tensor]:
    """Write ``LAYOUTS[name]`` to ``directory`` (config.json, safetensors weights, one file or
    ``shards`` with an index, tokenizer files) and return the tensors written, by name."""
    layout = LAYOUTS[name]
    torch.manual_seed(0)
    model = layout.build().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    weights = {key: value for key, value in state.items() if key not in layout.drop}
    weights.update({key: make(state) for key, make in layout.extra.items()})
    directory.mkdir(parents=True)
    model.config.save_pretrained(directory)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    for key, value in layout.config.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    config_path.write_text(json.dumps(config, indent=2))
    _write_weights(weights, directory, layout.shards)
    layout.tokenizer(directory).save_pretrained(directory)
    return weights


def _write_weights(weights: dict[str, Tensor], directory: Path, shards: int) -> None:
    if shards == 1:
        save_file(weights, str(directory / WEIGHTS), metadata={"format": "pt"})
        return
    names = sorted(weights)
    weight_map: dict[str, str] = {}
    for shard in range(shards):
        file_name = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        part = names[shard::shards]
        save_file({key: weights[key] for key in part}, str(directory / file_name), {"format": "pt"})
        weight_map.update(dict.fromkeys(part, file_name))
    size = sum(tensor.numel() * tensor.element_size() for tensor in weights.values())
    index = {"metadata": {"total_size": size}, "weight_map": weight_map}
    (directory / INDEX).write_text(json.dumps(index, indent=2))


def _under(name: str, heads: tuple[str, ...]) -> bool:
    return any(name == head or name.startswith(f"{head}.") for head in heads)


def assert_exact(loaded: LoadedModel, weights: dict[str, Tensor], layout: Layout) -> None:
    """Every tensor of the encoder is the file's (bit for bit), none comes from a head, the
    ignored weights are the heads' and every other tensor of the file is accounted for."""
    prefix = f"{loaded.model.base_model_prefix}."
    used = set()
    for name, tensor in loaded.encoder.state_dict().items():
        if name in loaded.absent_weights:
            continue
        source = layout.renamed.get(name, prefix + name)
        assert source in weights, f"{name}: not from the file"
        assert not _under(source, layout.heads), f"{name}: a head weight in the encoder"
        assert torch.equal(tensor, weights[source]), name
        used.add(source)
    expected_ignored = sorted(name for name in weights if _under(name, layout.heads))
    assert list(loaded.ignored_weights) == expected_ignored
    assert loaded.summary()["ignored_weights"] == expected_ignored
    unaccounted = set(weights) - used - set(expected_ignored) - set(layout.dropped_on_load)
    assert not unaccounted


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_a_released_layout_loads_exactly_and_is_analysed(name: str, tmp_path: Path) -> None:
    layout = LAYOUTS[name]
    directory = tmp_path / name
    weights = save_layout(name, directory)
    loaded = load_model(directory)
    assert_exact(loaded, weights, layout)
    assert loaded.absent_weights == () and (loaded.n_layers, loaded.n_heads) == (LAYERS, HEADS)
    shard_names = sorted(path.name for path in directory.glob("*.safetensors"))
    assert sorted(loaded.summary()["weights_sha256"]) == shard_names
    assert len(shard_names) == layout.shards
    (tmp_path / "inputs.txt").write_text("\n".join(layout.texts(3)) + "\n")
    out = tmp_path / "results"
    arguments = ["--model", directory, "--text", tmp_path / "inputs.txt", "--out", out]
    result = CliRunner().invoke(app, ["analyze", *(str(a) for a in arguments)])
    assert result.exit_code == 0, result.output
    model = json.loads((out / "manifest.json").read_text())["model"]
    assert model["ignored_weights"] == list(loaded.ignored_weights)
    assert model["absent_weights"] == []


def test_an_esm_checkpoint_without_the_contact_head_loads_and_lists_it(tmp_path: Path) -> None:
    """SaProt's checkpoints (ESM-2 layers, EsmForMaskedLM) have no contact head, which only
    ``predict_contacts`` runs: the model loads, the head keeps transformers' initial values and
    the manifest lists it. Any other missing weight still refuses the model, by name alone."""
    directory = tmp_path / "saprot"
    weights = save_layout("esm-2", directory)
    contact = {key: weights.pop(key) for key in list(weights) if "contact_head" in key}
    assert sorted(contact) == [
        "esm.contact_head.regression.bias",
        "esm.contact_head.regression.weight",
    ]
    save_file(weights, str(directory / WEIGHTS), metadata={"format": "pt"})
    loaded = load_model(directory)
    absent = ("contact_head.regression.bias", "contact_head.regression.weight")
    assert loaded.absent_weights == absent
    assert loaded.summary()["absent_weights"] == list(absent)
    assert_exact(loaded, weights, LAYOUTS["esm-2"])
    del weights["esm.encoder.layer.1.attention.self.value.bias"]
    save_file(weights, str(directory / WEIGHTS), metadata={"format": "pt"})
    with pytest.raises(ModelError) as refused:
        load_model(directory)
    assert str(refused.value) == (
        f"{directory}: 1 weight of the encoder is missing from model.safetensors: "
        "encoder.layer.1.attention.self.value.bias; bertgeom measures only weights that loaded"
    )


def test_an_esm_classifier_without_the_contact_head_keeps_its_head(tmp_path: Path) -> None:
    """A classifier fine-tuned from SaProt: ``esm.``-prefixed names, the contact head absent,
    the classification head loaded (a missing weight of it still refuses the model)."""
    directory = tmp_path / "classifier"
    torch.manual_seed(0)
    model = EsmForSequenceClassification(_esm(True, len(ESM_VOCABULARY), 32).config)
    model.config.id2label, model.config.label2id = {0: "a", 1: "b"}, {"a": 0, "b": 1}
    model.save_pretrained(directory)
    esm_tokenizer(directory).save_pretrained(directory)
    weights = {
        key: value for key, value in load_file(directory / WEIGHTS).items() if "contact" not in key
    }
    save_file(weights, str(directory / WEIGHTS), metadata={"format": "pt"})
    loaded = load_model(directory)
    assert loaded.class_names == ("a", "b")
    assert loaded.absent_weights == (
        "esm.contact_head.regression.bias",
        "esm.contact_head.regression.weight",
    )
    del weights["classifier.out_proj.bias"]
    save_file(weights, str(directory / WEIGHTS), metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"1 weight of the classification head is missing"):
        load_model(directory)


def test_nucleotide_transformer_v1s_own_tokenizer_is_refused_by_name(tmp_path: Path) -> None:
    """NT v1's tokenizer has no ``<eos>`` (transformers PR 22770 made EsmTokenizer add none
    then): ``<cls> ACGTAC ...`` with no closing token, which the measures cannot take."""
    directory = tmp_path / "nt"
    save_layout("nucleotide-transformer-v1", directory)
    for path in directory.glob("*token*"):
        path.unlink()
    _nt_tokenizer(directory, eos=False).save_pretrained(directory)
    with pytest.raises(ModelError) as refused:
        load_model(directory)
    assert str(refused.value).startswith(
        f"{directory}: the tokenizer (EsmTokenizer) turns 'AAAAAA' into ['<cls>', 'AAAAAA']; "
    )


def test_pickled_releases_are_refused(tmp_path: Path) -> None:
    """A release with ``pytorch_model.bin`` only (one file, or shards with their index)."""
    single = tmp_path / "single"
    weights = save_layout("deberta-v3", single)
    (single / WEIGHTS).unlink()
    torch.save(weights, single / "pytorch_model.bin")
    sharded = tmp_path / "sharded"
    save_layout("deberta-v3", sharded)
    (sharded / WEIGHTS).unlink()
    names = sorted(weights)
    weight_map = {}
    for shard, part in enumerate((names[::2], names[1::2]), start=1):
        file_name = f"pytorch_model-{shard:05d}-of-00002.bin"
        torch.save({key: weights[key] for key in part}, sharded / file_name)
        weight_map.update(dict.fromkeys(part, file_name))
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for directory in (single, sharded):
        with pytest.raises(ModelError) as refused:
            load_model(directory)
        assert str(refused.value) == (
            f"{directory}: only pickled weights (*.bin), which bertgeom does not load; save the "
            "model with safetensors"
        )


def test_a_shard_missing_is_refused_by_name(tmp_path: Path) -> None:
    directory = tmp_path / "nt"
    save_layout("nucleotide-transformer-v1", directory)
    (directory / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelError) as refused:
        load_model(directory)
    assert str(refused.value) == (
        f"{directory / INDEX}: 1 of its 2 shards missing (model-00002-of-00002.safetensors); "
        "download or copy the whole model"
    )


@pytest.mark.parametrize(
    ("name", "weight", "shape", "message"),
    [
        (
            "deberta-v3",
            "deberta.encoder.layer.1.attention.self.key_proj.weight",
            (HIDDEN, HIDDEN // 2),
            "1 weight of model.safetensors does not have the shapes config.json gives "
            "(encoder.layer.1.attention.self.key_proj.weight (32x16 in the file, 32x32 by "
            "config.json))",
        ),
        (
            "deberta-v3",
            "deberta.encoder.rel_embeddings.weight",
            None,
            "1 weight of the encoder is missing from model.safetensors: "
            "encoder.rel_embeddings.weight",
        ),
        (
            "modernbert",
            "model.layers.1.attn.Wqkv.weight",
            (2 * HIDDEN, HIDDEN),
            "1 weight of model.safetensors does not have the shapes config.json gives "
            "(layers.1.attn.Wqkv.weight (64x32 in the file, 96x32 by config.json))",
        ),
    ],
)
def test_one_encoder_tensor_wrong_or_missing_is_refused_by_name(
    name: str, weight: str, shape: tuple[int, ...] | None, message: str, tmp_path: Path
) -> None:
    directory = tmp_path / name
    weights = save_layout(name, directory)
    if shape is None:
        del weights[weight]
    else:
        weights[weight] = torch.randn(*shape)
    save_file(weights, str(directory / WEIGHTS), metadata={"format": "pt"})
    with pytest.raises(ModelError) as refused:
        load_model(directory)
    assert str(refused.value) == (
        f"{directory}: {message}; bertgeom measures only weights that loaded"
    )
