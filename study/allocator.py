"""Keep freed tensor memory in the process for reuse (glibc only; elsewhere a no-op).

A training step allocates and frees the same activations every time: at R = 64 replicas, a
discriminator layer's output is [64, 512, 64] float32 = 8 MiB. glibc serves blocks that large
with mmap and unmaps them on free (or trims them off the heap top), so every step faults its
activations in again page by page: about 3,000 page faults and 8 ms of kernel time per 25 ms
step at R = 64, and at R = 256 more than half of the step (benchmarks/README.md). Raising the
mmap and trim thresholds keeps freed blocks in the heap, where the next step finds them.

The cost is that the process keeps its peak heap instead of returning it to the system, which
a trial that repeats the same step does not notice. Settings the user gave glibc through its
MALLOC_* environment variables are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "reuse_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers, <malloc.h>
MMAP_THRESHOLD = 256 << 20  # blocks below this come from the heap: a step's largest (R = 256) is 32 MiB
TRIM_THRESHOLD = 512 << 20  # free memory kept at the heap top before it is given back

_applied: bool | None = None  # None: not tried yet


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
