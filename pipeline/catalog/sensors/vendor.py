"""Calibration constants that only vendor metadata files carry.

* Planet ``*_AnalyticMS_metadata.xml`` (PlanetScope, SkySat): per band a
  ``radiometricScaleFactor`` (DN → TOA radiance, W m⁻² sr⁻¹ µm⁻¹) and a
  ``reflectanceCoefficient`` (DN → TOA reflectance, 0–1).
* Landsat ``*_MTL.txt`` (ODL), ``*_MTL.json`` and ``*_MTL.xml``, Collection 1 and 2: per band
  REFLECTANCE_MULT/ADD (Level-1: TOA reflectance before the sun-angle correction; Level-2:
  surface reflectance) and RADIANCE_MULT/ADD (Level-1 DN → radiance), SUN_ELEVATION,
  EARTH_SUN_DISTANCE.
* Sentinel-2 ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``: (BOA_)QUANTIFICATION_VALUE, the
  RADIO_ADD_OFFSET / BOA_ADD_OFFSET of baseline >= 04.00, U (the Earth–Sun distance
  correction, 1/d²) and SOLAR_IRRADIANCE per band.

Only local files are read, small ones, and XML documents with a DTD are refused (entity
expansion). Values are returned as frozen records; nothing here decides which constant wins
(that is :mod:`pipeline.catalog.sensors.constants`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_VENDOR_BYTES = 2 * 1024 * 1024
_PS = "{http://schemas.planet.com/ps/v1/planet_product_metadata_geocorrected_level}"


class VendorMetadataError(ValueError):
    """The vendor file is missing, remote, too large, malformed, or lacks the constants."""


def _read_local(path: str) -> bytes:
    if "://" in path:
        raise VendorMetadataError(f"{path} is remote; only local vendor metadata files are read")
    if not os.path.isfile(path):
        raise VendorMetadataError(f"{path} does not exist")
    if os.path.getsize(path) > MAX_VENDOR_BYTES:
        raise VendorMetadataError(f"{path} is larger than {MAX_VENDOR_BYTES} bytes")
    with open(path, "rb") as fh:
        return fh.read()


def _xml(path: str, raw: bytes) -> ET.Element:
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise VendorMetadataError(f"{path} declares a DTD/entities; refused")
    try:
        return ET.fromstring(raw)
    except ET.ParseError as exc:
        raise VendorMetadataError(f"{path} is not well-formed XML: {exc}") from None


def _number(path: str, key: str, text: Any) -> float:
    try:
        return float(str(text).strip().strip('"'))
    except ValueError:
        raise VendorMetadataError(f"{path}: {key} is not a number ({text!r})") from None


# --------------------------------------------------------------------------- Planet


@dataclass(frozen=True)
class PlanetBand:
    """One band of a Planet analytic product."""

    reflectance: float | None  # TOA reflectance per DN
    radiance: float | None  # W/(m² sr µm) per DN


def planet_analytic(path: str) -> dict[int, PlanetBand]:
    """Band number (1-based) → its coefficients, from a Planet analytic metadata XML."""
    root = _xml(path, _read_local(path))
    out: dict[int, PlanetBand] = {}
    for band in root.iter(f"{_PS}bandSpecificMetadata"):
        number = band.findtext(f"{_PS}bandNumber")
        if number is None:
            continue
        values = {}
        for key in ("reflectanceCoefficient", "radiometricScaleFactor"):
            text = band.findtext(f"{_PS}{key}")
            values[key] = None if text is None else _number(path, f"band {number} {key}", text)
        try:
            n = int(number)
        except ValueError:
            raise VendorMetadataError(f"{path}: bandNumber {number!r} is not an integer") from None
        out[n] = PlanetBand(values["reflectanceCoefficient"], values["radiometricScaleFactor"])
    if not any(b.reflectance is not None or b.radiance is not None for b in out.values()):
        raise VendorMetadataError(
            f"{path} has no ps:bandSpecificMetadata/reflectanceCoefficient or "
            "radiometricScaleFactor"
        )
    return out


def planet_reflectance_coefficients(path: str) -> dict[int, float]:
    """Band number (1-based) → TOA reflectance per DN, from a Planet analytic metadata XML."""
    found = {n: b.reflectance for n, b in planet_analytic(path).items() if b.reflectance}
    if not found:
        raise VendorMetadataError(f"{path} has no ps:bandSpecificMetadata/reflectanceCoefficient")
    return found


# --------------------------------------------------------------------------- Landsat MTL


@dataclass(frozen=True)
class LandsatMtl:
    """The radiometric part of a Landsat MTL. Bands are the MTL's band names ("4", "ST_B10")."""

    path: str
    level: str  # "L1" or "L2": which DN the product's band files hold
    files: Mapping[str, str]  # band file basename → band name
    reflectance: Mapping[str, tuple[float, float]]  # band → (mult, add) for the product's DN
    radiance: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # Level-1 DN only
    sun_elevation: float | None = None  # degrees
    earth_sun_distance: float | None = None  # AU
    acquired: dt.datetime | None = None  # scene centre time, UTC


def parse_mtl(path: str) -> dict[str, Any]:
    """A Landsat MTL in any of its three encodings as nested dicts {group: {key: value}}."""
    raw = _read_local(path)
    text = raw.decode("utf-8", errors="replace").lstrip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise VendorMetadataError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise VendorMetadataError(f"{path}: an MTL JSON is an object of groups")
        return data
    if text.startswith("<"):
        return {_strip(el.tag): _xml_groups(el) for el in [_xml(path, raw)]}
    return _odl(path, text)


def _strip(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_groups(el: ET.Element) -> Any:
    children = list(el)
    if not children:
        return (el.text or "").strip()
    return {_strip(c.tag): _xml_groups(c) for c in children}


_ODL_LINE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*=\s*(.*?)\s*$")


def _odl(path: str, text: str) -> dict[str, Any]:
    root: dict[str, Any] = {}
    stack = [root]
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.strip() == "END":
            continue
        found = _ODL_LINE.match(line)
        if not found:
            raise VendorMetadataError(f"{path} line {n}: not 'KEY = VALUE' ODL: {line[:60]!r}")
        key, value = found.groups()
        if key == "GROUP":
            group: dict[str, Any] = {}
            stack[-1][value] = group
            stack.append(group)
        elif key == "END_GROUP":
            if len(stack) == 1:
                raise VendorMetadataError(f"{path} line {n}: END_GROUP without GROUP")
            stack.pop()
        else:
            stack[-1][key] = value.strip('"')
    if len(stack) != 1:
        raise VendorMetadataError(f"{path}: a GROUP is never closed")
    return root


def _flatten(groups: Mapping[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in groups.items():
        if isinstance(value, Mapping):
            out[key] = {k: v for k, v in value.items() if not isinstance(v, Mapping)}
            out.update(_flatten(value))
    return out


_BAND_KEY = re.compile(r"^(REFLECTANCE|RADIANCE)_(MULT|ADD)_BAND_(\w+)$")


def landsat_mtl(path: str) -> LandsatMtl:
    """The radiometric constants of a Landsat MTL (C1 or C2, Level-1 or Level-2)."""
    groups = _flatten(parse_mtl(path))
    if not groups:
        raise VendorMetadataError(f"{path} has no MTL groups")
    contents = groups.get("PRODUCT_CONTENTS") or groups.get("PRODUCT_METADATA") or {}
    level_text = str(contents.get("PROCESSING_LEVEL") or contents.get("DATA_TYPE") or "").upper()
    level = "L2" if level_text.startswith("L2") else "L1"
    if level == "L2":
        rescaling = groups.get("LEVEL2_SURFACE_REFLECTANCE_PARAMETERS")
    else:
        rescaling = groups.get("LEVEL1_RADIOMETRIC_RESCALING") or groups.get(
            "RADIOMETRIC_RESCALING"
        )
    if not rescaling:
        group = "LEVEL2_SURFACE_REFLECTANCE" if level == "L2" else "RADIOMETRIC_RESCALING"
        raise VendorMetadataError(f"{path} ({level_text or 'unknown level'}) has no {group} group")
    terms: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in rescaling.items():
        found = _BAND_KEY.match(key)
        if found:
            kind, part, band = found.groups()
            terms.setdefault((kind, band), {})[part] = _number(path, key, value)
    reflectance = {
        b: (t["MULT"], t["ADD"])
        for (k, b), t in terms.items()
        if k == "REFLECTANCE" and len(t) == 2
    }
    radiance = (
        {b: (t["MULT"], t["ADD"]) for (k, b), t in terms.items() if k == "RADIANCE" and len(t) == 2}
        if level == "L1"
        else {}
    )
    files = {
        str(v).strip('"'): k[len("FILE_NAME_BAND_") :]
        for k, v in contents.items()
        if k.startswith("FILE_NAME_BAND_")
    }
    image = groups.get("IMAGE_ATTRIBUTES", {})
    sun = image.get("SUN_ELEVATION")
    distance = image.get("EARTH_SUN_DISTANCE")
    return LandsatMtl(
        path=path,
        level=level,
        files=files,
        reflectance=reflectance,
        radiance=radiance,
        sun_elevation=None if sun in (None, "") else _number(path, "SUN_ELEVATION", sun),
        earth_sun_distance=(
            None if distance in (None, "") else _number(path, "EARTH_SUN_DISTANCE", distance)
        ),
        acquired=_acquired(image or contents, groups),
    )


def _acquired(
    image: Mapping[str, Any], groups: Mapping[str, Mapping[str, Any]]
) -> dt.datetime | None:
    meta = {**groups.get("PRODUCT_METADATA", {}), **image}
    day, time = meta.get("DATE_ACQUIRED"), meta.get("SCENE_CENTER_TIME")
    if not day:
        return None
    clock = str(time or "12:00:00").strip('"').rstrip("Z")
    whole, _, frac = clock.partition(".")
    try:
        t = dt.datetime.fromisoformat(f"{day}T{whole}").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return t + dt.timedelta(microseconds=round(float(f"0.{frac or 0}") * 1e6))


# --------------------------------------------------------------------------- Sentinel-2 MTD

#: bandId of the MTD lists → band name.
S2_BAND_IDS = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)


@dataclass(frozen=True)
class Sentinel2Mtd:
    """The radiometric part of a Sentinel-2 product metadata file (MTD_MSIL1C / MTD_MSIL2A)."""

    path: str
    level: str  # "1C" (TOA) or "2A" (BOA)
    baseline: str | None  # e.g. "05.09"
    spacecraft: str | None  # e.g. "Sentinel-2B"
    quantification: float  # DN per unit reflectance (10000)
    offsets: Mapping[str, float]  # band → RADIO_ADD_OFFSET / BOA_ADD_OFFSET (DN), 0 before 04.00
    u: float | None  # Earth–Sun distance correction: (d0 / d)², i.e. 1 / d² in AU
    solar_irradiance: Mapping[str, float]  # band → W/(m² µm)

    def reflectance(self, band: str) -> tuple[float, float]:
        """(scale, offset): reflectance = DN * scale + offset = (DN + ADD_OFFSET) / QUANT."""
        return 1.0 / self.quantification, self.offsets.get(band, 0.0) / self.quantification


def sentinel2_mtd(path: str) -> Sentinel2Mtd:
    """Quantification, offsets, U and solar irradiance of a Sentinel-2 MTD_MSIL1C/2A.xml."""
    root = _xml(path, _read_local(path))
    found: dict[str, list[ET.Element]] = {}
    for el in root.iter():
        found.setdefault(_strip(el.tag), []).append(el)

    def text(tag: str) -> str | None:
        els = found.get(tag)
        return None if not els or els[0].text is None else els[0].text.strip()

    def per_band(tag: str) -> dict[str, float]:
        out = {}
        for el in found.get(tag, ()):
            ident = el.get("band_id", el.get("bandId"))
            if ident is None or not ident.isdigit() or int(ident) >= len(S2_BAND_IDS):
                raise VendorMetadataError(f"{path}: {tag} has a bad band id {ident!r}")
            out[S2_BAND_IDS[int(ident)]] = _number(path, tag, el.text)
        return out

    product_type = text("PRODUCT_TYPE") or ""
    level = "2A" if "2A" in product_type or "BOA_QUANTIFICATION_VALUE" in found else "1C"
    quant = text("BOA_QUANTIFICATION_VALUE" if level == "2A" else "QUANTIFICATION_VALUE")
    if quant is None:
        raise VendorMetadataError(f"{path} has no (BOA_)QUANTIFICATION_VALUE")
    u = text("U")
    return Sentinel2Mtd(
        path=path,
        level=level,
        baseline=text("PROCESSING_BASELINE"),
        spacecraft=text("SPACECRAFT_NAME"),
        quantification=_number(path, "QUANTIFICATION_VALUE", quant),
        offsets=per_band("BOA_ADD_OFFSET" if level == "2A" else "RADIO_ADD_OFFSET"),
        u=None if u is None else _number(path, "U", u),
        solar_irradiance=per_band("SOLAR_IRRADIANCE"),
    )
