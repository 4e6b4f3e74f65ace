"""The contract between the engine, a measurement and the results store.

A measurement streams one family of measures over the captured layers. It owns:

- its **parameters**: a frozen dataclass (``parameters``), recorded in the manifest under its
  ``name`` and enough, with the model and the inputs, to build it again
  (``bertgeom analyze --like``);
- its **state**: ``update`` on one layer of one batch, ``merge`` with the same measurement over
  other inputs (shards of a Dask run);
- its **outputs**: ``write`` adds its tables and arrays to a :class:`MeasurementOutputs`, which
  the results store writes; nothing outside the measurement knows what it produces.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self

import numpy.typing as npt
import pandas as pd

from bertgeom.capture.hooks import CapturedLayer
from bertgeom.capture.input_batch import InputBatch
from bertgeom.measures.tokens import TokenMask
from bertgeom.names import Table


@dataclass(frozen=True)
class BatchContext:
    """What a measurement needs besides the layer's tensors: the batch and its token mask
    (which positions count, on the model's device), built once per batch by the engine."""

    batch: InputBatch
    tokens: TokenMask

    @property
    def labels(self) -> list[str] | None:
        """One class per input, or ``None`` when the analysis has no classes."""
        return list(self.batch.labels) if self.batch.labels is not None else None


@dataclass(frozen=True)
class ArrayOutput:
    """An n-dimensional result: ``dims`` names its axes, ``labels`` label some of them."""

    array: npt.NDArray[Any]
    dims: list[str]
    description: str
    labels: dict[str, Any] | None = None


@dataclass
class MeasurementOutputs:
    """What the measurements of a run write, gathered before the store writes it: parts of
    tables by table name (several measurements add rows to ``heads``), and arrays by name."""

    tables: dict[str, list[pd.DataFrame]] = field(default_factory=dict)
    arrays: dict[str, ArrayOutput] = field(default_factory=dict)

    def add_table(self, name: str, frame: pd.DataFrame) -> None:
        """Rows for table ``name`` (the parts of one table are concatenated in order)."""
        self.tables.setdefault(name, []).append(frame)

    def add_array(
        self,
        name: str,
        array: npt.NDArray[Any],
        dims: list[str],
        description: str,
        labels: dict[str, Any] | None = None,
    ) -> None:
        """The array ``name`` (one writer per name)."""
        if name in self.arrays:
            raise ValueError(f"array {name!r} is written twice")
        self.arrays[name] = ArrayOutput(array, dims, description, labels)


class Measurement(Protocol):
    """Streams one family of measurements over the captured layers (see the module)."""

    name: str
    """The measurement's name in the manifest and in the engine's timings."""

    @property
    def parameters(self) -> Any:
        """The frozen dataclass of the measurement's parameters."""
        ...

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        """Add one layer of one batch."""
        ...

    def merge(self, other: Self) -> Self:
        """A new measurement holding both this one's inputs and ``other``'s."""
        ...

    def write(self, outputs: MeasurementOutputs) -> None:
        """Add the measurement's tables and arrays to ``outputs``."""
        ...


class AccumulatorMeasurement:
    """Base of the measurements that feed one accumulator, ``self.accumulator``, whose
    ``result()`` rows go to one table, ``table``: merging two is merging their accumulators
    (the other attributes, the parameters, are taken from ``self``). Subclasses write
    ``name``, ``table``, ``parameters`` and ``update``."""

    table: ClassVar[str] = Table.HEADS
    accumulator: Any

    def merge(self, other: Self) -> Self:
        merged = copy.copy(self)
        merged.accumulator = self.accumulator.merge(other.accumulator)
        return merged

    def result(self) -> pd.DataFrame:
        """The accumulator's long table."""
        frame: pd.DataFrame = self.accumulator.result()
        return frame

    def write(self, outputs: MeasurementOutputs) -> None:
        outputs.add_table(self.table, self.result())


@dataclass(frozen=True)
class MeasurementSetup:
    """The facts of a run every measurement is built from (not parameters: they follow from the
    model and the inputs): the model's shape and the declared classes."""

    n_layers: int
    n_heads: int
    classes: tuple[str, ...] = ()


def parameters_from_json(kind: type[Any], values: dict[str, Any]) -> Any:
    """The parameters dataclass ``kind`` from its manifest entry (JSON lists back to tuples;
    names the dataclass does not have are refused)."""
    known = set(kind.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{kind.__name__} has no parameters {unknown}")
    return kind(**{name: _tuples(value) for name, value in values.items()})


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value
