"""The nightly chunk task: carry out one :class:`~pipeline.increment.ChunkOrder` in a fork.

Pure of Dask (the driver runs it in workers or in-process). It opens the worker's fork of the
night's transaction and, read-only, the committed snapshot; computes the chunk with
:func:`pipeline.chunk.compute_chunk` (slots whose content did not change are read back from the
committed cube instead of their scenes); and writes whole chunks only: each cube slot the order
names, each cleared slot (an all-NaN chunk equals the fill value, so zarr deletes it), and the
mosaics. Running it twice writes the same bytes; the driver merges one fork per order.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.chunk import _empty, compute_chunk
from pipeline.cube.slots import CubeSlots
from pipeline.increment import ChunkOrder
from pipeline.io.reader import RasterReader, ReaderSettings
from pipeline.methods import mosaic_layers
from pipeline.plan import Outputs, SlotScenes

CUBE = "cube"


@dataclass(frozen=True)
class Pause:
    """Test-only: stop at a named point until released (the crash tests SIGKILL the job there).

    The first process to reach point ``name`` creates ``folder/paused-<name>`` and waits for
    ``folder/resume-<name>``; other processes pass. Points: ``read`` (in a chunk task, after its
    first slot is read, before it is written), ``write`` (after a task's first cube write),
    ``merged`` (driver: forks merged, nothing committed), ``committed`` (driver: the night is
    committed on its branch, not published), ``published`` (driver: published, the report and
    branch cleanup not done)."""

    name: str
    folder: Path

    def at(self, point: str) -> None:
        if point != self.name:
            return
        try:
            fd = os.open(self.folder / f"paused-{point}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        while not (self.folder / f"resume-{point}").exists():
            time.sleep(0.05)


@dataclass
class NightChunkResult:
    """What a nightly chunk task sends back: a small summary and its fork (the writes)."""

    chunk: str
    used: tuple[str, ...] = ()
    failures: tuple[tuple[str, str, str], ...] = ()  # (scene id, reason, message)
    retries: dict[str, int] = field(default_factory=dict)  # href -> retries
    attempts: dict[str, int] = field(default_factory=dict)  # failed href -> attempts made
    cube_written: int = 0
    mosaic_written: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    fork: Any = None


_READERS: dict[ReaderSettings, RasterReader] = {}


def reader_for(settings: ReaderSettings) -> RasterReader:
    """One reader per worker process and run (settings carry the run id)."""
    reader = _READERS.get(settings)
    if reader is None:
        while len(_READERS) >= 4:
            _READERS.pop(next(iter(_READERS))).close()
        reader = _READERS[settings] = RasterReader(settings)
    return reader


def night_chunk_task(
    order: ChunkOrder,
    outputs: Outputs,
    groups: Sequence[str],
    settings: ReaderSettings,
    fork: Any,
    base: Any,
    pause: Pause | None = None,
) -> NightChunkResult:
    """The Dask task (``groups``: the mosaic group names, in ``outputs.mosaics`` order)."""
    return run_order(
        order,
        outputs=outputs,
        groups=groups,
        reader=reader_for(settings),
        fork=fork,
        base=base,
        pause=pause,
    )


def run_order(
    order: ChunkOrder,
    *,
    outputs: Outputs,
    groups: Sequence[str],
    reader: RasterReader,
    fork: Any,
    base: Any,
    pause: Pause | None = None,
) -> NightChunkResult:
    import zarr

    t0 = time.perf_counter()
    root = zarr.open_group(fork.store, mode="r+")
    cube = [root[f"{CUBE}/{b}"] for b in outputs.bands]
    if order.n_slots and cube[0].shape[0] != order.n_slots:
        # Tonight's time axis, set in every fork that writes (the same definition merges
        # cleanly): the night then needs one commit, with no intermediate snapshot to time-travel
        # to. The driver sets it again, with the coordinates, after the merge.
        for array in cube:
            array.resize((order.n_slots, *array.shape[1:]))
    t_open = time.perf_counter() - t0
    c = order.chunk
    region = (slice(c.y0, c.y0 + c.height), slice(c.x0, c.x0 + c.width))
    reused = [s.cube_index for s in order.slots if s.origin == "cube"]
    old = None
    if base is not None and reused:
        committed = zarr.open_group(base.store, mode="r", path=CUBE)
        old = CubeSlots(committed, outputs.bands, region, (c.iy, c.ix), reused)
    by_slot = {s.slot: s for s in order.slots}
    result = NightChunkResult(chunk=c.name)
    written: set[int] = set()

    def write_slot(slot: int, values: np.ndarray) -> None:
        if not by_slot[slot].write:
            return
        if pause:
            pause.at("read")
        write_all([(array, (slot, *region), values[b]) for b, array in enumerate(cube)])
        written.add(slot)
        result.cube_written += 1
        if pause:
            pause.at("write")

    def from_cube(ss: SlotScenes, plane: np.ndarray) -> bool | None:
        o = by_slot[ss.slot]
        if o.origin != "cube" or old is None:
            return None
        assert plane.shape[1:] == (c.height, c.width), "cube reuse needs a chunk without halo"
        plane[:] = old.get(o.cube_index)
        return bool(np.isfinite(plane[0]).any())

    out = None
    if order.task is not None and order.task.slots:
        computed = outputs if order.mosaic else replace(outputs, mosaics=())
        out = compute_chunk(
            order.task, outputs=computed, reader=reader, on_slot=write_slot, reuse=from_cube
        )
        result.used = out.used
        result.failures = out.failures
    t1 = time.perf_counter()
    nan = np.full((c.height, c.width), np.nan, np.float32)
    unwritten = [s.slot for s in order.slots if s.write and s.slot not in written]
    writes = []
    for slot in (*unwritten, *order.clear):  # no data there tonight: delete the chunk
        writes += [(array, (slot, *region), nan) for array in cube]
        result.cube_written += 1
    if order.mosaic or order.clear_mosaic:
        nb = len(outputs.bands)
        mosaics = (
            out.mosaics
            if (order.mosaic and out is not None)
            else tuple(_empty(m, nb, c) for m in outputs.mosaics)
        )
        for spec, name, mosaic in zip(outputs.mosaics, groups, mosaics, strict=True):
            g = root[name]
            writes += [
                (g[band], region, mosaic["bands"][b]) for b, band in enumerate(outputs.bands)
            ]
            writes += [
                (g[layer], region, mosaic[layer])
                for layer in ("count", *mosaic_layers(spec.method, blend_width=spec.blend_width))
            ]
        result.mosaic_written = 1
    write_all(writes)
    result.retries = reader.take_retries()
    if result.failures:
        result.attempts = {href: e.attempts for href, e in reader.failed().items()}
    result.seconds = {
        "open": t_open,
        "compute": t1 - t0 - t_open,
        "write": time.perf_counter() - t1,
    }
    result.fork = fork
    return result


def write_all(writes: Sequence[tuple[Any, tuple, np.ndarray]]) -> None:
    """Write whole chunks of several arrays in one call, concurrently (zarr's async API): per
    chunk, one synchronous zarr write costs ~1 ms of machinery beyond the encode itself, and a
    nightly task writes a dozen mosaic layers per chunk."""
    if not writes:
        return
    from zarr.core.sync import sync

    async def all_writes() -> None:
        await asyncio.gather(*(a.async_array.setitem(sel, v) for a, sel, v in writes))

    sync(all_writes())
