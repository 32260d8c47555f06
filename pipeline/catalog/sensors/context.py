"""What one item's bands share while their constants are gathered: the run's target quantity,
the profile's calibration for the item, its vendor metadata file (read once, on first need), its
sun geometry and its harmonisation set.

Per band, :mod:`pipeline.catalog.sensors.constants` reads this context; the sun geometry and the
vendor file feed the fold of :mod:`pipeline.catalog.sensors.folding`.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pipeline.catalog.sensors.folding import SunGeometry, Unresolved
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

