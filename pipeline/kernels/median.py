"""Compositing kernels: merge scenes into a time slot, and reduce a (time, band, y, x) stack to a
mosaic (median or latest valid observation).

An observation (t, y, x) is valid iff every band is finite (NaN = no data). The ``*_kernel``
functions are the raw ``numba.njit`` loops (no checks; callable from other jitted code); the
public functions validate their arguments and raise ``ValueError`` naming the offending one.

The median (numpy.nanmedian convention, even count -> float64 mean of the two middle values; -0.0
ranks before +0.0, so the result is bit-identical for any order of the time axis) sorts int32
keys of the values with a sorting network (Batcher's odd-even merge sort pruned to T wires and to
the median ranks) applied to a tile of pixels x all bands at once: branch-free, vectorised across
pixels. Sorting network: ~9x faster than the per-pixel insertion sort at T=24, 1024^2, 4 bands,
20 % invalid (0.29-0.32 s vs 2.8-2.9 s on a shared 2-core AMD EPYC; benchmarks/kernels.py:
19-45x numpy.nanmedian; 55x, 0.110 s, with the tiles below). Tiles are whole rows (each slot
and band one contiguous run of the stack), slots without data in a tile are left out of its
network, and every inner loop is integer arithmetic without branches: on the peers
benchmark's 256 px parts of 36 slots, 3.6-4.5x faster than 64 px tiles with per-pixel tests
(the 1024 px job's medians, in-process: 2.1 s -> 0.55 s). For T > _NETWORK_MAX_T it falls
back to the per-pixel insertion sort / quickselect (_median, :mod:`pipeline.kernels.order`),
which the network still beat 4x at T=1024 and 2x at T=4096.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from pipeline.kernels.checks import check_stack, describe
from pipeline.kernels.order import _TILE_X, _load_tile, _median, _valid_times

__all__ = [
    "composite_latest",
    "composite_latest_kernel",
    "composite_median",
    "composite_median_kernel",
    "keep_valid",
    "keep_valid_kernel",
    "merge_first_valid",
    "merge_first_valid_kernel",
]

# Up to this many observations (T) the median sorts with a sorting network vectorised across
# pixels (_median_network_kernel); above it, pixel by pixel with _median.
_NETWORK_MAX_T = 1024
# Up to this many time slots with data in a tile, the tile is sorted by a network of exactly
# that many wires (_network_wires); above, by one of a few sizes per octave.
_EXACT_WIRES = 64
# Bytes of the sorting-network median's keys per tile (_network_lanes).
_NETWORK_KEY_BYTES = 512 * 1024
# Sort key of an invalid observation: above the key of every finite float32, so it sorts last.
_KEY_INVALID = np.int32(np.iinfo(np.int32).max)
_ABS_MASK = np.int32(0x7FFFFFFF)
_EXP_MASK = np.int32(0x7F800000)
_SIGN_SHIFT = np.int32(31)
# (bits & _EXP_MASK) + _EXP_CARRY has the sign bit set iff the exponent is all ones (inf, NaN).
_EXP_CARRY = np.int32(0x00800000)


# --------------------------------------------------------------------------------------------
# jitted kernels
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True, inline="always")
def _and_finite_row(a: np.ndarray, y: int, ok: np.ndarray) -> None:
    """ok[x] &= every band of a (band, y, x) is finite at (y, x), along row y's contiguous runs."""
    for b in range(a.shape[0]):
        row = a[b, y]
        for x in range(ok.shape[0]):
            ok[x] = ok[x] & np.isfinite(row[x])


@numba.njit(cache=True, nogil=True)
def merge_first_valid_kernel(scene: np.ndarray, masked: np.ndarray, slot: np.ndarray) -> int:
    """Copy valid, unmasked pixels of scene (band, y, x) reflectance into the still-empty
    (slot[0] NaN) pixels of slot (band, y, x); return the number of pixels copied.

    Row by row, each test a loop along a contiguous row (the per-pixel loop over bands it
    replaced took 15 ms for a (4, 1024, 1024) scene here, this 3-4 ms)."""
    nb = scene.shape[0]
    ny = scene.shape[1]
    nx = scene.shape[2]
    take = np.empty(nx, np.bool_)
    copied = 0
    for y in range(ny):
        first = slot[0, y]
        for x in range(nx):
            take[x] = (not masked[y, x]) & np.isnan(first[x])
        _and_finite_row(scene, y, take)
        n = 0
        for x in range(nx):
            n += take[x]
        if n:
            copied += n
            for b in range(nb):
                src = scene[b, y]
                dst = slot[b, y]
                for x in range(nx):
                    if take[x]:
                        dst[x] = src[x]
    return copied


@numba.njit(cache=True, nogil=True)
def keep_valid_kernel(values: np.ndarray, masked: np.ndarray) -> int:
    """Keep the valid, unmasked pixels of values (band, y, x) in place: where a pixel is masked
    or any band is not finite, every band becomes NaN. Return the number of pixels kept.

    For a slot's first scene gathered straight into the slot's all-NaN plane: the plane then
    holds what :func:`merge_first_valid_kernel` would have copied into it, bit for bit (kept
    pixels are the scene's values, the others the same NaN), without the scene's own buffer or
    the merge's pass. Row by row: the per-band finiteness tests run along contiguous rows."""
    nb = values.shape[0]
    ny = values.shape[1]
    nx = values.shape[2]
    nan = np.float32(np.nan)
    ok = np.empty(nx, np.bool_)
    kept = 0
    for y in range(ny):
        for x in range(nx):
            ok[x] = not masked[y, x]
        _and_finite_row(values, y, ok)
        bad = 0
        for x in range(nx):
            bad += not ok[x]
        kept += nx - bad
        if bad:
            for b in range(nb):
                row = values[b, y]
                for x in range(nx):
                    if not ok[x]:
                        row[x] = nan
    return kept


@numba.njit(cache=True, nogil=True)
def _median_network(nt: int) -> tuple[np.ndarray, np.ndarray]:
    """Comparators (lo[c] < hi[c]; min to lo, max to hi, applied in order c = 0, 1, ...) of
    Batcher's odd-even merge sort of the next power of two >= nt, restricted to the wires < nt
    (with +inf on the others those comparators are no-ops) and to the comparators that ranks
    0..nt // 2 (every median rank of 1..nt values) depend on."""
    p2 = 1
    while p2 < nt:
        p2 *= 2
    lo = []
    hi = []
    p = 1
    while p < p2:
        k = p
        while k >= 1:
            for j in range(k % p, p2 - k, 2 * k):
                for i in range(min(k, p2 - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < nt:
                        lo.append(i + j)
                        hi.append(i + j + k)
            k //= 2
        p *= 2
    live = np.zeros(max(nt, 1), dtype=np.bool_)
    live[: nt // 2 + 1] = True
    keep = np.zeros(len(lo), dtype=np.bool_)
    for c in range(len(lo) - 1, -1, -1):
        if live[lo[c]] or live[hi[c]]:
            keep[c] = True
            live[lo[c]] = True
            live[hi[c]] = True
    n = 0
    for c in range(len(lo)):
        n += keep[c]
    out_lo = np.empty(n, dtype=np.int64)
    out_hi = np.empty(n, dtype=np.int64)
    n = 0
    for c in range(len(lo)):
        if keep[c]:
            out_lo[n] = lo[c]
            out_hi[n] = hi[c]
            n += 1
    return out_lo, out_hi


@numba.njit(cache=True, nogil=True)
def _network_wires(nt: int) -> np.ndarray:
    """wires[r], r = 0..nt: the size of the network that sorts a tile in which r of the nt time
    slots hold a valid observation: r itself up to _EXACT_WIRES, above that r rounded up to a
    multiple of 2 ** (bit length of r - 4) (8 sizes per octave, at most nt): fewer networks to
    build for long time axes, at most 1/8 more wires (the extra ones hold invalid keys)."""
    wires = np.empty(nt + 1, dtype=np.int64)
    for r in range(nt + 1):
        if r <= _EXACT_WIRES:
            wires[r] = r
        else:
            bits = 0
            v = r
            while v:
                bits += 1
                v >>= 1
            step = 1 << (bits - 4)
            wires[r] = min(nt, (r + step - 1) // step * step)
    return wires


@numba.njit(cache=True, nogil=True)
def _median_networks(nt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, start, wires): the comparators of _median_network(n) for every network size n
    that ``wires`` (_network_wires(nt)) names, concatenated: those of size n are
    lo[start[n]:start[n + 1]] (empty for a size not used)."""
    wires = _network_wires(nt)
    top = wires[nt]
    used = np.zeros(top + 1, dtype=np.bool_)
    for r in range(nt + 1):
        used[wires[r]] = True
    total = 0
    for n in range(top + 1):
        if used[n]:
            total += _median_network(n)[0].shape[0]
    lo = np.empty(total, dtype=np.int16)  # wire numbers < _NETWORK_MAX_T + 1: 1/4 of int64
    hi = np.empty(total, dtype=np.int16)
    start = np.zeros(top + 2, dtype=np.int64)
    k = 0
    for n in range(top + 1):
        start[n] = k
        if used[n]:
            a, b = _median_network(n)
            lo[k:k + a.shape[0]] = a
            hi[k:k + a.shape[0]] = b
            k += a.shape[0]
    start[top + 1] = k
    return lo, hi, start, wires


@numba.njit(cache=True, nogil=True)
def _median_network_kernel(
    bits: np.ndarray,
    out: np.ndarray,
    count: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    start: np.ndarray,
    wires: np.ndarray,
) -> None:
    """composite_median_kernel with sorting networks (from _median_networks(T)) on the int32
    bits of a float32 stack (time, band, y, x; fastest C-contiguous), applied to tiles of about
    _network_lanes pixels at once, all bands together: branch-free and vectorised across pixels.

    A tile is whole rows where a row fits in ``lanes`` (so each (slot, band) of the tile is one
    contiguous run of the stack: a 64 px tile read 4 x 36 runs of 256 bytes, which the
    hardware prefetchers cannot follow; 3.6x slower on the benchmark's parts), else a piece of
    one row. Each float32 is mapped to the int32 key bits ^ ((bits >> 31) & 0x7FFFFFFF),
    monotone and with -0.0 < +0.0 (the map is its own inverse); an invalid observation (a band
    inf or NaN: exponent all ones, found as the carry of (bits & _EXP_MASK) + _EXP_CARRY into
    the sign) gets _KEY_INVALID, so the n valid ones are the first n after sorting. Every inner
    loop is integer arithmetic on contiguous runs, without branches (vectorised by LLVM).

    A time slot with no valid observation in the tile is left out of it (a scene covers part
    of the grid), and the tile is sorted by the network of the r slots left (wires[r] wires,
    the extra ones filled with invalid keys): the same ranks, so the same bits, with fewer
    comparators (238 for 36 wires, 119 for 24)."""
    nt = bits.shape[0]
    nb = bits.shape[1]
    ny = bits.shape[2]
    nx = bits.shape[3]
    if ny == 0 or nx == 0:  # nothing to reduce (count and out are the caller's, untouched)
        return
    lanes = _network_lanes(nb, int(wires[nt]))
    wx = min(nx, lanes)
    ky = max(1, lanes // nx) if wx == nx else 1
    tile = ky * wx
    kw = nb * tile  # one kept slot's keys: band b of the tile at [b * m, (b + 1) * m)
    keys = np.empty(max(wires[nt], 1) * kw, dtype=np.int32)
    flags = np.empty(tile, dtype=np.int32)  # sign bit set: some band of the pixel is invalid
    n_valid = np.empty(tile, dtype=np.int32)
    pair = np.empty(2, dtype=np.int32)
    fpair = pair.view(np.float32)
    for y0 in range(0, ny, ky):
        kk = min(ky, ny - y0)
        for x0 in range(0, nx, wx):
            w = min(wx, nx - x0)
            m = kk * w  # pixels in this tile
            nv = n_valid[:m]
            nv[:] = 0
            fl = flags[:m]
            r = 0
            for t in range(nt):
                fl[:] = 0
                for b in range(nb):
                    for yy in range(kk):
                        src = bits[t, b, y0 + yy, x0:x0 + w]
                        dst = fl[yy * w:(yy + 1) * w]
                        for i in range(w):
                            dst[i] |= (src[i] & _EXP_MASK) + _EXP_CARRY
                good = 0
                for i in range(m):
                    good += 1 + (fl[i] >> _SIGN_SHIFT)
                if good == 0:
                    continue  # no valid observation in the tile: the slot is left out
                for i in range(m):
                    nv[i] += 1 + (fl[i] >> _SIGN_SHIFT)
                row = keys[r * kw:(r + 1) * kw]
                for b in range(nb):
                    for yy in range(kk):
                        src = bits[t, b, y0 + yy, x0:x0 + w]
                        dst = row[b * m + yy * w:b * m + (yy + 1) * w]
                        bad = fl[yy * w:(yy + 1) * w]
                        for i in range(w):
                            v = src[i]
                            v ^= (v >> _SIGN_SHIFT) & _ABS_MASK
                            s = bad[i] >> _SIGN_SHIFT  # all ones where invalid
                            dst[i] = (v & ~s) | (_KEY_INVALID & s)
                r += 1
            if r == 0:
                for yy in range(kk):
                    for i in range(w):
                        count[y0 + yy, x0 + i] = 0
                continue
            nw = wires[r]
            used = nb * m
            for rr in range(r, nw):
                keys[rr * kw:rr * kw + used] = _KEY_INVALID
            for c in range(start[nw], start[nw + 1]):
                ra = keys[lo[c] * kw:lo[c] * kw + used]
                rb = keys[hi[c] * kw:hi[c] * kw + used]
                for i in range(used):
                    a = ra[i]
                    b = rb[i]
                    ra[i] = min(a, b)
                    rb[i] = max(a, b)
            for yy in range(kk):
                for i in range(w):
                    j = yy * w + i
                    n = nv[j]
                    count[y0 + yy, x0 + i] = n
                    if n == 0:
                        continue
                    # ranks of the two middle values; equal for odd n, where (v + v) / 2 == v
                    # exactly in float64 (signed zeros included), so no branch on the parity
                    r_lo = (n - 1) // 2
                    r_hi = n // 2
                    for b in range(nb):
                        v = keys[r_lo * kw + b * m + j]
                        pair[0] = v ^ ((v >> _SIGN_SHIFT) & _ABS_MASK)
                        v = keys[r_hi * kw + b * m + j]
                        pair[1] = v ^ ((v >> _SIGN_SHIFT) & _ABS_MASK)
                        mean = (np.float64(fpair[0]) + np.float64(fpair[1])) / 2.0
                        out[b, y0 + yy, x0 + i] = np.float32(mean)


@numba.njit(cache=True, nogil=True)
def _network_lanes(nb: int, top: int) -> int:
    """Pixels per tile of _median_network_kernel: its keys (top wires x nb bands x lanes int32)
    within _NETWORK_KEY_BYTES (a core's L2 share), between 64 and 1024 (measured on the
    benchmark's 256 px parts of 36 slots: 64 lanes 0.106 s, 256 0.075, 512-1024 0.072, 2048
    0.074)."""
    per = 4 * nb * max(top, 1)
    return max(64, min(1024, _NETWORK_KEY_BYTES // per))


@numba.njit(cache=True, nogil=True)
def _median_select_kernel(stack: np.ndarray, out: np.ndarray, count: np.ndarray) -> None:
    """composite_median_kernel pixel by pixel with _median (for long time axes)."""
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
                    out[b, y, x0 + i] = np.float32(_median(buf, n))


@numba.njit(cache=True, nogil=True)
def composite_median_kernel(stack: np.ndarray, out: np.ndarray, count: np.ndarray) -> None:
    """Per pixel and band, median reflectance of the valid observations of stack
    (time, band, y, x) into out (band, y, x) (NaN-prefilled), their number into count (y, x)."""
    nt = stack.shape[0]
    if nt == 0:
        count[:] = 0
        return
    if nt <= _NETWORK_MAX_T:
        lo, hi, start, wires = _median_networks(nt)
        bits = np.ascontiguousarray(stack).view(np.int32)  # (numba views contiguous arrays
        # only: a non-contiguous stack is copied here; composite_median reads it in place)
        _median_network_kernel(bits, out, count, lo, hi, start, wires)
    else:
        _median_select_kernel(stack, out, count)


@numba.njit(cache=True, nogil=True)
def composite_latest_kernel(
    stack: np.ndarray, out: np.ndarray, source: np.ndarray, count: np.ndarray
) -> None:
    """Per pixel, copy all bands of the valid observation with the highest t of stack
    (time ascending, band, y, x) into out (band, y, x); that t into source, the valid count."""
    nt = stack.shape[0]
    nb = stack.shape[1]
    ny = stack.shape[2]
    nx = stack.shape[3]
    ok = np.empty(nx, dtype=np.bool_)
    for y in range(ny):  # row at a time: sequential reads along x
        for x in range(nx):
            count[y, x] = 0
            source[y, x] = -1
        for t in range(nt):
            for x in range(nx):
                ok[x] = True
            for b in range(nb):
                for x in range(nx):
                    if not np.isfinite(stack[t, b, y, x]):
                        ok[x] = False
            for x in range(nx):
                if ok[x]:
                    count[y, x] += 1
                    source[y, x] = t
        for b in range(nb):
            for x in range(nx):
                t = source[y, x]
                if t >= 0:
                    out[b, y, x] = stack[t, b, y, x]


# --------------------------------------------------------------------------------------------
# validating wrappers
# --------------------------------------------------------------------------------------------


def _check_masked(masked: np.ndarray, shape: tuple[int, ...]) -> None:
    if not isinstance(masked, np.ndarray) or masked.dtype != np.bool_ or masked.shape != shape:
        raise ValueError(
            f"masked must be a bool array of shape {shape} (y, x), got {describe(masked)}"
        )


def merge_first_valid(scene: np.ndarray, masked: np.ndarray, slot: np.ndarray) -> int:
    """Fill the empty pixels of slot (band, y, x) with the valid, unmasked pixels of scene
    (band, y, x) in place (first scene wins); return the number of pixels copied."""
    if not isinstance(scene, np.ndarray) or scene.ndim != 3 or scene.dtype != np.float32:
        raise ValueError(f"scene must be a 3-D float32 (band, y, x) array, got {describe(scene)}")
    if scene.shape[0] < 1:
        raise ValueError("scene must have at least one band")
    _check_masked(masked, scene.shape[1:])
    if not isinstance(slot, np.ndarray) or slot.dtype != np.float32 or slot.shape != scene.shape:
        raise ValueError(
            f"slot must be a float32 array of shape {scene.shape} (band, y, x), got "
            f"{describe(slot)}"
        )
    if not slot.flags.writeable:
        raise ValueError("slot must be writeable")
    return int(merge_first_valid_kernel(scene, masked, slot))


def keep_valid(values: np.ndarray, masked: np.ndarray) -> int:
    """Set every band of values (band, y, x) to NaN where ``masked`` (y, x) or a band is not
    finite, in place; return the number of pixels kept (:func:`keep_valid_kernel`)."""
    if not isinstance(values, np.ndarray) or values.ndim != 3 or values.dtype != np.float32:
        raise ValueError(f"values must be a 3-D float32 (band, y, x) array, got "
                         f"{describe(values)}")
    if values.shape[0] < 1:
        raise ValueError("values must have at least one band")
    _check_masked(masked, values.shape[1:])
    if not values.flags.writeable:
        raise ValueError("values must be writeable")
    return int(keep_valid_kernel(values, masked))


def composite_median(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median reflectance over the valid observations of stack (time, band, y, x): returns
    (out (band, y, x) float32, NaN where none; count (y, x) uint16 of valid observations)."""
    check_stack(stack)
    nt, nb, ny, nx = stack.shape
    out = np.full((nb, ny, nx), np.nan, dtype=np.float32)
    count = np.zeros((ny, nx), dtype=np.uint16)
    if 0 < nt <= _NETWORK_MAX_T:  # composite_median_kernel, the networks built once per T
        lo, hi, start, wires = _networks(nt)
        # the bits of the stack as it is (a view: a cropped or strided stack is not copied;
        # its runs are then read through strides)
        _median_network_kernel(stack.view(np.int32), out, count, lo, hi, start, wires)
    else:
        composite_median_kernel(stack, out, count)
    return out, count


@functools.lru_cache(maxsize=8)
def _networks(nt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """_median_networks(nt), kept: 0.1 ms to build at T = 36, 5.5 ms at T = 1024, against a
    kernel call of a few ms on a small part. 8 time-axis lengths at most (a run's chunk tasks
    have a few): 0.95 MB at T = 1024, 96 kB at T = 144, 14 kB at T = 36."""
    return _median_networks(nt)


def composite_latest(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latest valid observation of stack (time ascending, band, y, x): returns (out (band, y, x)
    float32, NaN where none; source (y, x) int32 time index, -1 where none; count (y, x) uint16)."""
    check_stack(stack)
    _, nb, ny, nx = stack.shape
    out = np.full((nb, ny, nx), np.nan, dtype=np.float32)
    source = np.full((ny, nx), -1, dtype=np.int32)
    count = np.zeros((ny, nx), dtype=np.uint16)
    composite_latest_kernel(stack, out, source, count)
    return out, source, count
