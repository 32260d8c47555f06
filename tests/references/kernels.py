"""Plain vectorised NumPy references for :mod:`pipeline.kernels.calibrate` and
:mod:`pipeline.kernels.median` (no numba).

Written from the kernels' specifications, not from their loops, so that a test comparing the two
checks the semantics. Axis order is (time, band, y, x); reflectance is float32, NaN = no data.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

__all__ = [
    "composite_latest_reference",
    "composite_median_reference",
    "gather_calibrate_reference",
    "gather_mask_reference",
    "merge_first_valid_reference",
]


def _inside(rows: np.ndarray, cols: np.ndarray, h: int, w: int) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    return (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)


def gather_calibrate_reference(
    src: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    band_out: Sequence[int],
    nodata: float,
    has_nodata: bool,
    scale: Sequence[float],
    offset: Sequence[float],
    out_shape: tuple[int, int, int],
    *,
    valid_range: tuple[float, float] | None = None,
    mask: np.ndarray | None = None,
    mask_lut: np.ndarray | None = None,
    factor: np.ndarray | None = None,
    post_offset: Sequence[float] | None = None,
) -> np.ndarray:
    """New NaN-filled float32 (band, y, x) array: the bands named by band_out hold
    float32((DN * scale + offset) * factor + post_offset) where the DN is valid, NaN elsewhere."""
    out = np.full(out_shape, np.nan, dtype=np.float32)
    nb, h, w = src.shape
    inside = _inside(rows, cols, h, w)
    if nb == 0 or not inside.any():
        return out
    r = np.where(inside, rows, 0)
    c = np.where(inside, cols, 0)
    dn = src[:, r, c].astype(np.float64)  # (b, y, x)
    ok = inside[None] & ~np.isnan(dn)
    if has_nodata:
        ok &= dn != np.float64(nodata)
    if valid_range is not None:
        ok &= (dn >= valid_range[0]) & (dn <= valid_range[1])
    if mask is not None:
        lut = np.asarray([True] + [False] * 255 if mask_lut is None else mask_lut, dtype=bool)
        m = mask.astype(np.int64)[r, c]
        in_lut = (m >= 0) & (m < len(lut))
        ok &= (in_lut & ~lut[np.clip(m, 0, len(lut) - 1)])[None]
    scale_b = np.asarray(scale, dtype=np.float64)[:, None, None]
    offset_b = np.asarray(offset, dtype=np.float64)[:, None, None]
    with np.errstate(invalid="ignore", over="ignore"):  # inf DN * 0 scale, huge values
        cal = dn * scale_b + offset_b
        if factor is not None:
            f = np.asarray(factor, dtype=np.float64)
            ok &= (f > 0)[None]
            post = np.zeros(nb) if post_offset is None else np.asarray(post_offset, np.float64)
            cal = cal * f[None] + post[:, None, None]
        cal = cal.astype(np.float32)
    bands = np.asarray(band_out, dtype=np.int64)
    out[bands] = np.where(ok, cal, np.float32(np.nan))
    return out


def gather_mask_reference(
    qa: np.ndarray, rows: np.ndarray, cols: np.ndarray, lut: np.ndarray, *, outside_masked=True
) -> np.ndarray:
    """New bool (y, x) mask: True where lut[qa] is True, qa is outside the LUT, or (when
    outside_masked) the index is outside qa."""
    h, w = qa.shape
    inside = _inside(rows, cols, h, w)
    outside = ~inside if outside_masked else np.zeros(np.shape(rows), dtype=np.bool_)
    if not inside.any():
        return outside
    if len(lut) == 0:
        return outside | inside
    v = qa[np.where(inside, rows, 0), np.where(inside, cols, 0)].astype(np.int64)
    in_lut = (v >= 0) & (v < len(lut))
    hit = ~in_lut | np.asarray(lut, dtype=np.bool_)[np.clip(v, 0, len(lut) - 1)]
    return outside | (inside & hit)


def merge_first_valid_reference(
    scenes: Sequence[tuple[np.ndarray, np.ndarray]], shape: tuple[int, int, int]
) -> np.ndarray:
    """New float32 (band, y, x) slot after merging (scene, masked) pairs in order, first wins."""
    slot = np.full(shape, np.nan, dtype=np.float32)
    for scene, masked in scenes:
        take = ~np.asarray(masked) & np.isfinite(scene).all(axis=0) & np.isnan(slot[0])
        slot[:, take] = scene[:, take]
    return slot


def _valid(stack: np.ndarray) -> np.ndarray:
    """(time, y, x) bool: every band finite."""
    return np.isfinite(stack).all(axis=1)


def composite_median_reference(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(median (band, y, x) float32 via np.nanmedian in float64, count (y, x) uint16)."""
    valid = _valid(stack)
    count = valid.sum(axis=0).astype(np.uint16)
    data = np.where(valid[:, None], stack.astype(np.float64), np.nan)
    if stack.shape[0] == 0:
        return np.full(stack.shape[1:], np.nan, dtype=np.float32), count
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # All-NaN slice encountered
        med = np.nanmedian(data, axis=0)
    return med.astype(np.float32), count


def composite_latest_reference(
    stack: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latest valid (band, y, x) float32, source t (y, x) int32 or -1, count (y, x) uint16)."""
    nt = stack.shape[0]
    valid = _valid(stack)
    count = valid.sum(axis=0).astype(np.uint16)
    if nt == 0:
        out = np.full(stack.shape[1:], np.nan, dtype=np.float32)
        return out, np.full(stack.shape[2:], -1, dtype=np.int32), count
    has = np.asarray(valid.any(axis=0))
    last = nt - 1 - np.argmax(valid[::-1], axis=0)  # highest valid t (garbage where none)
    source = np.where(has, last, -1).astype(np.int32)
    out = np.take_along_axis(stack, np.where(has, last, 0)[None, None], axis=0)[0]
    out = np.where(has[None], out, np.float32(np.nan)).astype(np.float32)
    return out, source, count
