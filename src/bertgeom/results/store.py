"""The results directory of one analysis: tidy Parquet tables, arrays and a JSON manifest.

Layout (``docs/results.md``)::

    manifest.json          model, data, parameters, versions, timings, classes
    heads.parquet          layer, head, class, metric, value     (head -1: the whole layer)
    layers.parquet         layer, point, class, metric, value    (when global measures ran)
    inputs.parquet         one row per (input, layer, head): dominant gate and the 7 scores
    predictions.parquet    one row per input, for models with a classification head
    arrays/index.json      name -> file, dims, dtype, description and labels of each array
    arrays/<name>.npy      class-mean maps (float16), overlap matrices, singular values

:class:`ResultsWriter` writes into a hidden staging directory that replaces the target only when
everything is written (``bertgeom.atomic.atomic_directory``): an interrupted run leaves no
results directory. :func:`load_results` reads one back.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bertgeom.atomic import atomic_directory
from bertgeom.errors import InputError
from bertgeom.names import GATE_SHARE_PATTERN, Table

HEAD_COLUMNS = ["layer", "head", "class", "metric", "value"]
LAYER_COLUMNS = ["layer", "point", "class", "metric", "value"]
LAYER_ROWS_HEAD = -1
"""``head`` value of rows in ``heads.parquet`` that describe a whole layer."""

FORMAT_VERSION = 1
_ROW_GROUP_ROWS = 16_384


def tidy(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """A long table with the given columns, ``layer``/``head`` int64, ``value`` float64, sorted."""
    frame = frame.reindex(columns=columns).copy()
    for name in ("layer", "head"):
        if name in frame:
            frame[name] = frame[name].astype(np.int64)
    frame["class"] = frame["class"].astype(str)
    frame["value"] = frame["value"].astype(np.float64)
    keys = [c for c in columns if c != "value"]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


class ResultsWriter:
    """Context manager that stages a results directory and publishes it on success.

    ``add_rows`` streams per-input tables (``inputs``, ``predictions``); the ``write_*``
    methods write whole tables, arrays and the manifest.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stack = ExitStack()
        self._staging: Path | None = None
        self._buffers: dict[str, list[pd.DataFrame]] = {}
        self._buffered: dict[str, int] = {}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._array_index: dict[str, dict[str, Any]] = {}

    @property
    def staging(self) -> Path:
        if self._staging is None:
            raise RuntimeError("ResultsWriter used outside its 'with' block")
        return self._staging

    def __enter__(self) -> ResultsWriter:
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"{self.path}: exists and is not a directory")
        self._staging = self._stack.enter_context(atomic_directory(self.path))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if kind is None:
                for name in list(self._buffers):
                    self._flush(name)
                if self._array_index:
                    self._write_json(self.staging / "arrays" / "index.json", self._array_index)
            for writer in self._writers.values():
                writer.close()
        finally:
            self._stack.__exit__(kind, error, traceback)

    def add_rows(self, name: str, frame: pd.DataFrame) -> None:
        """Append rows to ``<name>.parquet`` (same columns every call): rows are buffered and
        written in row groups, so memory stays bounded however many inputs stream through."""
        self._buffers.setdefault(name, []).append(frame)
        self._buffered[name] = self._buffered.get(name, 0) + len(frame)
        if self._buffered[name] >= _ROW_GROUP_ROWS:
            self._flush(name)

    def _flush(self, name: str) -> None:
        frames = self._buffers.pop(name, [])
        self._buffered[name] = 0
        if not frames:
            return
        table = pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)
        writer = self._writers.get(name)
        if writer is None:
            writer = pq.ParquetWriter(self.staging / f"{name}.parquet", table.schema)
            self._writers[name] = writer
        writer.write_table(table.cast(writer.schema))

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        """Write ``<name>.parquet`` (any table, written as given)."""
        frame.to_parquet(self.staging / f"{name}.parquet", index=False)

    def write_array(
        self,
        name: str,
        array: npt.NDArray[Any],
        dims: list[str],
        description: str,
        labels: dict[str, Any] | None = None,
    ) -> None:
        """Write ``arrays/<name>.npy`` and describe it in ``arrays/index.json``: ``dims`` names
        the axes, ``labels`` gives the coordinates of named axes (e.g. the class names)."""
        if array.ndim != len(dims):
            raise ValueError(f"{name}: {array.ndim} axes but dims {dims}")
        folder = self.staging / "arrays"
        folder.mkdir(exist_ok=True)
        np.save(folder / f"{name}.npy", array, allow_pickle=False)
        self._array_index[name] = {
            "file": f"{name}.npy",
            "dims": dims,
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "description": description,
            "labels": labels or {},
        }

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self._write_json(
            self.staging / "manifest.json", {"format_version": FORMAT_VERSION, **manifest}
        )

    @staticmethod
    def _write_json(path: Path, content: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2, default=_json_default) + "\n")


def _json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


@dataclass
class Results:
    """A results directory read back: tables as DataFrames, arrays memory-mapped."""

    path: Path
    manifest: dict[str, Any]
    heads: pd.DataFrame
    layers: pd.DataFrame | None
    predictions: pd.DataFrame | None
    array_index: dict[str, dict[str, Any]] = field(default_factory=dict)
    arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    pca: pd.DataFrame | None = None
    """``pca.parquet``: layer, class, pc1, pc2 of the ``[CLS]`` vectors (global measures)."""
    histograms: pd.DataFrame | None = None
    """``histograms.parquet``: layer, point, class, kind, bin_left, bin_right, count."""
    mutations: pd.DataFrame | None = None
    """``mutations.parquet``: attention on variant-defining mutations (classifiers on spikes)."""
    ablation: pd.DataFrame | None = None
    """``ablation.parquet``: layer, head, mode, class, metric, value of the head ablations
    (baseline: layer -1, head -1, mode ``none``)."""

    @property
    def control_path(self) -> Path | None:
        """The control results directory (the same architecture at its untrained initial
        weights, on the same inputs): the manifest's ``control`` entry, relative to this
        directory, else ``control/``; None when it holds no manifest.json."""
        entry = self.manifest.get("control")
        folder = self.path / (entry if isinstance(entry, str) else "control")
        return folder if (folder / "manifest.json").is_file() else None

    def inputs(self, columns: list[str] | None = None, **filters: object) -> pd.DataFrame:
        """Rows of ``inputs.parquet`` (read on demand: it can be large), optionally only some
        columns and rows where ``column == value`` for each filter, e.g. ``layer=0``."""
        path = self.path / "inputs.parquet"
        if not path.is_file():
            return pd.DataFrame()
        conditions = [(name, "=", value) for name, value in filters.items()] or None
        return pq.read_table(path, columns=columns, filters=conditions).to_pandas()

    def class_mean_map(self, label: str, layer: int, head: int) -> npt.NDArray[np.float16]:
        """The ``(query, key)`` class-mean attention map of one class and head."""
        labels = self.array_index["class_mean_maps"]["labels"]
        pairs = [tuple(pair) for pair in labels["pair"]]
        if (layer, head) not in pairs:
            raise KeyError(f"no class-mean map stored for layer {layer}, head {head}")
        maps = self.arrays["class_mean_maps"]
        return np.asarray(maps[labels["class"].index(label), pairs.index((layer, head))])

    def metric(self, metric: str, label: str = "all") -> pd.DataFrame:
        """A ``layer x head`` table of one metric of ``heads.parquet`` for one class."""
        rows = self.heads[(self.heads["metric"] == metric) & (self.heads["class"] == label)]
        return rows.pivot(index="layer", columns="head", values="value")

    def gate_map(self, label: str = "all") -> pd.DataFrame:
        """``layer x head`` table of each head's most frequent dominant gate for one class
        (the gate, or ``mixed``, with the largest ``gate.<g>.share``)."""
        return _dominant_map(self.heads, label)


def _dominant_map(heads: pd.DataFrame, label: str) -> pd.DataFrame:
    rows = heads[(heads["class"] == label) & heads["metric"].str.match(GATE_SHARE_PATTERN)]
    rows = rows.dropna(subset=["value"])
    rows = rows.assign(gate=rows["metric"].str.split(".").str[1])
    top = rows.loc[rows.groupby(["layer", "head"])["value"].idxmax()]
    return top.pivot(index="layer", columns="head", values="gate")


def load_results(path: Path) -> Results:
    """Read a results directory written by ``bertgeom analyze``."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{path}: not a results directory (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    index_path = path / "arrays" / "index.json"
    index: dict[str, dict[str, Any]] = (
        json.loads(index_path.read_text()) if index_path.is_file() else {}
    )
    arrays = {
        name: np.load(path / "arrays" / entry["file"], mmap_mode="r", allow_pickle=False)
        for name, entry in index.items()
    }

    def optional(name: str) -> pd.DataFrame | None:
        table = path / f"{name}.parquet"
        return pd.read_parquet(table) if table.is_file() else None

    return Results(
        path=path,
        manifest=manifest,
        heads=pd.read_parquet(path / f"{Table.HEADS}.parquet"),
        layers=optional(Table.LAYERS),
        predictions=optional(Table.PREDICTIONS),
        pca=optional(Table.PCA),
        histograms=optional(Table.HISTOGRAMS),
        mutations=optional(Table.MUTATIONS),
        ablation=optional(Table.ABLATION),
        array_index=index,
        arrays=arrays,
    )
