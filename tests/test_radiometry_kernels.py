"""Radiometry kernels vs their NumPy references: one table over kernels × dtypes × NaN / nodata /
empty / all-masked inputs, hand-computed values, and hypothesis properties on random shapes.

References (:mod:`tests.references.kernels`, :mod:`tests.references.toa`) are
whole-array NumPy written from the specifications (bit arithmetic instead of LUTs, shifted ORs
instead of the separable dilation), so agreement checks semantics, not a copy of the loops.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.catalog.sensors.folding import BandConstants, Linear, SunGeometry, fold, harmonised
from pipeline.kernels import qa
from pipeline.kernels.calibrate import gather_calibrate, gather_mask
from pipeline.kernels.dilate import dilate
from tests.references.kernels import gather_calibrate_reference, gather_mask_reference
from tests.references.toa import (
    decode_reference,
    dilate_reference,
    dn_to_radiance_reference,
    dn_to_toa_reflectance_reference,
    harmonise_linear_reference,
    radiance_to_toa_reflectance_reference,
)
from tests.references.toa_chain import (
    dn_to_radiance,
    dn_to_toa_reflectance,
    harmonise_linear,
    radiance_to_toa_reflectance,
)

PROPS = settings(max_examples=60, deadline=None)
DN_DTYPES = [
    np.uint8,
    np.int8,
    np.uint16,
    np.int16,
    np.uint32,
    np.int32,
    np.uint64,
    np.int64,
    np.float16,
    np.float32,
    np.float64,
]
FLOATS = [np.float32, np.float64]
CASES = ["normal", "nan", "nodata", "all_nodata", "empty"]


def table(cases, dtypes) -> list:
    """(case, dtype) pairs that exist: NaN DN only for float dtypes (an integer cannot hold one)."""
    return [
        pytest.param(c, d, id=f"{c}-{np.dtype(d).name}")
        for c in cases
        for d in dtypes
        if not (c == "nan" and np.dtype(d).kind != "f")
    ]


def seed(*parts: str) -> int:
    return zlib.crc32("/".join(parts).encode())


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    """Exact (NaN == NaN), dtype, shape and the sign of zeros."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected, strict=True)
    both = ~(np.isnan(actual) | np.isnan(expected))
    np.testing.assert_array_equal(np.signbit(actual) & both, np.signbit(expected) & both)


def random_dn(rng, dtype, shape) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return rng.uniform(-10, 3000, shape).astype(dtype)
    info = np.iinfo(dtype)
    lo, hi = max(int(info.min), -30000), min(int(info.max), 60000)
    return rng.integers(lo, hi + 1, shape).astype(dtype)


def dn_case(case: str, dtype, rng, shape=(3, 4, 5)):
    """(dn, nodata, has_nodata) for a table case."""
    if case == "empty":
        shape = (shape[0], 0, shape[2])
    dn = random_dn(rng, dtype, shape)
    nodata = 0
    if case in ("nodata", "all_nodata"):
        flags = rng.random(shape) < 0.4 if case == "nodata" else np.ones(shape, bool)
        dn[flags] = nodata
    if case == "nan":
        assert np.dtype(dtype).kind == "f", "table() pairs NaN with float dtypes only"
        dn[rng.random(shape) < 0.4] = np.nan
    return dn, nodata, case in ("nodata", "all_nodata")


# --------------------------------------------------------------------------------------------
# gather_calibrate: nodata value / valid range / mask band / per-pixel factor
# --------------------------------------------------------------------------------------------

GATHER_CASES = [*CASES, "valid_range", "mask_band", "all_masked", "factor", "outside"]


def gather_case(case: str, dtype, rng):
    b, h, w, ny, nx = 3, 6, 7, 5, 9
    base = case if case in CASES else "normal"
    dn, nodata, has_nodata = dn_case(base, dtype, rng, (b, h, w))
    h = dn.shape[1]
    rows = rng.integers(0, max(h, 1), (ny, nx)).astype(np.int32)
    cols = rng.integers(0, w, (ny, nx)).astype(np.int32)
    if case == "outside":
        rows[0] = -1
        cols[1] = w + 3
    kw: dict = {}
    if case == "valid_range":
        kw["valid_range"] = (5.0, 2000.0)
    if case in ("mask_band", "all_masked"):
        mask = (rng.random((h, w)) < 0.5).astype(np.uint8) * rng.integers(1, 255, (h, w))
        if case == "all_masked":
            mask[:] = 0
        kw["mask"] = mask.astype(np.uint8)
    if case == "factor":
        f = rng.uniform(0.2, 1.2, (ny, nx))
        f[0, :3] = [0.0, -0.5, np.nan]  # the sun at or below the horizon: nodata
        kw["factor"] = f
        kw["post_offset"] = np.array([0.001, -0.002, 0.0])
    scale = np.array([2.75e-5, 1e-4, 0.01])
    offset = np.array([-0.2, -0.1, 0.0])
    return (dn, rows, cols, np.array([2, 0, 1]), nodata, has_nodata, scale, offset, (3, ny, nx)), kw


@pytest.mark.parametrize(("case", "dtype"), table(GATHER_CASES, DN_DTYPES))
def test_gather_calibrate_table(case, dtype):
    rng = np.random.default_rng(seed("gather", case, np.dtype(dtype).name))
    (*args, shape), kw = gather_case(case, dtype, rng)
    out = np.full(shape, 7.0, np.float32)
    gather_calibrate(*args, out, **kw)
    ref = gather_calibrate_reference(*args, shape, **kw)
    assert_same(out, ref)
    if case in ("all_nodata", "all_masked", "empty"):
        assert np.isnan(out).all()
    if case == "factor":
        assert np.isnan(out[:, 0, :3]).all()
    if case == "outside":
        assert np.isnan(out[:, 0]).all() and np.isnan(out[:, 1]).all()


def test_gather_calibrate_known_values():
    """Landsat L1: 20000 * 2e-5 - 0.1 = 0.3; a DN outside [1, 30000], a mask band value 0 and a
    mask value in the LUT are nodata; with a factor of 2 and post offset 0.01: 0.61."""
    src = np.array([[[20000, 40000, 20000, 20000]]], dtype=np.uint16)
    mask = np.array([[1, 1, 0, 3]], dtype=np.uint8)
    idx_r = np.zeros((1, 4), np.int32)
    idx_c = np.arange(4, dtype=np.int32)[None]
    out = np.empty((1, 1, 4), np.float32)
    lut = np.array([True, False, False, True])
    gather_calibrate(
        src,
        idx_r,
        idx_c,
        [0],
        0,
        True,
        [2e-5],
        [-0.1],
        out,
        valid_range=(1, 30000),
        mask=mask,
        mask_lut=lut,
    )
    np.testing.assert_array_equal(out[0, 0], [np.float32(0.3), np.nan, np.nan, np.nan])
    gather_calibrate(
        src,
        idx_r,
        idx_c,
        [0],
        0,
        True,
        [2e-5],
        [-0.1],
        out,
        factor=np.full((1, 4), 2.0),
        post_offset=[0.01],
    )
    assert out[0, 0, 0] == np.float32((20000 * 2e-5 - 0.1) * 2 + 0.01)
    # default mask LUT: 0 is nodata (GDAL mask convention), any other value is data
    gather_calibrate(src, idx_r, idx_c, [0], 0, True, [2e-5], [-0.1], out, mask=mask)
    np.testing.assert_array_equal(np.isnan(out[0, 0]), [False, False, True, False])


def test_gather_calibrate_rejects_bad_radiometry_arguments():
    src = np.zeros((1, 2, 2), np.uint16)
    idx = np.zeros((2, 2), np.int32)
    out = np.empty((1, 2, 2), np.float32)
    base = (src, idx, idx, [0], 0, True, [1.0], [0.0], out)
    for kw, word in [
        ({"valid_range": (3, 1)}, "valid_range"),
        ({"valid_range": "ab"}, "valid_range"),
        ({"mask": np.zeros((3, 2), np.uint8)}, "mask"),
        ({"mask": np.zeros((2, 2), np.float32)}, "mask"),
        ({"mask_lut": np.zeros(2, bool)}, "mask_lut"),
        ({"mask": np.zeros((2, 2), np.uint8), "mask_lut": np.zeros(0, bool)}, "mask_lut"),
        ({"factor": np.ones((3, 3))}, "factor"),
        ({"factor": np.ones((2, 2), np.int32)}, "factor"),
        ({"post_offset": [1.0]}, "post_offset"),
        ({"factor": np.ones((2, 2)), "post_offset": [1.0, 2.0]}, "post_offset"),
    ]:
        with pytest.raises(ValueError, match=word):
            gather_calibrate(*base, **kw)


@PROPS
@given(data=st.data())
def test_gather_calibrate_radiometry_property(data):
    dtype = data.draw(st.sampled_from(DN_DTYPES))
    b, h, w = (
        data.draw(st.integers(1, 3)),
        data.draw(st.integers(0, 4)),
        data.draw(st.integers(1, 4)),
    )
    ny, nx = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    if np.dtype(dtype).kind == "f":
        width = 16 if dtype == np.float16 else 32
        elements = st.one_of(st.just(np.nan), st.floats(-1e4, 1e4, width=width))
    else:
        info = np.iinfo(dtype)
        elements = st.integers(max(int(info.min), -(2**40)), min(int(info.max), 2**40))
    src = data.draw(hnp.arrays(dtype, (b, h, w), elements=elements))
    rows = data.draw(hnp.arrays(np.int32, (ny, nx), elements=st.integers(-1, h)))
    cols = data.draw(hnp.arrays(np.int32, (ny, nx), elements=st.integers(-1, w)))
    kw: dict = {}
    if data.draw(st.booleans()):
        lo = data.draw(st.floats(-1e3, 1e3))
        kw["valid_range"] = (lo, lo + data.draw(st.floats(0, 1e4)))
    if data.draw(st.booleans()):
        kw["mask"] = data.draw(hnp.arrays(np.uint8, (h, w)))
        if data.draw(st.booleans()):
            kw["mask_lut"] = data.draw(hnp.arrays(np.bool_, data.draw(st.integers(1, 300))))
    if data.draw(st.booleans()):
        kw["factor"] = data.draw(
            hnp.arrays(np.float64, (ny, nx), elements=st.one_of(st.just(np.nan), st.floats(-2, 2)))
        )
        kw["post_offset"] = data.draw(hnp.arrays(np.float64, b, elements=st.floats(-1, 1)))
    scale = data.draw(hnp.arrays(np.float64, b, elements=st.floats(-1e-2, 1e-2)))
    offset = data.draw(hnp.arrays(np.float64, b, elements=st.floats(-1, 1)))
    nodata = float(src.flat[0]) if src.size and data.draw(st.booleans()) else 0.0
    has_nodata = data.draw(st.booleans())
    band_out = np.array(data.draw(st.permutations(range(b))))
    out = np.full((b, ny, nx), -3.0, np.float32)
    gather_calibrate(src, rows, cols, band_out, nodata, has_nodata, scale, offset, out, **kw)
    ref = gather_calibrate_reference(
        src, rows, cols, band_out, nodata, has_nodata, scale, offset, out.shape, **kw
    )
    assert_same(out, ref)


@pytest.mark.parametrize("outside_masked", [True, False])
@pytest.mark.parametrize("case", ["normal", "all_masked", "none_masked", "empty_window"])
def test_gather_mask_outside_flag_table(case, outside_masked):
    rng = np.random.default_rng(seed("mask", case, str(outside_masked)))
    h = 0 if case == "empty_window" else 5
    qa_win = rng.integers(0, 4, (h, 6)).astype(np.uint16)
    rows = rng.integers(-1, 6, (4, 7)).astype(np.int32)
    cols = rng.integers(-1, 7, (4, 7)).astype(np.int32)
    lut = np.array([False, True, False, True])
    if case == "all_masked":
        lut[:] = True
    if case == "none_masked":
        lut[:] = False
    out = np.zeros((4, 7), bool)
    gather_mask(qa_win, rows, cols, lut, out, outside_masked=outside_masked)
    assert_same(
        out.view(np.uint8),
        gather_mask_reference(qa_win, rows, cols, lut, outside_masked=outside_masked).view(
            np.uint8
        ),
    )
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < 6)
    assert out[~inside].all() if outside_masked else not out[~inside].any()


# --------------------------------------------------------------------------------------------
# DN → radiance → TOA reflectance → bandpass adjustment (whole-array kernels)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "dtype"), table(CASES, [d for d in DN_DTYPES if d != np.float16])
)
def test_toa_kernels_table(case, dtype):
    rng = np.random.default_rng(seed("toa", case, np.dtype(dtype).name))
    dn, nodata, has_nodata = dn_case(case, dtype, rng)
    gain, bias = np.array([0.0097, 0.012, 0.0006]), np.array([-48.7, -60.1, -3.0])
    out = np.full(dn.shape, 5.0, np.float32)
    dn_to_radiance(dn, gain, bias, nodata, has_nodata, out)
    assert_same(out, dn_to_radiance_reference(dn, gain, bias, nodata, has_nodata))
    mult, add = np.full(3, 2e-5), np.full(3, -0.1)
    dn_to_toa_reflectance(dn, mult, add, 52.12893938, nodata, has_nodata, out)
    assert_same(
        out, dn_to_toa_reflectance_reference(dn, mult, add, 52.12893938, nodata, has_nodata)
    )
    if case in ("all_nodata",):
        assert np.isnan(out).all()
    radiance = dn_to_radiance_reference(dn, gain, bias, nodata, has_nodata)
    esun = np.array([1536.0, 1031.0, 83.44])
    for cos in (0.61, rng.uniform(-0.2, 1.0, dn.shape[1:])):
        radiance_to_toa_reflectance(radiance, esun, 1.013051, cos, out)
        assert_same(out, radiance_to_toa_reflectance_reference(radiance, esun, 1.013051, cos))
    refl = out.copy()
    harmonise_linear(refl, [0.9778, 1.0053, 0.9765], [-0.004, -0.0009, 0.0009], out)
    assert_same(
        out, harmonise_linear_reference(refl, [0.9778, 1.0053, 0.9765], [-0.004, -0.0009, 0.0009])
    )


def test_toa_known_values():
    """Hand arithmetic: L = 0.00973 * 10000 - 48.675 = 48.625; ρ = π·48.625·1.013051² /
    (1536 · cos 27.8269°) = 0.11; (DN·2e-5 - 0.1)/sin(62.1731°) for DN 10000 = 0.113085."""
    dn = np.full((1, 1, 1), 10000, np.uint16)
    out = np.empty((1, 1, 1), np.float32)
    dn_to_radiance(dn, [0.00973], [-48.675], 0, True, out)
    assert out[0, 0, 0] == np.float32(48.625)
    rho = np.empty_like(out)
    radiance_to_toa_reflectance(out, [1536.0], 1.013051, math.cos(math.radians(27.8269)), rho)
    expected = (
        math.pi
        * np.float64(np.float32(48.625))
        * 1.013051**2
        / (1536.0 * math.cos(math.radians(27.8269)))
    )
    assert rho[0, 0, 0] == np.float32(expected)
    dn_to_toa_reflectance(dn, [2e-5], [-0.1], 62.17310472, 0, True, out)
    assert out[0, 0, 0] == np.float32(0.1 / math.sin(math.radians(62.17310472)))
    with pytest.raises(ValueError, match="sun_elevation_deg"):
        dn_to_toa_reflectance(dn, [2e-5], [-0.1], 0.0, 0, True, out)
    with pytest.raises(ValueError, match="esun"):
        radiance_to_toa_reflectance(out, [0.0], 1.0, 0.5, rho)
    with pytest.raises(ValueError, match="earth_sun_distance"):
        radiance_to_toa_reflectance(out, [1536.0], 1.5, 0.5, rho)


@PROPS
@given(data=st.data())
def test_toa_kernels_property(data):
    dtype = data.draw(st.sampled_from([np.uint16, np.int16, np.float32, np.float64]))
    shape = tuple(data.draw(st.integers(0 if i else 1, 4)) for i in range(3))
    elements = st.floats(-1e5, 1e5, width=32) if np.dtype(dtype).kind == "f" else None
    dn = data.draw(hnp.arrays(dtype, shape, elements=elements))
    nb = shape[0]
    gain = data.draw(hnp.arrays(np.float64, nb, elements=st.floats(-1, 1)))
    bias = data.draw(hnp.arrays(np.float64, nb, elements=st.floats(-100, 100)))
    nodata = float(dn.flat[0]) if dn.size else 0.0
    has = data.draw(st.booleans())
    out = np.empty(shape, np.float32)
    dn_to_radiance(dn, gain, bias, nodata, has, out)
    assert_same(out, dn_to_radiance_reference(dn, gain, bias, nodata, has))
    elev = data.draw(st.floats(0.5, 90))
    dn_to_toa_reflectance(dn, gain, bias, elev, nodata, has, out)
    assert_same(out, dn_to_toa_reflectance_reference(dn, gain, bias, elev, nodata, has))
    esun = data.draw(hnp.arrays(np.float64, nb, elements=st.floats(50, 2100)))
    d = data.draw(st.floats(0.98, 1.02))
    cos = data.draw(
        hnp.arrays(np.float64, shape[1:], elements=st.one_of(st.just(np.nan), st.floats(-1, 1)))
    )
    radiance = out.copy()
    radiance_to_toa_reflectance(radiance, esun, d, cos, out)
    assert_same(out, radiance_to_toa_reflectance_reference(radiance, esun, d, cos))


# --------------------------------------------------------------------------------------------
# folding: one scale/offset (and per-pixel sun term) = the kernel chain
# --------------------------------------------------------------------------------------------


@PROPS
@given(
    gain=st.floats(1e-4, 0.02),
    bias=st.floats(-70, 0),
    esun=st.floats(80, 2000),
    d=st.floats(0.983, 1.017),
    elev=st.floats(5, 89),
    slope=st.floats(0.95, 1.05),
    intercept=st.floats(-0.005, 0.005),
    per_pixel=st.booleans(),
    dn=hnp.arrays(np.uint16, (1, 3, 4), elements=st.integers(1, 60000)),
)
def test_folded_radiance_to_harmonised_toa_equals_the_kernel_chain(
    gain, bias, esun, d, elev, slope, intercept, per_pixel, dn
):
    """DN → radiance → TOA reflectance → bandpass adjustment as one gather (scale, offset, and
    for a scene without a sun elevation the per-pixel factor) == the three kernels in a row,
    to float32 rounding of each step (the chain rounds three times, the fold once)."""
    constants = BandConstants(radiance=Linear(gain, bias, "test"), esun=(esun, "test"))
    sun = SunGeometry(None if per_pixel else (elev, "test"), (d, "test"))
    folded = harmonised(fold(constants, sun, "reflectance"), slope, intercept, "test")
    cos = math.sin(math.radians(elev))
    rows, cols = np.meshgrid(
        np.arange(3, dtype=np.int32), np.arange(4, dtype=np.int32), indexing="ij"
    )
    out = np.empty((1, 3, 4), np.float32)
    kw = {}
    if per_pixel:
        assert folded.sun_power == -1
        kw = {"factor": np.full((3, 4), 1 / cos), "post_offset": [folded.post_offset]}
    gather_calibrate(dn, rows, cols, [0], 0, True, [folded.scale], [folded.offset], out, **kw)
    radiance = np.empty_like(out)
    dn_to_radiance(dn, [gain], [bias], 0, True, radiance)
    refl = np.empty_like(out)
    radiance_to_toa_reflectance(radiance, [esun], d, cos, refl)
    harmonise_linear(refl, [slope], [intercept], refl)
    scale = max(1.0, float(np.nanmax(np.abs(refl))))
    np.testing.assert_allclose(out, refl, rtol=0, atol=4e-7 * scale + 2e-7 * abs(bias) / cos)


def test_radiance_target_inverts_toa_reflectance_with_esun():
    """Planet-like TOA reflectance rescaling (level toa): L = ρ·ESUN·sin(elev)/(π d²)."""
    c = BandConstants(reflectance=Linear(2e-5, 0.0, "x"), level="toa", esun=(1500.0, "x"))
    f = fold(c, SunGeometry((60.0, "x"), (1.0, "x")), "radiance")
    assert f.scale == pytest.approx(2e-5 * 1500 * math.sin(math.radians(60)) / math.pi, rel=1e-14)
    surface = BandConstants(reflectance=Linear(2.75e-5, -0.2, "x"), level="surface")
    with pytest.raises(Exception, match="surface reflectance"):
        fold(surface, SunGeometry(None, (1.0, "x")), "radiance")


# --------------------------------------------------------------------------------------------
# quality decoding and dilation
# --------------------------------------------------------------------------------------------

PRODUCTS = {"qa_pixel": qa.LANDSAT_C2_QA_PIXEL, "scl": qa.SCL, "udm": qa.PLANET_UDM}
QA_CASES = ["all_values", "empty", "all_nodata"]


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.uint16, np.int16, np.int32], ids=lambda d: np.dtype(d).name
)
@pytest.mark.parametrize("case", QA_CASES)
@pytest.mark.parametrize("product", PRODUCTS)
def test_decode_table(product, case, dtype):
    rules = PRODUCTS[product]
    top = min(np.iinfo(dtype).max, 65535) if product == "qa_pixel" else 255
    values = np.arange(0, top + 1, dtype=np.int64)
    if case == "empty":
        values = values[:0]
    if case == "all_nodata":
        values = np.full(17, 0 if product == "scl" else 1)
    arr = values.astype(dtype).reshape(-1, 1) if values.size else np.zeros((0, 3), dtype)
    got = qa.decode(arr, rules)
    want = decode_reference(arr, rules, qa.MASK_CLASSES)
    for cls in qa.MASK_CLASSES:
        np.testing.assert_array_equal(got[cls], want[cls], err_msg=cls)
    if case == "all_nodata":
        assert got["nodata"].all()


# Landsat 8-9 Collection 2 QA_PIXEL values from the USGS value-interpretation table (Landsat
# Collection 2 Quality Assessment Bands page; LSDS-1619 table 6-3), decoded by their bits:
# bit 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 shadow, 5 snow, 6 clear, 7 water, then the
# 2-bit confidences 8-9 cloud, 10-11 shadow, 12-13 snow, 14-15 cirrus (01 low, 10 mid, 11 high).
QA_PIXEL_TABLE = [
    # value, interpretation, classes set
    (1, "fill", {"nodata"}),
    (21824, "clear, land (low confidences)", set()),
    (21952, "clear, water", {"water"}),
    (21762, "dilated cloud over land", {"cloud"}),
    (22080, "mid-confidence cloud, clear bit", set()),
    (22280, "high-confidence cloud", {"cloud"}),
    (23888, "high-confidence cloud shadow", {"shadow"}),
    (30048, "high-confidence snow/ice", {"snow"}),
    (54596, "high-confidence cirrus", {"cirrus"}),
    (55052, "high-confidence cirrus and cloud", {"cirrus", "cloud"}),
]


@pytest.mark.parametrize(
    ("value", "meaning", "classes"), QA_PIXEL_TABLE, ids=[f"{v}-{m}" for v, m, _ in QA_PIXEL_TABLE]
)
def test_qa_pixel_values_decode_per_the_landsat_c2_bit_table(value, meaning, classes):
    bits = {
        name: (value >> b) & 1
        for name, b in (
            ("fill", 0),
            ("dilated", 1),
            ("cirrus", 2),
            ("cloud", 3),
            ("shadow", 4),
            ("snow", 5),
            ("clear", 6),
            ("water", 7),
        )
    }
    # the table's own consistency: clear means neither cloud nor dilated cloud
    assert bits["clear"] == int(not (bits["cloud"] or bits["dilated"]) and not bits["fill"])
    masks = qa.decode_landsat_qa_pixel(np.array([value], np.uint16))
    assert {c for c, m in masks.items() if m[0]} == classes, meaning
    assert qa.lut_from_rules(qa.LANDSAT_C2_QA_PIXEL, qa.DEFAULT_MASK, 65536)[value] == bool(
        classes & set(qa.DEFAULT_MASK)
    )


def test_profiles_carry_the_same_quality_rules_as_the_kernel_tables():
    from pipeline.catalog.sensors.profiles import load_profiles

    profiles = load_profiles()
    assert set(profiles.get("sentinel-2-msi").quality[0].rules) == set(qa.SCL)
    assert set(profiles.get("landsat-8-9-oli").quality[0].rules) == set(qa.LANDSAT_C2_QA_PIXEL)
    udm = profiles.get("planetscope").quality[0].rules
    lut = qa.lut_from_rules(udm, qa.MASK_CLASSES, 256)
    np.testing.assert_array_equal(lut, qa.lut_from_rules(qa.PLANET_UDM, qa.MASK_CLASSES, 256))


def test_rules_from_stac_classification():
    """Earth Search / PC style: classes by name (and nodata: true), bit fields by name with
    'not_*' values skipped; unknown names mask nothing."""
    rules = qa.rules_from_classification(
        classes=[
            {"value": 0, "name": "no_data", "nodata": True},
            {"value": 4, "name": "vegetation"},
            {"value": 9, "name": "cloud_high_probability"},
            {"value": 99, "name": "x", "nodata": True},
        ],
        bitfields=[
            {
                "name": "cloud",
                "offset": 3,
                "length": 1,
                "classes": [{"value": 0, "name": "not_cloud"}, {"value": 1, "name": "cloud"}],
            },
            {"name": "cloud_confidence", "offset": 8, "length": 2},
            {"name": "snow", "offset": 5},
        ],
    )
    assert set(rules) == {
        ("nodata", 0, 0, (0,)),
        ("cloud", 0, 0, (9,)),
        ("nodata", 0, 0, (99,)),
        ("cloud", 3, 1, (1,)),
        ("snow", 5, 1, (1,)),
    }
    with pytest.raises(ValueError, match="class"):
        qa.lut_from_rules([("haze", 0, 0, (1,))], ["haze"], 4)
    with pytest.raises(ValueError, match="fit"):
        qa.lut_from_rules([("cloud", 0, 1, (2,))], ["cloud"], 4)


@pytest.mark.parametrize("shape", ["square", "disc"])
@pytest.mark.parametrize("case", ["normal", "empty", "all_true", "none", "edges", "n0", "large_n"])
def test_dilate_table(case, shape):
    rng = np.random.default_rng(seed("dilate", case, shape))
    mask = rng.random((9, 13)) < 0.08
    n = 2
    if case == "empty":
        mask = mask[:0]
    elif case == "all_true":
        mask[:] = True
    elif case == "none":
        mask[:] = False
    elif case == "edges":
        mask[:] = False
        mask[0, 0] = mask[-1, -1] = mask[4, 0] = True
    elif case == "n0":
        n = 0
    elif case == "large_n":
        n = 40
    got = dilate(mask, n, shape=shape)
    np.testing.assert_array_equal(got, dilate_reference(mask, n, shape))
    assert (got >= mask).all()


def test_dilate_known_values():
    mask = np.zeros((5, 5), bool)
    mask[2, 2] = True
    square = dilate(mask, 1)
    assert square.sum() == 9 and square[1:4, 1:4].all()
    disc = dilate(mask, 2, shape="disc")
    assert disc.sum() == 13 and not disc[0, 0] and disc[0, 2]  # dy² + dx² <= 4
    with pytest.raises(ValueError, match="n must"):
        dilate(mask, -1)


@PROPS
@given(
    mask=hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=12)),
    n=st.integers(0, 6),
    shape=st.sampled_from(["square", "disc"]),
)
def test_dilate_property(mask, n, shape):
    got = dilate(mask, n, shape=shape)
    np.testing.assert_array_equal(got, dilate_reference(mask, n, shape))


@PROPS
@given(
    values=hnp.arrays(np.uint16, st.integers(0, 50)),
    rules=st.lists(
        st.tuples(st.sampled_from(qa.MASK_CLASSES), st.integers(0, 15), st.integers(0, 3)).flatmap(
            lambda t: st.tuples(
                st.just(t[0]),
                st.just(t[1] if t[2] else 0),
                st.just(t[2]),
                st.lists(st.integers(0, (1 << t[2]) - 1 if t[2] else 65535), max_size=3).map(tuple),
            )
        ),
        max_size=5,
    ),
)
def test_decode_property(values, rules):
    got = qa.decode(values, rules)
    want = decode_reference(values, rules, qa.MASK_CLASSES)
    for cls in qa.MASK_CLASSES:
        np.testing.assert_array_equal(got[cls], want[cls])


def test_normalisation_accepts_exactly_the_dtypes_the_gather_kernel_calibrates():
    from pipeline.catalog.items.bands import SUPPORTED_DTYPES
    from pipeline.kernels.calibrate import SOURCE_DTYPES

    assert {d.name for d in SOURCE_DTYPES} == SUPPORTED_DTYPES
