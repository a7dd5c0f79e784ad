"""glibc malloc settings shared by the perturbation workers and the trainer."""

from __future__ import annotations

import ctypes
import sys

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest dynamic mmap threshold
TRIM_THRESHOLD = 256 * 1024 * 1024


def tune_malloc() -> bool:
    """Keep arrays under 32 MiB on glibc's reusable heap; True if applied.

    By default glibc serves a large allocation with a fresh ``mmap`` (its threshold moves
    with the history of frees, and freezes at 128 KiB when ``MALLOC_TRIM_THRESHOLD_`` is
    set, as Dask's nanny does), and every page of a fresh mapping faults in one by one.
    Measured on the 2-core development box: WORLD analysis slows down in Dask workers, and
    a CPU training epoch of the tiny backbone took 0 to 1.2 million page faults (up to ~15 %
    of its time) depending on what the process had allocated before. Raising both
    thresholds puts those arrays back on the heap, at the cost of a bounded amount of
    retained memory (about one step's or one shard's working set). Doing nothing off glibc
    is correct.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return bool(ok_mmap and ok_trim)
