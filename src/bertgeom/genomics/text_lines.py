"""The lines of a user's text file (FASTA, plain text, labels TSV), checked once for all of them:
a file or ``-`` (standard input, read as a stream), gzip and xz recognised by their magic bytes
(not by suffix, and without consuming them, so that a pipe works), a UTF-8 byte order mark
accepted, and a binary, compressed or non-UTF-8 file refused with one line naming the file
and the line."""

from __future__ import annotations

import gzip
import lzma
import re
import sys
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from bertgeom.errors import InputError

STDIN = "-"
"""The path that names standard input."""
_BOM = "\ufeff"
_LINE_END = re.compile(r"\r\n|\r|\n")
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"PK\x03\x04", "zip"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_CORRUPT = (EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile)


def display_name(path: str | Path) -> str:
    """How messages name ``path`` (``stdin`` for ``-``)."""
    return "stdin" if str(path) == STDIN else str(path)


def compression_of(handle: IO[bytes]) -> str | None:
    """The compression a binary stream starts with (``gzip``, ``xz``, ``zip``, ...), or None;
    read with ``peek``, so the stream still starts at its first byte."""
    head = handle.peek(6)[:6] if hasattr(handle, "peek") else b""
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def _open_binary(path: str | Path, what: str) -> IO[bytes]:
    if str(path) == STDIN:
        return sys.stdin.buffer
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a {what} file")
    try:
        return path.open("rb")
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error})") from error


def _decompressed(handle: IO[bytes], name: str, what: str, decompress: bool) -> Iterable[bytes]:
    """The stream's lines of bytes, decompressed (gzip, xz) or refused."""
    compression = compression_of(handle)
    if compression is None:
        return handle
    if not decompress:
        raise InputError(f"{name}: not {what} ({compression}-compressed; decompress it first)")
    if compression == "gzip":
        return gzip.GzipFile(fileobj=handle)
    if compression == "xz":
        return lzma.LZMAFile(handle)
    raise InputError(f"{name}: {compression}-compressed, which is not read; use gzip, xz or none")


def read_lines(path: str | Path, what: str, decompress: bool = True) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, line)`` of a text file, line endings (``\\n``, ``\\r\\n``, ``\\r``)
    removed.

    ``what`` names the expected content in messages (``FASTA``, ``text``); ``decompress``:
    gzip and xz are read, else refused. Raises :class:`InputError` naming the file (and the
    line, for bad UTF-8) when it is missing, a directory, unreadable, compressed in a format
    not read, corrupt or truncated, or not UTF-8 text.
    """
    name = display_name(path)
    raw = _open_binary(path, what)
    number = 0
    try:
        handle = _decompressed(raw, name, what, decompress)
        for line in handle:
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InputError(
                    f"{name}: not {what} (binary content: line {number + 1} is not UTF-8 text, "
                    f"{error.reason} at byte {error.start + 1})"
                ) from error
            if number == 0:
                text = text.removeprefix(_BOM)
            for part in _split_line(text):
                number += 1
                yield number, part
    except (*_CORRUPT, OSError) as error:
        raise InputError(f"{name}: cannot be read, corrupt or truncated ({error})") from error
    finally:
        if raw is not sys.stdin.buffer:
            raw.close()


def _split_line(text: str) -> list[str]:
    """The lines in one ``\\n``-terminated piece, as text mode's universal newlines read them
    (old Mac files end lines with a lone ``\\r``)."""
    if "\r" not in text:
        return [text.removesuffix("\n")]
    lines = _LINE_END.split(text)
    return lines[:-1] if lines[-1] == "" else lines
