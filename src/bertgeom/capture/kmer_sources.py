"""Spike inputs for a bertgeom variant classifier, tokenised into its k-mers: FASTA genomes or
spikes (:class:`FastaSource`) and dataset directories of ``bertgeom data split``
(:class:`DatasetSource`), optionally with where each token sits on the reference spike."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import Tensor

from bertgeom.capture.input_batch import InputStats
from bertgeom.capture.input_source import InputSource, require_regular_file
from bertgeom.capture.loading import LoadedModel
from bertgeom.errors import InputError, ModelError

if TYPE_CHECKING:
    from bertgeom.genomics.spike import SpikeRecord
    from bertgeom.genomics.token_map import SpikeLayout


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
        require_regular_file(path, "FASTA")
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

        for record in self.in_shard(read_fasta(self.path)):
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
