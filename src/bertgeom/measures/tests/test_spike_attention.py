"""Spike attention measures: against a slow reference loop, on planted attention, and merged."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
import torch

from bertgeom.genomics.kmers import token_starts
from bertgeom.genomics.mutations import Mutation, apply_mutations
from bertgeom.genomics.reference import (
    SPIKE_CODONS,
    SPIKE_DOMAIN_SLUGS,
    SPIKE_START,
    codon_of,
    domain_of,
    reference_spike,
)
from bertgeom.genomics.spike import QCStatus, SpikeRecord
from bertgeom.genomics.token_map import (
    SpikeLayout,
    defining_mutations,
    layout_mutations,
    spike_layout,
)
from bertgeom.measures.spike_attention import SpikeAttentionAccumulator
from bertgeom.measures.spike_values import DOMAINS
from bertgeom.measures.tokens import token_mask

K, STRIDE, HEADS = 12, 9, 2
FULL = len(token_starts(3822, K, STRIDE)) + 2

# (class, mutations, model-input length, N run over sequence offsets)
INPUTS = [
    ("Alpha", ["A23063T", "del21765-21770", "C23709T"], FULL, None),
    ("Alpha", ["A23063T", "del21991-21993"], 300, None),
    ("Delta", ["del22029-22034", "C22995A"], FULL, (1400, 1500)),
    ("Mu", ["ins21990:TAC", "A23063T"], FULL, None),
    ("pre-VOC", [], FULL, (20, 80)),
    ("Alpha", ["C23709T"], FULL, None),
]


def batch_of(rows: list[tuple[str, list[str], int, tuple[int, int] | None]]) -> SpikeLayout:
    sequences, records, lengths = [], [], []
    for _, names, length, n_run in rows:
        edited = apply_mutations([Mutation.parse(name) for name in names])
        sequence = edited.sequence
        if n_run is not None:
            sequence = sequence[: n_run[0]] + "N" * (n_run[1] - n_run[0]) + sequence[n_run[1] :]
        records.append(
            SpikeRecord("x", QCStatus.OK, sequence, edited.reference_positions, edited.is_insertion)
        )
        sequences.append(sequence)
        lengths.append(min(length, len(token_starts(len(sequence), K, STRIDE)) + 2))
    return spike_layout(sequences, records, lengths, K, STRIDE, layout_mutations())


def mask_of(layout: SpikeLayout, lengths: list[int]) -> torch.Tensor:
    seq = layout.span_lo.shape[1]
    return (torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]).long()


def random_attention(mask: torch.Tensor, seed: int, heads: int = HEADS) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    batch, seq = mask.shape
    logits = 3 * torch.randn(batch, heads, seq, seq, generator=generator)
    logits = logits.masked_fill(~mask.bool()[:, None, None, :], -math.inf)
    return torch.softmax(logits, dim=-1)


def lengths_of(rows: list[tuple[str, list[str], int, tuple[int, int] | None]]) -> list[int]:
    return [min(length, FULL) for _, _, length, _ in rows]


def accumulate(
    rows: list[tuple[str, list[str], int, tuple[int, int] | None]], seed: int, layers: int = 2
) -> SpikeAttentionAccumulator:
    layout = batch_of(rows)
    mask = mask_of(layout, lengths_of(rows))
    accumulator = SpikeAttentionAccumulator(
        layers, HEADS, layout_mutations(), defining_mutations(), classes=["Alpha"]
    )
    labels = [row[0] for row in rows]
    for layer in range(layers):
        attention = random_attention(mask, seed + layer)
        accumulator.update(layer, attention, token_mask(mask), layout, labels)
    return accumulator


def reference(
    rows: list[tuple[str, list[str], int, tuple[int, int] | None]], seed: int, layers: int = 2
) -> tuple[
    dict[tuple[int, int, str, str], float], pd.DataFrame, dict[tuple[str, int, int, int], float]
]:
    """The definitions of docs/spike.md, input by input and token by token."""
    layout = batch_of(rows)
    lengths = lengths_of(rows)
    mask = mask_of(layout, lengths)
    names = [m.name for m in layout.mutations]
    metrics: dict[tuple[int, int, str, str], list[float]] = defaultdict(list)
    received: dict[tuple[int, int, str, str], list[float]] = defaultdict(list)
    background: dict[tuple[int, int, str], list[float]] = defaultdict(list)
    codons: dict[tuple[str, int, int, int], list[float]] = defaultdict(list)
    checked_codons = [1, 2, 14, 70, 144, 500, 690, 1000, 1272, 1273]
    for layer in range(layers):
        attention = random_attention(mask, seed + layer).double()
        for b, (label, _, _, _) in enumerate(rows):
            n = lengths[b]
            spans = [(int(layout.span_lo[b, j]), int(layout.span_hi[b, j])) for j in range(n)]
            placed = [j for j in range(n) if spans[j][0] > 0]
            for head in range(HEADS):
                r = [float(attention[b, head, :n, j].sum()) for j in range(n)]
                for group in ("all", label):
                    key = (layer, head, group)
                    metrics[(*key, "spike.special.share")].append((r[0] + r[n - 1]) / sum(r))
                    total = sum(r[j] for j in placed)
                    domain_of_token = {}
                    for j in placed:
                        name = domain_of((spans[j][0] + spans[j][1]) // 2)
                        domain_of_token[j] = SPIKE_DOMAIN_SLUGS.get(name, "other")
                    for slug in DOMAINS:
                        inside = [j for j in placed if domain_of_token[j] == slug]
                        share = sum(r[j] for j in inside) / total
                        metrics[(*key, f"spike.domain.{slug}.share")].append(share)
                        if inside:
                            token_share = len(inside) / len(placed)
                            metrics[(*key, f"spike.domain.{slug}.enrichment")].append(
                                share / token_share
                            )
                    for codon in checked_codons:
                        covering = [
                            j
                            for j in placed
                            if codon_of(spans[j][0]) <= codon <= codon_of(spans[j][1])
                        ]
                        if covering:
                            mean = sum(r[j] for j in covering) / len(covering)
                            codons[(group, layer, head, codon)].append(mean)
                for index, mutation in enumerate(layout.mutations):
                    at = [
                        j
                        for j in placed
                        if spans[j][0] <= mutation.end and spans[j][1] >= mutation.start
                    ]
                    if not at:
                        continue
                    mean = sum(r[j] for j in at) / len(at)
                    if layout.carries[b, index]:
                        received[(layer, head, label, mutation.name)].append(mean)
                    elif layout.observed[b, index]:
                        background[(layer, head, mutation.name)].append(mean)
    table_rows = []
    for (layer, head, label, name), values in received.items():
        if name not in {m.name for m in defining_mutations().get(label, ())}:
            continue
        others = background.get((layer, head, name), [])
        mean_background = float(np.mean(others)) if others else math.nan
        mean_received = float(np.mean(values))
        table_rows.append(
            {
                "layer": layer,
                "head": head,
                "class": label,
                "mutation": name,
                "start": layout.mutations[names.index(name)].start,
                "received": mean_received,
                "background": mean_background,
                "enrichment": mean_received / mean_background,
                "n_carrying": len(values),
                "n_background": len(others),
            }
        )
    means = {key: float(np.mean(values)) for key, values in metrics.items()}
    codon_means = {key: float(np.mean(values)) for key, values in codons.items()}
    return means, pd.DataFrame(table_rows), codon_means


def test_matches_the_reference_loop() -> None:
    accumulator = accumulate(INPUTS, seed=3)
    expected, expected_table, expected_codons = reference(INPUTS, seed=3)
    result = accumulator.result().set_index(["layer", "head", "class", "metric"])["value"]
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    table = accumulator.mutation_table()
    used = table[table["n_carrying"] > 0].set_index(["layer", "head", "class", "mutation"])
    expected_table = expected_table.set_index(["layer", "head", "class", "mutation"])
    assert sorted(used.index) == sorted(expected_table.index)
    joined = used.merge(
        expected_table, left_index=True, right_index=True, suffixes=("", "_expected")
    )
    for column in ("received", "background", "enrichment", "n_carrying", "n_background"):
        np.testing.assert_allclose(
            joined[column].to_numpy(float), joined[f"{column}_expected"].to_numpy(float), rtol=1e-6
        )
    for label in ("Alpha", "Delta"):
        rows = expected_table.reset_index()
        rows = rows[(rows["class"] == label) & (rows["n_background"] > 0)]
        summary = rows.groupby(["layer", "head"])["enrichment"].mean()
        for layer, head, value in summary.reset_index().itertuples(index=False):
            summary_key = (int(layer), int(head), label, "spike.mutations.enrichment")
            assert result[summary_key] == pytest.approx(value, rel=1e-6)
    classes, profile = accumulator.codon_profile()
    assert profile.shape == (len(classes), 2, HEADS, SPIKE_CODONS)
    assert profile.dtype == np.float32
    for (label, layer, head, codon), value in expected_codons.items():
        stored = profile[classes.index(label), layer, head, codon - 1]
        assert stored == pytest.approx(value, rel=1e-5), (label, layer, head, codon)


def test_split_and_merge_equal_one_pass() -> None:
    parts = (INPUTS[:2], INPUTS[2:])
    merged = accumulate(parts[0], seed=5).merge(accumulate(parts[1], seed=5))
    one_pass = SpikeAttentionAccumulator(
        2, HEADS, layout_mutations(), defining_mutations(), classes=["Alpha"]
    )
    for part in parts:
        layout = batch_of(part)
        mask = mask_of(layout, lengths_of(part))
        for layer in range(2):
            attention = random_attention(mask, 5 + layer)
            one_pass.update(layer, attention, token_mask(mask), layout, [row[0] for row in part])
    assert merged.class_names() == one_pass.class_names()
    pd.testing.assert_frame_equal(merged.result(), one_pass.result())
    pd.testing.assert_frame_equal(merged.mutation_table(), one_pass.mutation_table())
    np.testing.assert_array_equal(merged.codon_profile()[1], one_pass.codon_profile()[1])


def planted(
    rows: list[tuple[str, list[str], int, tuple[int, int] | None]], target: str | None
) -> SpikeAttentionAccumulator:
    """Uniform attention, or (``target``) every query's mass on the tokens at that mutation."""
    layout = batch_of(rows)
    mask = mask_of(layout, lengths_of(rows))
    batch, seq = mask.shape
    weights = mask.double()[:, None, None, :].expand(batch, HEADS, seq, seq).clone()
    if target is not None:
        mutation = Mutation.parse(target)
        index = [m.name for m in layout.mutations].index(target)
        at = (layout.span_lo <= mutation.end) & (layout.span_hi >= mutation.start)
        at &= layout.span_lo > 0
        carriers = layout.carries[:, index]
        boosted = torch.where(at & carriers[:, None], 1000.0, 1.0) * mask
        weights = boosted.double()[:, None, None, :].expand(batch, HEADS, seq, seq)
    attention = weights / weights.sum(-1, keepdim=True)
    accumulator = SpikeAttentionAccumulator(1, HEADS, layout_mutations(), defining_mutations())
    accumulator.update(0, attention.float(), token_mask(mask), layout, [r[0] for r in rows])
    return accumulator


def test_uniform_attention_has_no_enrichment() -> None:
    result = planted(INPUTS, None).result().set_index(["class", "metric"])["value"]
    for label in ("all", "Alpha", "Delta"):
        for slug in DOMAINS:
            value = result[(label, f"spike.domain.{slug}.enrichment")]
            assert np.all(np.isclose(value, 1.0, atol=1e-5)), (label, slug)
        assert np.all(np.isclose(result[(label, "spike.mutations.enrichment")], 1.0, atol=1e-5))
    shares = result.loc[("all", [f"spike.domain.{slug}.share" for slug in DOMAINS])]
    assert shares.groupby(level=0).size().iloc[0] > 0
    total = sum(result[("all", f"spike.domain.{slug}.share")].to_numpy() for slug in DOMAINS)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_planted_attention_on_a_mutation_is_enriched() -> None:
    accumulator = planted(INPUTS, "A23063T")
    table = accumulator.mutation_table()
    row = table[(table["class"] == "Alpha") & (table["mutation"] == "A23063T")]
    assert (row["enrichment"] > 50).all() and (row["n_carrying"] == 2).all()
    result = accumulator.result().set_index(["class", "metric"])["value"]
    assert np.all(result[("Alpha", "spike.mutations.enrichment")] > 1.5)
    assert np.all(result[("all", "spike.domain.RBD.enrichment")] > 2)


def _private_change(position: int) -> str:
    """A substitution at ``position`` that no class lists (a change away from every mutation)."""
    base = reference_spike()[position - SPIKE_START]
    return f"{base}{position}{'A' if base != 'A' else 'C'}"


CHANGE_INPUTS = [
    ("Alpha", ["A23063T", _private_change(21700)], FULL, None),
    ("Alpha", ["A23063T"], FULL, None),
    ("Delta", [_private_change(24000), "C22995A"], FULL, None),
    ("pre-VOC", [], FULL, None),
]


def test_changes_away_from_mutations_against_unchanged_tokens() -> None:
    layout = batch_of(CHANGE_INPUTS)
    assert layout.changed is not None and int(layout.changed.sum()) >= 4
    uniform = planted(CHANGE_INPUTS, None).result().set_index(["class", "metric"])["value"]
    np.testing.assert_allclose(uniform[("all", "spike.changes.enrichment")], 1.0, atol=1e-5)
    assert np.all(uniform[("all", "spike.changes.n_tokens")] >= 2)
    # Every query's mass on the changed tokens away from the mutations: strongly enriched.
    mask = mask_of(layout, lengths_of(CHANGE_INPUTS))
    batch, seq = mask.shape
    mutations = layout_mutations()
    at_any = torch.zeros(batch, seq, dtype=torch.bool)
    for mutation in mutations:
        at_any |= (layout.span_lo <= mutation.end) & (layout.span_hi >= mutation.start)
    target = layout.changed & ~at_any & (layout.span_lo > 0)
    weights = (torch.where(target, 1000.0, 1.0) * mask).double()
    attention = (weights / weights.sum(-1, keepdim=True))[:, None, None, :]
    attention = attention.expand(batch, HEADS, seq, seq).float()
    accumulator = SpikeAttentionAccumulator(1, HEADS, mutations, defining_mutations())
    accumulator.update(0, attention, token_mask(mask), layout, [row[0] for row in CHANGE_INPUTS])
    result = accumulator.result().set_index(["class", "metric"])["value"]
    assert np.all(result[("all", "spike.changes.enrichment")] > 50)
