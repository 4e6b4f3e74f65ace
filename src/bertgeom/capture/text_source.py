"""Plain text inputs: one input per non-blank line of a UTF-8 file, tokenised by the model's
own tokenizer."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from torch import Tensor
from transformers import PreTrainedTokenizerBase

from bertgeom.capture.input_batch import InputStats
from bertgeom.capture.input_source import InputSource, require_regular_file
from bertgeom.capture.loading import LoadedModel
from bertgeom.errors import InputError
from bertgeom.model.tokenizer import tokenize


class TextSource(InputSource):
    """Plain UTF-8 text, one input per non-blank line; the input id is the 1-based line number.
    Binary and compressed files are refused as ``read_fasta`` refuses them (one reader,
    :func:`bertgeom.genomics.text_lines.read_lines`)."""

    ID_RULE = "with --text an input id is the line number (1-based, blank lines counted)"

    def __init__(self, loaded: LoadedModel, path: Path, **options: Any) -> None:
        path = Path(path)
        require_regular_file(path, "text")
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
        for number, text in self.in_shard(self._numbered_lines()):
            self.stats.read += 1
            yield str(number), text, self.label_of(str(number))

    def encode(self, payloads: Sequence[str]) -> dict[str, Tensor]:
        return _tokenise(self.tokenizer, payloads, self.max_length, self._count_truncated)

    def _count_truncated(self, count: int) -> None:
        self.stats.truncated += count


def _tokenise(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    on_truncated: Callable[[int], None],
) -> dict[str, Tensor]:
    full = tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
    on_truncated(sum(len(ids) > max_length for ids in full))
    return tokenize(tokenizer, texts, max_length)
