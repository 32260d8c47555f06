"""The fast paths of the chunk's scene read against the general code they stand in for.

* ``gather_calibrate`` / ``gather_mask`` take 1-D kernels when the index maps are broadcast from
  a row and a column vector (what ``nearest_window`` builds for an axis-aligned source): their
  output must be bit-identical to the general 2-D kernels on the same maps made contiguous,
  and equal to the NumPy references.
* ``nearest_window`` for another CRS computes its maps in one fused kernel: the same window and
  indices as flooring ``source_pixel_coords`` (the NumPy interpolation) and clipping.
* ``read_scene`` leaves NaN in the bands of a group whose source does not reach the chunk.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pyproj import Transformer
from shapely.geometry import box as shapely_box

from pipeline.catalog.scene import BandSource, RasterGrid, Scene
from pipeline.engine.chunk import read_scene
from pipeline.engine.warp import nearest_window, source_pixel_coords
from pipeline.kernels.calibrate import gather_calibrate, gather_mask, separable_maps
from pipeline.kernels.indexmaps import nearest_index_maps
from pipeline.plan.grid import ChunkGrid, TargetGrid
from tests.references.kernels import gather_calibrate_reference, gather_mask_reference

PROPS = settings(max_examples=200, deadline=None)  # deadline off: first call compiles
NAN = np.float32(np.nan)
SENTINEL = np.float32(-7.25)  # in bands no gather names: must stay
_finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint32)


def _index_vector(data: st.DataObject, n: int, size: int) -> np.ndarray:
    """1-D int32 indices: a contiguous run (the kernels' vectorised case), a run crossing the
    window's edge, or random ones, negative and beyond the window included."""
    kind = data.draw(st.sampled_from(["run", "edge", "random", "repeat"]))
    if kind == "run" and n <= size:
        start = data.draw(st.integers(0, size - n))
        return np.arange(start, start + n, dtype=np.int32)
    if kind == "edge":  # a run one past either end of the window, or anywhere across one
        start = data.draw(st.sampled_from([-1, size - n + 1]) | st.integers(-n, size))
        return np.arange(start, start + n, dtype=np.int32)
    if kind == "repeat":  # a coarser source: every index twice or thrice
        step = data.draw(st.integers(2, 3))
        start = data.draw(st.integers(-2, size))
        return (start + np.arange(n) // step).astype(np.int32)
    return data.draw(hnp.arrays(np.int32, n, elements=st.integers(-3, size + 2)))


def _broadcast(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    shape = (rows.size, cols.size)
    return np.broadcast_to(rows[:, None], shape), np.broadcast_to(cols[None, :], shape)


@PROPS
@given(data=st.data())
def test_separable_gather_calibrate_is_bit_identical_to_the_2d_kernel(data):
    dtype = data.draw(st.sampled_from([np.uint8, np.uint16, np.int16, np.float32]))
    b = data.draw(st.integers(1, 3))
    h, w = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 40))
    ny, nx = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 40))
    nan_too = st.floats(-1e5, 1e5, width=32) | st.just(np.float32(np.nan))
    elements = nan_too if dtype == np.float32 else None
    src = data.draw(hnp.arrays(dtype, (b, h, w), elements=elements))
    rows, cols = _broadcast(_index_vector(data, ny, h), _index_vector(data, nx, w))
    assert separable_maps(rows, cols) is not None  # the fast path is the one under test
    n_out = b + data.draw(st.integers(0, 2))
    band_out = np.array(data.draw(st.permutations(range(n_out)))[:b])
    has_nodata = data.draw(st.booleans())
    nodata = float(src.flat[0]) if data.draw(st.booleans()) else -9999.0
    scale = np.array(data.draw(st.lists(_finite, min_size=b, max_size=b)), np.float64)
    offset = np.array(data.draw(st.lists(_finite, min_size=b, max_size=b)), np.float64)
    kw: dict = {}
    if data.draw(st.booleans()):
        lo = data.draw(st.floats(-100, 200))
        kw["valid_range"] = (lo, lo + data.draw(st.floats(0, 300)))
    if data.draw(st.booleans()):  # a mask band, values beyond the LUT included
        mask_dtype = data.draw(st.sampled_from([np.uint8, np.uint16, np.bool_]))
        kw["mask"] = data.draw(hnp.arrays(mask_dtype, (h, w)))
        if data.draw(st.booleans()):
            n_lut = data.draw(st.integers(1, 300))
            kw["mask_lut"] = data.draw(hnp.arrays(np.bool_, n_lut))
    if data.draw(st.booleans()):  # the per-pixel sun term: NaN and <= 0 are nodata
        kw["factor"] = data.draw(
            hnp.arrays(np.float64, (ny, nx), elements=st.floats(-1, 3) | st.just(np.nan))
        )
        if data.draw(st.booleans()):
            kw["post_offset"] = data.draw(st.lists(_finite, min_size=b, max_size=b))
    fast = np.full((n_out, ny, nx), SENTINEL, np.float32)
    general = fast.copy()
    gather_calibrate(src, rows, cols, band_out, nodata, has_nodata, scale, offset, fast, **kw)
    rows2, cols2 = rows.copy(), cols.copy()  # fresh strides, never 0
    assert separable_maps(rows2, cols2) is None  # contiguous maps: the 2-D kernel
    gather_calibrate(src, rows2, cols2, band_out, nodata, has_nodata, scale, offset, general,
                     **kw)
    np.testing.assert_array_equal(bits(fast), bits(general))  # NaN payloads and -0.0 too
    ref = gather_calibrate_reference(
        src, rows2, cols2, band_out, nodata, has_nodata, scale, offset, fast.shape, **kw
    )
    others = np.setdiff1d(np.arange(n_out), band_out)
    assert (fast[others] == SENTINEL).all()
    np.testing.assert_array_equal(fast[band_out], ref[band_out])


# the edges by hand: rows -1, 0, h - 1, h; column runs ending at w, one past it, starting at -1
EDGE_ROWS = np.array([-1, 0, 3, 4, 2], np.int32)
EDGE_COLS = {
    "inside": np.arange(2, 9, dtype=np.int32),
    "to_the_end": np.arange(3, 10, dtype=np.int32),
    "one_past": np.arange(4, 11, dtype=np.int32),
    "from_minus_one": np.arange(-1, 6, dtype=np.int32),
    "coarser": np.array([0, 0, 1, 1, 9, 9, 10], np.int32),
}


@pytest.mark.parametrize("cols", list(EDGE_COLS.values()), ids=list(EDGE_COLS))
@pytest.mark.parametrize("extra", ["plain", "mask", "factor"])
def test_separable_gather_calibrate_at_the_window_edges(cols, extra):
    rng = np.random.default_rng(7)
    src = rng.integers(1, 1000, (2, 4, 10)).astype(np.uint16)
    kw: dict = {}
    if extra == "mask":
        kw["mask"] = (rng.random((4, 10)) < 0.8).astype(np.uint8)  # 0: nodata
    if extra == "factor":
        kw["factor"] = rng.uniform(-0.5, 2.0, (5, 7))
    rows, cols2 = _broadcast(EDGE_ROWS, cols)
    out = np.full((2, 5, 7), SENTINEL, np.float32)
    gather_calibrate(src, rows, cols2, np.array([1, 0]), 0, True, [1e-4, 2e-4], [0.1, -0.1],
                     out, **kw)
    ref = gather_calibrate_reference(src, rows, cols2, np.array([1, 0]), 0, True, [1e-4, 2e-4],
                                     [0.1, -0.1], out.shape, **kw)
    np.testing.assert_array_equal(bits(out), bits(ref))


@pytest.mark.parametrize("cols", list(EDGE_COLS.values()), ids=list(EDGE_COLS))
@pytest.mark.parametrize("outside", [True, False])
def test_separable_gather_mask_at_the_window_edges(cols, outside):
    qa = np.random.default_rng(8).integers(0, 4, (4, 10)).astype(np.uint8)
    lut = np.array([True, True, False, True])  # 0 and values past the LUT: masked
    rows, cols2 = _broadcast(EDGE_ROWS, cols)
    out = np.zeros(rows.shape, bool)
    gather_mask(qa, rows, cols2, lut, out, outside_masked=outside)
    ref = gather_mask_reference(qa, rows, cols2, lut, outside_masked=outside)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("shape", [(0, 5), (4, 0)])
def test_separable_gather_calibrate_of_an_empty_window_is_nan(shape):
    src = np.zeros((2, *shape), np.uint16)
    rows, cols = _broadcast(np.arange(3, dtype=np.int32), np.arange(4, dtype=np.int32))
    out = np.zeros((3, 3, 4), np.float32)
    gather_calibrate(src, rows, cols, np.array([2, 0]), 0, True, [1.0, 1.0], [0.0, 0.0], out)
    assert np.isnan(out[[0, 2]]).all() and (out[1] == 0).all()


@PROPS
@given(data=st.data())
def test_separable_gather_mask_equals_the_2d_kernel(data):
    dtype = data.draw(st.sampled_from([np.uint8, np.uint16, np.int16, np.bool_]))
    h, w = data.draw(st.integers(0, 5)), data.draw(st.integers(0, 30))
    ny, nx = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 30))
    qa = data.draw(hnp.arrays(dtype, (h, w)))
    rows = _index_vector(data, ny, h) if h else np.arange(ny, dtype=np.int32)
    cols = _index_vector(data, nx, w) if w else np.arange(nx, dtype=np.int32)
    rows, cols = _broadcast(rows, cols)
    lut = data.draw(hnp.arrays(np.bool_, data.draw(st.integers(1, 300))))
    outside = data.draw(st.booleans())
    prior = data.draw(hnp.arrays(np.bool_, (ny, nx)))
    fast, general = prior.copy(), prior.copy()
    gather_mask(qa, rows, cols, lut, fast, outside_masked=outside)
    gather_mask(qa, rows.copy(), cols.copy(), lut, general,
                outside_masked=outside)
    np.testing.assert_array_equal(fast, general)
    if h and w:
        ref = gather_mask_reference(qa, rows, cols, lut, outside_masked=outside) | prior
        np.testing.assert_array_equal(fast, ref)


# --------------------------------------------------------------------------- index maps

GRID = TargetGrid.from_bounds(
    (500000, 5000000, 505120, 5005120), crs="EPSG:32632", resolution=10, chunk=256
)


def _expected_window(chunk: ChunkGrid, grid: RasterGrid, pad: int):
    """Flooring the NumPy interpolation of ``source_pixel_coords``, by hand."""
    h, w = grid.shape
    frow, fcol = (np.floor(a) for a in source_pixel_coords(chunk, grid))
    inside = (frow >= 0) & (frow < h) & (fcol >= 0) & (fcol < w)
    if not inside.any():
        return None
    row0 = max(int(frow[inside].min()) - pad, 0)
    row1 = min(int(frow[inside].max()) + 1 + pad, h)
    col0 = max(int(fcol[inside].min()) - pad, 0)
    col1 = min(int(fcol[inside].max()) + 1 + pad, w)
    top = np.iinfo(np.int32).max
    rows = np.clip(frow - row0, -1, top).astype(np.int32)
    cols = np.clip(fcol - col0, -1, top).astype(np.int32)
    return (row0, col0, row1 - row0, col1 - col0), rows, cols


@PROPS
@given(data=st.data())
def test_nearest_index_maps_floor_the_numpy_expression_at_integers(data):
    """Node values on integers (equal neighbours: a * (1 - f) + a * f may round below a), so
    the floor tells apart any other order of the interpolation's operations."""
    n, nx = data.draw(st.integers(2, 5)), data.draw(st.integers(1, 8))
    node = st.integers(-3, 12).map(float)
    along_rows = data.draw(hnp.arrays(np.float64, (n, nx), elements=node))
    along_cols = data.draw(hnp.arrays(np.float64, (n, nx), elements=node))
    ny = data.draw(st.integers(1, 8))
    iy = data.draw(hnp.arrays(np.int64, ny, elements=st.integers(0, n - 2)))
    fy = data.draw(hnp.arrays(np.float64, iy.size, elements=st.floats(0, 1, exclude_max=True)))
    h, w = data.draw(st.integers(1, 10)), data.draw(st.integers(1, 10))
    pad = data.draw(st.integers(0, 2))
    found = nearest_index_maps(along_rows, along_cols, iy, fy, (h, w), pad)
    fy2 = fy[:, None]
    frow = np.floor(along_rows[iy] * (1 - fy2) + along_rows[iy + 1] * fy2)
    fcol = np.floor(along_cols[iy] * (1 - fy2) + along_cols[iy + 1] * fy2)
    inside = (frow >= 0) & (frow < h) & (fcol >= 0) & (fcol < w)
    if not inside.any():
        assert found is None
        return
    assert found is not None
    row0 = max(int(frow[inside].min()) - pad, 0)
    col0 = max(int(fcol[inside].min()) - pad, 0)
    assert found[:4] == (
        row0, col0,
        min(int(frow[inside].max()) + 1 + pad, h) - row0,
        min(int(fcol[inside].max()) + 1 + pad, w) - col0,
    )
    np.testing.assert_array_equal(found[4], np.clip(frow - row0, -1, None).astype(np.int32))
    np.testing.assert_array_equal(found[5], np.clip(fcol - col0, -1, None).astype(np.int32))


@settings(max_examples=60, deadline=None)
@given(
    x=st.floats(495000, 507000),
    y=st.floats(4998000, 5008000),
    res=st.sampled_from([3.0, 10.0, 20.0, 30.0, 60.0]),
    size=st.tuples(st.integers(1, 400), st.integers(1, 400)),
    crs=st.sampled_from(["EPSG:32633", "EPSG:32631", "EPSG:3035"]),
    at=st.tuples(st.integers(0, 1), st.integers(0, 1)),
    pad=st.integers(0, 3),
)
def test_nearest_window_in_another_crs_floors_the_numpy_interpolation(
    x, y, res, size, crs, at, pad
):
    sx, sy = Transformer.from_crs(32632, crs, always_xy=True).transform(x, y)
    grid = RasterGrid(crs, (res, 0.0, sx, 0.0, -res, sy), size)
    chunk = GRID.chunk_grid(*at)
    win = nearest_window(chunk, grid, pad=pad)
    expected = _expected_window(chunk, grid, pad)
    if expected is None:
        assert win is None
        return
    assert win is not None
    assert (win.row0, win.col0, win.height, win.width) == expected[0]
    np.testing.assert_array_equal(win.rows, expected[1], strict=True)
    np.testing.assert_array_equal(win.cols, expected[2], strict=True)


# --------------------------------------------------------------------------- read_scene

CHUNK = ChunkGrid(0, 0, 0, 0, 4, 6, "EPSG:32632", (10.0, 0.0, 500000.0, 0.0, -10.0, 5e6))
NEAR = RasterGrid("EPSG:32632", (10.0, 0.0, 500000.0, 0.0, -10.0, 5e6), (4, 6))
FAR = RasterGrid("EPSG:32632", (10.0, 0.0, 600000.0, 0.0, -10.0, 5e6), (4, 6))


class _Reader:
    """Pixel windows of in-memory assets (href -> (band, H, W) array), as RasterReader.read."""

    def __init__(self, assets: dict[str, np.ndarray]) -> None:
        self.assets = assets

    def read(self, href, indexes, box, signer=None):
        row0, col0, height, width = box
        data = self.assets[href][[i - 1 for i in indexes]]
        return data[:, row0 : row0 + height, col0 : col0 + width]


def _band(name: str, href: str, index: int, grid: RasterGrid) -> BandSource:
    return BandSource(name, "data", href, index, "uint16", 0.0, 1e-4, 0.0, grid)


def test_read_scene_leaves_nan_in_the_bands_of_a_group_that_does_not_reach_the_chunk():
    near = np.arange(1, 49, dtype=np.uint16).reshape(2, 4, 6)
    near[1, 0, 0] = 0  # nodata
    reader = _Reader({"near.tif": near, "far.tif": np.full((1, 4, 6), 7, np.uint16)})
    scene = Scene(
        "s1",
        "c",
        "p",
        dt.datetime(2025, 6, 1, 10, tzinfo=dt.UTC),
        shapely_box(9, 45, 9.1, 45.1),
        (
            _band("blue", "near.tif", 1, NEAR),
            _band("nir", "far.tif", 1, FAR),  # disjoint from the chunk: its window is None
            _band("red", "near.tif", 2, NEAR),
        ),
    )
    result = read_scene(scene, CHUNK, resampling="nearest", reader=reader)
    assert result is not None
    values, masked = result
    assert values.shape == (3, 4, 6) and values.dtype == np.float32
    assert np.isnan(values[1]).all()
    want = (near * 1e-4).astype(np.float32)
    want[1, 0, 0] = NAN
    np.testing.assert_array_equal(values[[0, 2]], want)
    assert not masked.any()
    # no band reaches the chunk: no scene at all
    alone = Scene(scene.id, "c", "p", scene.datetime, scene.footprint, scene.bands[1:2])
    assert read_scene(alone, CHUNK, resampling="nearest", reader=reader) is None
