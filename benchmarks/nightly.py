"""One incremental night against a full rebuild: does the nightly cost scale with what is new?

A multi-tile archive is generated (``--tiles`` × ``--tiles`` synthetic tiles of 4 km, each with
its own three providers' scenes, ``--spp`` per provider: scenes cover a tile and a margin, as real
tiles and swaths do). The newest ``--new`` fraction of the scenes (by acquisition time: what a
provider contributed since the last run) is held back; the rest is built into a nightly store.
Then, on the same warm LocalCluster (2 workers × 1 thread by default):

* **incremental**: ``aquila nightly`` with the held-back scenes published (the timed night);
* **full rebuild**: ``aquila nightly --rebuild`` over all scenes into a fresh store.

Both compute the same products (a cube, a median mosaic and a latest mosaic), checked equal at the
end. Prints both wall times and their ratio against the target (≤ 15 %).

    .venv/bin/python benchmarks/nightly.py               # ~3 minutes on 2 cores
    .venv/bin/python benchmarks/nightly.py --tiles 4 --spp 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = 0.15


def build_archive(folder: Path, *, tiles: int, spp: int, seed: int) -> list[tuple[str, Path]]:
    """``tiles``² tiles of the synthetic generator side by side; item ids made unique per
    tile. Returns (acquisition time, item file) for every item."""
    from pipeline.testing.synthetic import generate_catalog

    items = []
    for ty in range(tiles):
        for tx in range(tiles):
            k = ty * tiles + tx
            x0, y0 = 500000.0 + 4000 * tx, 5000000.0 + 4000 * ty
            root = folder / f"tile{k:02d}"
            generate_catalog(
                root,
                preset="tiny",
                seed=seed + k,
                scenes_per_provider=spp,
                area_bounds=(x0, y0, x0 + 4000, y0 + 4000),
                workers=2,
            )
            for path in root.glob("*/*/*.json"):
                doc = json.loads(path.read_text())
                if doc.get("type") != "Feature":
                    continue
                doc["id"] = f"t{k:02d}-{doc['id']}"
                path.write_text(json.dumps(doc))
                items.append((doc["properties"]["datetime"], path))
    return sorted(items)


def spec_for(catalog: Path, out: Path, *, tiles: int, chunk: int, res: float) -> dict:
    size = 4000 * tiles
    return {
        "version": 1,
        "name": "bench",
        "catalog": str(catalog),  # a folder: every item file under it
        "bands": ["blue", "green", "red", "nir"],
        "grid": {
            "crs": "EPSG:32632",
            "resolution": res,
            "chunk": chunk,
            "bounds": [500000, 5000000, 500000 + size, 5000000 + size],
        },
        "products": {
            "cube": {"store": str(out / "cube.zarr")},
            "mosaic": {"store": str(out / "mosaic.zarr"), "method": "median"},
            "mosaics": [{"store": str(out / "latest.zarr"), "method": "latest"}],
        },
    }


def night(spec, store: Path, scheduler: str, *, rebuild: bool = False):
    """One nightly run on the warm cluster: (wall s, report, CPU s of the process tree)."""
    from pipeline.nightly import NightOptions, run_nightly
    from pipeline.runtime.cluster import ClusterOptions

    cpu0 = tree_cpu_s()
    t = time.perf_counter()
    report = run_nightly(
        spec,
        options=NightOptions(
            store=store, cluster=ClusterOptions(scheduler=scheduler), rebuild=rebuild
        ),
    )
    wall = time.perf_counter() - t
    assert report.status == "success", report.error
    return wall, report, tree_cpu_s() - cpu0


def tree_cpu_s() -> float:
    """CPU seconds used so far by this process and its children (the local cluster's nannies
    and workers; the scheduler runs in this process): unlike wall time, not inflated by other
    load on a shared machine."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def same_products(a: Path, b: Path) -> bool:
    import numpy as np
    import xarray as xr

    from pipeline.cube.transaction import open_night

    sa, sb = open_night(a), open_night(b)
    for group in ("cube", "mosaic", "latest"):
        x = xr.open_zarr(sa.store, group=group, consolidated=False)
        y = xr.open_zarr(sb.store, group=group, consolidated=False)
        for name in y.data_vars:
            if not np.array_equal(x[name].values, y[name].values, equal_nan=True):
                print(f"  DIFFER: {group}/{name}")
                return False
        if x.attrs.get("sources") != y.attrs.get("sources"):
            print(f"  DIFFER: {group} sources")
            return False
    return True


def wait_quiet(max_wait_s: float, below: float = 0.5) -> None:
    """For shared machines: wait (up to ``max_wait_s``) for the 1-minute load average."""
    deadline = time.monotonic() + max_wait_s
    while os.getloadavg()[0] > below and time.monotonic() < deadline:
        time.sleep(5)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiles", type=int, default=3, help="tiles per side (4 km each; default 3)")
    p.add_argument("--spp", type=int, default=3, help="scenes per provider per tile (default 3)")
    p.add_argument("--new", type=float, default=0.05, help="fraction of new scenes (0.05)")
    p.add_argument("--chunk", type=int, default=200, help="output chunk edge, px (200)")
    p.add_argument("--res", type=float, default=10.0, help="grid resolution, m (10)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="timed rounds; fastest kept (3)")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="before each timed run, wait up to S s for the load average to drop",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "_work" / "nightly")
    args = p.parse_args()

    from distributed import Client, LocalCluster

    from pipeline.workflow import spec_from_dict

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t = time.perf_counter()
    items = build_archive(work / "catalog", tiles=args.tiles, spp=args.spp, seed=args.seed)
    n_new = max(1, round(args.new * len(items)))
    print(
        f"archive: {len(items)} scenes on {args.tiles}x{args.tiles} tiles "
        f"(generated in {time.perf_counter() - t:.0f} s); tonight: the newest {n_new} "
        f"({n_new / len(items):.1%})"
    )
    held = [path for _, path in items[-n_new:]]
    spec = spec_from_dict(
        spec_for(work / "catalog", work / "out", tiles=args.tiles, chunk=args.chunk, res=args.res),
        base_dir=work,
    )
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster),
    ):
        address = cluster.scheduler_address
        for path in held:  # not yet published
            path.rename(path.with_suffix(".held"))
        base_wall, base, _ = night(spec, work / "incremental.icechunk", address)
        print(
            f"base archive built: {base_wall:.1f} s ({len(base.new)} scenes, "
            f"{base.slots['after']} slots, {base.chunks['tasks']} chunk tasks)"
        )
        for path in held:
            path.with_suffix(".held").rename(path)
        shutil.copytree(work / "incremental.icechunk", work / "base.icechunk")
        incs, fulls = [], []
        for r in range(args.repeat):  # alternate, keep the fastest of each (shared machines)
            if r:
                shutil.rmtree(work / "incremental.icechunk")
                shutil.copytree(work / "base.icechunk", work / "incremental.icechunk")
            shutil.rmtree(work / "full.icechunk", ignore_errors=True)
            wait_quiet(args.quiet_wait)
            incs.append(night(spec, work / "incremental.icechunk", address))
            wait_quiet(args.quiet_wait)
            fulls.append(night(spec, work / "full.icechunk", address, rebuild=True))
            print(
                f"  round {r + 1}: incremental {incs[-1][0]:.1f} s ({incs[-1][2]:.1f} CPU s), "
                f"full {fulls[-1][0]:.1f} s ({fulls[-1][2]:.1f} CPU s); load average "
                f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
            )
        inc_wall, inc, inc_cpu = min(incs, key=lambda x: x[0])
        full_wall, full, full_cpu = min(fulls, key=lambda x: x[0])
        inc_cpu, full_cpu = min(x[2] for x in incs), min(x[2] for x in fulls)
    ok = same_products(work / "incremental.icechunk", work / "full.icechunk")
    ratio, cpu_ratio = inc_wall / full_wall, inc_cpu / full_cpu
    print(
        f"incremental night: {inc_wall:6.1f} s  ({len(inc.new)} new scenes, "
        f"{inc.chunks['tasks']} chunk tasks, {inc.chunks['slot_reads']} slot reads from "
        f"assets, {inc.chunks['cube']} cube + {inc.chunks['mosaic']} mosaic chunks written)"
    )
    print(
        f"full rebuild:      {full_wall:6.1f} s  ({len(full.new)} scenes, "
        f"{full.chunks['tasks']} chunk tasks, {full.chunks['slot_reads']} slot reads)"
    )
    print(f"CPU time (driver + workers): incremental {inc_cpu:.1f} s, full {full_cpu:.1f} s")
    print(
        f"incremental / full = {ratio:.1%} wall, {cpu_ratio:.1%} CPU (target <= {TARGET:.0%}): "
        f"{'PASS' if ratio <= TARGET else 'FAIL'}; products identical: {ok}"
    )
    (work / "nightly.json").write_text(
        json.dumps(
            {
                "scenes": len(items),
                "new": n_new,
                "incremental_s": inc_wall,
                "full_s": full_wall,
                "ratio": ratio,
                "incremental_cpu_s": inc_cpu,
                "full_cpu_s": full_cpu,
                "cpu_ratio": cpu_ratio,
                "identical": ok,
                "rounds": [[i[0], i[2], f[0], f[2]] for i, f in zip(incs, fulls, strict=True)],
                "incremental_seconds": inc.seconds,
                "full_seconds": full.seconds,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
