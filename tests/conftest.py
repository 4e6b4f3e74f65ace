"""Shared fixtures: a tiny dataset and a tiny trained classifier, built once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import analysis_reference
import pandas as pd
import pytest

from bertgeom.genomics.dataset import split_dataset, synthetic_spikes


@pytest.fixture(scope="session")
def tiny_dataset() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A small, fully synthetic dataset: 'real' rows drawn by the generator, so it is quick."""
    drawn = synthetic_spikes((12, 0, 0), seed=7).drop(columns="split")
    return split_dataset(drawn, synthetic_spikes((4, 2, 2), seed=8), seed=7)


@pytest.fixture(scope="session")
def tiny_model(
    tmp_path_factory: pytest.TempPathFactory, tiny_dataset: tuple[pd.DataFrame, pd.DataFrame]
) -> Path:
    from bertgeom.model.train import TrainingOptions, train_classifier

    directory = tmp_path_factory.mktemp("model") / "tiny"
    train_classifier(tiny_dataset[0], directory, TrainingOptions(preset="tiny", epochs=2))
    return directory


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """One intra-op torch thread for the test: small batches run faster and steadier on a
    shared machine (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    with analysis_reference.one_thread():
        yield
