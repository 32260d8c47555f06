"""Small chunks computed four at a time: 2 × 2 neighbouring chunk tasks as one task.

A chunk task reads and decodes its own source windows. With chunks of at most half
``outputs.read_side`` (512 px and below by default), the source tiles a chunk reads straddle its
edges, so side by side chunks decode many of them twice or four times, and each task pays its
fixed costs (dataset lookups, index maps, a part file). A 2 × 2 block of such chunks computed as
one region decodes each tile once. Its mosaics are cropped and written chunk by chunk, each with
its own :class:`~pipeline.engine.writer.ChunkWriter` exactly as a lone chunk's are (the same
store chunks and overview writes), so the stores hold the same bytes; the run report still counts
and names chunks (:func:`pipeline.engine.chunk.process_block`).

The block reads every scene of its members. A lone chunk reads only the scenes whose footprint
touches it, and a raster's valid pixels can reach past its footprint (simplified STAC
geometries): so the block's task lists, in ``clip``, each member that a scene of the block does
not touch, and that scene adds no pixel there (:func:`pipeline.engine.chunk._merge_slot`).

A block is fused only where the members' pixels cannot change, and the work gets no worse:

* no cube (a cube's slots are written chunk by chunk as they finish) and no halo (a mosaic that
  looks past a pixel: seam blending, best-pixel's cloud distance, mask dilation);
* nearest-neighbour resampling (Aquila's index maps are anchored to the grid, whatever the
  region read; GDAL's warper, used for other resampling, is not) and no per-pixel sun term;
* every chunk of the block that lies inside the grid has a task (the block's region is theirs);
* at least ``min_tasks`` tasks remain (twice the cluster's threads): fewer, larger tasks would
  leave threads idle;
* the block's task stays within the workflow's ``limits.max_task_memory`` (each chunk task was
  checked against it when planned; a block holds about four chunks' worth).

The block reads a scene over its whole region; where a scene fails to read there, the task
computes each member on its own instead (:func:`pipeline.engine.chunk.process_block`), so
failures and pixels are those of one task per chunk.

Pure planning: no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.catalog.scene import Scene
from pipeline.plan.chunks import ChunkTask, Outputs, SlotScenes, task_memory
from pipeline.plan.grid import ChunkGrid, TargetGrid

#: Chunks per block side.
SIDE = 2


@dataclass(frozen=True)
class Block:
    """Neighbouring chunk tasks computed as one: ``task`` covers their region and reads every
    slot and scene of theirs; ``members`` are the chunks written from it."""

    task: ChunkTask
    members: tuple[ChunkTask, ...]


def fusable(grid: TargetGrid, outputs: Outputs) -> bool:
    """Whether this grid's chunks may be fused at all (module docstring, first condition)."""
    return (
        bool(outputs.mosaics)
        and outputs.cube_store is None
        and outputs.halo == 0
        and outputs.resampling == "nearest"
        and grid.chunk * SIDE <= outputs.read_side
    )


def fuse(
    tasks: Sequence[ChunkTask], grid: TargetGrid, outputs: Outputs, *, min_tasks: int,
    max_memory: int | None = None,
) -> tuple[ChunkTask | Block, ...]:
    """``tasks`` with every fusable 2 × 2 block of them replaced by a :class:`Block`, in the
    order of their first chunk; unchanged when fusing would leave fewer than ``min_tasks``
    tasks or nothing may be fused (module docstring). A block whose task would hold more than
    ``max_memory`` bytes (:func:`~pipeline.plan.chunks.task_memory`, the workflow's
    ``limits.max_task_memory``) stays four tasks."""
    if not tasks or not fusable(grid, outputs):
        return tuple(tasks)
    groups: dict[tuple[int, int], list[ChunkTask]] = defaultdict(list)
    for t in tasks:
        groups[(t.chunk.iy // SIDE, t.chunk.ix // SIDE)].append(t)
    ny, nx = grid.chunk_counts
    out: list[ChunkTask | Block] = []
    fused = 0
    for (by, bx), members in sorted(groups.items()):
        expected = (min(SIDE, ny - by * SIDE)) * (min(SIDE, nx - bx * SIDE))
        block = _block(members) if len(members) == expected > 1 else None
        if block is not None and max_memory is not None and \
                task_memory(block.task, outputs) > max_memory:
            block = None
        if block is None:
            out.extend(members)
        else:
            out.append(block)
            fused += 1
    if fused == 0 or len(out) < min_tasks:
        return tuple(tasks)
    return tuple(out)


def _block(members: list[ChunkTask]) -> Block | None:
    members = sorted(members, key=lambda t: (t.chunk.y0, t.chunk.x0))
    # a slot is one collection's, where an item id is unique (a repeated one is rejected as a
    # duplicate at discovery); across slots an id may repeat: scenes are (slot, id) here
    slots: dict[int, dict[str, Scene]] = defaultdict(dict)
    meta = {}
    for m in members:
        for s in m.slots:
            meta[s.slot] = s.meta
            for scene in s.scenes:
                slots[s.slot][scene.id] = scene
    scenes = [scene for by_id in slots.values() for scene in by_id.values()]
    if any((b.resampling or "nearest") != "nearest" or b.sun_power
           for scene in scenes for b in scene.bands):
        return None
    clip = []
    for m in members:
        listed = {(s.slot, sc.id) for s in m.slots for sc in s.scenes}
        c = m.chunk
        clip += [(i, scene.id, c.y0, c.x0, c.height, c.width)
                 for i, by_id in slots.items() for scene in by_id.values()
                 if (i, scene.id) not in listed]
    union = tuple(
        SlotScenes(i, tuple(sorted(slots[i].values(), key=lambda s: (s.datetime, s.id))), meta[i])
        for i in sorted(slots)
    )
    return Block(ChunkTask(_region(members), union, clip=tuple(sorted(clip))), tuple(members))


def _region(members: Sequence[ChunkTask]) -> ChunkGrid:
    """The members' bounding grid, indexed and georeferenced as its top-left chunk."""
    first = members[0].chunk
    y1 = max(m.chunk.y0 + m.chunk.height for m in members)
    x1 = max(m.chunk.x0 + m.chunk.width for m in members)
    return ChunkGrid(first.iy, first.ix, first.y0, first.x0, y1 - first.y0, x1 - first.x0,
                     first.crs, first.transform)
