"""The measurements the engine drives: each adapts captured layers to one accumulator of
``bertgeom.measures`` (update, merge, result).

- :class:`GateMeasurement`: gate scores (DESIGN 3.2) per layer, into a ``GateAccumulator``, and
  the per-input dominant-gate records, handed to a sink as they are made;
- :class:`ClassMeanMapMeasurement`: class-mean attention maps of chosen heads;
- :class:`SubspaceDataMeasurement`: the data-based subspace measures (DESIGN 3.3);
- :class:`ConeMeasurement`, :class:`HeadConeMeasurement`: the cone index (DESIGN 3.1) at the
  measuring points, of each head's output and attention rows, and of the ``[CLS]`` vectors;
- :class:`SpikeAttentionMeasurement`: attention received by spike domains, codons and defining
  mutations (DESIGN 3.5).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import Tensor

from bertgeom.capture.engine import AccumulatorMeasurement, BatchContext
from bertgeom.capture.hooks import CapturedLayer
from bertgeom.capture.projected_subspace import ProjectionBases, projected_subspace_measures
from bertgeom.capture.stream_points import stream_points, with_layer_inputs
from bertgeom.genomics.token_map import defining_mutations, layout_mutations, mutation_effects
from bertgeom.measures.cone import ClassConeAccumulator, ConeAccumulator, HeadConeAccumulator
from bertgeom.measures.gate_accumulators import (
    ClassMeanAttentionAccumulator,
    ClassMeanMaps,
    GateAccumulator,
    gate_records,
)
from bertgeom.measures.gates import (
    DEFAULT_CLUSTER_ROWS,
    DEFAULT_THRESHOLDS,
    DEFAULT_WINDOW,
    GATE_NAMES,
    gate_scores,
)
from bertgeom.measures.histograms import histogram_frame
from bertgeom.measures.spike_attention import SpikeAttentionAccumulator
from bertgeom.measures.subspace_data import SubspaceDataAccumulator

RecordSink = Callable[[pd.DataFrame], None]
"""Receives per-input rows (``inputs.parquet``) as they are made."""


class GateMeasurement(AccumulatorMeasurement):
    """Gate scores of every head on every input: aggregated per (layer, head, class) by a
    ``GateAccumulator``; with ``records``, each (input, layer, head) row of ``gate_records``
    (plus ``input_id`` and ``class``) goes to the sink."""

    table = "heads"

    def __init__(
        self,
        n_layers: int,
        n_heads: int,
        classes: Sequence[str] = (),
        thresholds: Mapping[str, float] = DEFAULT_THRESHOLDS,
        window: int = DEFAULT_WINDOW,
        cluster_rows: int | None = DEFAULT_CLUSTER_ROWS,
        include_padding: bool = False,
        records: RecordSink | None = None,
    ) -> None:
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.thresholds = thresholds
        self.window = window
        self.cluster_rows = cluster_rows
        self.include_padding = include_padding
        self.records = records
        self.accumulator = GateAccumulator(n_layers, n_heads, classes, thresholds)
        self._batch_scores: list[Tensor] = []

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        scores = gate_scores(
            captured.attention,
            context.attention_mask,
            window=self.window,
            include_padding=self.include_padding,
            cluster_rows=self.cluster_rows,
        )
        self.accumulator.update(captured.layer, scores, context.labels)
        if self.records is None:
            return
        if captured.layer == 0:
            self._batch_scores = []
        self._batch_scores.append(scores)
        if captured.layer == self.n_layers - 1:
            self.records(self._records(torch.stack(self._batch_scores, dim=1), context))
            self._batch_scores = []

    def _records(self, scores: Tensor, context: BatchContext) -> pd.DataFrame:
        """Rows of the whole batch from ``scores (batch, layer, head, 7)``, ordered by input,
        layer, head: one ``gate_records`` call over the layers' heads side by side (a sixth of
        the table-building work of one call per layer)."""
        batch = context.batch
        n_inputs, n_layers, n_heads, n_gates = scores.shape
        flat = scores.reshape(n_inputs, n_layers * n_heads, n_gates)
        frame = gate_records(flat, 0, torch.from_numpy(batch.indices), self.thresholds)
        per_input = n_layers * n_heads
        classes = batch.labels if batch.labels is not None else [None] * n_inputs
        columns = {
            "input_index": frame["input_index"].to_numpy(),
            "input_id": np.repeat(np.asarray(batch.input_ids, dtype=object), per_input),
            "class": np.repeat(np.asarray(classes, dtype=object), per_input),
            "layer": np.tile(np.repeat(np.arange(n_layers, dtype=np.int32), n_heads), n_inputs),
            "head": np.tile(np.arange(n_heads, dtype=np.int32), n_inputs * n_layers),
            "gate": frame["gate"].to_numpy(),
        }
        # Scores are computed in float32 from float32 attention: float32 storage loses nothing.
        for gate in GATE_NAMES:
            columns[f"score_{gate}"] = frame[f"score_{gate}"].to_numpy(np.float32)
        return pd.DataFrame(columns)

    def merge(self, other: GateMeasurement) -> GateMeasurement:
        merged = super().merge(other)
        merged.records = None  # a merged measurement is for results, not for streaming rows
        merged._batch_scores = []
        return merged


class ClassMeanMapMeasurement(AccumulatorMeasurement):
    """Class-mean attention maps of the chosen (layer, head) pairs over the first
    ``map_length`` positions (longer inputs are cropped to them: position (q, k) is averaged
    over the inputs that reach it)."""

    table = "heads"

    def __init__(
        self,
        map_length: int,
        n_layers: int,
        n_heads: int,
        classes: Sequence[str] = (),
        layers_heads: Sequence[tuple[int, int]] | None = None,
        include_padding: bool = False,
    ) -> None:
        self.map_length = map_length
        self.accumulator = ClassMeanAttentionAccumulator(
            map_length, n_layers, n_heads, classes, layers_heads, include_padding
        )
        self._layers = {layer for layer, _ in self.accumulator.layers_heads}

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        if captured.layer not in self._layers:
            return
        attention, mask = captured.attention, context.attention_mask
        if attention.shape[-1] > self.map_length:
            attention = attention[..., : self.map_length, : self.map_length]
            mask = mask[:, : self.map_length]
        self.accumulator.update(captured.layer, attention, mask, context.labels)

    def maps(self) -> ClassMeanMaps:
        """The class-mean maps, float16 ``(class, pair, query, key)``."""
        return self.accumulator.result_maps()


class SubspaceDataMeasurement(AccumulatorMeasurement):
    """The data-based subspace measures of the stream entering each layer, read through that
    layer's query and key weights, per (layer, head, class).

    ``weights[layer] = (W_q, b_q, W_k, b_k)``. By default the measures are computed from the
    layer's own query and key projections (``projected_subspace``, a twelfth of the work);
    ``use_projections=False``, or a layer with a rank-deficient head, uses the reference
    ``subspace_data_measures`` on the layer input.
    """

    table = "heads"

    def __init__(
        self,
        weights: Sequence[tuple[Tensor, Tensor | None, Tensor, Tensor | None]],
        n_heads: int,
        include_padding: bool = False,
        include_query_bias: bool = False,
        use_projections: bool = True,
    ) -> None:
        self.weights = list(weights)
        self.n_heads = n_heads
        self.include_padding = include_padding
        self.include_query_bias = include_query_bias
        self.bases = [
            ProjectionBases.of(wq, bq, wk, bk, n_heads) if use_projections else None
            for wq, bq, wk, bk in self.weights
        ]
        self.accumulator = SubspaceDataAccumulator(include_padding, include_query_bias)

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        layer = captured.layer
        bases = self.bases[layer]
        if bases is None:
            weight_q, bias_q, weight_k, _ = self.weights[layer]
            self.accumulator.update(
                layer,
                captured.layer_input,
                context.attention_mask,
                weight_q,
                weight_k,
                self.n_heads,
                context.labels,
                bias_q,
            )
            return
        values = projected_subspace_measures(
            captured.layer_input,
            captured.queries,
            captured.keys,
            bases,
            self.n_heads,
            context.attention_mask,
            self.include_padding,
            self.include_query_bias,
        )
        self.accumulator.update_values(layer, values, context.labels)


class ConeMeasurement:
    """Cone index of the token vectors at the measuring points (``stream_points``: the
    embedding output as layer -1, then each layer's ``multihead_output`` and ``layer_output``;
    ``layer_input`` rows are copies, ``with_layer_inputs``), and of the ``[CLS]`` vectors of
    each class at each ``layer_output``: the ``layers`` table. The ``head_output`` point is per
    head: :class:`HeadConeMeasurement`."""

    table = "layers"

    def __init__(self, include_padding: bool = False) -> None:
        self.tokens = ConeAccumulator(include_padding=include_padding)
        self.cls = ClassConeAccumulator()

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        labels = context.labels
        for layer, point, hidden in stream_points(captured):
            self.tokens.update(layer, point, hidden, context.attention_mask, labels)
            if point == "layer_output":
                self.cls.update(layer, hidden[:, 0], labels)

    def merge(self, other: ConeMeasurement) -> ConeMeasurement:
        merged = ConeMeasurement.__new__(ConeMeasurement)
        merged.tokens = self.tokens.merge(other.tokens)
        merged.cls = self.cls.merge(other.cls)
        return merged

    def result(self) -> pd.DataFrame:
        tokens = with_layer_inputs(self.tokens.result())
        return pd.concat([tokens, self.cls.result()], ignore_index=True)

    def histograms(self) -> pd.DataFrame:
        """Counts of the per-input ``I / n`` (kind ``cone_normalized``) in the long format of
        ``histogram_frame``."""
        frame = histogram_frame(self.tokens.histograms(), self.tokens.bin_edges, "cone_normalized")
        return with_layer_inputs(frame)


class HeadConeMeasurement(AccumulatorMeasurement):
    """Cone index of each head's output rows ``Z_h = A V_h`` and of its attention rows."""

    table = "heads"

    def __init__(self, include_padding: bool = False) -> None:
        self.accumulator = HeadConeAccumulator(include_padding)

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        mask, labels = context.attention_mask, context.labels
        self.accumulator.update_head_outputs(captured.layer, captured.head_outputs, mask, labels)
        self.accumulator.update_attention_rows(captured.layer, captured.attention, mask, labels)


class SpikeAttentionMeasurement(AccumulatorMeasurement):
    """Attention received by spike domains, positions and defining mutations per (layer, head,
    class) (DESIGN 3.5, ``docs/spike.md``): needs batches with a spike layout (k-mer sources
    opened with ``spike_layouts=True``)."""

    table = "heads"

    def __init__(
        self,
        n_layers: int,
        n_heads: int,
        classes: Sequence[str] = (),
        include_padding: bool = False,
    ) -> None:
        self.accumulator = SpikeAttentionAccumulator(
            n_layers, n_heads, layout_mutations(), defining_mutations(), classes, include_padding
        )

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        layout = context.batch.spike
        if layout is None:
            raise ValueError(
                "spike attention needs batches with a spike layout: open the FASTA or dataset "
                "source with spike_layouts=True"
            )
        self.accumulator.update(
            captured.layer, captured.attention, context.attention_mask, layout, context.labels
        )

    def mutations(self) -> pd.DataFrame:
        """``mutations.parquet``: the accumulator's mutation table with each mutation's
        amino-acid effect after its name."""
        table = self.accumulator.mutation_table()
        effects = mutation_effects()
        table.insert(4, "aa_effect", [effects.get(name, "") for name in table["mutation"]])
        return table

    def profile(self) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Classes and the ``(class, layer, head, codon)`` float32 per-codon profile."""
        return self.accumulator.codon_profile()
