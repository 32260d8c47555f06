"""Free heap memory given back to the system at the points of a chunk task where much of it was
just freed.

Local workers run with glibc's trim threshold at 256 MiB (``MALLOC_TRIM_THRESHOLD_``,
:func:`pipeline.engine.clusters.worker_env.worker_environ`: page-faulting fresh memory for
every array had cost more system time than the work), and each thread of a worker allocates
from an arena of its own. So the part stacks and slot planes a chunk task's threads free when
its parts are done stay resident, and the mosaics' overview levels and encoded chunks that come
next cannot reuse another thread's arena: the 2048 px benchmark job's worker peaked at
0.61-0.67 GiB at its writes. ``malloc_trim(0)`` walks every arena and returns its free pages
(1-3 ms there): the worker's peak 0.50 GiB, the whole tree's 0.98-1.03 -> 0.86 GiB.

Elsewhere than glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes

from pipeline.io.libc import libc_function


def release_free_memory() -> bool:
    """Return the heap's free pages to the system (glibc's ``malloc_trim(0)``); whether it
    could be asked."""
    trim = libc_function("malloc_trim", (ctypes.c_size_t,), ctypes.c_int)
    if trim is None:
        return False
    trim(0)
    return True
