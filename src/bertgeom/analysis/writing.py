"""What an analysis writes once its passes are done: the tables and arrays of its measurements
and of the weights, and the manifest that says what was analysed, how, and how long it took
(``results.store`` lays them out)."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from bertgeom.analysis.executor import AnalysisRun
from bertgeom.analysis.options import CONTROL_DIRECTORY, CONTROL_RANDOM_INIT, AnalysisOptions
from bertgeom.capture.ablation import MATCHED_OFFSET, AblationRun
from bertgeom.capture.engine import Measurement
from bertgeom.capture.measurements import (
    ClassMeanMapMeasurement,
    ConeMeasurement,
    SpikeAttentionMeasurement,
)
from bertgeom.capture.stream_measurements import (
    ClsSeparabilityMeasurement,
    DistributionMeasurement,
)
from bertgeom.measures.gates import DEFAULT_THRESHOLDS, HIGH_ATTENTION_THRESHOLD
from bertgeom.measures.subspace_weights import WeightSubspaceResult
from bertgeom.results.store import HEAD_COLUMNS, LAYER_COLUMNS, ResultsWriter, tidy


def write_results(writer: ResultsWriter, run: AnalysisRun, weights: WeightSubspaceResult) -> None:
    """Every table and array of ``run``'s measurements and of the ``weights`` measures."""
    measurements = run.measurements
    _write_tables(writer, measurements, weights.table)
    _write_spike(writer, measurements)
    _write_global(writer, measurements)
    _write_arrays(writer, measurements, weights, run.source.stats.longest)


def manifest(
    run: AnalysisRun, ablation: AblationRun | None, timings: dict[str, Any]
) -> dict[str, Any]:
    """The manifest of ``run``: model, data, classes, parameters, predictions, ablation,
    control, versions and ``timings``."""
    source, spec = run.source, run.spec
    return {
        "model": run.loaded.summary(),
        "data": {
            **source.stats.to_json(),
            "labels": str(spec.labels) if spec.labels else None,
        },
        "classes": ["all", *sorted(source.stats.classes)],
        "parameters": _parameters(run.options, run.map_heads, run.map_length, run.measurements),
        "predictions": run.predictions.summary() if run.predictions is not None else None,
        "ablation": _ablation_summary(ablation),
        "control": _control_entry(run.options),
        "versions": _versions(),
        "timings": timings,
    }


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("bertgeom", "torch", "transformers", "numpy", "pandas", "pyarrow"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


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
