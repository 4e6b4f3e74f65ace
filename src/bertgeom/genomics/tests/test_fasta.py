"""FASTA reading: formats, compression, and every way a file can be bad."""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import pytest

from bertgeom.errors import InputError
from bertgeom.genomics.fasta import read_fasta, write_fasta

TEXT = ">one first record\nACGT\nacgt\n\n>two\nNNNN\n>three empty\n"


@pytest.mark.parametrize("opener", [open, gzip.open, lzma.open])
def test_reads_plain_gzip_and_xz(tmp_path: Path, opener: object) -> None:
    path = tmp_path / "genomes.fa"
    with opener(path, "wt") as handle:  # type: ignore[operator]
        handle.write(TEXT)
    records = list(read_fasta(path))
    assert [r.record_id for r in records] == ["one", "two", "three"]
    assert records[0].description == "one first record"
    assert records[0].sequence == "ACGTacgt"
    assert records[2].sequence == ""
    assert [r.index for r in records] == [0, 1, 2]


def test_round_trip_with_write_fasta(tmp_path: Path) -> None:
    path = tmp_path / "out.fa"
    write_fasta([("a x", "A" * 150), ("b", "C")], path)
    assert [(r.record_id, r.sequence) for r in read_fasta(path)] == [("a", "A" * 150), ("b", "C")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (b"ACGT\n>late header\n", "not FASTA"),
        (b"\x00\xff\xfe binary", "not FASTA"),
        (b"\x1f\x8b\x08\x00broken gzip", "corrupt"),
    ],
)
def test_bad_files_raise_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.fa"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        list(read_fasta(path))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        list(read_fasta(tmp_path / "absent.fa"))
    with pytest.raises(InputError, match="directory"):
        list(read_fasta(tmp_path))
