"""Tiny random models of every supported architecture, saved like real checkpoints.

Every parameter is drawn at random (biases and LayerNorm included, which Hugging Face
initialises to zero and one), so tests see non-trivial biases. All but ESM share one word-level
vocabulary and a ``BertTokenizer``; ELECTRA and ALBERT have ``embedding_size != hidden_size``.

``ARCHITECTURES`` are the post-LayerNorm, one-module-per-layer architectures the parametrised
capture and analysis tests take as they are; ``OTHER_ARCHITECTURES`` (ESM-2 with rotary
positions, ESM with absolute positions as Nucleotide Transformer v1, ALBERT with one layer
shared across depth, MPNet with its relative position bias, DeBERTa-v3's disentangled
attention, ModernBERT's fused ``Wqkv`` and alternating global and sliding-window layers) are
tested by ``test_architectures.py``. ESM models come with an ``EsmTokenizer`` over the 33 tokens
of ESM-2's vocabulary (``protein_sequences`` for inputs), MPNet with an ``MPNetTokenizer``
(``<s> ... </s>``, ``<pad>`` = 1 as MPNet's embeddings require).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AlbertConfig,
    AlbertModel,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizer,
    DebertaV2Config,
    DebertaV2Model,
    DistilBertConfig,
    DistilBertModel,
    ElectraConfig,
    ElectraModel,
    EsmConfig,
    EsmModel,
    EsmTokenizer,
    ModernBertConfig,
    ModernBertModel,
    MPNetConfig,
    MPNetModel,
    MPNetTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RobertaConfig,
    RobertaModel,
)

_WORD_TEXT = (
    "the a cat dog sat ran on in to park mat big small red blue bird tree house near under "
    "quickly slowly and but river city old new"
)
WORDS = _WORD_TEXT.split()
VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
ARCHITECTURES = ("bert", "roberta", "distilbert", "electra")
OTHER_ARCHITECTURES = ("esm", "esm-absolute", "albert", "mpnet", "deberta-v2", "modernbert")
"""``esm``: ESM-2 (rotary positions, token dropout); ``esm-absolute``: the same layers with
learned absolute positions (Nucleotide Transformer v1); ``albert``: one layer at every depth;
``mpnet``: relative position bias; ``deberta-v2``: DeBERTa-v3's configuration (disentangled
attention with shared keys, log-bucketed relative positions, no absolute positions);
``modernbert``: layer 0 global, layer 1 local with a window of ``MODERNBERT_WINDOW`` positions
on either side."""
MODERNBERT_WINDOW = 2
MPNET_VOCABULARY = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>", *WORDS]
"""MPNet's special tokens in its order (``<pad>`` = 1), then the words."""
HIDDEN, LAYERS, HEADS, POSITIONS = 32, 2, 4, 40
ESM_VOCABULARY = [
    "<cls>", "<pad>", "<eos>", "<unk>",
    *"LAGVSERTIDPKQNFYMHWCXBUZO.-",
    "<null_1>", "<mask>",
]  # fmt: skip
"""ESM-2's 33 tokens, in its order (``<pad>`` = 1, ``<mask>`` = 32)."""
AMINO_ACIDS = "LAGVSERTIDPKQNFYMHWC"


def tokenizer() -> BertTokenizer:
    return BertTokenizer(
        vocab={token: index for index, token in enumerate(VOCABULARY)}, model_max_length=512
    )


def model_type(architecture: str) -> str:
    """The ``model_type`` of a tiny ``architecture`` (``esm-absolute`` is an ``esm``)."""
    return "esm" if architecture.startswith("esm") else architecture


def mpnet_tokenizer(directory: Path) -> MPNetTokenizer:
    """An ``MPNetTokenizer`` over ``MPNET_VOCABULARY`` (a file in ``directory``)."""
    directory.mkdir(parents=True, exist_ok=True)
    vocabulary = directory / "vocab.txt"
    vocabulary.write_text("\n".join(MPNET_VOCABULARY) + "\n")
    return MPNetTokenizer(str(vocabulary), model_max_length=512)


def esm_tokenizer(directory: Path) -> EsmTokenizer:
    """ESM-2's tokenizer (a vocabulary file in ``directory``): ``<cls> ... <eos>``."""
    directory.mkdir(parents=True, exist_ok=True)
    vocabulary = directory / "vocab.txt"
    vocabulary.write_text("\n".join(ESM_VOCABULARY) + "\n")
    return EsmTokenizer(str(vocabulary), model_max_length=1024)


def _esm_config(common: dict[str, Any], bert_like: dict[str, Any], rotary: bool) -> EsmConfig:
    # pad_token_id 1 as ESM-2's: positions are numbered from 2, so POSITIONS + 2 of them.
    return EsmConfig(
        **{**common, "vocab_size": len(ESM_VOCABULARY), "pad_token_id": 1},
        **{**bert_like, "max_position_embeddings": POSITIONS + 2},
        mask_token_id=ESM_VOCABULARY.index("<mask>"),
        position_embedding_type="rotary" if rotary else "absolute",
        token_dropout=rotary,
        emb_layer_norm_before=False,
    )


def deberta_config(
    common: dict[str, Any], bert_like: dict[str, Any], **extra: Any
) -> DebertaV2Config:
    """DeBERTa-v3's settings (``microsoft/deberta-v3-base``): relative attention with both
    position terms and shared position keys, log buckets (8 here, so inputs of 14 words reach
    the logarithmic ones), LayerNorm of the relative embeddings, no absolute positions or token
    types."""
    settings: dict[str, Any] = {
        "relative_attention": True,
        "position_buckets": 8,
        "max_relative_positions": -1,
        "pos_att_type": ["p2c", "c2p"],
        "share_att_key": True,
        "norm_rel_ebd": "layer_norm",
        "position_biased_input": False,
        "type_vocab_size": 0,
        **extra,
    }
    return DebertaV2Config(**common, **bert_like, **settings)


def tiny_model(architecture: str, seed: int = 0) -> PreTrainedModel:
    """A random model of ``architecture`` (one of ``ARCHITECTURES`` or
    ``OTHER_ARCHITECTURES``)."""
    common: dict[str, Any] = {"vocab_size": len(VOCABULARY), "pad_token_id": 0}
    bert_like: dict[str, Any] = {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": 2 * HIDDEN,
        "max_position_embeddings": POSITIONS,
    }
    torch.manual_seed(seed)
    model: PreTrainedModel
    if architecture == "bert":
        model = BertModel(BertConfig(**common, **bert_like))
    elif architecture == "roberta":
        # RoBERTa numbers positions from pad_token_id + 1: two more positions, same max input.
        config = RobertaConfig(**common, **{**bert_like, "max_position_embeddings": POSITIONS + 1})
        model = RobertaModel(config)
    elif architecture == "electra":
        model = ElectraModel(ElectraConfig(**common, **bert_like, embedding_size=16))
    elif architecture == "distilbert":
        distil_config = DistilBertConfig(
            **common,
            dim=HIDDEN,
            n_layers=LAYERS,
            n_heads=HEADS,
            hidden_dim=2 * HIDDEN,
            max_position_embeddings=POSITIONS,
        )
        model = DistilBertModel(distil_config)
    elif architecture in ("esm", "esm-absolute"):
        model = EsmModel(_esm_config(common, bert_like, architecture == "esm"))
    elif architecture == "albert":
        model = AlbertModel(AlbertConfig(**common, **bert_like, embedding_size=16))
    elif architecture == "mpnet":
        # MPNet numbers positions from padding_idx + 1 = 2: two more positions, same max input.
        mpnet = {"vocab_size": len(MPNET_VOCABULARY), "pad_token_id": 1}
        model = MPNetModel(
            MPNetConfig(**mpnet, **{**bert_like, "max_position_embeddings": POSITIONS + 2})
        )
    elif architecture == "deberta-v2":
        model = DebertaV2Model(deberta_config(common, bert_like))
    elif architecture == "modernbert":
        model = ModernBertModel(
            ModernBertConfig(
                **common,
                **bert_like,
                cls_token_id=2,
                sep_token_id=3,
                bos_token_id=2,
                eos_token_id=3,
                local_attention=2 * MODERNBERT_WINDOW,
                global_attn_every_n_layers=2,
            )
        )
    else:
        raise ValueError(architecture)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model.eval()


def tiny_tokenizer(architecture: str, directory: Path) -> PreTrainedTokenizerBase:
    """The tokenizer of the tiny ``architecture`` models (files written to ``directory``)."""
    if architecture.startswith("esm"):
        return esm_tokenizer(directory)
    return mpnet_tokenizer(directory) if architecture == "mpnet" else tokenizer()


def save_tiny_model(architecture: str, directory: Path, seed: int = 0) -> Path:
    """Save a random ``architecture`` model and its tokenizer to ``directory``."""
    tiny_model(architecture, seed).save_pretrained(directory)
    tiny_tokenizer(architecture, directory).save_pretrained(directory)
    return directory


def save_tiny_classifier(directory: Path, classes: tuple[str, ...], seed: int = 0) -> Path:
    """A random bertgeom-style classifier (k-mer vocabulary, ``bertgeom`` config entry)."""
    from bertgeom.model.storage import ClassifierSettings, save_classifier
    from bertgeom.model.tokenizer import build_vocabulary, make_tokenizer

    rng = random.Random(seed)
    sequences = ["".join(rng.choice("ACGT") for _ in range(120)) for _ in range(4)]
    vocabulary = build_vocabulary(sequences, k=12, stride=9)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocabulary),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=2 * HIDDEN,
        max_position_embeddings=512,
        id2label=dict(enumerate(classes)),
        label2id={label: index for index, label in enumerate(classes)},
    )
    model = BertForSequenceClassification(config).eval()
    settings = ClassifierSettings(k=12, stride=9, classes=classes, unassigned_threshold=0.5)
    save_classifier(model, make_tokenizer(vocabulary), settings, directory)
    return directory


def protein_sequences(count: int, seed: int = 1, longest: int = 14) -> list[str]:
    """Seeded amino-acid strings of 2..``longest`` residues (one token each for ESM)."""
    rng = random.Random(seed)
    return ["".join(rng.choices(AMINO_ACIDS, k=rng.randint(2, longest))) for _ in range(count)]


def texts_for(architecture: str, count: int, seed: int = 1, longest: int = 14) -> list[str]:
    """Inputs the tiny ``architecture`` model's tokenizer reads: proteins for ESM, else words."""
    if architecture.startswith("esm"):
        return protein_sequences(count, seed, longest)
    return sentences(count, seed, longest)


def sentences(count: int, seed: int = 1, longest: int = 14) -> list[str]:
    """Seeded sentences of 2..``longest`` vocabulary words."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(2, longest))) for _ in range(count)]
