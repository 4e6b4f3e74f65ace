"""Fixed-bin histograms of the accumulators as one long table (``histograms.parquet``)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd

HISTOGRAM_COLUMNS = ["layer", "point", "class", "kind", "bin_left", "bin_right", "count"]


def histogram_frame(
    histograms: Mapping[tuple[int, str, str], npt.NDArray[np.int64]],
    edges: npt.NDArray[np.float64],
    kind: str,
) -> pd.DataFrame:
    """One row per bin of each ``(layer, point, class) -> counts`` histogram: ``bin_left``,
    ``bin_right`` from ``edges`` (B + 1 values). Counts of length B + 2 carry an underflow and
    an overflow bin first and last, written with edges -inf and +inf."""
    lefts, rights = edges[:-1], edges[1:]
    frames = []
    for (layer, point, label), counts in histograms.items():
        left, right = lefts, rights
        if len(counts) == len(edges) + 1:
            left = np.concatenate([[-np.inf], edges])
            right = np.concatenate([edges, [np.inf]])
        elif len(counts) != len(lefts):
            raise ValueError(f"{len(counts)} counts for {len(edges)} bin edges")
        frames.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "point": point,
                    "class": label,
                    "kind": kind,
                    "bin_left": left,
                    "bin_right": right,
                    "count": np.asarray(counts, dtype=np.int64),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=HISTOGRAM_COLUMNS)
    return pd.concat(frames, ignore_index=True)[HISTOGRAM_COLUMNS]
