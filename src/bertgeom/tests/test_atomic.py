"""Atomic outputs: umask-respecting modes, and nothing left behind on failure."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bertgeom.atomic import _umask, atomic_directory, atomic_file


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=lambda m: f"umask{m:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_umask_helper_reads_current_umask(umask: int) -> None:
    assert _umask() == umask
    assert os.umask(umask) == umask  # the helper left it unchanged


def test_atomic_file_mode_matches_plain_open(tmp_path: Path, umask: int) -> None:
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as handle:
        handle.write("x")
    out = tmp_path / "report.html"
    with atomic_file(out) as partial:
        partial.write_text("x")
    assert _mode(out) == _mode(plain) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt", "report.html"]


def test_atomic_file_mode_when_replacing_existing(tmp_path: Path, umask: int) -> None:
    out = tmp_path / "metrics.json"
    out.write_text("old")
    out.chmod(0o600)
    with atomic_file(out) as partial:
        partial.write_text("new")
    assert out.read_text() == "new"
    assert _mode(out) == 0o666 & ~umask


def test_atomic_directory_mode_matches_plain_mkdir(tmp_path: Path, umask: int) -> None:
    plain = tmp_path / "plain"
    os.mkdir(plain)
    (plain / "f.txt").write_text("x")
    out = tmp_path / "model"
    with atomic_directory(out) as staging:
        (staging / "f.txt").write_text("x")
        (staging / "sub").mkdir()
    assert _mode(out) == _mode(plain) == 0o777 & ~umask
    assert _mode(out / "f.txt") == _mode(plain / "f.txt") == 0o666 & ~umask
    assert _mode(out / "sub") == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "plain"]


def test_atomic_directory_replaces_existing(tmp_path: Path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with atomic_directory(out) as staging:
        (staging / "fresh.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["fresh.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["results"]


def test_atomic_file_failure_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    with pytest.raises(RuntimeError), atomic_file(out) as partial:
        partial.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_file_failure_keeps_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(out) as partial:
        partial.write_text("half")
        raise RuntimeError("boom")
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_atomic_directory_failure_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_directory(out) as staging:
        (staging / "weights.bin").write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_failure_keeps_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "weights.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_directory(out) as staging:
        (staging / "weights.bin").write_bytes(b"half")
        raise RuntimeError("boom")
    assert (out / "weights.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_umask_helper_without_proc(monkeypatch: pytest.MonkeyPatch, umask: int) -> None:
    def no_proc(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError(args[0])

    monkeypatch.setattr("bertgeom.atomic.open", no_proc, raising=False)
    assert _umask() == umask
    assert os.umask(umask) == umask


def test_outputs_through_a_link_replace_its_target_and_keep_the_link(tmp_path: Path) -> None:
    """A results directory or a table reached through a symbolic link is rewritten where the
    link points (rmtree refuses a link, and replacing the link would leave the target stale)."""
    (tmp_path / "scratch" / "results").mkdir(parents=True)
    (tmp_path / "scratch" / "results" / "old.txt").write_text("old")
    link = tmp_path / "results"
    link.symlink_to(tmp_path / "scratch" / "results")
    with atomic_directory(link) as staging:
        (staging / "new.txt").write_text("new")
    assert link.is_symlink()
    assert sorted(p.name for p in link.iterdir()) == ["new.txt"]
    (tmp_path / "calls.tsv").write_text("old")
    table = tmp_path / "table-link.tsv"
    table.symlink_to(tmp_path / "calls.tsv")
    with atomic_file(table) as partial:
        partial.write_text("new")
    assert table.is_symlink() and (tmp_path / "calls.tsv").read_text() == "new"
