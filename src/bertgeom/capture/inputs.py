"""Inputs to analyse, streamed in tokenised batches: plain text, FASTA genomes or spikes, or a
dataset directory from ``bertgeom data split``.

Each source reads its file lazily and yields :class:`InputBatch` objects of at most
``batch_size`` inputs, so memory does not depend on the number of inputs. What was read,
skipped, truncated and unlabelled is counted in :class:`InputStats` as the stream goes (for the
manifest). Classes come from a ``--labels`` TSV (text, FASTA) or the dataset's ``label`` column.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from bertgeom.capture.loading import LoadedModel
from bertgeom.errors import InputError, ModelError
from bertgeom.model.tokenizer import tokenize

if TYPE_CHECKING:
    from bertgeom.genomics.spike import SpikeRecord
    from bertgeom.genomics.token_map import SpikeLayout

UNLABELLED = "unlabelled"
"""Class of an input that the labels file does not name (when a labels file is given)."""


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


def read_input_labels(path: Path) -> dict[str, str]:
    """A TSV with an ``input_id`` (or ``record_id``) column and a ``label`` column, as a dict
    (each id one label: :func:`bertgeom.genomics.labels.read_label_table`)."""
    from bertgeom.genomics.labels import read_label_table

    labels = read_label_table(path, ("input_id", "record_id"))
    if "all" in labels.values():
        raise InputError(f"{path}: 'all' is reserved for the aggregate over all inputs")
    return labels


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
            labels = _chunk_labels(chunk) if self.labels is not None else None
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


def _chunk_labels(chunk: Sequence[tuple[str, str, str | None]]) -> tuple[str, ...]:
    return tuple(item[2] if item[2] is not None else UNLABELLED for item in chunk)


def _describe(counts: Counter[str]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in counts.most_common())


def _tokenise(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    on_truncated: Callable[[int], None],
) -> dict[str, Tensor]:
    full = tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
    on_truncated(sum(len(ids) > max_length for ids in full))
    return tokenize(tokenizer, texts, max_length)


class TextSource(InputSource):
    """Plain UTF-8 text, one input per non-blank line; the input id is the 1-based line number.
    Binary and compressed files are refused as ``read_fasta`` refuses them (one reader,
    :func:`bertgeom.genomics.text_lines.read_lines`)."""

    ID_RULE = "with --text an input id is the line number (1-based, blank lines counted)"

    def __init__(self, loaded: LoadedModel, path: Path, **options: Any) -> None:
        path = Path(path)
        _require_file(path, "text")
        super().__init__(loaded, InputStats("text", str(path)), **options)
        self.path = path
        self.tokenizer = loaded.require_tokenizer()
        self.lines, self.longest = self._scan()
        if self.lines == 0 and self.positions is None:
            raise InputError(f"{path}: empty, no line of text to analyse")
        self.check_labels()

    def _numbered_lines(self) -> Iterator[tuple[int, str]]:
        """``(line number, stripped text)`` of the non-blank lines."""
        from bertgeom.genomics.text_lines import read_lines

        for number, line in read_lines(self.path, "text", decompress=False):
            if text := line.strip():
                yield number, text

    def input_ids(self) -> Iterator[str]:
        return (str(number) for number, _ in self._numbered_lines())

    def _scan(self) -> tuple[int, int]:
        """One streaming pass: the number of inputs and the longest one in tokens (so the
        class-mean maps are sized to the inputs, not to the model's maximum); of the shard
        only, with ``positions``."""
        lines, longest = 0, 0
        shard = self.positions
        first, stop = (0, self.max_inputs) if shard is None else (shard.start, shard.stop)
        non_blank = islice((text for _, text in self._numbered_lines()), first, stop)
        while chunk := list(islice(non_blank, 512)):
            lines += len(chunk)
            lengths = self.tokenizer(
                chunk, truncation=True, max_length=self.max_length, verbose=False
            )["input_ids"]
            longest = max(longest, *(len(ids) for ids in lengths))
        return lines, longest

    def count(self) -> int | None:
        return self.lines

    def longest_hint(self) -> int | None:
        return self.longest

    def positions_count(self) -> int:
        return self.lines

    def items(self) -> Iterator[tuple[str, str, str | None]]:
        positions = self.positions
        for position, (number, text) in enumerate(self._numbered_lines()):
            if positions is not None and position not in positions:
                if position >= positions.stop:
                    return
                continue
            self.stats.read += 1
            yield str(number), text, self.label_of(str(number))

    def encode(self, payloads: Sequence[str]) -> dict[str, Tensor]:
        return _tokenise(self.tokenizer, payloads, self.max_length, self._count_truncated)

    def _count_truncated(self, count: int) -> None:
        self.stats.truncated += count


class _KmerSource(InputSource):
    """Shared by FASTA and dataset inputs: spike sequences to the classifier's k-mer tokens.

    With ``spike_layouts``, each batch carries a ``SpikeLayout`` (DESIGN 3.5) from each input's
    alignment; inputs without a usable alignment are analysed with no token placed and counted
    in ``stats.extra["spike_unmapped"]``, those whose aligned spike differs from the analysed
    sequence (only part placed) in ``spike_partly_mapped``.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        stats: InputStats,
        flag: str,
        spike_layouts: bool = False,
        **options: Any,
    ) -> None:
        if loaded.kmers is None:
            raise ModelError(
                f"{loaded.directory}: {flag} needs a bertgeom variant classifier (config.json "
                "with a 'bertgeom' entry giving k and stride); use --text for other models"
            )
        super().__init__(loaded, stats, **options)
        self.tokenizer = loaded.require_tokenizer()
        self.kmers = loaded.kmers
        self.spike_layouts = spike_layouts
        if spike_layouts:
            self.stats.extra.update(spike_unmapped=0, spike_partly_mapped=0)

    def alignments(self, chunk: Sequence[tuple[str, str, str | None]]) -> list[SpikeRecord]:
        """The alignment of each input of a batch to the reference spike."""
        from bertgeom.genomics.spike import extract_spike

        return [extract_spike(input_id, sequence) for input_id, sequence, _ in chunk]

    def spike_layout(
        self, chunk: Sequence[tuple[str, str, str | None]], encoding: dict[str, Tensor]
    ) -> SpikeLayout | None:
        if not self.spike_layouts:
            return None
        from bertgeom.genomics.token_map import layout_mutations, spike_layout

        records = self.alignments(chunk)
        sequences = [sequence for _, sequence, _ in chunk]
        unmapped = [not record.usable for record in records]
        self.stats.extra["spike_unmapped"] += sum(unmapped)
        self.stats.extra["spike_partly_mapped"] += sum(
            not failed and record.sequence != sequence.upper()
            for failed, record, sequence in zip(unmapped, records, sequences, strict=True)
        )
        lengths = encoding["attention_mask"].sum(dim=1).tolist()
        k, stride = self.kmers.k, self.kmers.stride
        return spike_layout(sequences, records, lengths, k, stride, layout_mutations())

    def longest_hint(self) -> int | None:
        """Tokens of a whole spike with two k-mers to spare for insertions (longer inputs are
        cropped in the class-mean maps, never in the analysis)."""
        from bertgeom.genomics.kmers import token_starts
        from bertgeom.genomics.reference import SPIKE_LENGTH

        k, stride = self.kmers.k, self.kmers.stride
        return min(self.max_length, len(token_starts(SPIKE_LENGTH + 2 * k, k, stride)) + 2)

    def encode(self, payloads: Sequence[str]) -> dict[str, Tensor]:
        from bertgeom.genomics.kmers import token_starts
        from bertgeom.model.tokenizer import encode

        k, stride = self.kmers.k, self.kmers.stride
        self.stats.truncated += sum(
            len(token_starts(len(sequence), k, stride)) + 2 > self.max_length
            for sequence in payloads
        )
        encoded = encode(self.tokenizer, list(payloads), k, stride, self.max_length)
        return {name: tensor.to(torch.long) for name, tensor in encoded.items()}


class FastaSource(_KmerSource):
    """Genomes or spikes (FASTA, .gz, .xz): each record is aligned and its spike cut out
    (``extract_spike``); records with a hard QC failure are skipped and counted by status."""

    ID_RULE = "with --fasta an input id is the record id (the header up to the first space)"

    def __init__(self, loaded: LoadedModel, path: Path, **options: Any) -> None:
        path = Path(path)
        _require_file(path, "FASTA")
        super().__init__(loaded, InputStats("fasta", str(path)), "--fasta", **options)
        self.path = path
        self._aligned: deque[SpikeRecord] = deque()
        self.check_labels()

    def input_ids(self) -> Iterator[str]:
        """The record ids (one pass over the file, no alignment)."""
        from bertgeom.genomics.fasta import read_fasta

        return (record.record_id for record in read_fasta(self.path))

    def alignments(self, chunk: Sequence[tuple[str, str, str | None]]) -> list[SpikeRecord]:
        """The records' alignments, made when they were read (``items`` keeps them in order)."""
        return [self._aligned.popleft() for _ in chunk]

    def positions_count(self) -> int:
        """The number of records (one pass over the file, no alignment)."""
        from bertgeom.genomics.fasta import read_fasta

        if self.max_inputs is not None:
            raise InputError(
                "--max-inputs with --fasta cannot be sharded (which records count depends on "
                "their alignment); cut the FASTA file instead"
            )
        return sum(1 for _ in read_fasta(self.path))

    def items(self) -> Iterator[tuple[str, str, str | None]]:
        from bertgeom.genomics.fasta import read_fasta
        from bertgeom.genomics.spike import extract_spike

        positions = self.positions
        for position, record in enumerate(read_fasta(self.path)):
            if positions is not None and position not in positions:
                if position >= positions.stop:
                    return
                continue
            self.stats.read += 1
            spike = extract_spike(record.record_id, record.sequence)
            if not spike.usable:
                self.stats.skipped[spike.status.value] += 1
                continue
            if self.spike_layouts:
                self._aligned.append(spike)
            yield record.record_id, spike.sequence, self.label_of(record.record_id)


class DatasetSource(_KmerSource):
    """A dataset directory (``dataset.parquet`` from ``bertgeom data split``), optionally one
    split; the input id is ``sequence_id``, the class the ``label`` column. Read in row
    batches."""

    COLUMNS = ("sequence_id", "label", "split", "sequence")

    def __init__(
        self, loaded: LoadedModel, directory: Path, split: str | None = None, **options: Any
    ) -> None:
        directory = Path(directory)
        path = directory / "dataset.parquet"
        if not directory.is_dir():
            raise InputError(f"{directory}: dataset directory not found")
        if not path.is_file():
            raise InputError(f"{directory}: no dataset.parquet; run 'bertgeom data split' first")
        stats = InputStats("data", str(path), extra={"split": split})
        super().__init__(loaded, stats, "--data", **options)
        self.path, self.split = path, split
        try:
            self.file = pq.ParquetFile(path)
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: not a readable Parquet file ({error})") from error
        missing = set(self.COLUMNS) - set(self.file.schema_arrow.names)
        if missing:
            raise InputError(f"{path}: missing columns {sorted(missing)}")
        meta = pq.read_table(path, columns=["label", "split"]).to_pandas()
        if split is not None:
            if split not in set(meta["split"]):
                raise InputError(
                    f"{path}: no split {split!r}; the dataset has {sorted(set(meta['split']))}"
                )
            meta = meta[meta["split"] == split]
        known = list(loaded.class_names or ())
        self.declared_classes = [c for c in known if c in set(meta["label"])] + sorted(
            set(meta["label"]) - set(known)
        )
        self.labels = {}
        self.rows = len(meta)

    def count(self) -> int | None:
        return self.rows

    def positions_count(self) -> int:
        """The rows of the file, or with ``max_inputs`` those up to the last one analysed."""
        if self.max_inputs is None:
            return int(self.file.metadata.num_rows)
        splits = pq.read_table(self.path, columns=["split"]).column("split").to_numpy()
        chosen = np.flatnonzero(splits == self.split) if self.split is not None else None
        if chosen is None:
            return min(self.max_inputs, len(splits))
        return int(chosen[min(self.max_inputs, len(chosen)) - 1]) + 1 if len(chosen) else 0

    def items(self) -> Iterator[tuple[str, str, str | None]]:
        positions = self.positions
        end = 0
        for chunk in self.file.iter_batches(batch_size=1024, columns=list(self.COLUMNS)):
            first, end = end, end + chunk.num_rows  # the chunk's positions
            if positions is not None:
                if first >= positions.stop:
                    return
                if end <= positions.start:
                    continue
            frame = chunk.to_pandas()
            if positions is not None:
                frame = frame.iloc[max(0, positions.start - first) : positions.stop - first]
            self.stats.read += len(frame)
            if self.split is not None:
                frame = frame[frame["split"] == self.split]
            for row in frame.itertuples(index=False):
                yield str(row.sequence_id), str(row.sequence), str(row.label)


def _require_file(path: Path, kind: str) -> None:
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
