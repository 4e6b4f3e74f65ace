"""Every section of the report on a fabricated results directory holding the whole contract,
on real results from ``analyze``, and with each optional piece removed."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertgeom.genomics.reference import SPIKE_DOMAIN_SLUGS, SPIKE_DOMAINS
from bertgeom.report import figures
from bertgeom.report.build import SECTION_IDS, build_report_summary, draw_sections
from bertgeom.report.common import evenly
from bertgeom.report.content import Figure, Missing, Table, format_value
from bertgeom.report.manifest_sections import metadata, overview
from bertgeom.report.tests.analysed import analyse_tiny_classifier
from bertgeom.report.tests.fabricated import write_fabricated_results
from bertgeom.results.store import Results, load_results


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory: pytest.TempPathFactory) -> Results:
    return load_results(write_fabricated_results(tmp_path_factory.mktemp("fab") / "results"))


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return analyse_tiny_classifier(tmp_path_factory.mktemp("analysed"))


def _png(figure: Figure) -> bytes:
    prefix = "data:image/png;base64,"
    assert figure.image.src.startswith(prefix)
    return base64.b64decode(figure.image.src.removeprefix(prefix))


def test_every_section_is_drawn_from_the_full_contract(fabricated: Results) -> None:
    sections, problems = draw_sections(fabricated)
    assert problems == {}
    assert [s.id for s in sections] == list(SECTION_IDS)
    assert sections[0].id == "findings" and sections[-1].id == "metadata"
    assert [s.id for s in sections if s.folded] == ["metadata"]
    for section in sections:
        has_figures = section.figures or section.id in ("overview", "metadata")
        assert section.title and has_figures, section.id
        assert section.missing == [], (section.id, section.missing)
        for figure in section.figures:
            assert _png(figure).startswith(b"\x89PNG")
            assert figure.image.width > 50 and figure.image.height > 50
            sentences = figure.caption.count(". ") + 1
            assert 20 < len(figure.caption) < 600 and sentences <= 3, figure.caption
    by_id = {s.id: s for s in sections}
    classifier_tables = [b for b in by_id["classifier"].blocks if isinstance(b, Table)]
    assert [row[0] for row in classifier_tables[0].rows] == ["Alpha", "Delta", "Lambda"]
    assert "Lambda is a synthetic-only class" in by_id["classifier"].figures[0].caption
    assert len(by_id["attention-maps"].figures) == 1
    assert len(by_id["subspace"].figures) == 5 + 2  # five overlap kinds, two weight figures
    assert len(by_id["findings"].figures) == 2  # per-layer lines, gate mix


def test_metadata_is_folded_and_not_in_the_overview(fabricated: Results) -> None:
    overview_text, folded = repr(overview(fabricated).blocks), metadata(fabricated)
    assert folded.folded and "fabricated-classifier" in overview_text
    for entry in ("/models/fabricated", "batch_size", "total_s", "Timings"):
        assert entry not in overview_text and entry in repr(folded.blocks)


def test_overview_says_what_the_architecture_changes(fabricated: Results) -> None:
    assert "What the definitions mean" not in repr(overview(fabricated).blocks)
    model = {**fabricated.manifest["model"], "model_type": "esm"}
    model["caveats"] = ["pre-LayerNorm layers", "rotary positions."]
    changed = dataclasses.replace(fabricated, manifest={**fabricated.manifest, "model": model})
    text = repr(overview(changed).blocks)
    assert "for this esm model: pre-LayerNorm layers. rotary positions." in text


def test_report_file_is_self_contained_and_escaped(fabricated: Results, tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_fabricated_results(results)
    manifest = results / "manifest.json"
    manifest.write_text(manifest.read_text().replace("fabricated-classifier", "<b>x</b><script>"))
    summary = build_report_summary(results)
    assert summary.path == results / "report.html"
    html = summary.path.read_text()
    for section_id in SECTION_IDS:
        assert f'<section id="{section_id}">' in html
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "http://" not in html and "https://" not in html
    assert html.count("<figure>") == html.count("<figcaption>") == summary.figures
    assert summary.size_bytes == len(html.encode())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_pieces_say_what_is_missing(fabricated: Results) -> None:
    bare = dataclasses.replace(
        fabricated,
        layers=None,
        predictions=None,
        pca=None,
        histograms=None,
        mutations=None,
        ablation=None,
        heads=fabricated.heads[~fabricated.heads["metric"].str.startswith(("spike.", "cone."))],
        arrays={k: v for k, v in fabricated.arrays.items() if k != "spike_attention_profile"},
    )
    sections, problems = draw_sections(bare)
    assert problems == {}
    missing = {s.id: " ".join(m.text for m in s.missing) for s in sections}
    assert "classification head" in missing["classifier"]
    for section_id in ("findings", "cone", "distribution", "separability"):
        assert "--global" in missing[section_id], section_id
    assert "variant classifier" in missing["spike"]
    assert "No ablation.parquet" in missing["findings"]
    assert missing["overview"] == missing["gates"] == missing["subspace"] == ""
    assert missing["metadata"] == ""


def test_a_section_that_breaks_on_bad_data_says_so(fabricated: Results) -> None:
    broken = dataclasses.replace(fabricated, pca=pd.DataFrame({"layer": [0], "oops": [1.0]}))
    sections, problems = draw_sections(broken)
    assert list(problems) == ["separability"]
    separability = sections[SECTION_IDS.index("separability")]
    assert "could not be drawn" in separability.missing[-1].text


def test_report_of_a_real_analysis(analysed: Path) -> None:
    summary = build_report_summary(analysed)
    assert summary.problems == {}
    assert summary.figures >= 15
    assert summary.size_bytes < 15_000_000
    assert "classifier" not in summary.missing and "gates" not in summary.missing
    html = summary.path.read_text()
    assert html.index('<section id="findings">') < html.index('<section id="overview">')
    assert "Cone index I/n" in html and "No ablation.parquet" in html


@pytest.mark.slow
def test_a_bert_base_sized_report_stays_small(tmp_path: Path) -> None:
    results = write_fabricated_results(
        tmp_path / "results",
        layers=12,
        heads=12,
        classes=("pre-VOC", "Alpha", "Beta", "Gamma", "Delta", "Lambda", "Mu", "Omicron"),
        inputs=400,
        map_length=429,
    )
    summary = build_report_summary(results)
    assert summary.problems == {}
    assert summary.size_bytes < 15_000_000
    assert summary.figures <= 30


def test_domain_slugs_are_the_metric_names() -> None:
    assert [SPIKE_DOMAIN_SLUGS[name] for name, _, _ in SPIKE_DOMAINS] == [
        "signal_peptide",
        "NTD",
        "RBD",
        "SD1_SD2",
        "S2_FP",
        "HR1",
        "CH_CD",
        "HR2",
        "TM_CT",
    ]


def test_small_helpers() -> None:
    assert evenly(list(range(30)), 4) == [0, 10, 19, 29]
    assert evenly([1, 2], 5) == [1, 2]
    assert format_value(np.float32(0.123456)) == "0.1235"
    assert format_value(float("nan")) == "-"
    assert format_value({"a": 1, "b": [2, 3]}) == "a: 1, b: 2, 3"
    assert format_value(True) == "yes"
    assert format_value({}) == format_value(None) == "-"
    assert figures.class_colors(["all", "x", "y"])["all"] == "#000000"
    assert Missing("x").kind == "missing"


def test_gate_map_figure_marks_heads_that_differ() -> None:
    overall = pd.DataFrame([["open", "closed"], ["mixed", "cluster"]])
    other = pd.DataFrame([["open", "open"], ["mixed", "cluster"]])
    image = figures.gate_maps([("all", overall), ("class", other)], overall)
    assert image.src.startswith("data:image/png;base64,") and image.width > image.height
