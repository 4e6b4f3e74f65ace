"""Labels are checked: unknown classes, conflicting ids and unmatched records are said, never
silently dropped (``data prepare --labels`` and the reader ``analyze --labels`` shares)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from bertgeom.cli.main import app
from bertgeom.errors import InputError
from bertgeom.genomics.dataset import LabelMatch, read_labels, real_spikes
from bertgeom.genomics.fasta import write_fasta
from bertgeom.genomics.labels import read_label_table, suggestion
from bertgeom.genomics.reference import reference_genome, reference_spike


def write_labels(path: Path, rows: list[tuple[str, str]], prefix: bytes = b"") -> Path:
    text = "record_id\tlabel\n" + "".join(f"{rid}\t{label}\n" for rid, label in rows)
    path.write_bytes(prefix + text.encode())
    return path


def one_line(output: str) -> str:
    """The CLI's output with rich's line wrapping undone."""
    return " ".join(output.split())


def test_unknown_labels_are_refused_with_counts_and_suggestions(tmp_path: Path) -> None:
    path = write_labels(
        tmp_path / "labels.tsv",
        [("a", "Zeta"), ("b", "Zeta"), ("c", "alpha"), ("d", "Delta"), ("e", "Omikron")],
    )
    with pytest.raises(InputError) as raised:
        read_labels(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: 4 records have labels that are not a class: ")
    assert "'Zeta' (2 records)" in message
    assert "'alpha' (1 record; did you mean 'Alpha'?)" in message
    assert "'Omikron' (1 record; did you mean 'Omicron'?)" in message
    assert "pre-VOC, Alpha" in message and "other-VOI, disputed" in message


def test_labels_outside_the_classes_that_data_split_keeps_are_accepted(tmp_path: Path) -> None:
    """``other-VOI`` and ``disputed`` go to outside.parquet: they are labels, not mistakes."""
    rows = [("a", "other-VOI"), ("b", "disputed"), ("c", "Lambda"), ("d", "pre-VOC")]
    assert read_labels(write_labels(tmp_path / "labels.tsv", rows)) == dict(rows)


def test_conflicting_ids_are_refused_and_identical_repeats_counted_once(tmp_path: Path) -> None:
    rows = [("a", "Alpha"), ("a", "Alpha"), ("b", "Delta")]
    assert read_labels(write_labels(tmp_path / "same.tsv", rows)) == {"a": "Alpha", "b": "Delta"}
    conflicting = write_labels(tmp_path / "conflict.tsv", [*rows, ("b", "Gamma")])
    with pytest.raises(InputError, match=r"1 record_ids have more than one label: 'b' \("):
        read_labels(conflicting)


def test_byte_order_mark_empty_rows_and_bad_bytes(tmp_path: Path) -> None:
    bom = write_labels(tmp_path / "bom.tsv", [("a", "Alpha")], prefix=b"\xef\xbb\xbf")
    assert read_labels(bom) == {"a": "Alpha"}
    empty = write_labels(tmp_path / "empty.tsv", [("a", "Alpha"), ("b", "")])
    with pytest.raises(InputError, match="row 2 after the header has an empty record_id or label"):
        read_labels(empty)
    latin1 = tmp_path / "latin1.tsv"
    latin1.write_bytes("record_id\tlabel\na\tAlpha\nS\xe3o\tDelta\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.tsv: .*line 3 is not UTF-8"):
        read_label_table(latin1, ("record_id",))


def test_suggestion() -> None:
    assert suggestion("OMICRON", ["Omicron", "Delta"]) == "Omicron"
    assert suggestion("Zeta", ["Omicron", "Delta"]) is None


def test_real_spikes_count_unlabelled_records_and_unmatched_labels(tmp_path: Path) -> None:
    genome = reference_genome()
    fasta = tmp_path / "genomes.fa"
    spikeless = genome[:21500] + genome[25400:]
    write_fasta([("s1", reference_spike()), ("gone", spikeless), ("extra", "ACGT")], fasta)
    match = LabelMatch()
    labels = {"s1": "pre-VOC", "gone": "Alpha", "typo": "Delta", "other": "Beta"}
    table = real_spikes([fasta], labels, match)
    assert list(table["record_id"]) == ["s1", "gone"]  # the spikeless genome keeps its row
    assert list(table["status"]) == ["ok", "no_alignment"]
    assert (match.records, match.labelled, match.unlabelled) == (3, 2, 1)
    assert (match.labels, match.unmatched_labels) == (4, 2)


def test_data_prepare_says_what_did_not_match_and_refuses_unknown_labels(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    fasta = tmp_path / "genomes.fa"
    write_fasta([("s1", reference_spike()), ("s2", reference_spike()), ("extra", "ACGT")], fasta)
    labels = write_labels(tmp_path / "labels.tsv", [("s1", "pre-VOC"), ("s2", "Alpha")])
    out = tmp_path / "data"
    result = runner.invoke(
        app, ["data", "prepare", "--out", str(out), "--fasta", str(fasta), "--labels", str(labels)]
    )
    assert result.exit_code == 0, result.output
    assert "1 FASTA record without a label (skipped)" in one_line(result.output)
    assert len(pd.read_parquet(out / "real.parquet")) == 2
    write_labels(labels, [("s1", "pre-VOC"), ("s2", "alpha"), ("nowhere", "Alpha")])
    result = runner.invoke(
        app, ["data", "prepare", "--out", str(out), "--fasta", str(fasta), "--labels", str(labels)]
    )
    assert result.exit_code == 1
    assert "did you mean 'Alpha'?" in one_line(result.output)
    write_labels(labels, [("none", "Alpha")])
    result = runner.invoke(
        app, ["data", "prepare", "--out", str(out), "--fasta", str(fasta), "--labels", str(labels)]
    )
    assert result.exit_code == 1
    assert "none of the 1 record ids" in one_line(result.output)
    assert "3 FASTA records" in one_line(result.output)
