"""Streaming mosaic updates: fold one time slot at a time into a small state.

The methods that need no more than the best observation so far (latest, earliest, priority,
best-pixel, quality) and the running reductions (mean, min, max) are computed slot by slot, so a
chunk task holds O(B·Y·X) state whatever the number of slots. Each update follows exactly the
rules of the stack kernels in :mod:`pipeline.kernels.reduce`, :mod:`pipeline.kernels.scored`
and :mod:`pipeline.kernels.median` (slots arrive in ascending time, so "ties -> the later
observation" is ``>=``); a test checks the two paths give identical bytes.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _valid_pixels(slot: np.ndarray, y: int, ok: np.ndarray) -> None:
    """ok[x] = every band of slot (band, y, x) is finite at (y, x)."""
    for x in range(slot.shape[2]):
        ok[x] = True
    for b in range(slot.shape[0]):
        for x in range(slot.shape[2]):
            if not np.isfinite(slot[b, y, x]):
                ok[x] = False


@numba.njit(cache=True, nogil=True)
def stream_pick(
    slot: np.ndarray,
    key: np.ndarray,
    k: int,
    out: np.ndarray,
    source: np.ndarray,
    count: np.ndarray,
    best: np.ndarray,
) -> None:
    """Single-source update: where the slot is valid and key[y, x] is not NaN, count it; take it
    (all bands, source = k) if nothing is chosen yet or key >= best (later wins ties).
    latest: key 0; earliest: key -k; priority: key -rank; best-pixel: its score; quality: key."""
    ok = np.empty(slot.shape[2], dtype=np.bool_)
    for y in range(slot.shape[1]):
        _valid_pixels(slot, y, ok)
        for x in range(slot.shape[2]):
            if not ok[x]:
                continue
            kk = key[y, x]
            if np.isnan(kk):
                continue
            count[y, x] += 1
            if source[y, x] < 0 or kk >= best[y, x]:
                source[y, x] = k
                best[y, x] = kk
                for b in range(slot.shape[0]):
                    out[b, y, x] = slot[b, y, x]


@numba.njit(cache=True, nogil=True)
def stream_sum(slot: np.ndarray, acc: np.ndarray, count: np.ndarray) -> None:
    """Mean update: float64 running sum per band (start the accumulator at -0.0) and count."""
    ok = np.empty(slot.shape[2], dtype=np.bool_)
    for y in range(slot.shape[1]):
        _valid_pixels(slot, y, ok)
        for x in range(slot.shape[2]):
            if ok[x]:
                count[y, x] += 1
        for b in range(slot.shape[0]):
            for x in range(slot.shape[2]):
                if ok[x]:
                    acc[b, y, x] += slot[b, y, x]


@numba.njit(cache=True, nogil=True)
def stream_extreme(slot: np.ndarray, out: np.ndarray, count: np.ndarray, largest: bool) -> None:
    """Min (largest False) or max update per band, -0.0 < +0.0 (out NaN-prefilled)."""
    ok = np.empty(slot.shape[2], dtype=np.bool_)
    for y in range(slot.shape[1]):
        _valid_pixels(slot, y, ok)
        for b in range(slot.shape[0]):
            for x in range(slot.shape[2]):
                if not ok[x]:
                    continue
                v = slot[b, y, x]
                cur = out[b, y, x]
                if largest:
                    take = not v <= cur or (
                        v == 0.0 and cur == 0.0 and math.copysign(1.0, cur) < 0.0
                    )
                else:
                    take = not v >= cur or (
                        v == 0.0 and cur == 0.0 and math.copysign(1.0, v) < 0.0
                    )
                if take:
                    out[b, y, x] = v
        for x in range(slot.shape[2]):
            if ok[x]:
                count[y, x] += 1


@numba.njit(cache=True, nogil=True)
def best_pixel_key(
    distance: np.ndarray, w_cloud: float, d_max: float, obs_score: float, key: np.ndarray
) -> None:
    """key[y, x] = w_cloud * f(d) + obs_score, f(d) = min(d, d_max) / d_max (NaN, d <= 0 -> 0):
    the best-pixel score of one observation, computed as the stack kernel does."""
    for y in range(distance.shape[0]):
        for x in range(distance.shape[1]):
            d = np.float64(distance[y, x])
            if not d > 0.0:
                f = 0.0
            elif d >= d_max:
                f = 1.0
            else:
                f = d / d_max
            key[y, x] = w_cloud * f + obs_score


@numba.njit(cache=True, nogil=True)
def finish_mean(acc: np.ndarray, count: np.ndarray, out: np.ndarray) -> None:
    for b in range(acc.shape[0]):
        for y in range(acc.shape[1]):
            for x in range(acc.shape[2]):
                if count[y, x] > 0:
                    out[b, y, x] = np.float32(acc[b, y, x] / count[y, x])
