"""One level down a pyramid: 2 × 2 blocks of the last two axes become one pixel.

* :func:`mean2x2`: the mean of the block's finite values (NaN where the block has none), in
  float32 arithmetic accumulated in float64; reflectance overviews.
* :func:`first_valid2x2`: the first valid value of the block (row by row; -1 and NaN are not
  valid), else the block's top-left value; lineage layers (``source``, ``score``, ``weight``),
  so a coarse pixel names an observation that exists wherever its reflectance has one.
* :func:`max2x2`: the block's largest value (``count``: a coarse pixel with any observation
  counts them).
* :func:`nearest2x2`: the block's top-left value.

An odd edge (a row or column without a partner) keeps its half block: the output has
``ceil(n / 2)`` pixels along each of the two axes. Leading axes (time) are kept.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _mean2x2_kernel(src: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - jitted
    n, h, w = src.shape
    oh, ow = out.shape[1], out.shape[2]
    for t in range(n):
        for i in range(oh):
            for j in range(ow):
                s = 0.0
                c = 0
                for di in range(2):
                    y = 2 * i + di
                    if y >= h:
                        break
                    for dj in range(2):
                        x = 2 * j + dj
                        if x >= w:
                            break
                        v = src[t, y, x]
                        if np.isfinite(v):
                            s += v
                            c += 1
                out[t, i, j] = s / c if c else np.nan


def mean2x2(values: np.ndarray) -> np.ndarray:
    """float32 values (…, y, x) → (…, ceil(y/2), ceil(x/2)): the mean of each block's finite
    values, NaN where a block has none."""
    if values.ndim < 2:
        raise ValueError(f"mean2x2: values must have at least 2 dimensions, got {values.ndim}")
    src = np.ascontiguousarray(values, dtype=np.float32)
    *lead, h, w = src.shape
    flat = src.reshape(-1, h, w)
    out = np.empty((flat.shape[0], -(-h // 2), -(-w // 2)), np.float32)
    _mean2x2_kernel(flat, out)
    return out.reshape(*lead, out.shape[1], out.shape[2])


def nearest2x2(values: np.ndarray) -> np.ndarray:
    """values (…, y, x) → (…, ceil(y/2), ceil(x/2)): each block's top-left value."""
    if values.ndim < 2:
        raise ValueError(f"nearest2x2: values must have at least 2 dimensions, got {values.ndim}")
    return np.ascontiguousarray(values[..., ::2, ::2])


def _blocks(values: np.ndarray, pad: float | int) -> np.ndarray:
    """(…, ceil(y/2), ceil(x/2), 4): each 2 × 2 block's values row by row, an odd edge padded."""
    *lead, h, w = values.shape
    padded = np.full((*lead, h + h % 2, w + w % 2), pad, dtype=values.dtype)
    padded[..., :h, :w] = values
    b = padded.reshape(*lead, (h + h % 2) // 2, 2, (w + w % 2) // 2, 2)
    return np.moveaxis(b, -3, -2).reshape(*lead, (h + h % 2) // 2, (w + w % 2) // 2, 4)


def first_valid2x2(values: np.ndarray) -> np.ndarray:
    """values (…, y, x) → (…, ceil(y/2), ceil(x/2)): each block's first valid value (not -1 for
    integers, finite for floats), else its top-left value."""
    if values.ndim < 2:
        raise ValueError(f"first_valid2x2: values must have at least 2 dimensions, "
                         f"got {values.ndim}")
    floating = values.dtype.kind == "f"
    blocks = _blocks(values, np.nan if floating else -1)
    valid = np.isfinite(blocks) if floating else blocks != -1
    pick = np.where(valid.any(axis=-1), valid.argmax(axis=-1), 0)
    return np.ascontiguousarray(np.take_along_axis(blocks, pick[..., None], axis=-1)[..., 0])


def max2x2(values: np.ndarray) -> np.ndarray:
    """values (…, y, x) integers → (…, ceil(y/2), ceil(x/2)): each block's largest value."""
    if values.ndim < 2:
        raise ValueError(f"max2x2: values must have at least 2 dimensions, got {values.ndim}")
    low = np.iinfo(values.dtype).min if values.dtype.kind in "iu" else -np.inf
    return np.ascontiguousarray(_blocks(values, low).max(axis=-1))
