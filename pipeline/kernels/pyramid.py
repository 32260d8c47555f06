"""One level down a pyramid: 2 × 2 blocks of the last two axes become one pixel.

* :func:`mean2x2`: the mean of the block's finite values (NaN where the block has none), in
  float32 arithmetic accumulated in float64; reflectance overviews.
* :func:`nearest2x2`: the block's top-left value; lineage layers and integers, so a coarse
  pixel is always a value that exists at full resolution.

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
