"""Compositing kernels: merge scenes into a time slot, and reduce a (time, band, y, x) stack to a
mosaic (median or latest valid observation).

An observation (t, y, x) is valid iff every band is finite (NaN = no data). The ``*_kernel``
functions are the raw ``numba.njit`` loops (no checks; callable from other jitted code); the
public functions validate their arguments and raise ``ValueError`` naming the offending one.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "MAX_TIME",
    "composite_latest",
    "composite_latest_kernel",
    "composite_median",
    "composite_median_kernel",
    "merge_first_valid",
    "merge_first_valid_kernel",
]

#: Largest time axis the mosaics accept (their ``count`` output is uint16).
MAX_TIME = int(np.iinfo(np.uint16).max)

# Below this many valid observations the median sorts with an inline insertion sort; above it,
# with numba's in-place introsort of the scratch buffer.
_INSERTION_SORT_MAX = 32


# --------------------------------------------------------------------------------------------
# jitted kernels
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def merge_first_valid_kernel(scene, masked, slot):
    """Copy valid, unmasked pixels of scene (band, y, x) reflectance into the still-empty
    (slot[0] NaN) pixels of slot (band, y, x); return the number of pixels copied."""
    nb = scene.shape[0]
    ny = scene.shape[1]
    nx = scene.shape[2]
    copied = 0
    for y in range(ny):
        for x in range(nx):
            if masked[y, x]:
                continue
            if not np.isnan(slot[0, y, x]):
                continue
            valid = True
            for b in range(nb):
                if not np.isfinite(scene[b, y, x]):
                    valid = False
                    break
            if not valid:
                continue
            for b in range(nb):
                slot[b, y, x] = scene[b, y, x]
            copied += 1
    return copied


@numba.njit(cache=True, nogil=True, inline="always")
def _sorted_value(buf, n, p):
    """Value at position p of sorted buf[:n] under the total order -0.0 < +0.0 (a sort by `<`
    leaves zeros of both signs in input order; this makes the median bit-independent of it)."""
    v = buf[p]
    if v != 0.0:
        return v
    lo = p
    while lo > 0 and buf[lo - 1] == 0.0:
        lo -= 1
    hi = p
    while hi < n - 1 and buf[hi + 1] == 0.0:
        hi += 1
    n_neg = 0
    for i in range(lo, hi + 1):
        if math.copysign(1.0, buf[i]) < 0.0:
            n_neg += 1
    if p - lo < n_neg:
        return -0.0
    return 0.0


@numba.njit(cache=True, nogil=True)
def composite_median_kernel(stack, out, count):
    """Per pixel and band, median reflectance of the valid observations of stack
    (time, band, y, x) into out (band, y, x) (NaN-prefilled), their number into count (y, x)."""
    nt = stack.shape[0]
    nb = stack.shape[1]
    ny = stack.shape[2]
    nx = stack.shape[3]
    idx = np.empty(nt, dtype=np.int64)
    buf = np.empty(nt, dtype=np.float64)
    for y in range(ny):
        for x in range(nx):
            n = 0
            for t in range(nt):
                valid = True
                for b in range(nb):
                    if not np.isfinite(stack[t, b, y, x]):
                        valid = False
                        break
                if valid:
                    idx[n] = t
                    n += 1
            count[y, x] = n
            if n == 0:
                continue
            for b in range(nb):
                if n <= _INSERTION_SORT_MAX:
                    for i in range(n):
                        v = np.float64(stack[idx[i], b, y, x])
                        j = i
                        while j > 0 and buf[j - 1] > v:
                            buf[j] = buf[j - 1]
                            j -= 1
                        buf[j] = v
                else:
                    for i in range(n):
                        buf[i] = stack[idx[i], b, y, x]
                    buf[:n].sort()
                m = n // 2
                if n % 2 == 1:
                    out[b, y, x] = np.float32(_sorted_value(buf, n, m))
                else:
                    lo = _sorted_value(buf, n, m - 1)
                    hi = _sorted_value(buf, n, m)
                    out[b, y, x] = np.float32((lo + hi) / 2.0)


@numba.njit(cache=True, nogil=True)
def composite_latest_kernel(stack, out, source, count):
    """Per pixel, copy all bands of the valid observation with the highest t of stack
    (time ascending, band, y, x) into out (band, y, x); that t into source, the valid count."""
    nt = stack.shape[0]
    nb = stack.shape[1]
    ny = stack.shape[2]
    nx = stack.shape[3]
    for y in range(ny):
        for x in range(nx):
            n = 0
            last = -1
            for t in range(nt):
                valid = True
                for b in range(nb):
                    if not np.isfinite(stack[t, b, y, x]):
                        valid = False
                        break
                if valid:
                    n += 1
                    last = t
            count[y, x] = n
            source[y, x] = last
            if last >= 0:
                for b in range(nb):
                    out[b, y, x] = stack[last, b, y, x]


# --------------------------------------------------------------------------------------------
# validating wrappers
# --------------------------------------------------------------------------------------------


def _describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


def _check_stack(stack: np.ndarray) -> None:
    if not isinstance(stack, np.ndarray) or stack.ndim != 4 or stack.dtype != np.float32:
        raise ValueError(
            f"stack must be a 4-D float32 (time, band, y, x) array, got {_describe(stack)}"
        )
    if stack.shape[0] > MAX_TIME:
        raise ValueError(f"stack time axis {stack.shape[0]} exceeds {MAX_TIME} (count is uint16)")
    if stack.shape[1] < 1:
        raise ValueError("stack must have at least one band")


def merge_first_valid(scene: np.ndarray, masked: np.ndarray, slot: np.ndarray) -> int:
    """Fill the empty pixels of slot (band, y, x) with the valid, unmasked pixels of scene
    (band, y, x) in place (first scene wins); return the number of pixels copied."""
    if not isinstance(scene, np.ndarray) or scene.ndim != 3 or scene.dtype != np.float32:
        raise ValueError(f"scene must be a 3-D float32 (band, y, x) array, got {_describe(scene)}")
    if scene.shape[0] < 1:
        raise ValueError("scene must have at least one band")
    if (
        not isinstance(masked, np.ndarray)
        or masked.dtype != np.bool_
        or masked.shape != scene.shape[1:]
    ):
        raise ValueError(
            f"masked must be a bool array of shape {scene.shape[1:]} (y, x), got "
            f"{_describe(masked)}"
        )
    if not isinstance(slot, np.ndarray) or slot.dtype != np.float32 or slot.shape != scene.shape:
        raise ValueError(
            f"slot must be a float32 array of shape {scene.shape} (band, y, x), got "
            f"{_describe(slot)}"
        )
    if not slot.flags.writeable:
        raise ValueError("slot must be writeable")
    return int(merge_first_valid_kernel(scene, masked, slot))


def composite_median(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median reflectance over the valid observations of stack (time, band, y, x): returns
    (out (band, y, x) float32, NaN where none; count (y, x) uint16 of valid observations)."""
    _check_stack(stack)
    _, nb, ny, nx = stack.shape
    out = np.full((nb, ny, nx), np.nan, dtype=np.float32)
    count = np.zeros((ny, nx), dtype=np.uint16)
    composite_median_kernel(stack, out, count)
    return out, count


def composite_latest(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latest valid observation of stack (time ascending, band, y, x): returns (out (band, y, x)
    float32, NaN where none; source (y, x) int32 time index, -1 where none; count (y, x) uint16)."""
    _check_stack(stack)
    _, nb, ny, nx = stack.shape
    out = np.full((nb, ny, nx), np.nan, dtype=np.float32)
    source = np.full((ny, nx), -1, dtype=np.int32)
    count = np.zeros((ny, nx), dtype=np.uint16)
    composite_latest_kernel(stack, out, source, count)
    return out, source, count
