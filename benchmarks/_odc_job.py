"""The peer job for ``benchmarks/peers.py``: Aquila's median + latest mosaics, done with odc-stac.

Run as a child process by ``peers.py`` (which samples the memory of this process tree)::

    python benchmarks/_odc_job.py CATALOG OUTDIR --bounds XMIN YMIN XMAX YMAX \
        --crs EPSG:32632 --resolution 10 --chunk 512 --workers 2 --threads 1

What a careful odc-stac user writes for the same result, with no extra dependency:

* per collection, ``odc.stac.load`` on the same GeoBox, ``resampling="nearest"``,
  ``use_overviews=False``, ``groupby="solar_day"``, dask chunks of ``chunk`` px, the bands by
  their common names (odc-stac resolves ``blue`` to ``B02`` / ``blue`` / ``analytic.1`` through
  the items' ``eo:bands``) plus the collection's QA asset;
* nodata (per asset, as published in ``raster:bands``) -> NaN, ``DN * scale + offset`` (from
  ``raster:bands``), float32; the QA decoded with the rules Aquila reads from the
  ``classification`` extension (SCL classes 0/3/8/9; ``qa_pixel`` bits 0/3/4; UDM classes
  1/2/255); an observation is used only where the QA is clear and all four bands are valid
  (Aquila's rule);
* the collections concatenated along time and sorted, then ``median("time")`` (NaN-skipping)
  and a latest-valid mosaic (a fold of ``where(valid_t, slot_t, acc)`` over ascending time;
  ``ffill("time")`` would need bottleneck, which is not installed);
* both mosaics written with ``to_zarr(compute=False)`` and computed in ONE ``dask.compute``, so
  odc-stac reads the sources once for both products (Aquila's CLI, today, runs twice).

No ``.load()`` / ``.persist()`` of the stack: everything streams through the dask graph on a
``LocalCluster(n_workers, threads_per_worker, processes=True, memory_limit="auto")`` with a
loopback dashboard, as ``aquila run`` starts it (``pipeline/engine/cluster.py``).

With ``--exact-warp`` (``peers.py``'s untimed second run, for the agreement check only), the
workers warp with GDAL's exact transformer instead of its default approximate one (error
threshold 0.125 source px), which picks the neighbouring source pixel when an output pixel
centre falls that close to a source pixel edge. odc-stac has no option for it, so a worker
plugin replaces the ``rasterio.warp.reproject`` that ``odc.loader`` calls by the same GDAL warp
through a ``WarpedVRT`` with a 1e-6 px tolerance (:func:`exact_reproject`); nothing else
changes.

Prints one line ``ODC_JOB_RESULT {json}`` with its phase timings and graph size.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from pathlib import Path

BANDS = ("blue", "green", "red", "nir")

# QA asset and "masked" rule per collection (the same rules Aquila derives from the
# classification extension of each QA asset).
QA = {
    "north": ("SCL", "classes", (0, 3, 8, 9)),
    "south": ("qa_pixel", "bits", (0, 3, 4)),
    "east": ("udm", "classes", (1, 2, 255)),
}


def band_calibration(item, band: str) -> tuple[float, float, float | None]:
    """(scale, offset, nodata) of a common-name band, from the item's eo:bands / raster:bands."""
    for asset in item.assets.values():
        eo = asset.extra_fields.get("eo:bands") or []
        rb = asset.extra_fields.get("raster:bands") or []
        for i, b in enumerate(eo):
            if b.get("common_name") == band or b.get("name") == band:
                r = rb[i] if i < len(rb) else {}
                return float(r.get("scale", 1.0)), float(r.get("offset", 0.0)), r.get("nodata")
    raise KeyError(f"{item.id}: no asset with band {band!r}")


def masked_qa(qa, rule: str, values: tuple[int, ...]):
    """True where the QA says "do not use" (cloud, shadow, fill/no data)."""
    if rule == "classes":
        return qa.isin(list(values))
    bits = 0
    for b in values:
        bits |= 1 << b
    return (qa & bits) != 0


def collection_stack(items, collection: str, gbox, chunk: int):
    """One collection on the target grid: a Dataset of float32 reflectance (time, y, x) with NaN
    wherever the observation is not usable."""
    import numpy as np
    import odc.stac
    import xarray as xr

    qa_key, rule, values = QA[collection]
    ds = odc.stac.load(
        items,
        bands=[*BANDS, qa_key],
        geobox=gbox,
        groupby="solar_day",
        resampling="nearest",
        use_overviews=False,
        chunks={"x": chunk, "y": chunk},
    )
    clear = ~masked_qa(ds[qa_key], rule, values)
    out = {}
    for band in BANDS:
        scale, offset, nodata = band_calibration(items[0], band)
        dn = ds[band]
        refl = dn.astype("float32") * np.float32(scale) + np.float32(offset)
        if nodata is not None:
            refl = refl.where(dn != nodata)
        out[band] = refl
    stack = xr.Dataset(out)
    valid = clear
    for band in BANDS:
        valid = valid & stack[band].notnull()
    stack = stack.where(valid)
    return stack.assign_coords(collection=("time", [collection] * stack.sizes["time"]))


EXACT_TOLERANCE = 1e-6  # source px; GDAL's default approximation allows 0.125


def exact_reproject(original):
    """``rasterio.warp.reproject`` for odc-stac's call (a ``rasterio.Band`` source, an ndarray
    destination) through GDAL's ``WarpedVRT`` with a ``tolerance`` of 1e-6 source px: the same
    GDAL warper, with the exact transformer in effect. rasterio 1.4's ``reproject`` always
    wraps GDAL's transformer in the approximate one (error threshold 0.125 px; its
    ``tolerance`` keyword is not honoured), and ``WarpedVRT`` refuses 0. Any other call goes to
    ``original`` unchanged."""
    import rasterio
    from rasterio.vrt import WarpedVRT

    def reproject(source, destination=None, *, src_nodata=None, dst_crs=None,
                  dst_transform=None, dst_nodata=None, resampling=0, **kwargs):
        if (kwargs or not isinstance(source, rasterio.Band) or destination is None
                or dst_crs is None or dst_transform is None):
            return original(source, destination, src_nodata=src_nodata, dst_crs=dst_crs,
                            dst_transform=dst_transform, dst_nodata=dst_nodata,
                            resampling=resampling, **kwargs)
        height, width = destination.shape[-2:]
        opts = {"crs": dst_crs, "transform": dst_transform, "width": width, "height": height,
                "resampling": resampling, "tolerance": EXACT_TOLERANCE}
        if src_nodata is not None:
            opts["src_nodata"] = src_nodata
        if dst_nodata is not None:
            opts["nodata"] = dst_nodata
        with WarpedVRT(source.ds, **opts) as vrt:
            vrt.read(source.bidx, out=destination)
        return destination

    reproject.aquila_exact = True  # type: ignore[attr-defined]
    return reproject


def exact_warp_plugin():
    """A dask WorkerPlugin that puts :func:`exact_reproject` in place of the worker's
    ``rasterio.warp.reproject``; ``odc.loader`` looks it up at call time."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class ExactWarp(WorkerPlugin):
        name = "aquila-bench-exact-warp"

        def setup(self, worker) -> None:
            import rasterio.warp

            if not getattr(rasterio.warp.reproject, "aquila_exact", False):
                rasterio.warp.reproject = exact_reproject(rasterio.warp.reproject)

    return ExactWarp()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("catalog")
    p.add_argument("outdir", type=Path)
    p.add_argument("--bounds", type=float, nargs=4, required=True)
    p.add_argument("--crs", default="EPSG:32632")
    p.add_argument("--resolution", type=float, default=10.0)
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--exact-warp", action="store_true",
                   help="GDAL's exact transformer instead of its default approximate one (see "
                   "exact_reproject); for the agreement check, not for timing")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    import warnings

    import dask
    import pystac
    import xarray as xr
    from distributed import Client, LocalCluster
    from odc.geo.geobox import GeoBox

    logging.getLogger("distributed").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Port .* is already in use")
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=args.threads,
                           processes=True, memory_limit="auto",
                           dashboard_address="127.0.0.1:8787", host="127.0.0.1")
    client = Client(cluster)
    if args.exact_warp:
        client.register_plugin(exact_warp_plugin())
    t_cluster = time.perf_counter()

    gbox = GeoBox.from_bbox(tuple(args.bounds), args.crs, resolution=args.resolution)
    cat = pystac.Catalog.from_file(args.catalog)
    per_coll: dict[str, list] = {}
    for item in cat.get_items(recursive=True):
        item.make_asset_hrefs_absolute()
        per_coll.setdefault(item.collection_id, []).append(item)
    stacks = [collection_stack(items, c, gbox, args.chunk)
              for c, items in sorted(per_coll.items())]
    stack = xr.concat(stacks, dim="time").sortby("time")

    median = stack.median("time", skipna=True)
    valid = stack[BANDS[0]].notnull()
    latest = functools.reduce(
        lambda acc, t: stack.isel(time=t).where(valid.isel(time=t), acc),
        range(1, stack.sizes["time"]),
        stack.isel(time=0),
    ).drop_vars(["time", "collection"], errors="ignore")

    args.outdir.mkdir(parents=True, exist_ok=True)
    enc = {b: {"chunks": (args.chunk, args.chunk)} for b in BANDS}
    # the store's chunks must match dask's: odc-stac's y chunks need not (at 1024 px on a
    # 2000 px grid xarray refused the write), so align them to the store's chunk edge
    median = median.chunk({"y": args.chunk, "x": args.chunk})
    latest = latest.chunk({"y": args.chunk, "x": args.chunk})
    w_median = median.to_zarr(args.outdir / "median.zarr", mode="w", compute=False,
                              encoding=enc, zarr_format=3, consolidated=True)
    w_latest = latest.to_zarr(args.outdir / "latest.zarr", mode="w", compute=False,
                              encoding=enc, zarr_format=3, consolidated=True)
    try:
        n_tasks = len(dask.base.collections_to_expr([w_median, w_latest]).__dask_graph__())
    except Exception:  # noqa: BLE001 - informational only; dask internals move
        n_tasks = None
    t_graph = time.perf_counter()
    dask.compute(w_median, w_latest)
    t_compute = time.perf_counter()
    client.close()
    cluster.close()
    t_end = time.perf_counter()
    result = {
        "exact_warp": args.exact_warp,
        "time_slots": int(stack.sizes["time"]),
        "tasks": n_tasks,
        "seconds": {
            "cluster_start": t_cluster - t0,
            "graph": t_graph - t_cluster,
            "compute": t_compute - t_graph,
            "shutdown": t_end - t_compute,
            "total": t_end - t0,
        },
    }
    print("ODC_JOB_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
