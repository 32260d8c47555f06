"""From each provider's numbers to one comparable quantity: which constants a band's DN need,
and where they come from; they are folded into one linear function by
:mod:`pipeline.catalog.sensors.folding` (the chain, per target quantity, is described there).

Each constant comes from the item, else from the vendor metadata file the item links to (Landsat
MTL, Sentinel-2 MTD, Planet XML), else from the sensor profile; θs from the item's sun
elevation, else the vendor file, else per pixel from time and place (``sun_power`` ≠ 0); d from
the item (``s2:reflectance_conversion_factor``), else the vendor file, else the acquisition
date. A band whose constants cannot be resolved for the target raises :class:`Unresolved`,
which normalisation turns into a reject with reason ``no_calibration`` (``no_harmonisation``
for a missing coefficient set).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pipeline.catalog.scene import HarmonisationUse
from pipeline.catalog.sensors.context import ItemRadiometry
from pipeline.catalog.sensors.folding import (
    BandConstants,
    Folded,
    Linear,
    Unresolved,
    fold,
    harmonised,
)
from pipeline.catalog.sensors.vendor import LandsatMtl, Sentinel2Mtd
from pipeline.catalog.stacdoc import number_or_none

_RADIANCE_UNIT = re.compile(r"(?i)(\bW\b|W⋅|watt).*(sr|steradian)")
_PER_MICRON = re.compile(r"(?i)(µm|μm|um|micron)")


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


