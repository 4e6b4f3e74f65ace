"""Tiny random models of every supported architecture, saved like real checkpoints.

Every parameter is drawn at random (biases and LayerNorm included, which Hugging Face
initialises to zero and one), so tests see non-trivial biases. All share one word-level
vocabulary and a ``BertTokenizer``; ELECTRA has ``embedding_size != hidden_size``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizer,
    DistilBertConfig,
    DistilBertModel,
    ElectraConfig,
    ElectraModel,
    PreTrainedModel,
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
HIDDEN, LAYERS, HEADS, POSITIONS = 32, 2, 4, 40


def tokenizer() -> BertTokenizer:
    return BertTokenizer(
        vocab={token: index for index, token in enumerate(VOCABULARY)}, model_max_length=512
    )


def tiny_model(architecture: str, seed: int = 0) -> PreTrainedModel:
    """A random model of ``architecture`` (one of ``ARCHITECTURES``)."""
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
    else:
        raise ValueError(architecture)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model.eval()


def save_tiny_model(architecture: str, directory: Path, seed: int = 0) -> Path:
    """Save a random ``architecture`` model and the tokenizer to ``directory``."""
    tiny_model(architecture, seed).save_pretrained(directory)
    tokenizer().save_pretrained(directory)
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


def sentences(count: int, seed: int = 1, longest: int = 14) -> list[str]:
    """Seeded sentences of 2..``longest`` vocabulary words."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(2, longest))) for _ in range(count)]
