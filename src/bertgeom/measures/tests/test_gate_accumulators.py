"""Gate accumulators: one pass equals merged parts, the long table, class-mean maps, records."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bertgeom.measures import class_mean_maps
from bertgeom.measures.base import ALL_CLASSES, Accumulator
from bertgeom.measures.class_mean_maps import ClassMeanAttentionAccumulator
from bertgeom.measures.gate_accumulators import GATE_METRICS, GateAccumulator, gate_records
from bertgeom.measures.gates import (
    DEFAULT_THRESHOLDS,
    DOMINANT_NAMES,
    GATE_NAMES,
    dominant_gate,
    gate_scores,
)
from bertgeom.measures.tests.test_gates import random_batch
from bertgeom.measures.tokens import token_mask

CLASSES = ("alpha", "delta", "omicron")


def random_scores(rng: np.random.Generator, batch: int, heads: int) -> torch.Tensor:
    scores = torch.from_numpy(rng.uniform(size=(batch, heads, 7)))
    scores[rng.uniform(size=batch) < 0.1] = torch.nan
    return scores


def feed(
    accumulator: GateAccumulator, rng: np.random.Generator, batches: int, layers: int, heads: int
) -> list[tuple[int, torch.Tensor, list[str]]]:
    updates = []
    for _ in range(batches):
        batch = int(rng.integers(1, 6))
        labels = [str(rng.choice(CLASSES)) for _ in range(batch)]
        for layer in range(layers):
            updates.append((layer, random_scores(rng, batch, heads), labels))
    for update in updates:
        accumulator.update(*update)
    return updates


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), parts=st.integers(2, 4))
def test_gate_accumulator_merge_equals_one_pass(seed: int, parts: int) -> None:
    rng = np.random.default_rng(seed)
    one_pass = GateAccumulator(2, 3, CLASSES)
    updates = feed(one_pass, rng, 6, 2, 3)
    split = np.array_split(np.arange(len(updates)), parts)
    accumulators = []
    for indices in split:
        part = GateAccumulator(2, 3, CLASSES)
        for i in indices:
            part.update(*updates[i])
        accumulators.append(part)
    merged = accumulators[0]
    for part in accumulators[1:]:
        merged = merged.merge(part)
    expected, got = one_pass.result(), merged.result()
    pd.testing.assert_frame_equal(got.drop(columns="value"), expected.drop(columns="value"))
    np.testing.assert_allclose(got["value"], expected["value"], rtol=1e-12, atol=1e-12)
    assert isinstance(merged, Accumulator)


def test_gate_accumulator_values() -> None:
    rng = np.random.default_rng(3)
    accumulator = GateAccumulator(2, 3, [*CLASSES, "unseen"])
    updates = feed(accumulator, rng, 5, 2, 3)
    table = accumulator.result()
    assert list(table.columns) == ["layer", "head", "class", "metric", "value"]
    assert set(table["metric"]) == set(GATE_METRICS)
    assert {f"gate.{g}.score_mean" for g in GATE_NAMES} | {"gate.mixed.share"} <= set(GATE_METRICS)
    assert list(dict.fromkeys(table["class"])) == [ALL_CLASSES, *CLASSES, "unseen"]
    assert table["layer"].dtype.kind == "i" and table["head"].dtype.kind == "i"

    layer, head, name = 1, 2, "delta"
    scores = torch.cat(
        [
            s[[i for i, label in enumerate(labels) if label == name], head]
            for lay, s, labels in updates
            if lay == layer
        ]
    )
    scores = scores[~scores.isnan().any(dim=1)]
    dominant = dominant_gate(scores, DEFAULT_THRESHOLDS)
    rows = table[(table["layer"] == layer) & (table["head"] == head) & (table["class"] == name)]
    value = dict(zip(rows["metric"], rows["value"], strict=True))
    assert value["gate.inputs"] == len(scores)
    for k, gate in enumerate(GATE_NAMES):
        assert value[f"gate.{gate}.score_mean"] == pytest.approx(float(scores[:, k].mean()))
    for k, gate in enumerate(DOMINANT_NAMES):
        assert value[f"gate.{gate}.share"] == pytest.approx(float((dominant == k).double().mean()))
    shares = table[table["metric"].str.endswith(".share") & (table["class"] != "unseen")]
    totals = shares.groupby(["layer", "head", "class"])["value"].sum()
    np.testing.assert_allclose(totals, 1.0)
    unseen = table[table["class"] == "unseen"]
    assert (unseen.loc[unseen["metric"] == "gate.inputs", "value"] == 0).all()
    assert unseen.loc[unseen["metric"] != "gate.inputs", "value"].isna().all()


def test_gate_accumulator_errors() -> None:
    accumulator = GateAccumulator(2, 3)
    with pytest.raises(ValueError, match="layer 2"):
        accumulator.update(2, torch.zeros(1, 3, 7), ["a"])
    with pytest.raises(ValueError, match="scores must be"):
        accumulator.update(0, torch.zeros(1, 4, 7), ["a"])
    with pytest.raises(ValueError, match="labels"):
        accumulator.update(0, torch.zeros(2, 3, 7), ["a"])
    with pytest.raises(ValueError, match="reserved"):
        accumulator.update(0, torch.zeros(1, 3, 7), [ALL_CLASSES])
    with pytest.raises(ValueError, match="same shape"):
        accumulator.merge(GateAccumulator(3, 3))
    with pytest.raises(ValueError, match="same shape"):
        accumulator.merge(GateAccumulator(2, 3, thresholds=dict(DEFAULT_THRESHOLDS, open=0.5)))


def test_gate_accumulator_without_labels_has_only_all() -> None:
    accumulator = GateAccumulator(1, 2)
    attn, mask = random_batch(0, 4, 2, 9)
    accumulator.update(0, gate_scores(attn, token_mask(mask)))
    assert set(accumulator.result()["class"]) == {ALL_CLASSES}


def class_mean_reference(
    attns: list[torch.Tensor], masks: list[torch.Tensor], max_len: int, head: int
) -> np.ndarray:
    """Mean map of one head by loops: each input's valid block, averaged where present."""
    total = np.zeros((max_len, max_len))
    count = np.zeros((max_len, max_len))
    for attn, mask in zip(attns, masks, strict=True):
        for b in range(attn.shape[0]):
            n = int(mask[b].sum())
            total[:n, :n] += attn[b, head, :n, :n].numpy()
            count[:n, :n] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def test_class_mean_maps_and_merge() -> None:
    max_len = 12
    batches = [random_batch(seed, 3, 2, seq) for seed, seq in ((1, 12), (2, 7), (3, 10), (4, 5))]
    labels = [["a", "b", "a"], ["b", "b", "a"], ["a", "a", "a"], ["b", "a", "b"]]
    pairs = [(0, 1), (1, 0)]

    def new() -> ClassMeanAttentionAccumulator:
        return ClassMeanAttentionAccumulator(max_len, 2, 2, ["a", "b"], pairs)

    one_pass, first, second = new(), new(), new()
    for k, ((attn, mask), names) in enumerate(zip(batches, labels, strict=True)):
        for layer in range(2):
            one_pass.update(layer, attn * (layer + 1) / 2, mask, names)
            (first if k < 2 else second).update(layer, attn * (layer + 1) / 2, mask, names)
    merged = first.merge(second)
    maps = one_pass.result_maps()
    assert maps.maps.dtype == np.float16
    assert maps.maps.shape == (3, 2, max_len, max_len)
    assert maps.classes == (ALL_CLASSES, "a", "b")
    assert maps.layers_heads == ((0, 1), (1, 0))
    np.testing.assert_array_equal(merged.result_maps().maps, maps.maps)
    np.testing.assert_array_equal(merged.result_maps().inputs, maps.inputs)

    for name in ("a", "b"):
        select = [[i for i, label in enumerate(names) if label == name] for names in labels]
        attns = [attn[idx] for (attn, _), idx in zip(batches, select, strict=True)]
        masks = [mask[idx] for (_, mask), idx in zip(batches, select, strict=True)]
        expected = class_mean_reference(attns, masks, max_len, head=1) / 2
        np.testing.assert_allclose(maps.get(name, 0, 1), expected, atol=1e-3)
        expected = class_mean_reference(attns, masks, max_len, head=0)
        np.testing.assert_allclose(maps.get(name, 1, 0), expected, atol=1e-3)
        assert maps.inputs[maps.classes.index(name)].tolist() == [sum(map(len, select))] * 2
    assert maps.inputs[0].tolist() == [12, 12]

    table = one_pass.result()
    assert list(table.columns) == ["layer", "head", "class", "metric", "value"]
    assert set(table["metric"]) == {
        "attention_map.inputs",
        "attention_map.high_attention_positions",
    }


def test_class_mean_counts_follow_lengths() -> None:
    accumulator = ClassMeanAttentionAccumulator(6, 1, 1)
    attn = torch.ones(2, 1, 6, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    accumulator.update(0, attn, mask, None)
    counts = accumulator.position_counts(ALL_CLASSES)[0]
    assert counts[0, 0] == 2 and counts[3, 3] == 2 and counts[4, 0] == 1 and counts[0, 5] == 1
    padded = ClassMeanAttentionAccumulator(6, 1, 1)
    padded.update(0, attn, token_mask(mask, include_padding=True).valid, None)
    assert bool((padded.position_counts(ALL_CLASSES) == 2).all())
    accumulator.update(5, attn, mask, None)  # a layer with no chosen head is ignored
    with pytest.raises(ValueError, match="seq <= 6"):
        accumulator.update(0, torch.ones(1, 1, 7, 7), torch.ones(1, 7), None)
    with pytest.raises(ValueError, match="layers_heads"):
        ClassMeanAttentionAccumulator(6, 1, 1, layers_heads=[(1, 0)])
    with pytest.raises(ValueError, match="same setup"):
        accumulator.merge(ClassMeanAttentionAccumulator(7, 1, 1))


def test_gate_records() -> None:
    attn, mask = random_batch(5, 4, 3, 8)
    mask[1, 2:] = 0
    scores = gate_scores(attn, token_mask(mask))
    frame = gate_records(scores, layer=3, input_indices=[10, 11, 12, 13])
    assert list(frame.columns) == [
        "input_index",
        "layer",
        "head",
        "gate",
        *(f"score_{gate}" for gate in GATE_NAMES),
    ]
    assert len(frame) == 12
    assert frame["input_index"].tolist() == [10] * 3 + [11] * 3 + [12] * 3 + [13] * 3
    assert frame["head"].tolist() == [0, 1, 2] * 4
    assert (frame["layer"] == 3).all()
    assert (frame.loc[frame["input_index"] == 11, "gate"] == "undefined").all()
    dominant = dominant_gate(scores).reshape(-1).tolist()
    expected = ["undefined" if d < 0 else DOMINANT_NAMES[d] for d in dominant]
    assert frame["gate"].tolist() == expected
    np.testing.assert_array_equal(frame["score_open"], scores[..., 2].reshape(-1).numpy())
    assert gate_records(scores, 0)["input_index"].tolist()[-1] == 3
    with pytest.raises(ValueError, match="input indices"):
        gate_records(scores, 0, [1, 2])


def mean_maps_reference(
    updates: list[tuple[int, torch.Tensor, torch.Tensor, list[str] | None]],
    pairs: list[tuple[int, int]],
    max_len: int,
    name: str,
) -> tuple[np.ndarray, list[int]]:
    """Per pair, the mean over the inputs of class ``name`` ("all": every input) of their valid
    blocks, in float64 by loops, and the inputs counted per pair."""
    total = np.zeros((len(pairs), max_len, max_len))
    count = np.zeros((len(pairs), max_len, max_len))
    inputs = [0] * len(pairs)
    for layer, attn, mask, labels in updates:
        for p, (pair_layer, head) in enumerate(pairs):
            if pair_layer != layer:
                continue
            for b in range(attn.shape[0]):
                if name != ALL_CLASSES and (labels is None or labels[b] != name):
                    continue
                n = int(mask[b].sum())
                total[p, :n, :n] += attn[b, head, :n, :n].double().numpy()
                count[p, :n, :n] += 1
                inputs[p] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan), inputs


@pytest.mark.parametrize(("threads", "small"), [(1, 0), (2, 0), (2, 1 << 20)])
def test_class_mean_maps_equal_the_masked_sums(
    monkeypatch: pytest.MonkeyPatch, threads: int, small: int
) -> None:
    """Several classes, lengths from 0 to the longest, unlabelled updates among labelled ones,
    chosen heads with gaps, float16 and float32 attention, and folds of the float32 running
    sums every 5 inputs, added slice by slice in the calling thread or on two workers, or by
    masked products: the maps are the float64 means of the valid blocks."""
    monkeypatch.setattr(class_mean_maps, "FOLD_INPUTS", 5)
    monkeypatch.setattr(class_mean_maps, "SMALL_UPDATE", small)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    rng = np.random.default_rng(17)
    max_len, pairs = 14, [(0, 0), (0, 2), (0, 3), (1, 1)]
    accumulator = ClassMeanAttentionAccumulator(max_len, 2, 4, ["a"], pairs)
    updates: list[tuple[int, torch.Tensor, torch.Tensor, list[str] | None]] = []
    for step in range(12):
        batch, seq = int(rng.integers(1, 7)), int(rng.integers(1, max_len + 1))
        attn, mask = random_batch(step, batch, 4, seq, leak=bool(step % 2))
        attn = attn.half() if step % 3 == 0 else attn.float()
        labels = None if step % 4 == 1 else [str(rng.choice(["a", "b", "c"])) for _ in range(batch)]
        if labels is not None and step % 4 == 2:  # runs of one class and one length
            labels, mask[:] = ["b"] * batch, mask[0]
        for layer in range(2):
            updates.append((layer, attn, mask, labels))
            accumulator.update(layer, attn, mask, labels)
    maps = accumulator.result_maps()
    assert maps.classes[:2] == (ALL_CLASSES, "a") and set(maps.classes) == {
        ALL_CLASSES,
        "a",
        "b",
        "c",
    }
    for name in maps.classes:
        expected, inputs = mean_maps_reference(updates, pairs, max_len, name)
        c = maps.classes.index(name)
        np.testing.assert_allclose(maps.maps[c], expected, rtol=1e-3, atol=1e-4)
        assert maps.inputs[c].tolist() == inputs


@pytest.mark.parametrize("small", [0, 1 << 20])
def test_class_mean_merge_and_pickle_of_running_sums(
    monkeypatch: pytest.MonkeyPatch, small: int
) -> None:
    """Merging parts whose running sums were folded at other points, and pickling a part
    midway, give the one-pass maps (to float16 rounding) and the same counts."""
    monkeypatch.setattr(class_mean_maps, "SMALL_UPDATE", small)
    max_len = 20
    batches = [random_batch(seed, 5, 3, 20 - seed) for seed in range(6)]
    labels = [["x", "y", "x", "x", "y"]] * 6
    one_pass = ClassMeanAttentionAccumulator(max_len, 1, 3, ["x", "y"])
    first = ClassMeanAttentionAccumulator(max_len, 1, 3, ["x", "y"])
    second = ClassMeanAttentionAccumulator(max_len, 1, 3, ["x", "y"])
    for k, ((attn, mask), names) in enumerate(zip(batches, labels, strict=True)):
        one_pass.update(0, attn.float(), mask, names)
        (first if k < 2 else second).update(0, attn.float(), mask, names)
        if k == 3:
            second = pickle.loads(pickle.dumps(second))
    merged = first.merge(second).result_maps()
    maps = one_pass.result_maps()
    np.testing.assert_allclose(
        merged.maps.astype(np.float64), maps.maps.astype(np.float64), rtol=1e-3, equal_nan=True
    )
    np.testing.assert_array_equal(merged.inputs, maps.inputs)
    assert maps.inputs.tolist() == [[30] * 3, [18] * 3, [12] * 3]
    # A result does not end the stream: later updates add to it.
    one_pass.update(0, batches[0][0].float(), batches[0][1], labels[0])
    assert one_pass.result_maps().inputs[0].tolist() == [35] * 3


def test_class_mean_updates_in_inference_mode_and_out() -> None:
    attn, mask = random_batch(4, 4, 2, 10)
    accumulator = ClassMeanAttentionAccumulator(10, 1, 2)
    with torch.inference_mode():
        accumulator.update(0, attn.float(), mask)
    accumulator.update(0, attn.float(), mask)
    expected = class_mean_reference([attn, attn], [mask, mask], 10, head=1)
    np.testing.assert_allclose(
        accumulator.result_maps().get(ALL_CLASSES, 0, 1), expected, atol=1e-3
    )
