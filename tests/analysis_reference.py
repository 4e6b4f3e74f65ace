"""The stored reference of ``analyze``: two small analyses whose every output is kept under
``tests/data/reference/`` and compared by ``test_analysis_reference.py``.

Why a stored reference: the analysis engine is rebuilt piece by piece (the ``bertgeom.analysis``
package, its executors); every table and array must stay what the code gave when the reference
was made, not merely plausible. The two cases:

- ``text``: a tiny random BERT (``capture.tests.tiny_models``) on 12 labelled sentences: gates,
  class-mean maps, subspaces, the global measures;
- ``spike``: a tiny random spike classifier on 12 labelled synthetic spikes: the same, plus the
  spike measures, predictions, head ablation (zero, mean, keys) and the untrained control
  (``control/``, stored as a case of its own, ``spike/control``).

Regenerate it (only when a change of results is intended, and say why in the commit)::

    .venv/bin/python tests/analysis_reference.py

What is stored, per results directory: every Parquet table as written, the arrays in one
compressed ``arrays.npz`` with their index, and the manifest without what changes from run to
run or machine to machine (timings, versions, paths). Torch runs on one thread, so that sums
are added in one order.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertgeom.analysis import AnalysisOptions, InputSpec, analyze
from bertgeom.capture.tests.tiny_models import save_tiny_classifier, save_tiny_model, sentences
from bertgeom.genomics.fasta import write_fasta
from bertgeom.genomics.synthetic import GeneratorSettings, synthesize_table

REFERENCE = Path(__file__).parent / "data" / "reference"
CASES = ("text", "spike")
CLASSES = ("Alpha", "Delta")
REFERENCE_SPIKES = GeneratorSettings(
    partial_constellation_probability=0.0, background_insertion_probability=0.0
)
"""The generator as the reference was drawn with (before partial constellations and
background insertions), so that the inputs stay the stored ones."""
RELATIVE_TOLERANCE = 1e-6
ABSOLUTE_TOLERANCE = 1e-9
"""Floats agree to 1e-6 relative; values that are zero up to rounding, to 1e-9."""

UNSTABLE_MANIFEST = {
    "timings": None,
    "versions": None,
    "model": ("path", "weights_sha256"),
    "data": ("path", "labels"),
    "input": ("path", "labels"),
    "ablation": ("seconds",),
}
"""Manifest entries left out of the reference: whole sections (None) or some of their keys (the
weights' hashes change with the way ``transformers`` serialises, not with the analysis)."""


@contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_case(case: str, root: Path) -> Path:
    """Build the model and inputs of ``case`` under ``root`` and analyse them into
    ``root/results``."""
    root.mkdir(parents=True, exist_ok=True)
    if case == "text":
        model = save_tiny_model("bert", root / "model")
        lines = sentences(12, seed=3, longest=20)
        (root / "inputs.txt").write_text("\n".join(lines) + "\n")
        labels = ["short" if len(line.split()) < 10 else "long" for line in lines]
        pd.DataFrame({"input_id": range(1, 13), "label": labels}).to_csv(
            root / "labels.tsv", sep="\t", index=False
        )
        spec = InputSpec("text", root / "inputs.txt", labels=root / "labels.tsv")
        options = AnalysisOptions(batch_size=5)
    elif case == "spike":
        model = save_tiny_classifier(root / "model", CLASSES)
        table = synthesize_table(6, seed=5, classes=CLASSES, settings=REFERENCE_SPIKES)
        ids = [f"s{index}" for index in range(len(table))]
        write_fasta(list(zip(ids, map(str, table["sequence"]), strict=True)), root / "spikes.fa")
        pd.DataFrame({"record_id": ids, "label": list(table["label"])}).to_csv(
            root / "labels.tsv", sep="\t", index=False
        )
        spec = InputSpec("fasta", root / "spikes.fa", labels=root / "labels.tsv")
        # Maps of two heads over 48 positions keep the stored arrays small.
        options = AnalysisOptions(
            batch_size=5,
            map_heads="0:1,1:2",
            map_length=48,
            ablation=("zero", "mean", "keys"),
            control="random-init",
            control_seed=3,
        )
    else:
        raise ValueError(case)
    out = root / "results"
    with one_thread():
        analyze(model, spec, out, options)
    return out


def results_directories(out: Path, case: str) -> dict[str, Path]:
    """The results directories of a case by reference name (the control is one of its own)."""
    directories = {case: out}
    if (out / "control").is_dir():
        directories[f"{case}/control"] = out / "control"
    return directories


def stable_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` without its timings, versions and paths (``UNSTABLE_MANIFEST``)."""
    kept = dict(manifest)
    for section, keys in UNSTABLE_MANIFEST.items():
        if keys is None:
            kept.pop(section, None)
        elif isinstance(kept.get(section), dict):
            kept[section] = {k: v for k, v in kept[section].items() if k not in keys}
    return kept


def store(results: Path, target: Path) -> None:
    """Keep ``results`` (one results directory, its control excluded) compactly in ``target``."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for table in sorted(results.glob("*.parquet")):
        pd.read_parquet(table).to_parquet(
            target / table.name, index=False, compression="zstd", compression_level=19
        )
    index_path = results / "arrays" / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    arrays = {name: np.load(results / "arrays" / entry["file"]) for name, entry in index.items()}
    np.savez_compressed(target / "arrays.npz", **arrays)
    manifest = stable_manifest(json.loads((results / "manifest.json").read_text()))
    reference = {"manifest": manifest, "array_index": index}
    (target / "reference.json").write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")


def compare(results: Path, reference: Path) -> None:
    """Assert that ``results`` equals the stored ``reference``: the same tables (rows, keys,
    integers and strings exactly, floats to tolerance), the same arrays, the same manifest but
    for ``UNSTABLE_MANIFEST``."""
    stored = json.loads((reference / "reference.json").read_text())
    manifest = stable_manifest(json.loads((results / "manifest.json").read_text()))
    assert json.loads(json.dumps(manifest)) == stored["manifest"]
    tables = sorted(path.name for path in results.glob("*.parquet"))
    assert tables == sorted(path.name for path in reference.glob("*.parquet"))
    for name in tables:
        assert_same_table(pd.read_parquet(results / name), pd.read_parquet(reference / name), name)
    index_path = results / "arrays" / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    assert index == stored["array_index"]
    with np.load(reference / "arrays.npz") as arrays:
        assert sorted(arrays.files) == sorted(index)
        for name, entry in index.items():
            array = np.load(results / "arrays" / entry["file"])
            expected = arrays[name]
            assert array.dtype == expected.dtype and array.shape == expected.shape, name
            np.testing.assert_allclose(
                array.astype(np.float64),
                expected.astype(np.float64),
                rtol=_array_tolerance(array),
                atol=ABSOLUTE_TOLERANCE,
                err_msg=name,
            )


def _array_tolerance(array: np.ndarray) -> float:
    # A float16 array (the class-mean maps) is rounded to 11 bits: one rounding step apart
    # is the same number computed in another order.
    return 2e-3 if array.dtype == np.float16 else RELATIVE_TOLERANCE


def in_key_order(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` sorted by its columns other than floats, rows of one key in their written
    order. Why: the order of the classes in ``histograms.parquet`` follows a set of names,
    so it changes with Python's string hashing from one process to the next."""
    keys = [column for column in table.columns if table[column].dtype.kind != "f"]
    return table.sort_values(keys, kind="stable").reset_index(drop=True) if keys else table


def assert_same_table(actual: pd.DataFrame, expected: pd.DataFrame, name: str) -> None:
    """The same columns, types and rows (in key order): floats to tolerance, the rest exactly."""
    actual, expected = in_key_order(actual), in_key_order(expected)
    assert list(actual.columns) == list(expected.columns), name
    assert list(actual.dtypes) == list(expected.dtypes), name
    assert len(actual) == len(expected), name
    for column in actual.columns:
        left, right = actual[column].to_numpy(), expected[column].to_numpy()
        if actual[column].dtype.kind == "f":
            np.testing.assert_allclose(
                left,
                right,
                rtol=RELATIVE_TOLERANCE,
                atol=ABSOLUTE_TOLERANCE,
                err_msg=f"{name}: {column}",
            )
        else:
            assert actual[column].equals(expected[column]), f"{name}: {column}"


def main() -> None:
    """Regenerate ``tests/data/reference`` from the code as it is now."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        for case in CASES:
            out = run_case(case, Path(scratch) / case)
            for name, directory in results_directories(out, case).items():
                store(directory, REFERENCE / name)
    size = sum(path.stat().st_size for path in REFERENCE.rglob("*") if path.is_file())
    print(f"{REFERENCE}: {size / 1024:.0f} KiB", file=sys.stderr)


if __name__ == "__main__":
    main()
