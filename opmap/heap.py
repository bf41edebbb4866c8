"""`release_free_heap`: give the C heap's free pages back to the system (glibc ``malloc_trim``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

__all__ = ["release_free_heap"]


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None on a C library without it (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_heap(*_args: object) -> bool:
    """Return the free pages of every malloc arena to the system; True if any was released."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
