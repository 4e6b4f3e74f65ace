"""The base of every input source: :class:`InputSource` streams usable inputs in tokenised
batches of at most ``batch_size``, counts them in its :class:`InputStats`, gives each its class,
and reads only the positions of its shard when it has one. Each source reads its file lazily, so
memory does not depend on the number of inputs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from torch import Tensor

from bertgeom.capture.input_batch import InputBatch, InputStats
from bertgeom.capture.input_labels import UNLABELLED, chunk_labels
from bertgeom.capture.loading import LoadedModel
from bertgeom.errors import InputError

if TYPE_CHECKING:
    from bertgeom.genomics.token_map import SpikeLayout

Item = TypeVar("Item")


class InputSource:
    """Base of the three sources: ``batches(batch_size)`` streams, ``stats`` counts,
    ``declared_classes`` are the classes known before streaming (reported even if empty).

    ``positions``: stream only the items at these positions (a shard, for scale-out:
    ``bertgeom.scale``). A position numbers what the source reads, usable or not: a non-blank
    line, a FASTA record, a row of the dataset file (any split); ``positions_count`` says how
    many there are. Each shard counts only what it reads, so shards' ``stats`` add up
    (``InputStats.merge``), and an empty shard is no error.
    """

    spike_layouts = False
    """Whether batches carry a ``SpikeLayout`` (k-mer sources opened with ``spike_layouts``)."""
    ID_RULE = ""
    """What an input id is, for messages."""

    def __init__(
        self,
        loaded: LoadedModel,
        stats: InputStats,
        max_length: int | None = None,
        max_inputs: int | None = None,
        labels: dict[str, str] | None = None,
        positions: range | None = None,
    ) -> None:
        limit = loaded.max_tokens
        if max_length is not None and max_length < 4:
            raise InputError(f"--max-length must be at least 4 tokens, got {max_length}")
        if max_inputs is not None and max_inputs < 1:
            raise InputError(f"--max-inputs must be at least 1, got {max_inputs}")
        self.loaded = loaded
        self.max_length = min(limit, max_length) if max_length else limit
        self.max_inputs = max_inputs
        self.labels = labels
        self.positions = positions
        self.stats = stats
        self.stats.max_length = self.max_length
        self.declared_classes: list[str] = sorted(set(labels.values())) if labels else []

    def items(self) -> Iterator[tuple[str, str, str | None]]:
        """``(input id, payload, label)`` of every usable input, in order."""
        raise NotImplementedError

    def count(self) -> int | None:
        """How many inputs the source holds, when known without reading them all."""
        return None

    def positions_count(self) -> int:
        """How many positions a whole run reads (``--max-inputs`` included), for sharding."""
        raise NotImplementedError

    def longest_hint(self) -> int | None:
        """The longest input in tokens (truncation included), when known up front."""
        return None

    def expected_inputs(self) -> int | None:
        """How many inputs will be analysed, when known up front (for a progress bar)."""
        total = self.count()
        if total is None or self.max_inputs is None:
            return total
        return min(total, self.max_inputs)

    def encode(self, payloads: Sequence[str]) -> dict[str, Tensor]:
        """Tokenise payloads into ``(batch, seq)`` tensors, counting truncations."""
        raise NotImplementedError

    def spike_layout(
        self, chunk: Sequence[tuple[str, str, str | None]], encoding: dict[str, Tensor]
    ) -> SpikeLayout | None:
        """Where the tokens of a batch sit on the spike (only k-mer sources place them)."""
        return None

    def input_ids(self) -> Iterator[str]:
        """The id of every input the whole source holds, usable or not, without analysing."""
        raise NotImplementedError

    def check_labels(self) -> None:
        """Refuse labels that name no input at all (a labels file of other inputs, or ids of
        another kind), before hours of analysis learn it; count those that name none in
        ``stats.extra["labels_unmatched"]``. Once, by the whole source (not by a shard)."""
        if self.labels is None or self.positions is not None:
            return
        named = set(self.labels)
        matched = named.intersection(self.input_ids())
        if not matched:
            example = next(iter(self.labels))
            raise InputError(
                f"{self.stats.path}: none of the {len(named)} ids of --labels (e.g. {example!r}) "
                f"names an input; {self.ID_RULE}"
            )
        self.stats.extra["labels_unmatched"] = len(named) - len(matched)

    def in_shard(self, read: Iterable[Item]) -> Iterator[Item]:
        """What ``read`` yields at the shard's positions (everything without ``positions``),
        reading no further than the shard's end."""
        positions = self.positions
        for position, item in enumerate(read):
            if positions is not None and position not in positions:
                if position >= positions.stop:
                    return
                continue
            yield item

    def label_of(self, input_id: str) -> str | None:
        if self.labels is None:
            return None
        label = self.labels.get(input_id)
        if label is None:
            self.stats.unlabelled += 1
            return UNLABELLED
        return label

    def batches(self, batch_size: int) -> Iterator[InputBatch]:
        """Stream the inputs in batches of at most ``batch_size``."""
        if batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {batch_size}")
        items = self.items()
        if self.max_inputs is not None:
            items = islice(items, self.max_inputs)
        start = 0
        while chunk := list(islice(items, batch_size)):
            ids = tuple(item[0] for item in chunk)
            labels = chunk_labels(chunk) if self.labels is not None else None
            encoding = self.encode([item[1] for item in chunk])
            self.stats.analysed += len(chunk)
            self.stats.longest = max(self.stats.longest, int(encoding["input_ids"].shape[1]))
            if labels is not None:
                self.stats.classes.update(labels)
            indices = np.arange(start, start + len(chunk), dtype=np.int64)
            start += len(chunk)
            yield InputBatch(indices, ids, labels, encoding, self.spike_layout(chunk, encoding))
        if self.stats.analysed == 0 and self.positions is None:
            skipped = f" ({_describe(self.stats.skipped)} skipped)" if self.stats.skipped else ""
            raise InputError(f"{self.stats.path}: no input to analyse{skipped}")


def _describe(counts: Counter[str]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in counts.most_common())


def require_regular_file(path: Path, kind: str) -> None:
    """A regular, non-empty file: analyze reads its input more than once (to size the maps,
    to check the labels, to shard), which a pipe or standard input cannot give."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a {kind} file")
    if not path.is_file():
        raise InputError(
            f"{path}: not a regular file (a pipe or a device); analyze reads its input more "
            "than once: save it to a file first"
        )
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty, no input to analyse")
