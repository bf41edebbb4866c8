"""`opmap.heap.release_free_heap`: the C heap's free pages go back to the system.

A long rehearsal's process kept the pages glibc's malloc had freed inside its heaps (frames,
reductions and figures of earlier maps), so its RSS crept up map after map; the live
analysis now calls `release_free_heap` after each map (docs/operations.md, "Soak").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import psutil
import pytest

from opmap.heap import release_free_heap

BLOCK_BYTES = 64 * 1024  # below glibc's mmap threshold: the blocks live in the heap
N_BLOCKS = 1024  # 64 MiB


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.restype, libc.free.argtypes = None, [ctypes.c_void_p]
    return libc


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_heap_pages_are_given_back_to_the_system() -> None:
    libc = _libc()
    process = psutil.Process()
    blocks = [libc.malloc(BLOCK_BYTES) for _ in range(N_BLOCKS)]
    assert all(blocks)
    for block in blocks:
        ctypes.memset(block, 1, BLOCK_BYTES)  # resident
    # the last block stays: it pins the heap's top, so free() alone cannot shrink the heap
    for block in blocks[:-1]:
        libc.free(block)
    before = process.memory_info().rss
    try:
        assert release_free_heap() is True
        released = before - process.memory_info().rss
    finally:
        libc.free(blocks[-1])
    # the 63 MiB freed in the middle of the heap leave the resident set
    assert released > 0.75 * (N_BLOCKS - 1) * BLOCK_BYTES


def test_release_free_heap_is_an_on_map_hook() -> None:
    # LiveAnalysis calls each hook with (products, result)
    assert release_free_heap(object(), object()) in (True, False)
