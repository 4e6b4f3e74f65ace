"""Input sources: text, FASTA and dataset directories, streamed in batches with their counts."""

from __future__ import annotations

import gzip
import lzma
import os
from pathlib import Path

import pandas as pd
import pytest

from bertgeom.capture.input_labels import UNLABELLED, read_input_labels
from bertgeom.capture.kmer_sources import DatasetSource, FastaSource
from bertgeom.capture.loading import LoadedModel, load_model
from bertgeom.capture.tests.tiny_models import POSITIONS, WORDS, save_tiny_classifier
from bertgeom.capture.text_source import TextSource
from bertgeom.errors import InputError, ModelError
from bertgeom.genomics.fasta import write_fasta
from bertgeom.genomics.kmers import kmers
from bertgeom.genomics.reference import reference_genome
from bertgeom.genomics.synthetic import synthesize_table

CLASSES = ("Alpha", "Delta")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(save_tiny_classifier(tmp_path_factory.mktemp("clf") / "m", CLASSES))


def test_text_batches_ids_truncation_and_blank_lines(
    tmp_path: Path, loaded_models: dict[str, LoadedModel]
) -> None:
    long_line = " ".join(WORDS * 3)  # more words than the model's 40 positions
    path = tmp_path / "inputs.txt"
    path.write_text(f"the cat sat\n\n  \ndog ran to the park\n{long_line}\na red bird\n")
    source = TextSource(loaded_models["bert"], path)
    assert source.expected_inputs() == 4
    assert source.longest_hint() == POSITIONS
    batches = list(source.batches(3))
    assert [len(b) for b in batches] == [3, 1]
    assert batches[0].input_ids == ("1", "4", "5") and batches[1].input_ids == ("6",)
    assert batches[0].labels is None
    assert list(batches[1].indices) == [3]
    mask = batches[0].encoding["attention_mask"]
    assert mask.shape == (3, POSITIONS) and int(mask[0].sum()) == 5  # [CLS] 3 words [SEP]
    assert source.stats.truncated == 1 and source.stats.analysed == 4
    assert source.stats.read == 4


def test_text_labels_and_limits(tmp_path: Path, loaded_models: dict[str, LoadedModel]) -> None:
    path = tmp_path / "inputs.txt"
    path.write_text("the cat\na dog\nthe big bird\nred tree\n")
    labels = tmp_path / "labels.tsv"
    labels.write_text("input_id\tlabel\n1\tanimal\n2\tanimal\n4\tplant\n")
    source = TextSource(
        loaded_models["roberta"],
        path,
        labels=read_input_labels(labels),
        max_inputs=3,
        max_length=4,
    )
    assert source.declared_classes == ["animal", "plant"]
    batches = list(source.batches(8))
    assert batches[0].labels == ("animal", "animal", UNLABELLED)
    assert source.stats.unlabelled == 1 and source.stats.analysed == 3
    assert batches[0].encoding["input_ids"].shape[1] == 4
    assert source.stats.truncated == 1  # "the big bird": 5 tokens


def test_text_errors(tmp_path: Path, loaded_models: dict[str, LoadedModel]) -> None:
    loaded = loaded_models["bert"]
    with pytest.raises(InputError, match="no such file"):
        TextSource(loaded, tmp_path / "absent.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InputError, match="empty"):
        TextSource(loaded, tmp_path / "empty.txt")
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(InputError, match="empty"):
        TextSource(loaded, tmp_path / "blank.txt")
    (tmp_path / "bad.tsv").write_text("id\tclass\n1\tx\n")
    with pytest.raises(InputError, match="input_id"):
        read_input_labels(tmp_path / "bad.tsv")
    (tmp_path / "ok.txt").write_text("the cat\n")
    with pytest.raises(InputError, match="batch-size"):
        list(TextSource(loaded, tmp_path / "ok.txt").batches(0))
    with pytest.raises(InputError, match="max-length"):
        TextSource(loaded, tmp_path / "ok.txt", max_length=2)


def test_fasta_needs_a_bertgeom_classifier(
    tmp_path: Path, loaded_models: dict[str, LoadedModel]
) -> None:
    path = tmp_path / "x.fa"
    write_fasta([("a", "ACGT" * 30)], path)
    with pytest.raises(ModelError, match="bertgeom variant classifier"):
        FastaSource(loaded_models["bert"], path)


def test_fasta_spikes_with_qc_failures_skipped(tmp_path: Path, classifier: LoadedModel) -> None:
    table = synthesize_table(1, seed=3, classes=CLASSES)
    records = [(f"s{i}", str(seq)) for i, seq in enumerate(table["sequence"])]
    records.insert(1, ("broken", "ACGTJJJJ"))
    write_fasta(records, tmp_path / "spikes.fa")
    labels = tmp_path / "labels.tsv"
    pd.DataFrame({"record_id": ["s0", "s1"], "label": list(table["label"])}).to_csv(
        labels, sep="\t", index=False
    )
    source = FastaSource(classifier, tmp_path / "spikes.fa", labels=read_input_labels(labels))
    batches = list(source.batches(8))
    assert batches[0].input_ids == ("s0", "s1")
    assert batches[0].labels == tuple(table["label"])
    assert dict(source.stats.skipped) == {"invalid_characters": 1}
    assert source.stats.read == 3
    longest = max(len(kmers(sequence, 12, 9)) for sequence in table["sequence"])
    assert batches[0].encoding["input_ids"].shape[1] == longest + 2  # [CLS] k-mers [SEP]


def test_dataset_directory_with_split(tmp_path: Path, classifier: LoadedModel) -> None:
    table = synthesize_table(2, seed=4, classes=CLASSES)
    table["sequence_id"] = [f"q{i}" for i in range(len(table))]
    table["split"] = ["train", "test"] * 2
    table.to_parquet(tmp_path / "dataset.parquet")
    source = DatasetSource(classifier, tmp_path, split="test", max_length=64)
    assert source.expected_inputs() == 2 and source.declared_classes == list(CLASSES)
    batches = list(source.batches(5))
    assert batches[0].input_ids == ("q1", "q3")
    assert batches[0].labels == tuple(table["label"][[1, 3]])
    assert source.stats.truncated == 2
    with pytest.raises(InputError, match="no split 'nope'"):
        DatasetSource(classifier, tmp_path, split="nope")
    with pytest.raises(InputError, match="dataset directory not found"):
        DatasetSource(classifier, tmp_path / "absent")
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match=r"no dataset\.parquet"):
        DatasetSource(classifier, tmp_path / "other")


def test_fasta_without_a_spike_is_skipped_and_counted(
    tmp_path: Path, classifier: LoadedModel
) -> None:
    """A genome whose spike is deleted with its flanks (it once raised inside alignment and
    ended the run) is skipped with its status, like any record without a usable spike."""
    genome = reference_genome()
    table = synthesize_table(1, seed=3, classes=CLASSES)
    records = [(f"s{i}", str(seq)) for i, seq in enumerate(table["sequence"])]
    records.insert(1, ("spikeless", genome[:21500] + genome[25400:]))
    write_fasta(records, tmp_path / "genomes.fa")
    source = FastaSource(classifier, tmp_path / "genomes.fa", spike_layouts=True)
    batches = list(source.batches(8))
    assert batches[0].input_ids == ("s0", "s1")
    assert dict(source.stats.skipped) == {"no_alignment": 1}
    assert source.stats.read == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", r"not text \(binary content: line 1 is not UTF-8"),
        (gzip.compress(b"the cat\n"), r"not text \(gzip-compressed; decompress it first\)"),
        (lzma.compress(b"the cat\n"), r"not text \(xz-compressed"),
        (b"PK\x03\x04zip", r"not text \(zip-compressed"),
        (b"the cat\nthe d\xf6g\n", "line 2 is not UTF-8"),
    ],
)
def test_text_refuses_binary_and_compressed_files(
    tmp_path: Path, loaded_models: dict[str, LoadedModel], content: bytes, message: str
) -> None:
    path = tmp_path / "inputs.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        TextSource(loaded_models["bert"], path)


def test_text_with_a_byte_order_mark_and_a_pipe(
    tmp_path: Path, loaded_models: dict[str, LoadedModel]
) -> None:
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_text("the cat\n")
    marked.write_bytes("\ufeffthe cat\n".encode())
    encoded = [
        next(TextSource(loaded_models["bert"], path).batches(4)).encoding["input_ids"]
        for path in (plain, marked)
    ]
    assert encoded[0].tolist() == encoded[1].tolist()  # "the", not an unknown "\ufeffthe"
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        TextSource(loaded_models["bert"], fifo)


def test_labels_that_name_no_input_are_refused_and_partial_ones_counted(
    tmp_path: Path, loaded_models: dict[str, LoadedModel]
) -> None:
    path = tmp_path / "inputs.txt"
    path.write_text("the cat\n\na dog\n")
    labels = tmp_path / "labels.tsv"
    labels.write_text("input_id\tlabel\nrecord7\tanimal\nrecord8\tanimal\n")
    with pytest.raises(InputError, match=r"none of the 2 ids of --labels \(e\.g\. 'record7'\)"):
        TextSource(loaded_models["bert"], path, labels=read_input_labels(labels))
    labels.write_text("input_id\tlabel\n1\tanimal\n3\tanimal\n2\tanimal\n9\tanimal\n")
    source = TextSource(loaded_models["bert"], path, labels=read_input_labels(labels))
    assert source.stats.extra["labels_unmatched"] == 2  # line 2 is blank, line 9 absent
    assert source.stats.to_json()["labels_unmatched"] == 2


def test_fasta_labels_that_name_no_record_are_refused(
    tmp_path: Path, classifier: LoadedModel
) -> None:
    write_fasta([("s0", reference_genome())], tmp_path / "g.fa")
    labels = tmp_path / "labels.tsv"
    labels.write_text("record_id\tlabel\nS0\tAlpha\n")
    with pytest.raises(InputError, match="an input id is the record id"):
        FastaSource(classifier, tmp_path / "g.fa", labels=read_input_labels(labels))


def test_input_labels_with_two_classes_for_one_id_are_refused(tmp_path: Path) -> None:
    labels = tmp_path / "labels.tsv"
    labels.write_text("input_id\tlabel\n1\tanimal\n1\tplant\n2\tplant\n2\tplant\n")
    with pytest.raises(InputError, match=r"1 input_ids have more than one label: '1'"):
        read_input_labels(labels)
