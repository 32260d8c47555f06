"""The fused chunk task: read every scene touching one output chunk, calibrate, mask, merge into
time slots, composite, write. Pure of dask: the same functions run directly (no scheduler) and
inside Dask tasks, and tests compare the two.

Memory per task: one (band, y, x) float32 array per time slot that has data in the chunk, plus
one scene-sized scratch array. Heavy arrays never leave the task; only a small summary does.

Where the time goes: every step is timed under one of :data:`PHASES` by :class:`Phases`, which
feeds Dask's fine performance metrics (``distributed.metrics.context_meter``: on a worker the
scheduler sums them per task prefix and span; elsewhere a no-op) and the chunk's summary, so a
Dask run and a direct run report the same phases.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.catalog.scene import BandSource, Scene
from pipeline.engine.compose import StreamState, composite_method
from pipeline.engine.jobs import ChunkSummary, Phases
from pipeline.engine.memo import ChunkMemo
from pipeline.engine.warp import nearest_window
from pipeline.engine.writer import ChunkWriter
from pipeline.errors import ReadError
from pipeline.io.reader import RasterReader
from pipeline.kernels.calibrate import gather_calibrate, gather_mask
from pipeline.kernels.median import keep_valid, merge_first_valid
from pipeline.plan.calibration import Masking, group_factor, grow, quality_luts
from pipeline.plan.chunks import (
    ChunkTask,
    MosaicOutput,
    Outputs,
    SlotScenes,
    can_stream,
    parts,
)
from pipeline.plan.grid import ChunkGrid
from pipeline.plan.methods import mosaic_layers
from pipeline.products.chunkio import Write
from pipeline.products.overviews import Pyramid


@dataclass(frozen=True)
class ChunkOutput:
    """What one chunk computed. ``slots`` holds (slot index, (B, Y, X)) for slots with data."""

    chunk: ChunkGrid
    slots: tuple[tuple[int, np.ndarray], ...]
    mosaics: tuple[dict[str, np.ndarray], ...]  # one per Outputs.mosaics, same order
    used: tuple[str, ...]
    failures: tuple[tuple[str, str, str], ...]  # (scene id, reason, message)


# --------------------------------------------------------------------------- compute


def compute_chunk(
    task: ChunkTask,
    *,
    outputs: Outputs,
    reader: RasterReader,
    on_slot: Callable[[int, np.ndarray], None] | None = None,
    reuse: Callable[[SlotScenes, np.ndarray], bool | None] | None = None,
    phases: Phases | None = None,
) -> ChunkOutput:
    """Read, calibrate, mask and merge every scene of the chunk, slot by slot; composite.

    Reads and composites happen on ``task.grid_read`` (the chunk plus a halo when a mosaic needs
    one); outputs are cropped to the chunk. Each finished slot goes to ``on_slot(slot index,
    (B, Y, X))`` at once (the cube writer) or, without it, into ``ChunkOutput.slots``.

    ``reuse(slot_scenes, plane)`` (nightly runs) may fill a slot's plane from the committed cube
    instead of reading its scenes: it returns whether any pixel was filled, or None (having
    written nothing) to read.
    ``phases`` receives the seconds of each step (:data:`PHASES`).

    Memory: when every mosaic can stream (see :func:`can_stream`) the task holds one slot
    buffer and O(B·Y·X) state per mosaic, whatever the number of slots; otherwise one
    (T, B, Y, X) float32 stack of the slots touching the chunk, or (without ``reuse``), when
    that stack exceeds ``outputs.stack_budget``, of one part of it at a time: the slots are
    read once into a scratch file and the mosaics computed part by part
    (:mod:`pipeline.engine.parts`), so memory follows the budget, not the chunk size.
    """
    phases = Phases() if phases is None else phases
    if reuse is None:
        pieces = parts(task, outputs)
        if len(pieces) > 1:
            from pipeline.engine.parts import compute_in_parts

            return compute_in_parts(task, pieces, outputs, reader, phases, on_slot)
    work = task.grid_read
    nb = len(outputs.bands)
    shape = (nb, work.height, work.width)
    streaming = can_stream(outputs.mosaics)
    n = len(task.slots)
    stack = None if streaming else np.full((n, *shape), np.nan, dtype=np.float32)
    buffer = np.empty(shape, dtype=np.float32) if streaming else None
    need_qa = any(m.method == "best-pixel" for m in outputs.mosaics)
    qa_stack = np.zeros((n, *shape[1:]), bool) if need_qa and not streaming else None
    qa_buffer = np.empty(shape[1:], bool) if need_qa and streaming else None
    states = [StreamState(m, task.slots, outputs.bands, shape) for m in outputs.mosaics
              ] if streaming else []
    crop = _crop(task)
    kept: list[tuple[int, np.ndarray]] = []
    used: list[str] = []
    failures: list[tuple[str, str, str]] = []
    windows = ChunkMemo()  # index maps by source grid, bounded: the bands of a grid share them
    any_filled = False
    for k, slot_scenes in enumerate(task.slots):
        if stack is not None:
            plane, qa = stack[k], (qa_stack[k] if qa_stack is not None else None)
        else:
            plane, qa = buffer, qa_buffer
            plane.fill(np.nan)  # type: ignore[union-attr]
            if qa is not None:
                qa.fill(False)
        filled = reuse(slot_scenes, plane) if reuse is not None else None
        if filled is None:
            # all NaN: a new stack's plane or the buffer just filled (reuse's None wrote nothing)
            filled = _merge_slot(slot_scenes, plane, qa, work, outputs, reader, windows, used,
                                 failures, phases, empty=True, clip=task.clip)
        if not filled:
            continue
        any_filled = True
        cropped = plane[(slice(None), *crop)]  # type: ignore[index]
        if on_slot is not None:
            with phases("write"):
                on_slot(slot_scenes.slot, cropped)
        else:
            kept.append((slot_scenes.slot, cropped.copy() if streaming else cropped))
        with phases("composite"):
            for state in states:
                state.update(k, plane, qa)
    with phases("composite"):
        mosaics = _mosaics(task, outputs, stack, qa_stack, states, crop, any_filled)
    return ChunkOutput(task.chunk, tuple(kept), mosaics, tuple(used), tuple(failures))


def _mosaics(task, outputs, stack, qa_stack, states, crop, any_filled) -> tuple[dict, ...]:
    """Each mosaic of the chunk, cropped: empty without data, else streamed or reduced."""
    nb = len(outputs.bands)
    if not any_filled:
        return tuple(_empty(m, nb, task.chunk) for m in outputs.mosaics)
    if stack is None:  # streaming
        return tuple(_cropped(state.result(), crop) for state in states)
    return tuple(
        _cropped(composite_method(m, stack, task.slots, bands=outputs.bands,
                                  qa_masked=qa_stack), crop)
        for m in outputs.mosaics
    )


def _merge_slot(slot_scenes, plane, qa, work, outputs, reader, windows, used, failures,
                phases: Phases, *, empty: bool = False,
                clip: Sequence[tuple[int, str, int, int, int, int]] = ()) -> bool:
    """Merge the slot's scenes into ``plane`` (first valid wins); OR their quality masks into
    ``qa`` where no scene filled the pixel. True if any pixel was filled.

    ``empty``: the caller's word that ``plane`` is all NaN. Until a scene fills a pixel, each
    scene is then gathered straight into the plane and its invalid or masked pixels set back to
    NaN (:func:`~pipeline.kernels.median.keep_valid`): the plane merge_first_valid would give,
    bit for bit, without a scene buffer or a merge pass (most slots hold one scene: in the
    benchmark job 36 of 36). Later scenes of the slot go through a buffer and the merge.

    ``clip``: (slot, scene id, grid region) where that slot's scene adds nothing (its values
    are set back to NaN there before the merge: :attr:`ChunkTask.clip`)."""
    filled = False
    for scene in slot_scenes.scenes:
        direct = empty and not filled
        try:
            read = read_scene(
                scene, work, resampling=outputs.resampling, reader=reader, windows=windows,
                masking=outputs.masking, phases=phases, out=plane if direct else None,
            )
        except ReadError as exc:
            if direct:
                plane.fill(np.nan)  # what the failed scene gathered before its error
            failures.append((scene.id, exc.reason, exc.message))
            continue
        if read is None:
            continue
        values, masked = read
        with phases("composite"):
            _clip(values, masked, work,
                  [r[2:] for r in clip if r[:2] == (slot_scenes.slot, scene.id)])
            if qa is not None:
                qa |= masked
            merged = keep_valid(plane, masked) if direct else merge_first_valid(
                values, masked, plane)
        if merged:
            used.append(scene.id)
            filled = True
    if qa is not None:  # masked = a quality asset masked it and no scene filled it
        with phases("composite"):
            qa &= ~np.isfinite(plane[0])
    return filled


def _clip(values: np.ndarray, masked: np.ndarray, work: ChunkGrid,
          regions: Sequence[tuple[int, int, int, int]]) -> None:
    """NaN in ``values`` and False in ``masked`` (both on ``work``) over each grid region
    (y0, x0, height, width)."""
    for y0, x0, h, w in regions:
        ys = slice(max(y0 - work.y0, 0), max(min(y0 + h - work.y0, work.height), 0))
        xs = slice(max(x0 - work.x0, 0), max(min(x0 + w - work.x0, work.width), 0))
        values[:, ys, xs] = np.nan
        masked[ys, xs] = False


def _crop(task: ChunkTask) -> tuple[slice, slice]:
    work, c = task.grid_read, task.chunk
    dy, dx = c.y0 - work.y0, c.x0 - work.x0
    return slice(dy, dy + c.height), slice(dx, dx + c.width)


def _cropped(result: dict[str, np.ndarray], crop: tuple[slice, slice]) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v[(..., *crop)]) for k, v in result.items()}


def _empty(spec: MosaicOutput, nb: int, chunk: ChunkGrid) -> dict[str, np.ndarray]:
    shape = (chunk.height, chunk.width)
    out: dict[str, np.ndarray] = {
        "bands": np.full((nb, *shape), np.nan, np.float32),
        "count": np.zeros(shape, np.uint16),
    }
    for layer in mosaic_layers(spec.method, blend_width=spec.blend_width):
        out[layer] = np.full(shape, -1, np.int32) if layer == "source" else np.full(
            shape, np.nan, np.float32)
    return out


def read_scene(
    scene: Scene,
    chunk: ChunkGrid,
    *,
    resampling: str,
    reader: RasterReader,
    windows: dict | None = None,
    masking: Masking | None = None,
    phases: Phases | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """One scene on the chunk's grid: reflectance (or radiance) (B, Y, X) float32 (NaN =
    nodata) and the quality mask (Y, X) bool of the ``masking`` classes (cloud and shadow
    dilated when asked). None when the scene's rasters do not reach the chunk. ``windows``
    memoises index maps by source grid (and sun terms) within one chunk; ``phases`` receives
    the seconds of each step. ``out``: an all-NaN (B, Y, X) float32 array to gather into (and
    return) instead of a new one; a band the scene's rasters do not reach stays NaN there, and
    a read error can leave it partly written."""
    windows = {} if windows is None else windows
    masking = masking or Masking()
    phases = Phases() if phases is None else phases

    def window(grid):
        if grid not in windows:
            with phases("warp"):
                windows[grid] = nearest_window(chunk, grid)
        return windows[grid]

    nb = len(scene.bands)
    shape = (nb, chunk.height, chunk.width)
    if out is not None and (out.shape != shape or out.dtype != np.float32):
        raise ValueError(f"out must be a float32 array of shape {shape}, got "
                         f"{out.dtype}{out.shape}")
    values = np.full(shape, np.nan, dtype=np.float32) if out is None else out
    any_read = False
    for group in _asset_groups(scene.bands):
        first = group[0][1]
        band_out = np.array([i for i, _ in group], dtype=np.int64)
        scale = np.array([b.scale for _, b in group], dtype=np.float64)
        offset = np.array([b.offset for _, b in group], dtype=np.float64)
        nodata = first.nodata
        method = first.resampling or resampling  # the sensor profile's choice wins
        with phases("calibrate"):
            factor, post = group_factor([b for _, b in group], chunk, scene.datetime, windows)
        if method == "nearest":
            win = window(first.grid)
            if win is None:
                continue
            box = (win.row0, win.col0, win.height, win.width)
            with phases("read"):
                dn = reader.read(first.href, [b.index for _, b in group], box,
                                 signer=first.signer)
            with phases("decode"):
                mask, lut = _mask_band(first, box, reader, phases)
            with phases("calibrate"):  # the nearest-neighbour gather is fused in the kernel
                gather_calibrate(
                    dn,
                    win.rows,
                    win.cols,
                    band_out,
                    np.nan if nodata is None else float(nodata),
                    nodata is not None,
                    scale,
                    offset,
                    values,
                    valid_range=first.valid_range,
                    mask=mask,
                    mask_lut=lut,
                    factor=factor,
                    post_offset=post,
                )
        else:
            with phases("warp"):
                warped = _warp_gdal(first, [b.index for _, b in group], chunk, method, reader,
                                    phases)
            if warped is None:
                continue
            rows, cols = _identity_maps(chunk)
            with phases("calibrate"):
                gather_calibrate(warped, rows, cols, band_out, np.nan, False, scale, offset,
                                 values, factor=factor, post_offset=post)
        any_read = True
    if not any_read:
        return None
    with phases("decode"):
        masked = _quality_mask(scene.quality, chunk, window, reader, masking, phases)
    return values, masked


def _quality_mask(quality, chunk: ChunkGrid, window, reader, masking: Masking,
                  phases: Phases) -> np.ndarray:
    """OR of every quality source's mask classes; the cloud/shadow part grown by ``dilate``."""
    masked = np.zeros((chunk.height, chunk.width), dtype=bool)
    grown = np.zeros_like(masked) if masking.grown else None
    for q in quality:
        win = window(q.grid)
        if win is None:
            masked[:] = True  # no quality information here: do not trust the pixels
            continue
        with phases("read"):
            qa = reader.read(q.href, [q.index], (win.row0, win.col0, win.height, win.width),
                             signer=q.signer)[0]
        plain, dilatable = quality_luts(q, masking)
        gather_mask(qa, win.rows, win.cols, plain, masked)
        if grown is not None and dilatable is not None:
            gather_mask(qa, win.rows, win.cols, dilatable, grown, outside_masked=False)
    if grown is not None:
        masked |= grow(grown, masking.dilate)
    return masked


def _mask_band(band: BandSource, box, reader, phases: Phases):
    """(mask window, LUT) of the band's nodata mask band, or (None, None)."""
    if band.mask is None:
        return None, None
    href, index, nodata_values = band.mask
    with phases("read"):
        mask = reader.read(href, [index], box, signer=band.signer)[0]
    return mask, _nodata_lut(nodata_values, 256 if mask.dtype.itemsize == 1 else 65536)


@lru_cache(maxsize=64)
def _nodata_lut(values: tuple[int, ...], size: int) -> np.ndarray:
    lut = np.zeros(size, dtype=np.bool_)
    lut[[v for v in values if 0 <= v < size]] = True
    return lut


def _asset_groups(bands: Sequence[BandSource]) -> list[list[tuple[int, BandSource]]]:
    """Bands that live in one asset with one grid and nodata are read together (one decode)."""
    groups: dict[tuple, list[tuple[int, BandSource]]] = {}
    for i, b in enumerate(bands):
        key = (b.href, b.grid, b.nodata, b.resampling, b.valid_range, b.mask, b.sun_power)
        groups.setdefault(key, []).append((i, b))
    return list(groups.values())


@lru_cache(maxsize=8)
def _identity_maps(chunk: ChunkGrid) -> tuple[np.ndarray, np.ndarray]:
    rows = np.broadcast_to(
        np.arange(chunk.height, dtype=np.int32)[:, None], (chunk.height, chunk.width)
    )
    cols = np.broadcast_to(
        np.arange(chunk.width, dtype=np.int32)[None, :], (chunk.height, chunk.width)
    )
    return np.ascontiguousarray(rows), np.ascontiguousarray(cols)


def _warp_gdal(band: BandSource, indexes, chunk: ChunkGrid, resampling: str, reader,
               phases: Phases):
    """Non-nearest resampling goes through GDAL's warper on the needed window only."""
    from affine import Affine
    from rasterio.warp import Resampling, reproject

    win = nearest_window(chunk, band.grid, pad=3)
    if win is None:
        return None
    with phases("read"):
        dn = reader.read(band.href, indexes, (win.row0, win.col0, win.height, win.width),
                         signer=band.signer)
    src = dn.astype(np.float32)
    if band.nodata is not None:
        src[dn == band.nodata] = np.nan
    if band.valid_range is not None:  # nodata before interpolating, as for nearest
        src[(dn < band.valid_range[0]) | (dn > band.valid_range[1])] = np.nan
    with phases("decode"):
        mask, lut = _mask_band(band, (win.row0, win.col0, win.height, win.width), reader, phases)
    if mask is not None:
        src[:, lut[mask.astype(np.intp)]] = np.nan
    t = Affine(*band.grid.transform) @ Affine.translation(win.col0, win.row0)
    out = np.full((len(indexes), chunk.height, chunk.width), np.nan, dtype=np.float32)
    reproject(
        src,
        out,
        src_transform=t,
        src_crs=band.grid.crs,
        src_nodata=np.nan,
        dst_transform=Affine(*chunk.transform),
        dst_crs=chunk.crs,
        dst_nodata=np.nan,
        resampling=Resampling[resampling],
    )
    return out


# --------------------------------------------------------------------------- write


def _array(group: Any, name: str) -> Any:
    import zarr

    node = group[name]
    assert isinstance(node, zarr.Array), f"{name} in {group.store} is not an array"
    return node


def mosaic_writes(out: ChunkOutput, outputs: Outputs, groups: Sequence[Any]) -> list[Write]:
    """Each mosaic's bands and layers over the chunk's region, ``groups`` the mosaics' zarr
    groups in ``outputs.mosaics`` order."""
    c = out.chunk
    region = (slice(c.y0, c.y0 + c.height), slice(c.x0, c.x0 + c.width))
    writes: list[Write] = []
    for spec, mosaic, group in zip(outputs.mosaics, out.mosaics, groups, strict=True):
        for b, name in enumerate(outputs.bands):
            writes.append((_array(group, name), region, mosaic["bands"][b]))
        for layer in ("count", *mosaic_layers(spec.method, blend_width=spec.blend_width)):
            writes.append((_array(group, layer), region, mosaic[layer]))
    return writes


def process_chunk(task: ChunkTask, *, outputs: Outputs, reader: RasterReader) -> ChunkSummary:
    """A run's chunk task: compute one chunk, writing cube slots as they finish and the mosaics
    at the end (:class:`~pipeline.engine.writer.ChunkWriter`); returns only a small summary."""
    import zarr

    t0 = time.perf_counter()
    phases = Phases()
    c = task.chunk
    region = (slice(c.y0, c.y0 + c.height), slice(c.x0, c.x0 + c.width))
    cube = []
    if outputs.cube_store is not None:
        with phases("write"):
            group = zarr.open_group(str(outputs.cube_store), mode="r+")
            cube = [_array(group, name) for name in outputs.bands]
    writer = ChunkWriter(cube, region, overviews=Pyramid(), idle_threads=True)
    out = compute_chunk(task, outputs=outputs, reader=reader,
                        on_slot=writer if cube else None, phases=phases)
    t1 = time.perf_counter()
    with phases("write"):
        groups = [zarr.open_group(str(m.store), mode="r+") for m in outputs.mosaics]
        writer.finish(mosaic_writes(out, outputs, groups), mosaics=len(groups))
    t2 = time.perf_counter()
    valid = (
        int((out.mosaics[0]["count"] > 0).sum())
        if out.mosaics
        else int(sum(np.isfinite(a[0]).sum() for _, a in out.slots))
    )
    return ChunkSummary(
        chunk=task.chunk.name,
        scenes_read=task.n_scenes,
        used=out.used,
        failures=out.failures,
        valid_pixels=valid,
        pixels_written=writer.pixels,
        seconds={"compute": t1 - t0, "write": t2 - t1},
        phases=dict(phases),
    )


def process_block(block: ChunkTask, members: Sequence[ChunkTask], *, outputs: Outputs,
                  reader: RasterReader) -> tuple[ChunkSummary, ...]:
    """A run's fused task (:mod:`pipeline.plan.fuse`): the block computed as one region, then
    each member chunk's mosaics cropped from it and written as :func:`process_chunk` writes a
    lone chunk's. One summary per member, in ``members`` order: its scenes used are the
    block's among those it lists; the block's seconds and phases go on the first.

    A scene that failed to read over the block's region may read fine over a member's own
    window (a corrupt tile elsewhere in its raster): then nothing of the block is written and
    each member is computed as its own task (:func:`process_chunk`), so the failures name the
    chunks, and the stores hold the pixels, that one task per chunk gives."""
    import zarr

    t0 = time.perf_counter()
    phases = Phases()
    out = compute_chunk(block, outputs=outputs, reader=reader, phases=phases)
    t1 = time.perf_counter()
    if out.failures:
        alone = tuple(process_chunk(m, outputs=outputs, reader=reader) for m in members)
        first = alone[0]  # the block's own time counts too, on the first chunk
        first.seconds["compute"] = first.seconds.get("compute", 0.0) + (t1 - t0)
        phases.add(first.phases)
        first.phases = dict(phases)
        return alone
    pyramid = Pyramid()  # each overview array opened once for the block
    summaries = []
    with phases("write"):
        groups = [zarr.open_group(str(m.store), mode="r+") for m in outputs.mosaics]
        for task in members:
            c = task.chunk
            crop = (slice(c.y0 - block.chunk.y0, c.y0 - block.chunk.y0 + c.height),
                    slice(c.x0 - block.chunk.x0, c.x0 - block.chunk.x0 + c.width))
            listed = {sc.id for slot in task.slots for sc in slot.scenes}
            mine = ChunkOutput(c, (), tuple(_cropped(m, crop) for m in out.mosaics),
                               tuple(u for u in out.used if u in listed),
                               tuple(f for f in out.failures if f[0] in listed))
            writer = ChunkWriter([], (slice(c.y0, c.y0 + c.height), slice(c.x0, c.x0 + c.width)),
                                 overviews=pyramid, idle_threads=True)
            writer.finish(mosaic_writes(mine, outputs, groups), mosaics=len(groups))
            summaries.append(ChunkSummary(
                chunk=c.name, scenes_read=task.n_scenes, used=mine.used,
                failures=mine.failures, valid_pixels=int((mine.mosaics[0]["count"] > 0).sum()),
                pixels_written=writer.pixels,
            ))
    t2 = time.perf_counter()
    summaries[0].seconds = {"compute": t1 - t0, "write": t2 - t1}
    summaries[0].phases = dict(phases)
    return tuple(summaries)


def _merged(task: ChunkTask, *used: Sequence[str]) -> tuple[str, ...]:
    """Scene ids used by several passes over one chunk, once each, in the chunk's merge order."""
    order = {sid: i for i, sid in enumerate(s.id for slot in task.slots for s in slot.scenes)}
    return tuple(sorted({u for us in used for u in us}, key=order.__getitem__))


def _merged_failures(task: ChunkTask, *failures: Sequence[tuple[str, str, str]]
                     ) -> tuple[tuple[str, str, str], ...]:
    """Failures of several passes over one chunk, the first of each scene, in merge order."""
    order = {sid: i for i, sid in enumerate(s.id for slot in task.slots for s in slot.scenes)}
    first: dict[str, tuple[str, str, str]] = {}
    for group in failures:
        for f in group:
            first.setdefault(f[0], f)
    return tuple(sorted(first.values(), key=lambda f: order[f[0]]))
