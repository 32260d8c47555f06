"""The pixel model: what the atmosphere, the swath edge and the provider's encoding make of the
truth at one pixel centre.

Every raster pixel value is a pure function of the pixel centre (transformed to EPSG:32632
metres) and of the scene's parameters (:class:`~pipeline.demo.scenes.SyntheticScene`): the
truth, darkened x :data:`SHADOW_FACTOR` inside cloud shadows, plus a thin additive haze
(:data:`HAZE_MAX` at a cloud's edge, fading linearly to 0 at :data:`HAZE_M` metres from it),
replaced by a bright textured cloud reflectance inside clouds, and nodata beyond the scene's
swath edge. The QA assets flag clouds and shadows dilated by :data:`QA_DILATION_M` metres so
that, after nearest-neighbour resampling onto a 10 m grid, every cloudy band pixel is covered by
a flagged QA pixel; the haze is deliberately *not* flagged beyond that ring (like the thin cloud
edges real quality masks miss), so a QA-clear pixel between ``QA_DILATION_M`` and ``HAZE_M``
from a cloud is brighter than the truth by up to ``HAZE_MAX * (1 - QA_DILATION_M / HAZE_M)``.

The renderer (:mod:`pipeline.demo.assets`) evaluates these functions on whole grids; the tests'
exact oracle (``tests/synthetic_oracle.py``) evaluates the same functions point by point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.demo.providers import HLS_V2_MSI_TO_OLI, QA_CODES, ProviderSpec
from pipeline.demo.scenes import CloudDisc, SyntheticScene
from pipeline.demo.truth import AREA_CRS, from_area

__all__ = [
    "CLOUD_REFLECTANCE_RANGE",
    "HAZE_M",
    "HAZE_MAX",
    "QA_DILATION_M",
    "SHADOW_FACTOR",
    "apply_atmosphere",
    "as_published",
    "discs_mask",
    "discs_mask_grid",
    "edge_distance",
    "encode",
    "encode_qa",
    "haze_from_distance",
    "haze_render",
    "haze_windows",
    "valid_mask",
]

QA_DILATION_M = 60.0
"""Metres by which clouds and shadows are dilated in the QA assets."""

SHADOW_FACTOR = 0.5
"""Band reflectance multiplier inside (undilated) cloud shadows."""

CLOUD_REFLECTANCE_RANGE = (0.55, 0.85)
"""Cloud reflectance is clipped into this range (all bands)."""

HAZE_M = 200.0
"""Reach (m) of the thin haze around every cloud: a band pixel outside all cloud discs
whose centre is d metres (0 < d <= HAZE_M) from the nearest disc edge gets additive
haze ``HAZE_MAX * (1 - d / HAZE_M)`` in every band. The QA assets do not flag it
beyond :data:`QA_DILATION_M`."""

HAZE_MAX = 0.012
"""Additive haze reflectance at a cloud's edge (all bands).

Chosen so that a per-pixel median over >= 2 observations of which at most one is
hazy still errs by <= HAZE_MAX / 2 = 0.006 < 0.01 (the issue-2 accuracy guarantee
of median composites), while a mosaic that picks a hazy observation errs by up to
0.012 -- measurably contaminated at a 0.003 threshold (haze > 0.003 within 150 m of
a cloud edge, i.e. also 90 m beyond the flagged ring)."""


def discs_mask(
    x: NDArray[Any],
    y: NDArray[Any],
    discs: Sequence[CloudDisc],
    extra: float,
    shift: tuple[float, float] = (0.0, 0.0),
) -> NDArray[np.bool_]:
    """Points (broadcastable x, y in EPSG:32632) within ``extra`` m of any (shifted) disc."""
    out = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y)), dtype=bool)
    for d in discs:
        r = d.radius + extra
        dx = x - (d.x + shift[0])
        dy = y - (d.y + shift[1])
        out |= dx * dx + dy * dy <= r * r
    return out


def discs_mask_grid(
    xs: NDArray[np.float64],
    ys: NDArray[np.float64],
    discs: Sequence[CloudDisc],
    extra: float,
    shift: tuple[float, float] = (0.0, 0.0),
) -> NDArray[np.bool_]:
    """:func:`discs_mask` on the grid ``ys[:, None] x xs[None, :]`` (xs ascending,
    ys descending), evaluated only inside each disc's bounding window."""
    out = np.zeros((ys.size, xs.size), dtype=bool)
    nys = -ys
    for d in discs:
        r = d.radius + extra
        cx, cy = d.x + shift[0], d.y + shift[1]
        c0 = np.searchsorted(xs, cx - r, side="left")
        c1 = np.searchsorted(xs, cx + r, side="right")
        r0 = np.searchsorted(nys, -(cy + r), side="left")
        r1 = np.searchsorted(nys, -(cy - r), side="right")
        if c0 >= c1 or r0 >= r1:
            continue
        dx = xs[c0:c1][None, :] - cx
        dy = ys[r0:r1][:, None] - cy
        out[r0:r1, c0:c1] |= dx * dx + dy * dy <= r * r
    return out


def edge_distance(x: NDArray[Any], y: NDArray[Any], disc: CloudDisc) -> NDArray[np.float64]:
    """Signed distance (m) from EPSG:32632 points to the edge of ``disc`` (< 0 inside).

    The render path and the tests' oracle both evaluate it through this function, element
    by element with the same operations, so their results are bit-identical."""
    dx = x - disc.x
    dy = y - disc.y
    return np.asarray(np.sqrt(dx * dx + dy * dy) - disc.radius, dtype=np.float64)


def haze_from_distance(dist: NDArray[np.float64], cloud: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Additive haze reflectance for distances ``dist`` (m) to the nearest cloud-disc
    edge: ``HAZE_MAX * (1 - dist / HAZE_M)`` where 0 < dist <= HAZE_M and not ``cloud``,
    else 0."""
    hazy = ~cloud & (dist > 0.0) & (dist <= HAZE_M)
    out = np.zeros(dist.shape, dtype=np.float64)
    out[hazy] = HAZE_MAX * (1.0 - dist[hazy] / HAZE_M)
    return out


def haze_windows(
    us: NDArray[np.float64],
    vs: NDArray[np.float64],
    crs: str,
    res: float,
    discs: Sequence[CloudDisc],
) -> list[tuple[int, int, int, int] | None]:
    """Per disc, the (row0, row1, col0, col1) window of the grid with pixel centres
    ``us`` (ascending) x ``vs`` (descending) in ``crs`` that holds every pixel whose
    EPSG:32632 centre is within ``radius + HAZE_M`` of the disc's centre (None if empty).

    The window is the disc's EPSG:32632 bounding box (grown by ``HAZE_M`` and one
    pixel), transformed corner by corner into ``crs``: over a few km a straight
    edge bends by far less than a millimetre between neighbouring UTM zones, so the
    one-pixel margin makes the window a strict superset.
    """
    out: list[tuple[int, int, int, int] | None] = []
    nvs = -vs
    for d in discs:
        reach = d.radius + HAZE_M + res
        if crs == AREA_CRS:
            u0, v0, u1, v1 = d.x - reach, d.y - reach, d.x + reach, d.y + reach
        else:
            cu, cv = from_area(
                crs,
                np.array([d.x - reach, d.x + reach, d.x + reach, d.x - reach]),
                np.array([d.y - reach, d.y - reach, d.y + reach, d.y + reach]),
            )
            u0, v0 = float(cu.min()) - res, float(cv.min()) - res
            u1, v1 = float(cu.max()) + res, float(cv.max()) + res
        c0 = int(np.searchsorted(us, u0, side="left"))
        c1 = int(np.searchsorted(us, u1, side="right"))
        r0 = int(np.searchsorted(nvs, -v1, side="left"))
        r1 = int(np.searchsorted(nvs, -v0, side="right"))
        out.append((r0, r1, c0, c1) if c0 < c1 and r0 < r1 else None)
    return out


def haze_render(
    discs: Sequence[CloudDisc],
    windows: Sequence[tuple[int, int, int, int] | None],
    coords: Callable[[int, int, int, int], tuple[NDArray[Any], NDArray[Any]]],
    cloud: NDArray[np.bool_],
) -> tuple[tuple[slice, slice], NDArray[np.float64]] | None:
    """Haze of a rendered grid, computed only inside the discs' windows.

    ``coords(r0, r1, c0, c1)`` returns the EPSG:32632 pixel centres (x, y) of that
    window, broadcastable to its shape; ``cloud`` is the grid's cloud mask. Returns
    (the union window as a pair of slices, the haze there), or None without windows.
    Equal to the point-wise haze (from the nearest disc edge over all discs) at every pixel:
    a disc whose window misses a pixel is more than ``HAZE_M`` from it, so it cannot change a
    haze value.
    """
    wins = [(d, w) for d, w in zip(discs, windows, strict=True) if w is not None]
    if not wins:
        return None
    top = min(w[0] for _, w in wins)
    bottom = max(w[1] for _, w in wins)
    left = min(w[2] for _, w in wins)
    right = max(w[3] for _, w in wins)
    dist = np.full((bottom - top, right - left), np.inf)
    for d, (r0, r1, c0, c1) in wins:
        x, y = coords(r0, r1, c0, c1)
        sub = dist[r0 - top : r1 - top, c0 - left : c1 - left]
        np.minimum(sub, edge_distance(x, y, d), out=sub)
    win = (slice(top, bottom), slice(left, right))
    return win, haze_from_distance(dist, cloud[win])


def valid_mask(scene: SyntheticScene, x: NDArray[Any], y: NDArray[Any]) -> NDArray[np.bool_]:
    """Data (not swath-cut) test at pixel centres x, y (EPSG:32632, broadcastable)."""
    a, b, c = scene.swath
    return np.asarray(a * x + b * y + c >= 0.0)


def _cloud_reflectance(
    scene: SyntheticScene, band: str, x: NDArray[Any], y: NDArray[Any]
) -> NDArray[np.float64]:
    """Bright, mildly textured cloud-top reflectance at EPSG:32632 points."""
    p1, p2 = scene.texture_phase
    band_offset = {"blue": 0.04, "green": 0.03, "red": 0.02, "nir": 0.0}[band]
    t = (
        scene.cloud_brightness
        + band_offset
        + 0.06 * np.sin(2.0 * math.pi * x / 1300.0 + p1) * np.cos(2.0 * math.pi * y / 1700.0 + p2)
    )
    return np.clip(t, *CLOUD_REFLECTANCE_RANGE)


def apply_atmosphere(
    scene: SyntheticScene,
    band: str,
    refl: NDArray[np.float64],
    cloud: NDArray[np.bool_],
    shadow: NDArray[np.bool_],
    cloud_xy: tuple[NDArray[Any], NDArray[Any]],
) -> NDArray[np.float64]:
    """Darken shadows and replace cloud pixels (in place); ``cloud_xy`` = coords of ``cloud``.

    Haze (0 inside clouds) is added by the callers afterwards, before encoding."""
    refl[shadow & ~cloud] *= SHADOW_FACTOR
    if cloud_xy[0].size:
        refl[cloud] = _cloud_reflectance(scene, band, *cloud_xy)
    return refl


def as_published(
    spec: ProviderSpec, scene: SyntheticScene, band: str, refl: NDArray[np.float64]
) -> NDArray[np.float64]:
    """What the provider's DN encode, from the (TOA, OLI-equivalent) reflectance: ``mtd``: the
    MSI reflectance that HLS adjusts to it; ``mtl``: Level-1 ρ·sin(sun elevation) (the MTL's
    REFLECTANCE_MULT/ADD give reflectance before the sun-angle correction); else itself."""
    if spec.published == "mtd":
        slope, intercept = HLS_V2_MSI_TO_OLI[scene.platform][band]
        return (refl - intercept) / slope
    if spec.published == "mtl":
        return refl * math.sin(math.radians(scene.sun_elevation))
    return refl


def encode(spec: ProviderSpec, refl: NDArray[np.float64], valid: NDArray[np.bool_]) -> NDArray:
    """Reflectance -> DN (uint16), nodata where not valid."""
    dn = np.rint((refl - spec.offset) / spec.scale)
    np.clip(dn, spec.dn_range[0], spec.dn_range[1], out=dn)
    out = dn.astype(np.uint16)
    out[~valid] = spec.nodata
    return out


def encode_qa(
    spec: ProviderSpec,
    valid: NDArray[np.bool_],
    cloud_core: NDArray[np.bool_],
    cloud_dil: NDArray[np.bool_],
    shadow_dil: NDArray[np.bool_],
) -> NDArray:
    codes = QA_CODES[spec.qa_style or spec.collection]
    qa = np.full(valid.shape, codes["clear"], dtype=spec.qa_dtype)
    qa[shadow_dil] = codes["shadow"]
    qa[cloud_dil] = codes["cloud_ring"]
    qa[cloud_core] = codes["cloud_core"]
    qa[~valid] = codes["nodata"]
    return qa
