"""Overview levels: the 2 × 2 kernels against a NumPy reference (hypothesis), the level
arithmetic by hand, and the pyramid a chunk task writes against the full-resolution product."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.kernels.pyramid import first_valid2x2, max2x2, mean2x2, nearest2x2
from pipeline.products.overviews import (
    level_selection,
    level_shape,
    level_transform,
    levels_for,
    multiscales,
)


def _reference_mean(values: np.ndarray) -> np.ndarray:
    """Pad odd edges with NaN, then the float64 nanmean of each 2 × 2 block."""
    *lead, h, w = values.shape
    padded = np.full((*lead, h + h % 2, w + w % 2), np.nan)
    padded[..., :h, :w] = values
    blocks = padded.reshape(*lead, (h + h % 2) // 2, 2, (w + w % 2) // 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=(-3, -1)).astype(np.float32)


floats = st.one_of(st.floats(-1, 2, width=32), st.just(float("nan")), st.just(float("inf")))


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
              elements=floats))
def test_mean2x2_is_the_mean_of_each_blocks_finite_values(values):
    got = mean2x2(values)
    finite = np.where(np.isfinite(values), values, np.nan)
    want = _reference_mean(finite.astype(np.float64))
    assert got.shape == want.shape == (values.shape[0], -(-values.shape[1] // 2),
                                       -(-values.shape[2] // 2))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, equal_nan=True)


@given(arrays(np.int32, st.tuples(st.integers(1, 9), st.integers(1, 9)),
              elements=st.integers(-1, 50)))
def test_nearest2x2_keeps_the_top_left_value_of_each_block(values):
    got = nearest2x2(values)
    h, w = values.shape
    for i in range(-(-h // 2)):
        for j in range(-(-w // 2)):
            assert got[i, j] == values[2 * i, 2 * j]
    assert got.dtype == values.dtype


def test_levels_by_hand():
    assert levels_for((2000, 2000), 1024) == [1, 2, 3]  # 1000, 500, 250 px
    assert levels_for((400, 400), 128) == [1]  # 200 px: the next would be below 256 already
    assert levels_for((256, 256), 128) == []  # small enough as it is
    assert levels_for((5000, 5000), 48) == [1]  # level 2's chunks would be 12 px (< 16)
    assert levels_for((5000, 5000), 1000) == [1, 2, 3]  # 1000 = 8 × 125: no level 4
    assert level_shape((12, 2001, 999), 2) == (12, 501, 250)
    assert level_transform((10, 0, 500000, 0, -10, 5020000), 3) == [80, 0, 500000, 0, -80,
                                                                    5020000]
    sel = (slice(0, 1), slice(1024, 2000), slice(0, 1024))
    assert level_selection(sel, 1) == (slice(0, 1), slice(512, 1000), slice(0, 512))
    ms = multiscales((2000, 2000), (10, 0, 500000, 0, -10, 5020000), [1, 2, 3])
    assert ms["aquila:overviews"] == [2, 4, 8]
    layout = ms["multiscales"]["layout"]
    assert [e.get("derived_from") for e in layout] == [None, "overviews/1", "overviews/2"]
    assert [e["transform"]["scale"] for e in layout] == [[2.0, 2.0]] * 3
    assert layout[2]["proj:shape"] == [250, 250]


def test_kernels_refuse_a_vector():
    with pytest.raises(ValueError, match="2 dimensions"):
        mean2x2(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="2 dimensions"):
        nearest2x2(np.zeros(4, np.int32))


@given(arrays(np.int32, st.tuples(st.integers(1, 9), st.integers(1, 9)),
              elements=st.integers(-1, 5)))
def test_first_valid_and_max_by_hand(values):
    h, w = values.shape
    first, top = first_valid2x2(values), max2x2(values)
    for i in range(-(-h // 2)):
        for j in range(-(-w // 2)):
            block = [values[y, x] for y in (2 * i, 2 * i + 1) for x in (2 * j, 2 * j + 1)
                     if y < h and x < w]
            valid = [v for v in block if v != -1]
            assert first[i, j] == (valid[0] if valid else block[0])
            assert top[i, j] == max(block)


def test_first_valid_of_floats_skips_nan():
    values = np.array([[np.nan, 2.0], [3.0, 4.0]], np.float32)
    assert first_valid2x2(values)[0, 0] == 2.0
    assert np.isnan(first_valid2x2(np.full((2, 2), np.nan, np.float32))[0, 0])
