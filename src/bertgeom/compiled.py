"""``kernel``: numba's ``njit`` as every compiled kernel of bertgeom uses it.

The kernels are cached on disk (``cache=True``), so a process after the first starts without
compiling them (5-10 s). numba refuses to decorate a cached function where it can write no cache
folder (the package's ``__pycache__``, the user's cache folder, ``NUMBA_CACHE_DIR``): a
read-only install under a home that cannot be written. There the kernels compile in every
process instead of failing to import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba

Function = TypeVar("Function", bound=Callable[..., Any])


def kernel(**options: Any) -> Callable[[Function], Function]:
    """``numba.njit(cache=True, nogil=True, **options)``, uncached where numba has nowhere to
    write its cache. ``nogil``: the kernels run beside torch's threads and each other."""

    def decorate(function: Function) -> Function:
        try:
            compiled = numba.njit(cache=True, nogil=True, **options)(function)
        except RuntimeError as error:
            if "no locator available" not in str(error):
                raise
            compiled = numba.njit(cache=False, nogil=True, **options)(function)
        return compiled

    return decorate
