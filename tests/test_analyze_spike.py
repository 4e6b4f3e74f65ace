"""``analyze`` on a spike classifier writes the spike measures of DESIGN 3.5 (docs/spike.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertgeom.analysis import AnalysisOptions, InputSpec, analyze
from bertgeom.genomics.dataset import save_dataset
from bertgeom.genomics.fasta import write_fasta
from bertgeom.genomics.reference import SPIKE_CODONS
from bertgeom.genomics.synthetic import synthesize_table
from bertgeom.measures.spike_values import DOMAINS
from bertgeom.results.store import load_results


@pytest.fixture(scope="module")
def data_directory(
    tiny_dataset: tuple[pd.DataFrame, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    directory = tmp_path_factory.mktemp("spike-data") / "data"
    save_dataset(*tiny_dataset, directory)
    return directory


def test_analyze_writes_spike_metrics_table_and_profile(
    tiny_model: Path, data_directory: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    options = AnalysisOptions(global_measures=True, batch_size=16, max_inputs=40)
    analyze(tiny_model, InputSpec("data", data_directory, split="test"), out, options)
    results = load_results(out)

    heads = results.heads[results.heads["metric"].str.startswith("spike.")]
    metrics = set(heads["metric"])
    for slug in DOMAINS:
        assert {f"spike.domain.{slug}.share", f"spike.domain.{slug}.enrichment"} <= metrics
    assert {
        "spike.special.share",
        "spike.mutations.received",
        "spike.mutations.background",
        "spike.mutations.enrichment",
        "spike.mutations.n",
    } <= metrics
    everyone = heads[heads["class"] == "all"].set_index(["layer", "head", "metric"])["value"]
    assert np.isfinite(everyone).all()
    shares = everyone[everyone.index.get_level_values("metric").str.endswith(".share")]
    domains = shares.drop("spike.special.share", level="metric")
    np.testing.assert_allclose(domains.groupby(level=["layer", "head"]).sum(), 1.0, atol=1e-6)
    assert (everyone.xs("spike.mutations.n", level="metric") > 0).all()

    mutations = results.mutations
    assert mutations is not None and not mutations.empty
    assert list(mutations.columns) == [
        "layer",
        "head",
        "class",
        "mutation",
        "aa_effect",
        "start",
        "received",
        "background",
        "enrichment",
        "n_carrying",
        "n_background",
    ]
    used = mutations[(mutations["n_carrying"] > 0) & (mutations["n_background"] > 0)]
    assert not used.empty
    assert np.isfinite(used[["received", "background", "enrichment"]].to_numpy()).all()
    assert "S:N501Y" in set(mutations["aa_effect"])

    profile = results.arrays["spike_attention_profile"]
    entry = results.array_index["spike_attention_profile"]
    assert entry["dims"] == ["class", "layer", "head", "codon"]
    assert entry["labels"]["class"][0] == "all"
    assert entry["labels"]["codon"] == f"1..{SPIKE_CODONS}"
    assert profile.dtype == np.float32 and profile.shape[-1] == SPIKE_CODONS
    assert np.isfinite(profile[0]).mean() > 0.99
    assert results.manifest["data"]["spike_unmapped"] == 0


def test_fasta_records_keep_their_alignment(tiny_model: Path, tmp_path: Path) -> None:
    """FASTA records are aligned once when read; a bad record is skipped without shifting the
    alignments of the records after it."""
    table = synthesize_table(3, seed=11, classes=("Alpha", "Delta"))
    records = [(f"s{i}", str(sequence)) for i, sequence in enumerate(table["sequence"])]
    write_fasta([("bad", "NOT A SEQUENCE!"), *records], tmp_path / "spikes.fa")
    labels = tmp_path / "labels.tsv"
    pd.DataFrame({"record_id": [r[0] for r in records], "label": table["label"]}).to_csv(
        labels, sep="\t", index=False
    )
    out = tmp_path / "results"
    spec = InputSpec("fasta", tmp_path / "spikes.fa", labels=labels)
    analyze(tiny_model, spec, out, AnalysisOptions(global_measures=True, batch_size=4))
    mutations = load_results(out).mutations
    assert mutations is not None
    first_head = mutations[(mutations["layer"] == 0) & (mutations["head"] == 0)]
    carried = first_head.set_index(["class", "mutation"])["n_carrying"]
    assert carried[("Alpha", "A23063T")] >= 2  # N501Y: core, dropped with probability 0.1
    assert carried[("Delta", "del22029-22034")] >= 2


def test_analyze_writes_the_ablation_and_the_untrained_control(
    tiny_model: Path, data_directory: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    options = AnalysisOptions(
        batch_size=8,
        max_inputs=16,
        ablation=("zero", "mean", "keys"),
        control="random-init",
        control_seed=3,
    )
    analyze(tiny_model, InputSpec("data", data_directory, split="test"), out, options)

    ablation = pd.read_parquet(out / "ablation.parquet")
    assert list(ablation.columns) == ["layer", "head", "mode", "class", "metric", "value"]
    layers, heads = 1, 2  # the tiny preset
    keys = set(zip(ablation["layer"], ablation["head"], ablation["mode"], strict=True))
    assert (-1, -1, "none") in keys
    for layer in range(layers):
        for mode in ("zero", "mean"):
            assert {(layer, h, mode) for h in (-1, *range(heads))} <= keys
        assert {(layer, h, "mask_mutation_keys") for h in (-1, *range(heads))} <= keys
        assert {(layer, h, "mask_matched_keys") for h in (-1, *range(heads))} <= keys
    inputs = ablation.query("metric == 'inputs' and `class` == 'all'")["value"]
    assert (inputs == 16).all()
    accuracy = ablation.query("metric == 'accuracy'")["value"]
    assert accuracy.between(0, 1).all()
    manifest = load_results(out).manifest
    assert manifest["ablation"]["labelled_inputs"] == 16 and manifest["ablation"]["passes"] == 2
    assert manifest["control"] == "control"

    control = load_results(out / "control")
    assert control.manifest["control"] == {"kind": "random-init", "seed": 3}
    assert control.manifest["model"]["weights"] == "initial (untrained), seed 3"
    assert not (out / "control" / "ablation.parquet").exists()
    trained = load_results(out).heads
    assert set(control.heads["metric"]) == set(trained["metric"])
    assert not np.allclose(
        control.heads.query("metric == 'subspace.effective_rank'")["value"],
        trained.query("metric == 'subspace.effective_rank'")["value"],
    )
