"""One recipe under several seeds, end to end: ``bertgeom train --seeds`` trains the models a
separate ``train --seed N`` trains, ``bertgeom analyze --over-seeds`` gives each the results of
a separate analysis, and ``seeds.parquet`` holds what a hand computation over those results
gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from analysis_reference import assert_same_table, one_thread
from safetensors.torch import load_file
from typer.testing import CliRunner

from bertgeom.cli.main import app
from bertgeom.genomics.dataset import save_dataset
from bertgeom.report.across_seeds import SEEDS_SCHEMA
from bertgeom.report.build import OVER_SEEDS_SECTION_IDS
from bertgeom.results.store import Results, load_results
from bertgeom.scale.tests.same_results import assert_same_results

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = (0, 1)
RECIPE = ("--preset", "tiny", "--epochs", 1)
COMMON = ("--split", "test", "--max-inputs", 6, "--batch-size", 4)


def run(*arguments: str | Path | int) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in arguments])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def seeded(
    tmp_path_factory: pytest.TempPathFactory, tiny_dataset: tuple[pd.DataFrame, pd.DataFrame]
) -> tuple[Path, Path]:
    """The tiny recipe trained under seeds 0 and 1 by ``train --seeds``; its dataset. One
    torch thread, as in the tests (another thread count sums in another order)."""
    root = tmp_path_factory.mktemp("seeded")
    save_dataset(*tiny_dataset, root / "data")
    seeds = ",".join(map(str, SEEDS))
    with one_thread():
        code, output = run(
            "train", "--data", root / "data", *RECIPE, "--seeds", seeds, "--out", root / "models"
        )
    assert code == 0, output
    assert "trained tiny under 2 seeds" in output
    return root / "models", root / "data"


def test_each_seed_is_the_model_of_a_separate_train(
    seeded: tuple[Path, Path], tmp_path: Path
) -> None:
    models, data = seeded
    assert sorted(path.name for path in models.iterdir()) == ["seed-0", "seed-1", "seeds.json"]
    record = json.loads((models / "seeds.json").read_text())
    assert record["seeds"] == list(SEEDS)
    assert [model["path"] for model in record["models"]] == ["seed-0", "seed-1"]
    assert "seed" not in record["options"] and record["options"]["preset"] == "tiny"
    for seed, summary in zip(SEEDS, record["models"], strict=True):
        separate = tmp_path / f"separate-{seed}"
        code, output = run("train", "--data", data, *RECIPE, "--seed", seed, "--out", separate)
        assert code == 0, output
        mine = load_file(models / f"seed-{seed}" / "model.safetensors")
        theirs = load_file(separate / "model.safetensors")
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[name], theirs[name]) for name in mine)
        training = json.loads((separate / "training.json").read_text())
        assert summary["best_epoch"] == training["best_epoch"]
        assert summary["seed"] == seed and training["options"]["seed"] == seed
    weights = [load_file(models / f"seed-{seed}" / "model.safetensors") for seed in SEEDS]
    assert not all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert not list(models.parent.glob(".*partial"))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--seeds", "0,x"), "'x' is not a seed"),
        (("--seeds", "1,1"), "seed 1 is given twice"),
        (("--seeds", ""), "no seeds given"),
        (("--seeds", " , "), "no seeds given"),
        (("--seeds", "-1"), "'-1' is not a seed"),
        (("--seeds", "4294967296"), "above the largest seed"),
        (("--seeds", "0,1", "--seed", "3"), "--seeds and --seed together"),
    ],
)
def test_bad_seeds_are_one_line_and_write_nothing(
    tmp_path: Path, arguments: tuple[str, ...], message: str
) -> None:
    out = tmp_path / "models"
    code, output = run("train", "--preset", "tiny", *arguments, "--out", out)
    assert code != 0
    assert message in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output
    assert not out.exists() and not list(tmp_path.glob(".*"))


def test_over_seeds_refuses_what_is_not_a_directory_of_seeds(
    tiny_model: Path, tmp_path: Path
) -> None:
    text = tmp_path / "inputs.txt"
    text.write_text("acgt\n")
    out = tmp_path / "out"
    arguments = ("--model", tiny_model, "--over-seeds", "--text", text, "--out", out)
    code, output = run("analyze", *arguments)
    assert code != 0 and "has no seeds.json" in output and "train --seeds" in output
    assert len(output.strip().splitlines()) == 1, output
    code, output = run(
        "analyze", "--model", tiny_model, "--over-seeds", "--over-training",
        "--text", text, "--out", out,
    )  # fmt: skip
    assert code != 0 and "choose one" in output
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_analysis_over_seeds_equals_separate_analyses_and_hand_statistics(
    seeded: tuple[Path, Path], tmp_path: Path
) -> None:
    models, data = seeded
    out = tmp_path / "over"
    options = ("--data", data, *COMMON, "--ablation", "zero", "--control", "random-init")
    code, output = run("analyze", "--model", models, "--over-seeds", *options, "--out", out)
    assert code == 0, output
    assert "2 seeds (0, 1)" in output
    assert sorted(path.name for path in out.iterdir()) == [
        "seeds",
        "seeds.json",
        "seeds.parquet",
        "seeds_values.parquet",
    ]
    manifest = json.loads((out / "seeds.json").read_text())
    assert manifest["seeds"] == list(SEEDS)
    per_seed = {}
    for seed in SEEDS:
        separate = tmp_path / f"separate-{seed}"
        code, output = run(
            "analyze", "--model", models / f"seed-{seed}", *options, "--out", separate
        )
        assert code == 0, output
        alone, inside = load_results(separate), load_results(out / "seeds" / f"seed-{seed}")
        assert alone.layers is not None and inside.layers is not None
        assert alone.ablation is not None and inside.ablation is not None
        assert_same_table(inside.heads, alone.heads, "heads")
        assert_same_table(inside.layers, alone.layers, "layers")
        assert_same_table(inside.ablation, alone.ablation, "ablation")
        assert inside.control_path is not None
        control = load_results(inside.control_path)
        assert control.layers is not None and control.layers.equals(
            load_results(separate / "control").layers
        )
        per_seed[seed] = hand_headlines(inside.layers, inside.heads, inside.ablation, control)
    table = pd.read_parquet(out / "seeds.parquet")
    assert list(table.columns) == SEEDS_SCHEMA.names
    keyed = table.set_index(["finding", "layer", "statistic"])
    checked = 0
    for key in per_seed[0]:
        values = np.array([per_seed[seed][key] for seed in SEEDS])
        row = keyed.loc[key]
        if key[0] in ("ablation.costliest_layer", "ablation.costliest_head_layer"):
            counts = pd.Series(values).value_counts().sort_index()
            assert row["mode"] == counts.idxmax()
            assert row["agreement"] == counts.max() / len(SEEDS)
        else:
            assert row["agreement"] == np.mean(np.sign(values) == np.sign(values.mean()))
        assert row["mean"] == pytest.approx(values.mean())
        assert row["std"] == pytest.approx(np.std(values, ddof=1))
        assert (row["min"], row["max"]) == pytest.approx((values.min(), values.max()))
        assert row["n_seeds"] == len(SEEDS)
        checked += 1
    assert checked == len(per_seed[0]) > 10
    assert {"cone_index", "gate_mix", "trained_minus_control"} <= set(table["finding"])
    # --like repeats it from one seed's results, here over the same models
    again = tmp_path / "again"
    code, output = run(
        "analyze", "--like", out / "seeds" / "seed-0", "--model", models, "--over-seeds",
        "--out", again,
    )  # fmt: skip
    assert code == 0, output
    assert_same_table(pd.read_parquet(again / "seeds.parquet"), table, "seeds")
    # an earlier over-seeds output may be replaced; a results directory may not
    code, output = run("analyze", "--model", models, "--over-seeds", *options, "--out", out)
    assert code == 0, output
    code, output = run(
        "analyze", "--model", models, "--over-seeds", *options, "--out", tmp_path / "separate-0"
    )
    assert code != 0 and "not an over-seeds results directory" in output
    # its report: the over-seeds section, then the first seed's sections
    code, output = run("report", out)
    assert code == 0 and "warning" not in output, output
    html = (out / "report.html").read_text()
    assert re.findall(r'<section id="([^"]+)">', html) == list(OVER_SEEDS_SECTION_IDS)
    start, end = html.index('<section id="over-seeds">'), html.index('<section id="overview">')
    assert "2 seeds of one recipe (seeds 0, 1)" in html[start:end]
    assert html[start:end].count("<figure>") == 1
    assert "every other section shows the first seed, seed 0" in html


def hand_headlines(
    layers: pd.DataFrame, heads: pd.DataFrame, ablation: pd.DataFrame, control: Results
) -> dict[tuple[str, int, str], float]:
    """Some headline numbers of one seed straight from its tables: the cone index per layer,
    the gate mix per layer, the costliest layer and head layer of zero ablation, and the cone
    index trained minus control."""
    found: dict[tuple[str, int, str], float] = {}

    def cone(table: pd.DataFrame) -> pd.Series:
        rows = table[
            (table["metric"] == "cone.normalized_mean")
            & (table["point"] == "layer_output")
            & (table["class"] == "all")
        ]
        return rows.set_index("layer")["value"]

    for layer, value in cone(layers).items():
        found[("cone_index", int(layer), "cone.normalized_mean")] = float(value)
    shares = heads[
        (heads["class"] == "all")
        & (heads["head"] >= 0)
        & heads["metric"].str.fullmatch(r"gate\.[a-z]+\.share")
    ]
    for (layer, metric), value in shares.groupby(["layer", "metric"])["value"].mean().items():
        found[("gate_mix", int(layer), metric.split(".")[1])] = float(value)
    everyone = ablation[(ablation["class"] == "all")]
    baseline = everyone[everyone["mode"] == "none"].set_index("metric")["value"]
    zero = everyone[everyone["mode"] == "zero"].pivot_table(
        index=["layer", "head"], columns="metric", values="value"
    )
    drops = pd.DataFrame(
        {m: baseline[m] - zero[m] for m in ("accuracy", "true_log_probability")}
    ).reset_index()
    order = ["accuracy", "true_log_probability"]
    blocks = drops[drops["head"] < 0].sort_values(order, ascending=False, kind="stable")
    single = drops[drops["head"] >= 0].sort_values(order, ascending=False, kind="stable")
    found[("ablation.costliest_layer", -1, "zero")] = float(blocks["layer"].iloc[0])
    found[("ablation.costliest_head_layer", -1, "zero")] = float(single["layer"].iloc[0])
    assert control.layers is not None
    untrained = cone(control.layers)
    for layer, value in (cone(layers) - untrained).items():
        found[("trained_minus_control", int(layer), "cone.normalized_mean")] = float(value)
    return found


@pytest.mark.filterwarnings("ignore:Port .* is already in use")
def test_over_seeds_on_two_dask_workers_equals_one_process(
    seeded: tuple[Path, Path], tmp_path: Path
) -> None:
    """``--dask-workers 2``: each seed's model is analysed sharded over the cluster, and each
    seed's results and ``seeds.parquet`` equal the analysis in one process to the tolerance of
    any sharded analysis (``scale/tests/same_results.py``)."""
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    models, data = seeded
    # every test input: with --max-inputs a shard reads fewer rows than one process
    options = ("--data", data, "--split", "test", "--batch-size", 8, "--ablation", "zero")
    single, sharded = tmp_path / "single", tmp_path / "dask"
    code, output = run("analyze", "--model", models, "--over-seeds", *options, "--out", single)
    assert code == 0, output
    code, output = run(
        "analyze", "--model", models, "--over-seeds", *options, "--dask-workers", 2,
        "--out", sharded,
    )  # fmt: skip
    assert code == 0, output
    for seed in SEEDS:
        alone = load_results(single / "seeds" / f"seed-{seed}")
        on_dask = load_results(sharded / "seeds" / f"seed-{seed}")
        assert_same_results(alone, on_dask)
        assert on_dask.manifest["parameters"]["dask_workers"] == 2
        assert on_dask.manifest["timings"]["batches"] > alone.manifest["timings"]["batches"]
    expected = pd.read_parquet(single / "seeds.parquet")
    actual = pd.read_parquet(sharded / "seeds.parquet")
    numbers = ["mean", "std", "min", "max", "mode", "agreement"]
    pd.testing.assert_frame_equal(actual.drop(columns=numbers), expected.drop(columns=numbers))
    # the headline numbers include [CLS] separability: the looser of the two tolerances
    np.testing.assert_allclose(actual[numbers], expected[numbers], rtol=2e-3, atol=1e-5)


def test_other_train_options_apply_to_every_seed(seeded: tuple[Path, Path], tmp_path: Path) -> None:
    _, data = seeded
    out = tmp_path / "models"
    train = ("train", "--data", data, *RECIPE, "--checkpoint-schedule", "0,epochs")
    code, output = run(*train, "--seeds", "3,5", "--out", out)
    assert code == 0, output
    for seed in (3, 5):
        steps = sorted(path.name for path in (out / f"seed-{seed}" / "checkpoints").iterdir())
        assert steps == ["step-0", "step-6"]
    record = json.loads((out / "seeds.json").read_text())
    assert [model["checkpoints"] for model in record["models"]] == [2, 2]
    assert record["options"]["checkpoints"] == "0,epochs"
    # a directory of seeds may be replaced by another; a model directory may not
    code, output = run(*train, "--seeds", "3", "--out", out)
    assert code == 0, output
    assert sorted(path.name for path in out.iterdir()) == ["seed-3", "seeds.json"]
    code, output = run(*train, "--seeds", "3", "--out", out / "seed-3")
    assert code != 0 and "not a directory of models over seeds" in output
