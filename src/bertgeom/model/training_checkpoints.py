"""Checkpoints of a training run: the weights at chosen steps, each a complete model directory.

``bertgeom train --checkpoints`` keeps, beside the final (best-epoch) model, the weights at the
steps of a **schedule** (:class:`CheckpointSchedule`), each in ``MODEL/checkpoints/step-N/``:
a classifier directory like the final one (``config.json`` with its ``bertgeom`` settings,
``model.safetensors``, the tokenizer files, ``change_check.json``) plus ``checkpoint.json``,
the step, the epoch and the training and validation metrics at that step
(:class:`CheckpointRecord`). A step is an optimiser step: step 0 is the initialisation, step
``e * steps_per_epoch`` the end of epoch ``e``. Each checkpoint is its own copy: nothing in it
is shared with the final model or another checkpoint, so ``analyze --model``, ``predict`` and
``evaluate`` load it as any model. ``analyze --over-training`` measures them all
(``bertgeom.analysis.over_training``).

The schedule's text form, comma-separated terms:

- ``N``: after N optimiser steps (``0``: the initial weights);
- ``log``: the early steps where most change happens, log-spaced: 1, 2, 4, 8, ... before the end
  of the first epoch;
- ``epochs``: the end of every epoch;
- ``last``: the end of training (the last epoch's end), for a sparse schedule such as the
  demo's ``0,16,last``.

The default, :data:`DEFAULT_SCHEDULE`, is ``0,log,epochs``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bertgeom.errors import InputError, ModelError

DEFAULT_SCHEDULE = "0,log,epochs"
CHECKPOINTS_DIRECTORY = "checkpoints"
"""Where the checkpoints are, inside the model directory."""
CHECKPOINT_FILE = "checkpoint.json"
"""Each checkpoint's record (:class:`CheckpointRecord`), beside its weights."""
_STEP_DIRECTORY = re.compile(r"step-(\d+)")


def step_directory(step: int) -> str:
    """The name of the checkpoint directory of ``step``: ``step-N``."""
    return f"step-{step}"


@dataclass(frozen=True)
class CheckpointSchedule:
    """Which steps to keep: ``steps`` given by number, the log-spaced early steps
    (``early``), the end of every epoch (``epochs``), the end of training (``last``)."""

    steps: tuple[int, ...] = ()
    early: bool = False
    epochs: bool = False
    last: bool = False

    @classmethod
    def parse(cls, text: str) -> CheckpointSchedule:
        """The schedule of its text form (module docstring), e.g. ``0,log,epochs`` or
        ``0,10,100,epochs``; anything else is an :class:`InputError` naming the term."""
        steps: list[int] = []
        early = epochs = last = False
        terms = [term.strip() for term in text.split(",")]
        if not any(terms):
            raise InputError(f"--checkpoint-schedule: empty; e.g. {DEFAULT_SCHEDULE}")
        for term in terms:
            if term == "log":
                early = True
            elif term == "epochs":
                epochs = True
            elif term == "last":
                last = True
            elif term.isdigit():
                steps.append(int(term))
            else:
                raise InputError(
                    f"--checkpoint-schedule: {term!r} is not a step number, 'log', 'epochs' or "
                    "'last' "
                    f"(e.g. {DEFAULT_SCHEDULE} or 0,10,100,epochs)"
                )
        return cls(tuple(sorted(set(steps))), early, epochs, last)

    def text(self) -> str:
        """The text form, terms in a fixed order (numbers, ``log``, ``epochs``, ``last``)."""
        terms = [str(step) for step in self.steps]
        terms += ["log"] * self.early + ["epochs"] * self.epochs + ["last"] * self.last
        return ",".join(terms)

    def resolve(self, steps_per_epoch: int, epochs: int) -> tuple[int, ...]:
        """The steps of a run of ``epochs`` epochs of ``steps_per_epoch`` steps, sorted; a
        given step past the run's last one is an :class:`InputError`."""
        last = steps_per_epoch * epochs
        late = [step for step in self.steps if step > last]
        if late:
            raise InputError(
                f"--checkpoint-schedule: step {late[0]} is past this run's last step {last} "
                f"({epochs} epochs of {steps_per_epoch} steps)"
            )
        chosen = set(self.steps)
        if self.early:
            chosen |= {2**power for power in range(math.ceil(math.log2(steps_per_epoch)))}
        if self.epochs:
            chosen |= {steps_per_epoch * epoch for epoch in range(1, epochs + 1)}
        if self.last:
            chosen.add(last)
        return tuple(sorted(chosen))


@dataclass(frozen=True)
class CheckpointRecord:
    """What ``checkpoint.json`` holds: the step, the epoch (``step / steps_per_epoch``: 0.25 a
    quarter into the first epoch, 2.0 at the end of the second), the mean training loss over
    the batches of the current epoch so far (NaN at step 0; at an epoch end the epoch's loss
    of ``training.json``), the validation loss, accuracy and macro-F1 of these weights, the
    ``unassigned`` threshold calibrated on them, and the seconds since training started."""

    step: int
    epoch: float
    steps_per_epoch: int
    train_loss: float
    validation_loss: float
    validation_accuracy: float
    validation_macro_f1: float
    unassigned_threshold: float
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (NaN as null)."""
        return {
            name: (None if isinstance(value, float) and math.isnan(value) else value)
            for name, value in asdict(self).items()
        }

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> CheckpointRecord:
        return cls(
            step=int(values["step"]),
            epoch=float(values["epoch"]),
            steps_per_epoch=int(values["steps_per_epoch"]),
            **{
                name: math.nan if values.get(name) is None else float(values[name])
                for name in (
                    "train_loss",
                    "validation_loss",
                    "validation_accuracy",
                    "validation_macro_f1",
                    "unassigned_threshold",
                    "seconds",
                )
            },
        )

    def save(self, directory: Path) -> None:
        (Path(directory) / CHECKPOINT_FILE).write_text(json.dumps(self.to_json(), indent=1))


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a model directory: its directory and its record."""

    directory: Path
    record: CheckpointRecord

    @property
    def step(self) -> int:
        return self.record.step


def list_checkpoints(model_directory: Path) -> list[Checkpoint]:
    """The checkpoints of a model directory, by step (none: an empty list). A ``step-N``
    directory without a readable ``checkpoint.json``, or whose record names another step, is
    a :class:`ModelError` naming it."""
    root = Path(model_directory) / CHECKPOINTS_DIRECTORY
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _STEP_DIRECTORY.fullmatch(entry.name)
        if match is None or not entry.is_dir():
            continue
        path = entry / CHECKPOINT_FILE
        try:
            record = CheckpointRecord.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelError(f"{path}: not a readable checkpoint record ({error})") from None
        if record.step != int(match.group(1)):
            raise ModelError(f"{path}: records step {record.step}, not {match.group(1)}")
        found.append(Checkpoint(entry, record))
    return sorted(found, key=lambda checkpoint: checkpoint.step)
