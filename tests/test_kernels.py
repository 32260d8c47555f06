"""Kernels vs. their NumPy references: table-driven cases, hand-computed values, properties."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.kernels.calibrate import gather_calibrate, gather_mask
from pipeline.kernels.median import (
    _NETWORK_MAX_T,
    _median_network,
    _network_wires,
    composite_latest,
    composite_median,
    composite_median_kernel,
    keep_valid,
    merge_first_valid,
)
from pipeline.kernels.qa import lut_from_bitfields, lut_from_classes
from tests.references.kernels import (
    composite_latest_reference,
    composite_median_reference,
    gather_calibrate_reference,
    gather_mask_reference,
    merge_first_valid_reference,
)

NAN = np.float32(np.nan)
SRC_DTYPES = [np.uint8, np.uint16, np.int16, np.float32]
NODATA = {np.uint8: 0, np.uint16: 0, np.int16: -9999, np.float32: -9999.0}
PROPS = settings(max_examples=50, deadline=None)  # deadline off: first call compiles


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    """Exact equality (NaN == NaN) including the sign of zeros; dtype and shape too."""
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected, strict=True)
    if actual.dtype.kind == "f":
        both = ~(np.isnan(actual) | np.isnan(expected))
        np.testing.assert_array_equal(np.signbit(actual) & both, np.signbit(expected) & both)


def seed(*parts: str) -> int:
    """Stable per-case seed (str hash() is salted per process)."""
    return zlib.crc32("/".join(parts).encode())


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint32)


def random_dn(rng: np.random.Generator, dtype, shape) -> np.ndarray:
    if dtype == np.float32:
        return rng.uniform(-0.5, 1.5, shape).astype(np.float32)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)


def index_maps(rng, ny, nx, h, w, out_of_range=False):
    rows = rng.integers(0, h, (ny, nx)).astype(np.int32)
    cols = rng.integers(0, w, (ny, nx)).astype(np.int32)
    if out_of_range:  # negatives and >= H / >= W, each alone and together
        rows[0, :] = -1
        cols[1, :] = w
        rows[2, 0], cols[2, 0] = h, -3
        rows[2, 1] = h + 100
        cols[3, ::2] = np.iinfo(np.int32).min
    return rows, cols


# --------------------------------------------------------------------------------------------
# gather_calibrate
# --------------------------------------------------------------------------------------------

CAL_CASES = [
    "normal",
    "nodata",
    "nodata_not_flagged",
    "all_nodata",
    "out_of_range",
    "single_pixel",
    "nan_one_band",
    "sparse_band_out",
]


def calibrate_case(case: str, dtype, rng):
    b, h, w, ny, nx = 3, 7, 5, 6, 9
    nodata = NODATA[dtype]
    has_nodata = True
    n_out = b
    band_out = np.arange(b)
    if case == "single_pixel":
        h = w = ny = nx = 1
    src = random_dn(rng, dtype, (b, h, w))
    rows, cols = index_maps(rng, ny, nx, h, w, out_of_range=case == "out_of_range")
    if case in ("nodata", "nodata_not_flagged"):
        src[rng.random(src.shape) < 0.3] = nodata
        src[1, 0, :] = nodata
        rows[0, :] = 0  # make sure some nodata pixels are gathered
        has_nodata = case == "nodata"
    elif case == "all_nodata":
        src[:] = nodata
    elif case == "nan_one_band":
        src[1, rng.random((h, w)) < 0.5] = np.nan
        has_nodata = False
    elif case == "sparse_band_out":
        n_out = 5
        band_out = np.array([3, 0, 4])
    scale = np.array([2.75e-5, 1e-4, 0.5])
    offset = np.array([-0.2, 0.0, -1.0])
    return src, rows, cols, band_out, nodata, has_nodata, scale, offset, (n_out, ny, nx)


@pytest.mark.parametrize(
    ("case", "dtype"),
    [
        pytest.param(c, d, id=f"{c}-{np.dtype(d).name}")
        for c in CAL_CASES
        for d in SRC_DTYPES
        if c != "nan_one_band" or d == np.float32  # NaN DN only exists for float sources
    ],
)
def test_gather_calibrate_table(case, dtype):
    rng = np.random.default_rng(seed(case, np.dtype(dtype).name))
    args = calibrate_case(case, dtype, rng)
    *kargs, out_shape = args
    expected = gather_calibrate_reference(*args)
    out = np.full(out_shape, np.nan, dtype=np.float32)
    gather_calibrate(*kargs, out)
    assert_same(out, expected)
    if case == "all_nodata":
        assert np.isnan(out).all()
    if case == "nodata_not_flagged":
        assert np.isfinite(out).all()  # nodata DN calibrated like any DN when has_nodata=False
    if case == "out_of_range":
        assert np.isnan(out[:, 0, :]).all() and np.isnan(out[:, 1, :]).all()
        assert np.isnan(out[:, 3, ::2]).all()


def test_gather_calibrate_writes_its_bands_whole_and_leaves_the_others():
    """Every pixel of the bands in band_out is written (NaN where nodata or outside the window:
    branch-free stores); bands not in band_out keep their prior value."""
    src = np.array([[[5, 0], [7, 9]]], dtype=np.uint16)
    rows = np.array([[0, 0, 1, -1]], dtype=np.int32)
    cols = np.array([[0, 1, 1, 0]], dtype=np.int32)
    out = np.full((2, 1, 4), 42.0, dtype=np.float32)
    gather_calibrate(src, rows, cols, np.array([1]), 0, True, [2.0], [1.0], out)
    np.testing.assert_array_equal(out[0], 42.0)
    np.testing.assert_array_equal(out[1], [[11.0, np.nan, 19.0, np.nan]])


def test_gather_calibrate_readonly_broadcast_inputs():
    """Index maps from np.broadcast_to (read-only, zero strides) and a read-only float64 source
    (e.g. a GDAL-warped window on the output grid) are accepted."""
    rows = np.broadcast_to(np.arange(3, dtype=np.int32)[:, None], (3, 4))
    cols = np.broadcast_to(np.arange(4, dtype=np.int32)[None, :], (3, 4))
    src = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    src[1, 2, 3] = np.nan
    src.flags.writeable = False
    out = np.full((2, 3, 4), np.nan, dtype=np.float32)
    gather_calibrate(src, rows, cols, np.array([1, 0]), np.nan, False, [1.0, 2.0], [0.0, 0.5], out)
    expected = gather_calibrate_reference(
        src, rows, cols, [1, 0], np.nan, False, [1.0, 2.0], [0.0, 0.5], out.shape
    )
    assert_same(out, expected)
    np.testing.assert_array_equal(out[1], src[0].astype(np.float32))
    qa = np.broadcast_to(np.uint8(3), (3, 4))
    masked = np.zeros((3, 4), dtype=np.bool_)
    gather_mask(qa, rows, cols, lut_from_classes([3], 256), masked)
    assert masked.all()


def test_gather_calibrate_known_value():
    # Landsat C2 L2 surface reflectance: 12345 * 2.75e-5 - 0.2 = 0.3394875 - 0.2 = 0.1394875
    src = np.full((1, 1, 1), 12345, dtype=np.uint16)
    idx = np.zeros((1, 1), dtype=np.int32)
    out = np.full((1, 1, 1), np.nan, dtype=np.float32)
    gather_calibrate(src, idx, idx, np.array([0]), 0, True, [2.75e-5], [-0.2], out)
    assert out.dtype == np.float32
    assert out[0, 0, 0] == np.float32(12345 * 2.75e-5 - 0.2) == np.float32(0.1394875)
    # nodata DN stays NaN; float NaN DN stays NaN even without a nodata value
    out = np.full((1, 1, 1), np.nan, dtype=np.float32)
    gather_calibrate(np.zeros_like(src), idx, idx, [0], 0, True, [1.0], [0.0], out)
    assert np.isnan(out[0, 0, 0])
    nan_src = np.full((1, 1, 1), np.nan, dtype=np.float32)
    gather_calibrate(nan_src, idx, idx, [0], None, False, [1.0], [0.0], out)
    assert np.isnan(out[0, 0, 0])


def test_gather_calibrate_rejects_bad_arguments():
    src = np.zeros((2, 3, 3), np.uint16)
    idx = np.zeros((2, 2), np.int32)
    out = np.full((2, 2, 2), np.nan, np.float32)
    ok = {
        "src": src, "rows": idx, "cols": idx, "band_out": np.array([0, 1]), "nodata": 0,
        "has_nodata": True, "scale": [1.0, 1.0], "offset": [0.0, 0.0], "out": out,
    }  # fmt: skip

    def call(**kw):
        gather_calibrate(**{**ok, **kw})

    call()
    for kw, word in [
        ({"src": src.astype(np.complex64)}, "src dtype"),
        ({"src": src.astype(bool)}, "src dtype"),
        ({"src": src[0]}, "src"),
        ({"rows": idx.astype(np.int64)}, "rows"),
        ({"cols": np.zeros((2, 3), np.int32)}, "cols"),
        ({"out": out.astype(np.float64)}, "out"),
        ({"out": np.zeros((2, 3, 2), np.float32)}, "out"),
        ({"band_out": np.array([0, 2])}, "band_out"),
        ({"band_out": np.array([1, 1])}, "band_out"),
        ({"band_out": np.array([0.0, 1.0])}, "band_out"),
        ({"scale": [1.0]}, "scale"),
        ({"offset": [0.0, 0.0, 0.0]}, "offset"),
        ({"nodata": None}, "nodata"),
    ]:
        with pytest.raises(ValueError, match=word):
            call(**kw)


# --------------------------------------------------------------------------------------------
# gather_mask and the LUT builders
# --------------------------------------------------------------------------------------------

MASK_CASES = ["normal", "all_masked", "none_masked", "out_of_range", "beyond_lut", "or_into"]
QA_DTYPES = [np.uint8, np.uint16, np.int16]


@pytest.mark.parametrize("dtype", QA_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", MASK_CASES)
def test_gather_mask_table(case, dtype):
    rng = np.random.default_rng(seed(case, np.dtype(dtype).name))
    h, w, ny, nx = 6, 8, 5, 7
    size = 256 if dtype == np.uint8 else 65536
    qa = random_dn(rng, dtype, (h, w))
    lut = rng.random(size) < 0.5
    rows, cols = index_maps(rng, ny, nx, h, w, out_of_range=case == "out_of_range")
    prior = np.zeros((ny, nx), dtype=np.bool_)
    if case == "all_masked":
        lut[:] = True
    elif case == "none_masked":
        lut[:] = False
    elif case == "beyond_lut":
        lut = lut[:100]  # values >= 100 (and negative int16 values) count as masked
    elif case == "or_into":
        prior = rng.random((ny, nx)) < 0.5
    expected = gather_mask_reference(qa, rows, cols, lut) | prior
    out = prior.copy()
    gather_mask(qa, rows, cols, lut, out)
    assert_same(out, expected)
    if case == "all_masked":
        assert out.all()
    if case == "none_masked" and dtype != np.int16:  # int16 negatives lie outside the LUT
        assert not out.any()
    if case == "out_of_range":
        assert out[0].all() and out[1].all() and out[3, ::2].all()


def test_gather_mask_known_values():
    qa = np.array([[0, 1], [2, 300]], dtype=np.uint16)
    lut = lut_from_classes([1], 256)
    rows = np.array([[0, 0, 1, 1, 5]], dtype=np.int32)
    cols = np.array([[0, 1, 0, 1, 0]], dtype=np.int32)
    out = np.zeros((1, 5), dtype=np.bool_)
    gather_mask(qa, rows, cols, lut, out)
    # 0 clear, 1 masked class, 2 clear, 300 beyond the LUT, row 5 outside the window
    np.testing.assert_array_equal(out, [[False, True, False, True, True]])


def test_gather_mask_rejects_bad_arguments():
    qa = np.zeros((2, 2), np.uint8)
    idx = np.zeros((2, 2), np.int32)
    lut = np.zeros(256, bool)
    out = np.zeros((2, 2), bool)
    with pytest.raises(ValueError, match="qa"):
        gather_mask(qa.astype(np.float32), idx, idx, lut, out)
    with pytest.raises(ValueError, match="lut"):
        gather_mask(qa, idx, idx, lut.astype(np.uint8), out)
    with pytest.raises(ValueError, match="out_masked"):
        gather_mask(qa, idx, idx, lut, out.astype(np.uint8))
    with pytest.raises(ValueError, match="rows"):
        gather_mask(qa, idx[0], idx, lut, out)


def test_lut_from_classes():
    lut = lut_from_classes([3, 8, 9, 10], 12)  # e.g. Sentinel-2 SCL shadow, clouds
    assert lut.dtype == np.bool_ and lut.shape == (12,)
    assert np.flatnonzero(lut).tolist() == [3, 8, 9, 10]
    assert not lut_from_classes([], 4).any()
    with pytest.raises(ValueError, match="values"):
        lut_from_classes([12], 12)


def test_lut_from_bitfields_landsat_qa_pixel():
    """Landsat Collection 2 QA_PIXEL: bit 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud,
    4 cloud shadow, 5 snow, 6 clear, 7 water, 8-9 cloud confidence, 10-11 cloud shadow
    confidence, 12-13 snow/ice confidence, 14-15 cirrus confidence (01 low, 11 high)."""
    lut = lut_from_bitfields([(0, 1, [1]), (3, 1, [1]), (4, 1, [1])], 65536)
    assert lut.dtype == np.bool_ and lut.shape == (65536,)
    low_confidences = (0b01 << 8) | (0b01 << 10) | (0b01 << 12) | (0b01 << 14)  # = 21760
    clear_land = (1 << 6) | low_confidences
    assert clear_land == 21824  # 0x5540: clear bit + low cloud/shadow/snow/cirrus confidence
    high_cloud = (1 << 3) | (0b11 << 8) | (0b01 << 10) | (0b01 << 12) | (0b01 << 14)
    assert high_cloud == 22280  # 0x5708: cloud bit + high cloud confidence
    clear_water = (1 << 6) | (1 << 7) | low_confidences
    assert clear_water == 21952  # 0x55C0: clear + water bits + low confidences
    assert not lut[21824]
    assert lut[22280]
    assert lut[1]  # fill
    assert not lut[21952]
    assert lut[1 << 4]  # cloud shadow alone
    assert not lut[(1 << 1) | (1 << 2) | (1 << 5)]  # dilated cloud, cirrus, snow: not selected
    # vectorised builder == the definition, for every value
    v = np.arange(65536)
    expected = ((v & 1) == 1) | (((v >> 3) & 1) == 1) | (((v >> 4) & 1) == 1)
    np.testing.assert_array_equal(lut, expected)
    # multi-bit field: cloud confidence (bits 8-9) medium or high
    conf = lut_from_bitfields([(8, 2, [2, 3])], 65536)
    np.testing.assert_array_equal(conf, ((v >> 8) & 3) >= 2)
    with pytest.raises(ValueError, match="fields"):
        lut_from_bitfields([(0, 1, [2])], 16)


# --------------------------------------------------------------------------------------------
# merge_first_valid
# --------------------------------------------------------------------------------------------

MERGE_CASES = ["normal", "all_masked", "nan_one_band", "single_scene", "one_band", "inf"]


def merge_case(case: str, rng):
    nb, ny, nx, n = 3, 6, 7, 4
    if case == "single_scene":
        n = 1
    if case == "one_band":
        nb = 1
    scenes = []
    for _ in range(n):
        scene = rng.random((nb, ny, nx)).astype(np.float32)
        scene[:, rng.random((ny, nx)) < 0.3] = np.nan  # whole-pixel no data
        masked = rng.random((ny, nx)) < 0.3
        if case == "all_masked":
            masked[:] = True
        if case == "nan_one_band":
            scene[nb - 1, rng.random((ny, nx)) < 0.4] = np.nan
        if case == "inf":
            scene[0, rng.random((ny, nx)) < 0.3] = np.inf
        scenes.append((scene, masked))
    return scenes, (nb, ny, nx)


@pytest.mark.parametrize("case", MERGE_CASES)
def test_merge_first_valid_table(case):
    rng = np.random.default_rng(seed(case))
    scenes, shape = merge_case(case, rng)
    slot = np.full(shape, np.nan, dtype=np.float32)
    for i, (scene, masked) in enumerate(scenes):
        before = merge_first_valid_reference(scenes[:i], shape)
        after = merge_first_valid_reference(scenes[: i + 1], shape)
        n = merge_first_valid(scene, masked, slot)
        assert isinstance(n, int)
        assert n == int((np.isnan(before[0]) & ~np.isnan(after[0])).sum())
        assert_same(slot, after)
    if case == "all_masked":
        assert np.isnan(slot).all()


# (band, y, x) float32 scenes with NaN, infinities and signed zeros
SCENES = hnp.arrays(np.float32, hnp.array_shapes(min_dims=3, max_dims=3, max_side=9),
                    elements=st.floats(width=32, allow_nan=True, allow_infinity=True))


@PROPS
@given(
    first=SCENES,
    data=st.data(),
)
def test_merge_first_valid_property(first, data):
    """Two scenes merged into an empty slot, against the NumPy reference, bit for bit."""
    second = data.draw(hnp.arrays(np.float32, first.shape,
                                  elements=st.floats(width=32, allow_nan=True)))
    masks = [data.draw(hnp.arrays(np.bool_, first.shape[1:])) for _ in range(2)]
    scenes = list(zip((first, second), masks, strict=True))
    slot = np.full(first.shape, np.nan, np.float32)
    for i, (scene, masked) in enumerate(scenes):
        before = merge_first_valid_reference(scenes[:i], first.shape)
        after = merge_first_valid_reference(scenes[: i + 1], first.shape)
        n = merge_first_valid(scene, masked, slot)
        assert n == int((np.isnan(before[0]) & ~np.isnan(after[0])).sum())
        np.testing.assert_array_equal(bits(slot), bits(after))


def test_merge_first_valid_known_values():
    slot = np.full((2, 1, 3), np.nan, dtype=np.float32)
    a = np.array([[[1, np.nan, 3]], [[4, 5, 6]]], dtype=np.float32)
    b = np.array([[[7, 8, 9]], [[10, 11, 12]]], dtype=np.float32)
    assert merge_first_valid(a, np.array([[False, False, True]]), slot) == 1
    assert merge_first_valid(b, np.zeros((1, 3), bool), slot) == 2  # pixel 0 already filled
    np.testing.assert_array_equal(slot, [[[1, 8, 9]], [[4, 11, 12]]])
    with pytest.raises(ValueError, match="slot"):
        merge_first_valid(a, np.zeros((1, 3), bool), slot[:1])
    with pytest.raises(ValueError, match="masked"):
        merge_first_valid(a, np.zeros((3, 1), bool), slot)


# keep_valid: a slot's first scene gathered straight into the all-NaN plane


@pytest.mark.parametrize("case", MERGE_CASES)
def test_keep_valid_leaves_what_merging_into_an_empty_slot_leaves(case):
    rng = np.random.default_rng(seed("keep", case))
    (scene, masked), *_ = merge_case(case, rng)[0]
    scene[..., 1, 2] = -0.0  # signed zeros and NaN payloads are kept bit for bit
    scene[0, 2, 3] = np.frombuffer(np.uint32(0x7FC00123).tobytes(), np.float32)[0]
    expected = merge_first_valid_reference([(scene, masked)], scene.shape)
    values = scene.copy()
    n = keep_valid(values, masked)
    assert n == int((~np.isnan(expected[0])).sum())
    np.testing.assert_array_equal(bits(values), bits(expected))


@PROPS
@given(
    values=SCENES,
    data=st.data(),
)
def test_keep_valid_property(values, data):
    masked = data.draw(hnp.arrays(np.bool_, values.shape[1:]))
    slot = np.full(values.shape, np.nan, np.float32)
    n_merge = merge_first_valid(values, masked, slot)
    kept = values.copy()
    assert keep_valid(kept, masked) == n_merge
    np.testing.assert_array_equal(bits(kept), bits(slot))


def test_keep_valid_known_values_and_errors():
    a = np.array([[[1, np.nan, 3, 4]], [[5, 6, np.inf, 8]]], dtype=np.float32)
    assert keep_valid(a, np.array([[False, False, False, True]])) == 1
    np.testing.assert_array_equal(a, [[[1, np.nan, np.nan, np.nan]], [[5, np.nan, np.nan, np.nan]]])
    with pytest.raises(ValueError, match="masked"):
        keep_valid(a, np.zeros((4, 1), bool))
    with pytest.raises(ValueError, match="values"):
        keep_valid(a.astype(np.float64), np.zeros((1, 4), bool))


# --------------------------------------------------------------------------------------------
# composite_median / composite_latest
# --------------------------------------------------------------------------------------------

STACK_CASES = [
    "normal",
    "all_invalid",
    "t1",
    "single_observation",
    "nan_one_band",
    "even_counts",
    "odd_counts",
    "long_t",  # T > 32: a larger sorting network (and quickselect in the mosaic kernels)
    "ties_and_signed_zeros",
    "long_t_ties_and_signed_zeros",
    "inf",
    "non_contiguous",
]


def stack_case(case: str, rng) -> np.ndarray:
    nt, nb, ny, nx = 6, 3, 5, 7
    if case == "t1":
        nt = 1
    if case.startswith("long_t"):
        nt = 80
    stack = rng.uniform(-0.1, 1.0, (nt, nb, ny, nx)).astype(np.float32)
    holes = rng.random((nt, ny, nx)) < 0.3
    stack[:, 0][holes] = np.nan
    if case == "all_invalid":
        stack[:, 1] = np.nan
    elif case == "single_observation":
        stack[:] = np.nan
        t = rng.integers(0, nt, (ny, nx))
        yy, xx = np.mgrid[:ny, :nx]
        stack[t, :, yy, xx] = rng.random((ny, nx, nb)).astype(np.float32)
    elif case == "nan_one_band":
        stack[:, nb - 1][rng.random((nt, ny, nx)) < 0.4] = np.nan
    elif case in ("even_counts", "odd_counts"):
        stack = np.where(np.isnan(stack), np.float32(0.5), stack)
        k = 4 if case == "even_counts" else 3  # valid observations per pixel
        for y in range(ny):
            for x in range(nx):
                stack[rng.permutation(nt)[k:], 0, y, x] = np.nan
    elif case in ("ties_and_signed_zeros", "long_t_ties_and_signed_zeros"):
        choices = np.array([0.0, -0.0, 0.25, 0.25, 1.0, np.nan], dtype=np.float32)
        stack = choices[rng.integers(0, len(choices), stack.shape)]
    elif case == "inf":
        stack[:, 2][rng.random((nt, ny, nx)) < 0.3] = np.inf
        stack[:, 1][rng.random((nt, ny, nx)) < 0.1] = -np.inf
    elif case == "non_contiguous":
        stack = np.swapaxes(rng.random((nx, nb, ny, nt)).astype(np.float32), 0, 3)[::-1]
        stack[1, 0, 0, :] = np.nan
    return stack


@pytest.mark.parametrize("case", STACK_CASES)
def test_composite_median_table(case):
    rng = np.random.default_rng(seed(case))
    stack = stack_case(case, rng)
    out, count = composite_median(stack)
    ref_out, ref_count = composite_median_reference(stack)
    assert out.dtype == np.float32 and count.dtype == np.uint16
    # exact; the sign of a zero median is not compared because np.nanmedian's partition
    # leaves the order of -0.0/+0.0 unspecified (the kernel's is checked below instead)
    np.testing.assert_array_equal(out, ref_out, strict=True)
    np.testing.assert_array_equal(count, ref_count, strict=True)
    assert_same(out, composite_median(stack[rng.permutation(stack.shape[0])])[0])
    assert np.array_equal(bits(out), bits(composite_median(stack[::-1])[0]))
    if case == "all_invalid":
        assert np.isnan(out).all() and (count == 0).all()
    if case == "even_counts":
        assert (count == 4).all()
    if case == "odd_counts":
        assert (count == 3).all()


@pytest.mark.parametrize("case", STACK_CASES)
def test_composite_latest_table(case):
    rng = np.random.default_rng(seed(case))
    stack = stack_case(case, rng)
    out, source, count = composite_latest(stack)
    ref = composite_latest_reference(stack)
    assert (out.dtype, source.dtype, count.dtype) == (np.float32, np.int32, np.uint16)
    for got, want in zip((out, source, count), ref, strict=True):
        assert_same(got, want)
    if case == "all_invalid":
        assert (source == -1).all() and (count == 0).all()


def test_composite_known_values():
    # median of [0.1, NaN, 0.3, 0.2] over time = 0.2 (3 valid, odd count)
    stack = np.array([0.1, np.nan, 0.3, 0.2], dtype=np.float32).reshape(4, 1, 1, 1)
    out, count = composite_median(stack)
    assert out[0, 0, 0] == np.float32(0.2) and count[0, 0] == 3
    # even count: mean of the two middle values, in float64, then float32
    stack = np.array([0.4, np.nan, 0.1, 0.3, 0.2], dtype=np.float32).reshape(5, 1, 1, 1)
    out, count = composite_median(stack)
    expected = np.float32((np.float64(np.float32(0.2)) + np.float64(np.float32(0.3))) / 2)
    assert out[0, 0, 0] == expected and count[0, 0] == 4
    # latest: (time, band=2, y=1, x=2); t=3 has a NaN band, so pixel 0's latest valid is t=2
    stack = np.array(
        [
            [[[1, 10]], [[2, 20]]],
            [[[3, 30]], [[4, np.nan]]],
            [[[5, 50]], [[6, np.nan]]],
            [[[7, np.nan]], [[np.nan, np.nan]]],
        ],
        dtype=np.float32,
    )
    out, source, count = composite_latest(stack)
    np.testing.assert_array_equal(out, [[[5, 10]], [[6, 20]]])
    np.testing.assert_array_equal(source, [[2, 0]])
    np.testing.assert_array_equal(count, [[3, 1]])
    # even count: the float64 mean does not overflow where a float32 sum would
    stack = np.array([3e38, 3.2e38], dtype=np.float32).reshape(2, 1, 1, 1)
    assert composite_median(stack)[0][0, 0, 0] == np.float32((3e38 + np.float64(3.2e38)) / 2)
    # signed zeros: total order -0.0 < +0.0, whatever the input order
    for values, want in [
        ((0.0, -0.0, 1.0), 0.0),
        ((0.0, -0.0, -1.0), -0.0),
        ((0.0, -0.0, -0.0), -0.0),
        ((-0.0, 0.0, 0.0), 0.0),
        ((0.0, -0.0), 0.0),
        ((-0.0, -0.0), -0.0),
        ((-1.0, -0.0, 0.0, 0.0), 0.0),
        ((-1.0, -0.0, -0.0, 0.0), -0.0),
    ]:
        for perm in itertools.permutations(values):
            out, _ = composite_median(np.array(perm, np.float32).reshape(-1, 1, 1, 1))
            assert bits(out)[0, 0, 0] == bits(np.array([want], np.float32))[0], perm
    with pytest.raises(ValueError, match="stack"):
        composite_median(np.zeros((2, 1, 1, 1), np.float64))
    with pytest.raises(ValueError, match="stack"):
        composite_latest(np.zeros((1, 1, 1), np.float32))


@pytest.mark.parametrize("nt", [2, 3, 5, 8, 11, 16, 24, 31, 32, 64, 100])
def test_median_network_orders_middle_ranks(nt):
    """The pruned network puts ranks 0..nt // 2 (all medians of 1..nt values) in place: every
    0/1 input for nt <= 16 (0-1 principle), random small-integer inputs with ties above."""
    lo, hi = _median_network(nt)
    assert (lo < hi).all() and (hi < nt).all() and (lo >= 0).all()
    if nt <= 16:
        x = (np.arange(2**nt)[None, :] >> np.arange(nt)[:, None]) & 1
    else:
        x = np.random.default_rng(nt).integers(0, 6, (nt, 5000))
    want = np.sort(x, axis=0)
    for a, b in zip(lo, hi, strict=True):
        x[a], x[b] = np.minimum(x[a], x[b]), np.maximum(x[a], x[b])
    np.testing.assert_array_equal(x[: nt // 2 + 1], want[: nt // 2 + 1])


@pytest.mark.parametrize(
    ("nt", "nx"),
    [(1, 1027), (2, 1027), (3, 5), (4, 1027), (7, 5), (8, 1027), (9, 5), (16, 1027), (17, 5),
     (24, 1027), (32, 5), (33, 1027), (64, 1027), (65, 5), (100, 7), (_NETWORK_MAX_T, 5),
     (_NETWORK_MAX_T + 1, 5)],
)
def test_median_network_and_fallback_paths(nt, nx):
    """Sorting network (T <= _NETWORK_MAX_T, powers of two and one past them) and the per-pixel
    fallback (T > _NETWORK_MAX_T): exactly the reference, and bit-identical, signed zeros
    included, under permutations of the time axis. The network's tiles: rows wider than a
    tile (1027 px: pieces of a row, the last one partial) and several short rows per tile."""
    rng = np.random.default_rng(seed("network", str(nt)))
    shape = (nt, 2, 2, nx)
    stack = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    special = np.array([0.0, -0.0, 0.25, -0.25, np.nan, np.inf, -np.inf], dtype=np.float32)
    pick = rng.random(shape) < 0.4
    stack[pick] = special[rng.integers(0, len(special), pick.sum())]
    stack[:, :, 1, : nx // 2] = np.where(rng.random((nt, 2, nx // 2)) < 0.5, -0.0, 0.0)
    stack[:, 0, 1, nx // 2] = np.nan  # a pixel with no valid observation
    out, count = composite_median(stack)
    ref_out, ref_count = composite_median_reference(stack)
    np.testing.assert_array_equal(out, ref_out, strict=True)
    np.testing.assert_array_equal(count, ref_count, strict=True)
    assert count[1, nx // 2] == 0 and np.isnan(out[:, 1, nx // 2]).all()
    # the sign of zero medians: sorted under the total order -0.0 < +0.0
    valid = np.isfinite(stack).all(axis=1)[:, None]
    key = np.where(np.signbit(stack), -1.0, 1.0) * (np.abs(stack.astype(np.float64)) + 1.0)
    ranked = np.take_along_axis(stack, np.argsort(np.where(valid, key, np.inf), axis=0), axis=0)
    n = count.astype(np.int64)[None, None]
    lo = np.take_along_axis(ranked, np.maximum(n - 1, 0) // 2, axis=0)[0].astype(np.float64)
    hi = np.take_along_axis(ranked, np.minimum(n // 2, nt - 1), axis=0)[0].astype(np.float64)
    want = np.where(n[0] > 0, ((lo + hi) / 2).astype(np.float32), np.float32(np.nan))
    assert_same(out, want)
    for perm in (rng.permutation(nt), np.arange(nt)[::-1]):
        out_p, count_p = composite_median(stack[perm])
        assert np.array_equal(bits(out_p), bits(out))
        np.testing.assert_array_equal(count_p, count)


@pytest.mark.parametrize("shape", [(3, 2, 5, 0), (3, 1, 0, 0), (3, 2, 0, 4), (0, 2, 3, 3)])
def test_median_of_an_empty_grid_or_time_axis(shape):
    """An empty x or y axis gives empty outputs (as before the whole-row tiles, whose tile
    width would otherwise divide by zero); an empty time axis gives NaN and count 0."""
    stack = np.zeros(shape, np.float32)
    out, count = composite_median(stack)
    assert out.shape == shape[1:] and count.shape == shape[2:]
    assert np.isnan(out).all() and (count == 0).all()
    kernel_out = np.full(shape[1:], np.nan, np.float32)
    kernel_count = np.zeros(shape[2:], np.uint16)
    composite_median_kernel(stack, kernel_out, kernel_count)
    assert np.isnan(kernel_out).all() and (kernel_count == 0).all()


def test_median_of_a_strided_stack_is_read_in_place():
    """A cropped, strided or time-reversed view: the contiguous copy's result, bit for bit,
    and composite_median reads it without copying it (tracemalloc: far below its size)."""
    import tracemalloc

    rng = np.random.default_rng(seed("strided"))
    base = rng.uniform(-1, 1, (12, 3, 40, 90)).astype(np.float32)
    base[rng.random(base.shape) < 0.2] = np.nan
    for view in (base[..., 1:-1], base[:, :, ::2, ::3], base[::-1, ::-1], base[..., 5:6]):
        want_out, want_count = composite_median(np.ascontiguousarray(view))
        out, count = composite_median(view)
        assert np.array_equal(bits(out), bits(want_out)) and np.array_equal(count, want_count)
        kernel_out = np.full(view.shape[1:], np.nan, np.float32)
        kernel_count = np.zeros(view.shape[2:], np.uint16)
        composite_median_kernel(view, kernel_out, kernel_count)
        assert np.array_equal(bits(kernel_out), bits(want_out))
    big = np.full((24, 4, 256, 258), np.nan, np.float32)[..., 1:-1]  # 24 MiB, not contiguous
    composite_median(big[..., :8])  # compiled for this layout outside the measurement
    tracemalloc.start()
    composite_median(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < big.nbytes / 4, peak


@pytest.mark.parametrize(("nt", "nx"), [(36, 300), (36, 1100), (70, 40), (150, 1030)])
def test_median_network_slots_left_out_of_tiles(nt, nx):
    """Scenes that cover part of the grid: each slot holds data in a rectangle of its own, so a
    tile leaves out the slots with nothing there and is sorted by a smaller network (above 64
    slots, by the next size on the ladder, padded with invalid keys: _network_wires). The
    result is the reference's, and the networks used are the sizes expected."""
    rng = np.random.default_rng(seed("footprints", str(nt), str(nx)))
    ny = 9
    stack = np.full((nt, 3, ny, nx), np.nan, np.float32)
    for t in range(nt):
        y0, x0 = rng.integers(0, ny), rng.integers(0, nx)
        y1, x1 = rng.integers(y0 + 1, ny + 1), rng.integers(x0 + 1, nx + 1)
        stack[t, :, y0:y1, x0:x1] = rng.uniform(-1, 1, (3, y1 - y0, x1 - x0))
        holes = rng.random((ny, nx)) < 0.2  # cloud: one band NaN makes the observation invalid
        stack[t, rng.integers(0, 3), holes] = np.nan
    out, count = composite_median(stack)
    ref_out, ref_count = composite_median_reference(stack)
    np.testing.assert_array_equal(out, ref_out, strict=True)
    np.testing.assert_array_equal(count, ref_count, strict=True)
    wires = _network_wires(nt)
    assert wires[0] == 0 and (np.diff(wires) >= 0).all() and wires[nt] == nt
    assert (wires >= np.arange(nt + 1)).all() and (wires[:65] == np.arange(min(nt, 64) + 1)).all()
    assert (wires[65:] <= np.arange(65, nt + 1) * 9 // 8).all()  # at most 1/8 more wires


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------

_special32 = st.sampled_from([np.nan, 0.0, -0.0, 0.5, 1.0, -1.0, np.inf])
_floats32 = st.one_of(_special32, st.floats(width=32, allow_nan=True, allow_infinity=True))
_finite_f32 = st.floats(-1e6, 1e6, width=32)


@st.composite
def stacks(draw, max_t=7):
    shape = (
        draw(st.integers(0, max_t)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 4)),
        draw(st.integers(1, 4)),
    )
    return draw(hnp.arrays(np.float32, shape, elements=_floats32))


@PROPS
@given(stack=stacks(), data=st.data())
def test_median_property(stack, data):
    out, count = composite_median(stack)
    ref_out, ref_count = composite_median_reference(stack)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(count, ref_count)
    perm = data.draw(st.permutations(range(stack.shape[0])))
    out_p, count_p = composite_median(stack[list(perm)])
    assert np.array_equal(bits(out_p), bits(out))  # bit-identical, signed zeros included
    np.testing.assert_array_equal(count_p, count)


@PROPS
@given(data=st.data())
def test_median_footprints_property(data):
    """Slots holding data in a rectangle each (whole tiles without a slot), rows longer and
    shorter than a tile: the reference's result, bit-identical under a permutation of time."""
    nt = data.draw(st.integers(1, 80))
    ny, nx = data.draw(st.integers(1, 5)), data.draw(st.sampled_from([1, 3, 64, 700, 1030]))
    stack = np.full((nt, 2, ny, nx), np.nan, np.float32)
    values = st.one_of(_special32, _finite_f32)
    for t in range(nt):
        y0 = data.draw(st.integers(0, ny - 1))
        x0 = data.draw(st.integers(0, nx - 1))
        y1 = data.draw(st.integers(y0 + 1, ny))
        x1 = data.draw(st.integers(x0 + 1, nx))
        stack[t, :, y0:y1, x0:x1] = data.draw(values)
    out, count = composite_median(stack)
    ref_out, ref_count = composite_median_reference(stack)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(count, ref_count)
    perm = data.draw(st.permutations(range(nt)))
    assert np.array_equal(bits(composite_median(stack[list(perm)])[0]), bits(out))


@PROPS
@given(data=st.data())
def test_median_quickselect_property(data):
    """More than 32 valid observations (quickselect in the per-pixel kernels), many ties."""
    shape = (data.draw(st.integers(33, 90)), data.draw(st.integers(1, 2)), 1, 2)
    few = st.sampled_from([np.nan, 0.0, -0.0, 0.25, 0.5, -1.0])
    stack = data.draw(hnp.arrays(np.float32, shape, elements=st.one_of(few, _floats32)))
    out, count = composite_median(stack)
    ref_out, ref_count = composite_median_reference(stack)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(count, ref_count)
    perm = data.draw(st.permutations(range(shape[0])))
    assert np.array_equal(bits(composite_median(stack[list(perm)])[0]), bits(out))


@PROPS
@given(stack=stacks())
def test_latest_property(stack):
    out, source, count = composite_latest(stack)
    for got, want in zip((out, source, count), composite_latest_reference(stack), strict=True):
        assert_same(got, want)
    valid = np.isfinite(stack).all(axis=1)
    np.testing.assert_array_equal(count, valid.sum(axis=0))
    for y, x in np.ndindex(source.shape):
        t = source[y, x]
        if t == -1:
            assert not valid[:, y, x].any() and np.isnan(out[:, y, x]).all()
        else:
            assert valid[t, y, x] and not valid[t + 1 :, y, x].any()
            assert np.array_equal(bits(out[:, y, x]), bits(stack[t, :, y, x]))


@PROPS
@given(data=st.data())
def test_merge_property(data):
    shape = (
        data.draw(st.integers(1, 3)),
        data.draw(st.integers(1, 4)),
        data.draw(st.integers(1, 4)),
    )
    n = data.draw(st.integers(1, 4))
    scenes = [
        (
            data.draw(hnp.arrays(np.float32, shape, elements=_floats32)),
            data.draw(hnp.arrays(np.bool_, shape[1:])),
        )
        for _ in range(n)
    ]
    slot = np.full(shape, np.nan, dtype=np.float32)
    total = sum(merge_first_valid(s, m, slot) for s, m in scenes)
    assert_same(slot, merge_first_valid_reference(scenes, shape))
    assert total == int((~np.isnan(slot[0])).sum())


@PROPS
@given(data=st.data())
def test_gather_calibrate_property(data):
    dtype = data.draw(st.sampled_from(SRC_DTYPES))
    b, h, w = (data.draw(st.integers(1, 3)) for _ in range(3))
    ny, nx = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    elements = _floats32 if dtype == np.float32 else None
    src = data.draw(hnp.arrays(dtype, (b, h, w), elements=elements))
    rows = data.draw(hnp.arrays(np.int32, (ny, nx), elements=st.integers(-2, h + 1)))
    cols = data.draw(hnp.arrays(np.int32, (ny, nx), elements=st.integers(-2, w + 1)))
    n_out = b + data.draw(st.integers(0, 2))
    band_out = np.array(data.draw(st.permutations(range(n_out)))[:b])
    has_nodata = data.draw(st.booleans())
    nodata = float(src.flat[0]) if data.draw(st.booleans()) else -9999.0
    scale = np.array(data.draw(st.lists(_finite_f32, min_size=b, max_size=b)), np.float64)
    offset = np.array(data.draw(st.lists(_finite_f32, min_size=b, max_size=b)), np.float64)
    if dtype == np.float32:  # keep DN * scale within float32 so the cast does not overflow
        src = np.where(np.abs(src) > 1e6, np.float32(np.inf), src)
        scale = np.clip(scale, -1.0, 1.0)
    out = np.full((n_out, ny, nx), np.nan, dtype=np.float32)
    gather_calibrate(src, rows, cols, band_out, nodata, has_nodata, scale, offset, out)
    ref = gather_calibrate_reference(
        src, rows, cols, band_out, nodata, has_nodata, scale, offset, out.shape
    )
    assert_same(out, ref)


@PROPS
@given(data=st.data())
def test_gather_mask_property(data):
    dtype = data.draw(st.sampled_from(QA_DTYPES))
    h, w = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    ny, nx = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    qa = data.draw(hnp.arrays(dtype, (h, w)))
    rows = data.draw(hnp.arrays(np.int32, (ny, nx), elements=st.integers(-2, h + 1)))
    cols = data.draw(hnp.arrays(np.int32, (ny, nx), elements=st.integers(-2, w + 1)))
    size = data.draw(st.sampled_from([1, 2, 256, 300, 65536]))
    lut = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).random(size) < 0.5
    prior = data.draw(hnp.arrays(np.bool_, (ny, nx)))
    out = prior.copy()
    gather_mask(qa, rows, cols, lut, out)
    assert_same(out, gather_mask_reference(qa, rows, cols, lut) | prior)
    assert (out >= prior).all()  # never clears a flag
