"""Aquila vs odc-stac on the same job, same machine, same cluster shape, at several chunk sizes.

    python benchmarks/peers.py [--preset medium] [--chunks 512,1024,2048] [--aquila-only]
                               [--no-deep] [--workdir benchmarks/_work] [--keep]

1. Generates (or reuses, see ``--fresh-catalog``) the synthetic catalog of ``--preset``
   (``medium``: 3 providers, 36 scenes, 20 km x 20 km -> a 2000 x 2000 grid at 10 m, 4 bands)
   with :func:`pipeline.demo.generate_catalog`. Not timed.
2. Warms up Aquila once on the ``tiny`` catalog (median and latest), untimed, so that the
   numba kernels' on-disk cache (``cache=True``) is filled and JIT compilation is not timed.
3. Per chunk size (``--chunks``, default 512, 1024 and 2048 px; ``--chunk N`` runs one), runs,
   each as a child process whose whole process tree (driver + scheduler + workers) is sampled
   for memory (PSS and RSS, see :class:`Measured`) every 50 ms from here:

   * ``aquila run`` writing the median and the latest mosaic in one run (``products.mosaic`` +
     ``products.mosaics``: several mosaics from one read). With an Aquila whose spec has no
     ``products.mosaics``, one run per method (times add, the peak is the larger one);
   * ``benchmarks/_odc_job.py`` (unless ``--aquila-only``): the same job with
     ``odc.stac.load`` (see its docstring), both mosaics written from one dask graph (one
     ``dask.compute``);
   * ``benchmarks/floor.py``: the machine floor of the job at that chunk size (decode every
     needed tile once, warp, kernels, write; each timed alone, one thread; see its docstring),
     divided by the cluster's cores.

   Both jobs on the same ``LocalCluster(processes=True)``, sized as ``aquila run`` sizes its
   own by default (:func:`pipeline.engine.cluster.local_shape`: 1 worker x 2 threads on a
   2-core machine) unless ``--workers``/``--threads`` say otherwise. Wall time
   is measured around each child: interpreter start, imports, catalog walk, cluster start-up
   and shutdown included, for both. The compute-only time each job reports is shown too.
4. Compares the two medians (and, for information, the two latest mosaics) per band at every
   chunk size, and, at the first chunk size, explains any disagreement with an exact oracle
   built from the generator (``tests/synthetic_oracle.py``: :meth:`CatalogOracle.pixel_reflectance`,
   ``valid``, ``qa_clear``, evaluating the generator's pixel model; pixel centres transformed
   exactly with pyproj). Then (unless ``--no-exact-peer``) runs the odc-stac job once more,
   untimed, with GDAL's exact transformer in place of its default approximate one
   (``_odc_job.py --exact-warp``), and compares the medians with that too: the disagreements
   of step 4 are GDAL's 0.125 px approximation (see benchmarks/README.md).
5. The deeper archive (unless ``--no-deep``): Aquila on the same catalog with every item
   repeated ``DEEP_FACTOR`` times at later dates (``benchmarks/deep.py``: 4x the time slots, the
   same COGs) at ``DEEP_CHUNK`` px: its peak and its time against the normal job's.
6. Prints one table over the chunk sizes and the verdict against the issue's targets (>= 10x
   odc-stac's wall time; peak <= 1.0 GiB for the whole tree and below odc-stac's; compute time
   within 1.3x of the floor on the same cores; medians equal within 1e-4 on >= 99.9 % of the
   pixels, against odc-stac as it comes and against it on the exact transformer; deep archive:
   peak <= 1.0 GiB, time <= 4.4x the normal job's). Exits 0 whatever the verdict (it is a
   measurement); non-zero only if a job failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # the exact oracle is the tests' (tests/synthetic_oracle.py)
BANDS = ("blue", "green", "red", "nir")
TOL = 1e-4
DEFAULT_CHUNKS = (512, 1024, 2048)
TARGET_SPEEDUP = 10.0  # odc-stac wall / aquila wall, at every chunk size
TARGET_PEAK_GIB = 1.0  # aquila's whole process tree (and below odc-stac's)
TARGET_FLOOR_RATIO = 1.3  # aquila compute / the floor on the cluster's cores
TARGET_AGREEMENT = 0.999  # medians within TOL, worst band
DEEP_FACTOR = 4  # the deeper archive: this many times the time slots
DEEP_CHUNK = 1024
TARGET_DEEP_RATIO = DEEP_FACTOR * 1.1  # deep / normal time: at most linear, 10 % slack
SAMPLE_S = 0.05
EDGE_PX = 0.125  # GDAL's default approximate-transformer error threshold, in source pixels


# --------------------------------------------------------------------------- measuring


@dataclass
class Measured:
    """One child process: wall time, peak memory and CPU time of its process tree, and the CPU
    time the rest of the machine used meanwhile (other users' load skews wall times).

    Memory two ways, each the largest sum over the tree's processes at one sample:
    ``peak_pss``, the tree's memory (Linux's proportional set size: a page mapped by n processes
    counts 1/n in each, so a page is counted once however many of the tree's processes share it)
    and ``peak_rss``, the sum of resident set sizes, which counts a shared page once in every
    process that maps it: the libraries a fork server loaded count again in each worker forked
    from it, and a shared library's pages in every process. :attr:`peak` is the PSS sum (the RSS
    sum where ``/proc/PID/smaps_rollup`` cannot be read)."""

    label: str
    argv: list[str]
    wall_s: float = 0.0
    peak_rss: int = 0
    peak_pss: int = 0
    cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    returncode: int = 0
    samples: int = 0
    log: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def peak(self) -> int:
        """The tree's peak memory: the PSS sum, or the RSS sum where PSS was not readable."""
        return self.peak_pss or self.peak_rss


def _tree_memory(proc) -> tuple[int, int]:
    """(RSS sum, PSS sum) over ``proc`` and its descendants now; a process whose
    ``smaps_rollup`` cannot be read adds its RSS to both (a PSS sum of 0: none could be)."""
    import psutil

    rss = pss = 0
    readable = False
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for p in procs:
        try:
            with open(f"/proc/{p.pid}/smaps_rollup") as f:
                fields = dict(line.split(":", 1) for line in f if line.startswith(("Rss", "Pss:")))
            rss += int(fields["Rss"].split()[0]) * 1024
            pss += int(fields["Pss"].split()[0]) * 1024
            readable = True
        except (OSError, KeyError, ValueError):  # gone, not Linux, or not ours to read
            with contextlib.suppress(psutil.Error):
                own = p.memory_info().rss
                rss += own
                pss += own
    return rss, (pss if readable else 0)


def _busy_cpu_s() -> float:
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _children_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _self_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def wait_quiet(max_wait_s: float, window_s: float = 5.0, cores: float = 0.25) -> float:
    """Wait (up to ``max_wait_s``) until other processes use < ``cores`` CPUs over ``window_s``;
    returns the load last seen (cores). For shared development machines."""
    deadline = time.monotonic() + max_wait_s
    while True:
        busy0, self0 = _busy_cpu_s(), _self_cpu_s()
        time.sleep(window_s)
        load = max(0.0, _busy_cpu_s() - busy0 - (_self_cpu_s() - self0)) / window_s
        if load < cores or time.monotonic() >= deadline:
            return load


def run_measured(label: str, argv: list[str], log: Path, env: dict | None = None) -> Measured:
    """Run ``argv`` as a child; sample the memory (RSS and PSS, :class:`Measured`) of it and
    all its descendants every 50 ms.

    CPU time of the tree comes from ``getrusage(RUSAGE_CHILDREN)`` (every descendant is reaped by
    its parent: dask's nanny joins its worker), the machine's from ``psutil.cpu_times``."""
    import psutil

    m = Measured(label, argv, log=log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        cpu0, busy0, self0 = _children_cpu_s(), _busy_cpu_s(), _self_cpu_s()
        t0 = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                 env=env or os.environ.copy())
        proc = psutil.Process(child.pid)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                rss, pss = _tree_memory(proc)
                m.peak_rss = max(m.peak_rss, rss)
                m.peak_pss = max(m.peak_pss, pss)
                m.samples += 1
                stop.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        m.returncode = child.wait()
        m.wall_s = time.perf_counter() - t0
        stop.set()
        sampler.join()
        m.cpu_s = _children_cpu_s() - cpu0
        mine = _self_cpu_s() - self0  # this process's sampler
        m.other_cpu_s = max(0.0, _busy_cpu_s() - busy0 - m.cpu_s - mine)
    return m


# --------------------------------------------------------------------------- inputs


def _generator_fingerprint(preset: str, seed: int) -> str:
    import hashlib

    import pipeline.demo as demo

    digest = hashlib.sha256()
    for path in sorted(Path(demo.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{preset} {seed} {digest.hexdigest()}"


def ensure_catalog(root: Path, preset: str, seed: int, fresh: bool):
    """The synthetic catalog under ``root``: reused when generated with the same preset, seed
    and generator source (generation is deterministic), else (re)generated."""
    from pipeline.demo import generate_catalog
    from tests.synthetic_oracle import oracle

    stamp = root / ".peers-generator"
    want = _generator_fingerprint(preset, seed)
    if (not fresh and (root / "catalog.json").exists() and stamp.exists()
            and stamp.read_text().strip() == want):
        return _catalog_without_rendering(root, preset, seed), False
    t = time.perf_counter()
    stamp.unlink(missing_ok=True)
    cat = oracle(generate_catalog(root, preset=preset, seed=seed))
    stamp.write_text(want + "\n")
    print(f"  generated {len(cat.scenes)} scenes in {time.perf_counter() - t:.0f} s -> {root}")
    return cat, True


def _catalog_without_rendering(root: Path, preset: str, seed: int):
    """The exact oracle of an existing catalog, rebuilt from the (deterministic) scene plan;
    cloud fractions are not needed by the oracles, so no pixel is rendered."""
    from pipeline.demo import PRESETS, PROVIDERS, plan_provider
    from tests.synthetic_oracle import CatalogOracle

    p = PRESETS[preset]
    scenes = []
    for pi, spec in enumerate(PROVIDERS.values()):
        scenes.extend(plan_provider(spec, pi, p.area_bounds, p.scenes_per_provider, seed))
    return CatalogOracle(root=root.resolve(), catalog_href=(root / "catalog.json").resolve(),
                         area_crs="EPSG:32632", area_bounds=p.area_bounds,
                         scenes=tuple(scenes), preset=preset, seed=seed)


def aquila_spec(path: Path, name: str, catalog: Path, bounds, stores: dict[str, Path],
                chunk: int, allowed_roots: tuple[str, ...] | None = None) -> Path:
    """A workflow spec writing one mosaic per ``stores`` item (method -> store): the first as
    ``products.mosaic``, the others in ``products.mosaics`` (several mosaics from one read)."""
    b = ", ".join(f"{v:.0f}" for v in bounds)
    (first, first_store), *rest = stores.items()
    lines = [
        "version: 1",
        f"name: {name}",
        f"catalog: {catalog}",
        f"bands: [{', '.join(BANDS)}]",
        f"grid: {{crs: EPSG:32632, resolution: 10, bounds: [{b}], chunk: {chunk}, "
        "resampling: nearest}",
        "products:",
        f"  mosaic: {{store: {first_store}, method: {first}}}",
    ]
    if rest:
        lines.append("  mosaics:")
        lines += [f"    - {{store: {st}, method: {m}}}" for m, st in rest]
    if allowed_roots:
        lines.append(f"allowed_roots: [{', '.join(str(r) for r in allowed_roots)}]")
    path.write_text("\n".join(lines) + "\n")
    return path


def aquila_one_run() -> bool:
    """Whether this Aquila writes several mosaics from one read (``products.mosaics``)."""
    from pipeline.spec.sections import Products

    return "mosaics" in Products.model_fields


def aquila_argv(spec: Path, report: Path, workers: int, threads: int) -> list[str]:
    exe = Path(sys.executable).with_name("aquila")
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline.cli.main"]
    # --no-pictures: the quicklook, maps and HTML report are not part of the job odc-stac does
    # (they cost ~1-2 s, mostly importing matplotlib); the stores' overview levels are, and count
    extra = ["--no-pictures"] if _has_pictures_flag() else []
    return [*head, "run", str(spec), "--workers", str(workers), "--threads", str(threads),
            "--no-progress", "--report", str(report), *extra]


def _has_pictures_flag() -> bool:
    """Whether this checkout's ``aquila run`` draws pictures (older ones, benchmarked for a
    before/after comparison, have no --no-pictures)."""
    import importlib.util

    return importlib.util.find_spec("pipeline.products.pictures") is not None


# --------------------------------------------------------------------------- comparing


def compare(a_store: Path, b_store: Path) -> dict[str, dict]:
    """Per band: pixels where either is finite, agreement within TOL, NaN mismatches."""
    import xarray as xr

    a = xr.open_zarr(a_store)
    b = xr.open_zarr(b_store)
    if not (np.array_equal(a.x.values, b.x.values) and np.array_equal(a.y.values, b.y.values)):
        raise SystemExit(f"grids differ between {a_store} and {b_store}")
    out = {}
    for band in BANDS:
        av = a[band].values.astype(np.float64)
        bv = b[band].values.astype(np.float64)
        fa, fb = np.isfinite(av), np.isfinite(bv)
        either = fa | fb
        both = fa & fb
        close = both & (np.abs(av - bv) <= TOL)
        out[band] = {
            "either": int(either.sum()),
            "agree": int(close.sum()),
            "only_aquila": int((fa & ~fb).sum()),
            "only_odc": int((fb & ~fa).sum()),
            "differ": int((both & ~close).sum()),
            "max_abs_diff": float(np.nanmax(np.abs(av - bv))) if both.any() else 0.0,
            "fraction": float(close.sum() / either.sum()) if either.any() else 1.0,
            "bad_mask": ~close & either,
        }
    return out


def _slots(cat):
    """Scenes grouped like Aquila's time slots (collection, local solar day), earliest first."""
    from pyproj import Transformer

    x0, y0, x1, y1 = cat.area_bounds
    lon, _ = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True).transform(
        (x0 + x1) / 2, (y0 + y1) / 2)
    groups: dict = {}
    for s in sorted(cat.scenes, key=lambda s: (s.datetime, s.item_id)):
        day = (s.datetime + dt.timedelta(hours=lon / 15.0)).date()
        groups.setdefault((s.collection, day), []).append(s)
    return list(groups.values())


def oracle(cat, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact expected (median, latest) per band at points (B, N): every scene's band pixel
    containing the point (exact pyproj transform), usable iff data and QA clear and all bands
    valid; first usable scene of a slot wins; median / latest over slots."""
    obs = []
    for slot in _slots(cat):
        merged = np.full((len(BANDS), xs.size), np.nan)
        for s in slot:
            ok = cat.valid(xs, ys, s.item_id) & cat.qa_clear(xs, ys, s.item_id)
            v = np.stack([cat.pixel_reflectance(b, xs, ys, s.item_id) for b in BANDS])
            ok &= np.isfinite(v).all(axis=0)
            take = ok & np.isnan(merged[0])
            merged[:, take] = v[:, take]
        obs.append(merged)
    stack = np.stack(obs)  # (T, B, N), slots in time order
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(stack, axis=0)
    latest = np.full(stack.shape[1:], np.nan)
    for t in range(stack.shape[0]):
        ok = np.isfinite(stack[t, 0])
        latest[:, ok] = stack[t][:, ok]
    return median, latest


def edge_distance(cat, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Per point, the smallest distance (source pixels) from its position in any scene of another
    CRS than the grid's to that scene's nearest pixel edge (inf if no such scene covers it)."""
    from pyproj import Transformer

    best = np.full(xs.size, np.inf)
    for s in cat.scenes:
        if s.crs == "EPSG:32632":
            continue
        u, v = Transformer.from_crs("EPSG:32632", s.crs, always_xy=True).transform(xs, ys)
        col = (np.asarray(u) - s.bounds[0]) / s.resolution
        row = (s.bounds[3] - np.asarray(v)) / s.resolution
        d = np.minimum(np.abs(col - np.round(col)), np.abs(row - np.round(row)))
        best = np.minimum(best, d)
    return best


def diagnose(cat, grid_x: np.ndarray, grid_y: np.ndarray, aq: Path, odc: Path, bad: np.ndarray,
             sample: int, rng: np.random.Generator) -> dict:
    """Check both medians against the exact oracle on every disagreeing pixel (up to ``sample``,
    then a random subset) and on ``sample`` random pixels; for the pixels a side gets wrong,
    how close they lie to a source pixel edge of an EPSG:32633 scene."""
    import xarray as xr

    a = xr.open_zarr(aq)
    b = xr.open_zarr(odc)
    rows, cols = np.nonzero(bad)
    if rows.size > sample:
        pick = rng.choice(rows.size, sample, replace=False)
        rows, cols = rows[pick], cols[pick]
    rnd_r = rng.integers(0, grid_y.size, sample)
    rnd_c = rng.integers(0, grid_x.size, sample)
    out: dict = {}
    for name, (r, c) in {"disagreeing": (rows, cols), "random": (rnd_r, rnd_c)}.items():
        res: dict = {"n": int(r.size)}
        out[name] = res
        if r.size == 0:
            continue
        xs, ys = grid_x[c], grid_y[r]
        med, _ = oracle(cat, xs, ys)
        for label, ds in (("aquila", a), ("odc", b)):
            got = np.stack([ds[band].values[r, c] for band in BANDS]).astype(np.float64)
            ok = ((np.isnan(got) & np.isnan(med)) | (np.abs(got - med) <= TOL)).all(axis=0)
            wrong = ~ok
            res[label] = {"match": int(ok.sum()), "wrong": int(wrong.sum())}
            if wrong.any():
                d = edge_distance(cat, xs[wrong], ys[wrong])
                res[label]["max_edge_px"] = float(d.max())
                res[label]["wrong_pixels"] = [
                    [int(rr), int(cc), float(dd)] for rr, cc, dd in
                    zip(r[wrong][:20], c[wrong][:20], d[:20], strict=False)]
    return out


def _describe_side(label: str, d: dict) -> str:
    if d["wrong"] == 0:
        return f"{label} matches all {d['match']}"
    why = ("all at a source pixel edge" if d["max_edge_px"] <= EDGE_PX
           else "NOT explained by pixel-edge picks")
    return (f"{label} matches {d['match']}, differs on {d['wrong']} (max distance to an "
            f"EPSG:32633 source pixel edge {d['max_edge_px']:.2g} px: {why})")


# --------------------------------------------------------------------------- output


def gib(n: int) -> float:
    return n / 2**30


def print_table(rows: list[tuple], headers: tuple) -> None:
    cells = [headers, *[tuple(str(c) for c in r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for j, r in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if j == 0:
            print("  " + "  ".join("-" * w for w in widths))


def machine() -> str:
    import platform

    import psutil

    return (f"{psutil.cpu_count(logical=True)} CPUs, {gib(psutil.virtual_memory().total):.0f} GiB "
            f"RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}")


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = ("aquila", "odc-stac", "odc-loader", "dask", "distributed", "xarray", "zarr",
             "rasterio", "numba")
    out = []
    for n in names:
        try:
            out.append(f"{n} {version(n)}")
        except PackageNotFoundError:
            out.append(f"{n} -")
    return ", ".join(out)


# --------------------------------------------------------------------------- main


@dataclass
class SizeResult:
    """Everything measured at one chunk size."""

    chunk: int
    aq: list[Measured]
    aq_reps: list[list[Measured]]
    od: Measured | None = None
    od_reps: list[Measured] = field(default_factory=list)
    floor: dict | None = None
    med: dict | None = None
    lat: dict | None = None
    diag: dict | None = None
    bad: int = 0
    med_exact: dict | None = None  # against odc-stac on GDAL's exact transformer

    @property
    def aq_wall(self) -> float:
        return sum(r.wall_s for r in self.aq)

    @property
    def aq_peak(self) -> int:
        return max(r.peak for r in self.aq)

    @property
    def aq_peak_rss(self) -> int:
        return max(r.peak_rss for r in self.aq)

    @property
    def aq_cpu(self) -> float:
        return sum(r.cpu_s for r in self.aq)

    @property
    def aq_compute(self) -> float:
        return sum(aquila_compute_s(r) for r in self.aq)

    @property
    def other_cpu(self) -> float:
        return sum(r.other_cpu_s for r in self.aq) + (self.od.other_cpu_s if self.od else 0.0)

    @property
    def busy_wall(self) -> float:
        return self.aq_wall + (self.od.wall_s if self.od else 0.0)

    @property
    def skewed(self) -> bool:
        return self.other_cpu / self.busy_wall > 0.25

    @property
    def speed(self) -> float | None:
        return self.od.wall_s / self.aq_wall if self.od else None

    @property
    def mem(self) -> float | None:
        return self.od.peak / self.aq_peak if self.od else None

    @property
    def floor_s(self) -> float | None:
        return self.floor["floor_s"] if self.floor else None

    @property
    def worst_med(self) -> float | None:
        return min(self.med[b]["fraction"] for b in BANDS) if self.med else None

    @property
    def worst_med_exact(self) -> float | None:
        return min(self.med_exact[b]["fraction"] for b in BANDS) if self.med_exact else None

    @property
    def worst_lat(self) -> float | None:
        return min(self.lat[b]["fraction"] for b in BANDS) if self.lat else None


def run_aquila(catalog_href: Path, bounds, run_dir: Path, args, rep: int, chunk: int, *,
               allowed_roots: tuple[str, ...] | None = None, what_job: str = "") -> list[Measured]:
    """``aquila run`` writing the median and the latest mosaic: one run when the spec takes
    several mosaics (``products.mosaics``), else one run per method."""
    stores = {m: run_dir / "aquila" / f"{m}.zarr" for m in ("median", "latest")}
    groups = [stores] if aquila_one_run() else [{m: st} for m, st in stores.items()]
    out = []
    for group in groups:
        what = " + ".join(group)
        tag = "-".join(group)
        spec = aquila_spec(run_dir / f"aquila-{tag}.yaml", f"bench-{tag}", catalog_href,
                           bounds, group, chunk, allowed_roots)
        report = run_dir / "aquila" / f"{tag}.run-report.json"
        if args.quiet_wait:
            wait_quiet(args.quiet_wait)
        print(f"timing [{rep}]: aquila run ({what}{what_job}), chunk {chunk} ...", end=" ",
              flush=True)
        m = run_measured(f"aquila {what}", aquila_argv(spec, report, args.workers, args.threads),
                         run_dir / f"aquila-{tag}-{rep}.log")
        if m.returncode != 0:
            print(f"failed (exit {m.returncode}); see {m.log}")
            print(m.log.read_text()[-3000:])
            raise SystemExit(1)
        m.extra = json.loads(report.read_text())
        print(_line(m))
        out.append(m)
    return out


def aquila_compute_s(m: Measured) -> float:
    """Aquila's compute time without its cluster start-up (the report times both)."""
    sec = m.extra.get("seconds", {})
    return sec.get("compute", float("nan")) - sec.get("cluster_start", 0.0)


def run_odc(cat, run_dir: Path, args, rep: int, chunk: int, *, exact: bool = False) -> Measured:
    """The odc-stac job in a child process; ``exact``: untimed, into ``odc-exact/``, with GDAL's
    exact transformer (``_odc_job.py --exact-warp``) for the second agreement check."""
    b = cat.area_bounds
    side = "odc-exact" if exact else "odc"
    argv = [sys.executable, str(HERE / "_odc_job.py"), str(cat.catalog_href), str(run_dir / side),
            "--bounds", *[str(v) for v in b], "--crs", "EPSG:32632", "--resolution", "10",
            "--chunk", str(chunk), "--workers", str(args.workers),
            "--threads", str(args.threads)] + (["--exact-warp"] if exact else [])
    if args.quiet_wait and not exact:
        wait_quiet(args.quiet_wait)
    if exact:
        print(f"untimed: odc-stac job with GDAL's exact transformer, chunk {chunk} ...", end=" ",
              flush=True)
    else:
        print(f"timing [{rep}]: odc-stac job (median + latest), chunk {chunk} ...", end=" ",
              flush=True)
    m = run_measured("odc-stac exact" if exact else "odc-stac", argv,
                     run_dir / (f"{side}.log" if exact else f"odc-{rep}.log"))
    if m.returncode != 0:
        print(f"failed (exit {m.returncode}); see {m.log}")
        print(m.log.read_text()[-3000:])
        raise SystemExit(1)
    for line in m.log.read_text().splitlines():
        if line.startswith("ODC_JOB_RESULT "):
            m.extra = json.loads(line.split(" ", 1)[1])
    print(_line(m))
    return m


def run_floor(cat, run_dir: Path, args, chunk: int) -> dict:
    """``benchmarks/floor.py`` in a child process of its own (one thread, its own GDAL and
    numba state); its ``FLOOR_RESULT`` line."""
    argv = [sys.executable, str(HERE / "floor.py"), "--catalog", str(cat.catalog_href),
            "--chunk", str(chunk), "--bounds", *[str(v) for v in cat.area_bounds],
            "--cores", str(args.workers * args.threads), "--workdir", str(run_dir / "floor"),
            "--json"]
    if args.quiet_wait:
        wait_quiet(args.quiet_wait)
    print(f"timing: the floor (decode, warp, kernel, write; one thread), chunk {chunk} ...",
          end=" ", flush=True)
    log = run_dir / "floor.log"
    with open(log, "wb") as out:
        rc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO).returncode
    text = log.read_text()
    if rc != 0:
        print(f"failed (exit {rc}); see {log}")
        print(text[-3000:])
        raise SystemExit(1)
    for line in text.splitlines():
        if line.startswith("FLOOR_RESULT "):
            f = json.loads(line.split(" ", 1)[1])
            print(f"{f['single_core_s']:.1f} s on one core, {f['floor_s']:.1f} s on "
                  f"{f['cores']} cores")
            return f
    raise SystemExit(f"floor.py printed no FLOOR_RESULT; see {log}")


def _line(m: Measured) -> str:
    return (f"{m.wall_s:.1f} s, peak {gib(m.peak):.2f} GiB (RSS sum {gib(m.peak_rss):.2f}), "
            f"CPU {m.cpu_s:.0f} s "
            f"(other processes: {m.other_cpu_s:.0f} CPU s)")


def _f(v: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if v is None else f"{v:{fmt}}{suffix}"


def measure_size(cat, run_dir: Path, args, chunk: int, *, diagnose_it: bool) -> SizeResult:
    """Aquila, odc-stac (unless --aquila-only) and the floor at one chunk size; agreement."""
    aq_reps: list[list[Measured]] = []
    od_reps: list[Measured] = []
    for rep in range(1, args.repeat + 1):
        aq_reps.append(run_aquila(cat.catalog_href, cat.area_bounds, run_dir, args, rep, chunk))
        if not args.aquila_only:
            od_reps.append(run_odc(cat, run_dir, args, rep, chunk))
    r = SizeResult(chunk, min(aq_reps, key=lambda runs: sum(x.wall_s for x in runs)), aq_reps,
                   min(od_reps, key=lambda x: x.wall_s) if od_reps else None, od_reps)
    r.floor = run_floor(cat, run_dir, args, chunk)
    if r.od is None:
        return r
    stores = {(side, m): run_dir / side / f"{m}.zarr"
              for side in ("aquila", "odc") for m in ("median", "latest")}
    print("comparing the products" + (" and checking them against the exact oracle"
                                      if diagnose_it else "") + " ...", flush=True)
    r.med = compare(stores[("aquila", "median")], stores[("odc", "median")])
    r.lat = compare(stores[("aquila", "latest")], stores[("odc", "latest")])
    bad = np.zeros_like(r.med[BANDS[0]]["bad_mask"])
    for band in BANDS:
        bad |= r.med[band]["bad_mask"]
    r.bad = int(bad.sum())
    if diagnose_it:
        b = cat.area_bounds
        nx, ny = round((b[2] - b[0]) / 10), round((b[3] - b[1]) / 10)
        grid_x = b[0] + (np.arange(nx) + 0.5) * 10.0
        grid_y = b[3] - (np.arange(ny) + 0.5) * 10.0
        r.diag = diagnose(cat, grid_x, grid_y, stores[("aquila", "median")],
                          stores[("odc", "median")], bad, args.sample, np.random.default_rng(0))
    if args.exact_peer:
        run_odc(cat, run_dir, args, 0, chunk, exact=True)
        r.med_exact = compare(stores[("aquila", "median")], run_dir / "odc-exact" / "median.zarr")
    for side in (r.med, r.lat, r.med_exact):
        for band in BANDS if side else ():
            side[band].pop("bad_mask", None)
    return r


def print_size(r: SizeResult, args, shape: str) -> None:
    """The detailed block of one chunk size: timings, agreement, oracle."""
    print()
    rep_note = f", fastest of {args.repeat}" if args.repeat > 1 else ""
    print(f"Chunk {r.chunk} px ({shape}; LocalCluster {args.workers} workers x "
          f"{args.threads} thread{rep_note})")
    runs = "1 run" if len(r.aq) == 1 else f"{len(r.aq)} runs"
    aq_tasks = sum(int(x.extra.get("tasks", 0)) for x in r.aq)
    rows = [(f"aquila: median + latest ({runs})", f"{r.aq_wall:.1f}", f"{r.aq_compute:.1f}",
             f"{r.aq_cpu:.0f}", f"{gib(r.aq_peak):.2f}", f"{gib(r.aq_peak_rss):.2f}",
             aq_tasks)]
    if len(r.aq) > 1:
        for x in r.aq:
            rows.append((f"  {x.label}", f"{x.wall_s:.1f}", f"{aquila_compute_s(x):.1f}",
                         f"{x.cpu_s:.0f}", f"{gib(x.peak):.2f}", f"{gib(x.peak_rss):.2f}",
                         x.extra.get("tasks", "?")))
    if r.od is not None:
        od, od_compute = r.od, r.od.extra.get("seconds", {}).get("compute", float("nan"))
        rows.append(("odc-stac: median + latest (1 graph)", f"{od.wall_s:.1f}",
                     f"{od_compute:.1f}", f"{od.cpu_s:.0f}", f"{gib(od.peak):.2f}",
                     f"{gib(od.peak_rss):.2f}", od.extra.get("tasks") or "?"))
        rows.append(("ratio odc-stac / aquila", f"{r.speed:.2f}x",
                     f"{od_compute / r.aq_compute:.2f}x" if r.aq_compute else "?",
                     f"{od.cpu_s / r.aq_cpu:.2f}x" if r.aq_cpu else "?", f"{r.mem:.2f}x",
                     f"{od.peak_rss / r.aq_peak_rss:.2f}x", ""))
    if r.floor is not None:
        f = r.floor
        rows.append((f"floor, one thread (/ {f['cores']} cores)", "",
                     f"{f['single_core_s']:.1f} ({f['floor_s']:.1f})", "", "", "",
                     f["tasks"]))
    print_table(rows, ("", "wall s", "compute s", "CPU s", "peak GiB", "RSS sum GiB", "tasks"))
    if r.floor is not None:
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        from floor import describe

        for line in describe(r.floor):
            print("  " + line)
    print(f"  other processes on this machine used {r.other_cpu:.0f} CPU s during these runs "
          f"({r.other_cpu / r.busy_wall:.2f} cores on average)"
          + ("; timings are skewed, run again on a quiet machine (or with --repeat)"
             if r.skewed else ""))
    if args.repeat > 1:
        print("  all repetitions, wall s (CPU s used by other processes meanwhile): aquila " +
              ", ".join(f"{sum(x.wall_s for x in runs):.1f} "
                        f"({sum(x.other_cpu_s for x in runs):.0f})" for runs in r.aq_reps) +
              ("; odc-stac " + ", ".join(f"{x.wall_s:.1f} ({x.other_cpu_s:.0f})"
                                         for x in r.od_reps) if r.od_reps else ""))
    if r.med is None:
        return
    print(f"  agreement of the medians (|aquila - odc-stac| <= {TOL:g}, over the pixels where "
          "either has a value):")
    rows = []
    for band in BANDS:
        m = r.med[band]
        rows.append((band, f"{100 * m['fraction']:.3f} %", m["either"], m["differ"],
                     m["only_aquila"], m["only_odc"], f"{m['max_abs_diff']:.2g}",
                     f"{100 * r.lat[band]['fraction']:.3f} %"))
    print_table(rows, ("band", "median agree", "pixels", "differ", "value only aquila",
                       "value only odc", "max |diff|", "latest agree"))
    print(f"  {r.bad} pixels disagree in at least one band.")
    if r.med_exact is not None:
        print("  agreement of the medians with odc-stac on GDAL's exact transformer (same job, "
              "untimed; _odc_job.py --exact-warp): " + ", ".join(
                  f"{band} {100 * r.med_exact[band]['fraction']:.3f} % "
                  f"({r.med_exact[band]['differ']} differ, "
                  f"{r.med_exact[band]['only_aquila']}/{r.med_exact[band]['only_odc']} "
                  "value on one side)" for band in BANDS))
    if r.diag is not None:
        d, rnd = r.diag["disagreeing"], r.diag["random"]
        print("  Exact oracle (generator's pixel model, pixel centres transformed with pyproj, "
              "Aquila's slot/median rules):")
        print(f"    {rnd['n']} random pixels: {_describe_side('aquila', rnd['aquila'])}; "
              f"{_describe_side('odc-stac', rnd['odc'])}")
        if d["n"]:
            print(f"    {d['n']} disagreeing pixels: {_describe_side('aquila', d['aquila'])}; "
                  f"{_describe_side('odc-stac', d['odc'])}")


def run_deep(cat, work: Path, run_root: Path, args, normal: SizeResult | None) -> dict:
    """Aquila on the deeper archive (DEEP_FACTOR x the time slots) at DEEP_CHUNK, and on the
    normal catalog at the same chunk size if the chunk sizes did not include it."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from deep import build

    src = Path(cat.catalog_href).parent
    href, roots, n_items = build(src, work / f"{src.name}-deep{DEEP_FACTOR}", factor=DEEP_FACTOR)
    print(f"deeper archive: {n_items} items ({DEEP_FACTOR} x {len(cat.scenes)}, dates moved "
          f"on by multiples of 35 days, the COGs hard-linked) -> {href.parent}")
    if normal is None:
        run_dir = run_root / f"c{DEEP_CHUNK}"
        run_dir.mkdir(parents=True, exist_ok=True)
        normal_runs = run_aquila(cat.catalog_href, cat.area_bounds, run_dir, args, 1,
                                 DEEP_CHUNK)
    else:
        normal_runs = normal.aq
    run_dir = run_root / f"deep-c{DEEP_CHUNK}"
    run_dir.mkdir(parents=True, exist_ok=True)
    runs = run_aquila(href, cat.area_bounds, run_dir, args, 1, DEEP_CHUNK, allowed_roots=roots,
                      what_job=f", deep archive x{DEEP_FACTOR}")
    slots = runs[0].extra.get("time_slots")
    normal_slots = normal_runs[0].extra.get("time_slots")
    wall, compute = sum(r.wall_s for r in runs), sum(aquila_compute_s(r) for r in runs)
    n_wall = sum(r.wall_s for r in normal_runs)
    n_compute = sum(aquila_compute_s(r) for r in normal_runs)
    return {"factor": DEEP_FACTOR, "chunk": DEEP_CHUNK, "items": n_items, "slots": slots,
            "normal_slots": normal_slots,
            "wall_s": wall, "compute_s": compute, "peak_gib": gib(max(r.peak for r in runs)),
            "peak_rss_gib": gib(max(r.peak_rss for r in runs)),
            "cpu_s": sum(r.cpu_s for r in runs),
            "other_cpu_s": sum(r.other_cpu_s for r in runs),
            "normal_wall_s": n_wall, "normal_compute_s": n_compute,
            "normal_peak_gib": gib(max(r.peak for r in normal_runs)),
            "normal_peak_rss_gib": gib(max(r.peak_rss for r in normal_runs)),
            "ratio_compute": compute / n_compute if n_compute else float("nan"),
            "ratio_wall": wall / n_wall if n_wall else float("nan"),
            "tasks": sum(int(r.extra.get("tasks", 0)) for r in runs)}


def parse_chunks(args) -> list[int]:
    if args.chunk is not None:
        return [args.chunk]
    try:
        chunks = [int(v) for v in str(args.chunks).split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--chunks takes sizes separated by commas, got {args.chunks!r}") \
            from None
    if not chunks or any(c <= 0 for c in chunks):
        raise SystemExit(f"--chunks takes positive sizes, got {args.chunks!r}")
    return chunks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Aquila vs odc-stac at several chunk sizes: wall "
                                "time, peak memory, the machine floor, agreement of the medians, "
                                "a deeper archive.")
    p.add_argument("--preset", default="medium", help="synthetic catalog preset (default medium)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=HERE / "_work",
                   help="scratch folder (default benchmarks/_work, git-ignored)")
    p.add_argument("--keep", action="store_true",
                   help="keep the products, specs and logs (default: delete them; the generated "
                   "catalogs are kept in the workdir for reuse)")
    p.add_argument("--fresh-catalog", action="store_true",
                   help="regenerate the catalogs even if ones with this preset and seed exist")
    p.add_argument("--repeat", type=int, default=1,
                   help="time each side N times, alternating, and report the fastest (default 1)")
    p.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                   help="before each timed run, wait up to S seconds for other processes to use "
                   "< 0.25 CPU (shared machines; default 0: do not wait)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes of both jobs' LocalCluster (default: Aquila's choice "
                   "for this machine, pipeline.engine.cluster.local_shape)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads per worker (default: Aquila's choice, as --workers)")
    p.add_argument("--chunks", default=",".join(str(c) for c in DEFAULT_CHUNKS),
                   help="chunk sizes, px, separated by commas (default 512,1024,2048)")
    p.add_argument("--chunk", type=int, default=None,
                   help="one chunk size (overrides --chunks)")
    p.add_argument("--aquila-only", action="store_true",
                   help="skip odc-stac (quick iteration: no speed-up, memory ratio, agreement)")
    p.add_argument("--deep", action=argparse.BooleanOptionalAction, default=True,
                   help=f"the deeper archive ({DEEP_FACTOR}x the time slots, chunk {DEEP_CHUNK}; "
                   "default on, --no-deep skips it)")
    p.add_argument("--exact-peer", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the odc-stac job, untimed, with GDAL's exact transformer "
                   "instead of its default approximate one (0.125 px), and check the medians' "
                   "agreement with it too (default on; --no-exact-peer skips it)")
    p.add_argument("--sample", type=int, default=20000,
                   help="pixels checked against the exact oracle (default 20000)")
    args = p.parse_args(argv)
    from pipeline.engine.cluster import local_shape

    args.workers, args.threads = local_shape(args.workers, args.threads)
    chunks = parse_chunks(args)

    work = args.workdir.resolve()
    run_root = work / f"run-{args.preset}"
    if run_root.exists():
        shutil.rmtree(run_root)
    run_root.mkdir(parents=True)
    print(f"Aquila vs odc-stac, preset {args.preset!r} (seed {args.seed}), chunks "
          f"{', '.join(map(str, chunks))}; {machine()}")
    print(f"  {versions()}")

    # 1. inputs (untimed)
    print("catalogs (untimed):")
    cat, _ = ensure_catalog(work / f"catalog-{args.preset}-s{args.seed}", args.preset,
                            args.seed, args.fresh_catalog)
    tiny, _ = ensure_catalog(work / "catalog-tiny-s0", "tiny", 0, args.fresh_catalog)
    bounds = cat.area_bounds
    nx = round((bounds[2] - bounds[0]) / 10)
    ny = round((bounds[3] - bounds[1]) / 10)
    shape = (f"{len(cat.scenes)} scenes from {len({s.collection for s in cat.scenes})} providers "
             f"-> {ny} x {nx} px at 10 m x {len(BANDS)} bands")
    print(f"  {args.preset}: {shape}")

    # 2. numba warm-up (untimed)
    print("warm-up: aquila on the tiny catalog, median + latest (untimed; fills numba's cache)")
    warm = {m: run_root / "warmup" / f"{m}.zarr" for m in ("median", "latest")}
    for group in [warm] if aquila_one_run() else [{m: st} for m, st in warm.items()]:
        tag = "-".join(group)
        spec = aquila_spec(run_root / f"warmup-{tag}.yaml", f"warmup-{tag}", tiny.catalog_href,
                           tiny.area_bounds, group, chunks[0])
        w = run_measured(f"warmup {tag}",
                         aquila_argv(spec, run_root / "warmup" / f"{tag}.json",
                                     args.workers, args.threads),
                         run_root / f"warmup-{tag}.log")
        if w.returncode != 0:
            print(f"  warm-up failed (exit {w.returncode}); see {w.log}")
            print(w.log.read_text()[-3000:])
            return 1

    # 3.-4. per chunk size: the timed runs, the floor, agreement
    results: list[SizeResult] = []
    for i, chunk in enumerate(chunks):
        run_dir = run_root / f"c{chunk}"
        run_dir.mkdir(parents=True)
        print(f"\n== chunk {chunk} px ==")
        r = measure_size(cat, run_dir, args, chunk, diagnose_it=(i == 0))
        print_size(r, args, shape)
        results.append(r)
        if not args.keep:  # the stores of one size are not needed any more
            for side in ("aquila", "odc", "odc-exact"):
                shutil.rmtree(run_dir / side, ignore_errors=True)

    # 5. the deeper archive
    deep = None
    if args.deep:
        print(f"\n== deeper archive: {DEEP_FACTOR}x the time slots, chunk {DEEP_CHUNK} px ==")
        normal = next((r for r in results if r.chunk == DEEP_CHUNK), None)
        deep = run_deep(cat, work, run_root, args, normal)

    # 6. report
    print_summary(results, deep, args, shape)
    checks = verdict(results, deep, args)
    overall = all(ok for _, ok, _ in checks if ok is not None)
    write_summary(work, args, cat, (ny, nx), chunks, results, deep, checks, overall)
    if args.keep:
        print(f"  products, specs and logs kept in {run_root}")
    else:
        shutil.rmtree(run_root, ignore_errors=True)
    return 0


def print_summary(results: list[SizeResult], deep: dict | None, args, shape: str) -> None:
    cores = args.workers * args.threads
    print()
    print(f"Summary ({args.preset}: {shape}; LocalCluster {args.workers} workers x "
          f"{args.threads} thread = {cores} cores)")
    rows = []
    for r in results:
        f = r.floor_s
        rows.append((
            str(r.chunk), f"{r.aq_wall:.1f}", f"{r.aq_compute:.1f}", f"{gib(r.aq_peak):.2f}",
            f"{gib(r.aq_peak_rss):.2f}",
            _f(r.od.wall_s if r.od else None, ".1f"),
            _f(gib(r.od.peak) if r.od else None, ".2f"),
            _f(gib(r.od.peak_rss) if r.od else None, ".2f"),
            _f(r.speed, ".2f", "x"), _f(r.mem, ".2f", "x"), _f(f, ".2f"),
            _f(r.aq_compute / f if f else None, ".2f", "x"),
            _f(r.aq_wall / f if f else None, ".2f", "x"),
        ))
    print_table(rows, ("chunk", "aquila wall s", "aquila compute s", "aquila peak GiB",
                       "aquila RSS sum GiB", "odc wall s", "odc peak GiB", "odc RSS sum GiB",
                       "speed-up", "memory ratio", "floor s",
                       "aquila compute/floor", "aquila wall/floor"))
    print("  wall: child process start to exit, for both: interpreter start, imports, catalog "
          "walk, cluster start-up and shutdown included; numba JIT excluded (warm-up run).")
    print("  compute: the jobs' own timers, cluster start-up excluded (aquila: run report "
          "seconds.compute - seconds.cluster_start; odc-stac: the dask.compute call).")
    print("  peak: the whole process tree's memory (driver, scheduler, workers, Aquila's fork "
          "server), its largest PSS sum (a page shared by n processes counts 1/n in each), "
          f"sampled every {SAMPLE_S * 1000:.0f} ms. RSS sum: the same processes' resident sizes "
          "added, a shared page counted in each (Aquila's workers, forked from its warm "
          "server, share its ~0.2 GiB of libraries; a spawned worker shares only the libraries' "
          "code). speed-up = odc wall / aquila wall; memory ratio = odc peak / aquila peak.")
    print(f"  floor s: the job's necessary work (benchmarks/floor.py: every needed source tile "
          f"decoded once, warp, kernels, write; each timed alone on one thread) / {cores} "
          "cores: perfect scaling, no scheduler, no start-up. aquila compute/floor is the "
          f"issue's <= {TARGET_FLOOR_RATIO:g}x target (same work, same cores); aquila "
          "wall/floor adds Aquila's fixed costs (interpreter, imports, cluster start-up).")
    if any(r.od is None for r in results):
        print("  -: odc-stac not run (--aquila-only).")
    skewed = [r.chunk for r in results if r.skewed]
    if skewed:
        print(f"  other processes used > 0.25 cores during the runs at chunk "
              f"{', '.join(map(str, skewed))}: those timings are skewed.")
    if deep is not None:
        print()
        print(f"Deeper archive ({deep['items']} items, {DEEP_FACTOR}x the time slots, chunk "
              f"{deep['chunk']} px; aquila only):")
        rows = [("normal", deep["normal_slots"], f"{deep['normal_wall_s']:.1f}",
                 f"{deep['normal_compute_s']:.1f}", f"{deep['normal_peak_gib']:.2f}",
                 f"{deep['normal_peak_rss_gib']:.2f}"),
                (f"deep x{DEEP_FACTOR}", deep["slots"], f"{deep['wall_s']:.1f}",
                 f"{deep['compute_s']:.1f}", f"{deep['peak_gib']:.2f}",
                 f"{deep['peak_rss_gib']:.2f}"),
                ("ratio deep / normal", "", f"{deep['ratio_wall']:.2f}x",
                 f"{deep['ratio_compute']:.2f}x", "", "")]
        print_table(rows, ("", "time slots", "wall s", "compute s", "peak GiB", "RSS sum GiB"))
        print("  the verdict takes the compute ratio (fixed costs excluded: the stricter test of "
              "linear growth); the wall ratio is shown beside it.")


def verdict(results: list[SizeResult], deep: dict | None, args) -> list[tuple]:
    """(name, ok or None when not measured, values) per target, over every chunk size."""

    def per_size(value) -> str:
        return ", ".join(f"{r.chunk}: {value(r)}" for r in results)

    have_odc = all(r.od is not None for r in results)
    checks: list[tuple] = []
    if have_odc:
        ok = all(r.speed >= TARGET_SPEEDUP for r in results)
        note = per_size(lambda r: f"{r.speed:.2f}x" + (
            f" (skewed; CPU-time ratio {r.od.cpu_s / r.aq_cpu:.2f}x)" if r.skewed else ""))
        checks.append((f"aquila >= {TARGET_SPEEDUP:g}x faster than odc-stac (wall)", ok, note))
    else:
        checks.append((f"aquila >= {TARGET_SPEEDUP:g}x faster than odc-stac (wall)", None,
                       "odc-stac not run (--aquila-only)"))
    ok = all(gib(r.aq_peak) <= TARGET_PEAK_GIB for r in results) and (
        not have_odc or all(r.aq_peak < r.od.peak for r in results))
    note = per_size(lambda r: f"{gib(r.aq_peak):.2f}" + (
        f" vs {gib(r.od.peak):.2f}" if r.od else "") + " GiB") + "; RSS sums " + per_size(
        lambda r: f"{gib(r.aq_peak_rss):.2f}" + (
            f" vs {gib(r.od.peak_rss):.2f}" if r.od else "") + " GiB")
    checks.append((f"aquila peak <= {TARGET_PEAK_GIB:g} GiB (whole tree, PSS)"
                   + (" and below odc-stac's" if have_odc else " (odc-stac's not measured)"),
                   ok, note))
    ok = all(r.floor_s and r.aq_compute / r.floor_s <= TARGET_FLOOR_RATIO for r in results)
    checks.append((f"aquila compute within {TARGET_FLOOR_RATIO:g}x of the floor on "
                   f"{args.workers * args.threads} cores", ok,
                   per_size(lambda r: f"{r.aq_compute:.1f} / {r.floor_s:.1f} s = "
                            f"{r.aq_compute / r.floor_s:.2f}x")))
    if have_odc:
        ok = all(r.worst_med >= TARGET_AGREEMENT for r in results)
        checks.append((f"medians agree on >= {100 * TARGET_AGREEMENT:g} % (worst band, every "
                       "chunk size; oracle at the first)", ok,
                       per_size(lambda r: f"{100 * r.worst_med:.3f} %")))
    else:
        checks.append((f"medians agree on >= {100 * TARGET_AGREEMENT:g} %", None,
                       "odc-stac not run (--aquila-only)"))
    if have_odc and all(r.med_exact is not None for r in results):
        ok = all(r.worst_med_exact >= TARGET_AGREEMENT for r in results)
        checks.append((f"medians agree on >= {100 * TARGET_AGREEMENT:g} % with odc-stac on "
                       "GDAL's exact transformer (worst band, every chunk size)", ok,
                       per_size(lambda r: f"{100 * r.worst_med_exact:.3f} %")))
    if deep is not None:
        checks.append((f"deep archive ({DEEP_FACTOR}x slots): peak <= {TARGET_PEAK_GIB:g} GiB",
                       deep["peak_gib"] <= TARGET_PEAK_GIB,
                       f"{deep['peak_gib']:.2f} GiB (RSS sum {deep['peak_rss_gib']:.2f} GiB)"))
        checks.append((f"deep archive: compute time <= {TARGET_DEEP_RATIO:.1f}x the normal job's "
                       "(at most linear)", deep["ratio_compute"] <= TARGET_DEEP_RATIO,
                       f"{deep['ratio_compute']:.2f}x (wall {deep['ratio_wall']:.2f}x)"))
    print()
    print("Verdict:")
    for name, ok, value in checks:
        tag = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        print(f"  {tag}  {name}: {value}")
    lat = [r for r in results if r.lat is not None]
    if lat:
        print("  (latest mosaics agree on " + ", ".join(
            f"{r.chunk}: {100 * r.worst_lat:.3f} %" for r in lat) +
            " in the worst band; informational)")
    overall = all(ok for _, ok, _ in checks if ok is not None)
    skipped = [name for name, ok, _ in checks if ok is None]
    print(f"  overall: {'PASS' if overall else 'FAIL'}"
          + (f" (not checked: {len(skipped)} target(s), odc-stac not run)" if skipped else ""))
    return checks


def write_summary(work: Path, args, cat, grid, chunks, results: list[SizeResult],
                  deep: dict | None, checks: list[tuple], overall: bool) -> None:
    def run_json(r: Measured) -> dict:
        return {"label": r.label, "wall_s": r.wall_s, "cpu_s": r.cpu_s,
                "other_cpu_s": r.other_cpu_s, "peak_gib": gib(r.peak),
                "peak_rss_gib": gib(r.peak_rss),
                "seconds": r.extra.get("seconds"), "tasks": r.extra.get("tasks")}

    entries = []
    for r in results:
        entries.append({
            "chunk": r.chunk,
            "aquila": {"wall_s": r.aq_wall, "compute_s": r.aq_compute, "cpu_s": r.aq_cpu,
                       "peak_gib": gib(r.aq_peak), "peak_rss_gib": gib(r.aq_peak_rss),
                       "tasks": sum(int(x.extra.get("tasks", 0)) for x in r.aq),
                       "runs": [run_json(x) for x in r.aq],
                       "all": [[run_json(x) for x in runs] for runs in r.aq_reps]},
            "odc": (run_json(r.od) | {"all": [run_json(x) for x in r.od_reps]}) if r.od else None,
            "speedup": r.speed, "memory_ratio": r.mem,
            "floor": r.floor,
            "compute_over_floor": r.aq_compute / r.floor_s if r.floor_s else None,
            "wall_over_floor": r.aq_wall / r.floor_s if r.floor_s else None,
            "median_agreement": r.med, "latest_agreement": r.lat, "oracle": r.diag,
            "median_agreement_exact_odc": r.med_exact,
            "other_cpu_s": r.other_cpu, "skewed": r.skewed,
        })
    summary = {
        "preset": args.preset, "seed": args.seed, "scenes": len(cat.scenes), "grid": list(grid),
        "chunks": chunks, "workers": args.workers, "threads": args.threads,
        "machine": machine(), "versions": versions(), "repeat": args.repeat,
        "aquila_only": args.aquila_only,
        "targets": {"speedup": TARGET_SPEEDUP, "peak_gib": TARGET_PEAK_GIB,
                    "floor_ratio": TARGET_FLOOR_RATIO, "agreement": TARGET_AGREEMENT,
                    "deep_factor": DEEP_FACTOR, "deep_ratio": TARGET_DEEP_RATIO},
        "sizes": entries,
        "deep": deep,
        "checks": {name: ok for name, ok, _ in checks},
        "pass": overall,
    }
    out = work / f"peers-{args.preset}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"  summary: {out}")


if __name__ == "__main__":
    sys.exit(main())
