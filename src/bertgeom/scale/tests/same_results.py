"""What "the same results as one process" means for an analysis sharded over Dask workers:
every table and array equal to float tolerance, counts and per-input rows exactly. Shared by
the tests of ``analyze`` on Dask and of the analyses over training and over seeds on it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bertgeom.results.store import Results


def assert_same_results(single: Results, sharded: Results) -> None:
    """Every table and array equal to float tolerance; counts and per-input rows exactly."""
    assert sharded.manifest["data"] == single.manifest["data"]
    assert sharded.manifest["predictions"] == single.manifest["predictions"]
    keys = ["layer", "head", "class", "metric"]
    assert_same_values(single.heads, sharded.heads, keys)
    if single.layers is not None:
        assert sharded.layers is not None
        assert_same_values(single.layers, sharded.layers, ["layer", "point", "class", "metric"])
    # per-input rows in input order; the aggregates' rows in any order (keys first seen)
    assert (single.predictions is None) == (sharded.predictions is None)
    if single.predictions is not None and sharded.predictions is not None:
        _assert_frames_close(single.predictions, sharded.predictions)
    _assert_frames_close(single.inputs(), sharded.inputs())
    for name in ("mutations", "pca", "histograms"):
        expected, actual = getattr(single, name), getattr(sharded, name)
        assert (expected is None) == (actual is None), name
        if expected is not None:
            _assert_frames_close(_sorted(expected), _sorted(actual))
    assert set(single.arrays) == set(sharded.arrays)
    for name, array in single.arrays.items():
        np.testing.assert_allclose(
            np.asarray(array, dtype=np.float64),
            np.asarray(sharded.arrays[name], dtype=np.float64),
            rtol=2e-3,
            atol=2e-3,
            err_msg=name,
        )


def assert_same_values(expected: pd.DataFrame, actual: pd.DataFrame, keys: list[str]) -> None:
    """The same rows (matched on ``keys``, in any order) with the same ``value`` to the
    tolerance of a sharded run."""
    merged = expected.merge(actual, on=keys, how="outer", suffixes=("_single", "_dask"))
    assert len(merged) == len(expected) == len(actual)
    # [CLS] separability of a dozen points (Fisher ratio, silhouette) amplifies the float noise
    # of batches padded to other widths (5.6e-4 relative seen on one CPU): the arrays'
    # tolerance, 2e-3, for those; 1e-4 for everything else.
    rtol = np.where(merged["metric"].str.startswith("cls."), 2e-3, 1e-4)
    close = np.isclose(
        merged["value_dask"], merged["value_single"], rtol=rtol, atol=1e-5, equal_nan=True
    )
    assert close.all(), merged[~close].to_string()


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in frame.columns if not pd.api.types.is_float_dtype(frame[c])]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def _assert_frames_close(expected: pd.DataFrame, actual: pd.DataFrame) -> None:
    """Floats to 1e-4: inputs batched with others pad differently, and the cluster score's
    partition search turns that float noise into differences of about 2e-5."""
    assert list(actual.columns) == list(expected.columns)
    assert len(actual) == len(expected)
    for column in expected.columns:
        if pd.api.types.is_float_dtype(expected[column]):
            np.testing.assert_allclose(
                actual[column], expected[column], rtol=1e-4, atol=1e-4, err_msg=column
            )
        else:
            assert list(actual[column]) == list(expected[column]), column
