"""Mask dilation (numba), e.g. to buffer clouds and shadows before they are masked.

Apart from :mod:`pipeline.kernels.qa` (the quality rules and their lookup tables) so that the
catalog and the plan, which read those rules on the driver, do not load numba.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["dilate", "dilate_kernel"]


@numba.njit(cache=True, nogil=True)
def dilate_kernel(mask: np.ndarray, n: int, out: np.ndarray) -> None:
    """out (y, x) = True where some True pixel of mask lies within Chebyshev distance n
    (a (2n+1)² square). Separable, O(Y·X) whatever n: along x, then along y, keep the index of
    the last True pixel at or before x + n; unchecked. (The per-pixel stamp of the earlier
    version cost O(Y·X·n²).)"""
    h, w = mask.shape
    far = -(1 << 40)
    tmp = np.zeros((h, w), np.bool_)
    for y in range(h):
        last = far
        for j in range(min(n, w)):
            if mask[y, j]:
                last = j
        for x in range(w):
            j = x + n
            if j < w and mask[y, j]:
                last = j
            tmp[y, x] = last >= x - n
    for x in range(w):
        last = far
        for j in range(min(n, h)):
            if tmp[j, x]:
                last = j
        for y in range(h):
            j = y + n
            if j < h and tmp[j, x]:
                last = j
            out[y, x] = last >= y - n


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
