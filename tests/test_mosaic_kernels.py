"""Compositing methods (pipeline.kernels.reduce, .scored, .order, .blend) vs. their NumPy
references: table-driven cases, hand-computed values, properties, memory bounds.

Every comparison with a reference is exact (bit for bit, signs of zeros included), except the
sign of a zero percentile, which NumPy leaves to its partition order (the kernel's is pinned to
the -0.0 < +0.0 rank and checked for order independence instead). Exactness is possible
because each kernel specifies its arithmetic (e.g. the mean is a float64 sum in time order,
divided by the count, rounded once to float32) and the reference performs the same operations
vectorised.
"""

from __future__ import annotations

import dataclasses
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pipeline.kernels.median as composite_mod
import pipeline.kernels.order as order_mod
import pipeline.kernels.reduce as mosaic
import pipeline.kernels.scored as scored_mod
from pipeline.kernels.blend import blend_weights, cloud_distance, composite_blend, edge_distance
from pipeline.kernels.median import composite_latest, composite_median
from pipeline.kernels.order import composite_medoid, composite_percentile
from pipeline.kernels.reduce import (
    STACK_METHODS,
    STREAMING_METHODS,
    composite_earliest,
    composite_max,
    composite_mean,
    composite_min,
    composite_priority,
)
from pipeline.kernels.scored import (
    BestPixelWeights,
    composite_best_pixel,
    composite_quality,
    ndvi,
)
from tests.references.mosaic import (
    blend_weights_reference,
    cloud_distance_reference,
    composite_best_pixel_reference,
    composite_blend_reference,
    composite_earliest_reference,
    composite_max_reference,
    composite_mean_reference,
    composite_medoid_reference,
    composite_min_reference,
    composite_percentile_reference,
    composite_priority_reference,
    composite_quality_reference,
    edge_distance_reference,
    ndvi_reference,
)

NAN = np.float32(np.nan)
PROPS = settings(max_examples=30, deadline=None)  # deadline off: first call may compile


def seed(*parts: str) -> int:
    return zlib.crc32("/".join(parts).encode())


def bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(np.uint32) if a.dtype == np.float32 else a


def assert_same(actual: np.ndarray, expected: np.ndarray, zero_sign: bool = True) -> None:
    """Exact equality (NaN == NaN), dtype and shape; the sign of zeros too unless told not."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    np.testing.assert_array_equal(actual, expected, strict=True)
    if zero_sign and actual.dtype.kind == "f":
        both = ~(np.isnan(actual) | np.isnan(expected))
        np.testing.assert_array_equal(np.signbit(actual) & both, np.signbit(expected) & both)


def assert_bitwise(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(bits(a), bits(b))


# --------------------------------------------------------------------------------------------
# cases: a stack plus every method's per-observation metadata
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    stack: np.ndarray
    rank: np.ndarray  # priority
    cd: np.ndarray  # best-pixel cloud distance (T, y, x)
    weights: BestPixelWeights
    sun: np.ndarray
    view: np.ndarray
    days: np.ndarray
    prank: np.ndarray
    key: np.ndarray  # quality (T, y, x)
    q: float = 30.0
    time: np.ndarray | None = None

    def permuted(self, p: np.ndarray) -> Case:
        """Observations reordered by p, with their metadata and acquisition times."""
        nt = self.stack.shape[0]
        time = np.arange(nt) if self.time is None else self.time
        return dataclasses.replace(
            self,
            stack=self.stack[p],
            rank=self.rank[p],
            cd=self.cd[p],
            sun=self.sun[p],
            view=self.view[p],
            days=self.days[p],
            prank=self.prank[p],
            key=self.key[p],
            time=np.asarray(time)[p],
        )


def metadata(rng, stack, ties=False) -> dict:
    nt, _, ny, nx = stack.shape
    if ties:
        cd = np.array([0.0, 3.0, np.inf], np.float32)[rng.integers(0, 3, (nt, ny, nx))]
        key = np.array([0.0, -0.0, 0.5, np.nan], np.float32)[rng.integers(0, 4, (nt, ny, nx))]
        return dict(
            rank=rng.integers(0, 2, nt).astype(np.int32),
            cd=cd,
            sun=np.full(nt, 45.0),
            view=np.full(nt, 5.0),
            days=np.tile([-3.0, 3.0], nt)[:nt],  # |days| equal: equal time terms
            prank=np.zeros(nt, np.int32),
            key=key,
        )
    cd = rng.choice(np.array([0, 1, 1.5, 10, 49.5, 50, 60, np.inf, np.nan], np.float32),
                    (nt, ny, nx))
    cd = np.where(rng.random(cd.shape) < 0.5, rng.uniform(0, 80, cd.shape), cd)
    key = rng.uniform(-1, 1, (nt, ny, nx)).astype(np.float32)
    key[rng.random(key.shape) < 0.15] = np.nan
    return dict(
        rank=rng.integers(0, 3, nt).astype(np.int32),
        cd=cd.astype(np.float32),
        sun=rng.uniform(10, 70, nt),
        view=rng.uniform(0, 30, nt),
        days=rng.integers(-60, 60, nt).astype(np.float64),
        prank=rng.integers(0, 3, nt).astype(np.int32),
        key=key,
    )


CASES = [
    "normal",
    "nan_one_band",
    "all_masked",
    "single_observation",
    "t1",
    "ties",
    "t0",
    "long_t",  # > 32 valid values: the quickselect path of percentile/medoid
    "non_contiguous",
]


def make_case(name: str) -> Case:
    rng = np.random.default_rng(seed(name))
    nt, nb, ny, nx = 6, 3, 5, 7
    nt = {"t1": 1, "t0": 0, "long_t": 45}.get(name, nt)
    stack = rng.uniform(-0.1, 1.0, (nt, nb, ny, nx)).astype(np.float32)
    holes = rng.random((nt, ny, nx)) < (0.05 if name == "long_t" else 0.3)
    stack[:, 0][holes] = np.nan
    if name == "nan_one_band":  # invalid observations whose other bands are finite
        stack[:, nb - 1][rng.random((nt, ny, nx)) < 0.4] = np.nan
    elif name == "all_masked":
        stack[:, 1] = np.nan
    elif name == "single_observation":
        stack[:] = np.nan
        t = rng.integers(0, nt, (ny, nx))
        yy, xx = np.mgrid[:ny, :nx]
        stack[t, :, yy, xx] = rng.random((ny, nx, nb)).astype(np.float32)
    elif name == "ties":
        choices = np.array([0.0, -0.0, 0.25, 0.25, 1.0, np.nan], dtype=np.float32)
        stack = choices[rng.integers(0, len(choices), stack.shape)]
    elif name == "non_contiguous":
        stack = np.swapaxes(rng.random((nx, nb, ny, nt)).astype(np.float32), 0, 3)[::-1]
        stack[1, 0, 0, :] = np.nan
    meta = metadata(rng, stack, ties=name == "ties")
    return Case(stack=stack, weights=BestPixelWeights(), **meta)


@dataclass(frozen=True)
class Method:
    name: str
    run: Callable[[Case], tuple]
    ref: Callable[[Case], tuple]
    has_source: bool
    zero_sign: bool = True  # the reference defines the sign of zero results


METHODS = [
    Method("earliest", lambda c: composite_earliest(c.stack),
           lambda c: composite_earliest_reference(c.stack), True),
    Method("priority", lambda c: composite_priority(c.stack, c.rank, time=c.time),
           lambda c: composite_priority_reference(c.stack, c.rank, c.time), True),
    Method("mean", lambda c: composite_mean(c.stack),
           lambda c: composite_mean_reference(c.stack), False),
    Method("min", lambda c: composite_min(c.stack),
           lambda c: composite_min_reference(c.stack), False),
    Method("max", lambda c: composite_max(c.stack),
           lambda c: composite_max_reference(c.stack), False),
    Method("percentile", lambda c: composite_percentile(c.stack, c.q),
           lambda c: composite_percentile_reference(c.stack, c.q), False, zero_sign=False),
    Method("best_pixel",
           lambda c: composite_best_pixel(c.stack, c.cd, c.weights, c.sun, c.view, c.days,
                                          c.prank, time=c.time),
           lambda c: composite_best_pixel_reference(c.stack, c.cd, c.weights, c.sun, c.view,
                                                    c.days, c.prank, c.time), True),
    Method("quality", lambda c: composite_quality(c.stack, c.key, time=c.time),
           lambda c: composite_quality_reference(c.stack, c.key, c.time), True),
    Method("medoid", lambda c: composite_medoid(c.stack, time=c.time),
           lambda c: composite_medoid_reference(c.stack, c.time), True),
]
BY_NAME = {m.name: m for m in METHODS}
# results do not depend on the stack order at all (no time tie-break)
ORDER_FREE = {"mean", "min", "max", "percentile"}
# tie-break by time: permute with the times
TIME_ORDERED = {"priority", "best_pixel", "quality", "medoid"}


def check_against_reference(m: Method, c: Case) -> tuple:
    got = m.run(c)
    want = m.ref(c)
    assert len(got) == len(want)
    assert got[0].dtype == np.float32 and got[0].shape == c.stack.shape[1:]
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_same(g, w, zero_sign=m.zero_sign or i > 0)
    return got


def check_permuted(m: Method, c: Case, p: np.ndarray, got: tuple | None = None) -> None:
    """Results on the observations permuted by p (with metadata and times) are identical;
    source maps through p."""
    got = m.run(c) if got is None else got
    c_time = c if c.time is not None or m.name not in TIME_ORDERED else dataclasses.replace(
        c, time=np.arange(c.stack.shape[0]))
    perm = m.run(c_time.permuted(p))
    for i, (a, b) in enumerate(zip(got, perm, strict=True)):
        if m.has_source and i == 1:
            mapped = np.where(b >= 0, p[np.maximum(b, 0)] if len(p) else -1, -1)
            np.testing.assert_array_equal(mapped, a)
        else:
            assert_bitwise(a, b)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", [m.name for m in METHODS])
def test_table(method, case):
    m = BY_NAME[method]
    c = make_case(case)
    got = check_against_reference(m, c)
    out, count = got[0], got[-2 if method == "best_pixel" else -1]
    assert count.dtype == np.uint16
    if m.has_source:
        source = got[1]
        assert source.dtype == np.int32
        assert ((source >= 0) == (count > 0)).all()
        assert (np.isnan(out).all(axis=0) == (source < 0)).all()
    if case in ("all_masked", "t0"):
        assert np.isnan(out).all() and (count == 0).all()
        if m.has_source:
            assert (got[1] == -1).all()
    if case == "single_observation" and method != "quality":
        assert (count == 1).all()
        assert_same(out, composite_latest(c.stack)[0])  # the only valid one, whatever method
    if method in ORDER_FREE or method in TIME_ORDERED:
        nt = c.stack.shape[0]
        p = np.random.default_rng(seed(method, case, "perm")).permutation(nt)
        check_permuted(m, c, p, got)  # time=None behaves as time = t
        check_permuted(m, c, p[::-1].copy())


@pytest.mark.parametrize("method", sorted(TIME_ORDERED))
def test_time_argument(method):
    """time=None means time = t; explicit times decide ties; equal times fall back to t."""
    m = BY_NAME[method]
    c = make_case("ties")
    nt = c.stack.shape[0]
    default = m.run(c)
    for time in (np.arange(nt), np.arange(nt) * 86400.0 - 5,
                 np.datetime64("2024-01-01") + np.arange(nt).astype("timedelta64[D]"),
                 np.zeros(nt, np.int64)):  # all equal: stack index decides
        for a, b in zip(default, m.run(dataclasses.replace(c, time=time)), strict=True):
            assert_bitwise(a, b)
    # reversed times: ties now go to the lowest t; still exactly the reference
    rev = dataclasses.replace(c, time=-np.arange(nt))
    got = check_against_reference(m, rev)
    assert (got[1] != default[1]).any()  # the case has ties that the times decide


# --------------------------------------------------------------------------------------------
# hand-computed values
# --------------------------------------------------------------------------------------------


def column(*values) -> np.ndarray:
    """(T, 1, 1, 1) float32 stack of one band, one pixel."""
    return np.array(values, dtype=np.float32).reshape(-1, 1, 1, 1)


def test_known_values_selection():
    # (time=4, band=2, y=1, x=2); t=3 has a NaN band at pixel 0, pixel 1 valid at t=0 only
    stack = np.array(
        [
            [[[1, 10]], [[2, 20]]],
            [[[3, 30]], [[4, np.nan]]],
            [[[5, 50]], [[6, np.nan]]],
            [[[7, np.nan]], [[np.nan, np.nan]]],
        ],
        dtype=np.float32,
    )
    out, source, count = composite_earliest(stack)
    np.testing.assert_array_equal(out, [[[1, 10]], [[2, 20]]])
    np.testing.assert_array_equal(source, [[0, 0]])
    np.testing.assert_array_equal(count, [[3, 1]])
    # priority: ranks 2, 0, 0, 1 -> pixel 0: t=1 and t=2 tie at rank 0 -> latest, t=2
    out, source, _ = composite_priority(stack, np.array([2, 0, 0, 1]))
    np.testing.assert_array_equal(source, [[2, 0]])
    np.testing.assert_array_equal(out, [[[5, 10]], [[6, 20]]])
    # ... unless t=1 was acquired later
    _, source, _ = composite_priority(stack, np.array([2, 0, 0, 1]), time=[0, 9, 5, 10])
    np.testing.assert_array_equal(source, [[1, 0]])
    # quality on band 0 as the key: pixel 0 -> 5 (t=2; t=3's 7 is not a valid observation)
    out, source, count = composite_quality(stack, np.ascontiguousarray(stack[:, 0]))
    np.testing.assert_array_equal(source, [[2, 0]])
    np.testing.assert_array_equal(count, [[3, 1]])
    # NaN key = invalid observation
    key = np.ascontiguousarray(stack[:, 0]).copy()
    key[2, 0, 0] = np.nan
    _, source, count = composite_quality(stack, key)
    np.testing.assert_array_equal(source, [[1, 0]])
    np.testing.assert_array_equal(count, [[2, 1]])


def test_known_values_statistics():
    stack = column(0.1, np.nan, 0.3, 0.2)
    out, count = composite_mean(stack)
    f = [np.float64(np.float32(v)) for v in (0.1, 0.3, 0.2)]
    assert out[0, 0, 0] == np.float32((f[0] + f[1] + f[2]) / 3) and count[0, 0] == 3
    assert composite_min(stack)[0][0, 0, 0] == np.float32(0.1)
    assert composite_max(stack)[0][0, 0, 0] == np.float32(0.3)
    # float64 accumulation: no overflow where a float32 sum would
    out, _ = composite_mean(column(3e38, 3.2e38))
    assert out[0, 0, 0] == np.float32((np.float64(np.float32(3e38)) + np.float32(3.2e38)) / 2)
    # signed zeros: min prefers -0.0, max +0.0, whatever the order
    for values in ((0.0, -0.0), (-0.0, 0.0)):
        assert np.signbit(composite_min(column(*values))[0][0, 0, 0])
        assert not np.signbit(composite_max(column(*values))[0][0, 0, 0])
    assert np.signbit(composite_mean(column(-0.0, -0.0))[0][0, 0, 0])
    # percentiles of 1, 2, 3, 4 (NaNs ignored): linear interpolation at (n-1) * q / 100
    stack = column(4, np.nan, 1, 3, 2)
    for q, want in [(0, 1.0), (25, 1.75), (50, 2.5), (62.5, 2.875), (100, 4.0), (99.9, 3.997)]:
        out, count = composite_percentile(stack, q)
        h = 3 * q / 100
        assert out[0, 0, 0] == np.float32(np.percentile([1.0, 2, 3, 4], q)), q
        assert abs(out[0, 0, 0] - want) < 1e-6 and count[0, 0] == 4, (q, h)
    assert composite_percentile(column(7), 37)[0][0, 0, 0] == 7
    # NumPy interpolates from the upper neighbour when g >= 0.5 (b - (b - a) * (1 - g)); here
    # that differs from a + (b - a) * g even after rounding to float32
    values = (-3.243009624247003e29, -5.0, -0.24204246699810028)
    out, _ = composite_percentile(column(*values), 90)
    assert out[0, 0, 0] == np.float32(np.percentile(np.float32(values).astype(float), 90))
    a, b, g = np.float64(np.float32(values[1])), np.float64(np.float32(values[2])), 0.8
    assert out[0, 0, 0] == np.float32(b - (b - a) * (1 - g)) != np.float32(a + (b - a) * g)


def test_known_values_best_pixel():
    # one pixel, two bands; t=0: far from clouds, low sun; t=1: next to a cloud, high sun
    stack = np.array([[[[0.1]], [[0.2]]], [[[0.3]], [[0.4]]]], dtype=np.float32)
    cd = np.array([[[np.inf]], [[5.0]]], dtype=np.float32)
    w = BestPixelWeights(cloud=1, sun=0.5, view=0, time=0, provider=0, cloud_distance_max=50)
    sun, view, days, prank = [20.0, 80.0], [0.0, 0.0], [0.0, 0.0], [0, 0]
    out, source, count, score = composite_best_pixel(stack, cd, w, sun, view, days, prank)
    s0 = 1.0 + 0.5 * 20 / 90  # 1.1111
    s1 = 5 / 50 + 0.5 * 80 / 90  # 0.5444
    assert s0 > s1 and source[0, 0] == 0 and count[0, 0] == 2
    assert score[0, 0] == pytest.approx(s0, rel=1e-6)
    np.testing.assert_array_equal(out[:, 0, 0], np.float32([0.1, 0.2]))
    # the defaults: time and provider terms; the same cloud/sun/view, t=1 at the target date
    w = BestPixelWeights()
    cd = np.array([[[60.0]], [[60.0]]], dtype=np.float32)
    out, source, _, score = composite_best_pixel(
        stack, cd, None, [30.0, 30.0], [10.0, 10.0], [-45.0, 0.0], [1, 1])
    common = w.cloud + w.sun * 30 / 90 + w.view * (1 - 10 / 30) + w.provider * 0.5
    assert source[0, 0] == 1 and score[0, 0] == pytest.approx(common + w.time, rel=1e-6)
    # full tie -> latest t; NaN cloud distance counts as 0 (as if on a cloud)
    cd = np.array([[[np.nan]], [[0.0]]], dtype=np.float32)
    _, source, _, score = composite_best_pixel(stack, cd, w, [30, 30], [0, 0], [0, 0], [0, 0])
    assert source[0, 0] == 1
    _, source, _, _ = composite_best_pixel(stack, cd, w, [30, 30], [0, 0], [0, 0], [0, 0],
                                           time=[1, 0])
    assert source[0, 0] == 0


def test_known_values_medoid_and_ndvi():
    # spectra (0, 0), (1, 1), (10, 10), (NaN, 5): per-band medians (1, 1) -> t=1
    stack = np.array([[0, 0], [1, 1], [10, 10], [np.nan, 5]], dtype=np.float32)
    stack = stack.reshape(4, 2, 1, 1)
    out, source, count = composite_medoid(stack)
    assert source[0, 0] == 1 and count[0, 0] == 3
    np.testing.assert_array_equal(out[:, 0, 0], [1, 1])
    # even count: medians (0.5, 0.5); (0, 0) and (1, 1) tie -> latest, unless times say no
    out, source, _ = composite_medoid(stack[:2])
    assert source[0, 0] == 1
    assert composite_medoid(stack[:2], time=[5, 1])[1][0, 0] == 0
    # the medoid is a real observation, not a per-band mix: (0, 3), (3, 0), (1, 1)
    stack = np.array([[0, 3], [3, 0], [1, 1]], dtype=np.float32).reshape(3, 2, 1, 1)
    out, source, _ = composite_medoid(stack)  # medians (1, 1)
    assert source[0, 0] == 2
    # ndvi
    stack = np.array([[0.1, 0.5], [0.2, 0.2], [np.nan, 0.3], [0.0, 0.0], [-0.2, 0.2]],
                     dtype=np.float32).reshape(5, 2, 1, 1)
    v = ndvi(stack, red_band=0, nir_band=1)[:, 0, 0]
    assert v[0] == np.float32((0.5 - np.float64(np.float32(0.1)))
                              / (0.5 + np.float64(np.float32(0.1))))
    assert v[1] == 0 and np.isnan(v[2:]).all()


def test_known_values_distances():
    masked = np.zeros((2, 5, 6), dtype=bool)
    masked[0, 2, 1] = True
    d = cloud_distance(masked)
    yy, xx = np.mgrid[:5, :6]
    np.testing.assert_array_equal(
        d[0], np.sqrt(((yy - 2) ** 2 + (xx - 1) ** 2).astype(np.float64)).astype(np.float32))
    assert np.isposinf(d[1]).all()
    # edge distance: the array border is not an edge
    valid = np.ones((1, 4, 9), dtype=bool)
    assert np.isposinf(edge_distance(valid)).all()
    valid[0, :, 4] = False  # a vertical line of invalid pixels
    np.testing.assert_array_equal(edge_distance(valid)[0], np.broadcast_to(
        np.abs(np.arange(9) - 4).astype(np.float32), (4, 9)))
    np.testing.assert_array_equal(
        blend_weights(valid, 3)[0, 0], np.float32([1, 1, 2 / 3, 1 / 3, 0, 1 / 3, 2 / 3, 1, 1]))


def test_known_values_blend():
    # 1 band, 1 x 4 pixels; scene A (t=0) valid everywhere, scene B (t=1) valid on x >= 2
    stack = np.array([[[[1, 1, 1, 1]]], [[[np.nan, np.nan, 3, 3]]]], dtype=np.float32)
    weights = np.array([[[1, 1, 1, 1]], [[0, 0, 0.5, 1]]], dtype=np.float32)
    base = np.array([[0, 0, 1, 1]], dtype=np.int32)  # latest
    out, wm = composite_blend(stack, base, weights)
    # x=2: B has weight 0.5 -> (1 * 1 + 0.5 * 3) / 1.5, main weight 0.5 / 1.5
    np.testing.assert_array_equal(out[0, 0], np.float32([1, 1, 2.5 / 1.5, 3]))
    np.testing.assert_array_equal(wm[0], np.float32([1, 1, 0.5 / 1.5, 1]))
    base[0, 0] = -1
    out, wm = composite_blend(stack, base, weights)
    assert np.isnan(out[0, 0, 0]) and np.isnan(wm[0, 0])


# --------------------------------------------------------------------------------------------
# argument checks and method sets
# --------------------------------------------------------------------------------------------


def test_method_sets():
    assert not STREAMING_METHODS & STACK_METHODS
    assert {m.name for m in METHODS} | {"latest", "median"} == STREAMING_METHODS | STACK_METHODS
    for name in STREAMING_METHODS | STACK_METHODS:
        assert any(
            hasattr(m, f"composite_{name}")
            for m in (mosaic, scored_mod, order_mod, composite_mod)
        )


def test_rejects_bad_arguments():
    c = make_case("normal")
    s, nt = c.stack, c.stack.shape[0]
    bad = [
        ("stack", lambda: composite_earliest(s.astype(np.float64))),
        ("stack", lambda: composite_mean(s[0])),
        ("rank", lambda: composite_priority(s, c.rank[:-1])),
        ("rank", lambda: composite_priority(s, -c.rank - 1)),
        ("rank", lambda: composite_priority(s, c.rank.astype(float))),
        ("time", lambda: composite_priority(s, c.rank, time=np.arange(nt + 1))),
        ("time", lambda: composite_priority(s, c.rank, time=np.full(nt, np.nan))),
        ("q", lambda: composite_percentile(s, 101)),
        ("q", lambda: composite_percentile(s, np.nan)),
        ("q", lambda: composite_percentile(s, [50])),
        ("cloud_distance", lambda: composite_best_pixel(s, c.cd[:, :-1], None, c.sun, c.view,
                                                        c.days, c.prank)),
        ("cloud_distance", lambda: composite_best_pixel(s, c.cd.astype(float), None, c.sun,
                                                        c.view, c.days, c.prank)),
        ("weights", lambda: composite_best_pixel(s, c.cd, {"cloud": 1}, c.sun, c.view,
                                                 c.days, c.prank)),
        ("sun_elevation", lambda: composite_best_pixel(s, c.cd, None, c.sun[:-1], c.view,
                                                       c.days, c.prank)),
        ("view_angle", lambda: composite_best_pixel(s, c.cd, None, c.sun, c.view + np.inf,
                                                    c.days, c.prank)),
        ("days_from_target", lambda: composite_best_pixel(s, c.cd, None, c.sun, c.view,
                                                          c.days.astype(str), c.prank)),
        ("provider_rank", lambda: composite_best_pixel(s, c.cd, None, c.sun, c.view, c.days,
                                                       c.prank - 5)),
        ("weights.cloud", lambda: BestPixelWeights(cloud=-1)),
        ("weights.time_scale", lambda: BestPixelWeights(time_scale=0)),
        ("weights.sun", lambda: BestPixelWeights(sun=np.nan)),
        ("key", lambda: composite_quality(s, c.key[:, :, :-1])),
        ("red_band", lambda: ndvi(s, 3, 1)),
        ("nir_band", lambda: ndvi(s, 0, 1.0)),
        ("masked", lambda: cloud_distance(c.cd)),
        ("valid", lambda: edge_distance(np.ones((2, 2), bool))),
        ("width", lambda: blend_weights(np.ones((1, 2, 2), bool), 0)),
        ("base_source", lambda: composite_blend(s, np.zeros((5, 6), np.int32),
                                                np.zeros((nt, 5, 7), np.float32))),
        ("base_source", lambda: composite_blend(s, np.full((5, 7), nt, np.int32),
                                                np.zeros((nt, 5, 7), np.float32))),
        ("weights", lambda: composite_blend(s, np.zeros((5, 7), np.int32),
                                            np.zeros((nt, 5, 7), np.float64))),
    ]
    for name, call in bad:
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            call()


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------

_special32 = st.sampled_from([np.nan, 0.0, -0.0, 0.5, 1.0, -1.0, np.inf, -np.inf])
_floats32 = st.one_of(_special32, st.floats(width=32, allow_nan=True, allow_infinity=True))
_grid32 = st.integers(-4096, 4096).map(lambda k: k / 1024)  # exact float64 sums
_cd32 = st.one_of(
    st.sampled_from([np.nan, np.inf, 0.0, -0.0, -1.0, 0.5, 49.0, 50.0, 51.0]),
    st.floats(0, 200, width=32),
)


@st.composite
def cases(draw, max_t=7, elements=_floats32, distinct_times=False, min_t=0):
    nt = draw(st.integers(min_t, max_t))
    shape = (nt, draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stack = draw(hnp.arrays(np.float32, shape, elements=elements))
    planes = (nt,) + shape[2:]
    few = st.integers(0, 3) if draw(st.booleans()) else st.integers(0, 2**31 - 1)
    real = st.floats(-1000, 1000)
    weights = BestPixelWeights(**{
        f.name: draw(st.floats(0.01, 100) if f.name in ("cloud_distance_max", "view_max",
                                                         "time_scale") else st.floats(0, 3))
        for f in dataclasses.fields(BestPixelWeights)
    })
    time = None
    if distinct_times:
        time = np.array(draw(st.lists(st.integers(-10**6, 10**6), min_size=nt, max_size=nt,
                                      unique=True)), dtype=np.int64)
    return Case(
        stack=stack,
        rank=np.array(draw(st.lists(few, min_size=nt, max_size=nt)), dtype=np.int64),
        cd=draw(hnp.arrays(np.float32, planes, elements=_cd32)),
        weights=weights,
        sun=np.array(draw(st.lists(real, min_size=nt, max_size=nt)), dtype=np.float64),
        view=np.array(draw(st.lists(real, min_size=nt, max_size=nt)), dtype=np.float64),
        days=np.array(draw(st.lists(real, min_size=nt, max_size=nt)), dtype=np.float64),
        prank=np.array(draw(st.lists(st.integers(0, 3), min_size=nt, max_size=nt)), np.int32),
        key=draw(hnp.arrays(np.float32, planes, elements=_floats32)),
        q=draw(st.one_of(st.sampled_from([0.0, 50.0, 100.0, 25]), st.floats(0, 100))),
        time=time,
    )


@pytest.mark.parametrize("method", [m.name for m in METHODS])
@PROPS
@given(c=cases())
def test_property_matches_reference(method, c):
    check_against_reference(BY_NAME[method], c)


@pytest.mark.parametrize("method", sorted(ORDER_FREE | TIME_ORDERED))
@PROPS
@given(data=st.data())
def test_property_order_independent(method, data):
    """Permuting the observations with their metadata and (distinct) times permutes source
    and nothing else, bit for bit (the mean on exact-sum values: see composite_mean)."""
    elements = _grid32 if method == "mean" else _floats32
    c = data.draw(cases(elements=elements, distinct_times=method in TIME_ORDERED))
    p = np.array(data.draw(st.permutations(range(c.stack.shape[0]))), dtype=np.int64)
    check_permuted(BY_NAME[method], c, p)


@pytest.mark.parametrize("method", ["percentile", "medoid"])
@PROPS
@given(data=st.data())
def test_property_many_values(method, data):
    """More than 32 valid observations (quickselect), with many ties and signed zeros."""
    few = st.sampled_from([np.nan, 0.0, -0.0, 0.25, 0.5, -1.0])
    c = data.draw(cases(min_t=33, max_t=70, elements=st.one_of(few, _floats32),
                        distinct_times=True))
    m = BY_NAME[method]
    check_against_reference(m, c)
    p = np.array(data.draw(st.permutations(range(c.stack.shape[0]))), dtype=np.int64)
    check_permuted(m, c, p)


@PROPS
@given(c=cases(), red=st.integers(0, 2), nir=st.integers(0, 2))
def test_property_ndvi(c, red, nir):
    nb = c.stack.shape[1]
    red, nir = red % nb, nir % nb
    assert_same(ndvi(c.stack, red, nir), ndvi_reference(c.stack, red, nir))


@st.composite
def masks(draw, max_side=14):
    shape = (draw(st.integers(0, 3)), draw(st.integers(1, max_side)),
             draw(st.integers(1, max_side)))
    density = draw(st.sampled_from([0.0, 0.02, 0.1, 0.5, 0.95, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.random(shape) < density


@settings(max_examples=50, deadline=None)
@given(m=masks())
def test_property_distances(m):
    assert_same(cloud_distance(m), cloud_distance_reference(m))
    assert_same(edge_distance(m), edge_distance_reference(m))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_property_blend(data):
    c = data.draw(cases(elements=st.one_of(_special32, st.floats(-2, 2, width=32))))
    stack = c.stack
    valid = np.isfinite(stack).all(axis=1)
    width = data.draw(st.sampled_from([0.5, 1.0, 2.0, 3.7]))
    weights = blend_weights(valid, width)
    assert_same(weights, blend_weights_reference(valid, width))
    picker = data.draw(st.sampled_from(["latest", "earliest", "best_pixel"]))
    base = {"latest": lambda: composite_latest(stack)[1],
            "earliest": lambda: composite_earliest(stack)[1],
            "best_pixel": lambda: BY_NAME["best_pixel"].run(c)[1]}[picker]()
    out, wm = composite_blend(stack, base, weights)
    want_out, want_wm = composite_blend_reference(stack, base, weights)
    assert_same(out, want_out)
    assert_same(wm, want_wm)
    assert (np.isnan(out).all(axis=0) == (base < 0)).all()  # footprint unchanged
    assert ((wm > 0) & (wm <= 1) | (base < 0)).all()
    # arbitrary weights: NaN, negative, > 1 are specified too
    arbitrary = data.draw(hnp.arrays(np.float32, valid.shape, elements=_floats32))
    for got, want in zip(composite_blend(stack, base, arbitrary),
                         composite_blend_reference(stack, base, arbitrary), strict=True):
        assert_same(got, want)


# --------------------------------------------------------------------------------------------
# seam blending over chunks with a halo
# --------------------------------------------------------------------------------------------


def blend_scene_stack(rng, nt=4, nb=2, size=64):
    """Scenes whose valid data are discs and half-planes (realistic seams) + random holes."""
    yy, xx = np.mgrid[:size, :size]
    stack = rng.uniform(0, 1, (nt, nb, size, size)).astype(np.float32) + np.arange(nt)[
        :, None, None, None].astype(np.float32)
    for t in range(nt):
        cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(size / 4, size)]
        footprint = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) | (xx + t * yy < size * 0.4)
        footprint &= rng.random((size, size)) > 0.01
        stack[t, :, ~footprint] = np.nan
    return stack


def blend_pipeline(stack, width):
    valid = np.isfinite(stack).all(axis=1)
    base = composite_latest(stack)[1]
    return composite_blend(stack, base, blend_weights(valid, width))


@pytest.mark.parametrize(("width", "halo"), [(4, 4), (4, 7), (2.5, 3), (6, 6)])
def test_blend_chunk_with_halo_equals_whole(width, halo):
    rng = np.random.default_rng(seed("halo", str(width), str(halo)))
    stack = blend_scene_stack(rng)
    whole_out, whole_wm = blend_pipeline(stack, width)
    assert ((whole_wm > 0) & (whole_wm < 1)).sum() > 50  # there are seams to feather
    size = stack.shape[-1]
    for y0, x0, n in [(0, 0, 16), (16, 16, 16), (8, 40, 24), (48, 48, 16), (20, 0, 16)]:
        ya, xa = max(y0 - halo, 0), max(x0 - halo, 0)
        yb, xb = min(y0 + n + halo, size), min(x0 + n + halo, size)
        out, wm = blend_pipeline(stack[:, :, ya:yb, xa:xb], width)
        core = (slice(y0 - ya, y0 - ya + n), slice(x0 - xa, x0 - xa + n))
        assert_same(out[(slice(None),) + core], whole_out[:, y0:y0 + n, x0:x0 + n])
        assert_same(wm[core], whole_wm[y0:y0 + n, x0:x0 + n])


def test_blend_chunk_without_enough_halo_differs():
    """Negative control: an invalid pixel just outside a too-small halo changes the core."""
    stack = np.ones((2, 1, 1, 12), dtype=np.float32)
    stack[1] = 3
    stack[0, 0, 0, 0] = np.nan
    stack[1, 0, 0, :3] = np.nan  # scene 1 (the latest: the base from x = 3) ends at x = 2
    whole_out, whole_wm = blend_pipeline(stack, 4)
    # chunk x in [5, 9): pixel 5 is 3 px from scene 1's edge (x = 2): weight 0.75
    assert whole_wm[0, 5] < 1
    out, wm = blend_pipeline(stack[:, :, :, 5 - 4:], 4)  # halo 4 >= width: same
    assert_same(wm[0, 4:8], whole_wm[0, 5:9])
    out, wm = blend_pipeline(stack[:, :, :, 5 - 2:], 4)  # halo 2 < width: edge not seen
    assert wm[0, 2] == 1 and whole_wm[0, 5] != 1


# --------------------------------------------------------------------------------------------
# memory: streaming methods O(B*Y*X); stack methods O(B*Y*X + tile)
# --------------------------------------------------------------------------------------------

MEM_SHAPE = (200, 4, 128, 128)


@pytest.fixture(scope="module")
def big_case():
    rng = np.random.default_rng(7)
    nt, nb, ny, nx = MEM_SHAPE
    stack = rng.random(MEM_SHAPE, dtype=np.float32)
    stack[:, 0][rng.random((nt, ny, nx)) < 0.2] = np.nan
    meta = metadata(rng, stack)
    return Case(stack=stack, weights=BestPixelWeights(), **meta)


MEM_METHODS = {
    **{m.name: m.run for m in METHODS},
    "median": lambda c: composite_median(c.stack),
    "latest": lambda c: composite_latest(c.stack),
}


@pytest.mark.parametrize("method", sorted(MEM_METHODS))
def test_memory_bound(method, big_case):
    """Peak memory allocated by one call (inputs excluded; numba's allocations are traced too)
    < 4 * B*Y*X*4 bytes (= four float32 (B, Y, X) planes; the outputs take ~1.6) + 256 KiB
    (row scratch; the stack methods' (64, B, T) float32 tile is 200 KiB here). A single
    (T, Y, X) float32 temporary would be 13 MiB: the bound does not grow with T."""
    run = MEM_METHODS[method]
    small = dataclasses.replace(big_case, stack=big_case.stack[:2, :, :4, :4].copy(),
                                cd=big_case.cd[:2, :4, :4].copy(),
                                key=big_case.key[:2, :4, :4].copy())
    for f in ("rank", "sun", "view", "days", "prank"):
        setattr(small, f, getattr(big_case, f)[:2])
    run(small)  # compiled (or loaded from the cache) before measuring
    nt, nb, ny, nx = MEM_SHAPE
    bound = 4 * nb * ny * nx * 4 + 256 * 1024
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = run(big_case)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < bound, (method, peak, bound)
    assert peak >= sum(r.nbytes for r in result)  # the measurement sees the outputs
    assert bound < nt * ny * nx * 4
