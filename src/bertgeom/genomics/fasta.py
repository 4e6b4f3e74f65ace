"""Reading FASTA files (plain, ``.gz``, ``.xz``) into records, refusing what is not FASTA.

Hand-written rather than taken from Biopython or ``mappy.fastx_read`` because neither reads
``.xz`` and neither tells an empty or non-FASTA file apart from a good one with one clear
message; the format itself is a few lines.
"""

from __future__ import annotations

import gzip
import lzma
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bertgeom.errors import InputError


@dataclass(frozen=True)
class FastaRecord:
    """One FASTA record: ``record_id`` is the header up to the first white space."""

    record_id: str
    description: str
    sequence: str
    index: int


def _open_text(path: Path) -> IO[str]:
    """Open ``path`` as text, decompressing by magic bytes (gzip, xz), not by suffix."""
    with path.open("rb") as handle:
        magic = handle.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rt", encoding="utf-8", errors="strict")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rt", encoding="utf-8", errors="strict")
    return path.open(encoding="utf-8", errors="strict")


def read_fasta(path: str | Path) -> Iterator[FastaRecord]:
    """Yield the records of a FASTA file, in file order.

    Raises :class:`InputError` with one clear line when the file is missing, unreadable, empty,
    compressed but corrupt, binary, or does not start with a ``>`` header. Sequence lines are
    joined and stripped of white space; their content is not judged here (QC does that per
    record, so one bad record never stops the batch).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a FASTA file")
    try:
        handle = _open_text(path)
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error})") from error
    header: str | None = None
    chunks: list[str] = []
    index = 0
    seen_any = False
    try:
        with handle:
            for line_number, line in enumerate(handle, start=1):
                line = line.strip()
                if not line:
                    continue
                if line.startswith(">"):
                    if header is not None:
                        yield _record(header, chunks, index)
                        index += 1
                    header, chunks = line[1:].strip(), []
                    seen_any = True
                elif header is None:
                    raise InputError(
                        f"{path}: not FASTA (line {line_number} comes before any '>' header)"
                    )
                else:
                    chunks.append(line)
            if header is not None:
                yield _record(header, chunks, index)
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not FASTA (binary content: {error.reason})") from error
    except (EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile, OSError) as error:
        raise InputError(f"{path}: cannot be read, corrupt or truncated ({error})") from error
    if not seen_any:
        raise InputError(f"{path}: empty, no FASTA records found")


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
