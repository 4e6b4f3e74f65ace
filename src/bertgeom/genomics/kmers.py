"""Overlapping k-mer tokens of a nucleotide sequence, as in the paper (k = 12, stride = 9).

The sequence is lower-cased and right-padded with ``n`` to a multiple of ``k``; tokens start at
``0, stride, 2 * stride, ...`` while a whole k-mer fits: 425 tokens for the 3,822-nt reference
spike. Each token's first base is ``start``, so a token covers sequence positions
``start .. start + k - 1``; :func:`token_spans` gives those spans for mapping tokens back to the
spike.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

DEFAULT_K = 12
DEFAULT_STRIDE = 9


def _check(k: int, stride: int) -> None:
    if k < 1 or stride < 1:
        raise ValueError(f"k and stride must be positive, got k={k}, stride={stride}")


def padded_length(length: int, k: int = DEFAULT_K) -> int:
    """Length after right-padding with ``n`` to a multiple of ``k`` (at least ``k``)."""
    return max(k, -(-length // k) * k)


def token_starts(
    length: int, k: int = DEFAULT_K, stride: int = DEFAULT_STRIDE
) -> NDArray[np.int64]:
    """Start offsets of the k-mers of a sequence of ``length`` bases (after padding)."""
    _check(k, stride)
    total = padded_length(length, k)
    return np.arange(0, total - k + 1, stride, dtype=np.int64)


def kmers(sequence: str, k: int = DEFAULT_K, stride: int = DEFAULT_STRIDE) -> list[str]:
    """The lower-case, N-padded, overlapping k-mers of ``sequence``.

    >>> kmers("ACGTACGTACGTAC", k=12, stride=9)
    ['acgtacgtacgt', 'cgtacnnnnnnn']
    """
    _check(k, stride)
    padded = sequence.lower().ljust(padded_length(len(sequence), k), "n")
    return [padded[start : start + k] for start in token_starts(len(sequence), k, stride).tolist()]


def kmer_sentence(sequence: str, k: int = DEFAULT_K, stride: int = DEFAULT_STRIDE) -> str:
    """The k-mers joined by spaces: the text form a saved tokenizer splits back into tokens."""
    return " ".join(kmers(sequence, k, stride))


def token_spans(length: int, k: int = DEFAULT_K, stride: int = DEFAULT_STRIDE) -> NDArray[np.int64]:
    """``(n_tokens, 2)`` array of ``[first, last]`` sequence positions (0-based) of each token.

    Clipped to the unpadded sequence: a token made only of padding gets ``[start, start - 1]``.
    """
    starts = token_starts(length, k, stride)
    ends = np.minimum(starts + k - 1, length - 1)
    return np.stack([starts, np.maximum(ends, starts - 1)], axis=1)
