"""Class-mean attention maps of chosen heads (DESIGN 3.2: what the paper plotted), streamed and
mergeable. Re-exported by ``bertgeom.measures.gate_accumulators``.

The maps are summed over each input's valid region ``[0:n, 0:n]`` by adding that slice of its
attention in place into a float32 running sum per class, on the attention's device: no masks,
no copy of the batch. Every ``FOLD_INPUTS`` inputs of a class, and before any result or merge,
the float32 sums are added into float64 totals, so the totals keep float64 precision (a float32
sum of at most ``FOLD_INPUTS`` + one batch maps in [0, 1] is exact to about 1e-5 relative, far
below the float16 the maps are stored in).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import Tensor

from bertgeom.measures.base import ALL_CLASSES
from bertgeom.measures.cpu_workers import run_tasks
from bertgeom.measures.gates import HIGH_ATTENTION_THRESHOLD

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

FOLD_INPUTS = 256
"""Inputs a class's float32 running sums take before they are added into its float64 totals."""

SMALL_UPDATE = 1 << 20
"""An update whose chosen maps hold at most this many entries is added by masked products
(``_add_masked``), a larger one slice by slice (``_add_slices``)."""


def class_groups(labels: Sequence[str] | None, batch: int) -> Iterator[tuple[str, IntArray]]:
    """``(class, item indices)`` for ``"all"`` and for each class in ``labels``."""
    yield ALL_CLASSES, np.arange(batch, dtype=np.int64)
    if labels is None:
        return
    if len(labels) != batch:
        raise ValueError(f"got {len(labels)} labels for a batch of {batch} inputs")
    names = np.asarray(labels, dtype=object)
    for name in dict.fromkeys(labels):
        if name == ALL_CLASSES:
            raise ValueError(f"{ALL_CLASSES!r} is reserved for the aggregate over all inputs")
        yield str(name), np.flatnonzero(names == name).astype(np.int64)


def ordered_classes(declared: Sequence[str], seen: Iterator[str]) -> list[str]:
    """``"all"``, then the declared classes, then any other class in the order first seen."""
    return list(dict.fromkeys([ALL_CLASSES, *declared, *seen]))


def _head_runs(chosen: Sequence[tuple[int, int]]) -> list[tuple[slice, slice]]:
    """``(pairs, heads)`` slices of the maximal runs of consecutive heads among ``chosen``
    ``(pair index, head)`` (pair indices of one layer are consecutive): whole-slice views."""
    runs: list[tuple[slice, slice]] = []
    first = 0
    for k in range(1, len(chosen) + 1):
        if k == len(chosen) or chosen[k][1] != chosen[k - 1][1] + 1:
            (first_pair, first_head), (last_pair, last_head) = chosen[first], chosen[k - 1]
            runs.append((slice(first_pair, last_pair + 1), slice(first_head, last_head + 1)))
            first = k
    return runs


def _split(runs: list[tuple[slice, slice]], parts: int) -> list[tuple[slice, slice]]:
    """The ``(pairs, heads)`` runs cut into about ``parts`` pieces of consecutive heads."""
    total = sum(run[1].stop - run[1].start for run in runs)
    size = max(1, -(-total // parts))
    pieces = []
    for pairs, heads in runs:
        for offset in range(0, heads.stop - heads.start, size):
            width = min(size, heads.stop - heads.start - offset)
            pieces.append(
                (
                    slice(pairs.start + offset, pairs.start + offset + width),
                    slice(heads.start + offset, heads.start + offset + width),
                )
            )
    return pieces


@dataclass(frozen=True)
class ClassMeanMaps:
    """Class-mean attention maps: ``maps (class, pair, query, key)`` float16, NaN where no input
    reached the position; ``inputs (class, pair)`` inputs averaged; ``classes`` and
    ``layers_heads`` name the first two axes."""

    classes: tuple[str, ...]
    layers_heads: tuple[tuple[int, int], ...]
    maps: npt.NDArray[np.float16]
    inputs: IntArray

    def get(self, name: str, layer: int, head: int) -> npt.NDArray[np.float16]:
        """The ``(query, key)`` mean map of one class and head."""
        return self.maps[self.classes.index(name), self.layers_heads.index((layer, head))]


class ClassMeanAttentionAccumulator:
    """Streams the mean attention map of each class for chosen (layer, head) pairs.

    For each class and pair it keeps the float64 sum of the maps over each input's valid region
    ``[0:n, 0:n]`` (n valid tokens: the real ones, or the padded length when padding counts) and a
    histogram of n, from which the number of inputs that reached each position follows: count(q, k)
    = number of inputs with n > max(q, k). So inputs of any length up to ``max_len`` mix, and the
    mean at (q, k) is over the inputs long enough to have it. Memory: 12 * pairs * max_len^2 bytes
    per class (the float64 totals and the float32 running sums; about 450 MB per class for all 144
    heads at 512 tokens: choose heads on large models).
    """

    def __init__(
        self,
        max_len: int,
        n_layers: int,
        n_heads: int,
        classes: Sequence[str] = (),
        layers_heads: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        pairs = (
            [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
            if layers_heads is None
            else sorted(dict.fromkeys((int(layer), int(head)) for layer, head in layers_heads))
        )
        if not pairs or any(not (0 <= lay < n_layers and 0 <= h < n_heads) for lay, h in pairs):
            raise ValueError(
                f"layers_heads must be (layer, head) pairs of a {n_layers} x "
                f"{n_heads} model, got {layers_heads}"
            )
        self.max_len = max_len
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.classes = list(classes)
        self.layers_heads = pairs
        self._sums: dict[str, FloatArray] = {}
        self._lengths: dict[str, IntArray] = {}
        # Float32 running sums not yet in _sums: per class (a labelled input's class, or "all"
        # for unlabelled updates; "all" receives every class's when folded), how many inputs
        # they hold and how far (n) they reach.
        self._running: dict[str, Tensor] = {}
        self._running_inputs: dict[str, int] = {}
        self._running_extent: dict[str, int] = {}
        for name in ordered_classes(self.classes, iter(())):
            self._add_class(name)

    def _add_class(self, name: str) -> None:
        if name not in self._sums:
            self._sums[name] = np.zeros((len(self.layers_heads), self.max_len, self.max_len))
            self._lengths[name] = np.zeros(
                (len(self.layers_heads), self.max_len + 1), dtype=np.int64
            )

    def _running_sum(self, name: str, device: torch.device) -> Tensor:
        running = self._running.get(name)
        if running is None or running.device != device:
            if running is not None:
                self._fold(name)  # what it holds, before it moves to the other device
            shape = (len(self.layers_heads), self.max_len, self.max_len)
            with torch.inference_mode(False):  # updated in place whatever the caller's mode
                running = torch.zeros(shape, dtype=torch.float32, device=device)
            self._running[name] = running
        return running

    def _fold(self, name: str | None = None) -> None:
        """Adds the float32 running sums of ``name`` (every class when None) into the float64
        totals, of the class and of "all", and zeroes them."""
        for key in list(self._running) if name is None else [name]:
            extent = self._running_extent.pop(key, 0)
            self._running_inputs.pop(key, None)
            if key not in self._running or extent == 0:
                continue
            region = self._running[key][:, :extent, :extent]
            values = region.to("cpu").numpy()
            self._sums[key][:, :extent, :extent] += values
            if key != ALL_CLASSES:
                self._sums[ALL_CLASSES][:, :extent, :extent] += values
            region.zero_()

    def update(
        self,
        layer: int,
        attn: Tensor,
        valid: Tensor,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Add one layer's ``attn (batch, head, query, key)`` of right-padded inputs whose
        ``valid (batch, seq)`` tokens are the first n of each; layers without chosen heads are
        ignored."""
        chosen = [(index, h) for index, (lay, h) in enumerate(self.layers_heads) if lay == layer]
        if not chosen:
            return
        batch, heads, seq, _ = attn.shape
        if heads != self.n_heads or seq > self.max_len or valid.shape != (batch, seq):
            raise ValueError(
                f"attn {tuple(attn.shape)} and valid {tuple(valid.shape)} must be "
                f"(batch, {self.n_heads}, seq, seq) and (batch, seq) with seq <= {self.max_len}"
            )
        lengths = valid.detach().to("cpu").ne(0).sum(dim=1)
        counts = lengths.numpy()
        pair_slice = slice(chosen[0][0], chosen[-1][0] + 1)
        for name, items in class_groups(labels, batch):
            self._add_class(name)
            self._lengths[name][pair_slice] += np.bincount(
                counts[items], minlength=self.max_len + 1
            )
        # Each input goes to its class's running sum (unlabelled: "all").
        targets = [ALL_CLASSES] * batch if labels is None else [str(name) for name in labels]
        sizes = lengths.tolist()
        source = attn.detach()
        sums = {name: self._running_sum(name, source.device) for name in dict.fromkeys(targets)}
        for name, n in zip(targets, sizes, strict=True):
            self._running_inputs[name] = self._running_inputs.get(name, 0) + 1
            self._running_extent[name] = max(self._running_extent.get(name, 0), n)
        if batch * len(chosen) * seq * seq <= SMALL_UPDATE:
            self._add_masked(source, chosen, [sums[name] for name in targets], lengths, seq)
        else:
            self._add_slices(source, chosen, [sums[name] for name in targets], sizes)
        for name in [key for key, inputs in self._running_inputs.items() if inputs >= FOLD_INPUTS]:
            self._fold(name)

    @staticmethod
    def _add_slices(
        source: Tensor, chosen: list[tuple[int, int]], targets: list[Tensor], sizes: list[int]
    ) -> None:
        """Adds each input's slice ``[:n, :n]`` in place into its running sum (``targets``), a
        run of consecutive inputs of one class and length at a time: no masks, no copy."""
        runs: list[tuple[Tensor, int, int, int]] = []
        start = 0
        while start < len(targets):
            stop = start + 1
            while (
                stop < len(targets)
                and targets[stop] is targets[start]
                and sizes[stop] == sizes[start]
            ):
                stop += 1
            if sizes[start] > 0:
                runs.append((targets[start], start, stop, sizes[start]))
            start = stop
        workers = torch.get_num_threads() if source.device.type == "cpu" else 1

        def add(pairs: slice, heads: slice) -> None:
            for running, first, last, n in runs:
                block = source[first:last, heads, :n, :n]
                whole = block[0] if last - first == 1 else block.sum(0, dtype=torch.float32)
                running[pairs, :n, :n].add_(whole)  # += would copy the region onto itself

        # Disjoint heads per task, so that workers never add into the same sums.
        tasks = [partial(add, *part) for part in _split(_head_runs(chosen), workers)]
        run_tasks(tasks, workers)

    @staticmethod
    def _add_masked(
        source: Tensor,
        chosen: list[tuple[int, int]],
        targets: list[Tensor],
        lengths: Tensor,
        seq: int,
    ) -> None:
        """A small batch: the valid blocks of all its inputs masked at once and summed per
        running sum (``targets``) by one product (an addition per input would cost more in
        calls than in arithmetic)."""
        sums = list({id(running): running for running in targets}.values())  # each once
        device = source.device
        inside = torch.arange(seq, device=device)[None, :] < lengths.to(device)[:, None]
        mask = (inside[:, :, None] & inside[:, None, :])[:, None].to(torch.float32)
        indicator = torch.zeros(len(sums), len(targets), device=device)
        position = {id(running): k for k, running in enumerate(sums)}
        which = torch.tensor([position[id(running)] for running in targets], device=device)
        indicator[which, torch.arange(len(targets), device=device)] = 1.0
        for pairs, heads in _head_runs(chosen):
            masked = (source[:, heads, :seq, :seq] * mask).to(torch.float32)
            added = (indicator @ masked.reshape(len(targets), -1)).view(len(sums), -1, seq, seq)
            for running, values in zip(sums, added, strict=True):
                running[pairs, :seq, :seq].add_(values)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with the running sums folded in (and not their device tensors)."""
        self._fold()
        state = dict(self.__dict__)
        state["_running"] = {}
        return state

    def merge(self, other: ClassMeanAttentionAccumulator) -> ClassMeanAttentionAccumulator:
        """A new accumulator holding this one's inputs and ``other``'s."""
        same = (self.max_len, self.n_layers, self.n_heads, self.layers_heads)
        if same != (other.max_len, other.n_layers, other.n_heads, other.layers_heads):
            raise ValueError("can only merge ClassMeanAttentionAccumulators with the same setup")
        merged = ClassMeanAttentionAccumulator(
            self.max_len,
            self.n_layers,
            self.n_heads,
            list(dict.fromkeys([*self.classes, *other.classes])),
            self.layers_heads,
        )
        for source in (self, other):
            source._fold()
            for name in source._sums:
                merged._add_class(name)
                merged._sums[name] += source._sums[name]
                merged._lengths[name] += source._lengths[name]
        return merged

    def position_counts(self, name: str) -> IntArray:
        """Inputs that reached each position, ``(pair, query, key)``: count(q, k) = number of
        inputs with n > max(q, k)."""
        # reached[p, L] = inputs with n > L
        reached = np.cumsum(self._lengths[name][:, ::-1], axis=1)[:, ::-1][:, 1:]
        index = np.maximum.outer(np.arange(self.max_len), np.arange(self.max_len))
        return reached[:, index]

    def result_maps(self) -> ClassMeanMaps:
        """The class-mean maps, float16, NaN where no input reached a position."""
        self._fold()
        names = ordered_classes(self.classes, iter(self._sums))
        maps = np.empty(
            (len(names), len(self.layers_heads), self.max_len, self.max_len), np.float16
        )
        inputs = np.zeros((len(names), len(self.layers_heads)), dtype=np.int64)
        for c, name in enumerate(names):
            counts = self.position_counts(name)
            with np.errstate(invalid="ignore", divide="ignore"):
                maps[c] = np.where(counts > 0, self._sums[name] / counts, np.nan)
            inputs[c] = self._lengths[name].sum(axis=1)
        return ClassMeanMaps(tuple(names), tuple(self.layers_heads), maps, inputs)

    def result(self) -> pd.DataFrame:
        """Long table per (layer, head, class): ``attention_map.inputs`` and
        ``attention_map.high_attention_positions`` (positions of the mean map above 0.3)."""
        maps = self.result_maps()
        rows = []
        for c, name in enumerate(maps.classes):
            for p, (layer, head) in enumerate(maps.layers_heads):
                high = int(
                    np.sum(np.nan_to_num(maps.maps[c, p], nan=0.0) > HIGH_ATTENTION_THRESHOLD)
                )
                rows.append((layer, head, name, "attention_map.inputs", float(maps.inputs[c, p])))
                rows.append(
                    (layer, head, name, "attention_map.high_attention_positions", float(high))
                )
        return pd.DataFrame(rows, columns=["layer", "head", "class", "metric", "value"])
