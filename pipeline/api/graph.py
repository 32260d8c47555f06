"""A plan as Dask arrays: ONE fused task per output chunk (the engine's chunk computation, reading
every scene and time slot of that chunk), plus one cheap selection task per chunk and output
variable. The number of tasks grows with the chunks, never with the scenes.

Task names carry the variable and a hash of the plan (never a scene id); a chunk that no scene
touches runs the same function on a task without scenes (an all-NaN block).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.engine.blocks import (
    ReadErrors,
    band_plane,
    composite_cube_block,
    cube_block,
    mosaic_block,
    mosaic_layer,
)
from pipeline.io.settings import ReaderSettings
from pipeline.plan.chunks import ChunkTask, MosaicOutput, Plan, SlotScenes
from pipeline.plan.grid import TargetGrid

Key = tuple[Any, ...]
LAYER_DTYPES = {"count": np.uint16, "source": np.int32, "score": np.float32,
                "weight": np.float32}


def block_tasks(plan: Plan) -> dict[tuple[int, int], ChunkTask]:
    """Every chunk of the grid: its planned task, or one without scenes."""
    planned = {(t.chunk.iy, t.chunk.ix): t for t in plan.tasks}
    grid = plan.grid
    return {
        (c.iy, c.ix): planned.get((c.iy, c.ix)) or ChunkTask(c, ())
        for c in grid.chunks()
    }


def spatial_chunks(grid: TargetGrid) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Dask chunk sizes along y and x: the grid's tiling (the last ones may be smaller)."""
    (ny, nx), c = grid.shape, grid.chunk
    cy, cx = grid.chunk_counts
    return (tuple(min(c, ny - i * c) for i in range(cy)),
            tuple(min(c, nx - i * c) for i in range(cx)))


def _token(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def cube_arrays(
    plan: Plan, reader: ReaderSettings, read_errors: ReadErrors = "raise"
) -> dict[str, Any]:
    """One (time, y, x) float32 Dask array per band."""
    n_slots = len(plan.slots)
    fused = f"aquila-cube-{_token(reader.session, plan.grid, read_errors)}"
    layer: dict[Key, Any] = {
        (fused, iy, ix): (cube_block, reader, task, plan.outputs, n_slots, read_errors)
        for (iy, ix), task in block_tasks(plan).items()
    }
    ys, xs = spatial_chunks(plan.grid)
    return {
        band: _select(fused, layer, f"{band}-{fused}", band_plane, b, ((n_slots,), ys, xs),
                      np.float32, lead=(0,))
        for b, band in enumerate(plan.outputs.bands)
    }


def mosaic_arrays(
    plan: Plan, reader: ReaderSettings, layers: Sequence[str], read_errors: ReadErrors = "raise"
) -> dict[str, Any]:
    """One (y, x) Dask array per band of ``plan.outputs.mosaics[0]``, then ``count`` and its
    lineage ``layers``."""
    fused = f"aquila-mosaic-{_token(reader.session, plan.grid, plan.outputs, read_errors)}"
    layer: dict[Key, Any] = {
        (fused, iy, ix): (mosaic_block, reader, task, plan.outputs, read_errors)
        for (iy, ix), task in block_tasks(plan).items()
    }
    return _mosaic_variables(fused, layer, plan.outputs.bands, layers, plan.grid, deps=())


def composite_arrays(
    planes: Mapping[str, Any],
    method: MosaicOutput,
    slots: Sequence[SlotScenes],
    layers: Sequence[str],
    grid: TargetGrid,
) -> dict[str, Any]:
    """A mosaic of loaded cube arrays (band → (time, y, x) Dask array, time one chunk): one
    compositing task per chunk over the chunk's (T, B, y, x) stack, then one selection each."""
    bands = tuple(planes)
    arrays = [planes[b] for b in bands]
    fused = f"aquila-composite-{_token(method, [a.name for a in arrays])}"
    cy, cx = (len(c) for c in arrays[0].chunks[1:])
    layer: dict[Key, Any] = {
        (fused, iy, ix): (composite_cube_block, method, tuple(slots), bands,
                          *[(a.name, 0, iy, ix) for a in arrays])
        for iy in range(cy) for ix in range(cx)
    }
    return _mosaic_variables(fused, layer, bands, layers, grid, deps=arrays,
                             chunks=arrays[0].chunks[1:])


def _mosaic_variables(
    fused: str, layer: dict[Key, Any], bands: Sequence[str], layers: Sequence[str],
    grid: TargetGrid, *, deps: Sequence[Any], chunks: tuple | None = None,
) -> dict[str, Any]:
    spatial = chunks or spatial_chunks(grid)
    out = {
        band: _select(fused, layer, f"{band}-{fused}", mosaic_layer, ("bands", b), spatial,
                      np.float32, deps=deps)
        for b, band in enumerate(bands)
    }
    for name in ("count", *layers):
        out[name] = _select(fused, layer, f"{name}-{fused}", mosaic_layer, (name,), spatial,
                            LAYER_DTYPES[name], deps=deps)
    return out


def _select(
    fused: str,
    layer: dict[Key, Any],
    name: str,
    fn: Callable[..., np.ndarray],
    args: Any,
    chunks: tuple[tuple[int, ...], ...],
    dtype: Any,
    *,
    lead: tuple[int, ...] = (),
    deps: Sequence[Any] = (),
) -> Any:
    """A Dask array whose block (iy, ix) is ``fn(fused block (iy, ix), *args)``."""
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    extra = args if isinstance(args, tuple) else (args,)
    picks = {(name, *lead, key[1], key[2]): (fn, key, *extra) for key in layer}
    base = HighLevelGraph.from_collections(fused, layer, dependencies=list(deps))  # type: ignore[arg-type]
    layers: dict[str, Any] = {**base.layers, name: picks}
    graph = HighLevelGraph(layers, {**base.dependencies, name: {fused}})
    meta = np.empty((0,) * len(chunks), dtype=dtype)
    return da.Array(graph, name, chunks=chunks, dtype=dtype, meta=meta)
