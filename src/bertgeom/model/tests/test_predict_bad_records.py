"""One bad record never stops a batch: predict gives every record a row, in input order."""

from __future__ import annotations

import gzip
import io
import os
import sys
from itertools import islice
from pathlib import Path

import pytest

from bertgeom.errors import InputError
from bertgeom.genomics.fasta import FastaRecord, read_fasta
from bertgeom.genomics.reference import data_path, reference_genome
from bertgeom.model.predict import predict_records
from bertgeom.model.storage import load_classifier
from bertgeom.scale.cluster import ClusterSpec
from bertgeom.scale.predict import predict_on_dask


def test_a_genome_without_its_spike_gets_a_hard_status_and_the_others_their_calls() -> None:
    """The genome with S and its flanks deleted once raised inside alignment and took the
    whole batch (200 good genomes) down with it."""
    good = list(islice(read_fasta(data_path("genomes_ncbi.fasta.xz")), 4))
    genome = reference_genome()
    spikeless = FastaRecord("spikeless", "spikeless", genome[:21500] + genome[25400:], 2)
    records = [*good[:2], spikeless, *good[2:]]
    table = predict_records(records, load_classifier(), chunk_size=2)
    assert list(table["record_id"]) == [record.record_id for record in records]
    bad = table.set_index("record_id").loc["spikeless"]
    assert bad["status"] == "no_alignment"
    assert bad["predicted_class"] == ""
    others = table[table["record_id"] != "spikeless"]
    assert (others["predicted_class"] != "").all()
    assert others["status"].isin(["ok", "many_N", "spike_incomplete"]).all()


def test_predict_reads_standard_input_as_a_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--fasta -``: the records come from standard input, read once, in order."""
    genome = reference_genome()
    text = f">first\n{genome}\n>second\n{genome[:9000]}\n"
    stream = io.BufferedReader(io.BytesIO(gzip.compress(text.encode())))  # type: ignore[arg-type]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(stream))
    table = predict_records(read_fasta("-"), load_classifier())
    assert list(table["record_id"]) == ["first", "second"]
    assert list(table["status"]) == ["ok", "no_alignment"]


def test_dask_refuses_a_stream_it_cannot_shard(tmp_path: Path) -> None:
    fifo = tmp_path / "genomes.fa"
    os.mkfifo(fifo)
    for fasta in (Path("-"), fifo):
        with pytest.raises(InputError, match="need a FASTA file that the workers can open"):
            predict_on_dask(fasta, load_classifier(), ClusterSpec(None, 1))
