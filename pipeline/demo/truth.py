"""The target area and its known ground truth: the smooth surface reflectance field that every
synthetic raster is rendered from, and the coordinate transforms into the area's CRS.

Units: coordinates in metres of the named CRS (EPSG:32632 unless stated); reflectance is
unitless surface reflectance (0..1).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pyproj import Transformer

__all__ = [
    "AREA_CRS",
    "BANDS",
    "TRUTH_FIELDS",
    "from_area",
    "to_area",
    "transformer",
    "truth_grid",
    "truth_reflectance",
]

AREA_CRS = "EPSG:32632"
"""CRS of the target area, of :func:`truth_reflectance` and of cloud geometry."""

BANDS: tuple[str, ...] = ("blue", "green", "red", "nir")
"""Common band names rendered by every provider."""

_tls = threading.local()


def transformer(src: str, dst: str) -> Transformer:
    """A per-thread cached always_xy transformer (pyproj transformers are not thread-safe)."""
    cache: dict[tuple[str, str], Transformer] | None = getattr(_tls, "cache", None)
    if cache is None:
        cache = {}
        _tls.cache = cache
    key = (src, dst)
    if key not in cache:
        cache[key] = Transformer.from_crs(src, dst, always_xy=True)
    return cache[key]


def to_area(crs: str, u: NDArray[Any], v: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Transform coordinates from ``crs`` to EPSG:32632 (identity for EPSG:32632)."""
    if crs == AREA_CRS:
        return np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    x, y = transformer(crs, AREA_CRS).transform(u, v)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def from_area(crs: str, x: NDArray[Any], y: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Transform EPSG:32632 coordinates into ``crs``."""
    if crs == AREA_CRS:
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    u, v = transformer(AREA_CRS, crs).transform(x, y)
    return np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)


# --------------------------------------------------------------------------- truth


@dataclass(frozen=True)
class _Wave:
    """A plane sinusoid ``amplitude * sin(k . (x, y) + phase)``; wavelength in metres."""

    amplitude: float
    wavelength_m: float
    angle_deg: float
    phase_rad: float

    @property
    def k(self) -> tuple[float, float]:
        """Wave vector (radians per metre) in x (east) and y (north)."""
        a = math.radians(self.angle_deg)
        w = 2.0 * math.pi / self.wavelength_m
        return w * math.cos(a), w * math.sin(a)


@dataclass(frozen=True)
class _Bump:
    """An isotropic gaussian ``amplitude * exp(-r^2 / (2 sigma^2))`` at (x0, y0) EPSG:32632 m."""

    amplitude: float
    x0: float
    y0: float
    sigma_m: float


@dataclass(frozen=True)
class _Field:
    base: float
    waves: tuple[_Wave, ...]
    bumps: tuple[_Bump, ...]


TRUTH_FIELDS: dict[str, _Field] = {
    "blue": _Field(
        0.05,
        (_Wave(0.012, 5000.0, 20.0, 0.3), _Wave(0.008, 2600.0, 115.0, 1.1)),
        (_Bump(0.012, 507000.0, 5012000.0, 2500.0),),
    ),
    "green": _Field(
        0.08,
        (_Wave(0.020, 7000.0, 50.0, 0.0), _Wave(0.012, 3000.0, 160.0, 2.0)),
        (_Bump(0.015, 513000.0, 5006000.0, 2000.0),),
    ),
    "red": _Field(
        0.07,
        (_Wave(0.025, 4000.0, 75.0, 0.7), _Wave(0.012, 2200.0, 10.0, 2.5)),
        (_Bump(-0.015, 502500.0, 5002500.0, 1800.0),),
    ),
    "nir": _Field(
        0.30,
        (
            _Wave(0.080, 6000.0, 30.0, 0.5),
            _Wave(0.050, 2500.0, 100.0, 1.7),
            _Wave(0.030, 8000.0, 135.0, 0.9),
        ),
        (_Bump(0.080, 510000.0, 5010000.0, 3000.0),),
    ),
}
"""Per band, the field :func:`truth_reflectance` evaluates: a base plus plane waves and gaussian
bumps."""


def truth_reflectance(band: str, x: NDArray[Any], y: NDArray[Any]) -> NDArray[np.float64]:
    """True surface reflectance (unitless) of ``band`` at EPSG:32632 coordinates.

    Args:
        band: one of :data:`BANDS` ("blue", "green", "red", "nir").
        x, y: easting / northing in EPSG:32632 metres; broadcastable arrays.

    Returns:
        float64 array of the broadcast shape. Constant in time, within
        [0.01, 0.6], with gradient magnitude <= 3e-4 per metre everywhere (the analytic
        bound is checked by the tests, ``tests/synthetic_oracle.py``).
    """
    f = TRUTH_FIELDS[band]
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    out = np.full(np.broadcast_shapes(xa.shape, ya.shape), f.base, dtype=np.float64)
    for w in f.waves:
        kx, ky = w.k
        out += w.amplitude * np.sin(kx * xa + ky * ya + w.phase_rad)
    for b in f.bumps:
        r2 = (xa - b.x0) ** 2 + (ya - b.y0) ** 2
        out += b.amplitude * np.exp(-r2 / (2.0 * b.sigma_m**2))
    return out


def truth_grid(band: str, xs: NDArray[np.float64], ys: NDArray[np.float64]) -> NDArray[np.float64]:
    """:func:`truth_reflectance` on the grid ``ys[:, None] x xs[None, :]``, separably.

    Equal to ``truth_reflectance(band, xs[None, :], ys[:, None])`` up to float64
    rounding (~1e-15), about 10x cheaper for large grids.
    """
    f = TRUTH_FIELDS[band]
    out = np.full((ys.size, xs.size), f.base, dtype=np.float64)
    for w in f.waves:
        kx, ky = w.k
        # sin(a + b) = sin(a) cos(b) + cos(a) sin(b), a = kx x, b = ky y + phase
        ay = ky * ys + w.phase_rad
        ax = kx * xs
        out += np.multiply.outer(w.amplitude * np.cos(ay), np.sin(ax))
        out += np.multiply.outer(w.amplitude * np.sin(ay), np.cos(ax))
    for b in f.bumps:
        gy = np.exp(-((ys - b.y0) ** 2) / (2.0 * b.sigma_m**2))
        gx = np.exp(-((xs - b.x0) ** 2) / (2.0 * b.sigma_m**2))
        out += np.multiply.outer(b.amplitude * gy, gx)
    return out
