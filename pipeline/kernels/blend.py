"""Distances to features (the exact Euclidean distance transform), and the seam blending built
on them.

:func:`cloud_distance` measures, per observation, how far each pixel lies from the nearest cloud
or shadow (the best-pixel score's main term, :mod:`pipeline.kernels.scored`; a disc dilation of
:func:`pipeline.kernels.dilate.dilate`); :func:`edge_distance` how far it lies from the nearest
invalid pixel, which feathers seams below. Both are one kernel,
:func:`distance_transform_kernel` (Felzenszwalb-Huttenlocher: a 1-D squared-distance transform
along y, then along x).

Seam blending (feathering) of a mosaic near the edges of its scenes' valid data: a
single-source mosaic (latest, priority, best-pixel, ...) switches abruptly from one scene to
another where the chosen scene's valid data ends; radiometric differences between the scenes
then show as seams. :func:`composite_blend` feathers them: within ``width`` pixels of the
chosen observation's valid-data edge, the neighbouring observations fade in, weighted by their
own distance to their edges (:func:`blend_weights`).

Chunking: distances are measured inside the array passed in, and the array border is *not* an
edge (pixels outside it are unknown, not invalid). A chunk task therefore computes the weights
over its chunk plus a halo of at least ``width`` pixels on every side and crops the halo after
blending; the core is then identical to computing over the whole grid at once (an invalid
pixel that lowers a core pixel's weight lies closer than ``width``, hence inside the halo).

Memory: :func:`edge_distance`/:func:`blend_weights` return a (T, y, x) float32 array (their
output) plus a (y, x) float64 scratch; :func:`composite_blend` streams over t per row
(outputs + O(B*X) scratch).
"""

from __future__ import annotations

import math
import numbers

import numba
import numpy as np

from pipeline.kernels.checks import check_stack, describe

__all__ = [
    "blend_weights",
    "blend_weights_kernel",
    "cloud_distance",
    "composite_blend",
    "composite_blend_kernel",
    "distance_transform_kernel",
    "edge_distance",
]


# --------------------------------------------------------------------------------------------
# jitted kernels: exact Euclidean distance transform
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _edt_row(f: np.ndarray, n: int, v: np.ndarray, z: np.ndarray, out_row: np.ndarray) -> None:
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
def distance_transform_kernel(mask: np.ndarray, invert: bool, out: np.ndarray) -> None:
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


def cloud_distance(masked: np.ndarray) -> np.ndarray:
    """Per observation, the exact Euclidean distance in pixels from each pixel to the nearest
    True pixel of masked[t] (bool (T, y, x), e.g. cloud | shadow); 0 on masked pixels, +inf
    for a plane with no True pixel. Pixels outside the array do not count. Returns a new
    (T, y, x) float32 array (float32 of the correctly rounded sqrt of an exact integer).

    Felzenszwalb-Huttenlocher: a 1-D squared-distance transform along y, then along x.
    Extra memory: the output + a (y, x) float64 scratch, O(Y*X + X)."""
    if not isinstance(masked, np.ndarray) or masked.ndim != 3 or masked.dtype != np.bool_:
        raise ValueError(f"masked must be a 3-D bool (time, y, x) array, got {describe(masked)}")
    out = np.empty(masked.shape, dtype=np.float32)
    distance_transform_kernel(masked, False, out)
    return out


# --------------------------------------------------------------------------------------------
# seam blending
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def blend_weights_kernel(distance: np.ndarray, width: float) -> None:
    """In place: distance[...] = float32(min(float64(distance) / width, 1.0))."""
    flat = distance.reshape(-1)
    for i in range(flat.size):
        w = np.float64(flat[i]) / width
        flat[i] = np.float32(w if w < 1.0 else 1.0)


@numba.njit(cache=True, nogil=True)
def composite_blend_kernel(
    stack: np.ndarray,
    base_source: np.ndarray,
    weights: np.ndarray,
    out: np.ndarray,
    main_weight: np.ndarray,
) -> None:
    """Feather a single-source mosaic. Per pixel with s = base_source[y, x] >= 0: candidates
    are the valid observations (all bands finite) with weight w_t = min(weights[t, y, x], 1)
    > 0 (NaN = 0). If s is a candidate with w_s == 1, or no observation is a candidate, out =
    stack[s] and main_weight = 1; otherwise out = sum_t w_t * v_t / sum_t w_t (float64, t
    order, rounded to float32) and main_weight = w_s / sum_t w_t (w_s = 0 if s is not a
    candidate). s == -1: out and main_weight stay NaN (the footprint is the base's)."""
    nt = stack.shape[0]
    nb = stack.shape[1]
    ny = stack.shape[2]
    nx = stack.shape[3]
    ok = np.empty(nx, dtype=np.bool_)
    wsum = np.empty(nx, dtype=np.float64)
    wmain = np.empty(nx, dtype=np.float64)
    acc = np.empty((nb, nx), dtype=np.float64)
    for y in range(ny):
        wsum[:] = 0.0
        wmain[:] = 0.0
        acc[:] = -0.0
        for t in range(nt):
            for x in range(nx):
                ok[x] = False
                w = weights[t, y, x]
                if w > 0.0:  # NaN fails
                    ok[x] = True
            for b in range(nb):
                for x in range(nx):
                    if ok[x] and not np.isfinite(stack[t, b, y, x]):
                        ok[x] = False
            for x in range(nx):
                if not ok[x]:
                    continue
                w = np.float64(weights[t, y, x])
                if w > 1.0:
                    w = 1.0
                wsum[x] += w
                if base_source[y, x] == t:
                    wmain[x] = w
                for b in range(nb):
                    acc[b, x] += w * np.float64(stack[t, b, y, x])
        for x in range(nx):
            s = base_source[y, x]
            if s < 0:
                continue
            if wmain[x] >= 1.0 or not wsum[x] > 0.0:
                main_weight[y, x] = 1.0
                for b in range(nb):
                    out[b, y, x] = stack[s, b, y, x]
            else:
                main_weight[y, x] = np.float32(wmain[x] / wsum[x])
                for b in range(nb):
                    out[b, y, x] = np.float32(acc[b, x] / wsum[x])


def _check_valid(valid: object) -> None:
    if not isinstance(valid, np.ndarray) or valid.ndim != 3 or valid.dtype != np.bool_:
        raise ValueError(f"valid must be a 3-D bool (time, y, x) array, got {describe(valid)}")


def edge_distance(valid: np.ndarray) -> np.ndarray:
    """Per observation, the exact Euclidean distance in pixels from each pixel to the nearest
    invalid (False) pixel of valid[t] (bool (T, y, x)); 0 on invalid pixels, +inf where plane t
    has no invalid pixel. The array border is not an edge (pass a halo, see the module
    docstring). Returns a new (T, y, x) float32 array; scratch (y, x) float64."""
    _check_valid(valid)
    out = np.empty(valid.shape, dtype=np.float32)
    distance_transform_kernel(valid, True, out)
    return out


def blend_weights(valid: np.ndarray, width: float) -> np.ndarray:
    """(T, y, x) float32 feathering weights: float32(min(edge_distance / width, 1)) computed in
    float64, so 0 on invalid pixels, rising linearly to 1 at ``width`` pixels (> 0) from the
    valid-data edge. The array border is not an edge: compute over a halo >= width."""
    _check_valid(valid)
    if (
        not isinstance(width, numbers.Real)
        or isinstance(width, bool | np.bool_)
        or not math.isfinite(width)
        or width <= 0
    ):
        raise ValueError(f"width must be a finite number > 0 (pixels), got {width!r}")
    out = edge_distance(valid)
    blend_weights_kernel(out, float(width))
    return out


def composite_blend(
    stack: np.ndarray, base_source: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Feathered version of a single-source mosaic of stack (time, band, y, x).

    ``base_source`` (y, x) integer: the chosen observation per pixel (the ``source`` of
    latest/earliest/priority/best-pixel/quality/medoid; -1 = none; it must be valid there);
    ``weights`` (T, y, x) float32 in [0, 1] (:func:`blend_weights` of the validity; values are
    clipped to <= 1, NaN or <= 0 = not used). Per pixel: where the base observation's weight is
    1 (or no observation has a positive weight) -> the base observation's values; otherwise the
    weighted average sum_t w_t * v_t / sum_t w_t over the valid observations with w_t > 0
    (float64, rounded to float32), so near an edge of the main scene its neighbours fade in.
    Where base_source is -1 the result is NaN (the footprint is unchanged).

    Returns (out (band, y, x) float32; main_weight (y, x) float32 = w_main / sum_t w_t, 1 where
    the base value is kept, NaN where base_source is -1).

    Streaming: one pass over t per row; extra memory = outputs + O(B*X) float64 scratch."""
    check_stack(stack)
    nt, nb, ny, nx = stack.shape
    if (
        not isinstance(base_source, np.ndarray)
        or base_source.dtype.kind not in "iu"
        or base_source.shape != (ny, nx)
    ):
        raise ValueError(
            f"base_source must be an integer array of shape {(ny, nx)} (y, x), got "
            f"{describe(base_source)}"
        )
    if base_source.size and (base_source.min() < -1 or base_source.max() >= nt):
        raise ValueError(f"base_source must be in [-1, {nt - 1}] (a time index or -1)")
    if base_source.dtype != np.int32:
        base_source = base_source.astype(np.int32)
    if (
        not isinstance(weights, np.ndarray)
        or weights.dtype != np.float32
        or weights.shape != (nt, ny, nx)
    ):
        raise ValueError(
            f"weights must be a float32 array of shape {(nt, ny, nx)} (time, y, x), got "
            f"{describe(weights)}"
        )
    out = np.full((nb, ny, nx), np.nan, dtype=np.float32)
    main_weight = np.full((ny, nx), np.nan, dtype=np.float32)
    composite_blend_kernel(stack, base_source, weights, out, main_weight)
    return out, main_weight
