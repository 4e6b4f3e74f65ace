"""The analysis loop: one forward pass per batch, each layer's tensors handed to every
measurement as the pass goes (small batches first joined into chunks, ``capture.chunks``).

A measurement (``capture.measurement``) has an ``update`` that reads a
:class:`~bertgeom.capture.hooks.CapturedLayer`: the engine does not know what is measured, so
adding one (cone index, distribution, ...) is adding an object to the list.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from bertgeom.capture.chunks import (
    CHUNK_BYTES,
    CHUNK_INPUTS,
    captured_bytes,
    join_batches,
    join_layers,
    join_sequences,
)
from bertgeom.capture.hooks import CapturedLayer, LayerCapture
from bertgeom.capture.input_batch import InputBatch
from bertgeom.capture.loading import LoadedModel
from bertgeom.capture.measurement import BatchContext, Measurement
from bertgeom.measures.tokens import token_mask

BatchCallback = Callable[[InputBatch, Tensor | None], None]
"""Called after each batch with the batch and the model's logits ``(batch, class)`` (or None)."""


@dataclass
class EngineTimings:
    """Wall-clock seconds: ``total`` of the loop, ``measures`` spent inside the measurements,
    ``inputs`` reading and tokenising, ``waiting`` the forward pass waited for the measurement
    thread (with overlap), ``joining`` joining small batches into chunks; ``batches`` (forward
    batches), ``chunks`` (joined ones measured) and ``inputs_analysed`` counted."""

    total: float = 0.0
    measures: float = 0.0
    inputs: float = 0.0
    waiting: float = 0.0
    joining: float = 0.0
    batches: int = 0
    chunks: int = 0
    inputs_analysed: int = 0
    per_measurement: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "loop_s": round(self.total, 4),
            "measures_s": round(self.measures, 4),
            "inputs_s": round(self.inputs, 4),
            "waiting_s": round(self.waiting, 4),
            "joining_s": round(self.joining, 4),
            "batches": self.batches,
            "chunks": self.chunks,
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
            name = measurement.name
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


class _Chunker:
    """Groups the layers of consecutive small forward batches into chunks of at least
    ``min_inputs`` inputs (``capture.chunks``) before handing them to the dispatcher, so the
    measurements' fixed cost per update is paid once per chunk.

    A batch of ``min_inputs`` or more, one whose layers would not fit in ``max_bytes``, and
    every batch when ``enabled`` is False go to the dispatcher layer by layer as the forward
    pass makes them (one layer held at a time). The batch ends of a chunk (``on_batch``) follow
    its measurements, in batch order."""

    def __init__(
        self,
        dispatcher: _Dispatcher,
        timings: EngineTimings,
        n_layers: int,
        min_inputs: int,
        max_bytes: int,
        enabled: bool,
    ) -> None:
        self.dispatcher = dispatcher
        self.timings = timings
        self.n_layers = n_layers
        self.min_inputs = min_inputs
        self.max_bytes = max_bytes
        self.enabled = enabled and min_inputs > 1
        self.context: BatchContext | None = None
        self.direct = True
        self.layers: list[list[CapturedLayer]] = []
        self.contexts: list[BatchContext] = []
        self.ends: list[tuple[InputBatch, Tensor | None]] = []
        self.bytes = 0

    def begin(self, context: BatchContext) -> None:
        """A batch's forward pass starts."""
        self.context = context
        self.direct = not self.enabled or context.batch.spike is not None

    def layer(self, captured: CapturedLayer) -> None:
        """One layer of the current batch, from the hooks."""
        assert self.context is not None
        if captured.layer == 0 and not self.direct:
            estimate = captured_bytes(captured) * self.n_layers
            if self.contexts and self.bytes + estimate > self.max_bytes:
                self.flush()
            self.direct = not self.contexts and (
                len(self.context.batch) >= self.min_inputs or estimate > self.max_bytes
            )
            if not self.direct:
                self.contexts.append(self.context)
        if self.direct:
            self.dispatcher.layer(captured, self.context)
            return
        if captured.layer == len(self.layers):
            self.layers.append([])
        self.layers[captured.layer].append(captured)
        self.bytes += captured_bytes(captured)

    def end(self, batch: InputBatch, logits: Tensor | None) -> None:
        """The current batch's forward pass is over."""
        self.context = None
        if self.direct:
            self.dispatcher.batch_end(batch, logits)
            return
        self.ends.append((batch, logits))
        if sum(len(context.batch) for context in self.contexts) >= self.min_inputs:
            self.flush()

    def flush(self) -> None:
        """Measure the buffered batches as one chunk, then end them."""
        if not self.contexts:
            return
        contexts, layers, ends = self.contexts, self.layers, self.ends
        self.contexts, self.layers, self.ends, self.bytes = [], [], [], 0
        joining = time.perf_counter()
        batch = join_batches([context.batch for context in contexts])
        # Chunks are formed only when padding does not count, so the valid tokens are the real
        # ones and the joined mask is that of the joined (right-padded) batch.
        valid = join_sequences([context.tokens.valid for context in contexts], (1,))
        context = BatchContext(batch, token_mask(valid))
        previous: tuple[list[CapturedLayer], CapturedLayer] | None = None
        for captures in layers:
            joined = join_layers(captures, previous)
            self.timings.joining += time.perf_counter() - joining
            self.dispatcher.layer(joined, context)
            previous = (captures, joined)
            joining = time.perf_counter()
        del previous, layers
        self.timings.chunks += int(len(contexts) > 1)
        for ended, logits in ends:
            self.dispatcher.batch_end(ended, logits)


def run_measurements(
    loaded: LoadedModel,
    batches: Iterable[InputBatch],
    measurements: Sequence[Measurement],
    *,
    include_padding: bool = False,
    device: torch.device | str = "cpu",
    on_batch: BatchCallback | None = None,
    overlap: bool = False,
    chunk_inputs: int = CHUNK_INPUTS,
    chunk_bytes: int = CHUNK_BYTES,
) -> EngineTimings:
    """Run every batch through ``loaded.model`` once and feed each layer to ``measurements``.

    Forward batches of fewer than ``chunk_inputs`` inputs are joined into chunks of at least
    that many (``capture.chunks``; at most ``chunk_bytes`` of captured tensors, and never with
    ``include_padding`` or spike layouts) before the measurements see them: the same results,
    with the measurements' cost per update paid once per chunk. ``chunk_inputs=1`` measures
    every batch as it comes.

    A layer's tensors are released once every measurement has read them, so memory holds one
    layer's tensors (up to three with ``overlap``) or one chunk, the measurements' fixed-size
    state and one batch: never all layers' attention of a large batch at once and nothing that
    grows with the number of inputs. ``on_batch`` runs after the measurements have seen the
    whole batch.
    """
    timings = EngineTimings()
    started = time.perf_counter()
    iterator = iter(batches)
    with _Dispatcher(measurements, timings, on_batch, overlap) as dispatcher:
        chunker = _Chunker(
            dispatcher,
            timings,
            loaded.n_layers,
            chunk_inputs,
            chunk_bytes,
            enabled=not include_padding,
        )
        with (
            torch.inference_mode(),
            LayerCapture(loaded.encoder, loaded.adapter, loaded.n_heads, chunker.layer),
        ):
            while True:
                reading = time.perf_counter()
                batch = next(iterator, None)
                timings.inputs += time.perf_counter() - reading
                if batch is None:
                    break
                encoding = {name: tensor.to(device) for name, tensor in batch.encoding.items()}
                # The one place the padding switch becomes the batch's token mask.
                tokens = token_mask(encoding["attention_mask"], include_padding)
                chunker.begin(BatchContext(batch, tokens))
                output = loaded.model(**encoding)
                chunker.end(batch, getattr(output, "logits", None))
                timings.batches += 1
                timings.inputs_analysed += len(batch)
            chunker.flush()
    timings.total = time.perf_counter() - started
    return timings
