"""Sensor profiles: data files that say what an item leaves unsaid about its sensor.

A profile (``catalogs/profiles/*.yaml``, schema in that folder's README) gives, per
constellation: the asset key → common name map for items without ``eo:bands``, default
scale/offset/nodata for bands whose ``raster:bands`` lack them (with rules on facts such as the
Sentinel-2 processing baseline), 8-bit display assets never to use as data, the QA asset and its
masked values, and the resampling per band kind. Files are validated at load (pydantic, unknown
keys refused, ``yaml.safe_load``; the schema is :mod:`pipeline.catalog.sensors.schema`) and
turned into frozen values; the item always wins over the profile where it states something
itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.catalog.sensors.schema import ProfileFile, Quality, When
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.errors import InputError

DEFAULT_PROFILE_DIR = Path(__file__).resolve().parents[3] / "catalogs" / "profiles"
GENERIC = "generic"


class ProfileError(InputError):
    """A sensor profile file is invalid, or a workflow names a profile that does not exist."""

    reason = "profile_invalid"


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
    _model: ProfileFile | None = field(default=None, repr=False, compare=False)

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


def _holds(when: When, value: str | None) -> bool:
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
        model = ProfileFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors()
        )
        raise ProfileError(f"sensor profile {path} is not valid: {problems}") from None
    if model.name != path.stem:
        raise ProfileError(f"sensor profile {path}: name {model.name!r} must equal the file name")
    return _to_runtime(model, str(path))


def _to_runtime(model: ProfileFile, source: str) -> SensorProfile:
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


def _quality_rules(q: Quality) -> tuple[tuple[str, int, int, tuple[int, ...]], ...]:
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
