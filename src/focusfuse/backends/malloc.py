"""glibc's malloc policy for CPU inference: keep freed memory for reuse, hand it back after each tile."""

from __future__ import annotations

import ctypes
import functools
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (malloc.h, glibc >= 2.33)."""

    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (the only one whose malloc we tune), else None."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # glibc only (musl's compatibility layer has no such symbol)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.argtypes, libc.mallinfo2.restype = [], _MallInfo2
    return libc


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the system.

    Large tensors are otherwise mmap'ed and unmapped one by one, and every fresh one pays page faults
    on first touch (a 64-channel 1600x1200 feature map: ~65 ms); one stack step allocates several.
    Served from the heap and kept after ``free``, they reuse warm pages (a 1600x1200 stack step on 2
    cores: 3.7 s -> 2.7 s). Kept memory goes back to the system at :func:`release_free_memory`, which
    the fusion loop calls between tiles (tiles of other shapes would fragment the heap). The CPU backend
    applies the setting when a fusion starts (see :class:`focusfuse.backends.cpu.CpuBackend`). Returns False where the C
    library is not glibc (nothing changed) or refused a setting.

    A thread other than the main one has its own arena, which maps large blocks afresh whatever the setting
    (it cannot grow past 64 MB): a fusion run in such a thread (a GUI's worker, a Dask task) pays the page
    faults again (3.4 -> 5.8 s for a 10-frame 520x520 stack on 2 cores). A process that fuses in threads can
    start with ``MALLOC_ARENA_MAX=1`` in its environment (focusfuse's local Dask workers do). Setting one
    arena here for every process was measured and not kept: the engine's reading threads then contend with
    the network for it (V-4 without alignment 94.8 -> 135.8 s on 2 cores).
    """
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def free_heap_bytes() -> int:
    """Bytes the C heap holds free for reuse (counted in resident memory until released); 0 where unknown."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return 0
    return int(libc.mallinfo2().fordblks)


def release_free_memory() -> None:
    """Return the C heap's free memory to the system (glibc ``malloc_trim``); no-op elsewhere.

    focusfuse keeps the memory a CPU run freed for the next run in the same process (a second 520x520 pair
    then costs 0.54 s instead of 0.78 s: no fresh pages to fault in); call this to hand it back."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
