"""The sensor profile file schema: what a ``catalogs/profiles/*.yaml`` file may say.

Pydantic models, strict (unknown keys refused, frozen), validated once at load by
:func:`pipeline.catalog.sensors.profiles.load_profile`, which turns a :class:`ProfileFile` into
the frozen runtime values of :mod:`pipeline.catalog.sensors.profiles`. The schema is documented
for profile authors in ``catalogs/profiles/README.md``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Match(_Strict):
    constellation: tuple[str, ...] = ()
    platform: tuple[str, ...] = ()
    platform_pattern: str | None = None
    collection_pattern: str | None = None
    any: bool = False  # the generic profile: matches every item

    @field_validator("platform_pattern", "collection_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            _compile(value)
        return value


class _MaskBand(_Strict):
    asset: str
    index: Annotated[int, Field(ge=1)] = 1
    nodata_values: tuple[int, ...] = (0,)  # mask values meaning "no data" (GDAL: 0)


class _Band(_Strict):
    assets: tuple[str, ...] = Field(min_length=1)
    index: Annotated[int, Field(ge=1)] = 1
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    valid_range: tuple[float, float] | None = None  # DN outside [lo, hi] is nodata
    mask: _MaskBand | None = None  # a band on the same grid whose nodata_values mark nodata
    vendor_band: str | None = None  # the band's name in the vendor metadata file ("4", "B04")
    resampling: Literal["nearest", "bilinear", "cubic", "average"] | None = None

    @field_validator("valid_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None):
        if value is not None and not value[0] <= value[1]:
            raise ValueError("valid_range is [lo, hi] with lo <= hi")
        return value


class _FactSource(_Strict):
    property: str
    pattern: str | None = None

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None and _compile(value).groups < 1:
            raise ValueError("a fact pattern needs at least one (group)")
        return value


class When(_Strict):
    fact: str
    equals: str | None = None
    at_least: str | None = None
    below: str | None = None
    missing: bool = False

    @model_validator(mode="after")
    def _one_test(self) -> When:
        tests = [self.equals is not None, self.at_least is not None or self.below is not None]
        if sum(tests) + int(self.missing) != 1:
            raise ValueError("give exactly one of: equals, at_least/below, missing: true")
        return self


Level = Literal["toa", "surface"]


class _Rule(_Strict):
    when: When
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    sun_elevation_correction: bool | None = None
    level: Level | None = None  # what the reflectance is: top of atmosphere or surface
    valid_range: tuple[float, float] | None = None  # DN outside [lo, hi] is nodata
    ignore_item_offset: bool = False  # the item's raster:bands offset is known to be wrong here
    reject: str | None = None


VendorKind = Literal["planet-analytic-xml", "landsat-mtl", "sentinel-2-mtd"]


class _Calibration(_Strict):
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    sun_elevation_correction: bool = False
    level: Level | None = None
    vendor: VendorKind | None = None
    vendor_assets: tuple[str, ...] = ()
    # band solar irradiance, W/(m² µm): {platform or "default": {band: value}}
    esun: dict[str, dict[str, Annotated[float, Field(gt=0)]]] = {}
    esun_source: str | None = None
    rules: tuple[_Rule, ...] = ()

    @model_validator(mode="after")
    def _esun_cited(self) -> _Calibration:
        if self.esun and not self.esun_source:
            raise ValueError("esun needs esun_source (where the values were published)")
        return self


MaskClass = Literal["nodata", "saturated", "cloud", "shadow", "cirrus", "snow", "water"]


class _Bitfield(_Strict):
    offset: Annotated[int, Field(ge=0, le=63)]
    length: Annotated[int, Field(ge=1, le=32)] = 1
    masked: tuple[int, ...] = ()  # empty: every non-zero value sets the class
    class_: MaskClass = Field(alias="class")


class Quality(_Strict):
    assets: tuple[str, ...] = Field(min_length=1)
    classes: dict[MaskClass, tuple[int, ...]] = {}  # class-valued QA: mask class -> values
    bitfields: tuple[_Bitfield, ...] = ()

    @model_validator(mode="after")
    def _one_kind(self) -> Quality:
        if bool(self.classes) == bool(self.bitfields):
            raise ValueError(
                "give either classes ({class: [values]}, e.g. Sentinel-2 SCL) or bitfields "
                "([{offset, length, masked, class}], e.g. Landsat QA_PIXEL), not both/none"
            )
        return self


class _Harmonisation(_Strict):
    """A versioned bandpass adjustment to a reference sensor: reflectance' = slope ·
    reflectance + intercept, per platform and common band name."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,63}$")]
    version: str
    to: str  # the reference sensor's profile name
    source: str  # the publication the coefficients come from
    platforms: dict[str, dict[str, tuple[float, float]]] = Field(min_length=1)


class _Resampling(_Strict):
    data: Literal["nearest", "bilinear", "cubic", "average"] | None = None
    quality: Literal["nearest"] = "nearest"


class ProfileFile(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
    description: str
    kind: Literal["optical", "sar"] = "optical"
    priority: int = 0
    match: _Match
    dtype: (
        Literal["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"] | None
    ) = None
    bands: dict[str, _Band] = {}
    display_assets: tuple[str, ...] = ()
    facts: dict[str, tuple[_FactSource, ...]] = {}
    calibration: _Calibration = _Calibration()
    quality: tuple[Quality, ...] = ()
    resampling: _Resampling = _Resampling()
    harmonisation: tuple[_Harmonisation, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> ProfileFile:
        for name in self.bands:
            if name != name.lower():
                raise ValueError(f"band {name!r}: common names are lower-case")
        for rule in self.calibration.rules:
            if rule.when.fact not in self.facts:
                raise ValueError(f"rule uses fact {rule.when.fact!r}; define it under 'facts'")
        if self.calibration.vendor and not self.calibration.vendor_assets:
            raise ValueError("calibration.vendor needs vendor_assets (the metadata asset keys)")
        targets = [h.to for h in self.harmonisation]
        if len(set(targets)) != len(targets):
            raise ValueError("one harmonisation set per reference sensor ('to')")
        return self

