"""Scratch buffers reused from one call of a streamed kernel to the next.

A fresh buffer of a few megabytes costs a page fault per 4 KiB on its first write, about as
much as the arithmetic done in it; a kernel that works in blocks asks here for its block
buffers instead, kept per thread (so that concurrent calls never share one) and per device.
Off the CPU the allocator already caches memory, and a fresh buffer is returned.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

_LOCAL = threading.local()


def scratch(name: str, numel: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A 1-D buffer of ``numel`` elements (uninitialised) named ``name``, reused by the calls on
    this thread that ask for that name: a caller must be done with it before it asks again,
    and no two buffers in use at once may share a name."""
    if device.type != "cpu":
        return torch.empty(numel, dtype=dtype, device=device)
    buffers: dict[tuple[str, torch.dtype], Tensor] | None = getattr(_LOCAL, "buffers", None)
    if buffers is None:
        buffers = _LOCAL.buffers = {}
    buffer = buffers.get((name, dtype))
    if buffer is None or buffer.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: usable in and out of that mode
            buffer = torch.empty(numel, dtype=dtype)
        buffers[(name, dtype)] = buffer
    return buffer[:numel]
