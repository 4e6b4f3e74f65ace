"""Where a command may write: new paths and its own earlier outputs only."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertgeom.errors import InputError
from bertgeom.outputs import (
    DEMO,
    MODEL,
    RESULTS,
    check_output_directory,
    check_output_file,
    starts_with,
)


def results_directory(path: Path) -> Path:
    (path / "arrays").mkdir(parents=True)
    (path / "manifest.json").write_text("{}")
    (path / "heads.parquet").write_bytes(b"PAR1")
    return path


def test_new_empty_and_own_directories_are_accepted(tmp_path: Path) -> None:
    check_output_directory(tmp_path / "new" / "deeper", RESULTS)
    (tmp_path / "empty").mkdir()
    check_output_directory(tmp_path / "empty", RESULTS)
    check_output_directory(results_directory(tmp_path / "results"), RESULTS)


def test_a_directory_with_a_users_file_is_refused_unless_overwrite(tmp_path: Path) -> None:
    results = results_directory(tmp_path / "results")
    (results / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"holds notes.txt.*--overwrite"):
        check_output_directory(results, RESULTS)
    check_output_directory(results, RESULTS, overwrite=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "a").write_text("")
    with pytest.raises(InputError, match="not a model directory"):
        check_output_directory(other, MODEL)


def test_a_marker_without_its_kind_is_not_enough(tmp_path: Path) -> None:
    """A directory is the kind's own only when every entry is a name the kind writes."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "train.py").write_text("")
    with pytest.raises(InputError, match=r"train\.py"):
        check_output_directory(model, MODEL)


def test_inner_directories_must_be_of_their_kind(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    (demo / "model").mkdir(parents=True)
    (demo / "model" / "config.json").write_text("{}")
    (demo / "metrics.json").write_text("{}")
    results_directory(demo / "analysis")
    check_output_directory(demo, DEMO)
    (demo / "model" / "thesis.tex").write_text("")
    with pytest.raises(InputError, match="holds model"):
        check_output_directory(demo, DEMO)


def test_an_output_that_is_or_holds_an_input_is_refused_even_with_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.parquet").write_bytes(b"")
    for out in (data, tmp_path, Path(".")):
        with pytest.raises(InputError, match="input"):
            check_output_directory(
                out, RESULTS, inputs=[Path("data/dataset.parquet")], overwrite=True
            )
    with pytest.raises(InputError, match="is also an input"):
        check_output_file(data / "dataset.parquet", inputs=[data / "dataset.parquet"])


def test_files_and_parents_that_are_files(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InputError, match="is a file, not a directory"):
        check_output_directory(afile / "sub", RESULTS)
    with pytest.raises(InputError, match="is a file, not a directory"):
        check_output_file(afile / "calls.tsv")
    with pytest.raises(InputError, match="not a directory"):
        check_output_directory(afile, RESULTS)
    with pytest.raises(InputError, match="is a directory"):
        check_output_file(tmp_path)


def test_an_existing_file_is_replaced_only_when_recognised(tmp_path: Path) -> None:
    calls = tmp_path / "calls.tsv"
    calls.write_text("record_id\tstatus\tqc_flags\n")
    check_output_file(calls, recognise=starts_with(b"record_id\tstatus\t"))
    genomes = tmp_path / "genomes.fa"
    genomes.write_text(">a\nACGT\n")
    with pytest.raises(InputError, match="not an output bertgeom wrote"):
        check_output_file(genomes, recognise=starts_with(b"record_id\tstatus\t"))
    check_output_file(genomes, overwrite=True)
    (tmp_path / "empty.tsv").write_text("")
    check_output_file(tmp_path / "empty.tsv")


def test_what_lies_inside_an_input_is_replaced_only_when_recognised(tmp_path: Path) -> None:
    """A model's checkpoint, or a table of the results a report reads, is part of that input:
    ``--overwrite`` may not replace it (an earlier output of the same kind inside may go)."""
    model = tmp_path / "model"
    checkpoint = model / "checkpoints" / "step-0"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    with pytest.raises(InputError, match=r"inside an input.*even with --overwrite"):
        check_output_directory(checkpoint, RESULTS, inputs=[model], overwrite=True)
    check_output_directory(model / "analysis", RESULTS, inputs=[model], overwrite=True)
    check_output_directory(results_directory(model / "old"), RESULTS, inputs=[model])
    check_output_directory(checkpoint, RESULTS, overwrite=True)  # not an input: the user's call
    results = results_directory(tmp_path / "results")
    page = starts_with(b"<!DOCTYPE html>")
    with pytest.raises(InputError, match=r"inside an input.*even with --overwrite"):
        check_output_file(
            results / "heads.parquet", recognise=page, inputs=[results], overwrite=True
        )
    (results / "report.html").write_text("<!DOCTYPE html><p>an earlier report</p>")
    check_output_file(results / "report.html", recognise=page, inputs=[results], overwrite=True)
