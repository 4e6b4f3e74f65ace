"""``kernel``: cached where numba can write its cache, compiled per process where it cannot."""

from __future__ import annotations

import numba
import pytest
from numba.core.caching import CacheImpl, FunctionCache, NullCache

from bertgeom.compiled import kernel


def add_one(x: float) -> float:
    return x + 1.0


def test_kernels_are_cached_on_disk() -> None:
    compiled = kernel()(add_one)
    assert compiled(1.0) == 2.0
    assert isinstance(getattr(compiled, "_cache", None), FunctionCache)


def test_without_a_writable_cache_folder_kernels_compile_uncached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No locator finds a folder: what numba meets on a read-only install with no writable home.
    monkeypatch.setattr(CacheImpl, "_locator_classes", [])
    with pytest.raises(RuntimeError, match="no locator available"):
        numba.njit(cache=True)(add_one)
    compiled = kernel(fastmath=True)(add_one)
    assert compiled(1.0) == 2.0
    assert isinstance(getattr(compiled, "_cache", None), NullCache)
