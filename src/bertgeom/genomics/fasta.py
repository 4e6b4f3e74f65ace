"""Reading FASTA files (plain, ``.gz``, ``.xz``, or standard input) into records, refusing
what is not FASTA.

Hand-written rather than taken from Biopython or ``mappy.fastx_read`` because neither reads
``.xz`` and neither tells an empty or non-FASTA file apart from a good one with one clear
message; the format itself is a few lines. Opening, decompressing and decoding are
:mod:`bertgeom.genomics.text_lines`'s, shared with the other text inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bertgeom.errors import InputError
from bertgeom.genomics.text_lines import display_name, read_lines


@dataclass(frozen=True)
class FastaRecord:
    """One FASTA record: ``record_id`` is the header up to the first white space."""

    record_id: str
    description: str
    sequence: str
    index: int


def read_fasta(path: str | Path) -> Iterator[FastaRecord]:
    """Yield the records of a FASTA file (``-``: standard input, read once as a stream), in
    file order.

    Raises :class:`InputError` with one clear line when the file is missing, unreadable, empty,
    compressed but corrupt, binary or not UTF-8 (with the line), or does not start with a ``>``
    header. Sequence lines are joined and stripped of white space; their content is not judged
    here (QC does that per record, so one bad record never stops the batch).
    """
    name = display_name(path)
    header: str | None = None
    chunks: list[str] = []
    index = 0
    for line_number, line in read_lines(path, "FASTA"):
        line = line.strip()
        if not line:
            continue
        if line.startswith(">"):
            if header is not None:
                yield _record(header, chunks, index)
                index += 1
            header, chunks = line[1:].strip(), []
        elif header is None:
            raise InputError(f"{name}: not FASTA (line {line_number} comes before any '>' header)")
        else:
            chunks.append(line)
    if header is None:
        raise InputError(f"{name}: empty, no FASTA records found")
    yield _record(header, chunks, index)


def _record(header: str, chunks: list[str], index: int) -> FastaRecord:
    record_id = header.split(maxsplit=1)[0] if header else f"record_{index + 1}"
    sequence = "".join("".join(chunk.split()) for chunk in chunks)
    return FastaRecord(record_id=record_id, description=header, sequence=sequence, index=index)


def write_fasta(records: Iterator[tuple[str, str]] | list[tuple[str, str]], path: Path) -> None:
    """Write ``(header, sequence)`` pairs as FASTA with 70-column lines."""
    with path.open("w") as handle:
        for header, sequence in records:
            handle.write(f">{header}\n")
            for start in range(0, len(sequence), 70):
                handle.write(sequence[start : start + 70] + "\n")
