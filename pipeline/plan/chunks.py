"""Spec + scenes → a plan: pure data, hashable, printable. No I/O, no dask.

The plan groups scenes into time slots (one collection, one local solar day) and lists one task
per output chunk, each with the slots and scenes whose footprints touch it. The number of tasks is
the number of chunks that any scene touches; it does not grow with the number of scenes.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.catalog.scene import Scene
from pipeline.catalog.units import pixel_size_text
from pipeline.errors import PlanTooLarge
from pipeline.plan.calibration import Masking
from pipeline.plan.extent import PlanLimits, check_grid_size, fmt_bounds
from pipeline.plan.grid import ChunkGrid, TargetGrid


@dataclass(frozen=True)
class TimeSlot:
    """One time step of the cube: the scenes of one collection on one local solar day."""

    index: int
    collection: str
    solar_day: dt.date
    time: dt.datetime  # mean acquisition time of its scenes, UTC
    scene_ids: tuple[str, ...]
    provider: str = ""
    sun_elevation: float = float("nan")  # degrees, mean over its scenes (NaN: not published)
    off_nadir: float = float("nan")  # degrees, mean over its scenes (NaN: not published)


@dataclass(frozen=True)
class SlotScenes:
    """The scenes of one slot that touch one chunk, in merge order (earliest first, then id)."""

    slot: int
    scenes: tuple[Scene, ...]
    meta: TimeSlot | None = None


@dataclass(frozen=True)
class ChunkTask:
    """Everything one fused chunk task needs: its grid and the scenes touching it, by slot."""

    chunk: ChunkGrid
    slots: tuple[SlotScenes, ...]
    work: ChunkGrid | None = None  # the chunk plus the halo its mosaics need (None: no halo)
    # (slot index, scene id, y0, x0, height, width): a grid region where that slot's scene adds
    # no pixel (a fused block's chunk whose own task would not read the scene:
    # pipeline.plan.fuse); the slot, as an item id may repeat in another collection's slot
    clip: tuple[tuple[int, str, int, int, int, int], ...] = ()

    @property
    def grid_read(self) -> ChunkGrid:
        """The grid the task reads and composites on; outputs are cropped to ``chunk``."""
        return self.work or self.chunk

    @property
    def n_scenes(self) -> int:
        return sum(len(s.scenes) for s in self.slots)


@dataclass(frozen=True)
class MosaicOutput:
    """One mosaic product: its store, method and the method's parameters (validated upstream)."""

    store: Path
    method: str
    q: float | None = None
    priority: tuple[str, ...] = ()
    key: str | None = None
    weights: tuple[tuple[str, float], ...] = ()  # best-pixel weights (BestPixelWeights fields)
    target: dt.datetime | None = None  # best-pixel target time
    blend_width: int = 0  # pixels; 0 = no seam blending
    format: str = "zarr3"  # the store's Zarr version: "zarr3" or "zarr2" (GDAL < 3.11)

    @property
    def halo(self) -> int:
        """Pixels around the chunk this mosaic needs so chunk borders are seamless."""
        halo = self.blend_width
        if self.method == "best-pixel":
            halo = max(halo, int(math.ceil(dict(self.weights).get("cloud_distance_max", 50.0))))
        return halo


@dataclass(frozen=True)
class Outputs:
    """Where the products go and how they are computed. All mosaics share one read."""

    bands: tuple[str, ...]
    resampling: str
    cube_store: Path | None
    mosaics: tuple[MosaicOutput, ...] = ()
    masking: Masking = Masking()  # quality classes dropped, cloud/shadow dilation
    quantity: str = "reflectance"  # or "radiance" (radiometry.target)
    harmonize_to: str | None = None
    cube_format: str = "zarr3"  # the cube store's Zarr version (see MosaicOutput.format)
    stack_budget: int = 48 * 2**20  # bytes of one part's time-slot stack (STACK_BUDGET, parts)
    read_side: int = 1024  # a chunk in parts is read in regions of at most this side (READ_SIDE)

    @property
    def halo(self) -> int:
        """Pixels read around each chunk: the mosaics' halo, plus the dilation (a cloud just
        outside the halo still grows into it)."""
        halo = max((m.halo for m in self.mosaics), default=0)
        return halo + self.masking.dilate if halo or self.masking.dilate else 0


@dataclass(frozen=True)
class Plan:
    grid: TargetGrid
    slots: tuple[TimeSlot, ...]
    tasks: tuple[ChunkTask, ...]
    scenes: tuple[Scene, ...]
    outputs: Outputs

    def summary(self) -> str:
        ny, nx = self.grid.shape
        cy, cx = self.grid.chunk_counts
        pixel = pixel_size_text(str(self.grid.crs), abs(self.grid.transform[0]))  # ° or m
        return (
            f"{len(self.scenes)} scenes in {len(self.slots)} time slots → grid {ny}×{nx} px "
            f"({self.grid.crs}, {pixel}, bounds "
            f"{fmt_bounds(self.grid.bounds)}), {cy * cx} chunks of "
            f"{self.grid.chunk} px, {len(self.tasks)} tasks"
        )


def time_slots(scenes: Sequence[Scene]) -> tuple[TimeSlot, ...]:
    """Group scenes by (collection, local solar day); order slots by mean time, then collection."""
    groups: dict[tuple[str, dt.date], list[Scene]] = defaultdict(list)
    for s in scenes:
        groups[(s.collection, s.solar_day)].append(s)
    rows = []
    for (collection, day), members in groups.items():
        members.sort(key=lambda s: (s.datetime, s.id))
        epoch = sum(m.datetime.timestamp() for m in members) / len(members)
        mean = dt.datetime.fromtimestamp(round(epoch), tz=dt.UTC)
        rows.append((mean, collection, day, members))
    rows.sort(key=lambda r: (r[0], r[1]))
    slots = []
    previous = None
    for i, (mean, collection, day, members) in enumerate(rows):
        if previous is not None and mean <= previous:  # keep time strictly increasing
            mean = previous + dt.timedelta(seconds=1)
        previous = mean
        slots.append(TimeSlot(
            i, collection, day, mean, tuple(m.id for m in members),
            provider=members[0].provider,
            sun_elevation=_mean(m.sun_elevation for m in members),
            off_nadir=_mean(m.off_nadir for m in members),
        ))
    return tuple(slots)


def _mean(values: Iterable[float | None]) -> float:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else float("nan")


def make_plan(
    scenes: Sequence[Scene],
    *,
    grid: TargetGrid,
    outputs: Outputs,
    known_chunks: Callable[[Scene], list[tuple[int, int]] | None] | None = None,
    limits: PlanLimits | None = None,
) -> Plan:
    """Assign every scene to its slot and to the chunks its footprint touches.

    Scenes that touch no chunk of the grid are left out (``Plan.scenes`` lists those used).
    ``known_chunks(scene)`` may give the chunks a scene was found to touch before (nightly runs
    keep them in the ledger: a footprint-to-tiles query costs milliseconds per scene).
    A plan beyond ``limits`` is refused (:class:`PlanTooLarge`) as soon as the arithmetic shows
    it: the grid's pixels and chunks before any footprint is intersected (~60 µs a chunk), the
    time slots before any task is built, then the memory of the largest task.
    """
    limits = limits or PlanLimits()
    check_grid_size(grid.shape, grid.chunk, limits, source="the grid")
    pad = 2.0 + outputs.halo  # a scene touching a chunk's halo matters to that chunk

    def chunks_of(s: Scene) -> list[tuple[int, int]]:
        known = known_chunks(s) if known_chunks is not None else None
        return known if known is not None else grid.chunks_touching(s.footprint, pad_pixels=pad)

    # by Scene.key: an item id may repeat across collections (a different acquisition)
    touching = {s.key: chunks_of(s) for s in scenes}
    used = [s for s in scenes if touching[s.key]]
    slots = time_slots(used)
    if len(slots) > limits.max_time_slots:
        raise PlanTooLarge(
            f"the scenes fall in {len(slots):,} time slots (collection × solar day), above "
            f"limits.max_time_slots = {limits.max_time_slots:,}. Narrow 'datetime' or "
            "'collections', or raise limits.max_time_slots in the workflow spec"
        )
    outputs = _with_default_targets(outputs, slots)
    slot_of = {(slot.collection, sid): slot.index for slot in slots for sid in slot.scene_ids}
    ordered = sorted(used, key=lambda s: (slot_of[s.key], s.datetime, s.id))
    per_chunk: dict[tuple[int, int], dict[int, list[Scene]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for scene in ordered:
        for key in touching[scene.key]:
            per_chunk[key][slot_of[scene.key]].append(scene)
    tasks = tuple(
        ChunkTask(
            (chunk := grid.chunk_grid(*key)),
            tuple(
                SlotScenes(i, tuple(ss), slots[i]) for i, ss in sorted(per_chunk[key].items())
            ),
            grid.expanded(chunk, outputs.halo) if outputs.halo else None,
        )
        for key in sorted(per_chunk)
    )
    _check_task_memory(tasks, outputs, limits)
    return Plan(grid, slots, tasks, tuple(ordered), outputs)


STREAMABLE = frozenset({"latest", "earliest", "priority", "best-pixel", "quality",
                        "mean", "min", "max"})


def can_stream(mosaics: Sequence[MosaicOutput]) -> bool:
    """True when every mosaic can be folded slot by slot (no median/percentile/medoid, no
    blending, which needs every observation's weight)."""
    return all(m.method in STREAMABLE and not m.blend_width for m in mosaics)


#: Bytes the time-slot stack of one part of a chunk may hold (median, percentile, medoid and
#: blending need every slot at once): a chunk whose stack is larger is computed in square parts
#: (:func:`parts`), each read, composited and cropped in turn, and the chunk written once. So a
#: task's memory follows this budget, not the chunk size the user picked for the store.
STACK_BUDGET = 48 * 2**20
#: The largest side of the region of a chunk in parts that one slot plane covers
#: (pipeline.engine.parts.read_regions): a larger chunk is read region by region, on the worker's
#: spare threads, so the slot plane, a scene's values and its index maps follow this, not the
#: chunk size. 1024 px: the benchmark's job read as fast in 1024 px regions as in whole 1024 px
#: chunks.
READ_SIDE = 1024
#: The smallest part's side: below it a part's halo and per-read overheads outweigh the saving.
MIN_PART = 128


def stack_bytes(n_slots: int, n_bands: int, height: int, width: int) -> int:
    """Bytes of a (T, B, Y, X) float32 stack plus its (T, Y, X) quality-mask stack."""
    return n_slots * height * width * (4 * n_bands + 1)


def parts(task: ChunkTask, outputs: Outputs) -> tuple[ChunkTask, ...]:
    """``task`` split into square parts whose time-slot stacks fit ``outputs.stack_budget``.

    ``(task,)`` when every mosaic streams (no stack), when there are no mosaics, or when the
    whole chunk's stack fits. A part is a :class:`ChunkTask` of its own: its ``chunk`` the
    pixels it contributes, its ``work`` that part grown by the mosaics' halo and clipped to the
    task's read grid (so a part sees exactly the neighbourhood the whole chunk would: the same
    pixels, the same result), and the task's slots (a scene that misses a part is skipped
    there by its read window). Sides halve from the chunk's until the stack fits or reach
    :data:`MIN_PART`, then are evened out over the chunk (400 px in parts of 128: 4 × 100)."""
    if not outputs.mosaics or can_stream(outputs.mosaics):
        return (task,)
    c, halo, t, nb = task.chunk, outputs.halo, len(task.slots), len(outputs.bands)
    side = max(c.height, c.width)

    work = task.grid_read

    def fits(s: int) -> bool:  # a part of side s grown by the halo, inside the read grid
        return stack_bytes(t, nb, min(min(c.height, s) + 2 * halo, work.height),
                           min(min(c.width, s) + 2 * halo, work.width)) <= outputs.stack_budget

    if fits(side):
        return (task,)
    while side > MIN_PART and not fits(side):
        side = max(MIN_PART, -(-side // 2))
    sy = -(-c.height // -(-c.height // side))  # as even as possible: no sliver at the edge
    sx = -(-c.width // -(-c.width // side))
    out = []
    for y0 in range(c.y0, c.y0 + c.height, sy):
        for x0 in range(c.x0, c.x0 + c.width, sx):
            h, w = min(sy, c.y0 + c.height - y0), min(sx, c.x0 + c.width - x0)
            part = c.part(y0, x0, h, w)
            wy0, wx0 = max(y0 - halo, work.y0), max(x0 - halo, work.x0)
            wy1 = min(y0 + h + halo, work.y0 + work.height)
            wx1 = min(x0 + w + halo, work.x0 + work.width)
            grown = work.part(wy0, wx0, wy1 - wy0, wx1 - wx0)
            out.append(ChunkTask(part, task.slots, grown if halo else None))
    return tuple(out)


def task_memory(task: ChunkTask, outputs: Outputs) -> int:
    """Estimated bytes one chunk task holds (README "Memory per task"). Median, percentile,
    medoid and blending keep every observation: a (T, B, Y, X) float32 stack (and a bool
    quality stack) of the slots touching the chunk, Y × X one part of the chunk plus its halo
    (:func:`parts`: at most ``outputs.stack_budget`` unless a :data:`MIN_PART` part exceeds
    it), plus the chunk's assembled mosaics. Streaming methods hold one slot buffer plus each
    mosaic's O(B·Y·X) state (float32 values, uint16 count, int32 source, float64 score and
    key, float64 sums for 'mean'). GDAL's capped cache and one scene-sized scratch array come
    on top."""
    g = task.grid_read
    pixels, nb = g.height * g.width, len(outputs.bands)
    if not can_stream(outputs.mosaics):
        stack = max(stack_bytes(len(task.slots), nb, p.grid_read.height, p.grid_read.width)
                    for p in parts(task, outputs))
        cube = nb * pixels * 4 if outputs.cube_store is not None else 0  # one slot plane
        assembled = task.chunk.height * task.chunk.width * (4 * nb + 12) * len(outputs.mosaics)
        return stack + cube + assembled
    state = sum(4 * nb + 22 + (8 * nb if m.method == "mean" else 0) for m in outputs.mosaics)
    return pixels * (4 * nb + 1 + state)


def _check_task_memory(tasks: Sequence[ChunkTask], outputs: Outputs, limits: PlanLimits) -> None:
    if not tasks:
        return
    worst = max(tasks, key=lambda t: task_memory(t, outputs))
    need = task_memory(worst, outputs)
    if need > limits.max_task_memory:
        g = worst.grid_read
        held = (
            f"{len(outputs.mosaics)} mosaic states" if can_stream(outputs.mosaics)
            else f"{len(worst.slots)} time slots"
        )
        raise PlanTooLarge(
            f"chunk {worst.chunk.name} would hold about {need / 2**20:,.0f} MiB ({held} × "
            f"{len(outputs.bands)} bands × {g.height} × {g.width} px, float32), above "
            "limits.max_task_memory = "
            f"{limits.max_task_memory / 2**20:,.0f} MiB. Use a smaller grid.chunk (memory "
            "grows with its square), a shorter 'datetime', a streaming mosaic method (latest, "
            "mean, best-pixel, ...), or raise limits.max_task_memory in the workflow spec"
        )


def _with_default_targets(outputs: Outputs, slots: Sequence[TimeSlot]) -> Outputs:
    """Best-pixel without a target date targets the median slot time of the whole run (one
    value for every chunk: a per-chunk default would make chunk borders show)."""
    if not slots or all(m.method != "best-pixel" or m.target for m in outputs.mosaics):
        return outputs
    times = sorted(s.time for s in slots)
    middle = times[(len(times) - 1) // 2]
    mosaics = tuple(
        replace(m, target=middle) if m.method == "best-pixel" and m.target is None else m
        for m in outputs.mosaics
    )
    return replace(outputs, mosaics=mosaics)
