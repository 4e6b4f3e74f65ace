"""The attention measurements the engine drives: each adapts captured layers to one
accumulator of ``bertgeom.measures`` and owns its parameters and outputs
(``capture.measurement``).

- :class:`GateMeasurement`: gate scores (DESIGN 3.2) per layer, into a ``GateAccumulator``, and
  the per-input dominant-gate records, handed to a sink as they are made;
- :class:`ClassMeanMapMeasurement`: class-mean attention maps of chosen heads;
- :class:`SubspaceDataMeasurement`: the data-based subspace measures (DESIGN 3.3);
- :class:`SpikeAttentionMeasurement`: attention received by spike domains, codons and defining
  mutations (DESIGN 3.5).

The measures of the token stream (cone index, distribution, separability) are in
``capture.stream_measurements``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bertgeom.capture.hooks import CapturedLayer
from bertgeom.capture.measurement import (
    AccumulatorMeasurement,
    BatchContext,
    MeasurementOutputs,
    MeasurementSetup,
)
from bertgeom.capture.projected_subspace import ProjectionBases, projected_subspace_measures
from bertgeom.genomics.token_map import defining_mutations, layout_mutations, mutation_effects
from bertgeom.measures.class_mean_maps import ClassMeanAttentionAccumulator
from bertgeom.measures.cluster import DEFAULT_CLUSTER_ROWS
from bertgeom.measures.gate_accumulators import GateAccumulator, gate_records
from bertgeom.measures.gates import (
    DEFAULT_THRESHOLDS,
    DEFAULT_WINDOW,
    GATE_NAMES,
    HIGH_ATTENTION_THRESHOLD,
    gate_scores,
)
from bertgeom.measures.spike_attention import SpikeAttentionAccumulator
from bertgeom.measures.subspace_data import SubspaceDataAccumulator
from bertgeom.names import Array, Table

RecordSink = Callable[[pd.DataFrame], None]
"""Receives per-input rows (``inputs.parquet``) as they are made."""

QueryKeyWeights = Sequence[tuple[Tensor, Tensor | None, Tensor, Tensor | None]]
"""Per layer ``(W_q, b_q, W_k, b_k)``: ``LoadedModel.query_key_weights``."""


@dataclass(frozen=True)
class GateParameters:
    """``window``: neighbours read by the contextual gates; ``cluster_rows``: content queries
    entering the cluster score (None: all); ``thresholds``: of the dominant gate;
    ``records``: the per-input rows of ``inputs.parquet`` are written."""

    window: int = DEFAULT_WINDOW
    cluster_rows: int | None = DEFAULT_CLUSTER_ROWS
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    records: bool = True


class GateMeasurement(AccumulatorMeasurement):
    """Gate scores of every head on every input: aggregated per (layer, head, class) by a
    ``GateAccumulator``; with ``records``, each (input, layer, head) row of ``gate_records``
    (plus ``input_id`` and ``class``) goes to the sink."""

    name = "gates"

    def __init__(
        self,
        setup: MeasurementSetup,
        parameters: GateParameters | None = None,
        records: RecordSink | None = None,
    ) -> None:
        self.parameters = parameters or GateParameters()
        self.setup = setup
        self.records = records if self.parameters.records else None
        self.accumulator = GateAccumulator(
            setup.n_layers, setup.n_heads, setup.classes, self.parameters.thresholds
        )
        self._batch_scores: list[Tensor] = []

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        scores = gate_scores(
            captured.attention,
            context.tokens,
            window=self.parameters.window,
            cluster_rows=self.parameters.cluster_rows,
        )
        self.accumulator.update(captured.layer, scores, context.labels)
        if self.records is None:
            return
        if captured.layer == 0:
            self._batch_scores = []
        self._batch_scores.append(scores)
        if captured.layer == self.setup.n_layers - 1:
            self.records(self._records(torch.stack(self._batch_scores, dim=1), context))
            self._batch_scores = []

    def _records(self, scores: Tensor, context: BatchContext) -> pd.DataFrame:
        """Rows of the whole batch from ``scores (batch, layer, head, 7)``, ordered by input,
        layer, head: one ``gate_records`` call over the layers' heads side by side (a sixth of
        the table-building work of one call per layer)."""
        batch = context.batch
        n_inputs, n_layers, n_heads, n_gates = scores.shape
        flat = scores.reshape(n_inputs, n_layers * n_heads, n_gates)
        thresholds = self.parameters.thresholds
        frame = gate_records(flat, 0, torch.from_numpy(batch.indices), thresholds)
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


@dataclass(frozen=True)
class MapParameters:
    """``length``: positions kept (longer inputs are cropped); ``heads``: the (layer, head)
    pairs whose maps are kept (None: every head); ``high_attention_threshold``: the paper's
    "high attention", recorded with the maps for the report."""

    length: int
    heads: tuple[tuple[int, int], ...] | None = None
    high_attention_threshold: float = HIGH_ATTENTION_THRESHOLD


class ClassMeanMapMeasurement(AccumulatorMeasurement):
    """Class-mean attention maps of the chosen (layer, head) pairs over the first ``length``
    positions (longer inputs are cropped to them: position (q, k) is averaged over the inputs
    that reach it): the ``class_mean_maps`` array, cut to the longest input seen, and their
    ``attention_map.*`` rows of ``heads``."""

    name = "class_mean_maps"

    def __init__(self, setup: MeasurementSetup, parameters: MapParameters) -> None:
        self.parameters = parameters
        self.accumulator = ClassMeanAttentionAccumulator(
            parameters.length,
            setup.n_layers,
            setup.n_heads,
            setup.classes,
            parameters.heads,
        )
        self._layers = {layer for layer, _ in self.accumulator.layers_heads}
        self.longest = 0

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        if captured.layer == 0:  # the longest input seen: the maps are cut to it
            longest = int(context.tokens.n_real.max())
            self.longest = max(self.longest, longest)
        if captured.layer not in self._layers:
            return
        attention, valid = captured.attention, context.tokens.valid
        length = self.parameters.length
        if attention.shape[-1] > length:
            attention = attention[..., :length, :length]
            valid = valid[:, :length]
        self.accumulator.update(captured.layer, attention, valid, context.labels)

    def merge(self, other: ClassMeanMapMeasurement) -> ClassMeanMapMeasurement:
        merged = super().merge(other)
        merged.longest = max(self.longest, other.longest)
        return merged

    def write(self, outputs: MeasurementOutputs) -> None:
        super().write(outputs)
        maps = self.accumulator.result_maps()
        keep = max(1, min(self.longest, maps.maps.shape[-1]))
        outputs.add_array(
            Array.CLASS_MEAN_MAPS,
            np.ascontiguousarray(maps.maps[..., :keep, :keep]),
            ["class", "pair", "query", "key"],
            "class-mean attention maps (NaN where no input reached the position), float16; "
            f"high attention above {self.parameters.high_attention_threshold}",
            {
                "class": list(maps.classes),
                "pair": [list(pair) for pair in maps.layers_heads],
                "inputs": maps.inputs.tolist(),
            },
        )


@dataclass(frozen=True)
class SubspaceDataParameters:
    """``include_query_bias``: the query bias enters the query-side measures;
    ``use_projections``: computed from the layer's own query and key projections (the same
    measures for a twelfth of the work) rather than from the layer input."""

    include_query_bias: bool = False
    use_projections: bool = True


class SubspaceDataMeasurement(AccumulatorMeasurement):
    """The data-based subspace measures of the stream entering each layer, read through that
    layer's query and key weights, per (layer, head, class).

    ``weights[layer] = (W_q, b_q, W_k, b_k)``. By default the measures are computed from the
    layer's own query and key projections (``projected_subspace``); without
    ``use_projections``, or for a layer with a rank-deficient head, from the reference
    ``subspace_data_measures`` on the layer input.
    """

    name = "subspace_data"

    def __init__(
        self,
        setup: MeasurementSetup,
        weights: QueryKeyWeights,
        parameters: SubspaceDataParameters | None = None,
    ) -> None:
        self.parameters = parameters = parameters or SubspaceDataParameters()
        self.weights = list(weights)
        self.n_heads = setup.n_heads
        self.bases = [
            ProjectionBases.of(wq, bq, wk, bk, setup.n_heads)
            if parameters.use_projections
            else None
            for wq, bq, wk, bk in self.weights
        ]
        self.accumulator = SubspaceDataAccumulator(parameters.include_query_bias)

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        layer = captured.layer
        bases = self.bases[layer]
        if bases is None:
            weight_q, bias_q, weight_k, _ = self.weights[layer]
            self.accumulator.update(
                layer,
                captured.layer_input,
                context.tokens.valid,
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
            context.tokens.valid,
            self.parameters.include_query_bias,
        )
        self.accumulator.update_values(layer, values, context.labels)


@dataclass(frozen=True)
class SpikeAttentionParameters:
    """The spike measures have no parameters of their own: the domains, codons and defining
    mutations are the embedded reference's (``docs/spike.md``)."""


class SpikeAttentionMeasurement(AccumulatorMeasurement):
    """Attention received by spike domains, positions and defining mutations per (layer, head,
    class) (DESIGN 3.5, ``docs/spike.md``): needs batches with a spike layout (k-mer sources
    opened with ``spike_layouts=True``). Writes its rows of ``heads``, ``mutations`` and the
    ``spike_attention_profile`` array."""

    name = "spike_attention"

    def __init__(
        self, setup: MeasurementSetup, parameters: SpikeAttentionParameters | None = None
    ) -> None:
        self.parameters = parameters or SpikeAttentionParameters()
        self.accumulator = SpikeAttentionAccumulator(
            setup.n_layers,
            setup.n_heads,
            layout_mutations(),
            defining_mutations(),
            setup.classes,
        )

    def update(self, captured: CapturedLayer, context: BatchContext) -> None:
        layout = context.batch.spike
        if layout is None:
            raise ValueError(
                "spike attention needs batches with a spike layout: open the FASTA or dataset "
                "source with spike_layouts=True"
            )
        self.accumulator.update(
            captured.layer, captured.attention, context.tokens, layout, context.labels
        )

    def mutations(self) -> pd.DataFrame:
        """``mutations.parquet``: the accumulator's mutation table with each mutation's
        amino-acid effect after its name."""
        table = self.accumulator.mutation_table()
        effects = mutation_effects()
        table.insert(4, "aa_effect", [effects.get(name, "") for name in table["mutation"]])
        return table

    def write(self, outputs: MeasurementOutputs) -> None:
        super().write(outputs)
        outputs.add_table(Table.MUTATIONS, self.mutations())
        classes, profile = self.accumulator.codon_profile()
        outputs.add_array(
            Array.SPIKE_ATTENTION_PROFILE,
            profile,
            ["class", "layer", "head", "codon"],
            "mean over the inputs covering each spike codon of the mean attention received "
            "(column sum over queries) by the tokens covering it, float32; NaN where no input "
            "covers it",
            {"class": classes, "codon": f"1..{profile.shape[-1]}"},
        )
