"""The checkpoint schedule: its text form, the steps it resolves to, and the records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bertgeom.errors import InputError, ModelError
from bertgeom.model.training_checkpoints import (
    DEFAULT_SCHEDULE,
    CheckpointRecord,
    CheckpointSchedule,
    list_checkpoints,
)


def test_the_default_schedule_is_the_start_early_doublings_and_every_epoch() -> None:
    schedule = CheckpointSchedule.parse(DEFAULT_SCHEDULE)
    assert schedule == CheckpointSchedule((0,), early=True, epochs=True)
    assert schedule.text() == DEFAULT_SCHEDULE
    # 9 steps an epoch: 1, 2, 4, 8 before the first epoch ends, then every epoch's end
    assert schedule.resolve(9, 3) == (0, 1, 2, 4, 8, 9, 18, 27)
    assert schedule.resolve(8, 2) == (0, 1, 2, 4, 8, 16)
    assert schedule.resolve(1, 2) == (0, 1, 2)


def test_given_steps_are_kept_as_given_and_past_the_run_refused() -> None:
    schedule = CheckpointSchedule.parse(" 100, 10,0 ,10,epochs")
    assert schedule.text() == "0,10,100,epochs"
    assert schedule.resolve(50, 3) == (0, 10, 50, 100, 150)
    assert CheckpointSchedule.parse("3").resolve(5, 1) == (3,)
    with pytest.raises(InputError, match=r"step 151 is past this run's last step 150"):
        CheckpointSchedule.parse("151").resolve(50, 3)


def test_last_is_the_end_of_training_alone() -> None:
    schedule = CheckpointSchedule.parse("last,16,0")
    assert schedule == CheckpointSchedule((0, 16), last=True)
    assert schedule.text() == "0,16,last"
    assert schedule.resolve(50, 3) == (0, 16, 150)
    assert CheckpointSchedule.parse("0,epochs,last").resolve(5, 2) == (0, 5, 10)


@pytest.mark.parametrize("text", ["", "0,,x", "-1", "1.5", "log2", "epoch"])
def test_a_bad_schedule_is_one_clear_error(text: str) -> None:
    with pytest.raises(InputError, match="--checkpoint-schedule"):
        CheckpointSchedule.parse(text)


def test_bad_schedule_is_refused_before_training() -> None:
    from bertgeom.model.train import TrainingOptions

    with pytest.raises(InputError, match="--checkpoint-schedule"):
        TrainingOptions(checkpoints="0,often")


def test_records_round_trip_with_nan_as_null(tmp_path: Path) -> None:
    record = CheckpointRecord(0, 0.0, 6, math.nan, 2.07, 0.125, 0.03, 0.5, 1.5)
    (tmp_path / "checkpoints" / "step-0").mkdir(parents=True)
    record.save(tmp_path / "checkpoints" / "step-0")
    saved = json.loads((tmp_path / "checkpoints" / "step-0" / "checkpoint.json").read_text())
    assert saved["train_loss"] is None and saved["step"] == 0
    (found,) = list_checkpoints(tmp_path)
    assert found.step == 0 and math.isnan(found.record.train_loss)
    assert found.record.validation_loss == 2.07
    (tmp_path / "checkpoints" / "notes").mkdir()  # not step-N: not a checkpoint
    assert len(list_checkpoints(tmp_path)) == 1
    assert list_checkpoints(tmp_path / "checkpoints") == []


def test_a_checkpoint_whose_record_is_missing_or_wrong_is_named(tmp_path: Path) -> None:
    step = tmp_path / "checkpoints" / "step-4"
    step.mkdir(parents=True)
    with pytest.raises(ModelError, match=r"step-4/checkpoint\.json"):
        list_checkpoints(tmp_path)
    CheckpointRecord(3, 0.5, 6, 1.0, 2.0, 0.1, 0.1, 0.5, 1.0).save(step)
    with pytest.raises(ModelError, match="records step 3, not 4"):
        list_checkpoints(tmp_path)
