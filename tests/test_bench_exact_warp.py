"""benchmarks/_odc_job.py's exact warp: the peer run that the benchmark's second agreement check
compares Aquila with must pick, for every output pixel, the source pixel that contains the
pixel centre transformed exactly (pyproj); GDAL's default warp through rasterio does not (its
approximate transformer), which is why the check exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import rasterio.warp
from pyproj import Transformer
from rasterio.io import MemoryFile
from rasterio.transform import from_origin

from tests.conftest import bench_module

JOB = Path(__file__).resolve().parents[1] / "benchmarks" / "_odc_job.py"
SRC_X0, SRC_Y0, RES = 300_000.0, 5_600_000.0, 10.0
SRC_SHAPE, DST_SHAPE = (600, 600), (500, 500)


def _job():
    return bench_module(JOB.name)


def _exact_pick(src: np.ndarray, dst_transform) -> tuple[np.ndarray, np.ndarray]:
    """The expected nearest-neighbour result: each output pixel centre to EPSG:32633 with
    pyproj, the source pixel containing it; and where it falls inside the source."""
    rows, cols = np.mgrid[0:DST_SHAPE[0], 0:DST_SHAPE[1]]
    x = dst_transform.c + (cols + 0.5) * RES
    y = dst_transform.f - (rows + 0.5) * RES
    sx, sy = Transformer.from_crs(32632, 32633, always_xy=True).transform(x, y)
    c = np.floor((sx - SRC_X0) / RES).astype(int)
    r = np.floor((SRC_Y0 - sy) / RES).astype(int)
    inside = (c >= 0) & (c < SRC_SHAPE[1]) & (r >= 0) & (r < SRC_SHAPE[0])
    out = np.zeros(DST_SHAPE, src.dtype)
    out[inside] = src[r[inside], c[inside]]
    return out, inside


def test_the_exact_warp_picks_the_source_pixel_of_each_exact_centre_and_gdals_default_does_not():
    rng = np.random.default_rng(1)
    src = rng.integers(1, 60_000, SRC_SHAPE).astype("uint16")
    src[50:120, 200:260] = 0  # nodata: stays nodata
    src_transform = from_origin(SRC_X0, SRC_Y0, RES, RES)
    x0, y0 = Transformer.from_crs(32633, 32632, always_xy=True).transform(
        SRC_X0 + 400, SRC_Y0 - 400)
    dst_transform = from_origin(round(x0, -1), round(y0, -1), RES, RES)
    expected, inside = _exact_pick(src, dst_transform)
    exact = _job().exact_reproject(rasterio.warp.reproject)

    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=SRC_SHAPE[1], height=SRC_SHAPE[0], count=1,
                      dtype="uint16", crs="EPSG:32633", transform=src_transform,
                      nodata=0) as ds:
            ds.write(src, 1)
        with mem.open() as ds:
            got = {}
            for name, fn in (("default", rasterio.warp.reproject), ("exact", exact)):
                out = np.full(DST_SHAPE, 7, "uint16")
                fn(rasterio.band(ds, 1), out, src_nodata=0, dst_crs="EPSG:32632",
                   dst_transform=dst_transform, dst_nodata=0,
                   resampling=rasterio.warp.Resampling.nearest)
                got[name] = out

    assert inside.sum() > 0.9 * inside.size
    np.testing.assert_array_equal(got["exact"][inside], expected[inside])
    assert (got["exact"][~inside] == 0).all()
    # the reason for the exact run: rasterio's reproject uses GDAL's approximate transformer
    assert (got["default"][inside] != expected[inside]).sum() > 100
