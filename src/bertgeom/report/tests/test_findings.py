"""The findings section on fabricated results with planted numbers (the costliest head, the
control's cone index, where the classes separate), and each missing piece's line."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bertgeom.report.content import Bullets, Missing, Section, Table
from bertgeom.report.findings import (
    BASELINE_MODE,
    Summary,
    ablation_costs,
    load_control,
    separation,
    summarize,
)
from bertgeom.report.findings_section import findings
from bertgeom.report.tests.fabricated import (
    BASELINE_ACCURACY,
    EMBEDDING_CONE,
    PLANTED_MASK_HEAD,
    PLANTED_ZERO_DROP,
    planted_head,
    write_fabricated_results,
)
from bertgeom.results.store import Results, load_results


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    return load_results(write_fabricated_results(tmp_path_factory.mktemp("fab") / "results"))


def _sentences(section: Section) -> list[str]:
    return [item for block in section.blocks if isinstance(block, Bullets) for item in block.items]


def _missing(section: Section) -> str:
    return " ".join(block.text for block in section.missing)


def _tables(section: Section) -> list[Table]:
    return [block for block in section.blocks if isinstance(block, Table)]


def test_findings_name_the_planted_numbers(results: Results) -> None:
    section = findings(results)
    assert section.id == "findings" and _missing(section) == ""
    cone, separate, gates, zero, mean, block, masking, block_masking = _sentences(section)
    layer, head = planted_head(2, 4)
    # the control's cone index (0.65 at the embeddings) beside the model's (0.2)
    assert f"{EMBEDDING_CONE[False]:.3g} at the embeddings" in cone
    assert f"Untrained (seed 1000): {EMBEDDING_CONE[True]:.3g} at the embeddings" in cone
    assert "largest change is in layer 0's attention block" in cone
    # the probe reaches 0.9 at layer 1; the control's never does
    assert separate.startswith("The [CLS] classes separate at layer 1 (0.9), taking")
    assert "linear probe's held-out accuracy on [CLS] reaches 0.9" in separate
    assert "Untrained (seed 1000): never (best 0.35" in separate
    assert "layer 0 closed 26%, layer 1 instance 25%" in gates  # the favourite gates planted
    assert "Untrained (seed 1000): layers 0-1 open 60-82%" in gates
    after = BASELINE_ACCURACY - PLANTED_ZERO_DROP
    assert zero.startswith(
        f"Zeroing head {layer}.{head} costs most: accuracy 0.9 to {after:.3g} (-0.4)"
    )
    assert "gate (" in zero and "defining mutations" in zero and "domain" in zero
    assert "class Delta loses most (accuracy -0.8)" in zero
    assert f"head {layer}.{head} costs most (accuracy -0.3" in mean
    assert block.startswith("Zeroing a whole attention block costs most at layer 1")
    assert f"head {PLANTED_MASK_HEAD[0]}.{PLANTED_MASK_HEAD[1]}: log-probability -0.6" in masking
    assert block_masking.startswith("Masking those keys in every head of a layer at once")
    assert "at layer 0: accuracy -0.3, log-probability -1.5, against accuracy -0.01" in (
        block_masking
    )
    heads, side_by_side = _tables(section)
    assert heads.rows[0][0] == f"{layer}.{head}" and len(heads.rows) == 5
    assert "mutation enrichment" in heads.columns
    assert side_by_side.columns == ["finding", "trained", "untrained (seed 1000)"]
    rows = {row[0]: row[1:] for row in side_by_side.rows}
    assert rows["I/n at the embeddings"] == ["0.2", "0.65"]
    assert rows["[CLS] classes separate at"][0] == "layer 1 (0.9)"
    assert rows["[CLS] classes separate at"][1].startswith("never")
    assert rows["costliest head, zeroed"] == [f"{layer}.{head} (accuracy -0.4)", "-"]
    assert len(section.figures) == 2


def test_summary_numbers(results: Results) -> None:
    summary = summarize(results, "trained")
    costs = summary.head_costs("zero")
    assert tuple(costs.loc[0, ["layer", "head"]]) == planted_head(2, 4)
    assert costs.loc[0, "accuracy"] == pytest.approx(PLANTED_ZERO_DROP)
    assert (costs["accuracy"].diff().dropna() <= 0).all()
    assert summary.baseline["accuracy"] == pytest.approx(BASELINE_ACCURACY)
    assert summary.gate_mix.sum(axis=1).to_numpy() == pytest.approx(1.0)
    assert summary.cone.index.tolist() == [-1, 0, 1]
    assert [name for name, _ in summary.stream][:2] == [
        "the embeddings",
        "layer 0's attention block",
    ]
    found = summary.separation
    assert found is not None and (found.metric, found.layer) == ("cls.probe_accuracy", 1)


def test_separation_falls_back_to_the_silhouette_and_can_be_never() -> None:
    table = pd.DataFrame({"cls.silhouette": [0.1, 0.6, 0.7]}, index=[-1, 0, 1])
    found = separation(table)
    assert found is not None and (found.metric, found.layer, found.value) == (
        "cls.silhouette",
        0,
        0.6,
    )
    never = separation(pd.DataFrame({"cls.probe_accuracy": [0.3, 0.5]}, index=[-1, 0]))
    assert never is not None and never.layer is None and (never.best, never.best_layer) == (0.5, 0)
    assert separation(pd.DataFrame({"cls.fisher_ratio": [1.0]})) is None


def test_ablation_costs_are_baseline_minus_ablated() -> None:
    table = pd.DataFrame(
        {
            "layer": [-1, 0, -1, 0],
            "head": [-1, 1, -1, 1],
            "mode": [BASELINE_MODE, "zero", BASELINE_MODE, "zero"],
            "class": ["all", "all", "all", "all"],
            "metric": ["accuracy", "accuracy", "true_log_probability", "true_log_probability"],
            "value": [0.8, 0.5, -0.2, -1.0],
        }
    )
    costs, baseline = ablation_costs(table)
    assert costs is not None and baseline == {"accuracy": 0.8, "true_log_probability": -0.2}
    row = costs.iloc[0]
    assert row["accuracy"] == pytest.approx(0.3) and row["true_log_probability"] == pytest.approx(
        0.8
    )
    with pytest.raises(ValueError, match="baseline"):
        ablation_costs(table[table["mode"] != BASELINE_MODE])


def test_without_ablation_and_control_the_findings_say_so(tmp_path: Path) -> None:
    bare = load_results(
        write_fabricated_results(tmp_path / "results", ablation=False, control=False)
    )
    section = findings(bare)
    missing = _missing(section)
    assert "No ablation.parquet" in missing and "No control results" in missing
    sentences = _sentences(section)
    assert len(sentences) == 3 and "Untrained" not in " ".join(sentences)
    assert not any("Zeroing" in text for text in sentences)
    assert len(_tables(section)) == 0 and len(section.figures) == 2


def test_without_global_measures_or_gates(results: Results) -> None:
    bare = dataclasses.replace(
        results,
        layers=None,
        heads=results.heads[~results.heads["metric"].str.startswith("gate.")],
    )
    section = findings(bare)
    missing = _missing(section)
    assert "--global" in missing and "gate shares" in missing
    assert all(
        isinstance(b, Bullets | Missing | Table) or b.kind == "figure" for b in section.blocks
    )


def test_a_broken_control_is_one_line(tmp_path: Path) -> None:
    path = write_fabricated_results(tmp_path / "results")
    (path / "control" / "heads.parquet").write_text("not parquet")
    results = load_results(path)
    assert load_control(results)[0] is None
    assert "control results could not be read" in _missing(findings(results))


def test_the_control_named_in_the_manifest_and_the_control_itself(tmp_path: Path) -> None:
    path = write_fabricated_results(tmp_path / "results")
    shutil.move(path / "control", tmp_path / "elsewhere")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["control"] = "../elsewhere"
    (path / "manifest.json").write_text(json.dumps(manifest))
    results = load_results(path)
    assert results.control_path == path / "../elsewhere"
    assert "Untrained (seed 1000)" in " ".join(_sentences(findings(results)))
    control = load_results(tmp_path / "elsewhere")
    assert control.control_path is None
    summary: Summary = summarize(control, "x")
    assert summary.costs is None and summary.separation is not None
    assert "No control results" not in _missing(findings(control))
