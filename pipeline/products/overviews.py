"""Overview levels (a multiscale pyramid) inside every product store, built chunk by chunk.

Layout: the full-resolution variables stay at the store's root (so GDAL, xarray and every tool
that opened a product before still does); level ``k`` (``k`` = 1, 2, …) is the group
``overviews/<k>``, holding the same variables at 1/2**k of the resolution, with its own ``x``/``y``
coordinates (pixel centres), ``spatial_ref`` and chunks of ``chunk // 2**k`` pixels. Because a
product's chunk is a multiple of 2**k, the pixels of one full-resolution chunk map to exactly one
chunk of each level: the chunk task that writes a chunk also writes its overview chunks
(:func:`level_writes`), so the pyramid needs no second pass and no task touches another's chunk.

Reflectance is averaged over the valid (non-NaN) pixels of each 2 × 2 block of the level below;
``count`` takes the block's largest; the other lineage layers (``source``, ``score``, ``weight``)
the block's first valid pixel, so a coarse pixel with reflectance names an observation that
exists (:mod:`pipeline.kernels.pyramid`).

The root attribute ``multiscales`` follows the Zarr multiscales convention
(github.com/zarr-conventions/multiscales, v0.1): one layout entry per level with the scale
relative to the level it was derived from, its ``proj:shape`` and ``proj:transform``. The
full-resolution level is the root itself, which the convention cannot name as a child, so the
first entry has no ``derived_from``; ``aquila:overviews`` lists the factors (2, 4, …) for readers
that want them plainly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

OVERVIEWS = "overviews"
NEAREST = frozenset({"count", "source", "score", "weight"})  # lineage layers: never averaged
MIN_SIDE = 256  # no level is added once the previous level fits in this many pixels a side
MIN_CHUNK = 16  # nor when its chunks would be smaller than this


def level_path(k: int) -> str:
    return f"{OVERVIEWS}/{k}"


def levels_for(shape: Sequence[int], chunk: int) -> list[int]:
    """The overview levels (1, 2, …) of a product of ``shape`` (…, y, x) with square chunks of
    ``chunk``: halve while the previous level is larger than :data:`MIN_SIDE` and the chunk
    still divides evenly into chunks of at least :data:`MIN_CHUNK`."""
    side = max(int(shape[-1]), int(shape[-2]))
    levels: list[int] = []
    k = 1
    while -(-side // 2 ** (k - 1)) > MIN_SIDE and chunk % 2**k == 0 and chunk >> k >= MIN_CHUNK:
        levels.append(k)
        k += 1
    return levels


def level_shape(shape: Sequence[int], k: int) -> tuple[int, ...]:
    f = 2**k
    return (*(int(v) for v in shape[:-2]), -(-int(shape[-2]) // f), -(-int(shape[-1]) // f))


def level_transform(transform: Sequence[float], k: int) -> list[float]:
    """The GDAL-order affine (a, b, c, d, e, f) of level ``k`` (same origin, 2**k × the pixel)."""
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    s = float(2**k)
    return [a * s, b * s, c, d * s, e * s, f]


def multiscales(shape: Sequence[int], transform: Sequence[float], levels: Sequence[int]
                ) -> dict[str, Any]:
    """The root attributes describing ``levels`` (``multiscales`` and ``aquila:overviews``)."""
    layout = []
    for k in levels:
        entry: dict[str, Any] = {
            "asset": level_path(k),
            "transform": {"scale": [2.0 ** (k if k == levels[0] else 1)] * 2,
                          "translation": [0.0, 0.0]},
            "resampling_method": "average",
            "proj:shape": list(level_shape(shape, k)[-2:]),
            "proj:transform": level_transform(transform, k),
        }
        if k != levels[0]:
            entry["derived_from"] = level_path(k - 1)
        layout.append(entry)
    return {
        "multiscales": {"layout": layout, "resampling_method": "average"},
        "aquila:overviews": [2**k for k in levels],
    }


def downsample(name: str, values: np.ndarray) -> np.ndarray:
    """One level down (2 × 2 blocks over the last two axes; an odd edge keeps its half block):
    ``count`` the block's largest, the other lineage layers the block's first valid value (so
    a coarse pixel with reflectance names an observation), reflectance the mean of the valid.
    (The numba kernels are imported here, where chunks are written, not with the layout.)"""
    from pipeline.kernels.pyramid import first_valid2x2, max2x2, mean2x2, nearest2x2

    if name == "count":
        return max2x2(values)
    if name in NEAREST:
        return first_valid2x2(values)
    if values.dtype.kind != "f":
        return nearest2x2(values)
    return mean2x2(np.ascontiguousarray(values, dtype=np.float32))


def level_selection(sel: tuple, k: int) -> tuple:
    """The selection of level ``k`` covering full-resolution selection ``sel`` (whose y/x
    slices start on a chunk boundary, so the result is exactly one chunk of the level)."""
    f = 2**k
    *lead, ys, xs = sel
    return (*lead, slice(ys.start // f, -(-ys.stop // f)), slice(xs.start // f, -(-xs.stop // f)))


def level_writes(writes: Sequence[tuple[Any, tuple, np.ndarray]],
                 arrays: Mapping[tuple[int, str], Any], levels: Sequence[int]
                 ) -> list[tuple[Any, tuple, np.ndarray]]:
    """The overview writes for full-resolution ``writes`` (array, selection, values):
    ``arrays[(k, name)]`` is variable ``name`` of level ``k``."""
    out = []
    for array, sel, values in writes:
        name = str(array.path).rsplit("/", 1)[-1]
        current = values
        for k in levels:
            current = downsample(name, current)
            out.append((arrays[(k, name)], level_selection(sel, k), current))
    return out


def open_level(store: Any, *, max_side: int | None = None, level: int | None = None):
    """``(dataset, factor)``: the coarsest level of ``store`` whose larger side is still at
    least ``max_side`` pixels (or ``level`` exactly; 0 = full resolution), opened lazily with
    xarray. A store without overviews gives its full resolution and factor 1."""
    import xarray as xr

    base = xr.open_zarr(store, chunks={})
    factors = [int(v) for v in base.attrs.get("aquila:overviews", [])]
    if level is None:
        level = 0
        if max_side is not None:
            side = max(int(base.sizes["y"]), int(base.sizes["x"]))
            for k, f in enumerate(factors, start=1):
                if -(-side // f) >= max_side:
                    level = k
    if level == 0 or not factors:
        return base, 1
    if level > len(factors):
        raise ValueError(f"{store} has {len(factors)} overview levels, not {level}")
    return xr.open_zarr(store, group=level_path(level), chunks={}), factors[level - 1]


class Pyramid:
    """The overview writes of one chunk task's full-resolution writes (:func:`level_writes`),
    each level array opened once per task, all of a store's in one metadata fetch."""

    def __init__(self) -> None:
        self._arrays: dict[tuple[int, int, str], Any] = {}  # (id(store), level, name) -> array

    def __call__(self, writes: Sequence[tuple[Any, tuple, np.ndarray]], *, threads: int = 1
                 ) -> list[tuple[Any, tuple, np.ndarray]]:
        """``threads``: how many threads downsample (each write's levels on one; the kernels
        release the GIL): a 2048 px chunk's 11 layers take ~0.25 s on one."""
        from pipeline.products.chunkio import on_threads, open_arrays

        by_store: dict[int, tuple[Any, list[tuple[int, str]]]] = {}
        plans = []
        for array, sel, values in writes:
            name = str(array.path).rsplit("/", 1)[-1]
            levels = levels_for(array.shape, int(array.chunks[-1]))
            plans.append((array, sel, values, name, levels))
            for k in levels:
                if (id(array.store), k, name) not in self._arrays:
                    by_store.setdefault(id(array.store), (array.store, []))[1].append((k, name))
        for sid, (store, wanted) in by_store.items():
            wanted = sorted(set(wanted))
            opened = open_arrays(store, [f"{level_path(k)}/{n}" for k, n in wanted], mode="r+")
            for (k, n), a in zip(wanted, opened, strict=True):
                self._arrays[(sid, k, n)] = a
        def one(plan: tuple) -> list[tuple[Any, tuple, np.ndarray]]:
            array, sel, values, name, levels = plan
            arrays = {(k, name): self._arrays[(id(array.store), k, name)] for k in levels}
            return level_writes([(array, sel, values)], arrays, levels)

        return [w for ws in on_threads(one, plans, threads, "aquila-overviews") for w in ws]
