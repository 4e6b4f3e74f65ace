"""``bertgeom report`` end to end on a real analysis, an over-training and an over-seeds directory,
``bertgeom report A B`` on two results directories, and their one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertgeom.cli.main import app
from bertgeom.report.build import OVER_SEEDS_SECTION_IDS, OVER_TRAINING_SECTION_IDS, SECTION_IDS
from bertgeom.report.tests.analysed import analyse_tiny_classifier
from bertgeom.report.tests.fabricated import write_fabricated_results
from bertgeom.report.tests.fabricated_seeds import write_fabricated_over_seeds
from bertgeom.report.tests.fabricated_training import write_fabricated_over_training

runner = CliRunner()


def run(*arguments: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, ["report", *(str(a) for a in arguments)])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return analyse_tiny_classifier(tmp_path_factory.mktemp("analysed"))


def test_report_of_an_analysis(results: Path, tmp_path: Path) -> None:
    code, output = run(results)
    assert code == 0, output
    default = results / "report.html"
    assert default.is_file() and f"-> {default}" in output and "figures" in output
    html = default.read_text()
    assert all(f'<section id="{section}">' in html for section in SECTION_IDS)
    out = tmp_path / "deep" / "r.html"
    code, output = run(results, "--out", out)
    assert code == 0 and out.read_text().count("<figure>") == html.count("<figure>")
    assert "warning" not in output


def test_errors_are_one_line_and_write_nothing(results: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("manifest.json", "heads.parquet"):
        (broken / name).write_bytes((results / name).read_bytes())
    (broken / "layers.parquet").write_text("not parquet")
    bad_json = tmp_path / "bad-json"
    bad_json.mkdir()
    (bad_json / "manifest.json").write_text("{")
    (bad_json / "heads.parquet").write_bytes((results / "heads.parquet").read_bytes())
    cases = [
        ([tmp_path / "absent"], "no such results directory"),
        ([tmp_path / "file.txt"], "not a directory"),
        ([tmp_path / "empty"], "not a results directory"),
        ([broken], "cannot be read"),
        ([bad_json], "cannot be read"),
        ([results, "--out", tmp_path], "is a directory"),
    ]
    for arguments, message in cases:
        code, output = run(*arguments)
        assert code == 1, (arguments, output)
        assert message in output and "Traceback" not in output, (arguments, output)
        assert output.strip().count("\n") == 0, output
    assert not list(tmp_path.rglob("*.html")) and not list(tmp_path.rglob(".*partial"))


def test_report_a_b_compares_two_results_directories(results: Path, tmp_path: Path) -> None:
    fabricated = write_fabricated_results(tmp_path / "fabricated", control=False)
    code, output = run(results, fabricated)
    assert code == 0, output
    default = results / "compare-fabricated.html"
    assert default.is_file() and f"-> {default}" in output
    html = default.read_text()
    assert html.index('<section id="findings">') < html.index('<section id="overview">')
    assert "<h3>results</h3>" in html and "<h3>fabricated</h3>" in html
    default.unlink()


def test_report_a_b_errors_are_one_line(results: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cases = [
        ([results, tmp_path / "absent"], "no such results directory"),
        ([results, tmp_path / "empty"], "not a results directory"),
        ([tmp_path / "absent", results], "no such results directory"),
        ([results, results, "--out", tmp_path], "is a directory"),
    ]
    for arguments, message in cases:
        code, output = run(*arguments)
        assert code == 1, (arguments, output)
        assert message in output and "Traceback" not in output, (arguments, output)
        assert output.strip().count("\n") == 0, output
    assert not list(results.glob("compare-*")) and not list(tmp_path.rglob("*.html"))


def test_report_of_an_over_training_directory(results: Path, tmp_path: Path) -> None:
    over = write_fabricated_over_training(tmp_path / "over")
    code, output = run(over)
    assert code == 0, output
    default = over / "report.html"
    assert default.is_file() and f"-> {default}" in output and "warning" not in output
    html = default.read_text()
    assert all(f'<section id="{section}">' in html for section in OVER_TRAINING_SECTION_IDS)
    code, output = run(over)  # its own report is replaced, and the directory stays one
    assert code == 0, output
    # an over-training directory is not one side of a comparison
    for arguments in ([over, results], [results, over]):
        code, output = run(*arguments)
        assert code == 1 and "an over-training directory, not a results directory" in output
        assert output.strip().count("\n") == 0, output
    assert not list(results.glob("compare-*"))


def test_report_of_an_over_seeds_directory(results: Path, tmp_path: Path) -> None:
    seeds = write_fabricated_over_seeds(tmp_path / "seeds")
    code, output = run(seeds)
    assert code == 0, output
    default = seeds / "report.html"
    assert default.is_file() and f"-> {default}" in output and "warning" not in output
    html = default.read_text()
    assert all(f'<section id="{section}">' in html for section in OVER_SEEDS_SECTION_IDS)
    assert '<section id="over-training">' not in html
    code, output = run(seeds)  # its own report is replaced, and the directory stays one
    assert code == 0, output
    # an over-seeds directory is not one side of a comparison
    for arguments in ([seeds, results], [results, seeds]):
        code, output = run(*arguments)
        assert code == 1 and "an over-seeds directory, not a results directory" in output
        assert output.strip().count("\n") == 0, output
    assert not list(results.glob("compare-*"))


def test_report_of_results_with_their_over_training(results: Path, tmp_path: Path) -> None:
    """``report RESULTS --over-training OVER``: the demo's report, from the command line."""
    over = write_fabricated_over_training(tmp_path / "over")
    out = tmp_path / "with-training.html"
    code, output = run(results, "--over-training", over, "--out", out)
    assert code == 0 and "warning" not in output, output
    html = out.read_text()
    ids = [f'<section id="{section}">' for section in OVER_TRAINING_SECTION_IDS]
    assert all(section in html for section in ids)
    assert html.index(ids[0]) < html.index(ids[1]) < html.index(ids[2])
    # the wrong kind of directory, or a comparison with it: one line, nothing written
    wrong_kind = [results, "--over-training", results, "--out", tmp_path / "a.html"]
    comparison = [results, results, "--over-training", over, "--out", tmp_path / "b.html"]
    for arguments, message in (
        (wrong_kind, "not an over-training directory"),
        (comparison, "not a comparison"),
    ):
        code, output = run(*arguments)
        assert code == 1 and message in output, output
        assert output.strip().count("\n") == 0, output
    assert not (tmp_path / "a.html").exists() and not (tmp_path / "b.html").exists()
