"""The report's first section, "Findings": short sentences with the numbers that matter, the
heads whose ablation costs most, the model beside its untrained control, and two compact
figures; every number comes from :mod:`bertgeom.report.findings`."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pandas as pd

from bertgeom.names import AblationMetric, ReportSection
from bertgeom.report.content import Block, Bullets, Missing, Section
from bertgeom.report.findings import (
    MEAN,
    ZERO,
    Summary,
    cell,
    head_name,
    head_profile,
    layer_name,
    load_control,
    masking_costs,
    results_label,
    separation_phrase,
    summarize,
)
from bertgeom.report.findings_blocks import (
    comparison_table,
    gate_mix_figure,
    per_layer_figure,
    top_heads_table,
)
from bertgeom.results.store import Results


def findings(results: Results) -> Section:
    """The findings of ``results``, beside those of its control when it has one."""
    section = Section(ReportSection.FINDINGS, "Findings")
    summary = summarize(results, results_label(results, "trained"))
    control_results, problem = load_control(results)
    control = None
    if control_results is not None:
        control = summarize(control_results, results_label(control_results, "untrained control"))
    section.blocks.extend(summary_blocks(summary, control))
    section.blocks.extend(missing_lines(summary, control, problem))
    section.blocks.extend(side_by_side_blocks([summary] + ([control] if control else [])))
    return section


def summary_blocks(summary: Summary, control: Summary | None = None) -> list[Block]:
    """The sentences of one model (with its control's numbers) and its costliest heads."""
    blocks: list[Block] = []
    items = sentences(summary, control)
    if items:
        blocks.append(Bullets(items))
    table = top_heads_table(summary)
    if table is not None:
        blocks.append(table)
    return blocks


def side_by_side_blocks(summaries: Sequence[Summary]) -> list[Block]:
    """The table of the summaries side by side and the per-layer figures of all of them."""
    blocks: list[Block] = []
    if len(summaries) > 1:
        table = comparison_table(summaries)
        if table.rows:
            blocks.append(table)
    lines = per_layer_figure(summaries)
    if lines is not None:
        blocks.append(lines)
    mix = gate_mix_figure(summaries)
    if mix is not None:
        blocks.append(mix)
    return blocks


def sentences(summary: Summary, control: Summary | None = None) -> list[str]:
    """The findings as sentences, each with its numbers and, where given, the control's."""
    found = [
        cone_sentence(summary, control),
        separation_sentence(summary, control),
        gate_sentence(summary, control),
        *ablation_sentences(summary),
    ]
    return [text for text in found if text]


def cone_sentence(summary: Summary, control: Summary | None = None) -> str | None:
    def span(of: Summary) -> tuple[int, int] | None:
        values = of.cone["I/n"].dropna() if "I/n" in of.cone else pd.Series(dtype=float)
        return (int(values.index.min()), int(values.index.max())) if len(values) > 1 else None

    layers = span(summary)
    if layers is None:
        return None
    first, last = layers
    cone = summary.cone
    text = (
        f"Cone index I/n of each input's tokens (1 = all point one way; mean over inputs): "
        f"{cell(cone, first, 'I/n'):.3g} at {layer_name(first)}, {cell(cone, last, 'I/n'):.3g} "
        f"after the last layer ({last})"
    )
    cosines = cell(cone, first, "mean cosine"), cell(cone, last, "mean cosine")
    if np.isfinite(cosines).all():
        text += f"; mean cosine {cosines[0]:.2f} to {cosines[1]:.2f}"
    steps = summary.stream
    if len(steps) > 1:
        changes = [(after - before, name) for (_, before), (name, after) in pairwise(steps)]
        change, name = max(changes, key=lambda item: abs(item[0]))
        text += f". The largest change is in {name} ({change:+.2g})"
    if control is not None and (other := span(control)) is not None:
        text += (
            f". {control.label.capitalize()}: {cell(control.cone, other[0], 'I/n'):.3g} at "
            f"{layer_name(other[0])}, {cell(control.cone, other[1], 'I/n'):.3g} after layer "
            f"{other[1]}"
        )
    return text + "."


def separation_sentence(summary: Summary, control: Summary | None = None) -> str | None:
    found = summary.separation
    phrase = separation_phrase(summary)
    if found is None or phrase is None:
        return None
    values = summary.separability[found.metric].dropna()
    verdict = (
        f"separate at {phrase}"
        if found.layer is not None
        else f"never separate (best {found.best:.3g}, at {layer_name(found.best_layer)})"
    )
    text = (
        f"The [CLS] classes {verdict}, taking as separated the first layer at which "
        f"{found.description} reaches {found.threshold:g}; it goes from {values.iloc[0]:.3g} at "
        f"{layer_name(int(values.index[0]))} to {values.iloc[-1]:.3g} after layer "
        f"{int(values.index[-1])}"
    )
    other = separation_phrase(control) if control is not None else None
    if control is not None and other is not None:
        text += f". {control.label.capitalize()}: {other}"
    return text + "."


def _gate_mix_phrase(summary: Summary) -> str | None:
    """The most common gate of each layer, consecutive layers with the same one grouped:
    "layers 0-3 open 62-80 %, layer 4 directional 40 %"."""
    mix = summary.gate_mix
    if mix.empty:
        return None
    runs: list[tuple[list[int], str, list[float]]] = []
    for layer, row in zip(mix.index.astype(int), mix.to_numpy(float), strict=True):
        best = int(np.argmax(row))
        gate, share = str(mix.columns[best]), float(row[best])
        if runs and runs[-1][1] == gate:
            runs[-1][0].append(int(layer))
            runs[-1][2].append(share)
        else:
            runs.append(([int(layer)], gate, [share]))
    parts = []
    for layers, gate, shares in runs:
        where = f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"
        low, high = round(100 * min(shares)), round(100 * max(shares))
        parts.append(f"{where} {gate} {low}%" if low == high else f"{where} {gate} {low}-{high}%")
    return ", ".join(parts)


def gate_sentence(summary: Summary, control: Summary | None = None) -> str | None:
    phrase = _gate_mix_phrase(summary)
    if phrase is None:
        return None
    text = f"Most common dominant gate per layer (share of the layer's heads x inputs): {phrase}"
    other = _gate_mix_phrase(control) if control is not None else None
    if control is not None and other is not None:
        text += f". {control.label.capitalize()}: {other}"
    return text + "."


def ablation_sentences(summary: Summary) -> list[str]:
    """The costliest head under zero (and mean) ablation, with what it attends to, the
    costliest whole attention block, and the costliest masking of the mutation tokens."""
    found = []
    zero, mean = summary.head_costs(ZERO), summary.head_costs(MEAN)
    baseline = summary.baseline.get(AblationMetric.ACCURACY)
    if not zero.empty:
        top = zero.iloc[0]
        drop = top[AblationMetric.ACCURACY]
        accuracy = f"accuracy {_signed(-drop)}"
        if baseline is not None:
            after = baseline - drop
            accuracy = f"accuracy {baseline:.3g} to {after:.3g} ({_signed(-drop)})"
        text = (
            f"Zeroing head {head_name(top)} costs most: {accuracy}, "
            f"macro-F1 {_signed(-top[AblationMetric.MACRO_F1])}, mean log-probability of the "
            f"true class {_signed(-top[AblationMetric.TRUE_LOG_PROBABILITY])}"
        )
        text += _attends_to(summary, int(top["layer"]), int(top["head"]))
        text += _class_hurt_most(summary, int(top["layer"]), int(top["head"]))
        found.append(text + ".")
    if not mean.empty:
        top = mean.iloc[0]
        found.append(
            f"Replacing a head's output by its mean over the data instead, head {head_name(top)} "
            f"costs most ({_drops(top)})."
        )
    blocks = summary.layer_costs(ZERO)
    if not blocks.empty:
        top = blocks.iloc[0]
        found.append(
            f"Zeroing a whole attention block costs most at layer {int(top['layer'])} "
            f"({_drops(top)})."
        )
    masking = masking_costs(summary)
    if not masking.empty:
        top = masking.iloc[0]
        found.append(
            f"Masking, in one head, the keys of the tokens that carry defining mutations costs "
            f"most in head {head_name(top)}: log-probability {_signed(-top['mutations'])}, against "
            f"{_signed(-top['matched'])} when as many position-matched other tokens are masked."
        )
    masking = masking_costs(summary, block=True)
    if not masking.empty:
        top = masking.iloc[0]
        found.append(
            f"Masking those keys in every head of a layer at once costs most at layer "
            f"{int(top['layer'])}: accuracy {_signed(-top['mutations accuracy'])}, "
            f"log-probability {_signed(-top['mutations'])}, against accuracy "
            f"{_signed(-top['matched accuracy'])}, log-probability {_signed(-top['matched'])} "
            f"for as many position-matched tokens."
        )
    return found


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _signed(value: float) -> str:
    """A change with its sign, 3 significant digits, never "-0"."""
    return f"{value + 0.0:+.3g}"


def _drops(row: pd.Series) -> str:
    """The change of accuracy and of the true class's log-probability under an ablation."""
    accuracy = -row[AblationMetric.ACCURACY]
    log_probability = -row[AblationMetric.TRUE_LOG_PROBABILITY]
    return f"accuracy {_signed(accuracy)}, log-probability {_signed(log_probability)}"


def _attends_to(summary: Summary, layer: int, head: int) -> str:
    profile = head_profile(summary.results, layer, head)
    parts = []
    if "gate" in profile:
        parts.append(
            f"it is mostly {_article(str(profile['gate']))} {profile['gate']} gate "
            f"({profile['gate_share']:.0%} of inputs)"
        )
    if "mutations" in profile:
        parts.append(
            f"attends to the defining mutations {profile['mutations']:.3g} x their "
            "position-matched background"
        )
    if "domain" in profile:
        parts.append(
            f"most to the {profile['domain']} domain ({profile['domain_enrichment']:.2g} x its "
            "share of tokens)"
        )
    return "; " + ", ".join(parts) if parts else ""


def _class_hurt_most(summary: Summary, layer: int, head: int) -> str:
    costs = summary.costs
    if costs is None:
        return ""
    rows = costs[
        (costs["mode"] == ZERO)
        & (costs["layer"] == layer)
        & (costs["head"] == head)
        & (costs["class"] != "all")
    ].dropna(subset=[AblationMetric.ACCURACY])
    if rows.empty:
        return ""
    worst = rows.iloc[int(np.argmax(rows[AblationMetric.ACCURACY].to_numpy(float)))]
    drop = worst[AblationMetric.ACCURACY]
    if drop <= 0:
        return ""
    return f"; class {worst['class']} loses most (accuracy {_signed(-drop)})"


def missing_lines(
    summary: Summary, control: Summary | None, control_problem: str | None
) -> list[Missing]:
    """One line for each finding the results cannot give, saying how to get it."""
    lines = []
    results = summary.results
    if results.layers is None:
        lines.append(
            "No layers.parquet: the cone index and [CLS] separability need the global measures "
            "(bertgeom analyze --global)."
        )
    elif summary.separation is None:
        lines.append(
            "No [CLS] separability (cls.probe_accuracy, cls.silhouette): analyse labelled "
            "inputs with --global."
        )
    if summary.gate_mix.empty:
        lines.append("No gate shares in heads.parquet (gate.<g>.share): rerun bertgeom analyze.")
    if results.ablation is None:
        lines.append(
            "No ablation.parquet: no head ablation in these results (bertgeom analyze "
            "--ablation zero,mean,keys ranks the heads by what removing them costs)."
        )
    if control_problem is not None:
        lines.append(f"The control results could not be read: {control_problem}.")
    elif control is None and not isinstance(results.manifest.get("control"), dict):
        lines.append(
            "No control results (control/ in the results directory: the same architecture at "
            "its untrained initial weights, analysed on the same inputs, made by bertgeom "
            "analyze --control random-init): trained vs control is not shown."
        )
    return [Missing(text) for text in lines]
