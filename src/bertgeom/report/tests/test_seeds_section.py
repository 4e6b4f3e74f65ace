"""The report of an over-seeds directory: which headline numbers hold across seeds (planted
ones that do and do not), the section read from a fabricated over-seeds directory, and the
whole report built from it (the real one: ``tests/test_over_seeds.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from bertgeom.errors import InputError
from bertgeom.report.build import (
    OVER_SEEDS_SECTION_IDS,
    OVER_TRAINING_SECTION_IDS,
    SECTION_IDS,
    build_report_summary,
    read_results,
    section_ids,
)
from bertgeom.report.content import Bullets, Table
from bertgeom.report.over_seeds import (
    does_not_hold,
    holding,
    is_over_seeds,
    read_over_seeds,
)
from bertgeom.report.seeds_section import DOES_NOT_HOLD, FINDING_NAMES, HOLDS, over_seeds, where
from bertgeom.report.tests.fabricated import EMBEDDING_CONE, write_fabricated_results
from bertgeom.report.tests.fabricated_seeds import (
    HOLDING,
    NOT_HOLDING,
    SEEDS,
    write_fabricated_over_seeds,
)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fabricated_over_seeds(tmp_path_factory.mktemp("seeds") / "over")


def _row(**fields: object) -> pd.Series:
    base: dict[str, object] = {"kind": "numeric", "mean": 1.0, "std": 0.1, "agreement": 1.0}
    return pd.Series(base | fields)


def test_what_does_not_hold() -> None:
    assert not does_not_hold(_row())
    assert does_not_hold(_row(agreement=0.5))
    assert not does_not_hold(_row(agreement=2 / 3))  # 2 of 3 seeds: holds
    assert does_not_hold(_row(agreement=1 / 3))
    assert does_not_hold(_row(mean=-0.05, std=0.3))  # std above |mean|
    assert not does_not_hold(_row(mean=-0.5, std=0.3))
    assert not does_not_hold(_row(std=float("nan")))  # one seed
    assert not does_not_hold(_row(agreement=float("nan")))  # no seed has it
    # a layer's spread says nothing: only its agreement counts
    assert not does_not_hold(_row(kind="categorical", mean=0.5, std=3.0, agreement=1.0))
    assert does_not_hold(_row(kind="categorical", mean=0.5, std=0.0, agreement=0.5))
    table = pd.DataFrame([_row(), _row(agreement=0.5)])
    assert holding(table).tolist() == [True, False]


def test_the_names_are_those_analyze_writes() -> None:
    from bertgeom.pipeline import over_seeds as pipeline
    from bertgeom.report import over_seeds as report

    assert f"{pipeline.SEEDS_TABLE}.parquet" == report.SEEDS_PARQUET
    assert f"{pipeline.SEEDS_VALUES_TABLE}.parquet" == report.SEEDS_VALUES_PARQUET
    assert report.SEEDS_JSON == pipeline.SEEDS_RESULTS_MANIFEST
    assert report.SEEDS_DIRECTORY == pipeline.SEEDS_DIRECTORY


def _cells(table: Table, finding: str, layer: int, statistic: str) -> list[str]:
    found = [
        row
        for row in table.rows
        if row[:3] == [FINDING_NAMES[finding], where(finding, layer), statistic]
    ]
    assert len(found) == 1, (finding, layer, statistic)
    return found[0]


def test_the_planted_numbers_are_marked(seeded: Path) -> None:
    data = read_over_seeds(seeded, read_results)
    assert data.seeds == list(SEEDS) and data.first_directory == "seeds/seed-0"
    assert data.first.path.name == "seed-0"
    section = over_seeds(data)
    text = section.blocks[0]
    assert "3 seeds of one recipe (seeds 0, 1, 2)" in str(text)
    assert "compared by layer and rank, never by id" in str(text)
    table = next(block for block in section.blocks if isinstance(block, Table))
    assert len(table.rows) == len(data.table)
    for key in NOT_HOLDING:
        assert _cells(table, *key)[-1] == DOES_NOT_HOLD
    for key in HOLDING:
        assert _cells(table, *key)[-1] == HOLDS
    # the same value in every seed: a std of 0, not of the rounding of the mean
    assert _cells(table, "cone_index", -1, "cone.normalized_mean")[1:4] == [
        "embeddings",
        "cone.normalized_mean",
        f"{EMBEDDING_CONE[False]:.3g} ± 0",
    ]
    cone = _cells(table, "cone_index", 0, "cone.normalized_mean")
    assert cone[3:7] == ["-0.05 ± 0.3", "-0.25 to 0.3", "3", "2/3"]
    costliest = _cells(table, "ablation.costliest_layer", -1, "zero")
    assert costliest[1] == "model" and costliest[3] == "layer 0 (mode)"
    assert costliest[4:7] == ["0 to 1", "3", "1/3"]
    head = _cells(table, "ablation.costliest_head_layer", -1, "zero")
    assert head[3:7] == ["layer 1 (mode)", "0 to 1", "3", "2/3"]
    # the list names every planted number that does not hold, none that holds
    bullets = next(block for block in section.blocks if isinstance(block, Bullets))
    assert all(DOES_NOT_HOLD in item or item.startswith("...") for item in bullets.items)
    listed = " ".join(bullets.items)
    assert "token cone index I/n at layer 0 (cone.normalized_mean)" in listed
    assert "costliest layer to ablate (zero)" in listed
    assert "key-masking excess" not in listed
    assert "layer of the costliest head" not in listed
    assert len(section.figures) == 1 and section.missing == []


def test_report_of_an_over_seeds_directory(seeded: Path, tmp_path: Path) -> None:
    assert is_over_seeds(seeded) and section_ids(seeded) == OVER_SEEDS_SECTION_IDS
    seen: list[str] = []
    summary = build_report_summary(seeded, tmp_path / "report.html", seen.append)
    assert summary.problems == {}
    assert seen == list(OVER_SEEDS_SECTION_IDS) == ["findings", "over-seeds", *SECTION_IDS[1:]]
    assert "over-training" not in OVER_SEEDS_SECTION_IDS
    assert "over-seeds" not in OVER_TRAINING_SECTION_IDS + SECTION_IDS
    html = summary.path.read_text()
    assert re.findall(r'<section id="([^"]+)">', html) == list(OVER_SEEDS_SECTION_IDS)
    assert "bertgeom report over seeds: fabricated-seeds" in html
    assert "3 seeds (0, 1, 2)" in html
    assert "every other section shows the first seed, seed 0" in html
    section = html[html.index('<section id="over-seeds">') : html.index('<section id="overview">')]
    assert section.count("<figure>") == 1 and section.count("data:image/png;base64,") == 1
    assert DOES_NOT_HOLD in section and "never by id" in section
    assert summary.missing.get("over-seeds") is None


def test_without_seed_values_the_figure_says_so(seeded: Path, tmp_path: Path) -> None:
    data = read_over_seeds(seeded, read_results)
    data.values = data.values.iloc[0:0]
    section = over_seeds(data)
    assert section.figures == [] and len(section.missing) == 1
    # one seed: no spread, and nothing fails for its spread
    data.table = data.table.assign(std=float("nan"), agreement=1.0, n_seeds=1)
    table = next(block for block in over_seeds(data).blocks if isinstance(block, Table))
    assert {row[-1] for row in table.rows} == {HOLDS}


def test_broken_over_seeds_directories_are_one_line(seeded: Path, tmp_path: Path) -> None:
    only_json = tmp_path / "only-json"
    only_json.mkdir()
    (only_json / "seeds.json").write_text("{}")
    no_first = tmp_path / "no-first"
    no_first.mkdir()
    (no_first / "seeds.parquet").write_bytes((seeded / "seeds.parquet").read_bytes())
    (no_first / "seeds.json").write_text((seeded / "seeds.json").read_text())
    no_seeds = tmp_path / "no-seeds"
    no_seeds.mkdir()
    (no_seeds / "seeds.parquet").write_bytes((seeded / "seeds.parquet").read_bytes())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "seeds.parquet").write_text("not parquet")
    bad_json = tmp_path / "bad-json"
    bad_json.mkdir()
    (bad_json / "seeds.parquet").write_bytes((seeded / "seeds.parquet").read_bytes())
    (bad_json / "seeds.json").write_text("{")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    pd.DataFrame({"finding": ["x"]}).to_parquet(wrong / "seeds.parquet")
    for path, message in (
        (only_json, "without seeds.parquet"),
        (no_first, "no results directory of the first seed"),
        (no_seeds, "no seeds in seeds.json or seeds/"),
        (bad, "seeds.parquet cannot be read"),
        (bad_json, "seeds.json cannot be read"),
        (wrong, "not a seeds table (no column layer)"),
    ):
        with pytest.raises(InputError, match=re.escape(message)):
            build_report_summary(path)
    with pytest.raises(InputError, match="an over-seeds directory, not a results directory"):
        read_results(seeded)
    # a results directory is not taken for one
    results = write_fabricated_results(tmp_path / "results", control=False)
    assert not is_over_seeds(results) and section_ids(results) == SECTION_IDS
    assert not list(tmp_path.rglob("*.html"))
