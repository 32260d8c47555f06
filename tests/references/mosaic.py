"""Plain vectorised NumPy references for :mod:`pipeline.kernels.reduce`,
:mod:`pipeline.kernels.scored`, :mod:`pipeline.kernels.order` and :mod:`pipeline.kernels.blend`
(no numba).

Written from the kernels' specifications, not from their loops: whole-array NumPy with the
arithmetic each docstring specifies (float64 where the kernel promises float64), so that an
exact comparison checks the semantics. Axis order is (time, band, y, x); NaN = no data; an
observation is valid iff every band is finite. The distance transforms are brute force
(O(pixels * features)): small arrays only.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "blend_weights_reference",
    "cloud_distance_reference",
    "composite_best_pixel_reference",
    "composite_blend_reference",
    "composite_earliest_reference",
    "composite_max_reference",
    "composite_mean_reference",
    "composite_medoid_reference",
    "composite_min_reference",
    "composite_percentile_reference",
    "composite_priority_reference",
    "composite_quality_reference",
    "edge_distance_reference",
    "ndvi_reference",
]


def _valid(stack: np.ndarray) -> np.ndarray:
    """(time, y, x) bool: every band finite."""
    return np.isfinite(stack).all(axis=1)


def _order(time, nt: int) -> np.ndarray:
    """(T,) rank of each observation by (time, index): the tie-break key, higher = later."""
    if time is None:
        return np.arange(nt)
    time = np.asarray(time)
    if time.dtype.kind == "M":
        time = time.view(np.int64)
    # stable argsort by time = order by (time, index)
    return np.argsort(np.argsort(time, kind="stable"), kind="stable")


def _pick(stack: np.ndarray, candidate: np.ndarray, score: np.ndarray, order: np.ndarray):
    """Choose per pixel among candidate (T, y, x) observations the highest score (T, y, x),
    then the highest order (T,); returns (out, source, count=candidates per pixel)."""
    nt, nb, ny, nx = stack.shape
    count = candidate.sum(axis=0).astype(np.uint16)
    if nt == 0:
        return (
            np.full((nb, ny, nx), np.nan, np.float32),
            np.full((ny, nx), -1, np.int32),
            count,
        )
    has = np.asarray(candidate.any(axis=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # All-NaN slice
        best = np.nanmax(np.where(candidate, score, np.nan), axis=0)
    winners = candidate & (score == best[None])
    key = np.where(winners, np.asarray(order)[:, None, None], -1)
    t = np.argmax(key, axis=0)
    source = np.where(has, t, -1).astype(np.int32)
    out = np.take_along_axis(stack, t[None, None], axis=0)[0]
    out = np.where(has[None], out, np.float32(np.nan)).astype(np.float32)
    return out, source, count


# --------------------------------------------------------------------------------------------
# single-observation methods
# --------------------------------------------------------------------------------------------


def composite_earliest_reference(stack: np.ndarray):
    """(earliest valid (band, y, x) float32, source t (y, x) int32 or -1, count uint16)."""
    nt = stack.shape[0]
    valid = _valid(stack)
    count = valid.sum(axis=0).astype(np.uint16)
    if nt == 0:
        return (
            np.full(stack.shape[1:], np.nan, np.float32),
            np.full(stack.shape[2:], -1, np.int32),
            count,
        )
    has = np.asarray(valid.any(axis=0))
    first = np.argmax(valid, axis=0)  # lowest valid t (0 where none)
    source = np.where(has, first, -1).astype(np.int32)
    out = np.take_along_axis(stack, first[None, None], axis=0)[0]
    return np.where(has[None], out, np.float32(np.nan)).astype(np.float32), source, count


def composite_priority_reference(stack: np.ndarray, rank, time=None):
    """Lowest rank wins, then latest (time, index)."""
    nt, _, ny, nx = stack.shape
    score = -np.broadcast_to(np.asarray(rank, np.int64)[:, None, None], (nt, ny, nx))
    return _pick(stack, _valid(stack), score, _order(time, nt))


def composite_quality_reference(stack: np.ndarray, key: np.ndarray, time=None):
    """Highest key wins (NaN key = not a candidate), then latest (time, index)."""
    candidate = _valid(stack) & ~np.isnan(key)
    return _pick(stack, candidate, key, _order(time, stack.shape[0]))


def ndvi_reference(stack: np.ndarray, red_band: int, nir_band: int) -> np.ndarray:
    red = stack[:, red_band].astype(np.float64)
    nir = stack[:, nir_band].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        num = nir - red
        den = nir + red
        ok = np.isfinite(red) & np.isfinite(nir) & (den != 0)
        v = num / np.where(ok, den, 1.0)
    return np.where(ok, v, np.nan).astype(np.float32)


def best_pixel_score_reference(
    cloud_distance: np.ndarray, weights, sun_elevation, view_angle, days_from_target,
    provider_rank,
) -> np.ndarray:
    """(T, y, x) float64 score as specified in ``composite_best_pixel``'s docstring."""
    w = weights
    d = cloud_distance.astype(np.float64)
    d = np.where(d > 0, d, 0.0)  # NaN and <= 0 -> 0
    cloud = w.cloud * (np.minimum(d, w.cloud_distance_max) / w.cloud_distance_max)
    sun = np.asarray(sun_elevation, np.float64)
    view = np.asarray(view_angle, np.float64)
    days = np.asarray(days_from_target, np.float64)
    prank = np.asarray(provider_rank, np.float64)
    per_obs = (
        w.sun * (sun / 90.0)
        + w.view * (1.0 - view / w.view_max)
        + w.time * np.exp(-np.abs(days) / w.time_scale)
        + w.provider * (1.0 / (1.0 + prank))
    )
    return cloud + per_obs[:, None, None]


def composite_best_pixel_reference(
    stack, cloud_distance, weights, sun_elevation, view_angle, days_from_target, provider_rank,
    time=None,
):
    """(out, source, count, score float32) of the highest score, then latest (time, index)."""
    score = best_pixel_score_reference(
        cloud_distance, weights, sun_elevation, view_angle, days_from_target, provider_rank
    )
    valid = _valid(stack)
    out, source, count = _pick(stack, valid, score, _order(time, stack.shape[0]))
    if stack.shape[0] == 0:
        return out, source, count, np.full(source.shape, np.nan, np.float32)
    chosen = np.take_along_axis(score, np.maximum(source, 0)[None], axis=0)[0]
    best = np.where(source >= 0, chosen, np.nan).astype(np.float32)
    return out, source, count, best


def composite_medoid_reference(stack: np.ndarray, time=None):
    """Minimum float64 squared distance to the per-band nanmedian, then latest."""
    nt, nb = stack.shape[:2]
    valid = _valid(stack)
    data = np.where(valid[:, None], stack.astype(np.float64), np.nan)
    if nt == 0:
        med = np.full(stack.shape[1:], np.nan)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(data, axis=0)
    dist = np.zeros((nt,) + stack.shape[2:])
    for b in range(nb):  # bands summed in order, as specified
        dist = dist + (data[:, b] - med[b][None]) ** 2
    return _pick(stack, valid, -dist, _order(time, nt))


# --------------------------------------------------------------------------------------------
# per-band statistics
# --------------------------------------------------------------------------------------------


def composite_mean_reference(stack: np.ndarray):
    """float64 sum of the valid values in time order, / count, -> float32."""
    valid = _valid(stack)
    count = valid.sum(axis=0)
    total = np.full(stack.shape[1:], -0.0)
    for t in range(stack.shape[0]):  # explicit time order: the sum's rounding is specified
        total = total + np.where(valid[t][None], stack[t].astype(np.float64), -0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    out = np.where(count > 0, mean, np.nan).astype(np.float32)
    return out, count.astype(np.uint16)


def _extreme(stack: np.ndarray, largest: bool):
    valid = _valid(stack)
    count = valid.sum(axis=0).astype(np.uint16)
    fill = -np.inf if largest else np.inf
    data = np.where(valid[:, None], stack, np.float32(fill))
    if stack.shape[0] == 0:
        return np.full(stack.shape[1:], np.nan, np.float32), count
    v = data.max(axis=0) if largest else data.min(axis=0)
    # signed zeros: -0.0 < +0.0
    zero = valid[:, None] & (stack == 0)
    neg = (zero & np.signbit(stack)).any(axis=0)
    pos = (zero & ~np.signbit(stack)).any(axis=0)
    if largest:
        v = np.where(v == 0, np.where(pos, np.float32(0.0), np.float32(-0.0)), v)
    else:
        v = np.where(v == 0, np.where(neg, np.float32(-0.0), np.float32(0.0)), v)
    return np.where(count[None] > 0, v, np.float32(np.nan)).astype(np.float32), count


def composite_min_reference(stack: np.ndarray):
    return _extreme(stack, largest=False)


def composite_max_reference(stack: np.ndarray):
    return _extreme(stack, largest=True)


def composite_percentile_reference(stack: np.ndarray, q: float):
    """np.nanpercentile (default 'linear') in float64 of the valid observations -> float32."""
    valid = _valid(stack)
    count = valid.sum(axis=0).astype(np.uint16)
    if stack.shape[0] == 0:
        return np.full(stack.shape[1:], np.nan, np.float32), count
    data = np.where(valid[:, None], stack.astype(np.float64), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = np.nanpercentile(data, q, axis=0)
    return np.asarray(p).astype(np.float32), count


# --------------------------------------------------------------------------------------------
# distance transforms and seam blending
# --------------------------------------------------------------------------------------------


def _brute_edt(feature: np.ndarray) -> np.ndarray:
    """(T, y, x) float32 distance to the nearest True of feature[t], +inf if none."""
    nt, ny, nx = feature.shape
    out = np.full(feature.shape, np.inf, dtype=np.float32)
    yy, xx = np.mgrid[:ny, :nx]
    for t in range(nt):
        fy, fx = np.nonzero(feature[t])
        if fy.size == 0:
            continue
        d2 = (yy[..., None] - fy) ** 2 + (xx[..., None] - fx) ** 2  # (y, x, features)
        out[t] = np.sqrt(d2.min(axis=-1).astype(np.float64)).astype(np.float32)
    return out


def cloud_distance_reference(masked: np.ndarray) -> np.ndarray:
    return _brute_edt(np.asarray(masked, bool))


def edge_distance_reference(valid: np.ndarray) -> np.ndarray:
    return _brute_edt(~np.asarray(valid, bool))


def blend_weights_reference(valid: np.ndarray, width: float) -> np.ndarray:
    d = edge_distance_reference(valid).astype(np.float64)
    return np.minimum(d / width, 1.0).astype(np.float32)


def composite_blend_reference(stack: np.ndarray, base_source: np.ndarray, weights: np.ndarray):
    """(out (band, y, x) float32, main_weight (y, x) float32) as specified in composite_blend."""
    nt, nb, ny, nx = stack.shape
    w = np.nan_to_num(weights.astype(np.float64), nan=0.0)
    w = np.minimum(w, 1.0)
    cand = _valid(stack) & (w > 0)
    w = np.where(cand, w, 0.0)
    wsum = np.zeros((ny, nx))
    total = np.full((nb, ny, nx), -0.0)
    with np.errstate(invalid="ignore", over="ignore"):  # (0 * inf where not a candidate)
        for t in range(nt):  # explicit time order
            wsum = wsum + w[t]
            wv = w[t][None] * stack[t].astype(np.float64)
            total = total + np.where(cand[t][None], wv, -0.0)
    s = np.asarray(base_source)
    has = s >= 0
    sc = np.maximum(s, 0)
    if nt:
        wmain = np.where(has, np.take_along_axis(w, sc[None], axis=0)[0], 0.0)
        base = np.take_along_axis(stack, sc[None, None], axis=0)[0]
    else:
        wmain = np.zeros((ny, nx))
        base = np.full((nb, ny, nx), np.nan, np.float32)
    keep = (wmain >= 1.0) | (wsum <= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        blended = (total / wsum).astype(np.float32)
        share = (wmain / wsum).astype(np.float32)
    out = np.where(keep[None], base, blended)
    main_weight = np.where(keep, np.float32(1.0), share)
    out = np.where(has[None], out, np.float32(np.nan)).astype(np.float32)
    main_weight = np.where(has, main_weight, np.float32(np.nan)).astype(np.float32)
    return out, main_weight
