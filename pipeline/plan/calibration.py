"""Radiometry inside the chunk task: the per-run settings, quality masks by class (with the
cloud/shadow dilation), and the per-pixel sun term for scenes without a sun elevation. NumPy
and pyproj around the kernels; no I/O, no Dask.

The calibration itself (scale, offset, harmonisation) is resolved per band at normalisation
(:mod:`pipeline.catalog.sensors.constants`)
and applied by the gather kernel: the chunk task makes no
extra pass over the data for it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from pyproj import Transformer

from pipeline.catalog.scene import BandSource, QualitySource, Scene
from pipeline.kernels.qa import DEFAULT_MASK, DILATABLE, MASK_CLASSES, lut_from_rules
from pipeline.kernels.toa import solar_zenith
from pipeline.plan.grid import ChunkGrid

SUN_NODE_METRES = 1000.0
"""About this far apart (grid units, metres for UTM) lie the exact solar-zenith nodes, bilinear in
between: cos θs bends by ~3e-8 per km² (θs changes ~0.01°/km), so the interpolation error is
~4e-9 at 1 km and grows with the square of the spacing (3e-6 at 29 km, measured on 900 m pixels
with 32-pixel nodes before this was tied to the pixel size)."""


@dataclass(frozen=True)
class Masking:
    """Which quality classes a run drops, and by how many pixels clouds and shadows grow."""

    classes: tuple[str, ...] = DEFAULT_MASK
    dilate: int = 0  # pixels, applied to the cloud and shadow classes only

    def __post_init__(self) -> None:
        unknown = set(self.classes) - set(MASK_CLASSES)
        if unknown:
            raise ValueError(f"unknown mask class(es) {sorted(unknown)}; classes: {MASK_CLASSES}")
        if self.dilate < 0:
            raise ValueError(f"dilate must be >= 0 pixels, got {self.dilate}")

    @property
    def grown(self) -> tuple[str, ...]:
        return tuple(c for c in self.classes if c in DILATABLE) if self.dilate else ()

    @property
    def plain(self) -> tuple[str, ...]:
        return tuple(c for c in self.classes if c not in self.grown)


@lru_cache(maxsize=512)
def quality_luts(q: QualitySource, masking: Masking) -> tuple[np.ndarray, np.ndarray | None]:
    """(LUT of the classes masked as they are, LUT of the classes to dilate or None)."""
    size = 256 if q.dtype in ("uint8", "int8") else 65536
    plain = lut_from_rules(q.rules, masking.plain, size)
    grown = lut_from_rules(q.rules, masking.grown, size) if masking.grown else None
    return plain, grown


def grow(mask: np.ndarray, n: int) -> np.ndarray:
    """The (y, x) cloud/shadow mask dilated by n pixels (square, Chebyshev distance)."""
    if not n:
        return mask
    from pipeline.kernels.dilate import dilate  # numba: loaded where masks are dilated

    return dilate(mask, n)


# --------------------------------------------------------------------------- the sun


@lru_cache(maxsize=64)
def _to_lonlat(crs: str) -> Transformer:
    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True)


def cos_solar_zenith(chunk: ChunkGrid, when: dt.datetime) -> np.ndarray:
    """cos θs at every pixel centre of the chunk (y, x) float64, at UTC time ``when``: exact
    (NOAA/Meeus, :func:`pipeline.kernels.toa.solar_zenith`) on nodes about SUN_NODE_METRES apart
    on the *global* grid (so the result does not depend on the chunking), bilinear between."""
    a, b, c, d, e, f = chunk.transform
    step = int(min(64, max(1, round(SUN_NODE_METRES / max(abs(a), abs(e))))))
    gy = np.arange(chunk.y0, chunk.y0 + chunk.height)
    gx = np.arange(chunk.x0, chunk.x0 + chunk.width)
    ny0, nx0 = (gy[0] // step) * step, (gx[0] // step) * step
    node_y = np.arange(ny0, -(-(gy[-1] + 1) // step) * step + 1, step)
    node_x = np.arange(nx0, -(-(gx[-1] + 1) // step) * step + 1, step)
    lx, ly = np.meshgrid(node_x - chunk.x0 + 0.5, node_y - chunk.y0 + 0.5)
    lon, lat = _to_lonlat(chunk.crs).transform(c + a * lx + b * ly, f + d * lx + e * ly)
    cos_nodes = np.cos(np.deg2rad(np.asarray(solar_zenith(when, lon, lat))))
    ty, tx = (gy - ny0) / step, (gx - nx0) / step
    iy = np.minimum(ty.astype(np.int64), len(node_y) - 2)
    ix = np.minimum(tx.astype(np.int64), len(node_x) - 2)
    fy, fx = (ty - iy)[:, None], tx - ix
    along_x = cos_nodes[:, ix] * (1 - fx) + cos_nodes[:, ix + 1] * fx
    cos: np.ndarray = along_x[iy] * (1 - fy) + along_x[iy + 1] * fy
    return cos


def sun_factor(chunk: ChunkGrid, when: dt.datetime, power: int) -> np.ndarray:
    """cos(θs)**power on the chunk; NaN where the sun is at or below the horizon."""
    cos = cos_solar_zenith(chunk, when)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(cos > 0, cos ** float(power), np.nan)
    return out


# --------------------------------------------------------------------------- lineage


def radiometry_outputs(spec: Any) -> dict[str, Any]:
    """The Outputs fields of a workflow's ``radiometry`` section (resolved once, in the driver)."""
    return {
        "masking": Masking(classes=tuple(spec.mask), dilate=int(spec.dilate)),
        "quantity": spec.target,
        "harmonize_to": spec.harmonize_to,
    }


def radiometry_attrs(outputs: Any, scenes: Iterable[Scene]) -> dict[str, Any]:
    """What a product's values are and which coefficient sets made them (store attributes)."""
    quantity, harmonize_to, masking = outputs.quantity, outputs.harmonize_to, outputs.masking
    sets: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for s in scenes:
        h = s.harmonisation
        if h is None:
            continue
        key = (h.name, h.version, h.to, h.platform)
        entry = sets.setdefault(
            key,
            {
                "name": h.name,
                "version": h.version,
                "to": h.to,
                "platform": h.platform,
                "bands": {b: [slope, intercept] for b, slope, intercept in h.adjusted},
                "unadjusted": list(h.unadjusted),
                "collections": [],
            },
        )
        if s.collection not in entry["collections"]:
            entry["collections"].append(s.collection)
    unit = "W m-2 sr-1 um-1" if quantity == "radiance" else "1"
    return {
        "quantity": quantity,
        "units": unit,
        "harmonize_to": harmonize_to,
        "mask": list(masking.classes),
        "dilate": masking.dilate,
        "coefficient_sets": [sets[k] for k in sorted(sets)],
    }


def group_factor(
    bands: Sequence[BandSource], chunk: ChunkGrid, when: dt.datetime, cache: dict[Any, Any]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(factor (y, x), post offsets) for a band group whose bands need the per-pixel sun term;
    (None, None) for the usual folded case. Memoised per (chunk, time, power) in ``cache``."""
    powers = {b.sun_power for b in bands}
    if powers == {0}:
        return None, None
    if len(powers) != 1:
        raise ValueError(f"bands of one asset need different sun terms {sorted(powers)}")
    (power,) = powers
    key = ("sun", chunk, when, power)
    if key not in cache:
        cache[key] = sun_factor(chunk, when, power)
    return cache[key], np.array([b.post_offset for b in bands], dtype=np.float64)
