"""Mask dilation (numba), e.g. to buffer clouds and shadows before they are masked.

Apart from :mod:`pipeline.kernels.qa` (the quality rules and their lookup tables) so that the
catalog and the plan, which read those rules on the driver, do not load numba.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["dilate", "dilate_kernel"]


@numba.njit(cache=True, nogil=True)
def _dilate_line(src: np.ndarray, dst: np.ndarray, n: int) -> None:
    """dst[i] = True where some True of the 1-D src lies within n of i: keep the index of the
    last True at or before i + n (one axis of dilate_kernel)."""
    m = src.shape[0]
    last = -(1 << 40)
    for j in range(min(n, m)):
        if src[j]:
            last = j
    for i in range(m):
        j = i + n
        if j < m and src[j]:
            last = j
        dst[i] = last >= i - n


@numba.njit(cache=True, nogil=True)
def dilate_kernel(mask: np.ndarray, n: int, out: np.ndarray) -> None:
    """out (y, x) = True where some True pixel of mask lies within Chebyshev distance n
    (a (2n+1)² square). Separable, O(Y·X) whatever n: each row, then each column of that,
    by :func:`_dilate_line`; unchecked. (The per-pixel stamp of the earlier version cost
    O(Y·X·n²).)"""
    h, w = mask.shape
    tmp = np.zeros((h, w), np.bool_)
    for y in range(h):
        _dilate_line(mask[y], tmp[y], n)
    for x in range(w):
        _dilate_line(tmp[:, x], out[:, x], n)


def dilate(mask: np.ndarray, n: int, *, shape: str = "square") -> np.ndarray:
    """New (y, x) bool mask: mask dilated by n pixels (square: Chebyshev distance <= n; disc:
    Euclidean <= n), e.g. to buffer clouds and shadows; pixels beyond the edge count as False."""
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.dtype != np.bool_:
        raise ValueError(f"mask must be a 2-D bool numpy array, got {type(mask).__name__}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an int >= 0 (pixels), got {n!r}")
    if shape not in ("square", "disc"):
        raise ValueError(f"shape must be 'square' or 'disc', got {shape!r}")
    if n == 0 or not mask.size:
        return mask.copy()
    if shape == "disc":
        from pipeline.kernels.blend import cloud_distance

        within: np.ndarray = cloud_distance(np.ascontiguousarray(mask)[None])[0] <= n
        return within
    out = np.zeros(mask.shape, dtype=np.bool_)
    dilate_kernel(np.ascontiguousarray(mask), int(n), out)
    return out
