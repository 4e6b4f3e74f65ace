"""What an analysis writes once its passes are done: what each measurement writes
(``Measurement.write``) and the weights' measures, through the results store, and the manifest
that says what was analysed, how (every measurement's parameters), and how long it took."""

from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import asdict
from typing import Any

import pandas as pd

from bertgeom.analysis.executor import AnalysisRun
from bertgeom.analysis.measurements import parameters_to_json
from bertgeom.analysis.options import CONTROL_DIRECTORY, CONTROL_RANDOM_INIT, AnalysisOptions
from bertgeom.capture.ablation import AblationRun
from bertgeom.capture.ablation_plan import MATCHED_OFFSET
from bertgeom.capture.measurement import MeasurementOutputs
from bertgeom.measures.subspace_weights import WeightSubspaceResult
from bertgeom.names import Array, Table
from bertgeom.results.store import HEAD_COLUMNS, LAYER_COLUMNS, ResultsWriter, tidy

TIDY_COLUMNS: dict[str, list[str]] = {Table.HEADS: HEAD_COLUMNS, Table.LAYERS: LAYER_COLUMNS}
"""The long tables, written with these columns in order (``results.store.tidy``)."""


def write_results(writer: ResultsWriter, run: AnalysisRun, weights: WeightSubspaceResult) -> None:
    """Every table and array of ``run``'s measurements and of the ``weights`` measures."""
    outputs = MeasurementOutputs()
    for measurement in run.measurements.values():
        measurement.write(outputs)
    write_weights(outputs, weights)
    for name, parts in outputs.tables.items():
        table = pd.concat(parts, ignore_index=True)
        writer.write_table(name, tidy(table, TIDY_COLUMNS[name]) if name in TIDY_COLUMNS else table)
    for name, array in outputs.arrays.items():
        writer.write_array(name, array.array, array.dims, array.description, array.labels)


def write_weights(outputs: MeasurementOutputs, weights: WeightSubspaceResult) -> None:
    """The weights' rows of ``heads``, the head overlaps and the bilinear forms' singular
    values."""
    outputs.add_table(Table.HEADS, weights.table)
    for kind, matrix in weights.overlaps.items():
        outputs.add_array(
            f"overlap_{kind}",
            matrix,
            ["layer", "head", "head"],
            f"{kind} subspace overlaps between the heads of each layer (mean cos^2 of the "
            "principal angles)",
        )
    outputs.add_array(
        Array.SINGULAR_VALUES,
        weights.singular_values,
        ["layer", "head", "rank"],
        "singular values of each head's bilinear form M_h = W_q^h^T W_k^h, descending",
    )


def manifest(
    run: AnalysisRun, ablation: AblationRun | None, timings: dict[str, Any]
) -> dict[str, Any]:
    """The manifest of ``run``: model, inputs, classes, options, every measurement's
    parameters, predictions, ablation, control, versions and ``timings``: with the model and
    the inputs, enough to run the analysis again (``analysis.like``)."""
    source, spec = run.source, run.spec
    return {
        "model": run.loaded.summary(),
        "data": {
            **source.stats.to_json(),
            "labels": str(spec.labels) if spec.labels else None,
        },
        "input": {
            "kind": spec.kind,
            # Absolute, so that --like finds the inputs from any working directory.
            "path": str(spec.path.resolve()),
            "labels": str(spec.labels.resolve()) if spec.labels else None,
            "split": spec.split,
        },
        "classes": ["all", *sorted(source.stats.classes)],
        "parameters": _options(run.options),
        "measurements": parameters_to_json(run.parameters),
        "predictions": run.predictions.summary() if run.predictions is not None else None,
        "ablation": _ablation_summary(ablation),
        "control": _control_entry(run.options),
        "versions": _versions(),
        "timings": timings,
    }


def _options(options: AnalysisOptions) -> dict[str, Any]:
    values = asdict(options)
    if isinstance(options.map_heads, tuple):
        values["map_heads"] = [f"{layer}:{head}" for layer, head in options.map_heads]
    return values


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
