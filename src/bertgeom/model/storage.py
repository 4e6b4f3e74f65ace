"""Saving and loading classifier directories in Hugging Face format (safetensors only).

A classifier directory holds ``config.json`` (a ``BertConfig`` with ``id2label`` and a
``bertgeom`` entry: k, stride, classes, the ``unassigned`` threshold), ``model.safetensors``, the
tokenizer files and ``change_check.json`` (:mod:`bertgeom.model.change_check`; older directories
have none, and loading one warns), and, when trained with checkpoints, ``checkpoints/step-N/``,
each a classifier directory of its own (:mod:`bertgeom.model.training_checkpoints`). Pickled
weights (``pytorch_model.bin``) and remote code are never loaded, and a classifier loads exactly
or not at all (:mod:`bertgeom.model.checkpoint`). A classifier is named by its directory or a
Hugging Face hub id in the local cache (:mod:`bertgeom.model.resolve`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from numpy.typing import NDArray
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    PreTrainedTokenizerBase,
)

from bertgeom.atomic import atomic_directory
from bertgeom.capture.architectures import ADAPTERS
from bertgeom.errors import ModelError
from bertgeom.model.change_check import ChangeCheck, NoChangeCheck, no_change_check_note
from bertgeom.model.checkpoint import (
    load_tokenizer,
    load_weights,
    missing_tokenizer,
    refuse_shipped_code,
    weights_files,
)
from bertgeom.model.evaluate import predict_probabilities
from bertgeom.model.resolve import ModelName, ResolvedModel, resolve_model
from bertgeom.model.training_checkpoints import CHECKPOINTS_DIRECTORY, CheckpointRecord


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
    """A loaded classifier: model (eval mode), tokenizer, settings and the change check;
    ``source``: how it was named (directory or hub id and commit), ``ignored_weights``: weights
    of heads it does not have (a masked-LM head), which were not loaded."""

    model: BertForSequenceClassification
    tokenizer: PreTrainedTokenizerBase
    settings: ClassifierSettings
    directory: Path
    change_check: ChangeCheck | None = None
    source: ResolvedModel | None = None
    ignored_weights: tuple[str, ...] = ()

    def probabilities(self, sequences: Sequence[str], batch_size: int = 64) -> NDArray[np.float64]:
        """Softmax class probabilities ``(n_sequences, n_classes)`` of spike sequences."""
        settings = self.settings
        return predict_probabilities(
            self.model,
            self.tokenizer,
            list(sequences),
            settings.k,
            settings.stride,
            batch_size=batch_size,
            max_length=settings.max_length,
        )


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
    *,
    record: CheckpointRecord | None = None,
    checkpoints: Path | None = None,
) -> None:
    """Write the classifier to ``directory`` atomically (a temporary folder, then a rename).

    ``record``: a checkpoint's record, written as ``checkpoint.json``; ``checkpoints``: a
    directory of checkpoints (``bertgeom.model.training_checkpoints``) moved in as
    ``checkpoints/``, so that the model appears with its checkpoints or not at all."""
    model.config.bertgeom = settings.to_json()
    with atomic_directory(Path(directory)) as staging, quiet_transformers():
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if change_check is not None:
            change_check.save(staging)
        if record is not None:
            record.save(staging)
        if checkpoints is not None:
            Path(checkpoints).rename(staging / CHECKPOINTS_DIRECTORY)


def read_config(directory: Path) -> dict[str, Any]:
    """The ``config.json`` of a model directory, with one clear error when it is not one."""
    directory = Path(directory)
    if not directory.exists():
        raise ModelError(f"{directory}: model directory not found")
    if not directory.is_dir():
        raise ModelError(f"{directory}: not a directory; a model is a Hugging Face model directory")
    config_path = directory / "config.json"
    if not config_path.is_file() and (directory / "ensemble.json").is_file():
        raise ModelError(
            f"{directory}: an ensemble of models ('train --members'), which only 'predict' and "
            f"'evaluate' take; name one of its members here ({directory / 'member-1'})"
        )
    if not config_path.is_file():
        raise ModelError(f"{directory}: no config.json, not a Hugging Face model directory")
    try:
        config: dict[str, Any] = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{config_path}: unreadable config ({error})") from error
    if not isinstance(config, dict):
        raise ModelError(f"{config_path}: unreadable config (not a JSON object)")
    return config


_SETTINGS = ("k", "stride", "classes", "unassigned_threshold")


def require_classifier_config(directory: Path, config: dict[str, Any]) -> None:
    """Refuse a config that is not a bertgeom classifier's, with the reason."""
    model_type = config.get("model_type")
    if model_type != "bert":
        raise ModelError(
            f"{directory}: model type {model_type!r} is not a bertgeom variant classifier, which "
            "is a BERT ('bert') with 'bertgeom' settings in config.json; train one with "
            "'bertgeom train', or use 'bertgeom analyze' for other models"
        )
    extra = config.get("bertgeom")
    if not isinstance(extra, dict):
        raise ModelError(
            f"{directory}: not a bertgeom variant classifier (config.json has no 'bertgeom' "
            "settings); train one with 'bertgeom train', or use 'bertgeom analyze' for any BERT"
        )


def classifier_settings(directory: Path, config: dict[str, Any]) -> ClassifierSettings:
    """The ``bertgeom`` settings of a classifier's config (``require_classifier_config``
    first), each one present and readable."""
    extra = config["bertgeom"]
    lacking = [key for key in _SETTINGS if key not in extra]
    if lacking:
        raise ModelError(
            f"{directory / 'config.json'}: the 'bertgeom' settings lack {', '.join(lacking)}"
        )
    try:
        return ClassifierSettings(
            k=int(extra["k"]),
            stride=int(extra["stride"]),
            classes=tuple(str(name) for name in extra["classes"]),
            unassigned_threshold=float(extra["unassigned_threshold"]),
            max_length=int(extra.get("max_length", 512)),
        )
    except (ValueError, TypeError) as error:
        raise ModelError(
            f"{directory / 'config.json'}: unreadable 'bertgeom' settings ({error})"
        ) from error


def load_classifier(model: ModelName | None = None) -> Classifier:
    """Load a bertgeom classifier, named by its directory or a cached hub id (default: the
    shipped model), exactly (:mod:`bertgeom.model.checkpoint`) or not at all. A classifier
    without ``change_check.json`` loads with a :class:`NoChangeCheck` warning."""
    source = resolve_model(model if model is not None else default_model_directory())
    directory = source.directory
    config = read_config(directory)
    refuse_shipped_code(directory, config)
    require_classifier_config(directory, config)
    files = weights_files(directory, config)
    settings = classifier_settings(directory, config)
    vocab_size = config.get("vocab_size")
    with quiet_transformers():
        tokenizer = load_tokenizer(directory, int(vocab_size) if vocab_size else None)
        if tokenizer is None:
            raise ModelError(missing_tokenizer(directory))
        classifier, ignored, _ = load_weights(
            BertForSequenceClassification, directory, files, ADAPTERS["bert"].heads
        )
    if not isinstance(classifier, BertForSequenceClassification):
        raise ModelError(f"{directory}: loaded as {type(classifier).__name__}, not a classifier")
    change_check = ChangeCheck.load(directory)
    if change_check is None:
        warnings.warn(no_change_check_note(directory), NoChangeCheck, stacklevel=2)
    classifier.eval()
    return Classifier(classifier, tokenizer, settings, directory, change_check, source, ignored)


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
