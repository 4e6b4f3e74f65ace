"""Training a BERT variant classifier from scratch on a split dataset.

AdamW with linear warm-up (3 epochs, at most a quarter of the run) and linear decay, gradient
clipping at 1.0, seeded; validation after each epoch; the checkpoint with the best validation
macro-F1 is kept and saved in Hugging Face format, with the ``unassigned`` threshold calibrated
on the validation split and the change check (:mod:`bertgeom.model.change_check`) fitted on the
real spikes. Each training batch turns some spikes into partial ones on the fly
(:func:`window_tokens`), as a user's fragment reaches the model. Rows labelled ``outlier``
(synthetic spikes of no class) are trained towards the uniform distribution over the classes
(outlier exposure), so that spikes unlike every class get low confidence; they are left out of
the validation macro-F1. With ``TrainingOptions.checkpoints`` (a schedule,
:mod:`bertgeom.model.training_checkpoints`) the weights at the schedule's steps are kept too, in
``out/checkpoints/step-N/``, without changing the run: the final model is the same.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import (
    BertForSequenceClassification,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from bertgeom.atomic import scratch_directory
from bertgeom.errors import InputError
from bertgeom.genomics.changes import definition_changes, sequence_changes
from bertgeom.genomics.kmers import DEFAULT_K, DEFAULT_STRIDE
from bertgeom.genomics.mutations import CLASSES
from bertgeom.model.augmentation import mask_tokens, soft_targets, window_tokens
from bertgeom.model.change_check import ChangeCheck, fit_change_check
from bertgeom.model.defining_changes import defining_changes
from bertgeom.model.dropout import with_fast_dropout
from bertgeom.model.evaluate import (
    calibrate_unassigned_threshold,
    classification_metrics,
    predict_probabilities,
)
from bertgeom.model.presets import PRESETS
from bertgeom.model.storage import ClassifierSettings, new_classifier, save_classifier
from bertgeom.model.tokenizer import build_vocabulary, encode, make_tokenizer
from bertgeom.model.training_checkpoints import (
    CheckpointRecord,
    CheckpointSchedule,
    step_directory,
)

ProgressCallback = Callable[[str, int, int], None]
"""``callback(stage, done, total)``, called as training advances (for progress bars)."""


@dataclass
class _Validation:
    """The validation split, and how the model being trained scores on it."""

    model: BertForSequenceClassification
    tokenizer: PreTrainedTokenizerBase
    sequences: list[str]
    labels: list[str]
    true: np.ndarray[Any, np.dtype[np.int64]]
    classes: tuple[str, ...]
    k: int
    stride: int

    def score(self) -> tuple[np.ndarray[Any, np.dtype[np.float64]], dict[str, float]]:
        """The class probabilities of every validation spike, and the loss, accuracy and
        macro-F1 they give."""
        with torch.no_grad():
            probabilities = predict_probabilities(
                self.model,
                self.tokenizer,
                self.sequences,
                self.k,
                self.stride,
            )
        predicted = [self.classes[i] for i in probabilities.argmax(axis=1)]
        metrics = classification_metrics(self.labels, predicted, self.classes)
        picked = probabilities[np.arange(len(self.true)), self.true]
        return probabilities, {
            "validation_loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
            "validation_accuracy": float(metrics["accuracy"]),
            "validation_macro_f1": float(metrics["macro_f1"]),
        }


@dataclass(frozen=True)
class TrainingOptions:
    """Everything that decides a training run; ``None`` takes the preset's value."""

    preset: str = "small"
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    seed: int = 42
    k: int = DEFAULT_K
    stride: int = DEFAULT_STRIDE
    min_count: int = 1
    token_mask_probability: float = 0.1
    window_probability: float = 0.5
    window_fraction: tuple[float, float] = (0.3, 1.0)
    warmup_epochs: float = 3.0
    warmup_share: float = 0.25
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    checkpoints: str | None = None

    def __post_init__(self) -> None:
        """Refuse what would train nothing, or nothing sensible, before any work starts."""
        if self.preset not in PRESETS:
            raise InputError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        rate = self.learning_rate
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise InputError(f"--learning-rate must be a finite number above 0, got {rate}")
        if self.checkpoints is not None:
            CheckpointSchedule.parse(self.checkpoints)


@dataclass
class TrainingReport:
    """What happened: per-epoch history, best epoch, wall time, the calibrated threshold."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    unassigned_threshold: float = 0.5
    vocabulary_size: int = 0
    n_parameters: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)


def fit_dataset_change_check(dataset: pd.DataFrame, classes: tuple[str, ...]) -> ChangeCheck:
    """The change check (:mod:`bertgeom.model.change_check`) of a split dataset's real spikes.

    A class without real training spikes expects and is defined by its public definition
    (Lambda, Mu) or, where it has none (a class a leave-lineage-out fold holds out whole), by
    the changes of at least 80 % of its synthetic training spikes, which were drawn from what
    the dataset knows of it.
    """
    real = dataset[(dataset["source"] == "real") & dataset["label"].isin(classes)]
    train, validation = real[real["split"] == "train"], real[real["split"] == "validation"]
    definitions = {}
    for label in sorted(set(classes) - set(train["label"])):
        definitions[label] = definition_changes(label) or _synthetic_core(dataset, label)
    return fit_change_check(
        sequence_changes(list(train["sequence"])),
        list(train["label"]),
        sequence_changes(list(validation["sequence"])),
        list(validation["label"]),
        definitions,
        classes,
    )


def _synthetic_core(dataset: pd.DataFrame, label: str, at_most: int = 200) -> tuple[str, ...]:
    """The changes of at least 80 % of (up to ``at_most``) synthetic training spikes of
    ``label``; empty without any."""
    rows = dataset[
        (dataset["source"] != "real") & (dataset["label"] == label) & (dataset["split"] == "train")
    ]
    sequences = list(rows["sequence"][:at_most])
    if not sequences:
        return ()
    core = defining_changes(sequence_changes(sequences), [label] * len(sequences))[label]
    return tuple(sorted(core))


def train_classifier(
    dataset: pd.DataFrame,
    out: Path,
    options: TrainingOptions | None = None,
    progress: ProgressCallback | None = None,
) -> TrainingReport:
    """Train on ``split == 'train'``, select on ``'validation'``, save the best model to ``out``."""
    options = options or TrainingOptions()
    preset = PRESETS[options.preset]
    epochs = preset.epochs if options.epochs is None else options.epochs
    batch_size = preset.batch_size if options.batch_size is None else options.batch_size
    learning_rate = preset.learning_rate if options.learning_rate is None else options.learning_rate
    started = time.perf_counter()
    train = dataset[dataset["split"] == "train"]
    validation = dataset[(dataset["split"] == "validation") & dataset["label"].isin(CLASSES)]
    if train.empty or validation.empty:
        raise InputError(
            "the dataset needs both 'train' and 'validation' rows; split it with "
            "'bertgeom data split DIR'"
        )
    classes = CLASSES
    class_index = {label: index for index, label in enumerate(classes)}
    vocabulary = build_vocabulary(train["sequence"], options.k, options.stride, options.min_count)
    tokenizer = make_tokenizer(vocabulary)
    # FastDropout: PyTorch's CPU dropout mask was 12.6 % of a training step.
    model = with_fast_dropout(
        new_classifier(preset.architecture(), len(vocabulary), classes, options.seed)
    )
    encoded = encode(tokenizer, list(train["sequence"]), options.k, options.stride)
    targets = soft_targets(list(train["label"]), classes)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=learning_rate, weight_decay=options.weight_decay
    )
    steps_per_epoch = -(-len(train) // batch_size)
    # Warm-up over 3 epochs, at most a quarter of the run: with partial-spike windows a model
    # warmed up over 1.2 epochs (10 % of 12) stalled (validation macro-F1 0.72 after 12 epochs,
    # against 0.95 with 3).
    warmup = min(options.warmup_epochs, options.warmup_share * epochs)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(warmup * steps_per_epoch), epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(options.seed)
    report = TrainingReport(
        vocabulary_size=len(vocabulary),
        n_parameters=sum(parameter.numel() for parameter in model.parameters()),
        options={
            **options.__dict__,
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
        },
    )
    best_f1, best_state = -1.0, copy.deepcopy(model.state_dict())
    validation_true = np.array([class_index[label] for label in validation["label"]])
    validator = _Validation(
        model,
        tokenizer,
        list(validation["sequence"]),
        list(validation["label"]),
        validation_true,
        classes,
        options.k,
        options.stride,
    )
    change_check = fit_dataset_change_check(dataset, classes)
    wanted: tuple[int, ...] = ()
    if options.checkpoints is not None:
        schedule = CheckpointSchedule.parse(options.checkpoints)
        wanted = schedule.resolve(steps_per_epoch, epochs)
        report.options["checkpoints"] = schedule.text()
    with _checkpoint_staging(Path(out), bool(wanted)) as staging:

        def keep(
            step: int,
            train_loss: float,
            scored: tuple[np.ndarray[Any, np.dtype[np.float64]], dict[str, float]] | None = None,
        ) -> None:
            """Save the weights at ``step`` into the checkpoints (scored on the validation
            split unless the epoch's scores are given)."""
            probabilities, metrics = scored if scored is not None else validator.score()
            threshold = calibrate_unassigned_threshold(probabilities, validation_true)
            record = CheckpointRecord(
                step=step,
                epoch=step / steps_per_epoch,
                steps_per_epoch=steps_per_epoch,
                train_loss=train_loss,
                unassigned_threshold=threshold,
                seconds=time.perf_counter() - started,
                **metrics,
            )
            settings = ClassifierSettings(options.k, options.stride, classes, threshold)
            assert staging is not None
            save_classifier(
                model,
                tokenizer,
                settings,
                staging / step_directory(step),
                change_check,
                record=record,
            )
            report.checkpoints.append(record.to_json())

        global_step = 0
        if 0 in wanted:
            keep(0, math.nan)
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(len(train), generator=generator)
            total_loss, seen = 0.0, 0
            for step, start in enumerate(range(0, len(train), batch_size), start=1):
                index = order[start : start + batch_size]
                mask = encoded["attention_mask"][index]
                width = int(mask.sum(dim=1).max())
                windowed = window_tokens(
                    encoded["input_ids"][index, :width],
                    mask[:, :width],
                    options.window_probability,
                    options.window_fraction,
                    tokenizer.unk_token_id,
                    generator,
                )
                input_ids = mask_tokens(
                    windowed,
                    options.token_mask_probability,
                    tokenizer.unk_token_id,  # what a private change reads as: module docstring
                    tokenizer.all_special_ids,
                    generator,
                )
                logits = model(input_ids=input_ids, attention_mask=mask[:, :width]).logits
                loss = -(targets[index] * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), options.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                total_loss += float(loss.detach()) * len(index)
                seen += len(index)
                global_step += 1
                if global_step in wanted and step < steps_per_epoch and math.isfinite(total_loss):
                    keep(global_step, total_loss / seen)  # an epoch's end is kept below
                if progress:
                    progress(f"epoch {epoch}/{epochs}", step, steps_per_epoch)
            if not math.isfinite(total_loss):
                # A diverged model is no model: nothing is saved (its weights are NaN or inf).
                raise InputError(
                    f"training diverged: the training loss is {total_loss / len(train)} in "
                    f"epoch {epoch}; nothing was saved. Lower --learning-rate (this run: "
                    f"{learning_rate:g}, the {options.preset} preset's: {preset.learning_rate:g})"
                )
            scored = validator.score()
            metrics = scored[1]
            report.history.append(
                {
                    "epoch": epoch,
                    "train_loss": total_loss / len(train),
                    **metrics,
                    "seconds": time.perf_counter() - started,
                }
            )
            if global_step in wanted:
                keep(global_step, total_loss / len(train), scored)
            if metrics["validation_macro_f1"] > best_f1:
                best_f1, report.best_epoch = metrics["validation_macro_f1"], epoch
                best_state = copy.deepcopy(model.state_dict())
        model.load_state_dict(best_state)
        model.eval()
        probabilities, _ = validator.score()
        report.unassigned_threshold = calibrate_unassigned_threshold(probabilities, validation_true)
        settings = ClassifierSettings(
            options.k, options.stride, classes, report.unassigned_threshold
        )
        save_classifier(model, tokenizer, settings, out, change_check, checkpoints=staging)
    report.seconds = time.perf_counter() - started
    return report


@contextmanager
def _checkpoint_staging(out: Path, wanted: bool) -> Iterator[Path | None]:
    """A hidden sibling of ``out`` that collects the checkpoints while training runs (moved
    into the model directory when it is saved, removed if training fails); None when no
    checkpoint is kept."""
    if not wanted:
        yield None
        return
    with scratch_directory(out, "checkpoints") as staging:
        yield staging
