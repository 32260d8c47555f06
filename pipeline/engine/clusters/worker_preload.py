"""What a warm-started local worker has loaded before it starts
(:mod:`pipeline.engine.clusters.warm_start`): the fork server imports this module once, and
every worker it forks inherits the result.

Importing it loads the chunk tasks' modules (numba, rasterio, zarr and Aquila's kernels) and
makes one call of a cached numba kernel on a few pixels: numba's first dispatch in a process
sets up its CPU target (~0.3 s) whatever the kernel. It starts no thread (a process is forked
from it; the server runs with OpenBLAS and OpenMP held to one thread, as workers do) and opens
no file or dataset.
"""

from __future__ import annotations

import contextlib
import gc

import numpy as np

import pipeline.engine.chunk  # noqa: F401  (a run's chunk tasks)
import pipeline.engine.fork_chunk  # noqa: F401  (a night's chunks in forks)
import pipeline.engine.night_chunk  # noqa: F401  (a night's chunk tasks)
from pipeline.kernels.median import keep_valid


def _first_dispatch() -> None:
    # a warm-up: the fork server must start whatever happens here; a chunk task's own first
    # call raises the same error where it is seen
    with contextlib.suppress(Exception):
        keep_valid(np.zeros((1, 1, 4), np.float32), np.zeros((1, 4), bool))


_first_dispatch()
# what is loaded now lives as long as the server and every worker forked from it: the
# collector leaves it alone from here on, so a worker's collections do not touch (and copy) the
# pages it shares with the server, and the server's exit does not walk it
gc.freeze()
