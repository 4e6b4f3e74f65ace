"""Alignment in worker processes gives the same table, in the same order, as in-process;
the forward pass's torch threads beside them."""

from __future__ import annotations

import multiprocessing
import os
import signal
from itertools import islice

import pandas as pd
import pytest
import torch

from bertgeom.errors import BertgeomError
from bertgeom.genomics.fasta import read_fasta
from bertgeom.genomics.parallel import spike_extractor
from bertgeom.genomics.reference import data_path
from bertgeom.model.predict import forward_threads, predict_records, torch_threads
from bertgeom.model.storage import load_classifier


def test_workers_give_the_in_process_table() -> None:
    records = list(islice(read_fasta(data_path("genomes_ncbi.fasta.xz")), 120))
    classifier = load_classifier()
    threads = torch.get_num_threads()
    alone = predict_records(records, classifier, chunk_size=25)
    pooled = predict_records(records, classifier, chunk_size=25, workers=2)
    assert list(pooled["record_id"]) == [record.record_id for record in records]
    pd.testing.assert_frame_equal(alone, pooled)
    with spike_extractor(2, eager=True) as submit:  # workers from the first chunk on
        eager = predict_records(records, classifier, chunk_size=25, workers=2, extractor=submit)
    pd.testing.assert_frame_equal(alone, eager)
    assert torch.get_num_threads() == threads, "the forward pass's threads are restored"


def test_forward_threads_leave_the_workers_two_thirds_of_the_cores() -> None:
    assert forward_threads(1) == torch.get_num_threads()  # in-process: torch's own choice
    assert [forward_threads(cores, cores) for cores in (2, 3, 4, 16)] == [1, 1, 1, 5]


def test_torch_threads_restores_the_previous_number() -> None:
    previous = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == previous


def test_a_killed_worker_stops_the_run_with_one_line_instead_of_hanging() -> None:
    """multiprocessing.Pool waited forever for the chunk of a worker the system killed."""
    records = list(islice(read_fasta(data_path("genomes_ncbi.fasta.xz")), 200))
    with spike_extractor(2, eager=True) as submit:
        submit(records[:2])()  # the workers are up
        pending = submit(records)
        worker = multiprocessing.active_children()[0]
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        with pytest.raises(BertgeomError, match="alignment worker process was killed"):
            pending()
