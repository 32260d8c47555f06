"""Per-core rates of the engine's pieces on this machine: the cost model's defaults.

    python benchmarks/rates.py [--workdir benchmarks/_work] [--write] [--no-check]

Measures, one piece at a time, single-threaded, with the engine's own functions on the demo
catalog (``preset demo``, generated into ``--workdir`` once, not timed) and the demo workflow's
plan (workflows/demo.yaml: 4 chunks of 1024 px, 12 scenes, 3 providers):

* ``read_px_s``: :meth:`RasterReader.read` of whole COG rasters (DEFLATE + predictor 2, the
  demo's compression), dataset closed between repeats so GDAL's block cache never answers:
  source px per band plane per second; ``bytes_per_source_px``: the files' bytes per pixel.
* ``warp_px_s`` / ``warp_same_crs_px_s``: :func:`engine.warp.nearest_window` of a demo chunk
  for a source in another CRS (east, EPSG:32633) / in the grid's (north): task px/s.
* ``calibrate_px_s``: :func:`kernels.calibrate.gather_calibrate` of a real band window onto a
  chunk (px·band/s); ``mask_px_s``: :func:`gather_mask` of the scene's SCL (px/s);
  ``merge_px_s``: :func:`merge_first_valid` of a 4-band scene into an empty slot (px·band/s).
* ``composite_px_slot_s``: :func:`engine.compose.composite_method` for each method on a
  (T=12, B=4, 512, 512) stack, 20 % NaN observations (px·slot/s, all bands).
* ``write_px_s``: :func:`products.chunkio.write_all` of one whole 1024² float32 chunk of real
  reflectance into a product store created by :func:`products.store.create_mosaic` (px/s).
* Memory per task: a child process per chunk size (512, 1024, 2048) runs the demo's first chunk
  task (:func:`engine.chunk.process_chunk`) after a warm-up, under ``tracemalloc`` (numpy's
  arrays are traced), and reports its peak and VmHWM; the per-pixel overhead beyond what the
  task holds (``cost.task_peak_bytes``) is fitted over the three.

Then a sanity check (``--no-check`` skips it): the demo workflow is run in this process
(``direct``, no Dask) and the model's estimate is compared with the run report's
``seconds_by_phase``; target: within a factor of 3 (the check lives here and not in the tests:
the demo run takes ~20 s of both cores).

Prints the rates and the table as JSON; ``--write`` rewrites pipeline/plan/rates.py with it.
About 2 minutes on 2 cores. Each timed call is warmed up first (numba compile excluded); the
median of ``--repeats`` is kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pprint
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
RATES_PY = REPO / "pipeline" / "plan" / "rates.py"
SIZES = (512, 1024, 2048)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: numba compile or cache load, first open
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --------------------------------------------------------------------------- setup


def demo_spec(workdir: Path, *, chunk: int = 1024, out: str = "out"):
    """workflows/demo.yaml on the generated catalog, its products under ``workdir/out``."""
    import yaml

    from pipeline.spec.workflow import spec_from_dict

    data = yaml.safe_load((REPO / "workflows" / "demo.yaml").read_text())
    data["catalog"] = str(catalog_dir(workdir) / "catalog.json")
    data["grid"]["chunk"] = chunk
    base = workdir / out
    for m in [data["products"]["mosaic"], *data["products"]["mosaics"]]:
        m["store"] = str(base / Path(m["store"]).name)
    data["products"]["cube"]["store"] = str(base / "cube.zarr")
    return spec_from_dict(data, base_dir=workdir)


def catalog_dir(workdir: Path) -> Path:
    return workdir / "catalog-demo-s0"


def ensure_catalog(workdir: Path) -> None:
    from pipeline.demo import generate_catalog

    root = catalog_dir(workdir)
    if not (root / "catalog.json").exists():
        generate_catalog(root, preset="demo", seed=0)


def demo_plan(spec):
    from pipeline.engine.steps import discover, outputs_of, target_grid
    from pipeline.plan.chunks import make_plan

    scenes = list(discover(spec).scenes)
    grid = target_grid(spec, scenes)
    return make_plan(scenes, grid=grid, outputs=outputs_of(spec), limits=spec.limits.plan_limits())


# --------------------------------------------------------------------------- rates


def read_rates(plan, repeats: int) -> tuple[float, float, dict[str, float], float]:
    """Whole-raster reads of one band asset per provider: (px/s, bytes/px, px/s by provider,
    seconds per read call: a 64² window of a dataset opened for it, its tile decoded: what a
    chunk's part pays per window beyond the pixels, an upper bound as the engine keeps
    datasets open and GDAL's cache keeps tiles that parts share)."""
    from pipeline.io.reader import RasterReader

    reader = RasterReader()
    seen: dict[str, Any] = {}
    for scene in plan.scenes:
        seen.setdefault(scene.collection, scene.bands[0])
    px = seconds = nbytes = 0.0
    by = {}
    for collection, band in sorted(seen.items()):
        h, w = band.grid.shape
        indexes = [band.index]

        def read(band=band, h=h, w=w, indexes=indexes):
            reader.read(band.href, indexes, (0, 0, h, w))
            reader.close()  # drop the dataset and its cached blocks: decode every time

        sec = timed(read, repeats)
        by[collection] = h * w / sec
        px, seconds = px + h * w, seconds + sec
        nbytes += os.path.getsize(band.href) / len(_bands_in(band.href))
    band = seen["north"]

    def small_read():
        reader.read(band.href, [band.index], (512, 512, 64, 64))
        reader.close()  # its tile decoded anew each time, the dataset opened anew

    return px / seconds, nbytes / px, by, timed(small_read, 20)


def _bands_in(href: str) -> list[int]:
    import rasterio

    with rasterio.open(href) as ds:
        return list(ds.indexes)


def warp_rates(plan, repeats: int) -> tuple[float, float, float]:
    """(px/s other CRS, px/s same CRS, seconds per call beyond its pixels: a 32² chunk)."""
    from pipeline.engine.warp import nearest_window

    chunk = plan.tasks[0].grid_read
    other = next(s for s in plan.scenes if s.bands[0].grid.crs != plan.grid.crs)
    same = next(s for s in plan.scenes if s.bands[0].grid.crs == plan.grid.crs)
    px = chunk.height * chunk.width
    t_other = timed(lambda: nearest_window(chunk, other.bands[0].grid), repeats)
    t_same = timed(lambda: nearest_window(chunk, same.bands[0].grid), repeats)
    small = chunk.part(chunk.y0, chunk.x0, 32, 32)
    t_call = timed(lambda: nearest_window(small, other.bands[0].grid), 20)
    return px / t_other, px / t_same, max(0.0, t_call - 32 * 32 / (px / t_other))


def north_inputs(plan):
    """A 10 m scene (north) on the first chunk: its window, DN of one band, its SCL window."""
    from pipeline.engine.warp import nearest_window
    from pipeline.io.reader import RasterReader

    reader = RasterReader()
    chunk = plan.tasks[0].grid_read
    scene = next(s for ss in plan.tasks[0].slots for s in ss.scenes if s.collection == "north")
    band = scene.bands[0]
    win = nearest_window(chunk, band.grid)
    dn = reader.read(band.href, [band.index], (win.row0, win.col0, win.height, win.width))
    q = scene.quality[0]
    qwin = nearest_window(chunk, q.grid)
    qa = reader.read(q.href, [q.index], (qwin.row0, qwin.col0, qwin.height, qwin.width))[0]
    return chunk, scene, band, win, dn, q, qwin, qa


def kernel_rates(plan, repeats: int) -> dict[str, float]:
    from pipeline.kernels.calibrate import gather_calibrate, gather_mask
    from pipeline.kernels.median import merge_first_valid
    from pipeline.plan.calibration import quality_luts

    chunk, scene, band, win, dn, q, qwin, qa = north_inputs(plan)
    px = chunk.height * chunk.width
    nb = len(plan.outputs.bands)
    values = np.full((nb, chunk.height, chunk.width), np.nan, np.float32)

    def calibrate():
        gather_calibrate(dn, win.rows, win.cols, np.array([0]), float(band.nodata or 0),
                         band.nodata is not None, np.array([band.scale]),
                         np.array([band.offset]), values, valid_range=band.valid_range)

    lut, _ = quality_luts(q, plan.outputs.masking)
    masked = np.zeros((chunk.height, chunk.width), bool)
    mask = timed(lambda: gather_mask(qa, qwin.rows, qwin.cols, lut, masked), repeats)
    cal = timed(calibrate, repeats)
    for b in range(1, nb):
        values[b] = values[0]
    slot = np.empty_like(values)

    def merge():
        slot.fill(np.nan)
        merge_first_valid(values, masked, slot)

    fill = timed(lambda: slot.fill(np.nan), repeats)
    merge_s = max(timed(merge, repeats) - fill, 1e-9)
    return {"calibrate_px_s": px / cal, "mask_px_s": px / mask, "merge_px_s": px * nb / merge_s}


def composite_rates(plan, repeats: int, *, size: int = 512, nt: int = 12) -> dict[str, float]:
    from pipeline.engine.compose import composite_method
    from pipeline.plan.chunks import MosaicOutput, SlotScenes

    rng = np.random.default_rng(0)
    nb = len(plan.outputs.bands)
    stack = rng.random((nt, nb, size, size), dtype=np.float32) * np.float32(0.6)
    for t in range(nt):  # 20 % of the observations missing (all bands of a (t, y, x))
        gone = rng.random((size, size)) < 0.2
        stack[t][:, gone] = np.nan
    qa = np.zeros((nt, size, size), bool)
    task_slots = plan.tasks[0].slots
    slots = [SlotScenes(i, task_slots[i % len(task_slots)].scenes,
                        replace(task_slots[i % len(task_slots)].meta, index=i))
             for i in range(nt)]
    demo = {m.method: m for m in plan.outputs.mosaics}
    methods = ("median", "latest", "earliest", "mean", "min", "max", "percentile",
               "best-pixel", "medoid")
    out = {}
    for method in methods:
        spec = demo.get(method) or MosaicOutput(store=Path("x"), method=method,
                                                q=50.0 if method == "percentile" else None)
        if method == "best-pixel":
            spec = replace(spec, blend_width=0)  # the kernel's rate; blending not included
            spec = replace(spec, target=spec.target or slots[nt // 2].meta.time)
        sec = timed(lambda spec=spec: composite_method(spec, stack, slots, bands=plan.outputs
                                                       .bands, qa_masked=qa), repeats)
        out[method] = size * size * nt / sec
    return out


def write_rate(plan, workdir: Path, repeats: int) -> float:
    import zarr

    from pipeline.engine.chunk import read_scene
    from pipeline.io.reader import RasterReader
    from pipeline.products.chunkio import write_all
    from pipeline.products.store import create_mosaic

    task = plan.tasks[0]
    c = task.chunk
    scene = next(s for ss in task.slots for s in ss.scenes if s.collection == "north")
    values, _ = read_scene(scene, c, resampling="nearest", reader=RasterReader())
    store = workdir / "rates-write" / "mosaic.zarr"
    shutil.rmtree(store.parent, ignore_errors=True)
    create_mosaic(store, plan.grid, plan.outputs.bands, method="median", attrs={})
    group = zarr.open_group(str(store), mode="r+")
    region = (slice(c.y0, c.y0 + c.height), slice(c.x0, c.x0 + c.width))
    writes = [(group[b], region, values[i]) for i, b in enumerate(plan.outputs.bands)]
    sec = timed(lambda: write_all(writes), repeats)
    shutil.rmtree(store.parent, ignore_errors=True)
    return c.height * c.width * len(writes) / sec


# --------------------------------------------------------------------------- memory


def memory_child(workdir: Path, chunk: int) -> None:
    """In a child process: the first chunk task's peak (tracemalloc) after a warm-up."""
    import tracemalloc

    from pipeline.engine.chunk import process_chunk
    from pipeline.engine.run import create_stores
    from pipeline.io.reader import RasterReader

    spec = demo_spec(workdir, chunk=chunk, out=f"mem-{chunk}")
    plan = demo_plan(spec)
    shutil.rmtree(workdir / f"mem-{chunk}", ignore_errors=True)
    create_stores(plan, {})
    reader = RasterReader()
    warm = demo_plan(demo_spec(workdir, chunk=256, out=f"mem-{chunk}"))
    process_chunk(warm.tasks[0], outputs=plan.outputs, reader=reader)  # compile, first opens
    base = _status("VmRSS")
    task = plan.tasks[0]
    tracemalloc.start()
    process_chunk(task, outputs=plan.outputs, reader=reader)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    from pipeline.plan.chunks import task_memory

    g = task.grid_read
    print(json.dumps({"chunk": chunk, "task_px": g.height * g.width, "slots": len(task.slots),
                      "peak": peak, "held": task_memory(task, plan.outputs),
                      "vmhwm_delta": _status("VmHWM") - base, "base_rss": base}))
    shutil.rmtree(workdir / f"mem-{chunk}", ignore_errors=True)


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def memory_rates(plan, workdir: Path) -> tuple[dict[str, float], list[dict]]:
    """``peak - held = a × task_px + b`` over the chunk sizes: ``a`` the least-squares slope
    (at least 0), ``b`` so that no measurement is above the line."""
    rows = []
    for size in SIZES:
        out = subprocess.run([sys.executable, __file__, "--workdir", str(workdir),
                              "--memory-child", str(size)], capture_output=True, text=True,
                             check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    px = np.array([r["task_px"] for r in rows], float)
    extra = np.array([r["peak"] - r["held"] for r in rows], float)
    a = max(0.0, float(np.polyfit(px, extra, 1)[0]))
    b = max(0.0, float(np.max(extra - a * px)))  # through the highest: an upper bound
    return ({"task_bytes_per_px": round(a, 2), "task_fixed_bytes": round(b),
             "worker_base_bytes": float(max(r["base_rss"] for r in rows))}, rows)


# --------------------------------------------------------------------------- check


def sanity_check(workdir: Path, rates: dict[str, Any]) -> dict[str, Any]:
    """Run the demo in this process and set the model's estimate beside its phases."""
    from pipeline.engine.run import RunOptions, run_workflow
    from pipeline.plan.cost import Rates, estimate, source_pixels, workload_of_plan

    spec = demo_spec(workdir, out="check")
    shutil.rmtree(workdir / "check", ignore_errors=True)
    plan = demo_plan(spec)
    report = run_workflow(spec, options=RunOptions(direct=True))
    measured = dict(report.seconds_by_phase)
    r = Rates.from_mapping(rates)
    est = estimate(workload_of_plan(plan, source_px=source_pixels(plan), rates=r),
                   plan.outputs, rates=r)
    shutil.rmtree(workdir / "check", ignore_errors=True)
    ratio = est.core_seconds / sum(measured.values())
    return {"status": report.status, "measured_seconds_by_phase": measured,
            "model_seconds_by_phase": est.seconds_by_phase,
            "measured_s": sum(measured.values()), "model_s": est.core_seconds,
            "model_over_measured": ratio, "within_3x": 1 / 3 <= ratio <= 3}


# --------------------------------------------------------------------------- output


def machine() -> tuple[str, int]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return model, len(os.sched_getaffinity(0))


def commit() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def write_rates_py(table: dict[str, Any]) -> None:
    RATES_PY.write_text(
        '"""Per-core rates measured by ``benchmarks/rates.py`` (``--write`` rewrites this file):\n'
        "the cost model's defaults (:mod:`pipeline.plan.cost`). Units are in ``Rates``'s\n"
        'fields; single thread, one machine (named below)."""\n\n'
        "from __future__ import annotations\n\nfrom typing import Any\n\n"
        f"MEASURED: dict[str, Any] = {pprint.pformat(table, width=90, sort_dicts=False)}\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=HERE / "_work")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write", action="store_true", help=f"rewrite {RATES_PY.relative_to(REPO)}")
    ap.add_argument("--no-check", action="store_true", help="skip the demo-run sanity check")
    ap.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    workdir = args.workdir.resolve()
    if args.memory_child is not None:
        memory_child(workdir, args.memory_child)
        return 0
    t0 = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    ensure_catalog(workdir)
    plan = demo_plan(demo_spec(workdir))
    print(f"demo plan: {plan.summary()}  (setup {time.perf_counter() - t0:.1f} s)")
    read_px_s, bytes_px, by, read_call = read_rates(plan, args.repeats)
    warp, warp_same, warp_call = warp_rates(plan, args.repeats)
    kernels = kernel_rates(plan, args.repeats)
    composite = composite_rates(plan, args.repeats)
    write = write_rate(plan, workdir, args.repeats)
    memory, rows = memory_rates(plan, workdir)
    model, cores = machine()
    table: dict[str, Any] = {
        "machine": model, "cores": cores, "date": dt.date.today().isoformat(),
        "commit": commit(),
        "read_px_s": round(read_px_s), "bytes_per_source_px": round(bytes_px, 3),
        "warp_px_s": round(warp), "warp_same_crs_px_s": round(warp_same),
        **{k: round(v) for k, v in kernels.items()},
        "composite_px_slot_s": {k: round(v) for k, v in composite.items()},
        "write_px_s": round(write), **memory,
        "read_call_s": round(read_call, 6), "warp_call_s": round(warp_call, 6),
    }
    print(f"\nrates on {model} ({cores} cores), single thread:")
    print(f"  read (COG window, DEFLATE)  {read_px_s / 1e6:8.1f} Mpx/s per band  "
          f"({', '.join(f'{k} {v / 1e6:.1f}' for k, v in by.items())}); "
          f"{bytes_px:.2f} B/source px")
    print(f"  read call overhead          {read_call * 1e3:8.3f} ms")
    print(f"  warp, other CRS / same CRS  {warp / 1e6:8.1f} / {warp_same / 1e6:.1f} Mpx/s")
    print(f"  warp call overhead          {warp_call * 1e3:8.3f} ms")
    print(f"  calibrate                   {kernels['calibrate_px_s'] / 1e6:8.1f} Mpx·band/s")
    print(f"  quality mask (gather)       {kernels['mask_px_s'] / 1e6:8.1f} Mpx/s")
    print(f"  merge into slot             {kernels['merge_px_s'] / 1e6:8.1f} Mpx·band/s")
    for k, v in composite.items():
        print(f"  composite {k:17s} {v / 1e6:8.1f} Mpx·slot/s")
    print(f"  write whole chunks (Zarr)   {write / 1e6:8.1f} Mpx/s (one float32 plane)")
    print("  task memory (tracemalloc peak; VmHWM growth):")
    for r in rows:
        print(f"    chunk {r['chunk']:4d}: {r['task_px']:>9,} px, {r['slots']} slots: "
              f"{r['peak'] / 2**20:7.1f} MiB  ({r['vmhwm_delta'] / 2**20:7.1f} MiB; "
              f"held by the plan's estimate {r['held'] / 2**20:7.1f} MiB)")
    print(f"    beyond the held stack: {memory['task_bytes_per_px']:.1f} B/px + "
          f"{memory['task_fixed_bytes'] / 2**20:.1f} MiB; worker base "
          f"{memory['worker_base_bytes'] / 2**20:.0f} MiB")
    if not args.no_check:
        check = sanity_check(workdir, table)
        print(f"\nsanity check, the demo run (direct, {check['status']}): measured "
              f"{check['measured_s']:.1f} s of phases, model {check['model_s']:.1f} s "
              f"({check['model_over_measured']:.2f}x)")
        for p, sec in check["measured_seconds_by_phase"].items():
            print(f"  {p:10s} measured {sec:6.2f} s   model "
                  f"{check['model_seconds_by_phase'].get(p, 0.0):6.2f} s")
        print(f"CHECK (within 3x): {'PASS' if check['within_3x'] else 'FAIL'}")
    print("\n" + json.dumps(table, indent=1))
    if args.write:
        write_rates_py(table)
        print(f"wrote {RATES_PY.relative_to(REPO)}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
