"""Alignment in worker processes gives the same table, in the same order, as in-process."""

from __future__ import annotations

from itertools import islice

import pandas as pd

from bertgeom.genomics.fasta import read_fasta
from bertgeom.genomics.reference import data_path
from bertgeom.model.predict import predict_records
from bertgeom.model.storage import load_classifier


def test_workers_give_the_in_process_table() -> None:
    records = list(islice(read_fasta(data_path("genomes_ncbi.fasta.xz")), 120))
    classifier = load_classifier()
    alone = predict_records(records, classifier, chunk_size=25)
    pooled = predict_records(records, classifier, chunk_size=25, workers=2)
    assert list(pooled["record_id"]) == [record.record_id for record in records]
    pd.testing.assert_frame_equal(alone, pooled)
