"""The report of an over-training directory: the milestones of training on planted curves, the
curves read from ``training.parquet``, and the whole report built from a fabricated
over-training directory (the real one: ``tests/test_over_training.py``)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from bertgeom.errors import InputError
from bertgeom.report.build import (
    OVER_TRAINING_SECTION_IDS,
    SECTION_IDS,
    build_report_summary,
    read_results,
    section_ids,
)
from bertgeom.report.content import Bullets, Table
from bertgeom.report.tests.fabricated import write_fabricated_results
from bertgeom.report.tests.fabricated_training import (
    LAST_CONE,
    LAYERS,
    PLANTED,
    STEPS,
    training_table,
    write_fabricated_over_training,
)
from bertgeom.report.training import (
    TRAINING_COLUMNS,
    Milestone,
    checkpoint_table,
    first_reaching,
    first_settled,
    first_step,
    first_within,
    gate_mix_curves,
    held_step,
    is_over_training,
    last_layer_curve,
    layer_curves,
    milestones,
    order_sentence,
    reaching,
    read_over_training,
    settled,
    within,
)


def curve(values: list[float], steps: list[int] | None = None) -> pd.Series:
    return pd.Series(values, index=steps or [0, 1, 2, 4, 8, 16][: len(values)], dtype=float)


def test_first_reaching_is_the_first_step_at_the_fraction_of_the_final_value() -> None:
    assert first_reaching(curve([0.1, 0.5, 0.89, 0.95, 0.9, 1.0])) == 4  # 0.95 >= 0.9
    assert first_reaching(curve([0.1, 0.5, 0.89, 0.95, 0.9, 1.0]), 0.5) == 1  # 0.5 of 1.0
    assert first_reaching(curve([0.2, 0.8]), 0.9) == 1
    assert first_reaching(curve([1.0, 0.2, 1.0])) == 0  # already there at the start
    # NaN ignored (no loss at step 0), the order is the steps', not the rows'
    assert first_reaching(curve([math.nan, 1.0, 0.1], [0, 8, 1])) == 8
    assert first_reaching(curve([0.1, -0.2])) is None  # a final value that is not positive
    assert first_reaching(curve([math.nan, math.nan])) is None
    assert first_reaching(pd.Series(dtype=float)) is None


def test_first_within_comes_from_above_or_below() -> None:
    falling = curve([1.0, 0.6, 0.34, 0.32, 0.3])  # within 10 % of 0.3: 0.27..0.33
    assert first_within(falling) == 4
    assert first_within(falling, 0.01) == 8
    rising = curve([0.1, 0.2, 0.28, 0.3, 0.3])
    assert first_within(rising) == 2
    assert first_within(rising, 0.5) == 1  # 0.15..0.45
    assert first_within(curve([0.5])) == 0
    # the first time, even when the curve leaves again
    assert first_within(curve([0.1, 0.3, 0.9, 0.3])) == 1
    assert first_within(pd.Series(dtype=float)) is None


def test_first_settled_is_the_first_mix_close_to_the_last_in_total_variation() -> None:
    mix = pd.DataFrame(
        {"open": [1.0, 0.5, 0.15, 0.05, 0.0], "closed": [0.0, 0.5, 0.85, 0.95, 1.0]},
        index=[0, 1, 2, 4, 8],
    )
    assert first_settled(mix) == 4  # distance 1, 0.5, 0.15, 0.05, 0
    assert first_settled(mix, 0.15) == 2
    assert first_settled(mix, 0.0) == 8
    assert first_settled(pd.DataFrame()) is None


def test_first_and_held_steps_of_a_curve_that_falls_back() -> None:
    # as the [CLS] probe of a real run: high on the random initial weights, down as the cone
    # collapses, then up for good (90 % of the final 0.88: 0.792)
    probe = curve([0.84, 0.85, 0.47, 0.66, 0.87, 0.88])
    meets = reaching(probe)
    assert meets.tolist() == [True, True, False, False, True, True]
    assert first_step(meets) == 0 and held_step(meets) == 8
    assert held_step(within(curve([0.3, 0.3, 0.9, 0.3]))) == 4  # steps 0, 1, 2, 4
    assert held_step(reaching(curve([0.5, 1.0]))) == 1
    assert held_step(pd.Series([True, False], index=[0, 1])) is None
    assert first_step(pd.Series(dtype=bool)) is None and held_step(pd.Series(dtype=bool)) is None
    mix = pd.DataFrame({"open": [0.0, 1.0, 0.0], "closed": [1.0, 0.0, 1.0]}, index=[0, 1, 2])
    assert settled(mix).tolist() == [True, False, True] and held_step(settled(mix)) == 2
    # in the section: the sentence says so, and a second order counts from the held steps
    training = training_table()
    dip = (training["metric"] == "cls.probe_accuracy") & (training["layer"] == LAYERS - 1)
    values = dict(zip(STEPS, [0.95, 0.95, 0.3, 0.3, 0.4, 0.95, 1.0, 1.0], strict=True))
    training.loc[dip, "value"] = training.loc[dip, "step"].map(values)
    found = {m.what: m for m in milestones(training)}
    probe_milestone = found["last layer's [CLS] probe accuracy"]
    assert (probe_milestone.step, probe_milestone.held) == (0, 16)
    assert order_sentence(list(found.values())).startswith(
        "Last layer's [CLS] probe accuracy (step 0)"
    )
    assert order_sentence(list(found.values()), held=True).startswith(
        "Last layer's gate mix (step 4) came first, then last layer's token cone index I/n "
        "(step 8), then last layer's [CLS] probe accuracy (step 16)"
    )


def test_the_milestones_of_planted_curves() -> None:
    training = training_table()
    found = milestones(training)
    assert {m.what: m.step for m in found} == PLANTED
    assert {m.what: m.held for m in found} == PLANTED  # none falls back
    cone = next(m for m in found if "cone" in m.what)
    assert cone.value == pytest.approx(0.86) and cone.final == pytest.approx(LAST_CONE[-1])
    assert cone.epoch == pytest.approx(8 / 16)
    gate = next(m for m in found if "gate" in m.what)
    assert "closed" in gate.rule and gate.value == pytest.approx(0.95) and gate.final == 1.0
    sentence = order_sentence(found)
    assert sentence == (
        "Last layer's gate mix (step 4) came first, then last layer's token cone index I/n "
        "(step 8), then last layer's [CLS] probe accuracy (step 16), then validation "
        "macro-F1 and last layer's [CLS] silhouette (step 32)."
    )
    # without layers rows (no global measures): macro-F1 and the gates only
    heads_only = milestones(training[training["table"] == "heads"])
    assert [m.what for m in heads_only] == ["validation macro-F1", "last layer's gate mix"]


def test_the_order_of_milestones() -> None:
    def at(what: str, step: int | None) -> Milestone:
        return Milestone(what, "rule", step, None, math.nan, 1.0)

    assert order_sentence([at("a", 3), at("b", None)]) is None
    assert order_sentence([at("a", 3), at("b", 3)]) == (
        "All came at the same checkpoint: a and b (step 3)."
    )
    assert order_sentence([at("b", 9), at("a", 2), at("c", 2)]) == (
        "A and c (step 2) came first together, then b (step 9)."
    )


def test_the_curves_of_the_training_table() -> None:
    training = training_table()
    assert list(training.columns) == list(TRAINING_COLUMNS)
    checkpoints = checkpoint_table(training)
    assert checkpoints.index.tolist() == list(STEPS)
    assert math.isnan(checkpoints.loc[0, "train_loss"])
    cone = layer_curves(training, "cone.normalized_mean")
    assert cone.index.tolist() == list(STEPS)
    assert (-1, "layer_output") in cone.columns and (LAYERS - 1, "layer_input") in cone.columns
    assert last_layer_curve(training, "cone.normalized_mean").tolist() == list(LAST_CONE)
    assert last_layer_curve(training, "no.such.metric").empty
    mix = gate_mix_curves(training)
    assert mix.loc[64, (LAYERS - 1, "closed")] == 1.0
    assert mix.loc[0, (0, "open")] == 0.5
    assert mix.T.groupby(level=0).sum().T.to_numpy() == pytest.approx(1.0)


def test_the_columns_are_those_analyze_writes() -> None:
    from bertgeom.analysis.over_training import TRAINING_SCHEMA

    assert list(TRAINING_COLUMNS) == TRAINING_SCHEMA.names


@pytest.fixture(scope="module")
def over(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fabricated_over_training(tmp_path_factory.mktemp("over") / "over")


def test_report_of_an_over_training_directory(over: Path, tmp_path: Path) -> None:
    assert is_over_training(over) and section_ids(over) == OVER_TRAINING_SECTION_IDS
    seen: list[str] = []
    summary = build_report_summary(over, tmp_path / "report.html", seen.append)
    assert summary.problems == {}
    assert (
        seen == list(OVER_TRAINING_SECTION_IDS) == ["findings", "over-training", *SECTION_IDS[1:]]
    )
    html = summary.path.read_text()
    assert re.findall(r'<section id="([^"]+)">', html) == list(OVER_TRAINING_SECTION_IDS)
    assert "bertgeom report over training: fabricated" in html
    assert "8 checkpoints, steps 0 to 64" in html
    assert "every other section shows the last checkpoint, step 64 (epoch 4)" in html
    section = html[
        html.index('<section id="over-training">') : html.index('<section id="overview">')
    ]
    assert section.count("<figure>") == 5 and section.count("data:image/png;base64,") == 5
    assert "came first" in section and "at step 8 (epoch 0.5)" in section
    assert summary.missing.get("over-training") is None


def test_the_section_blocks(over: Path) -> None:
    from bertgeom.report.training_section import over_training

    data = read_over_training(over, read_results)
    assert data.last_step == 64 and data.last.path.name == "step-64"
    section = over_training(data)
    bullets = next(b for b in section.blocks if isinstance(b, Bullets))
    assert len(bullets.items) == len(PLANTED) + 1
    table = next(b for b in section.blocks if isinstance(b, Table))
    assert [row[2] for row in table.rows] == [str(step) for step in PLANTED.values()]
    assert len(section.figures) == 5 and section.missing == []
    # without global measures: the curves that need them say so
    data.training = data.training[data.training["table"] == "heads"]
    section = over_training(data)
    assert len(section.figures) == 3 and len(section.missing) == 2


def test_broken_over_training_directories_are_one_line(over: Path, tmp_path: Path) -> None:
    only_json = tmp_path / "only-json"
    only_json.mkdir()
    (only_json / "training.json").write_text("{}")
    no_last = tmp_path / "no-last"
    no_last.mkdir()
    (no_last / "training.parquet").write_bytes((over / "training.parquet").read_bytes())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "training.parquet").write_text("not parquet")
    bad_json = tmp_path / "bad-json"
    bad_json.mkdir()
    (bad_json / "training.parquet").write_bytes((over / "training.parquet").read_bytes())
    (bad_json / "training.json").write_text("{")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    pd.DataFrame({"step": [0]}).to_parquet(wrong / "training.parquet")
    for path, message in (
        (only_json, "without training.parquet"),
        (no_last, "no results directory of the last checkpoint"),
        (bad, "training.parquet cannot be read"),
        (bad_json, "training.json cannot be read"),
        (wrong, "not a training table (no column epoch)"),
    ):
        with pytest.raises(InputError, match=re.escape(message)):
            build_report_summary(path)
    with pytest.raises(InputError, match="an over-training directory, not a results directory"):
        read_results(over)
    # a results directory is not taken for one
    results = write_fabricated_results(tmp_path / "results", control=False)
    assert not is_over_training(results) and section_ids(results) == SECTION_IDS
    assert not list(tmp_path.rglob("*.html"))


def test_a_results_report_with_the_over_training_section_of_another_directory(
    over: Path, tmp_path: Path
) -> None:
    """The demo's report: its model's results (ablation, control) with the over-training
    section of its checkpoints after the findings, every other section the results'."""
    results = write_fabricated_results(tmp_path / "analysis", seed=3)
    summary = build_report_summary(results, tmp_path / "report.html", over_training=over)
    assert summary.problems == {} and summary.missing.get("over-training") is None
    html = summary.path.read_text()
    assert re.findall(r'<section id="([^"]+)">', html) == list(OVER_TRAINING_SECTION_IDS)
    section = html[
        html.index('<section id="over-training">') : html.index('<section id="overview">')
    ]
    assert "8 checkpoints of the training run, steps 0 to 64" in section
    assert "the other sections of this report show the results in analysis/" in section
    assert section.count("<figure>") == 5
    # the other sections are the results' own, as in the report without the section
    alone = build_report_summary(results, tmp_path / "alone.html").path.read_text()
    for section_id in ("findings", "overview", "metadata"):
        assert _section(html, section_id) == _section(alone, section_id), section_id
    assert "every other section shows the last checkpoint" not in html
    with pytest.raises(InputError, match="not an over-training directory"):
        build_report_summary(results, tmp_path / "x.html", over_training=results)
    assert not (tmp_path / "x.html").exists()


def _section(html: str, section_id: str) -> str:
    """One section of a page, its embedded images left out."""
    start = html.index(f'<section id="{section_id}">')
    text = html[start : html.index("</section>", start)]
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
