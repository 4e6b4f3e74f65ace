"""The k-mer vocabulary and a Hugging Face tokenizer saved beside the model.

A model directory loads with ``AutoTokenizer.from_pretrained`` alone: the tokenizer splits the
space-joined k-mers of :func:`bertgeom.genomics.kmers.kmer_sentence` on white space and maps each
to its id; a k-mer not seen in training becomes ``[UNK]`` (the vocabulary holds whole 12-mers
only, so WordPiece finds no sub-piece). The vocabulary holds only fully called k-mers (A/C/G/T):
a k-mer with an ``n`` in it (a drop-out, an uncovered end, the padding of the last token) is
missing data, and reaches the model as ``[UNK]`` whatever its pattern of ``n``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import torch
from transformers import BertTokenizer, PreTrainedTokenizerBase

from bertgeom.genomics.kmers import DEFAULT_K, DEFAULT_STRIDE, kmer_sentence, kmers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_vocabulary(
    sequences: Iterable[str], k: int = DEFAULT_K, stride: int = DEFAULT_STRIDE, min_count: int = 1
) -> list[str]:
    """Special tokens, then every fully called k-mer (no ``n``) seen at least ``min_count``
    times, most frequent first."""
    counts = Counter(
        token for sequence in sequences for token in kmers(sequence, k, stride) if "n" not in token
    )
    frequent = sorted(
        (kmer for kmer, count in counts.items() if count >= min_count),
        key=lambda t: (-counts[t], t),
    )
    return [*SPECIAL_TOKENS, *frequent]


def make_tokenizer(vocabulary: Sequence[str], max_length: int = 512) -> PreTrainedTokenizerBase:
    """A ``BertTokenizer`` (fast) over the given vocabulary."""
    return BertTokenizer(
        vocab={token: index for index, token in enumerate(vocabulary)},
        do_lower_case=True,
        tokenize_chinese_chars=False,
        strip_accents=False,
        model_max_length=max_length,
    )


def encode(
    tokenizer: PreTrainedTokenizerBase,
    sequences: Sequence[str],
    k: int = DEFAULT_K,
    stride: int = DEFAULT_STRIDE,
    max_length: int = 512,
) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` ``(batch, seq)`` for spike sequences, right-padded."""
    sentences = [kmer_sentence(sequence, k, stride) for sequence in sequences]
    return tokenize(tokenizer, sentences, max_length)


def tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` ``(batch, seq)`` for texts: truncated to
    ``max_length`` tokens and right-padded to the longest."""
    encoded = tokenizer(
        list(texts),
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_token_type_ids=False,
    )
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
