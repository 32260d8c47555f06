"""Compositing methods: reduce a (time, band, y, x) stack of masked reflectance to a mosaic.

Here: the plain streaming methods earliest, priority, mean, min and max. Conventions, shared by
every compositing method (:mod:`pipeline.kernels.median`: median and latest;
:mod:`pipeline.kernels.scored`: best-pixel and quality; :mod:`pipeline.kernels.order`: percentile
and medoid):

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

import numba
import numpy as np

from pipeline.kernels.checks import check_stack, mosaic_outputs, rank_vector, time_order

__all__ = [
    "STACK_METHODS",
    "STREAMING_METHODS",
    "composite_earliest",
    "composite_earliest_kernel",
    "composite_max",
    "composite_max_kernel",
    "composite_mean",
    "composite_mean_kernel",
    "composite_min",
    "composite_min_kernel",
    "composite_priority",
    "composite_priority_kernel",
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
def _row_valid(stack: np.ndarray, t: int, y: int, ok: np.ndarray) -> None:
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
def _gather_row(stack: np.ndarray, y: int, source: np.ndarray, out: np.ndarray) -> None:
    """out[:, y, x] = stack[source[y, x], :, y, x] where source[y, x] >= 0."""
    nb = stack.shape[1]
    nx = stack.shape[3]
    for b in range(nb):
        for x in range(nx):
            t = source[y, x]
            if t >= 0:
                out[b, y, x] = stack[t, b, y, x]


@numba.njit(cache=True, nogil=True)
def _reset_row(y: int, source: np.ndarray, count: np.ndarray) -> None:
    for x in range(count.shape[1]):
        count[y, x] = 0
        source[y, x] = -1


# --------------------------------------------------------------------------------------------
# jitted kernels: streaming (one pass over t per row, O(B * X) scratch)
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def composite_earliest_kernel(
    stack: np.ndarray, out: np.ndarray, source: np.ndarray, count: np.ndarray
) -> None:
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
def composite_priority_kernel(
    stack: np.ndarray,
    rank: np.ndarray,
    order: np.ndarray,
    out: np.ndarray,
    source: np.ndarray,
    count: np.ndarray,
) -> None:
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
def composite_mean_kernel(stack: np.ndarray, out: np.ndarray, count: np.ndarray) -> None:
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
def composite_min_kernel(stack: np.ndarray, out: np.ndarray, count: np.ndarray) -> None:
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
def composite_max_kernel(stack: np.ndarray, out: np.ndarray, count: np.ndarray) -> None:
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


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def composite_earliest(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Earliest valid observation of stack (time ascending, band, y, x): the mirror of
    ``composite_latest``. Returns (out (band, y, x) float32, NaN where none; source (y, x)
    int32, the lowest valid t, -1 where none; count (y, x) uint16 of valid observations).

    Streaming: one pass over t per row; extra memory = outputs + O(X) scratch, whatever T."""
    check_stack(stack)
    out, source, count = mosaic_outputs(stack, True)
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
    check_stack(stack)
    nt = stack.shape[0]
    rank = rank_vector("rank", rank, nt)
    order = time_order(time, nt)
    out, source, count = mosaic_outputs(stack, True)
    composite_priority_kernel(stack, rank, order, out, source, count)
    return out, source, count


def composite_mean(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean of the valid observations: float64 sum in time order (from -0.0), divided
    by the count, rounded once to float32. Returns (out (band, y, x) float32, NaN where none;
    count (y, x) uint16). Permuting t can change the float64 sum's rounding (not the float32
    result in practice, and never for values on a common fixed-point grid).

    Streaming: one pass over t per row; extra memory = outputs + O(B*X) float64 scratch."""
    check_stack(stack)
    out, count = mosaic_outputs(stack, False)
    composite_mean_kernel(stack, out, count)
    return out, count


def composite_min(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band minimum over the valid observations (-0.0 counts as smaller than +0.0, so the
    result is order-independent bit for bit). Returns (out (band, y, x) float32, NaN where
    none; count (y, x) uint16).

    Streaming: one pass over t per row; extra memory = outputs + O(X) scratch."""
    check_stack(stack)
    out, count = mosaic_outputs(stack, False)
    composite_min_kernel(stack, out, count)
    return out, count


def composite_max(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band maximum over the valid observations (+0.0 counts as larger than -0.0, so the
    result is order-independent bit for bit). Returns (out (band, y, x) float32, NaN where
    none; count (y, x) uint16).

    Streaming: one pass over t per row; extra memory = outputs + O(X) scratch."""
    check_stack(stack)
    out, count = mosaic_outputs(stack, False)
    composite_max_kernel(stack, out, count)
    return out, count

