"""The numbers behind docs/findings.md, over seeds: two presets, three seeds each, with
checkpoints, analysed across seeds and over training.

    python benchmarks/findings_seeds.py --out findings-output
        [--small-seeds 0,1,2] [--deep-seeds 0,1,2] [--small-epochs N] [--deep-epochs N]
        [--data-seed 42] [--threads N] [--tables-only]

(``--deep-seeds none`` leaves a preset out; ``--tables-only`` prints the tables of what is
done without working.)

What it does, into ``--out`` (each step skipped when its output is already there, so a rerun
after an interruption redoes nothing that finished; a seed whose training was cut off is
trained again from the start):

1. ``data/``: the demo's dataset (``build_dataset(seed=42)``, the demo's default seed): every
   model of every seed trains, validates and is tested on the same splits, so the analyses
   across seeds read the same inputs;
2. ``models/<preset>/seed-N/``: each seed's model, trained as ``bertgeom train --preset P
   --seed N --checkpoint-schedule S`` would (``pipeline.steps.train_and_record``), with
   ``models/<preset>/seeds.json`` as ``train --seeds`` writes it (rewritten each run from the
   seeds that are done); ``S`` (:func:`schedule`): the initial weights, step 32,
   half an epoch, the end of epochs 1 to 10 and 12, and the end of training (15 checkpoints
   in 15 epochs; the small preset's validation macro-F1 reaches 90 % of its final value near
   epoch 6);
3. ``evaluation/<preset>/seed-N/metrics.json``: the test split's metrics (real and synthetic
   spikes apart), as the demo writes them;
4. ``training/<preset>/seed-N/``: ``analyze --over-training`` of each seed's checkpoints on the
   test split, without ablation (``analysis.over_training``);
5. ``analysis/<preset>/``: ``analyze --over-seeds`` of the seeds' models on the test split with
   ``--ablation zero,mean,keys --control random-init`` (``pipeline.over_seeds``);
6. ``findings.md``: the tables below (also printed), and ``timings.json``.

The tables: per preset, each seed's model (best epoch, validation and test macro-F1); every
headline number of ``analyze --over-seeds`` (``report.across_seeds``: cone index, ``[CLS]``
separability, gate mix per layer, the cost of each layer's attention block and of the costliest
head, the mutation-key masking excess, trained minus control) per seed, with mean, standard
deviation and agreement (numeric: the seeds whose value has the sign of the mean; categorical,
a layer: the seeds on the modal layer); the cone index at every layer and measuring point per
seed; and the claims of docs/findings.md, each counted over the seeds it holds in.

Head identities are not compared across seeds (head 3 of one seed is not head 3 of another):
only layers, gate mixes and ranks (the costliest head, whichever it is).

**When the geometry forms** (the last table). For each seed and each curve over the
checkpoints, the *final value* is the value at the last checkpoint (the end of training, which
may differ from the best-epoch model that the other tables analyse). Then:

- validation macro-F1 (``checkpoint.json``): the first step at which it is at least 90 % (and
  99 %) of its final value;
- per layer ``L`` (-1: the embeddings), at the layer's output: the token cone index ``I/n``
  (class all), the ``[CLS]`` silhouette and the ``[CLS]`` linear-probe accuracy: the first
  step at which the value is within 10 % of its final value, ``|v - final| <= 0.1 |final|``
  (``report.training.within``; not for ``[CLS]`` at the embeddings, where every ``[CLS]`` is
  the same vector);
- per layer, the gate mix (the share of each dominant gate over the layer's heads x inputs): the
  first step at which it is within 0.1 of the final mix in total-variation distance (half the
  sum of the absolute share differences; ``report.training.settled``);

each as ``first / held``: the first step meeting the rule and the step from which it is met at
every later checkpoint. A geometric quantity *forms before accuracy* in a seed when its held
step is at most the step at which validation macro-F1 first reaches 90 % of its final value;
the table counts the seeds where it does. Steps are optimiser steps (batch 16); the steps per
epoch are printed above the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from classifier import machine  # benchmarks/ is on sys.path when run as a script
from findings import ablation_costs, key_masking, mutation_enrichment, stream

from bertgeom.analysis import CONTROL_RANDOM_INIT, AnalysisOptions, InputSpec
from bertgeom.analysis.over_training import analyze_over_training
from bertgeom.genomics.dataset import build_dataset, load_dataset, save_dataset
from bertgeom.model.experiment import evaluate_classifier, write_evaluation
from bertgeom.model.presets import PRESETS
from bertgeom.model.seed_models import SEEDS_MANIFEST, parse_seeds, seed_directory
from bertgeom.model.storage import load_classifier
from bertgeom.model.train import TrainingOptions, TrainingReport
from bertgeom.names import AblationMetric, Metric
from bertgeom.pipeline.options import DEMO_ABLATION
from bertgeom.pipeline.over_seeds import SEEDS_DIRECTORY, analyze_over_seeds
from bertgeom.pipeline.seeds import model_summary
from bertgeom.pipeline.steps import read_dataset, train_and_record
from bertgeom.report.across_seeds import (
    CATEGORICAL,
    CONE_INDEX,
    COSTLIEST_HEAD_COST,
    COSTLIEST_HEAD_LAYER,
    COSTLIEST_LAYER,
    GATE_MIX,
    KEY_MASKING_EXCESS,
    KEY_MASKING_HEAD_LAYER,
    LAYER_ABLATION_COST,
    SEPARABILITY,
    SEPARATION_LAYER,
    TRAINED_MINUS_CONTROL,
)
from bertgeom.report.training import (
    checkpoint_table,
    column_pairs,
    gate_mix_curves,
    held_step,
    layer_curves,
    of_layer,
    reaching,
    settled,
    within,
)
from bertgeom.results.store import load_results

PRESET_NAMES = ("small", "deep")


def steps_per_epoch(dataset: pd.DataFrame, preset: str) -> int:
    """Optimiser steps in one epoch of ``preset`` on ``dataset`` (as ``model.train`` counts)."""
    return -(-int((dataset["split"] == "train").sum()) // PRESETS[preset].batch_size)


def schedule(dataset: pd.DataFrame, preset: str, epochs: int | None = None) -> str:
    """The checkpoint schedule (module docstring) in ``--checkpoint-schedule``'s text form."""
    per_epoch = steps_per_epoch(dataset, preset)
    epochs = epochs or PRESETS[preset].epochs
    steps = {0, 32, round(per_epoch / 2)} | {epoch * per_epoch for epoch in (*range(1, 11), 12)}
    return ",".join(str(step) for step in sorted(steps) if step < epochs * per_epoch) + ",last"


class Run:
    """The run's directories and timings; each step is skipped when its output exists."""

    def __init__(self, out: Path, epochs: dict[str, int | None] | None = None) -> None:
        self.out = out
        self.epochs = epochs or {}
        self.timings: dict[str, float] = {}
        timings = out / "timings.json"
        if timings.is_file():
            self.timings = json.loads(timings.read_text())

    def timed(self, name: str, seconds: float) -> None:
        self.timings[name] = round(seconds, 1)
        (self.out / "timings.json").write_text(json.dumps(self.timings, indent=1))
        print(f"  {name}: {seconds:.0f} s", flush=True)

    def data(self, seed: int) -> Path:
        directory = self.out / "data"
        if not (directory / "dataset.parquet").is_file():
            started = time.perf_counter()
            dataset, outside = build_dataset(seed=seed)
            save_dataset(dataset, outside, directory)
            self.timed("data", time.perf_counter() - started)
        return directory

    def train(self, preset: str, seeds: tuple[int, ...], data: Path) -> Path:
        """Train every seed not yet trained, then (re)write ``seeds.json`` for those done."""
        models = self.out / "models" / preset
        dataset, outside = read_dataset(data)
        options = TrainingOptions(
            preset,
            self.epochs.get(preset),
            checkpoints=schedule(dataset, preset, self.epochs.get(preset)),
        )
        done = []
        for seed in seeds:
            model = models / seed_directory(seed)
            if not (model / "training.json").is_file():
                shutil.rmtree(model, ignore_errors=True)  # an interrupted training
                print(f"training {preset} seed {seed} ({options.checkpoints})", flush=True)
                started = time.perf_counter()
                train_and_record(dataset, model, replace(options, seed=seed))
                self.timed(f"training {preset} seed {seed}", time.perf_counter() - started)
            record = json.loads((model / "training.json").read_text())
            done.append(model_summary(seed, TrainingReport(**record)))
            evaluation = self.out / "evaluation" / preset / seed_directory(seed)
            if not (evaluation / "metrics.json").is_file():
                metrics = evaluate_classifier(load_classifier(model), dataset, outside)
                write_evaluation(metrics, evaluation, f"{preset} seed {seed}")
        recipe = {key: value for key, value in vars(options).items() if key != "seed"}
        manifest = {"format_version": 1, "seeds": list(seeds), "options": recipe, "models": done}
        (models / SEEDS_MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        return models

    def over_seeds(self, preset: str, models: Path, spec: InputSpec) -> Path:
        out = self.out / "analysis" / preset
        wanted = json.loads((models / SEEDS_MANIFEST).read_text())["seeds"]
        record = out / "seeds.json"
        if not record.is_file() or json.loads(record.read_text())["seeds"] != wanted:
            print(f"analysing {preset} over seeds", flush=True)
            options = AnalysisOptions(ablation=DEMO_ABLATION, control=CONTROL_RANDOM_INIT)
            summary = analyze_over_seeds(models, spec, out, options, overwrite=True)
            self.timed(f"analysis over seeds {preset}", summary.seconds)
        return out

    def over_training(self, preset: str, seed: int, spec: InputSpec) -> Path:
        model = self.out / "models" / preset / seed_directory(seed)
        out = self.out / "training" / preset / seed_directory(seed)
        if not (out / "training.parquet").is_file():
            print(f"analysing {preset} seed {seed} over training", flush=True)
            summary = analyze_over_training(model, spec, out, AnalysisOptions(), overwrite=True)
            self.timed(f"analysis over training {preset} seed {seed}", summary.seconds)
        return out


# --- the tables ------------------------------------------------------------------------------


def models_table(run: Run, preset: str, seeds: tuple[int, ...]) -> pd.DataFrame:
    """Per seed: best epoch, its validation macro-F1, test macro-F1 (real, synthetic), minutes."""
    rows = []
    for seed in seeds:
        record = json.loads(
            (run.out / "models" / preset / seed_directory(seed) / "training.json").read_text()
        )
        best = record["history"][record["best_epoch"] - 1]
        metrics = json.loads(
            (run.out / "evaluation" / preset / seed_directory(seed) / "metrics.json").read_text()
        )
        rows.append(
            {
                "seed": seed,
                "best epoch": record["best_epoch"],
                "validation macro-F1": best["validation_macro_f1"],
                "test real macro-F1": metrics.get("test_real", {}).get("macro_f1"),
                "test synthetic macro-F1": metrics.get("test_synthetic", {}).get("macro_f1"),
                "test synthetic accuracy": metrics.get("test_synthetic", {}).get("accuracy"),
                # minutes: the tables' ".3g" would print 1,370 s as 1.37e+03
                "training min": round(record["seconds"] / 60, 1),
            }
        )
    return pd.DataFrame(rows).set_index("seed")


def headline_table(analysis: Path) -> pd.DataFrame:
    """Every headline number: the value of each seed, mean, std and agreement (k/n)."""
    values = pd.read_parquet(analysis / "seeds_values.parquet")
    summary = pd.read_parquet(analysis / "seeds.parquet")
    keys = ["finding", "layer", "statistic"]
    wide = values.pivot_table(index=keys, columns="seed", values="value", aggfunc="first")
    wide.columns = [f"seed {seed}" for seed in wide.columns]
    table = summary.set_index(keys).join(wide)
    never = (table.index.get_level_values("finding") == GATE_MIX) & (table["max"] == 0)
    table = table[~never]  # the gates no head of any seed shows
    agreeing = (table["agreement"] * table["n_seeds"]).round().astype("Int64").astype(str)
    table["agree"] = agreeing + "/" + table["n_seeds"].astype(str)
    table.loc[table["kind"] == CATEGORICAL, "mean"] = table["mode"]
    table = table.rename(columns={"mean": "mean (mode)"})
    return table[[*wide.columns, "mean (mode)", "std", "agree"]]


def stream_table(analysis: Path, seeds: tuple[int, ...]) -> pd.DataFrame:
    """I/n at each layer and measuring point, each seed side by side, then mean and std."""
    columns = {}
    for seed in seeds:
        results = load_results(analysis / SEEDS_DIRECTORY / seed_directory(seed))
        table = stream(results)
        suffix = f": {Metric.CONE_NORMALIZED_MEAN}"
        columns[f"seed {seed}"] = table[[c for c in table.columns if c.endswith(suffix)]].stack()
    frame = pd.DataFrame(columns)
    frame.index = frame.index.set_names(["layer", "point"])
    frame = frame.rename(
        index=lambda name: str(name).removesuffix(f": {Metric.CONE_NORMALIZED_MEAN}"), level="point"
    )
    # a layer's input is the layer before's output: kept out
    inputs = frame.index.get_level_values("point") == "layer_input"
    frame = frame[~inputs].dropna(how="all")
    frame["mean"] = frame.mean(axis=1)
    frame["std"] = frame.drop(columns="mean").std(axis=1)
    return frame


def _value(values: pd.DataFrame, finding: str, layer: int, statistic: str) -> pd.Series:
    rows = values[
        (values["finding"] == finding)
        & (values["layer"] == layer)
        & (values["statistic"] == statistic)
    ]
    return rows.set_index("seed")["value"]


def claims_table(analysis: Path) -> pd.DataFrame:
    """The claims of docs/findings.md, each true or false per seed, and in how many seeds."""
    values = pd.read_parquet(analysis / "seeds_values.parquet")
    seeds = sorted(values["seed"].unique())
    cone = values[(values["finding"] == CONE_INDEX)]
    layers = sorted(int(layer) for layer in cone["layer"].unique())
    last = layers[-1]
    probe, silhouette = str(Metric.CLS_PROBE_ACCURACY), str(Metric.CLS_SILHOUETTE)
    cone_metric = str(Metric.CONE_NORMALIZED_MEAN)
    claims: dict[str, pd.Series] = {}

    def claim(text: str, series: pd.Series) -> None:
        claims[text] = series.reindex(seeds)

    def of(finding: str, layer: int, statistic: str) -> pd.Series:
        return _value(values, finding, layer, statistic)

    embeddings = of(CONE_INDEX, -1, cone_metric)
    claim(
        f"cone: I/n rises from the embeddings to layer {last}",
        of(CONE_INDEX, last, cone_metric) > embeddings,
    )
    claim(
        "cone: I/n rises at every layer",
        pd.concat(
            [
                of(CONE_INDEX, b, cone_metric) > of(CONE_INDEX, a, cone_metric)
                for a, b in itertools.pairwise(layers)
            ],
            axis=1,
        ).all(axis=1),
    )
    for layer in layers:
        claim(
            f"control: trained I/n above the untrained at layer {layer}",
            of(TRAINED_MINUS_CONTROL, layer, cone_metric) > 0,
        )
    for layer in layers[1:]:
        claim(f"[CLS] probe >= 0.9 at layer {layer}", of(SEPARABILITY, layer, probe) >= 0.9)
        claim(
            f"[CLS] silhouette >= 0.5 at layer {layer}", of(SEPARABILITY, layer, silhouette) >= 0.5
        )
        claim(
            f"control: trained [CLS] silhouette above the untrained by > 0.3 at layer {layer}",
            of(TRAINED_MINUS_CONTROL, layer, silhouette) > 0.3,
        )
        claim(
            f"control: trained [CLS] probe above the untrained at layer {layer}",
            of(TRAINED_MINUS_CONTROL, layer, probe) > 0,
        )
    separation = values[values["finding"] == SEPARATION_LAYER].set_index("seed")["value"]
    claim(f"[CLS] classes separate at layer {layers[1]} (the first)", separation == layers[1])
    for mode in ("zero", "mean"):
        costliest = values[
            (values["finding"] == COSTLIEST_LAYER) & (values["statistic"] == mode)
        ].set_index("seed")["value"]
        claim(f"ablation ({mode}): layer 0's block is the costliest", costliest == 0)
        for layer in layers[1:]:
            cost = of(LAYER_ABLATION_COST, layer, f"{mode}.{AblationMetric.ACCURACY}")
            claim(f"ablation ({mode}): layer {layer}'s block costs > 2 points", cost > 0.02)
        head = of(COSTLIEST_HEAD_COST, -1, f"{mode}.{AblationMetric.ACCURACY}")
        claim(f"ablation ({mode}): the costliest single head costs < 5 points", head < 0.05)
        block = (
            values[
                (values["finding"] == LAYER_ABLATION_COST)
                & (values["statistic"] == f"{mode}.{AblationMetric.ACCURACY}")
            ]
            .groupby("seed")["value"]
            .max()
        )
        claim(
            f"ablation ({mode}): the costliest block costs > 3x the costliest head",
            block > 3 * head,
        )
        head_layer = values[
            (values["finding"] == COSTLIEST_HEAD_LAYER) & (values["statistic"] == mode)
        ].set_index("seed")["value"]
        claim(f"ablation ({mode}): the costliest head is in layer 0", head_layer == 0)
    for layer in layers[1:]:
        excess = of(KEY_MASKING_EXCESS, layer, AblationMetric.TRUE_LOG_PROBABILITY)
        claim(
            f"key masking: layer {layer}'s mutation keys cost more than matched keys",
            excess > 0,
        )
    top = values[values["finding"] == KEY_MASKING_HEAD_LAYER].set_index("seed")["value"]
    claim("key masking: the head it costs most is in layer 0", top == 0)
    table = pd.DataFrame(claims).T
    table.columns = [f"seed {seed}" for seed in seeds]
    table = table.astype("boolean")
    holds = table.sum(axis=1).astype(int).astype(str) + f"/{len(seeds)}"
    cells = table.astype(object).map(lambda v: "n/a" if v is pd.NA else ("yes" if v else "no"))
    return cells.assign(**{"holds in": holds})


def gate_table(analysis: Path) -> pd.DataFrame:
    """Per layer and seed: the most common dominant gate and its share."""
    values = pd.read_parquet(analysis / "seeds_values.parquet")
    mix = values[values["finding"] == GATE_MIX]
    top = mix.loc[mix.groupby(["seed", "layer"])["value"].idxmax()]
    top = top.assign(cell=top["statistic"] + " " + top["value"].map("{:.2f}".format))
    table = top.pivot(index="layer", columns="seed", values="cell")
    table.columns = [f"seed {seed}" for seed in table.columns]
    return table


def _rows(series: pd.Series) -> list[tuple[int, int, float]]:
    """``(layer, head, value)`` of a series indexed by layer and head, in layer and head order
    (ablation costs come costliest first)."""
    series = series.sort_index()
    layers, heads = series.index.get_level_values(0), series.index.get_level_values(1)
    return [
        (int(layer), int(head), float(value))
        for layer, head, value in zip(layers, heads, series, strict=True)
    ]


def accuracy_costs_table(analysis: Path, seeds: tuple[int, ...]) -> pd.DataFrame:
    """Per seed, the accuracy on the test split and its drops (points of accuracy, all inputs)
    when each layer's attention block is zeroed or mean-replaced, when its mutation-token keys
    are masked in all its heads, or as many position-matched keys; and the costliest single
    head's drop (whichever head it is) for each."""
    columns = {}
    for seed in seeds:
        path = analysis / SEEDS_DIRECTORY / seed_directory(seed) / "ablation.parquet"
        table = pd.read_parquet(path)
        everyone = table[(table["class"] == "all") & (table["metric"] == AblationMetric.ACCURACY)]
        baseline = float(everyone[everyone["mode"] == "none"]["value"].iloc[0])
        cells: dict[str, float] = {"accuracy, nothing ablated": baseline}
        masks = key_masking(path)
        for mode in ("zero", "mean"):
            costs = ablation_costs(path, mode)[f"{AblationMetric.ACCURACY} drop"]
            for layer, head, value in _rows(costs):
                if head < 0:
                    cells[f"layer {layer} block {mode}"] = value
            cells[f"costliest head {mode}"] = float(
                costs[costs.index.get_level_values(1) >= 0].max()
            )
        for which in ("mutation", "matched"):
            drops = masks[(which, f"{AblationMetric.ACCURACY} drop")]
            for layer, head, value in _rows(drops):
                if head < 0:
                    cells[f"layer {layer} {which} keys masked"] = value
            cells[f"costliest head {which} keys"] = float(
                drops[drops.index.get_level_values(1) >= 0].max()
            )
        columns[f"seed {seed}"] = cells
    frame = pd.DataFrame(columns)
    frame["mean"] = frame.mean(axis=1)
    return frame


def enrichment_table(analysis: Path, seeds: tuple[int, ...]) -> pd.DataFrame:
    """Per layer and seed, over the layer's heads (class all): the median and range of the
    position-matched enrichment on defining mutations, on other changes, and of the untrained
    control on defining mutations (attention only)."""
    columns = {}
    index = None
    for seed in seeds:
        results = load_results(analysis / SEEDS_DIRECTORY / seed_directory(seed))
        sources = {
            "defining": (results, Metric.SPIKE_MUTATIONS_ENRICHMENT),
            "other changes": (results, Metric.SPIKE_CHANGES_ENRICHMENT),
        }
        if results.control_path is not None:
            control = load_results(results.control_path)
            sources["control, defining"] = (control, Metric.SPIKE_MUTATIONS_ENRICHMENT)
        for name, (source, metric) in sources.items():
            if source.mutations is None and "control" not in name:
                continue
            table = mutation_enrichment(source, metric)
            if "all" not in table.columns:
                continue
            per_layer = table["all"].groupby(level="layer")
            columns[f"seed {seed}: {name}"] = [
                f"{median:.3g} ({low:.3g}-{high:.3g})"
                for median, low, high in zip(
                    per_layer.median(), per_layer.min(), per_layer.max(), strict=True
                )
            ]
            index = per_layer.median().index
    frame = pd.DataFrame(columns, index=index)
    frame.index.name = "layer"
    return frame


# --- when the geometry forms -----------------------------------------------------------------


def _cell(meets: pd.Series) -> tuple[int | None, int | None]:
    met = meets[meets.astype(bool)]
    first = int(met.index[0]) if not met.empty else None
    return first, held_step(meets)


def formation(training: pd.DataFrame) -> pd.DataFrame:
    """One row per curve (module docstring): ``quantity``, ``layer``, ``first``, ``held``."""
    rows: list[dict[str, Any]] = []

    def add(quantity: str, layer: int, meets: pd.Series) -> None:
        if meets.empty:
            return
        first, held = _cell(meets)
        rows.append({"quantity": quantity, "layer": layer, "first": first, "held": held})

    f1 = checkpoint_table(training)["validation_macro_f1"]
    add("validation macro-F1 >= 90 % of final", -1, reaching(f1, 0.9))
    add("validation macro-F1 >= 99 % of final", -1, reaching(f1, 0.99))
    for metric, name, skip_embeddings in (
        (Metric.CONE_NORMALIZED_MEAN, "token cone I/n", False),
        (Metric.CLS_SILHOUETTE, "[CLS] silhouette", True),
        (Metric.CLS_PROBE_ACCURACY, "[CLS] probe accuracy", True),
    ):
        curves = layer_curves(training, metric, "layer_output")
        for layer, point in column_pairs(curves):
            if skip_embeddings and layer < 0:
                continue
            add(f"{name} within 10 % of final", layer, within(curves[(layer, point)]))
    mix = gate_mix_curves(training)
    if not mix.empty:
        for layer in sorted({layer for layer, _ in column_pairs(mix)}):
            add("gate mix within 0.1 TV of final", layer, settled(of_layer(mix, layer)))
    return pd.DataFrame(rows)


def formation_table(run: Run, preset: str, seeds: tuple[int, ...]) -> pd.DataFrame:
    """Per curve and seed ``first / held``, and in how many seeds it holds for good no later
    than validation macro-F1 first reaches 90 % (and 99 %) of its final value."""
    per_seed = {}
    f1_steps: dict[int, tuple[float, float]] = {}
    for seed in seeds:
        path = run.out / "training" / preset / seed_directory(seed) / "training.parquet"
        table = formation(pd.read_parquet(path)).set_index(["quantity", "layer"])
        per_seed[seed] = table
        first = pd.to_numeric(table["first"], errors="coerce")
        f1_steps[seed] = (
            float(first[("validation macro-F1 >= 90 % of final", -1)]),
            float(first[("validation macro-F1 >= 99 % of final", -1)]),
        )
    index = per_seed[seeds[0]].index
    frame = pd.DataFrame(index=index)

    def text(value: Any) -> str:
        return (
            "never"
            if value is None or (isinstance(value, float) and math.isnan(value))
            else (str(int(value)))
        )

    before90 = pd.Series(0, index=index)
    before99 = pd.Series(0, index=index)
    for seed, table in per_seed.items():
        table = table.reindex(index)
        frame[f"seed {seed}"] = [
            f"{text(first)} / {text(held)}"
            for first, held in zip(table["first"], table["held"], strict=True)
        ]
        held = pd.to_numeric(table["held"], errors="coerce")
        f90, f99 = f1_steps[seed]
        before90 += (held <= f90).astype(int)
        before99 += (held <= f99).astype(int)
    frame["held by F1 90 %"] = before90.astype(str) + f"/{len(seeds)}"
    frame["held by F1 99 %"] = before99.astype(str) + f"/{len(seeds)}"
    return frame


def tables(run: Run, presets: dict[str, tuple[int, ...]], spec: InputSpec) -> str:
    """Every table of the module docstring as Markdown."""
    dataset = load_dataset(spec.path)
    parts = [f"machine: {machine()}", ""]
    for preset, seeds in presets.items():
        if not seeds:
            continue
        shape = PRESETS[preset]
        analysis = run.out / "analysis" / preset
        parts += [
            f"## {preset} ({shape.num_hidden_layers} layers x {shape.num_attention_heads} heads, "
            f"hidden {shape.hidden_size}), seeds {', '.join(map(str, seeds))}",
            "",
        ]
        sections = [
            ("Models", models_table(run, preset, seeds)),
            ("Claims of docs/findings.md, per seed", claims_table(analysis)),
            ("Accuracy and its drops under ablation", accuracy_costs_table(analysis, seeds)),
            ("Most common dominant gate per layer", gate_table(analysis)),
            ("Cone index I / n per layer and measuring point", stream_table(analysis, seeds)),
            (
                "Enrichment on mutations per layer: median (range) over its heads",
                enrichment_table(analysis, seeds),
            ),
            ("Every headline number (analyze --over-seeds)", headline_table(analysis)),
            (
                f"When the geometry forms: step first / held (steps per epoch "
                f"{steps_per_epoch(dataset, preset)}; {recipe(run, preset)})",
                formation_table(run, preset, seeds),
            ),
        ]
        for title, table in sections:
            parts += [f"### {title}", "", table.to_markdown(floatfmt=".3g"), ""]
    return "\n".join(parts)


def seeds_of(text: str, option: str) -> tuple[int, ...]:
    """The seeds of ``--small-seeds`` or ``--deep-seeds``; none for an empty text or 'none'."""
    return () if text.strip() in ("", "none") else parse_seeds(text, option)


def recipe(run: Run, preset: str) -> str:
    """The epochs and checkpoint schedule the models of ``preset`` were trained with."""
    record = json.loads((run.out / "models" / preset / SEEDS_MANIFEST).read_text())
    options = record["options"]
    epochs = options.get("epochs") or PRESETS[preset].epochs
    return f"{epochs} epochs; checkpoints at steps {options.get('checkpoints')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("findings-output"))
    parser.add_argument("--small-seeds", default="0,1,2")
    parser.add_argument("--deep-seeds", default="0,1,2")
    parser.add_argument("--data-seed", type=int, default=42)
    parser.add_argument(
        "--small-epochs", type=int, help="Epochs of the small models (default: the preset's)."
    )
    parser.add_argument(
        "--deep-epochs", type=int, help="Epochs of the deep models (default: the preset's)."
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: torch's). On a machine shared with other jobs, 1 thread "
        "trained 3-7x faster than 2 (the run of docs/findings.md used 1).",
    )
    parser.add_argument(
        "--tables-only", action="store_true", help="Print the tables of what is done; no work."
    )
    arguments = parser.parse_args()
    if arguments.threads:
        import torch

        torch.set_num_threads(arguments.threads)
    presets = {
        "small": seeds_of(arguments.small_seeds, "--small-seeds"),
        "deep": seeds_of(arguments.deep_seeds, "--deep-seeds"),
    }
    arguments.out.mkdir(parents=True, exist_ok=True)
    run = Run(arguments.out, {"small": arguments.small_epochs, "deep": arguments.deep_epochs})
    started = time.perf_counter()
    data = run.data(arguments.data_seed)
    spec = InputSpec("data", data, split="test")
    if not arguments.tables_only:
        for preset, seeds in presets.items():
            if not seeds:
                continue
            models = run.train(preset, seeds, data)
            for seed in seeds:
                run.over_training(preset, seed, spec)
            run.over_seeds(preset, models, spec)
        run.timed(
            f"run {arguments.small_seeds} | {arguments.deep_seeds}", time.perf_counter() - started
        )
    report = tables(run, presets, spec)
    (arguments.out / "findings.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
