"""``aquila export``: a thin command over :mod:`pipeline.products.export` (docs/export.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape as esc

from pipeline.cli.common import NO_PUBLISH, Output, exit_codes
from pipeline.products.report import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

DESCRIPTION = """\
Write a product to a file other tools read: a Cloud-Optimized GeoTIFF (cog), a plain tiled
GeoTIFF (geotiff) or CF netCDF-4 (netcdf). STORE is a run's cube or mosaic (a .zarr folder) or a
nightly store (an .icechunk folder; pick its product with --group, its night with --at), on disk
or where a run or night published it in a bucket (s3://bucket/prefix/name; the S3 settings from
the environment, as for aquila run). Values are written as stored, with the product's CRS and
transform; its releasability label goes with them (GeoTIFF metadata AQUILA_LABEL, netCDF global
attribute aquila:label). Only a complete product is exported, and OUT is never replaced: it
appears in one step when the file is done.

formats:
  cog      one band per variable (descriptions = variable names), internal overviews, checked
           with rio-cogeo's validator; one data type per file (lineage layers such as count or
           source go in a file of their own); a cube needs --time
  geotiff  the same, tiled, without overviews
  netcdf   every variable (or --bands), the whole cube or the --time slot; CF-1.8 with a
           spatial_ref grid mapping (crs_wkt); structured attributes as JSON strings
"""

EPILOG = exit_codes(**(NO_PUBLISH | {
    f"c{EXIT_OK}": "the file is written",
    f"c{EXIT_FAILED}": "failure (storage, a bucket that cannot be read, an invalid COG, a bug; "
    "nothing written)",
    f"c{EXIT_BAD_INPUT}": "bad input (not a product, an incomplete product, OUT exists, an "
    "unknown band or group,\n       a cube without --time, mixed data types) or a usage error",
    f"c{EXIT_INTERRUPTED}": "interrupted (Ctrl-C; nothing written)",
})) + """
examples:
  aquila export out/demo/mosaic.zarr --format cog out/demo/mosaic.tif
  aquila export out/demo/cube.zarr --format cog --time 0 out/demo/cube-0.tif
  aquila export out/demo/latest.zarr --format geotiff --bands count out/demo/count.tif
  aquila export out/demo/cube.zarr --format netcdf out/demo/cube.nc
  aquila export out/nightly/nightly.icechunk --group mosaic --at 2025-06-30 --format cog m.tif
  aquila export s3://products/eu/mosaic.zarr --format cog mosaic.tif
"""


def add_command(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    exp = sub.add_parser(
        "export", parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write a product as a Cloud-Optimized GeoTIFF, a GeoTIFF or netCDF",
        description=DESCRIPTION, epilog=EPILOG,
    )
    exp.add_argument("store", metavar="STORE",  # a str: a Path would fold s3:// into s3:/
                     help="a cube.zarr or mosaic.zarr, or a nightly store (.icechunk); on "
                     "disk or in a bucket (s3://bucket/prefix/mosaic.zarr)")
    exp.add_argument("out", type=Path, metavar="OUT", help="the file to write (must not exist)")
    exp.add_argument("--format", required=True, choices=("cog", "geotiff", "netcdf"),
                     help="cog | geotiff | netcdf")
    exp.add_argument("--bands", metavar="B,B",
                     help="variables to export, e.g. red,green,blue or count (default: the "
                     "workflow's bands for a GeoTIFF, every variable for netCDF)")
    exp.add_argument("--time", metavar="INDEX|DATE",
                     help="cube: the time slot, by index (0 first, -1 last) or date "
                     "(2025-06-03, or a time 2025-06-03T09:55:46); needed for cog and geotiff")
    exp.add_argument("--group", metavar="NAME",
                     help="nightly store: the product, cube or a mosaic's name (e.g. mosaic)")
    exp.add_argument("--at", metavar="SNAPSHOT|DATE",
                     help="nightly store: the night, by snapshot or run id ('aquila history' "
                     "lists them) or date (the newest night by the end of that day, UTC); "
                     "default: the latest")


def main(args: argparse.Namespace, out: Output) -> int:
    from pipeline.products.export import export_product, store_name

    bands = [b.strip() for b in args.bands.split(",") if b.strip()] if args.bands else None
    done = export_product(args.store, args.out, format=args.format, bands=bands, at=args.at,
                          time=args.time, group=args.group)
    if out.json:
        out.document({
            "command": "export", "status": "success", "exit_code": EXIT_OK,
            "store": store_name(args.store), "out": str(done.path), "format": done.format,
            "source": done.source, "bands": list(done.bands), "snapshot": done.snapshot,
            "time": done.time, "label": done.label, "bytes": done.path.stat().st_size,
        })
    else:
        what = f"{len(done.bands)} band(s) of {done.source}"
        out.human.print(f"wrote {esc(str(done.path))} ({done.format}, {esc(what)}"
                        + (f", time {done.time}" if done.time else "") + ")")
    return EXIT_OK
