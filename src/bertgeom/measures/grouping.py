"""Which tokens and inputs a statistic uses: how far into each input the valid tokens (a
``tokens.TokenMask``) reach, and the class groups of its inputs.

The streamed kernels work on blocks of whole inputs cut to their valid extent
(``valid_extents``), so that the padding beyond it is never read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from bertgeom.measures.base import ALL_CLASSES

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]
Key = tuple[object, ...]

BLOCK_BYTES = 2 << 20
"""The most bytes a streamed kernel copies at once (a masked block of attention matrices): about
the L2 cache of a core, so that the passes after the copy read cache, not memory."""


def class_groups(labels: Sequence[str] | None, batch: int) -> Iterator[tuple[str, IndexArray]]:
    """Yield ``(class, indices)`` for ``"all"`` and for each class present in ``labels``."""
    yield ALL_CLASSES, np.arange(batch)
    if labels is None:
        return
    if len(labels) != batch:
        raise ValueError(f"{len(labels)} labels for a batch of {batch} inputs")
    label_array = np.asarray([str(label) for label in labels])
    for label in sorted(set(label_array.tolist())):
        if label == ALL_CLASSES:
            raise ValueError(f"{ALL_CLASSES!r} is reserved for the aggregate over all classes")
        yield label, np.flatnonzero(label_array == label)


def membership(
    groups: Sequence[tuple[str, IndexArray]], batch: int, device: torch.device | None = None
) -> Tensor:
    """``(group, batch)`` float64 0/1 matrix of the inputs in each group of ``class_groups``."""
    matrix = torch.zeros(len(groups), batch, dtype=torch.float64)
    for row, (_, indices) in enumerate(groups):
        matrix[row, torch.from_numpy(np.asarray(indices, dtype=np.int64))] = 1.0
    return matrix.to(device) if device is not None else matrix


def valid_extents(valid: Tensor) -> list[int]:
    """Per input of ``valid (batch, seq)``: one past its last valid position (0 when none)."""
    seq = valid.shape[1]
    positions = torch.arange(1, seq + 1, device=valid.device)
    return (valid.to(torch.long) * positions).amax(dim=1).tolist() if seq else [0] * len(valid)
