"""The engine: streaming equals one pass, overlapping changes nothing, memory stays flat, and
the projected subspace measures equal the reference definitions."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bertgeom.capture.chunks import join_sequences
from bertgeom.capture.engine import run_measurements
from bertgeom.capture.hooks import CapturedLayer, LayerCapture
from bertgeom.capture.input_batch import InputBatch
from bertgeom.capture.loading import LoadedModel
from bertgeom.capture.measurement import Measurement, MeasurementSetup
from bertgeom.capture.measurements import (
    ClassMeanMapMeasurement,
    GateMeasurement,
    MapParameters,
    SubspaceDataMeasurement,
)
from bertgeom.capture.projected_subspace import ProjectionBases, projected_subspace_measures
from bertgeom.capture.stream_measurements import (
    ClsSeparabilityMeasurement,
    ConeMeasurement,
    DistributionMeasurement,
    HeadConeMeasurement,
    HeadDistributionMeasurement,
)
from bertgeom.capture.tests.tiny_models import ARCHITECTURES, HEADS, LAYERS, POSITIONS, sentences
from bertgeom.capture.text_source import TextSource
from bertgeom.measures.subspace_data import subspace_data_measures
from bertgeom.measures.tokens import token_mask

CLASSES = ["short", "long"]


@pytest.fixture()
def text(tmp_path: Path) -> Path:
    path = tmp_path / "inputs.txt"
    path.write_text("\n".join(sentences(13, seed=5)) + "\n")
    labels = ["short" if len(line.split()) < 8 else "long" for line in sentences(13, seed=5)]
    pd.DataFrame({"input_id": [str(i + 1) for i in range(13)], "label": labels}).to_csv(
        tmp_path / "labels.tsv", sep="\t", index=False
    )
    return path


def _source(loaded: LoadedModel, text: Path) -> TextSource:
    from bertgeom.capture.input_labels import read_input_labels

    return TextSource(loaded, text, labels=read_input_labels(text.parent / "labels.tsv"))


def _measurements(loaded: LoadedModel) -> list[Measurement]:
    setup = MeasurementSetup(LAYERS, HEADS, tuple(CLASSES))
    return [
        GateMeasurement(setup),
        ClassMeanMapMeasurement(setup, MapParameters(POSITIONS)),
        SubspaceDataMeasurement(setup, loaded.query_key_weights()),
        HeadConeMeasurement(setup),
        ConeMeasurement(setup),
        DistributionMeasurement(setup),
        HeadDistributionMeasurement(setup),
        ClsSeparabilityMeasurement(setup),
    ]


def _tables(measurements: list[Measurement]) -> list[pd.DataFrame]:
    tables = []
    for measurement in measurements:
        table = measurement.result()
        keys = [c for c in table.columns if c != "value"]
        tables.append(table.sort_values(keys).reset_index(drop=True))
    return tables


def _assert_tables_close(
    left: list[pd.DataFrame], right: list[pd.DataFrame], tolerance: float, rtol: float = 0.0
) -> None:
    for a, b in zip(left, right, strict=True):
        pd.testing.assert_frame_equal(a.drop(columns="value"), b.drop(columns="value"))
        np.testing.assert_allclose(a["value"], b["value"], rtol=rtol, atol=tolerance)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_two_parts_merged_equal_one_pass(
    architecture: str, loaded_models: dict[str, LoadedModel], text: Path
) -> None:
    loaded = loaded_models[architecture]
    batches = list(_source(loaded, text).batches(4))
    # Chunks of 8 inputs: the batches 4 + 4 and 4 + 1 are measured together in both runs.
    whole = _measurements(loaded)
    run_measurements(loaded, batches, whole, chunk_inputs=8)
    first, second = _measurements(loaded), _measurements(loaded)
    run_measurements(loaded, batches[:2], first, chunk_inputs=8)
    run_measurements(loaded, batches[2:], second, chunk_inputs=8)
    merged = [a.merge(b) for a, b in zip(first, second, strict=True)]
    # Float64 sums in another order: equal to ~1e-14 relative (K^2 runs into thousands).
    _assert_tables_close(_tables(whole), _tables(merged), 1e-10, rtol=1e-12)
    maps_whole, maps_merged = whole[1], merged[1]
    assert isinstance(maps_whole, ClassMeanMapMeasurement)
    assert isinstance(maps_merged, ClassMeanMapMeasurement)
    np.testing.assert_array_equal(
        maps_whole.accumulator.result_maps().maps, maps_merged.accumulator.result_maps().maps
    )


def test_overlap_changes_no_result(loaded_models: dict[str, LoadedModel], text: Path) -> None:
    loaded = loaded_models["bert"]
    records: dict[bool, list[pd.DataFrame]] = {True: [], False: []}
    tables = {}
    for overlap in (False, True):
        measurements = _measurements(loaded)
        setup = MeasurementSetup(LAYERS, HEADS, tuple(CLASSES))
        measurements[0] = GateMeasurement(setup, records=records[overlap].append)
        run_measurements(loaded, _source(loaded, text).batches(3), measurements, overlap=overlap)
        tables[overlap] = _tables(measurements)
    _assert_tables_close(tables[False], tables[True], 0.0)
    pd.testing.assert_frame_equal(pd.concat(records[False]), pd.concat(records[True]))


def test_an_error_in_a_measurement_stops_the_overlapped_run(
    loaded_models: dict[str, LoadedModel], text: Path
) -> None:
    class Failing(GateMeasurement):
        def update(self, captured: CapturedLayer, context: object) -> None:
            raise ValueError("boom")

    loaded = loaded_models["bert"]
    with pytest.raises(ValueError, match="boom"):
        run_measurements(
            loaded,
            _source(loaded, text).batches(3),
            [Failing(MeasurementSetup(LAYERS, HEADS))],  # type: ignore[list-item]
            overlap=True,
        )


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance touches deprecated torch.distributed names
        warnings.simplefilter("ignore")
        return sum(1 for item in gc.get_objects() if isinstance(item, torch.Tensor))


def test_memory_does_not_grow_with_the_number_of_inputs(
    loaded_models: dict[str, LoadedModel], tmp_path: Path
) -> None:
    loaded = loaded_models["bert"]
    counts = []
    for n_inputs in (4, 40):
        path = tmp_path / f"inputs{n_inputs}.txt"
        path.write_text("\n".join(sentences(n_inputs, seed=n_inputs)) + "\n")
        before = _live_tensors()
        measurements = _measurements(loaded)
        run_measurements(loaded, TextSource(loaded, path).batches(4), measurements)
        counts.append(_live_tensors() - before)
        del measurements
    assert counts[0] == counts[1]


def test_results_do_not_depend_on_the_batch_size(
    loaded_models: dict[str, LoadedModel], text: Path
) -> None:
    loaded = loaded_models["distilbert"]
    tables = []
    for batch_size in (1, 5):
        measurements = _measurements(loaded)
        run_measurements(loaded, _source(loaded, text).batches(batch_size), measurements)
        tables.append(_tables(measurements))
    # Float32 products (forward pass, Gram matrices) over other groupings of the tokens round
    # to ~1e-7 relative; the Fisher ratio of 13 [CLS] points in 32 dimensions (a regularised
    # inverse of a rank-deficient scatter) amplifies that to ~1e-5.
    _assert_tables_close(tables[0], tables[1], 1e-5, rtol=1e-4)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_projected_subspace_measures_equal_the_reference(
    architecture: str, loaded_models: dict[str, LoadedModel]
) -> None:
    loaded = loaded_models[architecture]
    assert loaded.tokenizer is not None
    encoded = loaded.tokenizer(
        sentences(6, seed=9), padding=True, return_tensors="pt", return_token_type_ids=False
    )
    mask = encoded["attention_mask"]
    captured: list[CapturedLayer] = []
    record: Callable[[CapturedLayer], None] = captured.append
    with torch.inference_mode(), LayerCapture(loaded.encoder, loaded.adapter, HEADS, record):
        loaded.model(input_ids=encoded["input_ids"], attention_mask=mask)
    for layer, (wq, bq, wk, bk) in zip(captured, loaded.query_key_weights(), strict=True):
        bases = ProjectionBases.of(wq, bq, wk, bk, HEADS)
        assert bases is not None
        for padding in (False, True):
            valid = token_mask(mask, include_padding=padding).valid
            for query_bias in (False, True):
                expected = subspace_data_measures(
                    layer.layer_input, valid, wq, wk, HEADS, bq if query_bias else None
                )
                got = projected_subspace_measures(
                    layer.layer_input,
                    layer.queries,
                    layer.keys,
                    bases,
                    HEADS,
                    valid,
                    query_bias,
                )
                for name, value in expected.items():
                    torch.testing.assert_close(got[name], value, rtol=2e-5, atol=1e-6)


def test_chunks_of_small_batches_change_no_result(
    loaded_models: dict[str, LoadedModel], text: Path
) -> None:
    loaded = loaded_models["bert"]
    tables, timings, records, ended = {}, {}, {}, {}
    for chunk_inputs in (1, 8):
        rows: list[pd.DataFrame] = []
        batches: list[list[str]] = []
        measurements = _measurements(loaded)
        measurements[0] = GateMeasurement(
            MeasurementSetup(LAYERS, HEADS, tuple(CLASSES)), records=rows.append
        )

        def on_batch(
            batch: InputBatch,
            logits: torch.Tensor | None,
            rows: list[pd.DataFrame] = rows,
            batches: list[list[str]] = batches,
        ) -> None:
            batches.append(list(batch.input_ids))
            # A batch ends once its inputs have been measured.
            measured = sum(len(frame) for frame in rows) // (LAYERS * HEADS)
            assert measured >= sum(len(ids) for ids in batches)

        timings[chunk_inputs] = run_measurements(
            loaded,
            _source(loaded, text).batches(3),  # 13 inputs of several lengths: 3+3+3, 3+1
            measurements,
            on_batch=on_batch,
            chunk_inputs=chunk_inputs,
        )
        tables[chunk_inputs] = _tables(measurements)
        records[chunk_inputs], ended[chunk_inputs] = rows, batches
    assert (timings[1].chunks, timings[8].chunks) == (0, 2)
    assert timings[1].batches == timings[8].batches == 5
    assert ended[1] == ended[8]
    assert [len(frame) for frame in records[8]] == [9 * LAYERS * HEADS, 4 * LAYERS * HEADS]
    # Float32 products over other groupings of the tokens: the tolerance of the batch size.
    _assert_tables_close(tables[1], tables[8], 1e-5, rtol=1e-4)
    # Per-input scores in float32: products over zero-padded keys round differently (~1e-7
    # of a score in [0, 1]; the cluster score's ratio of sums amplifies it a little).
    pd.testing.assert_frame_equal(
        pd.concat(records[1], ignore_index=True),
        pd.concat(records[8], ignore_index=True),
        rtol=0,
        atol=2e-6,
    )


def test_no_chunks_with_padding_or_over_the_byte_budget(
    loaded_models: dict[str, LoadedModel], text: Path
) -> None:
    loaded = loaded_models["bert"]
    padded = run_measurements(
        loaded,
        _source(loaded, text).batches(3),
        _measurements(loaded),
        include_padding=True,
    )
    over = run_measurements(
        loaded, _source(loaded, text).batches(3), _measurements(loaded), chunk_bytes=1
    )
    assert padded.chunks == over.chunks == 0


def test_join_sequences_pads_each_batch_with_zeros() -> None:
    short = torch.ones(2, 3, 3)
    long = torch.full((1, 5, 5), 2.0)
    joined = join_sequences([short, long], (1, 2))
    assert joined.shape == (3, 5, 5)
    assert torch.equal(joined[:2, :3, :3], short) and torch.equal(joined[2], long[0])
    assert joined[:2, 3:].abs().sum() == 0 and joined[:2, :, 3:].abs().sum() == 0
    assert join_sequences([short], (1, 2)) is short
