"""An analysis again, from its manifest alone: ``bertgeom analyze --like RESULTS --out NEW``.

A manifest records the model (its path, or its hub id and the commit it resolved to), the
inputs (``input``: kind, path, labels, split), the options (``parameters``) and every
measurement's parameters (``measurements``). :func:`plan_from_results` reads them back into an
:class:`AnalysisPlan`, whose :meth:`~AnalysisPlan.run` reproduces the tables of the analysis
(the same model and inputs give the same numbers). How the passes ran is not repeated: the
executor options (``device``, ``overlap``, ``scheduler``, ``dask_workers``) are this machine's
defaults unless changed (:meth:`AnalysisPlan.with_changes`); results do not depend on them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from bertgeom.analysis.measurements import parameters_from_manifest
from bertgeom.analysis.options import AnalysisOptions, AnalysisSummary, InputSpec
from bertgeom.analysis.run import analyze
from bertgeom.capture.measurements import ClassMeanMapMeasurement
from bertgeom.errors import InputError

EXECUTION_OPTIONS = ("device", "overlap", "scheduler", "dask_workers")
"""Options that say where and how the passes ran, not what was measured: not repeated."""


@dataclass(frozen=True)
class AnalysisPlan:
    """What an analysis was: the model (a directory, or ``ORG/NAME@COMMIT``), the inputs,
    the options and each measurement's parameters by name."""

    model: str
    spec: InputSpec
    options: AnalysisOptions
    measurements: dict[str, Any]

    def run(self, out: Path, *, overwrite: bool = False, **callbacks: Any) -> AnalysisSummary:
        """Run the plan into ``out`` (``callbacks``: those of ``analysis.analyze``)."""
        return analyze(
            self.model,
            self.spec,
            out,
            self.options,
            overwrite=overwrite,
            measurements=self.measurements,
            **callbacks,
        )

    def with_changes(
        self,
        model: str | None = None,
        spec: InputSpec | None = None,
        **options: Any,
    ) -> AnalysisPlan:
        """The plan with another model, other inputs or other options. The class-mean maps'
        heads and length follow from the model, the inputs and the options, so they are worked
        out again when any of those they depend on changes; every other measurement keeps its
        recorded parameters (measurements the new options do not run are left out, new ones get
        their defaults)."""
        measurements = dict(self.measurements)
        if model is not None or spec is not None or {"map_heads", "map_length"} & set(options):
            measurements.pop(ClassMeanMapMeasurement.name, None)
        return AnalysisPlan(
            model if model is not None else self.model,
            spec if spec is not None else self.spec,
            replace(self.options, **options),
            measurements,
        )


def plan_from_results(results: Path) -> AnalysisPlan:
    """The plan recorded in ``results/manifest.json`` (a results directory of ``analyze``)."""
    manifest = _read_manifest(Path(results))
    recorded = ("model", "input", "parameters", "measurements")
    missing = [key for key in recorded if key not in manifest]
    if missing:
        raise InputError(
            f"{results}: its manifest has no {', '.join(missing)} (written by an earlier "
            "bertgeom): it cannot be repeated with --like; run analyze with explicit options"
        )
    model = manifest["model"]
    entry = manifest["input"]
    spec = InputSpec(
        entry["kind"],
        Path(entry["path"]),
        labels=Path(entry["labels"]) if entry.get("labels") else None,
        split=entry.get("split"),
    )
    try:
        measurements = parameters_from_manifest(manifest["measurements"])
        options = _options(manifest["parameters"])
    except (TypeError, ValueError) as error:
        raise InputError(f"{results}: its manifest's parameters cannot be read: {error}") from None
    return AnalysisPlan(_model_name(model), spec, options, measurements)


def _read_manifest(results: Path) -> dict[str, Any]:
    path = results / "manifest.json"
    if not results.is_dir():
        raise InputError(f"--like {results}: no such results directory")
    if not path.is_file():
        raise InputError(f"--like {results}: not a results directory (no manifest.json)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a readable manifest ({error})") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{path}: not a bertgeom manifest")
    return manifest


def _model_name(model: dict[str, Any]) -> str:
    """The hub id at the recorded commit when the model came from the hub cache, else its
    path."""
    if model.get("repo_id"):
        revision = model.get("commit") or model.get("revision")
        return f"{model['repo_id']}@{revision}" if revision else str(model["repo_id"])
    return str(model["path"])


def _options(values: dict[str, Any]) -> AnalysisOptions:
    """``AnalysisOptions`` from the manifest's ``parameters`` (lists back to tuples, the
    heads in their text form)."""
    known = {field.name for field in fields(AnalysisOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown options {unknown}")
    given = dict(values)
    if isinstance(given.get("map_heads"), list):
        given["map_heads"] = ",".join(given["map_heads"])
    if isinstance(given.get("ablation"), list):
        given["ablation"] = tuple(given["ablation"])
    for name in EXECUTION_OPTIONS:
        given.pop(name, None)
    return AnalysisOptions(**given)
