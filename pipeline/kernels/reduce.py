"""Compositing methods: reduce a (time, band, y, x) stack of masked reflectance to a mosaic.

Conventions (shared with :mod:`pipeline.kernels.median`, whose ``composite_median`` and
``composite_latest`` complete the set):

* ``stack`` is a float32 (T, B, Y, X) array in **ascending time order**; NaN = no data. An
  observation (t, y, x) is *valid* iff all B bands are finite (so +-inf is invalid too).
* Outputs: ``out`` (B, Y, X) float32, NaN where no valid observation; ``source`` (Y, X) int32,
  the index t of the chosen observation, -1 where none (methods that pick one whole
  observation); ``count`` (Y, X) uint16, the number of valid observations; ``score`` (Y, X)
  float32 (best-pixel), NaN where none.
* Ties between observations are broken by a rule that depends on the stack order only through
  the time order: "highest score, then latest time". The time order is the stack index t
  (the stack is time-ascending) unless the optional keyword ``time`` (T,) gives the
  acquisition times (integer, float or datetime64); then the latest *time* wins and only
  observations with equal times fall back to the higher stack index. So permuting the
  observations together with their metadata and their ``time`` permutes ``source`` and leaves
  everything else bit-identical.
* Memory: the *streaming* methods (:data:`STREAMING_METHODS`) sweep the stack one row at a
  time and keep O(B*X) scratch plus their outputs (O(B*Y*X)), whatever T. The *stack* methods
  (:data:`STACK_METHODS`) copy a tile of ``_TILE_X`` pixels of one row into a (pixel, band, T)
  float32 scratch and reduce each pixel with O(T) scratch. No method allocates anything whose
  size is proportional to T*Y*X (the inputs excepted).

The ``*_kernel`` functions are the raw ``numba.njit(cache=True, nogil=True)`` loops (no
argument checks; callable from other jitted code; outputs preallocated by the caller, ``out``
NaN-filled); the public functions validate their arguments, raise ``ValueError`` naming the
offending one, allocate the outputs and call the kernel.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

import numba
import numpy as np

from pipeline.kernels.median import (
    _INSERTION_SORT_MAX,
    _TILE_X,
    _check_stack,
    _describe,
    _load_tile,
    _median,
    _select,
    _signed_zero,
    _valid_times,
)

__all__ = [
    "STACK_METHODS",
    "STREAMING_METHODS",
    "BestPixelWeights",
    "cloud_distance",
    "composite_best_pixel",
    "composite_best_pixel_kernel",
    "composite_earliest",
    "composite_earliest_kernel",
    "composite_max",
    "composite_max_kernel",
    "composite_mean",
    "composite_mean_kernel",
    "composite_medoid",
    "composite_medoid_kernel",
    "composite_min",
    "composite_min_kernel",
    "composite_percentile",
    "composite_percentile_kernel",
    "composite_priority",
    "composite_priority_kernel",
    "composite_quality",
    "composite_quality_kernel",
    "distance_transform_kernel",
    "ndvi",
    "ndvi_kernel",
]

#: Methods whose extra memory is O(B*Y*X) (their outputs plus per-row scratch), whatever T.
STREAMING_METHODS = frozenset(
    {"latest", "earliest", "priority", "mean", "min", "max", "best_pixel", "quality"}
)
#: Methods that need all T values of a pixel at once: per-pixel scratch of size T, per row tile.
STACK_METHODS = frozenset({"median", "percentile", "medoid"})


# --------------------------------------------------------------------------------------------
# jitted helpers
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _row_valid(stack, t, y, ok):
    """ok[x] = every band of observation (t, y, x) is finite, for the whole row y."""
    nb = stack.shape[1]
    nx = stack.shape[3]
    for x in range(nx):
        ok[x] = True
    for b in range(nb):
        for x in range(nx):
            if not np.isfinite(stack[t, b, y, x]):
                ok[x] = False


@numba.njit(cache=True, nogil=True)
def _gather_row(stack, y, source, out):
    """out[:, y, x] = stack[source[y, x], :, y, x] where source[y, x] >= 0."""
    nb = stack.shape[1]
    nx = stack.shape[3]
    for b in range(nb):
        for x in range(nx):
            t = source[y, x]
            if t >= 0:
                out[b, y, x] = stack[t, b, y, x]


@numba.njit(cache=True, nogil=True)
def _reset_row(y, source, count):
    for x in range(count.shape[1]):
        count[y, x] = 0
        source[y, x] = -1


@numba.njit(cache=True, nogil=True)
def _insertion_sort(a, n):
    """Sort a[:n] ascending in place (no NaN)."""
    for k in range(1, n):
        v = a[k]
        j = k
        while j > 0 and a[j - 1] > v:
            a[j] = a[j - 1]
            j -= 1
        a[j] = v


@numba.njit(cache=True, nogil=True)
def _percentile(a, n, qf):
    """numpy.percentile(a[:n], 100 * qf) with the default 'linear' method, in float64
    (reorders a[:n]; n >= 1, no NaN). Same arithmetic as NumPy: virtual index h = (n-1)*qf,
    g = h - floor(h), lerp a + (b-a)*g, or b - (b-a)*(1-g) when g >= 0.5; h >= n-1 gives the
    largest value. Zeros take their sign from their rank under -0.0 < +0.0 (order-independent)."""
    h = (n - 1) * qf
    if h >= n - 1:
        if n <= _INSERTION_SORT_MAX:
            _insertion_sort(a, n)
            v = a[n - 1]
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
        va = a[lo]
        vb = a[lo + 1]
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


# --------------------------------------------------------------------------------------------
# jitted kernels: streaming (one pass over t per row, O(B * X) scratch)
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def composite_earliest_kernel(stack, out, source, count):
    """Per pixel, all bands of the valid observation with the lowest t into out; that t into
    source (-1 none), the number of valid observations into count."""
    ny = stack.shape[2]
    nx = stack.shape[3]
    ok = np.empty(nx, dtype=np.bool_)
    for y in range(ny):
        _reset_row(y, source, count)
        for t in range(stack.shape[0]):
            _row_valid(stack, t, y, ok)
            for x in range(nx):
                if ok[x]:
                    count[y, x] += 1
                    if source[y, x] < 0:
                        source[y, x] = t
        _gather_row(stack, y, source, out)


@numba.njit(cache=True, nogil=True)
def composite_priority_kernel(stack, rank, order, out, source, count):
    """Per pixel, the valid observation with the lowest rank[t]; ties -> highest order[t]."""
    ny = stack.shape[2]
    nx = stack.shape[3]
    ok = np.empty(nx, dtype=np.bool_)
    for y in range(ny):
        _reset_row(y, source, count)
        for t in range(stack.shape[0]):
            _row_valid(stack, t, y, ok)
            r = rank[t]
            o = order[t]
            for x in range(nx):
                if ok[x]:
                    count[y, x] += 1
                    s = source[y, x]
                    if s < 0 or r < rank[s] or (r == rank[s] and o > order[s]):
                        source[y, x] = t
        _gather_row(stack, y, source, out)


@numba.njit(cache=True, nogil=True)
def composite_mean_kernel(stack, out, count):
    """Per pixel and band, the mean of the valid observations: float64 sum in t order (from
    -0.0, the additive identity), divided by the count, rounded once to float32."""
    nb = stack.shape[1]
    ny = stack.shape[2]
    nx = stack.shape[3]
    ok = np.empty(nx, dtype=np.bool_)
    acc = np.empty((nb, nx), dtype=np.float64)
    n = np.empty(nx, dtype=np.int64)
    for y in range(ny):
        acc[:] = -0.0
        n[:] = 0
        for t in range(stack.shape[0]):
            _row_valid(stack, t, y, ok)
            for x in range(nx):
                if ok[x]:
                    n[x] += 1
            for b in range(nb):
                for x in range(nx):
                    if ok[x]:
                        acc[b, x] += stack[t, b, y, x]
        for x in range(nx):
            count[y, x] = n[x]
        for b in range(nb):
            for x in range(nx):
                if n[x] > 0:
                    out[b, y, x] = np.float32(acc[b, x] / n[x])


@numba.njit(cache=True, nogil=True)
def composite_min_kernel(stack, out, count):
    """Per pixel and band, the smallest value over the valid observations (-0.0 < +0.0) into
    out (NaN-prefilled: NaN = none yet), their number into count."""
    nb = stack.shape[1]
    ny = stack.shape[2]
    nx = stack.shape[3]
    ok = np.empty(nx, dtype=np.bool_)
    for y in range(ny):
        for x in range(nx):
            count[y, x] = 0
        for t in range(stack.shape[0]):
            _row_valid(stack, t, y, ok)
            for b in range(nb):
                for x in range(nx):
                    if ok[x]:
                        v = stack[t, b, y, x]
                        cur = out[b, y, x]
                        # v < cur, or cur is NaN (none yet), or the signed-zero order
                        if not v >= cur or (
                            v == 0.0 and cur == 0.0 and math.copysign(1.0, v) < 0.0
                        ):
                            out[b, y, x] = v
            for x in range(nx):
                if ok[x]:
                    count[y, x] += 1


@numba.njit(cache=True, nogil=True)
def composite_max_kernel(stack, out, count):
    """Per pixel and band, the largest value over the valid observations (-0.0 < +0.0) into
    out (NaN-prefilled: NaN = none yet), their number into count."""
    nb = stack.shape[1]
    ny = stack.shape[2]
    nx = stack.shape[3]
    ok = np.empty(nx, dtype=np.bool_)
    for y in range(ny):
        for x in range(nx):
            count[y, x] = 0
        for t in range(stack.shape[0]):
            _row_valid(stack, t, y, ok)
            for b in range(nb):
                for x in range(nx):
                    if ok[x]:
                        v = stack[t, b, y, x]
                        cur = out[b, y, x]
                        # v > cur, or cur is NaN (none yet), or the signed-zero order
                        if not v <= cur or (
                            v == 0.0 and cur == 0.0 and math.copysign(1.0, cur) < 0.0
                        ):
                            out[b, y, x] = v
            for x in range(nx):
                if ok[x]:
                    count[y, x] += 1


@numba.njit(cache=True, nogil=True)
def composite_best_pixel_kernel(
    stack, cloud_distance, w_cloud, d_max, obs_score, order, out, source, count, score
):
    """Per pixel, the valid observation with the highest float64 score
    w_cloud * min(d, d_max) / d_max + obs_score[t] (d = cloud_distance[t, y, x]; NaN or d <= 0
    counts as 0); ties -> highest order[t]. The winning score, rounded to float32, into score."""
    ny = stack.shape[2]
    nx = stack.shape[3]
    ok = np.empty(nx, dtype=np.bool_)
    best = np.empty(nx, dtype=np.float64)
    for y in range(ny):
        _reset_row(y, source, count)
        for t in range(stack.shape[0]):
            _row_valid(stack, t, y, ok)
            m = obs_score[t]
            o = order[t]
            for x in range(nx):
                if not ok[x]:
                    continue
                count[y, x] += 1
                d = np.float64(cloud_distance[t, y, x])
                if not d > 0.0:  # NaN, negative, zero
                    f = 0.0
                elif d >= d_max:
                    f = 1.0
                else:
                    f = d / d_max
                s = w_cloud * f + m
                src = source[y, x]
                if src < 0 or s > best[x] or (s == best[x] and o > order[src]):
                    source[y, x] = t
                    best[x] = s
        for x in range(nx):
            if source[y, x] >= 0:
                score[y, x] = np.float32(best[x])
        _gather_row(stack, y, source, out)


@numba.njit(cache=True, nogil=True)
def composite_quality_kernel(stack, key, order, out, source, count):
    """Per pixel, the valid observation (all bands finite and key not NaN) with the highest
    key[t, y, x]; ties (== , so -0.0 ties +0.0) -> highest order[t]."""
    ny = stack.shape[2]
    nx = stack.shape[3]
    ok = np.empty(nx, dtype=np.bool_)
    best = np.empty(nx, dtype=np.float32)
    for y in range(ny):
        _reset_row(y, source, count)
        for t in range(stack.shape[0]):
            _row_valid(stack, t, y, ok)
            o = order[t]
            for x in range(nx):
                if not ok[x]:
                    continue
                k = key[t, y, x]
                if np.isnan(k):
                    continue
                count[y, x] += 1
                src = source[y, x]
                if src < 0 or k > best[x] or (k == best[x] and o > order[src]):
                    source[y, x] = t
                    best[x] = k
        _gather_row(stack, y, source, out)


@numba.njit(cache=True, nogil=True)
def ndvi_kernel(stack, red_band, nir_band, out):
    """out[t, y, x] = float32((nir - red) / (nir + red)) computed in float64; NaN where red or
    nir is not finite or nir + red == 0."""
    for t in range(stack.shape[0]):
        for y in range(stack.shape[2]):
            for x in range(stack.shape[3]):
                r = np.float64(stack[t, red_band, y, x])
                n = np.float64(stack[t, nir_band, y, x])
                den = n + r
                if not (np.isfinite(r) and np.isfinite(n)) or den == 0.0:
                    out[t, y, x] = np.nan
                else:
                    out[t, y, x] = np.float32((n - r) / den)


# --------------------------------------------------------------------------------------------
# jitted kernels: stack methods (per pixel, O(T) scratch per row tile)
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def composite_percentile_kernel(stack, qf, out, count):
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
def composite_medoid_kernel(stack, order, out, source, count):
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
# jitted kernels: exact Euclidean distance transform
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _edt_row(f, n, v, z, out_row):
    """Felzenszwalb-Huttenlocher 1-D squared-distance transform of f[:n] (exact integers or
    +inf) -> out_row[q] = float32(sqrt(min_p (q - p)**2 + f[p])), +inf if every f is +inf.
    v (n) int64 and z (n + 1) float64 are scratch. Only finite f[p] enter the envelope."""
    k = -1
    for q in range(n):
        fq = f[q]
        if fq == np.inf:
            continue
        if k < 0:
            k = 0
            v[0] = q
            z[0] = -np.inf
            z[1] = np.inf
            continue
        while True:
            p = v[k]
            s = ((fq + q * q) - (f[p] + p * p)) / (2.0 * (q - p))
            if s <= z[k]:  # never for k == 0 (z[0] == -inf)
                k -= 1
            else:
                break
        k += 1
        v[k] = q
        z[k] = s
        z[k + 1] = np.inf
    if k < 0:
        for q in range(n):
            out_row[q] = np.inf
        return
    k = 0
    for q in range(n):
        while z[k + 1] < q:
            k += 1
        p = v[k]
        out_row[q] = np.float32(math.sqrt((q - p) * (q - p) + f[p]))


@numba.njit(cache=True, nogil=True)
def distance_transform_kernel(mask, invert, out):
    """Exact Euclidean distance transform per plane: out[t, y, x] = distance in pixels from
    (y, x) to the nearest feature pixel of plane t (float32 of the exact sqrt of an integer),
    +inf if plane t has none. Feature pixels are mask == True, or mask == False if invert.
    Pixels outside the array are not features. Scratch: (Y, X) float64 + O(X)."""
    nt = mask.shape[0]
    ny = mask.shape[1]
    nx = mask.shape[2]
    g = np.empty((ny, nx), dtype=np.float64)
    v = np.empty(nx, dtype=np.int64)
    z = np.empty(nx + 1, dtype=np.float64)
    for t in range(nt):
        # pass 1, along y: distance to the nearest feature in the same column (two sweeps)
        for y in range(ny):
            for x in range(nx):
                if mask[t, y, x] != invert:
                    g[y, x] = 0.0
                elif y == 0:
                    g[y, x] = np.inf
                else:
                    g[y, x] = g[y - 1, x] + 1.0
        for y in range(ny - 2, -1, -1):
            for x in range(nx):
                d = g[y + 1, x] + 1.0
                if d < g[y, x]:
                    g[y, x] = d
        for y in range(ny):
            for x in range(nx):
                g[y, x] = g[y, x] * g[y, x]
        # pass 2, along x: lower envelope of the parabolas (x - p)**2 + g[y, p]
        for y in range(ny):
            _edt_row(g[y], nx, v, z, out[t, y])


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------


def _check_planes(name: str, a: object, shape: tuple[int, ...], dtype, what: str) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != shape:
        raise ValueError(
            f"{name} must be a {np.dtype(dtype)} array of shape {shape} {what}, got {_describe(a)}"
        )


def _float_vector(name: str, a: object, nt: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "iuf" or arr.shape != (nt,):
        raise ValueError(
            f"{name} must be a real ({nt},) array (one value per observation), got {_describe(arr)}"
        )
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite")
    return arr


def _rank_vector(name: str, a: object, nt: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "iu" or arr.shape != (nt,):
        raise ValueError(
            f"{name} must be an integer ({nt},) array (one rank per observation), got "
            f"{_describe(arr)}"
        )
    if nt and (arr.min() < 0 or arr.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{name} must be in [0, 2**31 - 1] (0 = most preferred)")
    return arr.astype(np.int32)


def _time_order(time: object, nt: int) -> np.ndarray:
    """(T,) int64 rank of each observation under (time, stack index): the tie-break order."""
    if time is None:
        return np.arange(nt, dtype=np.int64)
    arr = np.asarray(time)
    if arr.shape != (nt,) or arr.dtype.kind not in "iufM":
        raise ValueError(
            f"time must be a ({nt},) integer, float or datetime64 array (acquisition times), "
            f"got {_describe(arr)}"
        )
    if arr.dtype.kind == "M":
        if np.isnat(arr).any():
            raise ValueError("time must not contain NaT")
        arr = arr.view(np.int64)
    elif arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("time must be finite")
    order = np.empty(nt, dtype=np.int64)
    order[np.lexsort((np.arange(nt), arr))] = np.arange(nt, dtype=np.int64)
    return order


def _outputs(stack: np.ndarray, with_source: bool):
    _, nb, ny, nx = stack.shape
    out = np.full((nb, ny, nx), np.nan, dtype=np.float32)
    count = np.zeros((ny, nx), dtype=np.uint16)
    if not with_source:
        return out, count
    return out, np.full((ny, nx), -1, dtype=np.int32), count


def _is_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def composite_earliest(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Earliest valid observation of stack (time ascending, band, y, x): the mirror of
    ``composite_latest``. Returns (out (band, y, x) float32, NaN where none; source (y, x)
    int32, the lowest valid t, -1 where none; count (y, x) uint16 of valid observations).

    Streaming: one pass over t per row; extra memory = outputs + O(X) scratch, whatever T."""
    _check_stack(stack)
    out, source, count = _outputs(stack, True)
    composite_earliest_kernel(stack, out, source, count)
    return out, source, count


def composite_priority(
    stack: np.ndarray, rank: np.ndarray, *, time: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Provider-priority mosaic: per pixel the valid observation with the lowest ``rank``
    (integer (T,) per-observation provider rank >= 0, 0 = most preferred); ties (equal rank)
    -> the latest observation (highest ``time``, default: highest t; equal times -> highest t).
    Returns (out (band, y, x) float32, NaN where none; source (y, x) int32, -1 where none;
    count (y, x) uint16 of valid observations).

    Streaming: one pass over t per row; extra memory = outputs + O(X + T) scratch."""
    _check_stack(stack)
    nt = stack.shape[0]
    rank = _rank_vector("rank", rank, nt)
    order = _time_order(time, nt)
    out, source, count = _outputs(stack, True)
    composite_priority_kernel(stack, rank, order, out, source, count)
    return out, source, count


def composite_mean(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean of the valid observations: float64 sum in time order (from -0.0), divided
    by the count, rounded once to float32. Returns (out (band, y, x) float32, NaN where none;
    count (y, x) uint16). Permuting t can change the float64 sum's rounding (not the float32
    result in practice, and never for values on a common fixed-point grid).

    Streaming: one pass over t per row; extra memory = outputs + O(B*X) float64 scratch."""
    _check_stack(stack)
    out, count = _outputs(stack, False)
    composite_mean_kernel(stack, out, count)
    return out, count


def composite_min(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band minimum over the valid observations (-0.0 counts as smaller than +0.0, so the
    result is order-independent bit for bit). Returns (out (band, y, x) float32, NaN where
    none; count (y, x) uint16).

    Streaming: one pass over t per row; extra memory = outputs + O(X) scratch."""
    _check_stack(stack)
    out, count = _outputs(stack, False)
    composite_min_kernel(stack, out, count)
    return out, count


def composite_max(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band maximum over the valid observations (+0.0 counts as larger than -0.0, so the
    result is order-independent bit for bit). Returns (out (band, y, x) float32, NaN where
    none; count (y, x) uint16).

    Streaming: one pass over t per row; extra memory = outputs + O(X) scratch."""
    _check_stack(stack)
    out, count = _outputs(stack, False)
    composite_max_kernel(stack, out, count)
    return out, count


def composite_percentile(stack: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-band q-th percentile (q in [0, 100]) of the valid observations, exactly as
    ``numpy.nanpercentile(values.astype(float64), q)`` with the default 'linear' method, then
    rounded to float32 (q = 50 can differ from the median in the last bit: NumPy's lerp is not
    (a + b) / 2). Zeros take the sign of their rank under -0.0 < +0.0 (NumPy leaves it to its
    partition), so the result is order-independent bit for bit. Returns (out (band, y, x)
    float32, NaN where none; count (y, x) uint16).

    Stack method: per pixel, O(T) scratch; a (64, B, T) float32 tile per row strip."""
    _check_stack(stack)
    if not _is_real(q) or not math.isfinite(q) or not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be a real number in [0, 100], got {q!r}")
    out, count = _outputs(stack, False)
    composite_percentile_kernel(stack, float(q) / 100.0, out, count)
    return out, count


@dataclass(frozen=True)
class BestPixelWeights:
    """Weights of the parametric best-available-pixel score (``composite_best_pixel``).

    score(t, y, x) = cloud * min(cloud_distance, cloud_distance_max) / cloud_distance_max
                   + sun * sun_elevation / 90
                   + view * (1 - view_angle / view_max)
                   + time * exp(-|days_from_target| / time_scale)
                   + provider * 1 / (1 + provider_rank)

    Each term is in [0, 1] for in-range metadata (elevation in [0, 90] degrees, view angle in
    [0, view_max] degrees; terms are not clipped outside it). Defaults: distance to clouds
    dominates (a pixel >= 50 px from any cloud or shadow gains the full 1.0), then nearness to
    the target date (0.5, e-folding 30 days), then sun elevation and provider preference
    (0.2 each), then view angle (0.1, 30 degrees = worst). Weights must be finite and >= 0;
    the scales finite and > 0 (ValueError otherwise)."""

    cloud: float = 1.0
    sun: float = 0.2
    view: float = 0.1
    time: float = 0.5
    provider: float = 0.2
    cloud_distance_max: float = 50.0
    view_max: float = 30.0
    time_scale: float = 30.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            scale = f.name in ("cloud_distance_max", "view_max", "time_scale")
            if not _is_real(v) or not math.isfinite(v) or (v <= 0 if scale else v < 0):
                want = "finite and > 0" if scale else "finite and >= 0"
                raise ValueError(f"weights.{f.name} must be {want}, got {v!r}")


def _best_pixel_observation_score(
    w: BestPixelWeights, sun: np.ndarray, view: np.ndarray, days: np.ndarray, rank: np.ndarray
) -> np.ndarray:
    """(T,) float64: the per-observation (pixel-independent) part of the best-pixel score."""
    sun_term = w.sun * (sun / 90.0)
    view_term = w.view * (1.0 - view / w.view_max)
    time_term = w.time * np.exp(-np.abs(days) / w.time_scale)
    provider_term = w.provider * (1.0 / (1.0 + rank.astype(np.float64)))
    return sun_term + view_term + time_term + provider_term


def composite_best_pixel(
    stack: np.ndarray,
    cloud_distance: np.ndarray,
    weights: BestPixelWeights | None,
    sun_elevation: np.ndarray,
    view_angle: np.ndarray,
    days_from_target: np.ndarray,
    provider_rank: np.ndarray,
    *,
    time: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parametric best-available-pixel composite. Per valid observation the float64 score
    ``w.cloud * f(d) + obs(t)`` with f(d) = min(d, w.cloud_distance_max) / w.cloud_distance_max
    of d = cloud_distance[t, y, x] ((T, y, x) float32 pixels to the nearest cloud or shadow of
    that observation, +inf if none, e.g. from :func:`cloud_distance`; NaN or <= 0 counts as 0)
    and obs(t) = w.sun * (sun_elevation/90) + w.view * (1 - view_angle/w.view_max) +
    w.time * exp(-|days_from_target|/w.time_scale) + w.provider * (1/(1 + provider_rank))
    (added in that order, in float64; see :class:`BestPixelWeights`; ``weights`` None = the
    defaults). The (T,) metadata: sun elevation and view angle in degrees, signed days from the
    target date, provider rank (integer >= 0, 0 = most preferred), all finite.

    The highest score wins; ties (equal float64 scores) -> the latest observation (highest
    ``time``, default: highest t; equal times -> highest t). Returns (out (band, y, x) float32,
    NaN where none; source (y, x) int32, -1 where none; count (y, x) uint16 of valid
    observations; score (y, x) float32, the winning score rounded, NaN where none).

    Streaming: one pass over t per row keeping only the current best; extra memory = outputs +
    O(X + T) scratch, whatever T."""
    _check_stack(stack)
    nt, _, ny, nx = stack.shape
    _check_planes("cloud_distance", cloud_distance, (nt, ny, nx), np.float32, "(time, y, x)")
    if weights is None:
        weights = BestPixelWeights()
    if not isinstance(weights, BestPixelWeights):
        raise ValueError(f"weights must be a BestPixelWeights, got {type(weights).__name__}")
    sun = _float_vector("sun_elevation", sun_elevation, nt)
    view = _float_vector("view_angle", view_angle, nt)
    days = _float_vector("days_from_target", days_from_target, nt)
    prank = _rank_vector("provider_rank", provider_rank, nt)
    order = _time_order(time, nt)
    obs = _best_pixel_observation_score(weights, sun, view, days, prank)
    out, source, count = _outputs(stack, True)
    score = np.full((ny, nx), np.nan, dtype=np.float32)
    composite_best_pixel_kernel(
        stack,
        cloud_distance,
        float(weights.cloud),
        float(weights.cloud_distance_max),
        obs,
        order,
        out,
        source,
        count,
        score,
    )
    return out, source, count, score


def composite_quality(
    stack: np.ndarray, key: np.ndarray, *, time: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quality-mosaic ("greenest pixel"): per pixel the valid observation with the highest
    ``key`` ((T, y, x) float32, e.g. :func:`ndvi` or a band). An observation with a NaN key is
    invalid (not a candidate, not counted); +-inf keys compare as numbers. Ties (equal keys,
    -0.0 == +0.0) -> the latest observation (highest ``time``, default: highest t; equal times
    -> highest t). Returns (out (band, y, x) float32, NaN where none; source (y, x) int32, -1
    where none; count (y, x) uint16 of valid observations with a non-NaN key).

    Streaming: one pass over t per row; extra memory = outputs + O(X) scratch, whatever T."""
    _check_stack(stack)
    nt, _, ny, nx = stack.shape
    _check_planes("key", key, (nt, ny, nx), np.float32, "(time, y, x)")
    order = _time_order(time, nt)
    out, source, count = _outputs(stack, True)
    composite_quality_kernel(stack, key, order, out, source, count)
    return out, source, count


def ndvi(stack: np.ndarray, red_band: int, nir_band: int) -> np.ndarray:
    """(T, y, x) float32 NDVI (nir - red) / (nir + red) of stack (time, band, y, x), computed
    in float64; NaN where red or nir is not finite or nir + red == 0. A new (T, y, x) array
    (the only allocation; use it as the ``key`` of :func:`composite_quality`)."""
    _check_stack(stack)
    nb = stack.shape[1]
    for name, band in (("red_band", red_band), ("nir_band", nir_band)):
        if not isinstance(band, numbers.Integral) or isinstance(band, bool | np.bool_):
            raise ValueError(f"{name} must be an int band index, got {type(band).__name__}")
        if not 0 <= band < nb:
            raise ValueError(f"{name} {band} is out of range for {nb} bands")
    nt, _, ny, nx = stack.shape
    out = np.empty((nt, ny, nx), dtype=np.float32)
    ndvi_kernel(stack, int(red_band), int(nir_band), out)
    return out


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
    _check_stack(stack)
    order = _time_order(time, stack.shape[0])
    out, source, count = _outputs(stack, True)
    composite_medoid_kernel(stack, order, out, source, count)
    return out, source, count


def cloud_distance(masked: np.ndarray) -> np.ndarray:
    """Per observation, the exact Euclidean distance in pixels from each pixel to the nearest
    True pixel of masked[t] (bool (T, y, x), e.g. cloud | shadow); 0 on masked pixels, +inf
    for a plane with no True pixel. Pixels outside the array do not count. Returns a new
    (T, y, x) float32 array (float32 of the correctly rounded sqrt of an exact integer).

    Felzenszwalb-Huttenlocher: a 1-D squared-distance transform along y, then along x.
    Extra memory: the output + a (y, x) float64 scratch, O(Y*X + X)."""
    if not isinstance(masked, np.ndarray) or masked.ndim != 3 or masked.dtype != np.bool_:
        raise ValueError(f"masked must be a 3-D bool (time, y, x) array, got {_describe(masked)}")
    out = np.empty(masked.shape, dtype=np.float32)
    distance_transform_kernel(masked, False, out)
    return out
