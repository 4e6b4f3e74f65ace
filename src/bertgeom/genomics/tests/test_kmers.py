"""k-mer tokens: counts, padding, spans, and properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bertgeom.genomics.kmers import kmer_sentence, kmers, padded_length, token_spans
from bertgeom.genomics.reference import reference_spike


def test_reference_spike_has_425_tokens_as_in_the_paper() -> None:
    tokens = kmers(reference_spike())
    assert len(tokens) == 425
    assert tokens[0] == "atgtttgttttt"
    assert tokens[-1].endswith("nnnnnn")  # 3,822 padded with six n to 3,828


def test_sentence_is_space_joined() -> None:
    assert kmer_sentence("ACGTACGTACGTAC") == "acgtacgtacgt cgtacnnnnnnn"


@given(
    st.text(alphabet="ACGTN", min_size=1, max_size=400),
    st.integers(1, 20),
    st.integers(1, 20),
)
def test_tokens_tile_the_padded_sequence(sequence: str, k: int, stride: int) -> None:
    tokens = kmers(sequence, k, stride)
    padded = sequence.lower().ljust(padded_length(len(sequence), k), "n")
    assert len(padded) % k == 0
    assert all(len(token) == k for token in tokens)
    for index, token in enumerate(tokens):
        assert padded[index * stride : index * stride + k] == token
    # the last token reaches the end of the padded sequence minus less than one stride
    assert len(padded) - (len(tokens) - 1) * stride - k < stride
    spans = token_spans(len(sequence), k, stride)
    assert len(spans) == len(tokens)
    assert (spans[:, 0] == [i * stride for i in range(len(tokens))]).all()
    assert (spans[:, 1] <= len(sequence) - 1).all() or len(sequence) == 0
