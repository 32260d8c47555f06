"""From each provider's numbers to one comparable quantity: which constants a band's DN need,
where they come from, and the one linear function they fold into.

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

Each constant comes from the item, else from the vendor metadata file the item links to (Landsat
MTL, Sentinel-2 MTD, Planet XML), else from the sensor profile; θs from the item's sun
elevation, else the vendor file, else per pixel from time and place (``sun_power`` ≠ 0); d from
the item (``s2:reflectance_conversion_factor``), else the vendor file, else the acquisition
date. A band whose constants cannot be resolved for the target raises :class:`Unresolved`,
which normalisation turns into a reject with reason ``no_calibration`` (``no_harmonisation``
for a missing coefficient set).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from pipeline.catalog.scene import HarmonisationUse
from pipeline.catalog.sensors.profiles import Calibration, Harmonisation, SensorProfile, _norm
from pipeline.catalog.sensors.vendor import (
    LandsatMtl,
    PlanetBand,
    Sentinel2Mtd,
    VendorMetadataError,
    landsat_mtl,
    planet_analytic,
    sentinel2_mtd,
)
from pipeline.catalog.stacdoc import ItemDoc, number_or_none
from pipeline.errors import HrefNotAllowed
from pipeline.kernels.toa import earth_sun_distance

QUANTITIES = ("reflectance", "radiance")

_RADIANCE_UNIT = re.compile(r"(?i)(\bW\b|W⋅|watt).*(sr|steradian)")
_PER_MICRON = re.compile(r"(?i)(µm|μm|um|micron)")


@dataclass(frozen=True)
class RadiometryTarget:
    """What a run wants every band to hold; resolved once from the spec by the driver."""

    quantity: str = "reflectance"  # "reflectance" (0-1) or "radiance" (W/(m² sr µm))
    harmonize_to: str | None = None  # a sensor profile name (reflectance only)

    def __post_init__(self) -> None:
        if self.quantity not in QUANTITIES:
            raise ValueError(f"quantity must be one of {QUANTITIES}, got {self.quantity!r}")
        if self.harmonize_to and self.quantity != "reflectance":
            raise ValueError("harmonize_to adjusts reflectance; it does not go with radiance")


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


# --------------------------------------------------------------------------- per item context


@dataclass
class ItemRadiometry:
    """Everything one item's bands share: the profile's calibration, the vendor file (loaded
    once, on first need), the sun geometry and the harmonisation set."""

    doc: ItemDoc
    profile: SensorProfile
    calibration: Calibration
    target: RadiometryTarget
    vendor_href: Callable[[str], str]  # asset key → local path (resolved, mirrored)
    _vendor: Any = None
    _vendor_note: str | None = None
    _vendor_loaded: bool = False
    _sun: SunGeometry | None = None
    notes: dict[str, str] = field(default_factory=dict)

    # ---- vendor metadata file
    def vendor(self) -> LandsatMtl | Sentinel2Mtd | dict[int, PlanetBand] | None:
        """The item's vendor metadata, or None (no such asset, or it is remote: then the
        profile's constants are used and a note says so). A broken local file is a reject."""
        if self._vendor_loaded:
            return self._vendor
        self._vendor_loaded = True
        kind = self.calibration.vendor
        keys = [k for k in self.calibration.vendor_assets if k in self.doc.assets]
        if not kind or not keys:
            return None
        try:
            href = self.vendor_href(keys[0])
        except HrefNotAllowed as exc:
            message = exc.message.removeprefix(f"item {self.doc.id!r} ")
            raise Unresolved(message, reason="href_not_allowed") from None
        if "://" in href and not href.startswith("file://"):
            self._vendor_note = f"vendor metadata {keys[0]!r} is remote ({href}); not read"
            return None
        try:
            self._vendor = _load_vendor(kind, href)
        except VendorMetadataError as exc:
            raise Unresolved(f"vendor metadata asset {keys[0]!r}: {exc}") from None
        self.notes["vendor_metadata"] = f"{kind}: {os.path.basename(href)}"
        return self._vendor

    # ---- scene-wide physics
    def sun(self) -> SunGeometry:
        """Sun elevation and Earth–Sun distance: item, else vendor file, else computed."""
        if self._sun is not None:
            return self._sun
        props = self.doc.properties
        elevation = None
        item_elev = number_or_none(props.get("view:sun_elevation"))
        if item_elev is not None and 0.0 < item_elev <= 90.0:
            elevation = (item_elev, "view:sun_elevation")
        u = number_or_none(props.get("s2:reflectance_conversion_factor"))
        vendor = self.vendor() if elevation is None or not (u and u > 0) else None
        if elevation is None and isinstance(vendor, LandsatMtl) and vendor.sun_elevation:
            elevation = (vendor.sun_elevation, "MTL SUN_ELEVATION")
        if u is not None and u > 0:
            distance = (1.0 / math.sqrt(u), "s2:reflectance_conversion_factor")
        elif isinstance(vendor, LandsatMtl) and vendor.earth_sun_distance:
            distance = (vendor.earth_sun_distance, "MTL EARTH_SUN_DISTANCE")
        elif isinstance(vendor, Sentinel2Mtd) and vendor.u:
            distance = (1.0 / math.sqrt(vendor.u), "MTD U")
        else:
            when = self.doc.when() or dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
            distance = (earth_sun_distance(when), "the acquisition date")
        self._sun = SunGeometry(elevation, distance)
        return self._sun

    # ---- harmonisation
    def harmonisation(self) -> tuple[Harmonisation | None, str | None]:
        """(set, platform key), (None, None) for the reference sensor itself or no target;
        raises Unresolved(reason no_harmonisation) where the sensor has no coefficient set."""
        ref = self.target.harmonize_to
        if not ref or self.profile.name == ref:
            return None, None
        found = self.profile.harmonisation_to(ref)
        if found is None:
            raise Unresolved(
                f"sensor profile {self.profile.name!r} has no harmonisation set to {ref!r}; "
                f"leave this collection out, drop radiometry.harmonize_to, or add a "
                f"'harmonisation' set to catalogs/profiles/{self.profile.name}.yaml",
                reason="no_harmonisation",
            )
        platform = _norm(self.doc.prop("platform"))
        for key in found.platforms:
            if _norm(key) == platform:
                return found, key
        raise Unresolved(
            f"platform {self.doc.prop('platform')!r} has no coefficients in {found.name} "
            f"{found.version} (it has {sorted(found.platforms)})",
            reason="no_harmonisation",
        )


@lru_cache(maxsize=512)
def _load_vendor(kind: str, href: str):
    path = href.removeprefix("file://")
    if kind == "landsat-mtl":
        return landsat_mtl(path)
    if kind == "sentinel-2-mtd":
        return sentinel2_mtd(path)
    return planet_analytic(path)


# --------------------------------------------------------------------------- per band


def _gather_constants(
    ctx: ItemRadiometry,
    *,
    name: str,
    asset_key: str,
    href: str,
    index: int,
    rb: Mapping[str, Any],
    info: Mapping[str, Any],
    dtype: str,
    hint_scale: float | None,
    hint_offset: float | None,
    vendor_band: str | None,
) -> BandConstants:
    cal = ctx.calibration
    unit = str(rb.get("unit") or "")
    scale, offset = number_or_none(rb.get("scale")), number_or_none(rb.get("offset"))
    if cal.ignore_item_offset and offset is not None and cal.offset is not None:
        ctx.notes["offset"] = (
            f"raster:bands offset {offset:g} ignored: {', '.join(cal.because)} "
            f"says the offset is already in the pixels"
        )
        offset = cal.offset
    esun = None  # filled in by band_constants where the target needs it
    # 1. the item
    if _RADIANCE_UNIT.search(unit):
        if scale is None:
            raise Unresolved(f"asset {asset_key!r}: raster:bands unit {unit!r} without a scale")
        if not _PER_MICRON.search(unit):
            raise Unresolved(
                f"asset {asset_key!r} band {index}: raster:bands unit {unit!r} is radiance per "
                "something other than µm; Aquila converts W/(m² sr µm) radiance only"
            )
        return BandConstants(
            radiance=Linear(scale, offset or 0.0, "raster:bands radiance"), level="toa", esun=esun
        )
    if scale is not None and offset is not None:
        return BandConstants(Linear(scale, offset, "raster:bands"), level=cal.level, esun=esun)
    if hint_scale is not None and scale is None:  # a band the profile knows better (thermal)
        off = offset if offset is not None else (hint_offset or 0.0)
        return BandConstants(
            Linear(hint_scale, off, f"profile {ctx.profile.name} (band {name})"), level=cal.level
        )
    # 2. the vendor metadata file (not when the item gave a scale: then only gaps are filled)
    if scale is None:
        vendor = ctx.vendor()
        found = _vendor_band(
            vendor, href=href, index=index, vendor_band=vendor_band, asset_key=asset_key
        )
        if found is not None:
            return BandConstants(**{**found, "esun": esun})
    # 3. the sensor profile
    because = f" ({', '.join(cal.because)})" if cal.because else ""
    if cal.reject:
        raise Unresolved(f"asset {asset_key!r}: {cal.reject}")
    if cal.scale is not None:
        s = scale if scale is not None else cal.scale
        o = offset if offset is not None else (cal.offset or 0.0)
        how = "raster:bands scale" if scale is not None else f"profile {ctx.profile.name}"
        return BandConstants(
            Linear(s, o, how + because),
            needs_sun=bool(cal.sun_elevation_correction and scale is None),
            level=cal.level,
            esun=esun,
        )
    if scale is not None:
        return BandConstants(
            Linear(scale, offset or 0.0, "raster:bands"), level=cal.level, esun=esun
        )
    if dtype.startswith("float"):
        return BandConstants(
            Linear(1.0, offset or 0.0, "float values taken as physical"), level=cal.level, esun=esun
        )
    vendor_hint = f" ({ctx._vendor_note})" if ctx._vendor_note else ""
    raise Unresolved(
        f"asset {asset_key!r} band {index} ({name}) holds {dtype} counts without raster:bands "
        f"scale/offset{vendor_hint}, and sensor profile {ctx.profile.name!r} has no default; "
        "add raster:bands scale/offset to the item, link its vendor metadata, or add a sensor "
        "profile for its constellation"
    )


def band_constants(
    ctx: ItemRadiometry,
    *,
    name: str,
    asset_key: str,
    href: str,
    index: int,
    rb: Mapping[str, Any],
    info: Mapping[str, Any],
    dtype: str,
    hint_scale: float | None,
    hint_offset: float | None,
    vendor_band: str | None,
) -> BandConstants:
    """Gather what the item, then the vendor file, then the profile say about one band; the
    band's ESUN only where the target needs it (radiance from reflectance, or the reverse)."""
    c = _gather_constants(
        ctx,
        name=name,
        asset_key=asset_key,
        href=href,
        index=index,
        rb=rb,
        info=info,
        dtype=dtype,
        hint_scale=hint_scale,
        hint_offset=hint_offset,
        vendor_band=vendor_band,
    )
    wanted = ctx.target.quantity
    if (wanted == "radiance" and c.radiance is None and c.reflectance is not None) or (
        wanted == "reflectance" and c.reflectance is None and c.radiance is not None
    ):
        return replace(c, esun=_esun(ctx, name, info, vendor_band))
    return c


def _esun(ctx: ItemRadiometry, name: str, info: Mapping[str, Any], vendor_band: str | None):
    value = number_or_none(info.get("solar_illumination") or info.get("eo:solar_illumination"))
    if value is not None and value > 0:
        return value, "eo:bands solar_illumination"
    vendor = ctx.vendor() if ctx.calibration.vendor == "sentinel-2-mtd" else None
    if isinstance(vendor, Sentinel2Mtd) and vendor_band and vendor_band in vendor.solar_irradiance:
        return vendor.solar_irradiance[vendor_band], "MTD SOLAR_IRRADIANCE"
    found = ctx.calibration.esun_for(ctx.doc.prop("platform"), name)
    if found is not None:
        return found, f"profile {ctx.profile.name} ({ctx.calibration.esun_source})"
    return None


def _vendor_band(vendor, *, href: str, index: int, vendor_band: str | None, asset_key: str):
    """BandConstants fields from the vendor file for this band, or None (file has no entry)."""
    if vendor is None:
        return None
    if isinstance(vendor, LandsatMtl):
        band = vendor.files.get(os.path.basename(href)) or vendor_band or _band_number(asset_key)
        refl = vendor.reflectance.get(band) if band else None
        rad = vendor.radiance.get(band) if band else None
        if refl is None and rad is None:
            return None
        src = f"MTL {os.path.basename(vendor.path)} band {band}"
        l1 = vendor.level == "L1"
        return {
            "reflectance": None if refl is None else Linear(*refl, f"{src} REFLECTANCE_MULT/ADD"),
            "needs_sun": l1,
            "level": "toa" if l1 else "surface",
            "radiance": None if rad is None else Linear(*rad, f"{src} RADIANCE_MULT/ADD"),
        }
    if isinstance(vendor, Sentinel2Mtd):
        if vendor_band is None:
            return None
        scale, offset = vendor.reflectance(vendor_band)
        src = (
            f"MTD {os.path.basename(vendor.path)} (DN + {vendor.offsets.get(vendor_band, 0):g})"
            f" / {vendor.quantification:g}"
        )
        return {
            "reflectance": Linear(scale, offset, src),
            "level": "toa" if vendor.level == "1C" else "surface",
        }
    band_meta = vendor.get(index)
    if band_meta is None:
        raise Unresolved(f"vendor metadata has no coefficients for band {index}")
    src = f"vendor metadata (planet-analytic-xml) band {index}"
    return {
        "reflectance": None
        if band_meta.reflectance is None
        else Linear(band_meta.reflectance, 0.0, f"{src} reflectanceCoefficient"),
        "level": "toa",
        "radiance": None
        if band_meta.radiance is None
        else Linear(band_meta.radiance, 0.0, f"{src} radiometricScaleFactor"),
    }


def _band_number(asset_key: str) -> str | None:
    found = re.search(r"B(\d+)(?:\.TIF)?$", asset_key, re.IGNORECASE)
    return str(int(found.group(1))) if found else None


def resolve(
    ctx: ItemRadiometry, constants: BandConstants, *, band: str
) -> tuple[Folded, tuple[str, float, float] | None]:
    """The band's folded calibration for the target, harmonised when asked; and the
    (band, slope, intercept) applied, or None where the set has no coefficient for the band."""
    folded = fold(constants, ctx.sun, ctx.target.quantity, band=band)
    found, platform = ctx.harmonisation()
    if found is None or platform is None:
        return folded, None
    coefficient = found.platforms[platform].get(band)
    if coefficient is None:
        return folded, None
    slope, intercept = coefficient
    label = f"{found.name} {found.version} {platform} → {found.to}"
    return harmonised(folded, slope, intercept, label), (band, slope, intercept)


def harmonisation_use(
    ctx: ItemRadiometry, applied: list[tuple[str, float, float] | None], bands: tuple[str, ...]
) -> HarmonisationUse | None:
    """What the item's harmonisation did to each requested band, for lineage (None: no
    harmonisation asked). The reference sensor itself is recorded with name "reference"."""
    ref = ctx.target.harmonize_to
    if not ref:
        return None
    found, platform = ctx.harmonisation()
    if found is None:
        return HarmonisationUse("reference", "", ref, str(ctx.doc.prop("platform") or ""), (), ())
    pairs = list(zip(bands, applied, strict=True))
    return HarmonisationUse(
        name=found.name,
        version=found.version,
        to=found.to,
        platform=platform or "",
        adjusted=tuple((b, a[1], a[2]) for b, a in pairs if a is not None),
        unadjusted=tuple(b for b, a in pairs if a is None),
    )


