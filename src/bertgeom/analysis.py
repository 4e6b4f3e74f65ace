"""``analyze``: a model directory and inputs in, a results directory out.

Loads the model with eager attention (``capture.loading``), streams the inputs in batches
(``capture.inputs``), runs one forward pass per batch feeding every layer to the measurements
(``capture.engine``, ``capture.measurements``), measures the weights once, and writes the
results directory atomically (``results.store``). ``docs/analysis.md`` shows how to run it.
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bertgeom.capture.ablation import (
    MATCHED_OFFSET,
    AblationRun,
    check_ablation,
    run_ablation,
)
from bertgeom.capture.engine import Measurement, run_measurements
from bertgeom.capture.inputs import (
    DatasetSource,
    FastaSource,
    InputBatch,
    InputSource,
    TextSource,
    read_input_labels,
)
from bertgeom.capture.loading import LoadedModel, load_model
from bertgeom.capture.measurements import (
    ClassMeanMapMeasurement,
    ConeMeasurement,
    GateMeasurement,
    HeadConeMeasurement,
    SpikeAttentionMeasurement,
    SubspaceDataMeasurement,
)
from bertgeom.capture.stream_measurements import (
    ClsSeparabilityMeasurement,
    DistributionMeasurement,
    HeadDistributionMeasurement,
)
from bertgeom.errors import InputError
from bertgeom.measures.gates import (
    DEFAULT_CLUSTER_ROWS,
    DEFAULT_THRESHOLDS,
    DEFAULT_WINDOW,
    HIGH_ATTENTION_THRESHOLD,
)
from bertgeom.measures.subspace_weights import WeightSubspaceResult, weight_subspace_measures
from bertgeom.model.resolve import ModelName, resolve_model
from bertgeom.outputs import RESULTS, check_output_directory
from bertgeom.results.store import HEAD_COLUMNS, LAYER_COLUMNS, ResultsWriter, tidy

CONTROL_RANDOM_INIT = "random-init"
CONTROL_DIRECTORY = "control"
"""Where the untrained control's results go, inside the trained analysis's directory."""

MAP_HEADS_BUDGET = 48
"""Class-mean maps are kept for every head when layers x heads <= this; otherwise, unless
heads are chosen, for the first ``MAP_HEADS_BUDGET // layers`` heads of each layer."""

InputKind = Literal["text", "fasta", "data"]
ProgressCallback = Callable[[int], None]
"""Called with the number of inputs of each finished batch."""


@dataclass(frozen=True)
class InputSpec:
    """Where the inputs come from: ``kind`` text, fasta or data (a dataset directory),
    ``labels`` a TSV for text and FASTA, ``split`` one split of a dataset."""

    kind: InputKind
    path: Path
    labels: Path | None = None
    split: str | None = None


@dataclass(frozen=True)
class AnalysisOptions:
    """Parameters of an analysis (all recorded in the manifest).

    ``map_heads``: (layer, head) pairs whose class-mean maps are kept, or their text form for
    ``parse_heads`` (None: see ``default_map_heads``); ``map_length``: positions kept in the
    maps (default: the longest input when the source knows it up front, else the maximum
    input length); ``global_measures``: also the cone index, the distribution of the stream
    and the ``[CLS]`` separability (``layers.parquet``, the head cone metrics, histograms and
    PCA); ``input_records``: write
    ``inputs.parquet``; ``overlap``: measure on a second thread while the forward pass goes on
    (same results, see ``capture.engine``); ``scheduler``: the address of a running Dask
    scheduler, or ``dask_workers``: a local Dask cluster of that many worker processes, to
    shard the inputs over (``bertgeom.scale``, ``docs/dask.md``; same results to float
    tolerance). ``ablation``: kinds of head ablation (``capture.ablation.ABLATION_KINDS``) whose
    classifier metrics go to ``ablation.parquet``; ``control``: ``"random-init"`` also analyses
    the same architecture at its initial weights (seed ``control_seed``) into ``control/``;
    ``initial_weights_seed``: analyse those initial weights instead of the trained ones.
    """

    batch_size: int = 32
    max_length: int | None = None
    max_inputs: int | None = None
    include_padding: bool = False
    map_heads: str | tuple[tuple[int, int], ...] | None = None
    map_length: int | None = None
    global_measures: bool = True
    input_records: bool = True
    device: str = "cpu"
    overlap: bool = False
    window: int = DEFAULT_WINDOW
    cluster_rows: int | None = DEFAULT_CLUSTER_ROWS
    scheduler: str | None = None
    dask_workers: int | None = None
    ablation: tuple[str, ...] = ()
    control: str | None = None
    control_seed: int = 0
    initial_weights_seed: int | None = None


@dataclass
class AnalysisSummary:
    """What the command prints: counts, timings and the results path."""

    out: Path
    inputs: int
    seconds: float
    skipped: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    labels_unmatched: int = 0


def default_map_heads(n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """Every head when ``n_layers * n_heads <= 48``, else the first ``max(1, 48 // n_layers)``
    heads of every layer."""
    per_layer = (
        n_heads if n_layers * n_heads <= MAP_HEADS_BUDGET else max(1, MAP_HEADS_BUDGET // n_layers)
    )
    return [(layer, head) for layer in range(n_layers) for head in range(min(per_layer, n_heads))]


def parse_heads(text: str, n_layers: int, n_heads: int) -> tuple[tuple[int, int], ...]:
    """``"all"`` or comma-separated ``layer:head`` pairs (0-based; ``layer:*`` for every head
    of a layer), e.g. ``"0:3,2:*"``."""
    if text.strip() == "all":
        return tuple((lay, h) for lay in range(n_layers) for h in range(n_heads))
    pairs: list[tuple[int, int]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        layer_text, _, head_text = part.partition(":")
        try:
            layer = int(layer_text)
            heads = range(n_heads) if head_text == "*" else [int(head_text)]
        except ValueError:
            raise InputError(f"--heads: {part!r} is not layer:head (e.g. 0:3 or 2:*)") from None
        for head in heads:
            if not (0 <= layer < n_layers and 0 <= head < n_heads):
                raise InputError(
                    f"--heads: {layer}:{head} is outside this {n_layers}-layer, "
                    f"{n_heads}-head model (0-based)"
                )
            pairs.append((layer, head))
    if not pairs:
        raise InputError("--heads: give 'all' or layer:head pairs such as 0:3,2:*")
    return tuple(dict.fromkeys(pairs))


def open_source(
    loaded: LoadedModel,
    spec: InputSpec,
    options: AnalysisOptions,
    positions: range | None = None,
) -> InputSource:
    """The input source of ``spec`` for ``loaded`` (``positions``: one shard of it)."""
    common: dict[str, Any] = {
        "max_length": options.max_length,
        "max_inputs": options.max_inputs,
        "positions": positions,
    }
    if loaded.kmers is not None and options.global_measures and spec.kind != "text":
        common["spike_layouts"] = True  # DESIGN 3.5: place the tokens on the spike
    if spec.kind == "data":
        if spec.labels is not None:
            raise InputError("--labels is for --text and --fasta; a dataset has its own labels")
        return DatasetSource(loaded, spec.path, spec.split, **common)
    if spec.split is not None:
        raise InputError("--split is for --data")
    labels = read_input_labels(spec.labels) if spec.labels is not None else None
    source_class = TextSource if spec.kind == "text" else FastaSource
    return source_class(loaded, spec.path, labels=labels, **common)


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("bertgeom", "torch", "transformers", "numpy", "pandas", "pyarrow"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


class RowWriter(Protocol):
    """Where per-input rows go: a ``ResultsWriter``, or a shard's collector on a Dask worker."""

    def add_rows(self, name: str, frame: pd.DataFrame) -> None: ...


class Predictions:
    """Per-input predictions of a classification head, streamed to ``predictions.parquet``."""

    def __init__(self, writer: RowWriter, class_names: Sequence[str]) -> None:
        self.writer = writer
        self.class_names = np.asarray(class_names, dtype=object)
        self.correct = 0
        self.labelled = 0

    def __call__(self, batch: InputBatch, logits: Tensor | None) -> None:
        if logits is None:
            return
        probabilities = torch.softmax(logits.detach().float().cpu(), dim=-1).numpy()
        predicted = self.class_names[probabilities.argmax(axis=1)]
        labels = list(batch.labels) if batch.labels is not None else [None] * len(batch)
        frame = pd.DataFrame(
            {
                "input_index": batch.indices,
                "input_id": list(batch.input_ids),
                "class": labels,
                "predicted_class": predicted,
                "probability": probabilities.max(axis=1),
            }
        )
        known = [label in set(self.class_names) for label in labels]
        self.labelled += sum(known)
        self.correct += int(
            sum(k and p == y for k, p, y in zip(known, predicted, labels, strict=True))
        )
        self.writer.add_rows("predictions", frame)

    def add_counts(self, correct: int, labelled: int) -> None:
        """Count a shard's inputs too (their rows were written apart)."""
        self.correct += correct
        self.labelled += labelled

    def summary(self) -> dict[str, Any]:
        return {
            "labelled_inputs": self.labelled,
            "accuracy": self.correct / self.labelled if self.labelled else None,
        }


def analyze(
    model_directory: ModelName,
    spec: InputSpec,
    out: Path,
    options: AnalysisOptions | None = None,
    progress: ProgressCallback | None = None,
    on_start: Callable[[LoadedModel, int | None], None] | None = None,
    on_stage: Callable[[str, int | None], None] | None = None,
    *,
    overwrite: bool = False,
) -> AnalysisSummary:
    """Analyse ``spec``'s inputs with the model in ``model_directory`` (a directory, or a hub
    id in the local cache: ``bertgeom.model.resolve``) into ``out``.

    ``on_start(loaded, expected_inputs)`` is called once the model and inputs are open (for a
    progress bar); ``progress(n)`` after each batch of n inputs, in every stage;
    ``on_stage(title, expected_inputs)`` before the ablation and the control passes.
    ``out`` must be new, empty or an earlier results directory (``bertgeom.outputs``; any
    other directory only with ``overwrite``), and never the model or an input.
    """
    options = options or AnalysisOptions()
    source = resolve_model(model_directory)
    check_output_directory(
        out,
        RESULTS,
        inputs=[source.directory, spec.path, spec.labels],
        overwrite=overwrite,
    )
    if options.scheduler is None and options.dask_workers is None:
        return _analyze(source, spec, out, options, progress, on_start, on_stage)
    from bertgeom.scale.cluster import ClusterSpec, shared_cluster

    with shared_cluster(ClusterSpec(options.scheduler, options.dask_workers)):
        return _analyze(source, spec, out, options, progress, on_start, on_stage)


def _analyze(
    model_directory: ModelName,
    spec: InputSpec,
    out: Path,
    options: AnalysisOptions,
    progress: ProgressCallback | None,
    on_start: Callable[[LoadedModel, int | None], None] | None,
    on_stage: Callable[[str, int | None], None] | None,
) -> AnalysisSummary:
    started = time.perf_counter()
    if options.control not in (None, CONTROL_RANDOM_INIT):
        raise InputError(f"--control: {options.control!r} is unknown; the control is 'random-init'")
    loaded = load_model(model_directory, initial_weights_seed=options.initial_weights_seed)
    if options.ablation:
        check_ablation(loaded, options.ablation)
    device = torch.device(options.device)
    torch.nn.Module.to(loaded.model, device)
    loaded_s = time.perf_counter() - started
    source = open_source(loaded, spec, options)
    if isinstance(options.map_heads, str):
        map_heads = parse_heads(options.map_heads, loaded.n_layers, loaded.n_heads)
    else:
        map_heads = options.map_heads or tuple(default_map_heads(loaded.n_layers, loaded.n_heads))
    map_length = min(
        options.map_length or source.longest_hint() or source.max_length, source.max_length
    )
    if on_start is not None:
        on_start(loaded, source.expected_inputs())
    with ResultsWriter(out) as writer:
        measurements = build_measurements(loaded, source, options, map_heads, map_length, writer)
        predictions = (
            Predictions(writer, loaded.class_names) if loaded.class_names is not None else None
        )

        def after_batch(batch: InputBatch, logits: Tensor | None) -> None:
            if predictions is not None:
                predictions(batch, logits)
            if progress is not None:
                progress(len(batch))

        if options.scheduler is not None or options.dask_workers is not None:
            from bertgeom.scale.analysis import ShardedAnalysis

            sharded = ShardedAnalysis(loaded.directory, spec, options, map_heads, map_length)
            timings = sharded.run(source, measurements, predictions, writer, progress)
        else:
            timings = run_measurements(
                loaded,
                source.batches(options.batch_size),
                list(measurements.values()),
                include_padding=options.include_padding,
                device=device,
                on_batch=after_batch,
                overlap=options.overlap,
            )
        expected = source.expected_inputs()
        ablation = None
        if options.ablation:
            passes = 2 if "mean" in options.ablation else 1
            if on_stage is not None:
                on_stage(
                    f"head ablation ({', '.join(options.ablation)})",
                    expected * passes if expected is not None else None,
                )
            ablation = _ablate(loaded, loaded.directory, spec, source, options, progress)
        if ablation is not None:
            writer.write_table("ablation", ablation.accumulator.result())
        if options.control is not None:
            control = replace(
                options, control=None, ablation=(), initial_weights_seed=options.control_seed
            )
            if on_stage is not None:
                on_stage("untrained control", expected)
            analyze(model_directory, spec, writer.staging / CONTROL_DIRECTORY, control, progress)
        weights_started = time.perf_counter()
        weights = weight_subspace_measures(loaded.attention_weights())
        weights_s = time.perf_counter() - weights_started
        _write_tables(writer, measurements, weights.table)
        _write_spike(writer, measurements)
        _write_global(writer, measurements)
        _write_arrays(writer, measurements, weights, source.stats.longest)
        writer.write_manifest(
            {
                "model": loaded.summary(),
                "data": {
                    **source.stats.to_json(),
                    "labels": str(spec.labels) if spec.labels else None,
                },
                "classes": ["all", *sorted(source.stats.classes)],
                "parameters": _parameters(options, map_heads, map_length, measurements),
                "predictions": predictions.summary() if predictions is not None else None,
                "ablation": _ablation_summary(ablation),
                "control": _control_entry(options),
                "versions": _versions(),
                "timings": {
                    "load_s": round(loaded_s, 4),
                    **timings.to_json(),
                    "weights_s": round(weights_s, 4),
                    "total_s": round(time.perf_counter() - started, 4),
                    "inputs_per_s": round(timings.inputs_analysed / timings.total, 3)
                    if timings.total
                    else None,
                },
            }
        )
    return AnalysisSummary(
        out=out,
        inputs=source.stats.analysed,
        seconds=time.perf_counter() - started,
        skipped=dict(source.stats.skipped),
        truncated=source.stats.truncated,
        labels_unmatched=int(source.stats.extra.get("labels_unmatched", 0)),
    )


def _ablate(
    loaded: LoadedModel,
    model_directory: Path,
    spec: InputSpec,
    source: InputSource,
    options: AnalysisOptions,
    progress: ProgressCallback | None,
) -> AblationRun:
    """Head ablation on a fresh pass (or two) over the inputs (``capture.ablation``), sharded
    on Dask like the analysis when it is (``scale.ablation``)."""
    if options.scheduler is not None or options.dask_workers is not None:
        from bertgeom.scale.ablation import ablate_on_dask

        count = source.positions_count()
        return ablate_on_dask(model_directory, spec, options, count, progress)

    def batches() -> Iterator[InputBatch]:
        return open_source(loaded, spec, options).batches(options.batch_size)

    device = torch.device(options.device)
    return run_ablation(loaded, batches, options.ablation, device=device, on_batch=progress)


def _ablation_summary(run: AblationRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "ablations": len(run.accumulator.ablations),
        "labelled_inputs": run.labelled,
        "unlabelled_inputs": run.unlabelled,
        "passes": run.passes,
        "matched_offset_tokens": MATCHED_OFFSET,
        "seconds": round(run.seconds, 3),
    }


def _control_entry(options: AnalysisOptions) -> str | dict[str, Any] | None:
    """The trained analysis names its control's directory; the control says what it is."""
    if options.initial_weights_seed is not None:
        return {"kind": CONTROL_RANDOM_INIT, "seed": options.initial_weights_seed}
    return CONTROL_DIRECTORY if options.control is not None else None


def build_measurements(
    loaded: LoadedModel,
    source: InputSource,
    options: AnalysisOptions,
    map_heads: Sequence[tuple[int, int]],
    map_length: int,
    writer: RowWriter,
) -> dict[str, Measurement]:
    """The measurements of an analysis by name, empty; per-input gate rows go to ``writer``."""
    classes = source.declared_classes
    padding = options.include_padding
    qk = loaded.query_key_weights()
    measurements: dict[str, Measurement] = {
        "gates": GateMeasurement(
            loaded.n_layers,
            loaded.n_heads,
            classes,
            DEFAULT_THRESHOLDS,
            options.window,
            options.cluster_rows,
            padding,
            records=(lambda frame: writer.add_rows("inputs", frame))
            if options.input_records
            else None,
        ),
        "class_mean_maps": ClassMeanMapMeasurement(
            map_length, loaded.n_layers, loaded.n_heads, classes, map_heads, padding
        ),
        "subspace_data": SubspaceDataMeasurement(qk, loaded.n_heads, padding),
    }
    if options.global_measures:
        measurements["head_cone"] = HeadConeMeasurement(padding)
        measurements["cone"] = ConeMeasurement(padding)
        measurements["distribution"] = DistributionMeasurement(
            padding, class_covariance=_class_covariance_fits(loaded, len(classes))
        )
        measurements["head_distribution"] = HeadDistributionMeasurement(padding)
        if classes:
            measurements["cls_separability"] = ClsSeparabilityMeasurement()
    if source.spike_layouts:
        measurements["spike_attention"] = SpikeAttentionMeasurement(
            loaded.n_layers, loaded.n_heads, classes, padding
        )
    return measurements


CLASS_COVARIANCE_BUDGET = 256 * 2**20
"""Bytes allowed for per-class covariance matrices (d^2 float64 per layer, point and class);
above it only the ``all`` covariance is kept (per-class effective rank NaN)."""


def _class_covariance_fits(loaded: LoadedModel, n_classes: int) -> bool:
    # States are kept for the embedding output and each layer's two measured points (layer
    # inputs are copies), for every class and "all".
    keys = (2 * loaded.n_layers + 1) * (n_classes + 1)
    return keys * loaded.hidden_size**2 * 8 <= CLASS_COVARIANCE_BUDGET


def _write_global(writer: ResultsWriter, measurements: dict[str, Measurement]) -> None:
    """``histograms.parquet``, ``pca.parquet`` and ``outlier_dimensions.parquet`` of the
    global measures (when they ran)."""
    cone, distribution = measurements.get("cone"), measurements.get("distribution")
    if isinstance(cone, ConeMeasurement) and isinstance(distribution, DistributionMeasurement):
        histograms = pd.concat([cone.histograms(), distribution.histograms()], ignore_index=True)
        writer.write_table("histograms", histograms)
        writer.write_table("outlier_dimensions", distribution.outlier_dimensions())
    separability = measurements.get("cls_separability")
    if isinstance(separability, ClsSeparabilityMeasurement):
        writer.write_table("pca", separability.pca())


def _write_tables(
    writer: ResultsWriter, measurements: dict[str, Measurement], weight_table: pd.DataFrame
) -> None:
    heads = [m.result() for m in measurements.values() if m.table == "heads"]
    writer.write_table("heads", tidy(pd.concat([*heads, weight_table]), HEAD_COLUMNS))
    layers = [m.result() for m in measurements.values() if m.table == "layers"]
    if layers:
        writer.write_table("layers", tidy(pd.concat(layers), LAYER_COLUMNS))


def _write_spike(writer: ResultsWriter, measurements: dict[str, Measurement]) -> None:
    """``mutations.parquet`` and the ``spike_attention_profile`` array (``docs/spike.md``),
    when the spike measures ran (their heads metrics are in ``heads.parquet``)."""
    spike = measurements.get("spike_attention")
    if not isinstance(spike, SpikeAttentionMeasurement):
        return
    writer.write_table("mutations", spike.mutations())
    classes, profile = spike.profile()
    writer.write_array(
        "spike_attention_profile",
        profile,
        ["class", "layer", "head", "codon"],
        "mean over the inputs covering each spike codon of the mean attention received (column "
        "sum over queries) by the tokens covering it, float32; NaN where no input covers it",
        {"class": classes, "codon": f"1..{profile.shape[-1]}"},
    )


def _write_arrays(
    writer: ResultsWriter,
    measurements: dict[str, Measurement],
    weights: WeightSubspaceResult,
    longest: int,
) -> None:
    maps_measurement = measurements["class_mean_maps"]
    assert isinstance(maps_measurement, ClassMeanMapMeasurement)
    maps = maps_measurement.maps()
    keep = max(1, min(longest, maps.maps.shape[-1]))
    writer.write_array(
        "class_mean_maps",
        np.ascontiguousarray(maps.maps[..., :keep, :keep]),
        ["class", "pair", "query", "key"],
        "class-mean attention maps (NaN where no input reached the position), float16; "
        f"high attention above {HIGH_ATTENTION_THRESHOLD}",
        {
            "class": list(maps.classes),
            "pair": [list(pair) for pair in maps.layers_heads],
            "inputs": maps.inputs.tolist(),
        },
    )
    for kind, matrix in weights.overlaps.items():
        writer.write_array(
            f"overlap_{kind}",
            matrix,
            ["layer", "head", "head"],
            f"{kind} subspace overlaps between the heads of each layer (mean cos^2 of the "
            "principal angles)",
        )
    writer.write_array(
        "singular_values",
        weights.singular_values,
        ["layer", "head", "rank"],
        "singular values of each head's bilinear form M_h = W_q^h^T W_k^h, descending",
    )


def _parameters(
    options: AnalysisOptions,
    map_heads: Sequence[tuple[int, int]],
    map_length: int,
    measurements: dict[str, Measurement],
) -> dict[str, Any]:
    values = asdict(options)
    values["map_heads"] = [f"{layer}:{head}" for layer, head in map_heads]
    values["map_length"] = map_length
    values["thresholds"] = dict(DEFAULT_THRESHOLDS)
    values["high_attention_threshold"] = HIGH_ATTENTION_THRESHOLD
    values["measurements"] = list(measurements)
    return values
