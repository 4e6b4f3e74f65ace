"""FASTA reading: formats, compression, and every way a file can be bad."""

from __future__ import annotations

import gzip
import io
import lzma
import os
import sys
import threading
import zipfile
from collections.abc import Callable
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


def test_byte_order_mark_and_old_mac_line_ends_are_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.fa"
    path.write_bytes(b"\xef\xbb\xbf>one\r\nACGT\r\n")
    assert [(r.record_id, r.sequence) for r in read_fasta(path)] == [("one", "ACGT")]
    path.write_bytes(b">one\rAC\rGT\r>two\rT\r")
    assert [(r.record_id, r.sequence) for r in read_fasta(path)] == [("one", "ACGT"), ("two", "T")]


def test_non_utf8_header_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.fa"
    path.write_bytes(b">one\nACGT\n>S\xe3o_Paulo/1\nACGT\n")
    with pytest.raises(InputError, match=r"latin1\.fa: not FASTA .*line 3 is not UTF-8"):
        list(read_fasta(path))


@pytest.mark.parametrize("compress", [bytes, gzip.compress, lzma.compress])
def test_standard_input_is_read_as_a_stream(
    monkeypatch: pytest.MonkeyPatch, compress: Callable[[bytes], bytes]
) -> None:
    stream = io.BufferedReader(io.BytesIO(compress(TEXT.encode())))  # type: ignore[arg-type]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(stream))
    assert [r.record_id for r in read_fasta("-")] == ["one", "two", "three"]


def test_a_pipe_loses_no_bytes_to_the_compression_check(tmp_path: Path) -> None:
    """A FIFO (what ``/dev/stdin`` is under a shell pipe) can be read once only: the magic
    bytes are peeked, not read and lost."""
    fifo = tmp_path / "pipe.fa"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("wb") as handle:
            handle.write(gzip.compress(TEXT.encode()))

    writer = threading.Thread(target=write)
    writer.start()
    records = list(read_fasta(fifo))
    writer.join()
    assert [r.sequence for r in records] == ["ACGTacgt", "NNNN", ""]


def test_zip_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "genomes.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("genomes.fa", TEXT)
    with pytest.raises(InputError, match="zip-compressed"):
        list(read_fasta(path))
