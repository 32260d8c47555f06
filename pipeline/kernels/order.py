"""Order statistics of one pixel's observations, and the stack methods built on them.

The median, percentile and medoid mosaics need all T values of a pixel at once (the *stack*
methods, :data:`pipeline.kernels.reduce.STACK_METHODS`): they copy a tile of ``_TILE_X`` pixels
of one row into a (pixel, band, T) float32 scratch (:func:`_load_tile`), list the valid times
(:func:`_valid_times`) and reduce each pixel with O(T) scratch. The order statistics here
(quickselect, the median and the 'linear' percentile of NumPy, the sign of a zero under
-0.0 < +0.0) are shared with the long-time-axis median of :mod:`pipeline.kernels.median`; this
module also holds the percentile and medoid mosaics. Conventions (valid observations, outputs,
tie-breaks) are those of :mod:`pipeline.kernels.reduce`.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from pipeline.kernels.checks import check_stack, is_real, mosaic_outputs, time_order

__all__ = [
    "composite_medoid",
    "composite_medoid_kernel",
    "composite_percentile",
    "composite_percentile_kernel",
]

# Up to this many valid observations the median insertion-sorts the scratch buffer; above it,
# it uses quickselect (O(n)).
_INSERTION_SORT_MAX = 32
# Pixels per scratch tile of the median (tile = _TILE_X * B * T float32, L1/L2-sized).
_TILE_X = 64


# --------------------------------------------------------------------------------------------
# jitted helpers: order statistics of one pixel's values
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _select(a: np.ndarray, n: int, k: int) -> None:
    """Partially order a[:n] in place so that a[k] is its k-th smallest value, a[:k] <= a[k] and
    a[k + 1:n] >= a[k] (Hoare/Wirth quickselect, median-of-three pivot; no NaN in a)."""
    lo = 0
    hi = n - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return


@numba.njit(cache=True, nogil=True)
def _signed_zero(a: np.ndarray, n: int, p: int) -> float:
    """The zero at rank p of a[:n] (which holds a zero at rank p) under the total order
    -0.0 < +0.0, so the median's sign does not depend on the input order of the zeros."""
    n_neg = 0
    n_neg_zero = 0
    for i in range(n):
        v = a[i]
        if v < 0.0:
            n_neg += 1
        elif v == 0.0 and math.copysign(1.0, v) < 0.0:
            n_neg_zero += 1
    if p - n_neg < n_neg_zero:
        return -0.0
    return 0.0


@numba.njit(cache=True, nogil=True)
def _median(a: np.ndarray, n: int) -> float:
    """Median of the n finite values in a[:n] (reorders them): the middle one, or the mean of
    the two middle ones computed in float64; bit-identical for any order of the inputs."""
    m = n // 2
    if n <= _INSERTION_SORT_MAX:
        for k in range(1, n):
            v = a[k]
            j = k
            while j > 0 and a[j - 1] > v:
                a[j] = a[j - 1]
                j -= 1
            a[j] = v
        hi: float = a[m]  # (annotations of locals are not compiled: numba types them itself)
        lo: float = a[m - 1] if n % 2 == 0 else hi
    else:
        _select(a, n, m)
        hi = a[m]
        lo = hi
        if n % 2 == 0:
            lo = a[0]
            for k in range(1, m):
                if a[k] > lo:
                    lo = a[k]
    if hi == 0.0:
        hi = _signed_zero(a, n, m)
    if n % 2 == 1:
        return hi
    if lo == 0.0:
        lo = _signed_zero(a, n, m - 1)
    return (lo + hi) / 2.0


@numba.njit(cache=True, nogil=True)
def _insertion_sort(a: np.ndarray, n: int) -> None:
    """Sort a[:n] ascending in place (no NaN)."""
    for k in range(1, n):
        v = a[k]
        j = k
        while j > 0 and a[j - 1] > v:
            a[j] = a[j - 1]
            j -= 1
        a[j] = v


@numba.njit(cache=True, nogil=True)
def _percentile(a: np.ndarray, n: int, qf: float) -> float:
    """numpy.percentile(a[:n], 100 * qf) with the default 'linear' method, in float64
    (reorders a[:n]; n >= 1, no NaN). Same arithmetic as NumPy: virtual index h = (n-1)*qf,
    g = h - floor(h), lerp a + (b-a)*g, or b - (b-a)*(1-g) when g >= 0.5; h >= n-1 gives the
    largest value. Zeros take their sign from their rank under -0.0 < +0.0 (order-independent)."""
    h = (n - 1) * qf
    if h >= n - 1:
        if n <= _INSERTION_SORT_MAX:
            _insertion_sort(a, n)
            v: float = a[n - 1]  # (annotations of locals are not compiled: numba types them)
        else:
            v = a[0]
            for k in range(1, n):
                if a[k] > v:
                    v = a[k]
        if v == 0.0:
            v = _signed_zero(a, n, n - 1)
        return v
    lo = int(math.floor(h))
    g = h - lo
    if n <= _INSERTION_SORT_MAX:
        _insertion_sort(a, n)
        va: float = a[lo]
        vb: float = a[lo + 1]
    else:
        _select(a, n, lo)
        va = a[lo]
        vb = a[lo + 1]
        for k in range(lo + 2, n):
            if a[k] < vb:
                vb = a[k]
    if va == 0.0:
        va = _signed_zero(a, n, lo)
    if vb == 0.0:
        vb = _signed_zero(a, n, lo + 1)
    diff = vb - va
    if g >= 0.5:
        return vb - diff * (1.0 - g)
    return va + diff * g


@numba.njit(cache=True, nogil=True)
def _load_tile(stack: np.ndarray, y: int, x0: int, w: int, tile: np.ndarray) -> None:
    """Copy stack[:, :, y, x0:x0 + w] into tile (pixel, band, time): sequential reads, so the
    per-pixel work does not stride through T * B planes."""
    for t in range(stack.shape[0]):
        for b in range(stack.shape[1]):
            for i in range(w):
                tile[i, b, t] = stack[t, b, y, x0 + i]


@numba.njit(cache=True, nogil=True)
def _valid_times(px: np.ndarray, idx: np.ndarray) -> int:
    """Write into idx the times t at which every band of px (band, time) is finite; return
    how many there are."""
    n = 0
    for t in range(px.shape[1]):
        valid = True
        for b in range(px.shape[0]):
            if not np.isfinite(px[b, t]):
                valid = False
                break
        if valid:
            idx[n] = t
            n += 1
    return n


# --------------------------------------------------------------------------------------------
# jitted kernels: stack methods (per pixel, O(T) scratch per row tile)
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def composite_percentile_kernel(
    stack: np.ndarray, qf: float, out: np.ndarray, count: np.ndarray
) -> None:
    """Per pixel and band, numpy.nanpercentile(values, 100 * qf) ('linear') of the valid
    observations, in float64, rounded to float32."""
    nt = stack.shape[0]
    nb = stack.shape[1]
    ny = stack.shape[2]
    nx = stack.shape[3]
    tile = np.empty((_TILE_X, nb, nt), dtype=np.float32)
    idx = np.empty(nt, dtype=np.int64)
    buf = np.empty(nt, dtype=np.float64)
    for y in range(ny):
        for x0 in range(0, nx, _TILE_X):
            w = min(_TILE_X, nx - x0)
            _load_tile(stack, y, x0, w, tile)
            for i in range(w):
                px = tile[i]
                n = _valid_times(px, idx)
                count[y, x0 + i] = n
                if n == 0:
                    continue
                for b in range(nb):
                    for k in range(n):
                        buf[k] = px[b, idx[k]]
                    out[b, y, x0 + i] = np.float32(_percentile(buf, n, qf))


@numba.njit(cache=True, nogil=True)
def composite_medoid_kernel(
    stack: np.ndarray, order: np.ndarray, out: np.ndarray, source: np.ndarray, count: np.ndarray
) -> None:
    """Per pixel, the valid observation minimising sum_b (float64(v_b) - m_b)**2 (bands summed
    in order b = 0..B-1), m_b = float64 median of band b over the valid observations (nanmedian
    convention); ties -> highest order[t]. All its bands into out, t into source."""
    nt = stack.shape[0]
    nb = stack.shape[1]
    ny = stack.shape[2]
    nx = stack.shape[3]
    tile = np.empty((_TILE_X, nb, nt), dtype=np.float32)
    idx = np.empty(nt, dtype=np.int64)
    buf = np.empty(nt, dtype=np.float64)
    med = np.empty(nb, dtype=np.float64)
    for y in range(ny):
        for x0 in range(0, nx, _TILE_X):
            w = min(_TILE_X, nx - x0)
            _load_tile(stack, y, x0, w, tile)
            for i in range(w):
                px = tile[i]
                n = _valid_times(px, idx)
                count[y, x0 + i] = n
                source[y, x0 + i] = -1
                if n == 0:
                    continue
                for b in range(nb):
                    for k in range(n):
                        buf[k] = px[b, idx[k]]
                    med[b] = _median(buf, n)
                best = -1
                best_d = 0.0
                for k in range(n):
                    t = idx[k]
                    d = 0.0
                    for b in range(nb):
                        diff = np.float64(px[b, t]) - med[b]
                        d += diff * diff
                    if best < 0 or d < best_d or (d == best_d and order[t] > order[best]):
                        best = t
                        best_d = d
                source[y, x0 + i] = best
                for b in range(nb):
                    out[b, y, x0 + i] = px[b, best]


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def composite_percentile(stack: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-band q-th percentile (q in [0, 100]) of the valid observations, exactly as
    ``numpy.nanpercentile(values.astype(float64), q)`` with the default 'linear' method, then
    rounded to float32 (q = 50 can differ from the median in the last bit: NumPy's lerp is not
    (a + b) / 2). Zeros take the sign of their rank under -0.0 < +0.0 (NumPy leaves it to its
    partition), so the result is order-independent bit for bit. Returns (out (band, y, x)
    float32, NaN where none; count (y, x) uint16).

    Stack method: per pixel, O(T) scratch; a (64, B, T) float32 tile per row strip."""
    check_stack(stack)
    if not is_real(q) or not math.isfinite(q) or not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be a real number in [0, 100], got {q!r}")
    out, count = mosaic_outputs(stack, False)
    composite_percentile_kernel(stack, float(q) / 100.0, out, count)
    return out, count


def composite_medoid(
    stack: np.ndarray, *, time: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Medoid mosaic: per pixel, the valid observation whose spectrum minimises
    sum_b (v_b - m_b)**2, m_b the per-band median of the valid observations (nanmedian
    convention, float64; distances in float64, bands summed in order). A whole spectrum from
    one real acquisition. Ties (equal float64 distances) -> the latest observation (highest
    ``time``, default: highest t; equal times -> highest t). Returns (out (band, y, x) float32,
    NaN where none; source (y, x) int32, -1 where none; count (y, x) uint16).

    Stack method: per pixel, O(T) scratch; a (64, B, T) float32 tile per row strip."""
    check_stack(stack)
    order = time_order(time, stack.shape[0])
    out, source, count = mosaic_outputs(stack, True)
    composite_medoid_kernel(stack, order, out, source, count)
    return out, source, count
