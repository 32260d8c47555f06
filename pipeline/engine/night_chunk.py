"""The nightly chunk task: carry out one :class:`~pipeline.plan.increment.ChunkOrder` in a fork.

Pure of Dask (the driver runs it in workers or in-process). It opens the worker's fork of the
night's transaction and, read-only, the committed snapshot; computes the chunk with
:func:`pipeline.engine.chunk.compute_chunk` (slots whose content did not change are read back from
the committed cube instead of their scenes), or, when the order folds, only its new slots, folded
into the committed mosaics (:class:`~pipeline.engine.compose.FoldState`); and writes whole chunks
only: each cube slot the order names, each cleared slot (an all-NaN chunk equals the fill value,
so zarr deletes it), and the mosaics (a fold leaves out the layers whose bytes it did not change:
the fork holds them already). Running it twice writes the same bytes; the driver merges
one fork per order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from pipeline.engine.chunk import _empty, compute_chunk
from pipeline.engine.compose import FoldState
from pipeline.engine.jobs import NightChunkResult, Phases
from pipeline.engine.writer import ChunkWriter
from pipeline.io.reader import RasterReader
from pipeline.plan.chunks import Outputs, SlotScenes
from pipeline.plan.increment import ChunkOrder
from pipeline.plan.methods import mosaic_layers
from pipeline.products.chunkio import MetadataCache, open_arrays, read_chunks, resize_all
from pipeline.products.slots import CubeSlots
from pipeline.products.store import NIGHTLY_CUBE as CUBE

#: At most this many bytes of committed mosaic layers are kept by a folding chunk task to leave
#: out the layers it did not change (24 layers of a 200 px chunk: 3.7 MiB; of a 1024 px chunk:
#: 96 MiB, and the task writes every layer instead).
_KEEP_COMMITTED = 64 * 2**20

_METADATA = MetadataCache()  # per worker process: every task of a night opens the same arrays


def committed_mosaics(
    base: Any,
    outputs: Outputs,
    groups: Sequence[str],
    layers: Sequence[Sequence[str]],
    region: tuple[slice, slice],
    moved: Sequence[tuple[int, int]] = (),
    values_out: dict[str, np.ndarray] | None = None,
) -> list[FoldState]:
    """Each mosaic's committed layers on the chunk (from the read-only ``base`` session), taken
    up again as a running state (``moved``: renumbered slots, committed index -> tonight's).
    ``values_out`` receives each layer's committed values by path (``group/layer``) when all
    of them fit in :data:`_KEEP_COMMITTED` bytes (kept until the chunk is written, they are a
    second copy of the running state)."""
    paths = [f"{g}/{n}" for g, names in zip(groups, layers, strict=True) for n in names]
    arrays = open_arrays(base.store, paths, mode="r", cache=_METADATA)
    read = iter(read_chunks(arrays, region))  # every mosaic's layers in one store call
    states = []
    for g, spec, names in zip(groups, outputs.mosaics, layers, strict=True):
        values = {n: next(read) for n in names}
        if values_out is not None and len(paths) * values[names[0]].nbytes <= _KEEP_COMMITTED:
            values_out.update((f"{g}/{n}", v) for n, v in values.items())
        committed = {n: v for n, v in values.items() if n not in outputs.bands}
        committed["bands"] = np.stack([values[b] for b in outputs.bands])
        states.append(FoldState(spec, committed, moved))
    return states


def run_order(
    order: ChunkOrder,
    *,
    outputs: Outputs,
    groups: Sequence[str],
    reader: RasterReader,
    fork: Any,
    base: Any,
) -> NightChunkResult:
    t0 = time.perf_counter()
    phases = Phases()
    c = order.chunk
    region = (slice(c.y0, c.y0 + c.height), slice(c.x0, c.x0 + c.width))
    layers = [
        [*outputs.bands, "count", *mosaic_layers(m.method, blend_width=m.blend_width)]
        for m in outputs.mosaics
    ]
    writing_mosaics = order.mosaic or order.clear_mosaic
    paths = [f"{CUBE}/{b}" for b in outputs.bands] + (
        [f"{g}/{name}" for g, names in zip(groups, layers, strict=True) for name in names]
        if writing_mosaics
        else []
    )
    with phases("write"):
        arrays = dict(
            zip(paths, open_arrays(fork.store, paths, mode="r+", cache=_METADATA), strict=True)
        )
    cube = [arrays[f"{CUBE}/{b}"] for b in outputs.bands]
    if order.n_slots and cube[0].shape[0] != order.n_slots:
        # Tonight's time axis, set in every fork that writes (the same definition merges
        # cleanly): the night then needs one commit, with no intermediate snapshot to time-travel
        # to. The driver sets it again, with the coordinates, after the merge.
        with phases("write"):
            resize_all(cube, order.n_slots)
    old = None
    if base is not None and any(s.origin == "cube" for s in order.slots):
        with phases("read"):
            committed = open_arrays(
                base.store, [f"{CUBE}/{b}" for b in outputs.bands], mode="r", cache=_METADATA
            )
            wanted = [s.cube_index for s in order.slots if s.cube_index is not None]
            old = CubeSlots(committed, region, (c.iy, c.ix), wanted)
    t_open = time.perf_counter() - t0
    folds = None
    committed_layers: dict[str, np.ndarray] = {}  # a fold's committed layers, by path
    if order.fold is not None:
        with phases("read"):
            folds = committed_mosaics(base, outputs, groups, layers, region, order.fold.moved,
                                      committed_layers)
    by_slot = {s.slot: s for s in order.slots}
    fold_slots = frozenset(order.fold.new if order.fold is not None else ())
    result = NightChunkResult(chunk=c.name)
    writer = ChunkWriter(cube, region, block=order.block, n_slots=order.n_slots,
                         blocks=order.blocks)
    reuse_s = [0.0]  # seconds spent reading committed slots back

    def write_slot(slot: int, values: np.ndarray) -> None:
        if by_slot[slot].write:
            writer(slot, values)
        if folds is not None and slot in fold_slots:
            with phases("composite"):
                for state in folds:
                    state.update(slot, values)

    def from_cube(ss: SlotScenes, plane: np.ndarray) -> bool | None:
        o = by_slot[ss.slot]
        if o.origin != "cube" or old is None:
            return None
        assert plane.shape[1:] == (c.height, c.width), "cube reuse needs a chunk without halo"
        t = time.perf_counter()
        assert o.cube_index is not None  # origin "cube" names the committed index
        with phases("read"):
            old.fill(o.cube_index, plane)
        reuse_s[0] += time.perf_counter() - t
        return bool(np.isfinite(plane[0]).any())

    out = None
    if order.task is not None and order.task.slots:
        computed = outputs if order.mosaic and order.fold is None else replace(outputs, mosaics=())
        out = compute_chunk(
            order.task, outputs=computed, reader=reader, on_slot=write_slot, reuse=from_cube,
            phases=phases,
        )
        result.used = out.used
        result.failures = out.failures
    t1 = time.perf_counter()
    final: list = []
    result.cube_written = len(order.blocks)
    if writing_mosaics:
        nb = len(outputs.bands)
        with phases("composite"):
            if folds is not None:
                mosaics = tuple(state.result() for state in folds)
            elif order.mosaic and out is not None:
                mosaics = out.mosaics
            else:
                mosaics = tuple(_empty(m, nb, c) for m in outputs.mosaics)
        for name, names, mosaic in zip(groups, layers, mosaics, strict=True):
            for layer in names:
                values = (
                    mosaic["bands"][outputs.bands.index(layer)]
                    if layer in outputs.bands
                    else mosaic[layer]
                )
                path = f"{name}/{layer}"
                if path in committed_layers and _same_bytes(committed_layers[path], values):
                    continue  # the fork holds the committed chunk already: nothing to write
                final.append((arrays[path], region, values))
        result.mosaic_written = 1
    with phases("write"):
        writer.finish(final)
    result.retries = reader.take_retries()
    if result.failures:
        result.attempts = {href: e.attempts for href, e in reader.failed().items()}
    result.seconds = {
        "open": t_open,
        "compute": t1 - t0 - t_open - reuse_s[0],
        "reuse": reuse_s[0],
        "write": time.perf_counter() - t1,
    }
    result.phases = dict(phases)
    result.fork = fork
    return result


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays hold the same bytes (a signed zero or a NaN payload counts: a layer
    is skipped only where writing it would change no byte of the store)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(np.array_equal(np.ascontiguousarray(a).view(np.uint8),
                               np.ascontiguousarray(b).view(np.uint8)))
