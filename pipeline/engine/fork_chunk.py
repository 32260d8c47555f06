"""A run's chunk task for bucket products: :func:`pipeline.engine.chunk.process_chunk`'s work,
written into Icechunk forks instead of build directories.

Each product (cube, mosaics) is its own repository (:mod:`pipeline.products.bucket`); the task
gets one fork of each run branch, computes the chunk exactly as a run on disk does
(:func:`~pipeline.engine.chunk.compute_chunk`, the same :class:`ChunkWriter` and overview
pyramid, so the chunk payloads are byte for byte those of a run on disk) and sends its forks
back with its summary; the driver merges one fork per task. Running it twice writes the same
bytes; a task Dask reran after a lost worker is merged once (the lost one never returned).

Why a module of its own and not a parameter of ``process_chunk``: that function opens its
stores by path (``zarr.open_group(str(store))``); see the report of the change that lets it take
a store object instead, after which this module is three lines.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pipeline.engine.chunk import compute_chunk, mosaic_writes
from pipeline.engine.jobs import ChunkSummary, ForkedSummary, Phases
from pipeline.engine.writer import ChunkWriter
from pipeline.io.reader import RasterReader
from pipeline.plan.chunks import ChunkTask, Outputs
from pipeline.products.chunkio import open_arrays
from pipeline.products.overviews import Pyramid


def process_in_forks(
    task: ChunkTask, *, outputs: Outputs, reader: RasterReader, cube_fork: Any,
    mosaic_forks: tuple[Any, ...],
) -> ForkedSummary:
    import zarr

    t0 = time.perf_counter()
    phases = Phases()
    c = task.chunk
    region = (slice(c.y0, c.y0 + c.height), slice(c.x0, c.x0 + c.width))
    cube = []
    if cube_fork is not None:
        with phases("write"):
            cube = open_arrays(cube_fork.store, list(outputs.bands), mode="r+")
    writer = ChunkWriter(cube, region, overviews=Pyramid())
    out = compute_chunk(task, outputs=outputs, reader=reader, on_slot=writer if cube else None,
                        phases=phases)
    t1 = time.perf_counter()
    with phases("write"):
        groups = [zarr.open_group(f.store, mode="r+") for f in mosaic_forks]
        writer.finish(mosaic_writes(out, outputs, groups), mosaics=len(groups))
    t2 = time.perf_counter()
    valid = (
        int((out.mosaics[0]["count"] > 0).sum())
        if out.mosaics
        else int(sum(np.isfinite(a[0]).sum() for _, a in out.slots))
    )
    summary = ChunkSummary(
        chunk=c.name, scenes_read=task.n_scenes, used=out.used, failures=out.failures,
        valid_pixels=valid, pixels_written=writer.pixels,
        seconds={"compute": t1 - t0, "write": t2 - t1}, phases=dict(phases),
    )
    return ForkedSummary(summary, cube_fork, tuple(mosaic_forks))
