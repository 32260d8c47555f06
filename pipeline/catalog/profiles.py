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

DEFAULT_PROFILE_DIR = Path(__file__).resolve().parents[2] / "catalogs" / "profiles"
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


class _Band(_Strict):
    assets: tuple[str, ...] = Field(min_length=1)
    index: Annotated[int, Field(ge=1)] = 1
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    resampling: Literal["nearest", "bilinear", "cubic", "average"] | None = None


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


class _Rule(_Strict):
    when: _When
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    sun_elevation_correction: bool | None = None
    reject: str | None = None


class _Calibration(_Strict):
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    sun_elevation_correction: bool = False
    vendor: Literal["planet-analytic-xml"] | None = None
    vendor_assets: tuple[str, ...] = ()
    rules: tuple[_Rule, ...] = ()


class _Bitfield(_Strict):
    offset: Annotated[int, Field(ge=0, le=63)]
    length: Annotated[int, Field(ge=1, le=32)] = 1
    masked: tuple[int, ...] = ()  # empty: every non-zero value masks


class _Quality(_Strict):
    assets: tuple[str, ...] = Field(min_length=1)
    masked_values: tuple[int, ...] = ()
    bitfields: tuple[_Bitfield, ...] = ()

    @model_validator(mode="after")
    def _one_kind(self) -> _Quality:
        if bool(self.masked_values) == bool(self.bitfields):
            raise ValueError("give either masked_values (classes) or bitfields, not both/none")
        return self


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
        return self


# --------------------------------------------------------------------------- runtime values


@dataclass(frozen=True)
class BandHint:
    """Where a common-name band lives when the item does not say (asset keys, 1-based index)."""

    assets: tuple[str, ...]
    index: int = 1
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    resampling: str | None = None


@dataclass(frozen=True)
class QualityHint:
    """A QA asset the profile knows, and which values/bit-fields of it mask a pixel."""

    assets: tuple[str, ...]
    masked_values: tuple[int, ...] = ()
    bitfields: tuple[tuple[int, int, tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class Calibration:
    """Profile defaults that apply to one item, after its rules were evaluated on its facts."""

    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    sun_elevation_correction: bool = False
    vendor: str | None = None
    vendor_assets: tuple[str, ...] = ()
    reject: str | None = None
    because: tuple[str, ...] = ()  # the facts that decided, e.g. ("processing_baseline=05.11",)


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
    _model: _ProfileFile | None = field(default=None, repr=False, compare=False)

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
        }
        reject = None
        facts = {name: self.fact(doc, name) for name in self._model.facts}
        because = [f"{k}={v if v is not None else 'unknown'}" for k, v in facts.items()]
        for rule in c.rules:
            value = facts[rule.when.fact]
            if not _holds(rule.when, value):
                continue
            for key in ("scale", "offset", "nodata", "sun_elevation_correction"):
                if getattr(rule, key) is not None:
                    values[key] = getattr(rule, key)
            if rule.reject:
                reject = rule.reject
        return Calibration(
            **values,
            vendor=c.vendor,
            vendor_assets=c.vendor_assets,
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
        name: BandHint(b.assets, b.index, b.scale, b.offset, b.nodata, b.resampling)
        for name, b in model.bands.items()
    }
    quality = tuple(
        QualityHint(
            q.assets,
            tuple(sorted(set(q.masked_values))),
            tuple(
                (
                    f.offset,
                    f.length,
                    tuple(f.masked) if f.masked else tuple(range(1, 1 << f.length)),
                )
                for f in q.bitfields
            ),
        )
        for q in model.quality
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
        _model=model,
    )


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
