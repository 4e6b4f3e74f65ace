"""``analyze`` gives, table for table and number for number, the stored reference
(``analysis_reference.py`` says what it holds and how to regenerate it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from analysis_reference import REFERENCE, compare, results_directories, run_case


@pytest.mark.parametrize("case", ["text", "spike"])
def test_analyze_equals_the_stored_reference(case: str, tmp_path: Path) -> None:
    out = run_case(case, tmp_path / case)
    directories = results_directories(out, case)
    stored = {path.parent.relative_to(REFERENCE).as_posix() for path in REFERENCE.rglob("*.json")}
    assert set(directories) == {name for name in stored if name.split("/")[0] == case}
    for name, directory in directories.items():
        compare(directory, REFERENCE / name)
