"""The headline numbers of a model, and how they agree across the seeds of one recipe.

:func:`headline_values` reads, from one results directory's findings
(:mod:`bertgeom.report.findings`), the numbers the report's findings are made of, one row
each: ``finding``, ``layer`` (-1 where the number is the model's, not a layer's; for
``cone_index`` layer -1 is the embeddings, as in ``layers.parquet``), ``statistic``, ``kind``
(``numeric`` or ``categorical``) and ``value``. :func:`across_seeds` sets the rows of several
seeds side by side and gives each number's mean, spread and the share of seeds that agree.

Head identities are not comparable across seeds: head 3 of layer 1 of one seed has no reason
to do what head 3 of layer 1 of another does. So nothing here compares heads by their ids:
every number is a layer's (cone index, separability, gate mix, a layer's ablation cost,
trained minus control) or a rank's (the cost of the costliest head, whichever it is, and the
layer it lies in). Heads are not matched by their attention maps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from bertgeom.names import AblationMetric, Metric
from bertgeom.report.findings import MEAN, ZERO, Summary, masking_costs

NUMERIC, CATEGORICAL = "numeric", "categorical"
NO_LAYER = -1
"""``layer`` of a number that is the model's, not one layer's."""

CONE_INDEX = "cone_index"
"""I/n of each input's tokens at each layer's output, class ``all`` (-1: the embeddings)."""
SEPARABILITY = "cls_separability"
"""Each ``[CLS]`` separability metric at each layer's output, all classes."""
SEPARATION_LAYER = "separation_layer"
"""Categorical: the first layer where the ``[CLS]`` classes separate (``findings.separation``;
NaN: never), statistic the metric that decided it."""
GATE_MIX = "gate_mix"
"""Each dominant gate's share of a layer's heads x inputs (statistic: the gate)."""
LAYER_ABLATION_COST = "ablation.layer_cost"
"""Drop of a metric when a layer's whole attention block is ablated (statistic
``<mode>.<metric>``)."""
COSTLIEST_LAYER = "ablation.costliest_layer"
"""Categorical: the layer whose block ablation costs most (statistic: the mode)."""
COSTLIEST_HEAD_LAYER = "ablation.costliest_head_layer"
"""Categorical: the layer of the costliest single head (statistic: the mode); by rank, not id."""
COSTLIEST_HEAD_COST = "ablation.costliest_head_cost"
"""Drop of a metric when the costliest single head is ablated (statistic ``<mode>.<metric>``)."""
KEY_MASKING_EXCESS = "key_masking.excess"
"""Drop of the true class's log-probability when the mutation tokens' keys are masked, minus
the drop when as many position-matched keys are: of the head where it is largest (layer -1),
and of each layer's heads masked at once (per layer, when the ablation has block rows)."""
KEY_MASKING_HEAD_LAYER = "key_masking.top_head_layer"
"""Categorical: the layer of the head with the largest key-masking excess."""
TRAINED_MINUS_CONTROL = "trained_minus_control"
"""Per layer, the trained model's cone index and separability minus its untrained control's."""

FINDINGS = (
    CONE_INDEX,
    SEPARABILITY,
    SEPARATION_LAYER,
    GATE_MIX,
    LAYER_ABLATION_COST,
    COSTLIEST_LAYER,
    COSTLIEST_HEAD_LAYER,
    COSTLIEST_HEAD_COST,
    KEY_MASKING_EXCESS,
    KEY_MASKING_HEAD_LAYER,
    TRAINED_MINUS_CONTROL,
)
"""Every finding, in the order of the tables."""
COST_STATISTICS = (AblationMetric.ACCURACY, AblationMetric.TRUE_LOG_PROBABILITY)
"""The ablation metrics whose drops are headline numbers."""

VALUE_COLUMNS = ["finding", "layer", "statistic", "kind", "value"]
SEEDS_SCHEMA = pa.schema(
    [
        ("finding", pa.string()),
        ("layer", pa.int64()),
        ("statistic", pa.string()),
        ("kind", pa.string()),
        ("mean", pa.float64()),
        ("std", pa.float64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("mode", pa.float64()),
        ("n_seeds", pa.int64()),
        ("agreement", pa.float64()),
    ]
)
"""``seeds.parquet``: one row per headline number (:func:`across_seeds`)."""

Row = tuple[str, int, str, str, float]


def headline_values(summary: Summary, control: Summary | None = None) -> pd.DataFrame:
    """The headline numbers of one model (module docstring), with ``control`` the findings
    of its untrained control when the analysis ran one."""
    rows: list[Row] = []
    cone = summary.cone[["I/n"]].rename(columns={"I/n": str(Metric.CONE_NORMALIZED_MEAN)})
    rows += _per_layer(CONE_INDEX, cone)
    rows += _per_layer(SEPARABILITY, summary.separability)
    found = summary.separation
    if found is not None:
        layer = float("nan") if found.layer is None else float(found.layer)
        rows.append((SEPARATION_LAYER, NO_LAYER, str(found.metric), CATEGORICAL, layer))
    rows += _per_layer(GATE_MIX, summary.gate_mix)
    rows += _ablation(summary)
    rows += _key_masking(summary)
    if control is not None:
        rows += _trained_minus_control(summary, control)
    frame = pd.DataFrame(rows, columns=VALUE_COLUMNS)
    return frame.astype({"layer": "int64", "value": "float64"})


def _per_layer(finding: str, table: pd.DataFrame) -> list[Row]:
    """A ``layer x statistic`` table as rows."""
    rows: list[Row] = []
    for statistic in table.columns:
        for layer, value in zip(table.index, table[statistic].to_numpy(float), strict=True):
            rows.append((finding, int(layer), str(statistic), NUMERIC, float(value)))
    return rows


def _ablation(summary: Summary) -> list[Row]:
    """Per ablation mode (zero, mean): each layer's block cost, the costliest layer, and the
    costliest head's layer and cost (the head by rank, not by id)."""
    rows: list[Row] = []
    for mode in (ZERO, MEAN):
        layers = summary.layer_costs(mode)
        if not layers.empty:
            rows.append((COSTLIEST_LAYER, NO_LAYER, mode, CATEGORICAL, float(layers["layer"][0])))
            for _, row in layers.sort_values("layer").iterrows():
                for metric in COST_STATISTICS:
                    statistic = f"{mode}.{metric}"
                    rows.append(
                        (LAYER_ABLATION_COST, int(row["layer"]), statistic, NUMERIC, row[metric])
                    )
        heads = summary.head_costs(mode)
        if not heads.empty:
            top = heads.iloc[0]
            rows.append((COSTLIEST_HEAD_LAYER, NO_LAYER, mode, CATEGORICAL, float(top["layer"])))
            for metric in COST_STATISTICS:
                rows.append(
                    (COSTLIEST_HEAD_COST, NO_LAYER, f"{mode}.{metric}", NUMERIC, float(top[metric]))
                )
    return [(f, layer, s, k, float(v)) for f, layer, s, k, v in rows]


def _key_masking(summary: Summary) -> list[Row]:
    """The key-masking excess of the head where it is largest and of each layer's block, and
    the layer of that head."""
    rows: list[Row] = []
    statistic = str(AblationMetric.TRUE_LOG_PROBABILITY)
    heads = masking_costs(summary)
    if not heads.empty:
        top = heads.iloc[0]
        excess = float(top["mutations"] - top["matched"])
        rows.append((KEY_MASKING_EXCESS, NO_LAYER, statistic, NUMERIC, excess))
        rows.append((KEY_MASKING_HEAD_LAYER, NO_LAYER, "layer", CATEGORICAL, float(top["layer"])))
    blocks = masking_costs(summary, block=True)
    for _, row in blocks.sort_values("layer").iterrows():
        excess = float(row["mutations"] - row["matched"])
        rows.append((KEY_MASKING_EXCESS, int(row["layer"]), statistic, NUMERIC, excess))
    return rows


def _trained_minus_control(summary: Summary, control: Summary) -> list[Row]:
    """Per layer, the cone index and each separability metric minus the control's."""

    def numbers(one: Summary) -> pd.DataFrame:
        cone = one.cone["I/n"].rename(str(Metric.CONE_NORMALIZED_MEAN))
        return pd.concat([cone, one.separability], axis=1)

    trained, untrained = numbers(summary), numbers(control)
    columns = [column for column in trained.columns if column in untrained.columns]
    difference = (trained[columns] - untrained[columns]).dropna(how="all")
    return _per_layer(TRAINED_MINUS_CONTROL, difference)


def across_seeds(values: pd.DataFrame) -> pd.DataFrame:
    """One row per headline number of ``values`` (the rows of :func:`headline_values` of
    every seed, with a ``seed`` column): over the seeds where it is a finite number, its
    ``mean``, ``std`` (sample standard deviation, NaN for one seed), ``min`` and ``max``;
    ``n_seeds`` the seeds that have it; ``agreement`` the share of them that agree: for a
    numeric number, those whose value has the sign of the mean; for a categorical one (a
    layer), those whose value is the modal value ``mode`` (NaN, "never", is a value too;
    ties go to the smaller layer, NaN last)."""
    rows = []
    keys = ["finding", "layer", "statistic", "kind"]
    for (finding, layer, statistic, kind), group in values.groupby(keys, sort=False):
        numbers = group["value"].to_numpy(dtype=float)
        finite = numbers[np.isfinite(numbers)]
        mean = float(finite.mean()) if finite.size else float("nan")
        mode = float("nan")
        if kind == CATEGORICAL:
            counts = pd.Series(numbers).value_counts(dropna=False, sort=False)
            counts = counts.sort_index(na_position="last")
            mode = float(counts.index[int(np.argmax(counts.to_numpy()))])
            agreeing = int(counts.max())
            n_seeds = len(numbers)
        else:
            agreeing = int((np.sign(finite) == np.sign(mean)).sum())
            n_seeds = int(finite.size)
        rows.append(
            {
                "finding": finding,
                "layer": int(np.asarray(layer)),
                "statistic": statistic,
                "kind": kind,
                "mean": mean,
                "std": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
                "min": float(finite.min()) if finite.size else float("nan"),
                "max": float(finite.max()) if finite.size else float("nan"),
                "mode": mode,
                "n_seeds": n_seeds,
                "agreement": agreeing / n_seeds if n_seeds else float("nan"),
            }
        )
    table = pd.DataFrame(rows, columns=SEEDS_SCHEMA.names)
    order = {finding: index for index, finding in enumerate(FINDINGS)}
    table = table.sort_values(
        ["finding", "statistic", "layer"], key=lambda c: c.map(order) if c.name == "finding" else c
    )
    return table.reset_index(drop=True)
