"""The report's manifest sections: what was analysed (the overview, first) and the folded
metadata (model, data, parameters, versions and timings, last)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bertgeom.names import ReportSection
from bertgeom.report.content import Cards, Paragraph, Section, Table
from bertgeom.results.store import Results

MODEL_KEYS = (
    *("path", "name_or_path", "model_type", "architectures", "loaded_as", "n_layers"),
    *("n_heads", "hidden_size", "head_size", "max_tokens", "vocab_size", "parameters"),
    *("classes", "attention_implementation"),
)
"""Manifest model entries shown, in this order."""
DATA_KEYS = (
    *("source", "path", "split", "labels", "read", "analysed", "skipped", "truncated"),
    *("unlabelled", "max_length", "longest_input_tokens"),
)


def overview(results: Results) -> Section:
    """What was analysed, in one sentence, and the inputs per class (the details are in the
    folded metadata section at the end)."""
    section = Section(ReportSection.OVERVIEW, "What was analysed")
    model = results.manifest.get("model", {})
    data = results.manifest.get("data", {})
    name = Path(str(model.get("name_or_path") or model.get("path") or "a model")).name
    shape = ", ".join(
        f"{model[key]} {label}"
        for key, label in (("n_layers", "layers"), ("n_heads", "heads"), ("hidden_size", "hidden"))
        if key in model
    )
    section.blocks.append(
        Paragraph(
            f"{name} ({model.get('model_type', 'unknown type')}; {shape}) analysed on "
            f"{data.get('analysed', '?')} inputs from {data.get('source', '?')}; model path, "
            "parameters, versions and timings are in the metadata at the end."
        )
    )
    caveats = [str(caveat) for caveat in model.get("caveats") or ()]
    if caveats:
        section.blocks.append(
            Paragraph(
                f"What the definitions mean for this {model.get('model_type')} model: "
                + " ".join(caveat if caveat.endswith(".") else f"{caveat}." for caveat in caveats)
            )
        )
    counts = data.get("classes") or {}
    if counts:
        frame = pd.DataFrame({"class": list(counts), "inputs": list(counts.values())})
        section.blocks.append(Table.from_frame(frame, "Inputs analysed per class."))
    return section


def metadata(results: Results) -> Section:
    """Model, data, parameters, versions and timings of the manifest: a folded section."""
    section = Section(
        ReportSection.METADATA, "Metadata: model, data, parameters, timings", folded=True
    )
    manifest = results.manifest
    model = manifest.get("model", {})
    data = manifest.get("data", {})
    section.blocks.append(
        Paragraph(
            f"Model {model.get('path') or model.get('name_or_path') or '?'}; data "
            f"{data.get('source', '?')} {data.get('path', '')}; results in {results.path}."
        )
    )
    cards = [
        ("Model", Table.from_pairs([(k, model[k]) for k in MODEL_KEYS if k in model])),
        ("Data", Table.from_pairs([(k, data[k]) for k in DATA_KEYS if k in data])),
    ]
    if isinstance(manifest.get("control"), dict):
        cards.append(("Control", Table.from_pairs(_flatten(manifest["control"]))))
    section.blocks.append(Cards(cards))
    cards = [
        (title, Table.from_pairs(_flatten(manifest[key])))
        for key, title in (
            ("parameters", "Options"),
            ("measurements", "Measurements"),
            ("versions", "Versions"),
            ("timings", "Timings (seconds unless named)"),
        )
        if manifest.get(key)
    ]
    if cards:
        section.blocks.append(Cards(cards))
    return section


def _flatten(values: dict[str, object]) -> list[tuple[str, object]]:
    """Key/value pairs, nested dictionaries spelled ``outer: inner`` after the plain values."""
    pairs = [(key, value) for key, value in values.items() if not isinstance(value, dict)]
    pairs += [
        (f"{key}: {inner}", item)
        for key, value in values.items()
        if isinstance(value, dict)
        for inner, item in value.items()
    ]
    return pairs
