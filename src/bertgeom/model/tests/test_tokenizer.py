"""encode's dictionary look-up gives the Hugging Face tokenizer's tensors, input for input."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer, BertTokenizer, PreTrainedTokenizerBase

from bertgeom.genomics.dataset import embedded_labelled_records
from bertgeom.genomics.kmers import kmer_sentence
from bertgeom.genomics.reference import reference_spike
from bertgeom.genomics.spike import extract_spike
from bertgeom.model import tokenizer as tokenizer_module
from bertgeom.model.tokenizer import build_vocabulary, encode, make_tokenizer


def hugging_face(
    tokenizer: PreTrainedTokenizerBase,
    sequences: Sequence[str],
    k: int = 12,
    stride: int = 9,
    max_length: int = 512,
) -> dict[str, torch.Tensor]:
    """The independent computation: the tokenizer itself over the space-joined k-mers."""
    encoded = tokenizer(
        [kmer_sentence(sequence, k, stride) for sequence in sequences],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def assert_same(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(found) == {"input_ids", "attention_mask"}
    for name, tensor in expected.items():
        assert found[name].dtype == torch.int64
        assert torch.equal(found[name], tensor), name


@pytest.fixture
def without_hugging_face(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes the tokenizer path fail, so a passing test used the look-up."""

    def refuse(*args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        raise AssertionError("encode fell back to the Hugging Face tokenizer")

    monkeypatch.setattr(tokenizer_module, "tokenize", refuse)


@pytest.fixture(scope="module")
def real_spikes() -> list[str]:
    records = itertools.islice(embedded_labelled_records(), 40)
    return [extract_spike(record.record_id, record.sequence).sequence for record, _ in records]


@pytest.mark.usefixtures("without_hugging_face")
def test_real_spikes_give_the_tokenizer_ids(real_spikes: list[str]) -> None:
    # A vocabulary from half of them: the others bring k-mers it has never seen.
    tokenizer = make_tokenizer(build_vocabulary(real_spikes[:20]))
    expected = hugging_face(tokenizer, real_spikes)
    assert (expected["input_ids"] == tokenizer.unk_token_id).any()
    assert_same(encode(tokenizer, real_spikes), expected)


@pytest.mark.usefixtures("without_hugging_face")
def test_a_saved_and_loaded_tokenizer_uses_the_look_up(
    real_spikes: list[str], tmp_path: Path
) -> None:
    make_tokenizer(build_vocabulary(real_spikes[:20])).save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert_same(encode(loaded, real_spikes[20:]), hugging_face(loaded, real_spikes[20:]))


def edge_cases(length: int, k: int) -> list[str]:
    spike = reference_spike()[:length]
    return [
        spike,
        spike[:100] + "N" * 40 + spike[140:] + "NNN",  # runs of N, inside and at the end
        spike.lower(),
        spike[: length // 2].lower() + spike[length // 2 :],  # mixed case
        spike[: k - 1],  # shorter than one k-mer
        "",
        "TTTTTTTTTTTTTTTTTTTTTTTTGATTACA" * 3,  # k-mers the vocabulary lacks
        spike * 2,  # longer than max_length tokens at the default settings
        spike[: 3 * k],  # a few tokens: padded
    ]


@pytest.mark.usefixtures("without_hugging_face")
@pytest.mark.parametrize(("k", "stride"), [(12, 9), (3, 3), (4, 6)])
@pytest.mark.parametrize("max_length", [2, 3, 40, 512])
def test_edge_cases_give_the_tokenizer_ids(k: int, stride: int, max_length: int) -> None:
    tokenizer = make_tokenizer(build_vocabulary([reference_spike()[:2000]], k, stride))
    sequences = edge_cases(3822 if k == 12 else 600, k)
    expected = hugging_face(tokenizer, sequences, k, stride, max_length)
    assert_same(encode(tokenizer, sequences, k, stride, max_length), expected)
    for sequence in sequences:  # alone, each is padded to its own length only
        expected = hugging_face(tokenizer, [sequence], k, stride, max_length)
        assert_same(encode(tokenizer, [sequence], k, stride, max_length), expected)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(alphabet="ACGTNacgtnRY-*. K\u212a\u00e9", max_size=60), min_size=1, max_size=4
    ),
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(0, 30),
)
def test_any_text_gives_the_tokenizer_ids(
    sequences: list[str], k: int, stride: int, max_length: int
) -> None:
    # Gaps, punctuation, spaces and accents are split by the tokenizer: encode must hand them to
    # it; letters (the Kelvin sign lower-cases to k) must come out the same by look-up.
    tokenizer = make_tokenizer(build_vocabulary(["ACGTACGGTTACGNACRY", "ttgcatgcaKk"], k, 1))
    expected = hugging_face(tokenizer, sequences, k, stride, max_length)
    assert_same(encode(tokenizer, sequences, k, stride, max_length), expected)


def test_sub_word_pieces_fall_back_to_hugging_face() -> None:
    # WordPiece splits a k-mer missing from the vocabulary into known pieces: not a look-up.
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "atg", "##ttt", "##gtt", "##a"]
    pieces = BertTokenizer(vocab={token: index for index, token in enumerate(vocabulary)})
    sequences = [reference_spike()[:200], "ATGA"]
    expected = hugging_face(pieces, sequences, 6, 3)
    assert (expected["input_ids"] == vocabulary.index("##ttt")).any()
    assert_same(encode(pieces, sequences, 6, 3), expected)


def test_a_token_added_later_falls_back_to_hugging_face() -> None:
    # An added token is matched in the text before WordPiece, splitting k-mers that hold it.
    sequences = [reference_spike()[:200]]
    tokenizer = make_tokenizer(build_vocabulary(sequences))
    assert_same(encode(tokenizer, sequences), hugging_face(tokenizer, sequences))
    tokenizer.add_tokens(["gtt"])
    encoded = encode(tokenizer, sequences)
    assert (encoded["input_ids"] == tokenizer.convert_tokens_to_ids("gtt")).any()
    assert_same(encoded, hugging_face(tokenizer, sequences))


def test_other_special_tokens_fall_back_to_hugging_face() -> None:
    # A post-processor adding only [SEP]: the look-up would add [CLS] too.
    sequences = [reference_spike()[:200]]
    tokenizer = make_tokenizer(build_vocabulary(sequences))
    separator = tokenizer.sep_token_id
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="$A [SEP]", special_tokens=[("[SEP]", separator)]
    )
    expected = hugging_face(tokenizer, sequences)
    assert expected["input_ids"][0, 0] != tokenizer.cls_token_id
    assert_same(encode(tokenizer, sequences), expected)
