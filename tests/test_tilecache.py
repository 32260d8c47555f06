"""Windows served from cached decoded tiles equal GDAL's own window reads, for tiled, striped
and multi-band files and windows at the raster's edges; tiles are decoded once; the cap holds."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin
from rasterio.windows import Window

from pipeline.io.reader import RasterReader, ReaderSettings
from pipeline.io.tilecache import TileCache

H, W = 300, 410  # not a multiple of the tile size: partial tiles on two edges


def _write(path, *, count=1, tiled=True, block=64, interleave="band"):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 60000, size=(count, H, W), dtype=np.uint16)
    profile = dict(driver="GTiff", width=W, height=H, count=count, dtype="uint16",
                   crs="EPSG:32632", transform=from_origin(500000, 5000000, 10, 10),
                   compress="deflate", interleave=interleave)
    if tiled:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return data


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiles")
    return {
        "tiled": (str(d / "tiled.tif"), _write(d / "tiled.tif")),
        "striped": (str(d / "striped.tif"), _write(d / "striped.tif", tiled=False)),
        "pixel-3band": (str(d / "p3.tif"), _write(d / "p3.tif", count=3, interleave="pixel")),
    }


_READER: dict[str, RasterReader] = {}  # one small-capped reader: tiles evicted and re-read

windows = st.tuples(st.integers(0, H - 1), st.integers(0, W - 1),
                    st.integers(1, 200), st.integers(1, 200)).map(
    lambda t: (t[0], t[1], min(t[2], H - t[0]), min(t[3], W - t[1])))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(window=windows, kind=st.sampled_from(["tiled", "striped", "pixel-3band"]))
def test_a_cached_window_equals_the_files_pixels(rasters, window, kind):
    href, data = rasters[kind]
    reader = _READER.setdefault("r", RasterReader(ReaderSettings(tile_cache_mb=1)))
    bands = [1, 3] if kind == "pixel-3band" else [1]
    r0, c0, h, w = window
    got = reader.read(href, bands, window)
    expected = data[[b - 1 for b in bands], r0:r0 + h, c0:c0 + w]
    np.testing.assert_array_equal(got, expected)


def test_each_tile_is_decoded_once_and_the_cap_holds(rasters):
    href, data = rasters["tiled"]
    calls = []
    cache = TileCache(budget=10**9)
    with rasterio.open(href) as ds:
        def raw(bands, win):
            calls.append(win)
            r0, c0, h, w = win
            return ds.read(list(bands), window=Window(c0, r0, w, h))

        for r0 in range(0, H - 50, 50):  # 50 px windows over 64 px tiles: tiles shared
            for c0 in range(0, W - 50, 50):
                out = cache.read(ds, "run", href, [1], (r0, c0, 50, 50), raw)
                np.testing.assert_array_equal(out[0], data[0, r0:r0 + 50, c0:c0 + 50])
        n_tiles = len({w[:2] for w in calls})
        assert len(calls) == n_tiles  # no tile decoded twice
        small = TileCache(budget=3 * 64 * 64 * 2)  # three tiles
        for c0 in range(0, W - 50, 50):
            small.read(ds, "run", href, [1], (0, c0, 50, 50), raw)
            assert small.nbytes <= small.budget


def test_a_window_outside_the_raster_is_read_directly(rasters):
    href, _ = rasters["tiled"]
    cache = TileCache(budget=10**9)
    seen = []
    with rasterio.open(href) as ds:
        cache.read(ds, "run", href, [1], (H - 10, 0, 20, 20),
                   lambda b, w: seen.append(w) or np.zeros((1, 20, 20), np.uint16))
    assert seen == [(H - 10, 0, 20, 20)]  # handed to GDAL as asked, not tiled
