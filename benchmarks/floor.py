"""The machine floor of the peers job: its necessary work, each step timed alone, one thread.

    python benchmarks/floor.py --catalog benchmarks/_work/catalog-medium-s0 --chunk 1024
        [--bounds XMIN YMIN XMAX YMAX] [--cores 2] [--workdir DIR] [--json]

On the job ``benchmarks/peers.py`` times (the catalog, the grid of ``--bounds`` at 10 m in
EPSG:32632, default: the synthetic catalog's area; bands blue, green, red, nir; a median and a
latest mosaic), planned by the engine itself (:func:`pipeline.engine.steps.discover`,
:func:`~pipeline.engine.steps.target_grid`, :func:`~pipeline.engine.steps.outputs_of`,
:func:`pipeline.plan.chunks.make_plan`), in this one process and thread (numba kernels are
``parallel=False``; GDAL decodes on the calling thread; Blosc is told not to use threads):

1. **decode**: every asset the job needs (each scene's band assets, their nodata mask bands if
   any, and its quality assets), the window of the source raster that covers the whole grid
   (:func:`pipeline.engine.warp.nearest_window` of the grid, not timed), read with one
   whole-window ``rasterio`` read per asset (all its needed bands at once), each dataset opened
   afresh: every source tile is decoded exactly once. Open + read timed.
2. **warp**: the nearest-neighbour index maps of every scene's source grids onto each chunk
   (and each part, see below): :func:`~pipeline.engine.warp.nearest_window`, as the engine calls
   it, the ``warp`` phase of :func:`pipeline.engine.chunk.compute_chunk`.
3. **kernel**: calibrate + nodata and quality masks into (B, Y, X) per scene
   (:func:`~pipeline.kernels.calibrate.gather_calibrate`, ``gather_mask`` through
   :func:`~pipeline.engine.chunk.read_scene`), the merge into time slots and the median and
   latest composites (:func:`~pipeline.engine.compose.composite_method`): the ``decode``,
   ``calibrate`` and ``composite`` phases of :func:`~pipeline.engine.chunk.compute_chunk`, run
   per chunk task (the engine splits a chunk whose median stack exceeds its memory budget into
   parts, :func:`pipeline.plan.chunks.parts`: so does this). The ``read`` phase (the chunk's
   source windows, fetched through :class:`~pipeline.io.reader.RasterReader`) is timed apart
   and left out: step 1 counts each tile's decode once.
4. **write**: each chunk's two mosaics (bands, count, source, and their overview levels) into
   Zarr stores created as the engine creates them (:func:`pipeline.engine.run.create_stores`),
   with the engine's writer (:class:`~pipeline.engine.writer.ChunkWriter` +
   :class:`~pipeline.products.overviews.Pyramid` → :func:`pipeline.products.chunkio.write_all`:
   whole chunks encoded with the stores' Blosc codec); the stores' groups opened once, untimed.

So the floor and the engine do the same arithmetic with the same functions. An untimed warm-up
(a 64 px corner of the first chunk, computed and written) loads numba's cache first.

The single-core floor is the sum of the four; the floor on the cluster's cores is that sum over
``--cores`` (workers × threads; perfect scaling, no scheduler, no fixed costs). ``peers.py``
sets Aquila's compute time (cluster start-up excluded) against the latter.

Prints the steps, and with ``--json`` one line ``FLOOR_RESULT {json}`` (what ``peers.py``
reads; :func:`measure` returns the same dict when imported).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BANDS = ("blue", "green", "red", "nir")
METHODS = ("median", "latest")
STEPS = ("decode", "warp", "kernel", "write")
KERNEL_PHASES = ("decode", "calibrate", "composite")  # compute_chunk's phases counted as kernel
WARMUP_PX = 64


def job_spec(catalog: Path, bounds, chunk: int, stores: dict[str, Path], *,
             allowed_roots: tuple[str, ...] | None = None):
    """The peers job's workflow spec (the same as ``peers.aquila_spec`` writes as YAML)."""
    from pipeline.spec.workflow import spec_from_dict

    catalog = Path(catalog).resolve()
    (first, first_store), *rest = stores.items()
    data: dict[str, Any] = {
        "version": 1,
        "name": f"floor-{chunk}",
        "catalog": str(catalog),
        "bands": list(BANDS),
        "grid": {"crs": "EPSG:32632", "resolution": 10, "bounds": [float(v) for v in bounds],
                 "chunk": chunk, "resampling": "nearest"},
        "products": {"mosaic": {"store": str(first_store), "method": first}},
    }
    if rest:
        data["products"]["mosaics"] = [{"store": str(st), "method": m} for m, st in rest]
    if allowed_roots:
        data["allowed_roots"] = list(allowed_roots)
    return spec_from_dict(data, base_dir=Path(catalog).parent)


def job_plan(spec):
    from pipeline.engine.steps import discover, outputs_of, target_grid
    from pipeline.plan.chunks import make_plan

    scenes = list(discover(spec).scenes)
    grid = target_grid(spec, scenes)
    return make_plan(scenes, grid=grid, outputs=outputs_of(spec),
                     limits=spec.limits.plan_limits())


def whole_grid(grid):
    """The whole target grid as one :class:`ChunkGrid`."""
    from pipeline.plan.grid import ChunkGrid

    ny, nx = grid.shape
    return ChunkGrid(0, 0, 0, 0, ny, nx, str(grid.crs), tuple(grid.transform))


def assets_needed(plan) -> list[tuple[str, tuple[int, ...], tuple[int, int, int, int]]]:
    """(href, 1-based band indexes, (row0, col0, height, width)) of every asset the plan reads:
    the window of the source raster that covers the whole grid. Not timed."""
    from pipeline.engine.warp import nearest_window

    whole = whole_grid(plan.grid)
    need: dict[str, tuple[Any, set[int]]] = {}

    def add(href: str, grid, index: int) -> None:
        need.setdefault(href, (grid, set()))[1].add(int(index))

    for scene in plan.scenes:
        for b in scene.bands:
            add(b.href, b.grid, b.index)
            if b.mask is not None:
                add(b.mask[0], b.grid, b.mask[1])
        for q in scene.quality:
            add(q.href, q.grid, q.index)
    out = []
    boxes: dict[Any, Any] = {}
    for href, (grid, indexes) in need.items():
        if grid not in boxes:
            boxes[grid] = nearest_window(whole, grid)
        win = boxes[grid]
        if win is not None:
            out.append((href, tuple(sorted(indexes)),
                        (win.row0, win.col0, win.height, win.width)))
    return out


def measure_decode(plan) -> dict[str, Any]:
    """Step 1: each needed asset window read whole, once, from a freshly opened dataset."""
    import rasterio
    from rasterio.windows import Window

    from pipeline.io.reader import ReaderSettings, configure_gdal

    configure_gdal(ReaderSettings())  # the engine's GDAL options (block cache cap etc.)
    needed = assets_needed(plan)
    seconds = 0.0
    px = 0
    for href, indexes, (row0, col0, h, w) in needed:
        t0 = time.perf_counter()
        with rasterio.open(href) as ds:
            ds.read(list(indexes), window=Window(col0, row0, w, h))
        seconds += time.perf_counter() - t0
        px += len(indexes) * h * w
    return {"seconds": seconds, "assets": len(needed), "source_px": px}


def _single_threaded() -> None:
    import numcodecs.blosc

    numcodecs.blosc.use_threads = False  # the engine encodes on worker threads: no Blosc threads


def _tasks(plan, limit: int | None):
    return plan.tasks if limit is None else plan.tasks[:limit]


def measure_chunks(plan, workdir: Path, *, tasks: int | None = None) -> dict[str, Any]:
    """Steps 2-4 over every chunk task: warp and kernel phases of the engine's compute_chunk
    (reads timed apart, left out), and the engine's whole-chunk writes."""
    import zarr

    from pipeline.engine.chunk import compute_chunk, mosaic_writes
    from pipeline.engine.jobs import Phases
    from pipeline.engine.run import create_stores
    from pipeline.engine.writer import ChunkWriter
    from pipeline.io.reader import RasterReader
    from pipeline.plan.chunks import ChunkTask
    from pipeline.products.overviews import Pyramid

    outputs = plan.outputs
    if not plan.tasks:
        raise SystemExit("the plan has no chunk task: no scene touches the grid (or every "
                         "asset was refused: asset links outside the catalog need "
                         "--allowed-root)")
    for m in outputs.mosaics:
        shutil.rmtree(m.store, ignore_errors=True)
    create_stores(plan, {})
    groups = [zarr.open_group(str(m.store), mode="r+") for m in outputs.mosaics]
    reader = RasterReader()

    def write(out) -> float:
        c = out.chunk
        region = (slice(c.y0, c.y0 + c.height), slice(c.x0, c.x0 + c.width))
        writer = ChunkWriter([], region, overviews=Pyramid())
        writes = mosaic_writes(out, outputs, groups)
        t0 = time.perf_counter()
        writer.finish(writes, mosaics=len(groups))
        return time.perf_counter() - t0

    # warm-up, untimed: numba's cache, pyproj transformers, zarr/Blosc first use
    first = plan.tasks[0]
    c = first.chunk
    corner = ChunkTask(c.part(c.y0, c.x0, min(WARMUP_PX, c.height), min(WARMUP_PX, c.width)),
                       first.slots)
    write(compute_chunk(corner, outputs=outputs, reader=reader))

    phases = Phases()
    write_s = 0.0
    selected = _tasks(plan, tasks)
    for task in selected:
        out = compute_chunk(task, outputs=outputs, reader=reader, phases=phases)
        write_s += write(out)
    reader.close()
    ph = phases.ordered()
    return {
        "warp": ph.get("warp", 0.0),
        "kernel": sum(ph.get(p, 0.0) for p in KERNEL_PHASES),
        "write": write_s,
        "read_left_out": ph.get("read", 0.0),
        "phases": ph,
        "tasks": len(selected),
    }


def measure(catalog: Path, bounds, chunk: int, *, cores: int = 2, workdir: Path | None = None,
            allowed_roots: tuple[str, ...] | None = None, tasks: int | None = None,
            decode: dict[str, Any] | None = None) -> dict[str, Any]:
    """The floor of the peers job at ``chunk`` px: seconds per step, their sum (one core) and
    the sum over ``cores``. ``decode``: a step-1 result to reuse (it does not depend on the
    chunk size). ``tasks``: only the first N chunk tasks (a quick look; not the floor)."""
    _single_threaded()
    catalog = Path(catalog).resolve()
    href = catalog / "catalog.json" if catalog.is_dir() else catalog
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="aquila-floor-")) if own else Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        stores = {m: work / f"floor-{chunk}" / f"{m}.zarr" for m in METHODS}
        plan = job_plan(job_spec(href, bounds, chunk, stores, allowed_roots=allowed_roots))
        setup = time.perf_counter() - t0
        dec = decode if decode is not None else measure_decode(plan)
        rest = measure_chunks(plan, work, tasks=tasks)
    finally:
        shutil.rmtree(work / f"floor-{chunk}", ignore_errors=True)
        if own:
            shutil.rmtree(work, ignore_errors=True)
    steps = {"decode": dec["seconds"], "warp": rest["warp"], "kernel": rest["kernel"],
             "write": rest["write"]}
    total = sum(steps.values())
    return {
        "chunk": chunk, "cores": cores, "steps": steps, "single_core_s": total,
        "floor_s": total / cores, "decode": dec, "read_left_out_s": rest["read_left_out"],
        "phases": rest["phases"], "tasks": rest["tasks"], "all_tasks": len(plan.tasks),
        "scenes": len(plan.scenes), "slots": len(plan.slots), "plan_s": setup,
        "plan": plan.summary(),
    }


def describe(f: dict[str, Any]) -> list[str]:
    """Human-readable lines of a :func:`measure` result."""
    s = f["steps"]
    d = f["decode"]
    part = "" if f["tasks"] == f["all_tasks"] else \
        f" (ONLY {f['tasks']} of {f['all_tasks']} tasks: not the floor)"
    return [
        f"floor at chunk {f['chunk']}: {f['plan']}{part}",
        f"  decode {s['decode']:6.2f} s  ({d['assets']} asset windows, "
        f"{d['source_px'] / 1e6:.0f} Mpx, each tile once)",
        f"  warp   {s['warp']:6.2f} s  (nearest_window per chunk/part and source grid)",
        f"  kernel {s['kernel']:6.2f} s  (calibrate + masks, merge into slots, median + latest)",
        f"  write  {s['write']:6.2f} s  (whole-chunk Zarr writes, overviews included)",
        f"  sum    {f['single_core_s']:6.2f} s on one core -> floor {f['floor_s']:.2f} s on "
        f"{f['cores']} cores (sum / cores)",
        f"  (chunk-window reads through RasterReader, left out: {f['read_left_out_s']:.2f} s)",
    ]


def _catalog_bounds(catalog: Path) -> tuple[float, ...]:
    href = catalog / "catalog.json" if catalog.is_dir() else catalog
    doc = json.loads(href.read_text())
    syn = doc.get("aquila:synthetic") or {}
    if "area_bounds" not in syn:
        raise SystemExit(f"{href} is not a synthetic catalog with aquila:synthetic.area_bounds; "
                         "give --bounds")
    return tuple(float(v) for v in syn["area_bounds"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The peers job's machine floor: decode, warp, "
                                "kernel, write, each timed alone, one thread.")
    p.add_argument("--catalog", type=Path, required=True, help="catalog folder or catalog.json")
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--bounds", type=float, nargs=4, default=None,
                   metavar=("XMIN", "YMIN", "XMAX", "YMAX"),
                   help="grid bounds, EPSG:32632 m (default: the synthetic catalog's area)")
    p.add_argument("--cores", type=int, default=2,
                   help="cores the cluster uses (workers x threads; default 2)")
    p.add_argument("--allowed-root", action="append", default=None,
                   help="asset roots beyond the catalog's folder (repeatable)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the scratch stores go (default: a temporary folder)")
    p.add_argument("--tasks", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="also print FLOOR_RESULT {json}")
    args = p.parse_args(argv)
    bounds = args.bounds or _catalog_bounds(args.catalog.resolve())
    f = measure(args.catalog, bounds, args.chunk, cores=args.cores, workdir=args.workdir,
                allowed_roots=tuple(str(Path(r).resolve()) for r in args.allowed_root)
                if args.allowed_root else None,
                tasks=args.tasks)
    for line in describe(f):
        print(line)
    if args.json:
        print("FLOOR_RESULT " + json.dumps(f))
    return 0


if __name__ == "__main__":
    sys.exit(main())
