"""What the input sources stream: :class:`InputBatch`, one tokenised batch, and
:class:`InputStats`, the counts of what was read, skipped, truncated and unlabelled (for the
manifest)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from torch import Tensor

if TYPE_CHECKING:
    from bertgeom.genomics.token_map import SpikeLayout


@dataclass(frozen=True)
class InputBatch:
    """One batch: ``indices (batch,)`` running input numbers from 0, ``input_ids`` (line
    number, record id or sequence id), ``labels`` (one class per input, or ``None`` when the
    analysis has no classes), ``encoding``: ``input_ids`` and ``attention_mask`` ``(batch, seq)``,
    right-padded, ``[CLS] ... [SEP]`` (or the model's equivalents); ``spike``: where the
    tokens sit on the reference spike (k-mer sources opened with ``spike_layouts``)."""

    indices: npt.NDArray[np.int64]
    input_ids: tuple[str, ...]
    labels: tuple[str, ...] | None
    encoding: dict[str, Tensor]
    spike: SpikeLayout | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class InputStats:
    """Counts for the manifest, filled while the inputs stream."""

    source: str
    path: str
    read: int = 0
    analysed: int = 0
    truncated: int = 0
    unlabelled: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    classes: Counter[str] = field(default_factory=Counter)
    max_length: int = 0
    longest: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "path": self.path,
            "read": self.read,
            "analysed": self.analysed,
            "skipped": dict(self.skipped),
            "truncated": self.truncated,
            "unlabelled": self.unlabelled,
            "classes": dict(self.classes),
            "max_length": self.max_length,
            "longest_input_tokens": self.longest,
            **self.extra,
        }

    def merge(self, other: InputStats) -> InputStats:
        """The counts of both streams (shards of one source): counts add up, ``longest`` is
        the larger, numeric ``extra`` entries add up and the others are taken from ``self``."""
        extra = dict(self.extra)
        for key, value in other.extra.items():
            if isinstance(value, int) and isinstance(extra.get(key), int):
                extra[key] += value
            else:
                extra.setdefault(key, value)
        return InputStats(
            source=self.source,
            path=self.path,
            read=self.read + other.read,
            analysed=self.analysed + other.analysed,
            truncated=self.truncated + other.truncated,
            unlabelled=self.unlabelled + other.unlabelled,
            skipped=self.skipped + other.skipped,
            classes=self.classes + other.classes,
            max_length=self.max_length,
            longest=max(self.longest, other.longest),
            extra=extra,
        )
