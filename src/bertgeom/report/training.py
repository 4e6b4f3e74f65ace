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
from typing import Any, cast

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
    never), the value there and the final value; and the step from which it holds for good."""

    what: str
    rule: str
    step: int | None
    epoch: float | None
    value: float
    final: float
    held: int | None = None
    """The step from which the rule holds at every later checkpoint (None: not at the last)."""


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
    layer = max(column[0] for column in column_pairs(table))
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


def column_pairs(table: pd.DataFrame) -> list[tuple[int, str]]:
    """The ``(layer, point)`` or ``(layer, gate)`` columns of a curves table."""
    return [(int(layer), str(name)) for layer, name in cast(list[tuple[Any, Any]], table.columns)]


def of_layer(table: pd.DataFrame, layer: int) -> pd.DataFrame:
    """The ``step x point`` or ``step x gate`` columns of one layer of a curves table."""
    return cast(pd.DataFrame, table[layer])


def reaching(curve: pd.Series, fraction: float = REACH_FRACTION) -> pd.Series:
    """``step -> bool``: where ``curve`` is at ``fraction`` of its final (last finite) value or
    above; empty when the final value is not positive or the curve has no finite value."""
    values = curve.dropna().sort_index()
    if values.empty or not values.iloc[-1] > 0:
        return pd.Series(dtype=bool)
    return values >= fraction * values.iloc[-1]


def within(curve: pd.Series, tolerance: float = WITHIN_TOLERANCE) -> pd.Series:
    """``step -> bool``: where ``curve`` is within ``tolerance`` (relative) of its final value,
    from above or below; empty when the curve has no finite value."""
    values = curve.dropna().sort_index()
    if values.empty:
        return pd.Series(dtype=bool)
    return (values - values.iloc[-1]).abs() <= tolerance * abs(values.iloc[-1])


def settled(mix: pd.DataFrame, tolerance: float = GATE_TOLERANCE) -> pd.Series:
    """``step -> bool``: where the shares (``step x gate``) are within ``tolerance`` of the
    last row's in total-variation distance."""
    if mix.empty:
        return pd.Series(dtype=bool)
    mix = mix.sort_index().fillna(0.0)
    distance = (mix - mix.iloc[-1]).abs().sum(axis=1) / 2
    return distance <= tolerance + 1e-12


def first_step(meets: pd.Series) -> int | None:
    """The first step at which the rule is met (None: never)."""
    met = meets[meets.astype(bool)]
    return int(met.index[0]) if not met.empty else None


def held_step(meets: pd.Series) -> int | None:
    """The step from which the rule is met at every later checkpoint (None: not at the last)."""
    if meets.empty or not bool(meets.iloc[-1]):
        return None
    failed = meets[~meets.astype(bool)]
    later = meets.index if failed.empty else meets.index[meets.index > failed.index[-1]]
    return int(later[0])


def first_reaching(curve: pd.Series, fraction: float = REACH_FRACTION) -> int | None:
    """The first step at which ``curve`` reaches ``fraction`` of its final value (``reaching``)."""
    return first_step(reaching(curve, fraction))


def first_within(curve: pd.Series, tolerance: float = WITHIN_TOLERANCE) -> int | None:
    """The first step at which ``curve`` is within ``tolerance`` of its final value."""
    return first_step(within(curve, tolerance))


def first_settled(mix: pd.DataFrame, tolerance: float = GATE_TOLERANCE) -> int | None:
    """The first step whose gate mix is within ``tolerance`` of the final one (``settled``)."""
    return first_step(settled(mix, tolerance))


def milestones(training: pd.DataFrame) -> list[Milestone]:
    """When, over the checkpoints, validation macro-F1, the last layer's token cone index,
    its ``[CLS]`` probe accuracy and silhouette and its gate mix come close to their final
    values (each that the table holds): first, and for good."""
    epochs = checkpoint_table(training)["epoch"]
    found: list[Milestone] = []

    def add(what: str, rule: str, curve: pd.Series, meets: pd.Series) -> None:
        values = curve.dropna()
        if values.empty:
            return
        step = first_step(meets)
        epoch = float(epochs.get(step, math.nan)) if step is not None else None
        value = float(values.get(step, math.nan)) if step is not None else math.nan
        final = float(values.iloc[-1])
        found.append(Milestone(what, rule, step, epoch, value, final, held_step(meets)))

    reach = f"to {REACH_FRACTION:.0%} of its final value"
    f1 = checkpoint_table(training)["validation_macro_f1"]
    add("validation macro-F1", reach, f1, reaching(f1))
    cone = last_layer_curve(training, Metric.CONE_NORMALIZED_MEAN)
    close = f"within {WITHIN_TOLERANCE:.0%} of its final value"
    add("last layer's token cone index I/n", close, cone, within(cone))
    for metric, what in (
        (Metric.CLS_PROBE_ACCURACY, "last layer's [CLS] probe accuracy"),
        (Metric.CLS_SILHOUETTE, "last layer's [CLS] silhouette"),
    ):
        curve = last_layer_curve(training, metric)
        add(what, reach, curve, reaching(curve))
    mix = gate_mix_curves(training)
    if not mix.empty:
        last_mix = of_layer(mix, max(layer for layer, _ in column_pairs(mix)))
        dominant = last_mix.iloc[-1].idxmax()
        add(
            "last layer's gate mix",
            f"within {GATE_TOLERANCE:g} of its final mix in total variation (value: the share "
            f"of {dominant}, its final most common gate)",
            last_mix[dominant],
            settled(last_mix),
        )
    return found


def order_sentence(found: list[Milestone], held: bool = False) -> str | None:
    """Which milestone came first, and in what order the others followed (ties: at the same
    checkpoint), by their first steps (``held``: by the steps from which they hold for good);
    None with fewer than two."""

    def step(milestone: Milestone) -> int | None:
        return milestone.held if held else milestone.step

    reached = sorted((m for m in found if step(m) is not None), key=lambda m: step(m) or 0)
    if len(reached) < 2:
        return None
    groups: list[list[Milestone]] = []
    for milestone in reached:
        if groups and step(groups[-1][0]) == step(milestone):
            groups[-1].append(milestone)
        else:
            groups.append([milestone])
    phrases = [
        " and ".join(m.what for m in group) + f" (step {step(group[0])})" for group in groups
    ]
    if len(groups) == 1:
        return f"All came at the same checkpoint: {phrases[0]}."
    first = phrases[0][0].upper() + phrases[0][1:]
    together = " together" if len(groups[0]) > 1 else ""
    return f"{first} came first{together}, then " + ", then ".join(phrases[1:]) + "."
