"""Tiny saved models of every supported architecture, built once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bertgeom.capture.loading import LoadedModel, load_model
from bertgeom.capture.tests.tiny_models import ARCHITECTURES, save_tiny_model


@pytest.fixture(scope="session")
def model_directories(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {name: save_tiny_model(name, root / name) for name in ARCHITECTURES}


@pytest.fixture(scope="session")
def loaded_models(model_directories: dict[str, Path]) -> dict[str, LoadedModel]:
    return {name: load_model(path) for name, path in model_directories.items()}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread is faster than waking a pool (and steadier on a
    shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
