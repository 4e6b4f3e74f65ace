"""The k-mer vocabulary and a Hugging Face tokenizer saved beside the model.

A model directory loads with ``AutoTokenizer.from_pretrained`` alone: the tokenizer splits the
space-joined k-mers of :func:`bertgeom.genomics.kmers.kmer_sentence` on white space and maps each
to its id; a k-mer not seen in training becomes ``[UNK]`` (the vocabulary holds whole 12-mers
only, so WordPiece finds no sub-piece). The vocabulary holds only fully called k-mers (A/C/G/T):
a k-mer with an ``n`` in it (a drop-out, an uncovered end, the padding of the last token) is
missing data, and reaches the model as ``[UNK]`` whatever its pattern of ``n``. :func:`encode`
gives the tokenizer's ids by a dictionary look-up per k-mer, many times faster.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
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
    """``input_ids`` and ``attention_mask`` ``(batch, seq)`` for spike sequences: ``[CLS]`` k-mer
    ids ``[SEP]``, truncated to ``max_length`` tokens and right-padded to the longest.

    Hand-written for a whole-k-mer vocabulary (:func:`make_tokenizer`): the Hugging Face
    WordPiece path over the space-joined k-mers costs about 1 ms per spike, and each k-mer is
    one dictionary look-up giving the same ids (tested against it). Any other tokenizer, or a
    sequence the look-up would not reproduce exactly (a character other than an ASCII letter),
    goes through :func:`tokenize`.
    """
    vocabulary = _kmer_vocabulary(tokenizer)
    encoded = (
        None if vocabulary is None else _encode_kmers(vocabulary, sequences, k, stride, max_length)
    )
    if encoded is not None:
        return encoded
    sentences = [kmer_sentence(sequence, k, stride) for sequence in sequences]
    return tokenize(tokenizer, sentences, max_length)


@dataclass(frozen=True)
class _KmerVocabulary:
    """What a whole-word WordPiece tokenizer does to a word of ASCII letters: its id if the
    vocabulary holds it and it is at most ``longest_word`` long, else ``unknown``."""

    ids: dict[str, int]
    unknown: int
    cls: int
    sep: int
    pad: int
    longest_word: int


_VOCABULARIES: WeakKeyDictionary[PreTrainedTokenizerBase, tuple[int, _KmerVocabulary | None]] = (
    WeakKeyDictionary()
)
"""Per tokenizer, with its size when read (adding tokens invalidates the entry)."""


def _kmer_vocabulary(tokenizer: PreTrainedTokenizerBase) -> _KmerVocabulary | None:
    """The look-up table of a whole-k-mer tokenizer, built once per tokenizer; ``None`` when
    the tokenizer may treat a word of letters otherwise than a single vocabulary look-up."""
    size = len(tokenizer)
    cached = _VOCABULARIES.get(tokenizer)
    if cached is None or cached[0] != size:
        cached = (size, _read_kmer_vocabulary(tokenizer))
        _VOCABULARIES[tokenizer] = cached
    return cached[1]


def _read_kmer_vocabulary(tokenizer: PreTrainedTokenizerBase) -> _KmerVocabulary | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        return None
    model = backend.model
    if not (
        isinstance(model, models.WordPiece)
        and isinstance(backend.normalizer, normalizers.BertNormalizer)
        and isinstance(backend.pre_tokenizer, pre_tokenizers.BertPreTokenizer)
        and tokenizer.padding_side == "right"
        and tokenizer.truncation_side == "right"
    ):
        return None
    # An added token is matched in the text before anything else: one that could occur in
    # k-mers of letters joined by spaces would split them or replace them.
    if not all(
        _never_in_kmers(token.content) for token in backend.get_added_tokens_decoder().values()
    ):
        return None
    ids = backend.get_vocab(with_added_tokens=False)
    # WordPiece tries the whole word first; a shorter piece needs a continuation piece
    # (``##...``) to finish the word, and with none in the vocabulary the word becomes [UNK].
    if any(token.startswith(model.continuing_subword_prefix) for token in ids):
        return None
    unknown = ids.get(model.unk_token)
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    if not (
        isinstance(unknown, int)
        and isinstance(cls, int)
        and isinstance(sep, int)
        and isinstance(pad, int)
    ):
        return None
    vocabulary = _KmerVocabulary(ids, unknown, cls, sep, pad, model.max_input_chars_per_word)
    # The post-processor must add exactly [CLS] before and [SEP] after: check on a probe.
    known = next(
        (token for token in ids if token.isascii() and token.isalpha() and token.islower()), None
    )
    probe = [token for token in (known, "zzzzzzzzzzzzqqq") if token is not None]
    expected = [cls, *(ids.get(token, unknown) for token in probe), sep]
    found = tokenizer(" ".join(probe), return_token_type_ids=False)["input_ids"]
    return vocabulary if list(found) == expected else None


def _never_in_kmers(text: str) -> bool:
    """Whether ``text`` holds a character that neither k-mers of ASCII letters joined by spaces
    nor their normalisation can hold (an ASCII digit or punctuation: ``[`` of ``[CLS]``)."""
    return any(
        char.isascii() and char.isprintable() and not char.isalpha() and not char.isspace()
        for char in text
    )


def _encode_kmers(
    vocabulary: _KmerVocabulary,
    sequences: Sequence[str],
    k: int,
    stride: int,
    max_length: int,
) -> dict[str, torch.Tensor] | None:
    """:func:`encode` by look-up; ``None`` where the tokenizer is needed to be exact (an empty
    batch, a ``max_length`` shorter than the two specials, a character other than a letter, a
    k-mer longer than WordPiece's longest word)."""
    if not sequences or max_length < 2 or k > vocabulary.longest_word:
        return None
    ids, unknown = vocabulary.ids, vocabulary.unknown
    rows = []
    for sequence in sequences:
        lowered = sequence.lower()
        if lowered and not (lowered.isascii() and lowered.isalpha()):
            return None
        tokens = kmers(sequence, k, stride)[: max_length - 2]
        rows.append(
            [vocabulary.cls, *(ids.get(token, unknown) for token in tokens), vocabulary.sep]
        )
    width = max(len(row) for row in rows)
    input_ids = np.full((len(rows), width), vocabulary.pad, dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = row
        attention_mask[index, : len(row)] = 1
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention_mask),
    }


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
