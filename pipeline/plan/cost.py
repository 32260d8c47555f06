"""What a plan costs: core-hours, bytes read, tasks, memory per worker, and the cluster that
meets a deadline (``aquila validate --cost``; docs/cost.md walks through an example).

Pure arithmetic: work counted from the plan (or from a revisit assumption when no catalog is
searched) divided by per-core rates that ``benchmarks/rates.py`` measured on one machine from
the engine's own functions, single-threaded (:mod:`pipeline.plan.rates`). A chunk task runs on
one worker thread, so seconds of one thread are core-seconds.

Work is counted the way the chunk task does it (``engine/chunk.py``): every scene touching a
task reads its window of each band at the source resolution (``read``), builds index maps for
the whole task grid once per source grid (``warp``), gathers and calibrates every band over the
whole task grid (``calibrate``), gathers its quality masks (``decode``), merges into its slot and
each mosaic reduces the task's slots (``composite``), and whole chunks are written (``write``).

Limits, said once: network transfer from object storage is not timed unless a bandwidth is
given (then it sizes the cluster beside the CPU); GDAL warping (non-nearest resampling),
seam blending and cloud-distance terms are counted at the rates of the nearest-neighbour path
and the method kernel; scheduler overhead, stragglers and worker start-up are the ``margin``;
tile overlaps and swath edges are averages in the assumption mode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.catalog.scene import Scene
from pipeline.plan import chunks as _chunks
from pipeline.plan.chunks import ChunkTask, Outputs, Plan, SlotScenes
from pipeline.plan.grid import TargetGrid
from pipeline.plan.methods import mosaic_layers

MIB = 2**20
PHASES = ("read", "decode", "warp", "calibrate", "composite", "write")
"""The chunk task's phases (``engine/chunk.PHASES``; the run report's ``seconds_by_phase``)."""


# --------------------------------------------------------------------------- rates


@dataclass(frozen=True)
class Rates:
    """Single-thread rates of the engine's pieces on one machine (``benchmarks/rates.py``)."""

    read_px_s: float  # source px/s per band plane: COG window read + decompress (GDAL)
    bytes_per_source_px: float  # compressed bytes read per source pixel per band plane
    warp_px_s: float  # task px/s: nearest index maps, source in another CRS than the grid
    warp_same_crs_px_s: float  # task px/s: the same, source in the grid's CRS (separable)
    calibrate_px_s: float  # task px·band/s: fused gather + nodata/mask + scale/offset
    mask_px_s: float  # task px/s per quality source: gather of its class LUT
    merge_px_s: float  # task px·band/s: a scene merged into its slot (first valid wins)
    composite_px_slot_s: Mapping[str, float]  # per method: task px·slot/s, all bands
    write_px_s: float  # px/s of one float32 plane encoded (Blosc) and written as whole chunks
    task_bytes_per_px: float  # a task's bytes per task px beyond its held stack or states
    task_fixed_bytes: float  # a task's bytes independent of its size
    worker_base_bytes: float  # a worker process before any task (imports, numba, GDAL)
    read_call_s: float = 0.0  # seconds per window read beyond its pixels (open, tile index)
    warp_call_s: float = 0.0  # seconds per index-map build beyond its pixels (projections)
    machine: str = ""
    cores: int = 0
    date: str = ""
    commit: str = ""

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> Rates:
        """The rates from ``benchmarks/rates.py``'s table (unknown keys are ignored)."""
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in table.items() if k in names}
        values["composite_px_slot_s"] = dict(values.get("composite_px_slot_s", {}))
        return cls(**values)

    def composite_rate(self, method: str) -> float:
        """A method's rate; one not measured takes the slowest measured (an upper bound)."""
        rates = self.composite_px_slot_s
        return rates.get(method, min(rates.values()))


def load_rates() -> Rates:
    """The rates committed with this version (:mod:`pipeline.plan.rates`)."""
    from pipeline.plan.rates import MEASURED

    return Rates.from_mapping(MEASURED)


# --------------------------------------------------------------------------- work


@dataclass(frozen=True)
class Workload:
    """The work of a plan in the units the rates are in. ``*_px`` are pixel counts summed as
    named; a "touch" is one (pass, scene) pair: that scene is read for one pass of a task (a
    task is one pass, or several when the engine computes it in parts: :func:`task_passes`)."""

    tasks: int
    scenes: int
    source_px: float  # source px decoded, summed over band and quality planes
    reads: float  # window reads (one per asset, quality source and mask band per touch)
    warp_calls: float  # index maps built (one per source grid per touch)
    warp_px: float  # Σ touches: pass px × source grids of the scene
    warp_reprojected_px: float  # the part of warp_px from sources in another CRS
    calibrate_px: float  # Σ touches: pass px × bands
    mask_px: float  # Σ touches: pass px × quality sources
    merge_px: float  # Σ touches: pass px × bands
    slot_px: float  # Σ mosaic passes: pass px × slots (what each mosaic reduces)
    write_px: float  # Σ tasks: chunk px × planes written (bands and layers, all products)
    task_peak_bytes: int  # the largest task's :func:`task_peak_bytes`
    basis: str  # where the counts come from: "plan" (catalog searched) or the assumption


@dataclass(frozen=True)
class Assumption:
    """Work without a catalog search: each grid pixel is observed every ``revisit_days``
    (Sentinel-2 with two satellites: 5 days at the equator, 2-3 at 45-60°N), or
    ``scenes_per_night`` scenes land each day. Scenes are ``scene_km`` squares on a tiling
    with ``overlap`` (Sentinel-2 MGRS: 110 km tiles, 100 km apart: 0.21). Band pixels at
    ``source_resolution``, one quality source at ``quality_resolution`` (metres), each band in
    its own file (Sentinel-2's layout); ``grids`` source grids per scene (bands and quality on
    different grids: 2); ``reprojected``: the scenes are in another CRS than the grid (UTM
    zones onto a continental grid)."""

    revisit_days: float | None = None
    scenes_per_night: float | None = None
    scene_km: float = 110.0
    overlap: float = 0.21
    source_resolution: float = 10.0
    quality_resolution: float = 20.0
    grids: int = 2
    reprojected: bool = True

    def observed_share_per_day(self, grid_area_m2: float) -> float:
        """The share of the grid observed in one day."""
        if self.scenes_per_night is not None:
            area = self.scenes_per_night * (self.scene_km * 1000.0) ** 2 / (1.0 + self.overlap)
            return area / grid_area_m2
        if self.revisit_days is None or self.revisit_days <= 0:
            raise ValueError("an assumption needs revisit_days > 0 or scenes_per_night")
        return 1.0 / self.revisit_days


def write_planes(outputs: Outputs, slots: int) -> int:
    """Planes a task writes per chunk pixel: each mosaic's bands, count and lineage layers, and
    the cube's bands for each of its slots."""
    nb = len(outputs.bands)
    planes = sum(nb + 1 + len(mosaic_layers(m.method, blend_width=m.blend_width))
                 for m in outputs.mosaics)
    return planes + (slots * nb if outputs.cube_store is not None else 0)


def task_passes(task: ChunkTask, outputs: Outputs) -> tuple[tuple[ChunkTask, bool], ...]:
    """How the engine reads a task: (pass, composites mosaics?) pairs. A task whose time-slot
    stack exceeds the engine's budget is computed in parts (``plan.chunks.parts``, where the
    engine has it), each part read with its halo; with a cube as well, the whole task is read
    once more for the cube's slot planes. Update with the engine."""
    split = getattr(_chunks, "parts", None)
    pieces: tuple[ChunkTask, ...] = tuple(split(task, outputs)) if split else (task,)
    if len(pieces) == 1:
        return ((task, bool(outputs.mosaics)),)
    whole = ((task, False),) if outputs.cube_store is not None else ()
    return whole + tuple((p, True) for p in pieces)


@dataclass
class _Counter:
    """Sums of the work of touches, passes and tasks (the mutable side of :class:`Workload`)."""

    nb: int
    grid_crs: str
    reads: float = 0.0
    warp_calls: float = 0.0
    warp: float = 0.0
    warp_re: float = 0.0
    cal: float = 0.0
    mask: float = 0.0
    merge: float = 0.0
    slot_px: float = 0.0
    write: float = 0.0

    def touch(self, px: float, *, reads: float, grids: float, reprojected: float,
              quality: float, times: float = 1.0) -> None:
        """``times`` touches of one scene on a pass of ``px`` pixels."""
        self.reads += times * reads
        self.warp_calls += times * grids
        self.warp += times * px * grids
        self.warp_re += times * px * reprojected
        self.cal += times * px * self.nb
        self.mask += times * px * quality
        self.merge += times * px * self.nb


def _scene_counts(scene: Scene, grid_crs: str) -> tuple[int, int, int, int]:
    """(reads, grids, grids in another CRS, quality sources) of one scene per touch."""
    grids = {b.grid for b in scene.bands} | {q.grid for q in scene.quality}
    reads = (len({b.href for b in scene.bands}) + len(scene.quality)
             + len({b.mask for b in scene.bands if b.mask is not None}))
    return reads, len(grids), sum(1 for g in grids if g.crs != grid_crs), len(scene.quality)


def workload_of_plan(plan: Plan, *, source_px: float, rates: Rates) -> Workload:
    """Counted from a plan's tasks and scenes; ``source_px`` from :func:`source_pixels`."""
    o = plan.outputs
    n = _Counter(len(o.bands), plan.grid.crs)
    counts = {s.id: _scene_counts(s, plan.grid.crs) for s in plan.scenes}
    peak = 0
    for task in plan.tasks:
        peak = max(peak, task_peak_bytes(task, o, rates=rates))
        c = task.chunk
        n.write += c.height * c.width * write_planes(o, len(task.slots))
        for piece, mosaics in task_passes(task, o):
            g = piece.grid_read
            px = g.height * g.width
            n.slot_px += px * len(task.slots) if mosaics else 0
            for ss in task.slots:
                for scene in ss.scenes:
                    reads, grids, re, quality = counts[scene.id]
                    n.touch(px, reads=reads, grids=grids, reprojected=re, quality=quality)
    return _workload(n, tasks=len(plan.tasks), scenes=len(plan.scenes), source_px=source_px,
                     peak=peak, basis="plan")


def _workload(n: _Counter, *, tasks: int, scenes: int, source_px: float, peak: int,
              basis: str) -> Workload:
    return Workload(
        tasks=tasks, scenes=scenes, source_px=source_px, reads=n.reads,
        warp_calls=n.warp_calls, warp_px=n.warp, warp_reprojected_px=n.warp_re,
        calibrate_px=n.cal, mask_px=n.mask, merge_px=n.merge, slot_px=n.slot_px,
        write_px=n.write, task_peak_bytes=peak, basis=basis,
    )


def workload_assumed(
    grid: TargetGrid, outputs: Outputs, assumption: Assumption, *, rates: Rates,
    days: float = 1.0,
) -> Workload:
    """Counted from a revisit assumption over ``days`` days (a night: 1): the observed share
    of the grid's chunks become tasks, each like a chunk in the grid's middle, holding
    ``share × days`` slots (at least one) and touched by ``1 + overlap`` scenes per slot."""
    ny, nx = grid.shape
    res = abs(grid.transform[0])
    area = ny * nx * res * res
    share = assumption.observed_share_per_day(area) * days  # observations per grid pixel
    cy, cx = grid.chunk_counts
    tasks = math.ceil(cy * cx * min(1.0, share))
    slots = max(1, round(share))
    task = representative_task(grid, outputs, slots=slots)
    nb = len(outputs.bands)
    n = _Counter(nb, grid.crs)
    c = task.chunk
    n.write = tasks * c.height * c.width * write_planes(outputs, slots)
    per_slot = 1.0 + assumption.overlap  # scenes touching a task in one slot
    for piece, mosaics in task_passes(task, outputs):
        g = piece.grid_read
        px = g.height * g.width
        n.slot_px += tasks * px * slots if mosaics else 0
        grids = assumption.grids
        n.touch(px, reads=nb + 1, grids=grids, reprojected=grids if assumption.reprojected
                else 0, quality=1, times=tasks * slots * per_slot)
    observed = area * max(share, tasks / (cy * cx)) * per_slot
    source_px = observed * (nb / assumption.source_resolution**2
                            + 1 / assumption.quality_resolution**2)
    basis = (f"assumed: {assumption.scenes_per_night:g} scenes per night"
             if assumption.scenes_per_night is not None
             else f"assumed: revisit {assumption.revisit_days:g} days") + f", {days:g} d"
    return _workload(n, tasks=tasks, scenes=math.ceil(observed / (assumption.scene_km * 1e3)**2),
                     source_px=source_px, peak=task_peak_bytes(task, outputs, rates=rates),
                     basis=basis)


def representative_task(grid: TargetGrid, outputs: Outputs, *, slots: int) -> ChunkTask:
    """A chunk in the grid's middle with ``slots`` (scene-less) time slots: what an assumed
    task reads, holds and writes."""
    cy, cx = grid.chunk_counts
    chunk = grid.chunk_grid(cy // 2, cx // 2)
    work = grid.expanded(chunk, outputs.halo) if outputs.halo else None
    return ChunkTask(chunk, tuple(SlotScenes(i, ()) for i in range(slots)), work)


# --------------------------------------------------------------------------- memory


def task_peak_bytes(task: ChunkTask, outputs: Outputs, *, rates: Rates) -> int:
    """Peak bytes of one chunk task (numpy arrays; GDAL's cache is the worker's, not the
    task's): what the task holds by the plan's own estimate (``plan.chunks.task_memory``: the
    time-slot stack of a part, or one slot and the streaming states, and the assembled
    mosaics) plus what ``benchmarks/rates.py`` measured beyond it per pixel of the task grid
    (a scene's values and masks, index maps, encode buffers) and a fixed part, fitted over
    chunks of 512, 1024 and 2048 px of the current engine. Update the rates (rerun the
    benchmark) when the engine's memory changes."""
    g = task.grid_read
    held = _chunks.task_memory(task, outputs)
    return int(held + rates.task_bytes_per_px * g.height * g.width + rates.task_fixed_bytes)


# --------------------------------------------------------------------------- estimate


@dataclass(frozen=True)
class Cluster:
    """Workers × threads that finish the work within the deadline (with the margin)."""

    deadline_s: float
    workers: int
    threads: int
    bound_by: str  # "cpu" or "network"
    hours: float  # estimated wall time on this cluster, margin included

    @property
    def cores(self) -> int:
        return self.workers * self.threads


@dataclass(frozen=True)
class Estimate:
    workload: Workload
    seconds_by_phase: dict[str, float]
    bytes_read: float
    task_peak_bytes: int
    worker_peak_bytes: int
    threads: int
    cluster: Cluster | None = None
    rates_from: str = ""
    limits: tuple[str, ...] = field(default=())

    @property
    def core_seconds(self) -> float:
        return sum(self.seconds_by_phase.values())

    @property
    def core_hours(self) -> float:
        return self.core_seconds / 3600.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["core_seconds"], d["core_hours"] = self.core_seconds, self.core_hours
        d["tasks"] = self.workload.tasks
        if self.cluster is not None:
            d["cluster"]["cores"] = self.cluster.cores
        return d


LIMITS = (
    "network transfer from object storage is not timed (give --bandwidth to size for it)",
    "rates are one machine's single-thread rates; other CPUs differ",
    "GDAL warping (non-nearest), blending and best-pixel distance terms use the nearest and "
    "method-kernel rates",
    "scheduler overhead, stragglers and worker start-up are covered only by the margin",
)


def phase_seconds(work: Workload, rates: Rates, outputs: Outputs) -> dict[str, float]:
    """Core-seconds by phase: each phase's work divided by its rate."""
    same = work.warp_px - work.warp_reprojected_px
    methods = sum(work.slot_px / rates.composite_rate(m.method) for m in outputs.mosaics)
    return {
        "read": work.source_px / rates.read_px_s + work.reads * rates.read_call_s,
        "decode": work.mask_px / rates.mask_px_s,
        "warp": work.warp_reprojected_px / rates.warp_px_s + same / rates.warp_same_crs_px_s
        + work.warp_calls * rates.warp_call_s,
        "calibrate": work.calibrate_px / rates.calibrate_px_s,
        "composite": work.merge_px / rates.merge_px_s + methods,
        "write": work.write_px / rates.write_px_s,
    }


def estimate(
    work: Workload,
    outputs: Outputs,
    *,
    rates: Rates,
    threads: int = 4,
    gdal_cache_bytes: int = 256 * MIB,
    deadline_s: float | None = None,
    margin: float = 1.5,
    bandwidth_bytes_s: float | None = None,
) -> Estimate:
    """Core-hours, bytes, memory per worker (``threads`` tasks at once, GDAL's cache and the
    worker's own base) and, given ``deadline_s``, the cluster that meets it. ``margin`` covers
    what is not modelled; ``bandwidth_bytes_s`` is one worker's network bandwidth."""
    seconds = phase_seconds(work, rates, outputs)
    task = work.task_peak_bytes
    worker = int(threads * task + gdal_cache_bytes + rates.worker_base_bytes)
    bytes_read = work.source_px * rates.bytes_per_source_px
    cluster = None
    if deadline_s is not None:
        cluster = cluster_for(sum(seconds.values()), bytes_read, deadline_s=deadline_s,
                              threads=threads, margin=margin, tasks=work.tasks,
                              bandwidth_bytes_s=bandwidth_bytes_s)
    limits = LIMITS[1:] if bandwidth_bytes_s else LIMITS
    rates_from = f"{rates.machine}, {rates.cores} cores, {rates.date}, commit {rates.commit}"
    return Estimate(work, seconds, bytes_read, task, worker, threads, cluster, rates_from,
                    limits)


def cluster_for(
    core_seconds: float,
    bytes_read: float,
    *,
    deadline_s: float,
    threads: int,
    margin: float,
    tasks: int,
    bandwidth_bytes_s: float | None = None,
) -> Cluster:
    """The fewest workers of ``threads`` threads finishing ``core_seconds × margin`` (and, with
    a bandwidth, ``bytes_read × margin``) within ``deadline_s``; never more threads than tasks
    could keep busy (beyond that the deadline needs smaller chunks, not more cores)."""
    cores = math.ceil(core_seconds * margin / deadline_s)
    workers, bound = max(1, math.ceil(cores / threads)), "cpu"
    if bandwidth_bytes_s:
        by_net = math.ceil(bytes_read * margin / (bandwidth_bytes_s * deadline_s))
        if by_net > workers:
            workers, bound = by_net, "network"
    workers = min(workers, max(1, math.ceil(tasks / threads)))
    hours = max(core_seconds * margin / (workers * threads),
                bytes_read * margin / (workers * bandwidth_bytes_s) if bandwidth_bytes_s
                else 0.0) / 3600.0
    return Cluster(deadline_s, workers, threads, bound, hours)


def parse_duration(text: str) -> float:
    """Seconds from '1h', '90m', '45s', '1.5h' or a plain number of seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    t = text.strip().lower()
    scale = units.get(t[-1:])
    number = t[:-1] if scale is not None else t
    try:
        value = float(number) * (scale or 1.0)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration: give e.g. 1h, 90m or 3600") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{text!r}: a deadline must be positive")
    return value


def source_pixels(plan: Plan) -> float:
    """Source px decoded: each scene's footprint ∩ the grid (its area in the grid's CRS) over
    the pixel area of each of its band planes and quality sources."""
    from odc.geo import geom

    box = geom.box(*plan.grid.bounds, plan.grid.crs)
    total = 0.0
    for scene in plan.scenes:
        inside = geom.Geometry(scene.footprint, "EPSG:4326").to_crs(plan.grid.crs) & box
        area = _area_m2(inside.area, plan.grid.transform)
        for b in scene.bands:
            total += area / _pixel_m2(b.grid.transform)
        for q in scene.quality:
            total += area / _pixel_m2(q.grid.transform)
    return total


def _degrees(t: tuple[float, float, float, float, float, float]) -> bool:
    """A grid whose pixel is under 0.01 unit on a side is taken as degrees (rare for sources)."""
    return abs(t[0] * t[4] - t[1] * t[3]) < 1e-4


def _area_m2(units2: float, t: tuple[float, float, float, float, float, float]) -> float:
    """An area in the square units of a grid's CRS, in m² (degrees at 111.32 km, the
    equator's: an upper bound)."""
    return units2 * (111_320.0**2 if _degrees(t) else 1.0)


def _pixel_m2(t: tuple[float, float, float, float, float, float]) -> float:
    return _area_m2(abs(t[0] * t[4] - t[1] * t[3]), t)
