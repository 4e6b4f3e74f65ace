"""The analysis loop: one forward pass per batch, each layer's tensors handed to every
measurement as the pass goes.

A measurement is anything with the accumulator contract of ``bertgeom.measures.base`` plus an
``update`` that reads a :class:`~bertgeom.capture.hooks.CapturedLayer`: the engine does not know
what is measured, so adding one (cone index, distribution, ...) is adding an object to the list.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import pandas as pd
import torch
from torch import Tensor

from bertgeom.capture.hooks import CapturedLayer, LayerCapture
from bertgeom.capture.inputs import InputBatch
from bertgeom.capture.loading import LoadedModel


@dataclass(frozen=True)
class BatchContext:
    """What a measurement needs besides the layer's tensors: the batch, its right-padded
    ``attention_mask (batch, seq)`` on the model's device, and the padding switch."""

    batch: InputBatch
    attention_mask: Tensor
    include_padding: bool = False

    @property
    def labels(self) -> list[str] | None:
        """One class per input, or ``None`` when the analysis has no classes."""
        return list(self.batch.labels) if self.batch.labels is not None else None


class Measurement(Protocol):
    """Streams one family of measurements over the captured layers.

    ``table`` names the results table its ``result()`` rows belong to: ``"heads"`` (columns
    ``layer, head, class, metric, value``) or ``"layers"`` (``layer, point, class, metric,
    value``).
    """

    table: str

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        """Add one layer of one batch."""
        ...

    def merge(self, other: Self) -> Self:
        """A new measurement holding both this one's inputs and ``other``'s."""
        ...

    def result(self) -> pd.DataFrame:
        """The aggregate as a long table."""
        ...


class AccumulatorMeasurement:
    """Base of the measurements that feed one accumulator, ``self.accumulator``: merging two is
    merging their accumulators (the other attributes, the parameters, are taken from ``self``),
    and the result is the accumulator's. Subclasses write ``table`` and ``update``."""

    accumulator: Any

    def merge(self, other: Self) -> Self:
        merged = copy.copy(self)
        merged.accumulator = self.accumulator.merge(other.accumulator)
        return merged

    def result(self) -> pd.DataFrame:
        frame: pd.DataFrame = self.accumulator.result()
        return frame


BatchCallback = Callable[[InputBatch, Tensor | None], None]
"""Called after each batch with the batch and the model's logits ``(batch, class)`` (or None)."""


@dataclass
class EngineTimings:
    """Wall-clock seconds: ``total`` of the loop, ``measures`` spent inside the measurements,
    ``inputs`` reading and tokenising, ``waiting`` the forward pass waited for the measurement
    thread (with overlap); ``batches`` and ``inputs_analysed`` counted."""

    total: float = 0.0
    measures: float = 0.0
    inputs: float = 0.0
    waiting: float = 0.0
    batches: int = 0
    inputs_analysed: int = 0
    per_measurement: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "loop_s": round(self.total, 4),
            "measures_s": round(self.measures, 4),
            "inputs_s": round(self.inputs, 4),
            "waiting_s": round(self.waiting, 4),
            "batches": self.batches,
            "inputs": self.inputs_analysed,
            "per_measurement_s": {k: round(v, 4) for k, v in self.per_measurement.items()},
        }


class _Dispatcher:
    """Feeds captured layers and batch ends to the measurements, in order: inline, or on one
    worker thread (``overlap``) so that measuring layer l runs while the model computes layer
    l + 1. At most ``max_pending`` layers wait for the worker, so memory stays bounded; one
    worker keeps the order of updates, so overlapping changes no result."""

    def __init__(
        self,
        measurements: Sequence[Measurement],
        timings: EngineTimings,
        on_batch: BatchCallback | None,
        overlap: bool,
        max_pending: int = 2,
    ) -> None:
        self.measurements = measurements
        self.timings = timings
        self.on_batch = on_batch
        self.queue: queue.Queue[tuple[str, Any, Any] | None] = queue.Queue(max_pending)
        self.error: BaseException | None = None
        self.worker = (
            threading.Thread(target=self._work, name="bertgeom-measures", daemon=True)
            if overlap
            else None
        )

    def __enter__(self) -> _Dispatcher:
        if self.worker is not None:
            self.worker.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if self.worker is None:
            return
        if kind is not None:
            self.error = self.error or RuntimeError("stopped")
            while True:  # drop what is queued so the worker sees the end at once
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break
        self.queue.put(None)
        self.worker.join()
        if kind is None and self.error is not None:
            raise self.error

    def layer(self, captured: CapturedLayer, context: BatchContext) -> None:
        self._submit("layer", captured, context)

    def batch_end(self, batch: InputBatch, logits: Tensor | None) -> None:
        self._submit("batch", batch, logits)

    def _submit(self, kind: str, first: Any, second: Any) -> None:
        if self.worker is None:
            self._handle(kind, first, second)
            return
        if self.error is not None:
            raise self.error
        waiting = time.perf_counter()
        self.queue.put((kind, first, second))
        self.timings.waiting += time.perf_counter() - waiting

    def _handle(self, kind: str, first: Any, second: Any) -> None:
        if kind == "batch":
            if self.on_batch is not None:
                self.on_batch(first, second)
            return
        for measurement in self.measurements:
            started = time.perf_counter()
            measurement.update(first, second)
            spent = time.perf_counter() - started
            name = type(measurement).__name__
            self.timings.per_measurement[name] = self.timings.per_measurement.get(name, 0.0) + spent
            self.timings.measures += spent

    def _work(self) -> None:
        with torch.inference_mode():
            while (item := self.queue.get()) is not None:
                if self.error is not None:
                    continue
                try:
                    self._handle(*item)
                except BaseException as error:  # re-raised in the main thread
                    self.error = error


def run_measurements(
    loaded: LoadedModel,
    batches: Iterable[InputBatch],
    measurements: Sequence[Measurement],
    *,
    include_padding: bool = False,
    device: torch.device | str = "cpu",
    on_batch: BatchCallback | None = None,
    overlap: bool = False,
) -> EngineTimings:
    """Run every batch through ``loaded.model`` once and feed each layer to ``measurements``.

    A layer's tensors are released once every measurement has read them, so memory holds one
    layer's tensors (up to three with ``overlap``), the measurements' fixed-size state and one
    batch: never all layers' attention at once and nothing that grows with the number of
    inputs. ``on_batch`` runs after the measurements have seen the whole batch.
    """
    timings = EngineTimings()
    current: list[BatchContext] = []
    started = time.perf_counter()
    iterator = iter(batches)
    with _Dispatcher(measurements, timings, on_batch, overlap) as dispatcher:

        def on_layer(captured: CapturedLayer) -> None:
            dispatcher.layer(captured, current[-1])

        with (
            torch.inference_mode(),
            LayerCapture(loaded.encoder, loaded.adapter, loaded.n_heads, on_layer),
        ):
            while True:
                reading = time.perf_counter()
                batch = next(iterator, None)
                timings.inputs += time.perf_counter() - reading
                if batch is None:
                    break
                encoding = {name: tensor.to(device) for name, tensor in batch.encoding.items()}
                current[:] = [BatchContext(batch, encoding["attention_mask"], include_padding)]
                output = loaded.model(**encoding)
                current.clear()
                dispatcher.batch_end(batch, getattr(output, "logits", None))
                timings.batches += 1
                timings.inputs_analysed += len(batch)
    timings.total = time.perf_counter() - started
    return timings
