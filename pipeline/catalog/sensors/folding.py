"""From a band's constants to one linear function of its DN: the fold (pure, no I/O).

Every band ends as ``value = (DN * scale + offset) * cos(θs)**sun_power + post_offset``, where
``sun_power`` is 0 (the usual case: the scene states its sun elevation, or none is needed) and
the chunk kernel applies one multiply-add per pixel (:func:`pipeline.kernels.calibrate.
gather_calibrate`). The chain folded into it, per band and target quantity:

* reflectance rescaling: ``ρ = DN * mult + add`` (Sentinel-2 ``(DN + ADD_OFFSET) / 10000``,
  Planet ``reflectanceCoefficient``, Landsat Level-2), or Landsat Level-1 ``(DN * mult + add) /
  sin(sun elevation)``;
* radiance: ``L = DN * gain + bias`` (Landsat ``RADIANCE_MULT/ADD``, Planet
  ``radiometricScaleFactor``, an item's radiance ``raster:bands``), W/(m² sr µm); to TOA
  reflectance ``ρ = π L d² / (ESUN cos θs)``, d the Earth–Sun distance in AU, ESUN the band
  solar irradiance, W/(m² µm); and back (radiance from TOA reflectance) for ``target:
  radiance``;
* bandpass adjustment to a reference sensor: ``ρ' = slope * ρ + intercept``.

Where each constant comes from (item, vendor file, profile) is :mod:`pipeline.catalog.sensors.
constants`'s concern. A band whose constants cannot give the target raises :class:`Unresolved`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


class Unresolved(Exception):
    """The band's constants do not give the target quantity. ``reason`` is the reject code."""

    def __init__(self, message: str, reason: str = "no_calibration") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Linear:
    """DN * scale + offset, and where the two numbers came from."""

    scale: float
    offset: float
    source: str


@dataclass(frozen=True)
class BandConstants:
    """What is known of one band: reflectance and/or radiance rescaling, and its ESUN."""

    reflectance: Linear | None = None
    needs_sun: bool = False  # the reflectance still has to be divided by cos θs (Landsat L1)
    level: str | None = None  # "toa", "surface", or None (not known)
    radiance: Linear | None = None
    esun: tuple[float, str] | None = None  # W/(m² µm), source


@dataclass(frozen=True)
class SunGeometry:
    """The scene's sun: elevation (degrees) if published, Earth–Sun distance (AU)."""

    elevation: tuple[float, str] | None
    distance: tuple[float, str]


@dataclass(frozen=True)
class Folded:
    """The band's final linear calibration (see the module docstring) and how it was made."""

    scale: float
    offset: float
    sun_power: int = 0
    post_offset: float = 0.0
    how: str = ""


# --------------------------------------------------------------------------- folding (pure)


def fold(
    constants: BandConstants,
    sun: SunGeometry | Callable[[], SunGeometry],
    target: str,
    *,
    band: str = "",
) -> Folded:
    """One linear function from DN to the target quantity; raises :class:`Unresolved`.
    ``sun`` may be a function: it is called only when the sun or the Earth–Sun distance matter."""
    c = constants
    given = sun

    def geometry() -> SunGeometry:
        return given() if callable(given) else given

    if target == "reflectance" and c.reflectance is not None:
        lin = c.reflectance
        if not c.needs_sun:
            return Folded(lin.scale, lin.offset, how=lin.source)
        return _sun_corrected(lin.scale, lin.offset, lin.source, True, geometry(), -1)
    if target == "radiance" and c.radiance is not None:
        return Folded(c.radiance.scale, c.radiance.offset, how=f"radiance ({c.radiance.source})")
    geo = geometry()
    d, d_src = geo.distance
    if target == "reflectance":
        if c.radiance is not None:
            if c.esun is None:
                raise Unresolved(
                    f"band {band!r} has radiance ({c.radiance.source}) but no band solar "
                    "irradiance (ESUN) to turn it into reflectance; add eo:bands "
                    "solar_illumination to the item or calibration.esun to its sensor profile"
                )
            k = math.pi * d * d / c.esun[0]
            how = (
                f"π·d²/ESUN × radiance ({c.radiance.source}; d {d:.7f} AU from {d_src}; "
                f"ESUN {c.esun[0]:g} from {c.esun[1]})"
            )
            return _sun_corrected(c.radiance.scale * k, c.radiance.offset * k, how, True, geo, -1)
        raise Unresolved(f"band {band!r} has no reflectance or radiance rescaling")
    if c.reflectance is not None and c.level == "toa" and c.esun is not None:
        k = c.esun[0] / (math.pi * d * d)
        lin = c.reflectance
        how = (
            f"ESUN·cos θs/(π·d²) × TOA reflectance ({lin.source}; d {d:.7f} AU from {d_src};"
            f" ESUN {c.esun[0]:g} from {c.esun[1]})"
        )
        if c.needs_sun:  # Landsat L1 mult/add give ρ·cos θs already: no sun term left
            return Folded(lin.scale * k, lin.offset * k, how=how)
        return _sun_corrected(lin.scale * k, lin.offset * k, how, True, geo, +1)
    what = {"surface": "surface reflectance", "toa": "TOA reflectance"}.get(
        c.level or "", "reflectance of unknown level (TOA or surface)"
    )
    missing = "" if c.reflectance is None or c.level != "toa" else " and no ESUN"
    raise Unresolved(
        f"band {band!r} holds {what}{missing}; at-sensor radiance needs DN→radiance gains "
        "(Landsat MTL RADIANCE_MULT/ADD, Planet radiometricScaleFactor, radiance raster:bands) "
        "or TOA reflectance with the band's ESUN"
    )


def _sun_corrected(scale, offset, how, needs_sun, sun: SunGeometry, power: int) -> Folded:
    if not needs_sun:
        return Folded(scale, offset, how=how)
    if sun.elevation is not None:
        e, src = sun.elevation
        s = math.sin(math.radians(e))
        what = f"sin(sun elevation {e:g}° from {src})"
        if power < 0:
            return Folded(scale / s, offset / s, how=f"{how} / {what}")
        return Folded(scale * s, offset * s, how=f"{how} × {what}")
    op = "/" if power < 0 else "×"
    return Folded(
        scale,
        offset,
        sun_power=power,
        how=f"{how} {op} cos(solar zenith per pixel, from time and place)",
    )


def harmonised(f: Folded, slope: float, intercept: float, label: str) -> Folded:
    """Fold ρ' = slope · ρ + intercept into the band's linear calibration."""
    how = f"{f.how}; then × {slope:g} + {intercept:g} ({label})"
    if f.sun_power == 0:
        return Folded(f.scale * slope, f.offset * slope + intercept, how=how)
    return Folded(
        f.scale * slope, f.offset * slope, f.sun_power, f.post_offset * slope + intercept, how
    )
