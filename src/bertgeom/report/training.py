"""An over-training directory read for the report (``bertgeom analyze --over-training``:
``training.parquet``, ``training.json``, ``checkpoints/step-N/``), the curves the report draws
from it, and the milestones of training: the first checkpoint at which a curve comes close to
its final value. Everything but :func:`read_over_training` is a pure function of
``training.parquet``'s table."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from bertgeom.errors import InputError
from bertgeom.model.training_checkpoints import CHECKPOINTS_DIRECTORY, step_directory
from bertgeom.names import GATE_SHARE_PATTERN, Metric, Table
from bertgeom.results.store import Results

TRAINING_PARQUET = "training.parquet"
TRAINING_JSON = "training.json"
TRAINING_COLUMNS = (
    *("step", "epoch", "train_loss", "validation_macro_f1", "table", "layer", "head"),
    *("point", "class", "metric", "value"),
)
"""The columns of ``training.parquet`` (``bertgeom.analysis.over_training.TRAINING_SCHEMA``)."""
REACH_FRACTION = 0.9
"""A rising curve has *reached* its final value at the first step at 90 % of it."""
WITHIN_TOLERANCE = 0.1
"""A curve has *come within* its final value at the first step within 10 % of it."""
GATE_TOLERANCE = 0.1
"""A gate mix has *settled* at the first step within this total-variation distance of the
final mix (half the sum of the absolute share differences; 0.1: a tenth of the heads x inputs
would have to change gate)."""


@dataclass
class OverTraining:
    """An over-training directory read back: the long table, ``training.json``, and the
    results directory of its last checkpoint (which the report's other sections show)."""

    path: Path
    training: pd.DataFrame
    record: dict[str, Any]
    last: Results

    @property
    def last_step(self) -> int:
        return int(self.training["step"].max())


@dataclass(frozen=True)
class Milestone:
    """The first checkpoint at which ``what`` meets ``rule``: its step and epoch (None:
    never), the value there and the final value."""

    what: str
    rule: str
    step: int | None
    epoch: float | None
    value: float
    final: float


def is_over_training(path: Path) -> bool:
    """Whether ``path`` is an over-training directory rather than a results directory."""
    path = Path(path)
    return (
        path.is_dir()
        and not (path / "manifest.json").exists()
        and ((path / TRAINING_PARQUET).exists() or (path / TRAINING_JSON).exists())
    )


def read_over_training(path: Path, read_results: Callable[[Path], Results]) -> OverTraining:
    """An over-training directory, with every way it can fail one line; ``read_results``
    reads the last checkpoint's results directory (``report.build.read_results``)."""
    path = Path(path)
    hint = "make one with bertgeom analyze --over-training"
    if not (path / TRAINING_PARQUET).is_file():
        raise InputError(f"{path}: an over-training directory without {TRAINING_PARQUET}; {hint}")
    try:
        training = pd.read_parquet(path / TRAINING_PARQUET)
    except (OSError, ValueError, pa.ArrowException) as error:
        raise InputError(f"{path}: {TRAINING_PARQUET} cannot be read ({error})") from None
    record_path = path / TRAINING_JSON
    try:
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: {TRAINING_JSON} cannot be read ({error})") from None
    absent = [column for column in TRAINING_COLUMNS if column not in training.columns]
    if absent or training.empty:
        what = f"no column {absent[0]}" if absent else "no rows"
        raise InputError(f"{path}: {TRAINING_PARQUET} is not a training table ({what}); {hint}")
    last = path / CHECKPOINTS_DIRECTORY / step_directory(int(training["step"].max()))
    if not last.is_dir():
        raise InputError(f"{path}: no results directory of the last checkpoint ({last}); {hint}")
    record = record if isinstance(record, dict) else {}
    return OverTraining(path, training, record, read_results(last))


def checkpoint_table(training: pd.DataFrame) -> pd.DataFrame:
    """``step ->`` epoch, train_loss, validation_macro_f1: one row per checkpoint, by step."""
    columns = ["epoch", "train_loss", "validation_macro_f1"]
    table = training.drop_duplicates("step").set_index("step")[columns]
    return table.astype(float).sort_index()


def layer_curves(
    training: pd.DataFrame, metric: str, point: str | None = None, label: str = "all"
) -> pd.DataFrame:
    """``step x (layer, point)`` values of one ``layers`` metric of one class (and one point);
    empty without such rows."""
    keep = (
        (training["table"] == str(Table.LAYERS))
        & (training["metric"] == metric)
        & (training["class"] == label)
    )
    if point is not None:
        keep &= training["point"] == point
    rows = training[keep]
    if rows.empty:
        return pd.DataFrame(dtype=float)
    table = rows.pivot_table(
        index="step", columns=["layer", "point"], values="value", aggfunc="first"
    )
    return table.sort_index().sort_index(axis=1)


def last_layer_curve(
    training: pd.DataFrame, metric: str, point: str = "layer_output", label: str = "all"
) -> pd.Series:
    """``step -> value`` of ``metric`` at the last layer's ``point`` (empty without it)."""
    table = layer_curves(training, metric, point, label)
    if table.empty:
        return pd.Series(dtype=float)
    layer = max(column[0] for column in table.columns)
    return table[(layer, point)].astype(float)


def gate_mix_curves(training: pd.DataFrame, label: str = "all") -> pd.DataFrame:
    """``step x (layer, gate)`` share of each dominant gate over the layer's heads x inputs
    (the mean over its heads of ``gate.<g>.share``, as the findings' gate mix); empty
    without gate rows."""
    rows = training[
        (training["table"] == str(Table.HEADS))
        & (training["class"] == label)
        & (training["head"] >= 0)
        & training["metric"].str.match(GATE_SHARE_PATTERN)
    ]
    if rows.empty:
        return pd.DataFrame(dtype=float)
    rows = rows.assign(gate=rows["metric"].str.split(".").str[1])
    table = rows.pivot_table(
        index="step", columns=["layer", "gate"], values="value", aggfunc="mean"
    )
    return table.sort_index().sort_index(axis=1).fillna(0.0)


def first_reaching(curve: pd.Series, fraction: float = REACH_FRACTION) -> int | None:
    """The first step (the index) at which ``curve`` reaches ``fraction`` of its final (last)
    value; None when the final value is not positive or the curve has no finite value."""
    values = curve.dropna().sort_index()
    if values.empty or not values.iloc[-1] > 0:
        return None
    reached = values[values >= fraction * values.iloc[-1]]
    return int(reached.index[0])


def first_within(curve: pd.Series, tolerance: float = WITHIN_TOLERANCE) -> int | None:
    """The first step at which ``curve`` is within ``tolerance`` (relative) of its final value,
    from above or below; None when the curve has no finite value."""
    values = curve.dropna().sort_index()
    if values.empty:
        return None
    final = values.iloc[-1]
    close = values[(values - final).abs() <= tolerance * abs(final)]
    return int(close.index[0])


def first_settled(mix: pd.DataFrame, tolerance: float = GATE_TOLERANCE) -> int | None:
    """The first step (row) whose shares (``step x gate``) are within ``tolerance`` of the last
    row's in total-variation distance; None without rows."""
    if mix.empty:
        return None
    mix = mix.sort_index().fillna(0.0)
    distance = (mix - mix.iloc[-1]).abs().sum(axis=1) / 2
    return int(distance[distance <= tolerance + 1e-12].index[0])


def milestones(training: pd.DataFrame) -> list[Milestone]:
    """When, over the checkpoints, validation macro-F1, the last layer's token cone index,
    its ``[CLS]`` probe accuracy and silhouette and its gate mix come close to their final
    values (each that the table holds)."""
    epochs = checkpoint_table(training)["epoch"]
    found: list[Milestone] = []

    def add(what: str, rule: str, curve: pd.Series, step: int | None) -> None:
        values = curve.dropna()
        if values.empty:
            return
        epoch = float(epochs.get(step, math.nan)) if step is not None else None
        value = float(values.get(step, math.nan)) if step is not None else math.nan
        found.append(Milestone(what, rule, step, epoch, value, float(values.iloc[-1])))

    reach = f"to {REACH_FRACTION:.0%} of its final value"
    f1 = checkpoint_table(training)["validation_macro_f1"]
    add("validation macro-F1", reach, f1, first_reaching(f1))
    cone = last_layer_curve(training, Metric.CONE_NORMALIZED_MEAN)
    within = f"within {WITHIN_TOLERANCE:.0%} of its final value"
    add("last layer's token cone index I/n", within, cone, first_within(cone))
    for metric, what in (
        (Metric.CLS_PROBE_ACCURACY, "last layer's [CLS] probe accuracy"),
        (Metric.CLS_SILHOUETTE, "last layer's [CLS] silhouette"),
    ):
        curve = last_layer_curve(training, metric)
        add(what, reach, curve, first_reaching(curve))
    mix = gate_mix_curves(training)
    if not mix.empty:
        layer = max(column[0] for column in mix.columns)
        last_mix = mix[layer]
        dominant = last_mix.iloc[-1].idxmax()
        add(
            "last layer's gate mix",
            f"within {GATE_TOLERANCE:g} of its final mix in total variation (value: the share "
            f"of {dominant}, its final most common gate)",
            last_mix[dominant],
            first_settled(last_mix),
        )
    return found


def order_sentence(found: list[Milestone]) -> str | None:
    """Which milestone came first, and in what order the others followed (ties: at the same
    checkpoint); None with fewer than two reached."""
    reached = sorted((m for m in found if m.step is not None), key=lambda m: m.step or 0)
    if len(reached) < 2:
        return None
    groups: list[list[Milestone]] = []
    for milestone in reached:
        if groups and groups[-1][0].step == milestone.step:
            groups[-1].append(milestone)
        else:
            groups.append([milestone])
    phrases = [" and ".join(m.what for m in group) + f" (step {group[0].step})" for group in groups]
    if len(groups) == 1:
        return f"All came at the same checkpoint: {phrases[0]}."
    first = phrases[0][0].upper() + phrases[0][1:]
    together = " together" if len(groups[0]) > 1 else ""
    return f"{first} came first{together}, then " + ", then ".join(phrases[1:]) + "."
