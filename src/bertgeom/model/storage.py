"""Saving and loading classifier directories in Hugging Face format (safetensors only).

A classifier directory holds ``config.json`` (a ``BertConfig`` with ``id2label`` and a
``bertgeom`` entry: k, stride, classes, the ``unassigned`` threshold), ``model.safetensors``, the
tokenizer files and ``change_check.json`` (:mod:`bertgeom.model.change_check`; older directories
have none). Pickled weights (``pytorch_model.bin``) and remote code are never loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedTokenizerBase,
)

from bertgeom.atomic import atomic_directory
from bertgeom.errors import ModelError
from bertgeom.model.change_check import ChangeCheck


@dataclass(frozen=True)
class ClassifierSettings:
    """What prediction needs beside the weights: tokenisation and the class list."""

    k: int
    stride: int
    classes: tuple[str, ...]
    unassigned_threshold: float
    max_length: int = 512

    def to_json(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "stride": self.stride,
            "classes": list(self.classes),
            "unassigned_threshold": self.unassigned_threshold,
            "max_length": self.max_length,
        }


@dataclass
class Classifier:
    """A loaded classifier: model (eval mode), tokenizer, settings and the change check."""

    model: BertForSequenceClassification
    tokenizer: PreTrainedTokenizerBase
    settings: ClassifierSettings
    directory: Path
    change_check: ChangeCheck | None = None


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and its weight loading and saving progress bars."""
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()


def default_model_directory() -> Path:
    """The model shipped inside the package (trained by ``benchmarks/train_default_model.sh``)."""
    return Path(str(resources.files("bertgeom.model") / "default"))


def save_classifier(
    model: BertForSequenceClassification,
    tokenizer: PreTrainedTokenizerBase,
    settings: ClassifierSettings,
    directory: Path,
    change_check: ChangeCheck | None = None,
) -> None:
    """Write the classifier to ``directory`` atomically (a temporary folder, then a rename)."""
    model.config.bertgeom = settings.to_json()
    with atomic_directory(Path(directory)) as staging, quiet_transformers():
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if change_check is not None:
            change_check.save(staging)


def read_config(directory: Path) -> dict[str, Any]:
    """The ``config.json`` of a model directory, with one clear error when it is not one."""
    directory = Path(directory)
    if not directory.exists():
        raise ModelError(f"{directory}: model directory not found")
    if not directory.is_dir():
        raise ModelError(f"{directory}: not a directory; a model is a Hugging Face model directory")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{directory}: no config.json, not a Hugging Face model directory")
    try:
        config: dict[str, Any] = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{config_path}: unreadable config ({error})") from error
    if not isinstance(config, dict):
        raise ModelError(f"{config_path}: unreadable config (not a JSON object)")
    return config


def require_safetensors(directory: Path) -> None:
    """Refuse a directory whose weights are not in safetensors format."""
    if not any(Path(directory).glob("*.safetensors")):
        pickled = any(Path(directory).glob("*.bin"))
        why = (
            "only pickled weights (*.bin), which bertgeom does not load"
            if pickled
            else "no weights"
        )
        raise ModelError(f"{directory}: {why}; save the model with safetensors")


def load_classifier(directory: Path | None = None) -> Classifier:
    """Load a bertgeom classifier directory (default: the shipped model)."""
    directory = Path(directory) if directory is not None else default_model_directory()
    config = read_config(directory)
    if config.get("model_type") != "bert" or "bertgeom" not in config:
        raise ModelError(
            f"{directory}: not a bertgeom variant classifier (config.json has no 'bertgeom' "
            "settings); train one with 'bertgeom train', or use 'bertgeom analyze' for any BERT"
        )
    require_safetensors(directory)
    extra = config["bertgeom"]
    try:
        settings = ClassifierSettings(
            k=int(extra["k"]),
            stride=int(extra["stride"]),
            classes=tuple(extra["classes"]),
            unassigned_threshold=float(extra["unassigned_threshold"]),
            max_length=int(extra.get("max_length", 512)),
        )
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            model = BertForSequenceClassification.from_pretrained(
                directory, use_safetensors=True, local_files_only=True
            )
        change_check = ChangeCheck.load(directory)
    except (KeyError, ValueError, TypeError, OSError) as error:
        raise ModelError(f"{directory}: cannot load the classifier ({error})") from error
    model.eval()
    return Classifier(model, tokenizer, settings, directory, change_check)


def new_classifier(
    architecture: dict[str, int], vocabulary_size: int, classes: tuple[str, ...], seed: int
) -> BertForSequenceClassification:
    """A freshly initialised BERT classifier (seeded) for the given architecture."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocabulary_size,
        max_position_embeddings=512,
        hidden_size=architecture["hidden_size"],
        num_hidden_layers=architecture["num_hidden_layers"],
        num_attention_heads=architecture["num_attention_heads"],
        intermediate_size=architecture["intermediate_size"],
        # Attention dropout makes PyTorch leave its fused CPU attention kernel for the math path:
        # training is then about ten times slower. Hidden-state dropout is kept.
        attention_probs_dropout_prob=0.0,
        id2label=dict(enumerate(classes)),
        label2id={label: index for index, label in enumerate(classes)},
    )
    return BertForSequenceClassification(config)
