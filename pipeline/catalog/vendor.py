"""Calibration constants that only vendor metadata files carry.

Planet's ``*_AnalyticMS_metadata.xml`` (PlanetScope, SkySat) lists per band a
``radiometricScaleFactor`` (DN → TOA radiance, W m⁻² sr⁻¹ µm⁻¹) and a ``reflectanceCoefficient``
(DN → TOA reflectance, 0–1). Aquila calibrates to reflectance, so it reads the latter.
Only local files are read, small ones, and documents with a DTD are refused (entity expansion).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

MAX_VENDOR_BYTES = 2 * 1024 * 1024
_PS = "{http://schemas.planet.com/ps/v1/planet_product_metadata_geocorrected_level}"


class VendorMetadataError(ValueError):
    """The vendor file is missing, remote, too large, or lacks the constants."""


def planet_reflectance_coefficients(path: str) -> dict[int, float]:
    """Band number (1-based) → TOA reflectance per DN, from a Planet analytic metadata XML."""
    if "://" in path:
        raise VendorMetadataError(f"{path} is remote; only local vendor metadata files are read")
    if not os.path.isfile(path):
        raise VendorMetadataError(f"{path} does not exist")
    if os.path.getsize(path) > MAX_VENDOR_BYTES:
        raise VendorMetadataError(f"{path} is larger than {MAX_VENDOR_BYTES} bytes")
    with open(path, "rb") as fh:
        raw = fh.read()
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise VendorMetadataError(f"{path} declares a DTD/entities; refused")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise VendorMetadataError(f"{path} is not well-formed XML: {exc}") from None
    out: dict[int, float] = {}
    for band in root.iter(f"{_PS}bandSpecificMetadata"):
        number = band.findtext(f"{_PS}bandNumber")
        coefficient = band.findtext(f"{_PS}reflectanceCoefficient")
        if number is None or coefficient is None:
            continue
        try:
            out[int(number)] = float(coefficient)
        except ValueError:
            raise VendorMetadataError(
                f"{path}: band {number!r} has a non-numeric reflectanceCoefficient {coefficient!r}"
            ) from None
    if not out:
        raise VendorMetadataError(f"{path} has no ps:bandSpecificMetadata/reflectanceCoefficient")
    return out
