"""Keep freed tensor memory in the process for reuse (glibc only; elsewhere a no-op).

A training step allocates and frees the same activations every step: megabytes each (a chunk of
a discriminator layer's output is [16, 512, 64] float32 = 2 MiB). glibc serves blocks that large
with mmap and unmaps them on free, or trims them off the heap top, so each step faults its
activations in again page by page (what that cost is in benchmarks/README.md;
tests/test_population.py counts the faults with and without this module). Raising the mmap and
trim thresholds keeps freed blocks in the heap, where the next step finds them.

The cost is memory: freed blocks stay in the process. An evaluation (probes of 1000 estimates)
allocates far more than a step and leaves holes in the heap that no trim threshold returns;
release_freed_memory() hands every free page back after it (glibc's malloc_trim), and the next
step faults its few megabytes in once; without it a study's peak memory grows with every
evaluation. Settings the user gave glibc through its MALLOC_* environment variables are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "release_freed_memory", "reuse_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers, <malloc.h>
# Blocks below this come from the heap. A training step's activations are chunked to 2 MiB
# (population._CHUNK_BYTES); the largest whole-population tensors at R = 256 are a few MiB.
# Larger blocks (evaluation probes) are still mapped and returned: 256 / 512 MiB here raised the
# quick study's peak memory from 2.5 to 3.7 GB and made no step faster.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20  # free memory kept at the heap top before it is given back

_applied: bool | None = None  # None: not tried yet


@functools.cache  # find_library runs `ldconfig -p` (1.5 ms); evaluations call this every time
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    # musl and others have no tunable mallopt; glibc identifies itself.
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def reuse_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process. True when they are in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if any(key in os.environ for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return _applied
    libc = _libc()
    if libc is None:
        return _applied
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # mallopt returns 1 on success; a refused value leaves glibc's default in place.
    _applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied


def release_freed_memory() -> None:
    """Return free heap pages, including holes inside the heap, to the system (after evaluations)."""
    if reuse_freed_memory():  # only where the thresholds were raised (so glibc is there); its defaults trim by themselves
        _libc().malloc_trim(0)
