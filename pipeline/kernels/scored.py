"""Compositing methods that keep, per pixel, the observation with the best score: the
parametric best-available-pixel composite, and the quality mosaic ("greenest pixel") with NDVI
as its usual key.

Both are streaming methods (one pass over t per row, O(X + T) scratch, whatever T) and follow the
conventions of :mod:`pipeline.kernels.reduce` (valid observations, outputs, and ties broken by
"highest score, then latest time"). The distance to clouds that best-pixel scores by is
:func:`pipeline.kernels.blend.cloud_distance`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

import numba
import numpy as np

from pipeline.kernels.checks import (
    check_planes,
    check_stack,
    float_vector,
    is_real,
    mosaic_outputs,
    rank_vector,
    time_order,
)
from pipeline.kernels.reduce import _gather_row, _reset_row, _row_valid

__all__ = [
    "BestPixelWeights",
    "composite_best_pixel",
    "composite_best_pixel_kernel",
    "composite_quality",
    "composite_quality_kernel",
    "ndvi",
    "ndvi_kernel",
]


# --------------------------------------------------------------------------------------------
# jitted kernels
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def composite_best_pixel_kernel(
    stack: np.ndarray,
    cloud_distance: np.ndarray,
    w_cloud: float,
    d_max: float,
    obs_score: np.ndarray,
    order: np.ndarray,
    out: np.ndarray,
    source: np.ndarray,
    count: np.ndarray,
    score: np.ndarray,
) -> None:
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
def composite_quality_kernel(
    stack: np.ndarray,
    key: np.ndarray,
    order: np.ndarray,
    out: np.ndarray,
    source: np.ndarray,
    count: np.ndarray,
) -> None:
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
def ndvi_kernel(stack: np.ndarray, red_band: int, nir_band: int, out: np.ndarray) -> None:
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
# public API
# --------------------------------------------------------------------------------------------


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
            if not is_real(v) or not math.isfinite(v) or (v <= 0 if scale else v < 0):
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
    score: np.ndarray = sun_term + view_term + time_term + provider_term
    return score


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
    check_stack(stack)
    nt, _, ny, nx = stack.shape
    check_planes("cloud_distance", cloud_distance, (nt, ny, nx), np.float32, "(time, y, x)")
    if weights is None:
        weights = BestPixelWeights()
    if not isinstance(weights, BestPixelWeights):
        raise ValueError(f"weights must be a BestPixelWeights, got {type(weights).__name__}")
    sun = float_vector("sun_elevation", sun_elevation, nt)
    view = float_vector("view_angle", view_angle, nt)
    days = float_vector("days_from_target", days_from_target, nt)
    prank = rank_vector("provider_rank", provider_rank, nt)
    order = time_order(time, nt)
    obs = _best_pixel_observation_score(weights, sun, view, days, prank)
    out, source, count = mosaic_outputs(stack, True)
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
    check_stack(stack)
    nt, _, ny, nx = stack.shape
    check_planes("key", key, (nt, ny, nx), np.float32, "(time, y, x)")
    order = time_order(time, nt)
    out, source, count = mosaic_outputs(stack, True)
    composite_quality_kernel(stack, key, order, out, source, count)
    return out, source, count


def ndvi(stack: np.ndarray, red_band: int, nir_band: int) -> np.ndarray:
    """(T, y, x) float32 NDVI (nir - red) / (nir + red) of stack (time, band, y, x), computed
    in float64; NaN where red or nir is not finite or nir + red == 0. A new (T, y, x) array
    (the only allocation; use it as the ``key`` of :func:`composite_quality`)."""
    check_stack(stack)
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

