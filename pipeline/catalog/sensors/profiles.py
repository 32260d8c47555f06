"""Sensor profiles: data files that say what an item leaves unsaid about its sensor.

A profile (``catalogs/profiles/*.yaml``, schema in that folder's README) gives, per
constellation: the asset key → common name map for items without ``eo:bands``, default
scale/offset/nodata for bands whose ``raster:bands`` lack them (with rules on facts such as the
Sentinel-2 processing baseline), 8-bit display assets never to use as data, the QA asset and its
masked values, and the resampling per band kind. Files are validated at load (pydantic, unknown
keys refused, ``yaml.safe_load``) and turned into frozen values; the item always wins over the
profile where it states something itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.catalog.stacdoc import ItemDoc
from pipeline.errors import InputError

DEFAULT_PROFILE_DIR = Path(__file__).resolve().parents[3] / "catalogs" / "profiles"
GENERIC = "generic"


class ProfileError(InputError):
    """A sensor profile file is invalid, or a workflow names a profile that does not exist."""

    reason = "profile_invalid"


# --------------------------------------------------------------------------- file schema


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


class _When(_Strict):
    fact: str
    equals: str | None = None
    at_least: str | None = None
    below: str | None = None
    missing: bool = False

    @model_validator(mode="after")
    def _one_test(self) -> _When:
        tests = [self.equals is not None, self.at_least is not None or self.below is not None]
        if sum(tests) + int(self.missing) != 1:
            raise ValueError("give exactly one of: equals, at_least/below, missing: true")
        return self


Level = Literal["toa", "surface"]


class _Rule(_Strict):
    when: _When
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


class _Quality(_Strict):
    assets: tuple[str, ...] = Field(min_length=1)
    classes: dict[MaskClass, tuple[int, ...]] = {}  # class-valued QA: mask class -> values
    bitfields: tuple[_Bitfield, ...] = ()

    @model_validator(mode="after")
    def _one_kind(self) -> _Quality:
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


class _ProfileFile(_Strict):
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
    quality: tuple[_Quality, ...] = ()
    resampling: _Resampling = _Resampling()
    harmonisation: tuple[_Harmonisation, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> _ProfileFile:
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


# --------------------------------------------------------------------------- runtime values


@dataclass(frozen=True)
class BandHint:
    """Where a common-name band lives when the item does not say (asset keys, 1-based index),
    and what the profile knows of its nodata and vendor-metadata name."""

    assets: tuple[str, ...]
    index: int = 1
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    resampling: str | None = None
    valid_range: tuple[float, float] | None = None
    mask: tuple[str, int, tuple[int, ...]] | None = None  # (asset, index, nodata values)
    vendor_band: str | None = None


@dataclass(frozen=True)
class QualityHint:
    """A QA asset the profile knows and its rules (class, bit offset, bit length (0: whole
    value), values); see :mod:`pipeline.kernels.qa`."""

    assets: tuple[str, ...]
    rules: tuple[tuple[str, int, int, tuple[int, ...]], ...] = ()

    @property
    def masked_values(self) -> tuple[int, ...]:
        """Whole QA values masked by the default mask classes."""
        return default_masked_values(self.rules)

    @property
    def bitfields(self) -> tuple[tuple[int, int, tuple[int, ...]], ...]:
        """(offset, length, values) bit fields masked by the default mask classes."""
        return default_bitfields(self.rules)


def default_masked_values(rules) -> tuple[int, ...]:
    from pipeline.kernels.qa import DEFAULT_MASK

    return tuple(sorted({v for c, _, n, vs in rules if n == 0 and c in DEFAULT_MASK for v in vs}))


def default_bitfields(rules) -> tuple[tuple[int, int, tuple[int, ...]], ...]:
    from pipeline.kernels.qa import DEFAULT_MASK

    return tuple((o, n, vs) for c, o, n, vs in rules if n > 0 and c in DEFAULT_MASK)


@dataclass(frozen=True)
class Harmonisation:
    """A coefficient set of a profile: name, version, reference sensor, per-platform
    {band: (slope, intercept)}."""

    name: str
    version: str
    to: str
    source: str
    platforms: Mapping[str, Mapping[str, tuple[float, float]]]


@dataclass(frozen=True)
class Calibration:
    """Profile defaults that apply to one item, after its rules were evaluated on its facts."""

    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    sun_elevation_correction: bool = False
    level: str | None = None  # "toa" / "surface" / None (not known)
    valid_range: tuple[float, float] | None = None
    ignore_item_offset: bool = False
    vendor: str | None = None
    vendor_assets: tuple[str, ...] = ()
    esun: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    esun_source: str | None = None
    reject: str | None = None
    because: tuple[str, ...] = ()  # the facts that decided, e.g. ("processing_baseline=05.11",)

    def esun_for(self, platform: str | None, band: str) -> float | None:
        """Band solar irradiance, W/(m² µm), for this platform (else the profile default)."""
        key = _norm(platform)
        for name, table in self.esun.items():
            if name != "default" and _norm(name) == key and band in table:
                return table[band]
        return self.esun.get("default", {}).get(band)


@dataclass(frozen=True)
class SensorProfile:
    """A validated profile. Pick with :meth:`ProfileSet.select`; read with the methods below."""

    name: str
    description: str
    kind: str
    priority: int
    source: str  # the file it came from
    dtype: str | None
    bands: Mapping[str, BandHint] = field(default_factory=dict)
    display_assets: tuple[str, ...] = ()
    quality: tuple[QualityHint, ...] = ()
    data_resampling: str | None = None
    harmonisation: tuple[Harmonisation, ...] = ()
    _model: _ProfileFile | None = field(default=None, repr=False, compare=False)

    def harmonisation_to(self, reference: str) -> Harmonisation | None:
        """This sensor's coefficient set to the reference sensor (profile name), if any."""
        for h in self.harmonisation:
            if h.to == reference:
                return h
        return None

    def matches(self, doc: ItemDoc) -> bool:
        """True if the item's constellation, platform or collection names this sensor."""
        return self._matches(doc, _norm(doc.prop("constellation")), _norm(doc.prop("platform")))

    def _matches(self, doc: ItemDoc, constellation: str, platform: str) -> bool:
        m = self._model.match if self._model else None
        if m is None:
            return False
        if m.any:
            return True
        if constellation and constellation in _norm_set(m.constellation):
            return True
        if platform and platform in _norm_set(m.platform):
            return True
        raw_platform = str(doc.prop("platform") or "")
        if m.platform_pattern and re.fullmatch(m.platform_pattern, raw_platform, re.IGNORECASE):
            return True
        return bool(
            m.collection_pattern
            and doc.collection
            and re.fullmatch(m.collection_pattern, doc.collection, re.IGNORECASE)
        )

    def fact(self, doc: ItemDoc, name: str) -> str | None:
        """A named fact of the item (e.g. processing baseline), from the first source having it."""
        assert self._model is not None
        for source in self._model.facts.get(name, ()):
            value = doc.prop(source.property)
            if value is None or value == "":
                continue
            text = str(value)
            if source.pattern is None:
                return text
            found = re.search(source.pattern, text)
            if found:
                return ".".join(g for g in found.groups() if g is not None)
        return None

    def calibration_for(self, doc: ItemDoc) -> Calibration:
        """The profile's calibration defaults for this item (rules applied in file order)."""
        assert self._model is not None
        c = self._model.calibration
        values: dict[str, Any] = {
            "scale": c.scale,
            "offset": c.offset,
            "nodata": c.nodata,
            "sun_elevation_correction": c.sun_elevation_correction,
            "level": c.level,
            "valid_range": None,
            "ignore_item_offset": False,
        }
        reject = None
        facts = {name: self.fact(doc, name) for name in self._model.facts}
        because = [f"{k}={v if v is not None else 'unknown'}" for k, v in facts.items()]
        for rule in c.rules:
            value = facts[rule.when.fact]
            if not _holds(rule.when, value):
                continue
            for key in (
                "scale",
                "offset",
                "nodata",
                "sun_elevation_correction",
                "level",
                "valid_range",
            ):
                if getattr(rule, key) is not None:
                    values[key] = getattr(rule, key)
            if rule.ignore_item_offset:
                values["ignore_item_offset"] = True
            if rule.reject:
                reject = rule.reject
        return Calibration(
            **values,
            vendor=c.vendor,
            vendor_assets=c.vendor_assets,
            esun=c.esun,
            esun_source=c.esun_source,
            reject=reject,
            because=tuple(because),
        )


@lru_cache(maxsize=256)
def _norm_set(values: tuple[str, ...]) -> frozenset[str]:
    return frozenset(_norm(v) for v in values)


def _norm(value: Any) -> str:
    if isinstance(value, list | tuple):
        value = value[0] if len(value) == 1 else ""
    return re.sub(r"[\s_\-]", "", str(value or "")).lower()


def version_tuple(text: str) -> tuple[int, ...]:
    """'04.00' → (4, 0); 'N0511' → (5, 11) is done by the fact pattern, not here."""
    return tuple(int(p) for p in re.findall(r"\d+", text))


def _holds(when: _When, value: str | None) -> bool:
    if when.missing:
        return value is None
    if value is None:
        return False
    if when.equals is not None:
        return value.lower() == when.equals.lower()
    have = version_tuple(value)
    if not have:
        return False
    if when.at_least is not None and have < version_tuple(when.at_least):
        return False
    return not (when.below is not None and have >= version_tuple(when.below))


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class ProfileSet:
    """All profiles of a folder, highest priority first; the generic one is the fallback."""

    profiles: tuple[SensorProfile, ...]

    def names(self) -> list[str]:
        return [p.name for p in self.profiles]

    def get(self, name: str) -> SensorProfile:
        for p in self.profiles:
            if p.name == name:
                return p
        raise ProfileError(
            f"no sensor profile named {name!r}; available: {', '.join(sorted(self.names()))}"
        )

    def select(self, doc: ItemDoc, forced: str | None = None) -> SensorProfile:
        """The forced profile, else the highest-priority profile whose ``match`` fits the item."""
        if forced:
            return self.get(forced)
        constellation, platform = _norm(doc.prop("constellation")), _norm(doc.prop("platform"))
        for p in self.profiles:
            if p._matches(doc, constellation, platform):
                return p
        return self.get(GENERIC)


def load_profile(path: Path) -> SensorProfile:
    """Read and validate one profile file; raises :class:`ProfileError` naming file and field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ProfileError(f"sensor profile {path}: cannot read it as YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"sensor profile {path}: expected a mapping of keys (name, match, ...)")
    try:
        model = _ProfileFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors()
        )
        raise ProfileError(f"sensor profile {path} is not valid: {problems}") from None
    if model.name != path.stem:
        raise ProfileError(f"sensor profile {path}: name {model.name!r} must equal the file name")
    return _to_runtime(model, str(path))


def _to_runtime(model: _ProfileFile, source: str) -> SensorProfile:
    bands = {
        name: BandHint(
            b.assets,
            b.index,
            b.scale,
            b.offset,
            b.nodata,
            b.resampling,
            b.valid_range,
            (b.mask.asset, b.mask.index, b.mask.nodata_values) if b.mask else None,
            b.vendor_band,
        )
        for name, b in model.bands.items()
    }
    quality = tuple(QualityHint(q.assets, _quality_rules(q)) for q in model.quality)
    harmonisation = tuple(
        Harmonisation(h.name, h.version, h.to, h.source, h.platforms) for h in model.harmonisation
    )
    return SensorProfile(
        name=model.name,
        description=model.description,
        kind=model.kind,
        priority=model.priority,
        source=source,
        dtype=model.dtype,
        bands=bands,
        display_assets=model.display_assets,
        quality=quality,
        data_resampling=model.resampling.data,
        harmonisation=harmonisation,
        _model=model,
    )


def _quality_rules(q: _Quality) -> tuple[tuple[str, int, int, tuple[int, ...]], ...]:
    rules: list[tuple[str, int, int, tuple[int, ...]]] = [
        (cls, 0, 0, tuple(values)) for cls, values in q.classes.items()
    ]
    for f in q.bitfields:
        values = tuple(f.masked) if f.masked else tuple(range(1, 1 << f.length))
        rules.append((f.class_, f.offset, f.length, values))
    return tuple(rules)


def load_profiles(folder: str | Path | None = None) -> ProfileSet:
    """Every ``*.yaml`` profile of ``folder`` (default: the bundled ``catalogs/profiles``)."""
    return _load_cached(str(Path(folder or DEFAULT_PROFILE_DIR).resolve()))


@lru_cache(maxsize=8)
def _load_cached(folder: str) -> ProfileSet:
    paths = sorted(Path(folder).glob("*.yaml"))
    if not paths:
        raise ProfileError(f"no sensor profiles (*.yaml) in {folder}")
    profiles = [load_profile(p) for p in paths]
    names = [p.name for p in profiles]
    if GENERIC not in names:
        raise ProfileError(
            f"{folder} has no {GENERIC!r} profile (the fallback for unknown sensors)"
        )
    profiles.sort(key=lambda p: (-p.priority, p.name))
    return ProfileSet(tuple(profiles))


def profile_names(folder: str | Path | None = None) -> Sequence[str]:
    return load_profiles(folder).names()
