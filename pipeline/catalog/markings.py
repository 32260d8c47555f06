"""Releasability: who may see a scene, who may see a product made of scenes.

Aquila's own STAC extension (``catalogs/aquila-marking/v1.0.0/schema.json``) puts a marking on
an item's properties, and optionally on an asset, under ``aquila:marking``::

    {"classification": "RESTRICTED", "releasable_to": ["NLD", "NOR"],
     "caveats": ["CROPS"], "owner": "NLD", "licence": "CC-BY-4.0"}

Parsing is strict (:func:`parse_marking` raises :class:`MarkingError` with a reason); a scene is
used only if its marking admits the whole audience (:func:`admits`); a product carries the
combined, high-water-mark :class:`Label` of the scenes it used (:func:`high_water_mark`).
:class:`Releasability` is a workflow's audience rule, applied to items.
Everything here is pure: no I/O, no globals.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.catalog.stacdoc import ItemDoc

MARKING_KEY = "aquila:marking"
# The marking extension's identifier (the schema's ``$id``): a URN, because no host serves the
# schema; it resolves offline to the file in ``catalogs/aquila-marking/`` (SCHEMA_FILES). Items
# written before it declare LEGACY_EXTENSION_URL (a made-up domain): still accepted on ingest
# (a marking is read from ``properties`` whatever ``stac_extensions`` says) and mapped to the
# same file, so existing catalogs validate unchanged.
EXTENSION_URL = "urn:aquila:stac:marking:v1.0.0"
LEGACY_EXTENSION_URL = "https://aquila.example/stac/marking/v1.0.0/schema.json"
EXTENSION_URLS = frozenset({EXTENSION_URL, LEGACY_EXTENSION_URL})
SCHEMA_FILES = {  # identifier -> schema file, relative to the repository root
    EXTENSION_URL: "catalogs/aquila-marking/v1.0.0/schema.json",
    LEGACY_EXTENSION_URL: "catalogs/aquila-marking/v1.0.0/schema.json",
}
DEFAULT_SCALE: tuple[str, ...] = ("UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET")
UNMARKED_LICENCE = "unmarked-open-data"
_TOKEN = re.compile(r"^[A-Z0-9][A-Z0-9_.-]{0,31}$")  # nation/organisation code or caveat
_FIELDS = frozenset({"classification", "releasable_to", "caveats", "owner", "licence"})


class MarkingError(ValueError):
    """A marking is missing or malformed; ``reason`` is ``unmarked`` or ``bad_marking``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Scale:
    """An ordered classification scale, lowest first."""

    levels: tuple[str, ...] = DEFAULT_SCALE

    def rank(self, level: str) -> int:
        return self.levels.index(level)

    @property
    def lowest(self) -> str:
        return self.levels[0]


@dataclass(frozen=True)
class Marking:
    """One scene's (or asset's) marking. ``releasable_to`` holds upper-case codes. An input
    marking names one owner and one licence; a combined one (an asset marking raising its item's,
    two copies of one scene) keeps every owner and licence, so none is ever dropped."""

    classification: str
    releasable_to: frozenset[str]
    caveats: frozenset[str] = frozenset()
    owners: frozenset[str] = frozenset()
    licences: frozenset[str] = frozenset()

    def as_dict(self) -> dict[str, Any]:
        """The marking in the label's JSON shape (lists sorted)."""
        return _as_dict(self)


@dataclass(frozen=True)
class Audience:
    """Who will see the products: every member must be in a scene's ``releasable_to``;
    ``clearance`` (optional) is the highest classification the audience may receive."""

    members: frozenset[str]
    clearance: str | None = None
    name: str | None = None  # the named group, when the audience came from one


@dataclass(frozen=True)
class Label:
    """The high-water mark of the scenes a product used."""

    classification: str
    releasable_to: frozenset[str]
    caveats: frozenset[str]
    licences: frozenset[str]
    owners: frozenset[str]

    def as_dict(self) -> dict[str, Any]:
        return _as_dict(self)


def _as_dict(m: Marking | Label) -> dict[str, Any]:
    return {
        "classification": m.classification,
        "releasable_to": sorted(m.releasable_to),
        "caveats": sorted(m.caveats),
        "licences": sorted(m.licences),
        "owners": sorted(m.owners),
    }


SceneKey = tuple[str, str]  # (collection, item id): the identity a marking belongs to


@dataclass(frozen=True)
class MarkingConflict:
    """Copies of what looks like one scene carry different markings: the stricter (their
    :func:`combine`) applies, and a scene it no longer admits the audience to is withheld.
    Names items the audience may not see: for the operator report only."""

    kind: str  # "duplicate_id": one collection/id listed twice | "same_acquisition": dedupe
    scene: SceneKey  # the copy kept (when withheld: the collection/id withheld)
    others: tuple[SceneKey, ...]  # same_acquisition: the publications dropped for it
    markings: tuple[Marking | None, ...]  # each copy's (None: missing or malformed)
    resolved: Marking | None  # what applies (None: a copy's marking is unknown)
    withheld: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "collection": self.scene[0],
            "item": self.scene[1],
            "others": [{"collection": c, "item": i} for c, i in self.others],
            "markings": [None if m is None else m.as_dict() for m in self.markings],
            "resolved": None if self.resolved is None else self.resolved.as_dict(),
            "action": "withheld" if self.withheld else "stricter marking applied",
        }


# --------------------------------------------------------------------------- parsing


def parse_marking(
    item: Mapping[str, Any], *, scale: Scale = Scale(), unmarked: Marking | None = None
) -> Marking:
    """The item's effective marking: its own, raised by every asset marking it carries.
    ``unmarked``: what an item without one of its own counts as (its assets still raise it).

    Raises :class:`MarkingError` (``unmarked``: no marking; ``bad_marking``: any field missing,
    of the wrong type, an unknown level, or a code that is not an upper-case token).
    """
    props = item.get("properties")
    raw = props.get(MARKING_KEY) if isinstance(props, Mapping) else None
    if raw is not None:
        marking = _parse_one(raw, scale=scale, where="properties")
    elif unmarked is not None:
        marking = unmarked
    else:
        raise MarkingError("unmarked", f"the item has no properties.{MARKING_KEY!r}")
    assets = item.get("assets")
    if isinstance(assets, Mapping):
        for key, asset in assets.items():
            if isinstance(asset, Mapping) and MARKING_KEY in asset:
                extra = _parse_one(asset[MARKING_KEY], scale=scale, where=f"asset {key!r}")
                marking = combine((marking, extra), scale=scale)
    return marking


def _parse_one(raw: Any, *, scale: Scale, where: str) -> Marking:
    if not isinstance(raw, Mapping):
        raise MarkingError("bad_marking", f"{where}: {MARKING_KEY} is not an object")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise MarkingError("bad_marking", f"{where}: unknown marking field(s) {sorted(unknown)}")
    level = raw.get("classification")
    if not isinstance(level, str) or level not in scale.levels:
        raise MarkingError(
            "bad_marking", f"{where}: classification must be one of {list(scale.levels)}"
        )
    owner, licence = raw.get("owner"), raw.get("licence")
    for name, value in (("owner", owner), ("licence", licence)):
        if not isinstance(value, str) or not value.strip():
            raise MarkingError("bad_marking", f"{where}: {name} must be a non-empty string")
    return Marking(
        classification=level,
        releasable_to=_codes(raw.get("releasable_to"), "releasable_to", where, nonempty=True),
        caveats=_codes(raw.get("caveats", []), "caveats", where, nonempty=False),
        owners=frozenset({str(owner)}),
        licences=frozenset({str(licence)}),
    )


def _codes(value: Any, name: str, where: str, *, nonempty: bool) -> frozenset[str]:
    if not isinstance(value, list) or (nonempty and not value):
        raise MarkingError("bad_marking", f"{where}: {name} must be a list of codes")
    if not all(isinstance(v, str) and _TOKEN.match(v) for v in value):
        raise MarkingError("bad_marking", f"{where}: {name} holds a code that is not A-Z0-9_.-")
    return frozenset(value)


def combine(markings: Iterable[Marking], *, scale: Scale = Scale()) -> Marking:
    """The stricter of all ``markings`` as one marking: highest classification, intersection of
    ``releasable_to``, union of caveats, owners and licences. Raises ValueError for none."""
    items = list(markings)
    if not items:
        raise ValueError("combine of no markings")
    return Marking(
        classification=max(items, key=lambda m: scale.rank(m.classification)).classification,
        releasable_to=frozenset.intersection(*(m.releasable_to for m in items)),
        caveats=frozenset().union(*(m.caveats for m in items)),
        owners=frozenset().union(*(m.owners for m in items)),
        licences=frozenset().union(*(m.licences for m in items)),
    )


def unmarked_open_data(audience: Audience, *, scale: Scale = Scale()) -> Marking:
    """The marking given to an unmarked item when the workflow allows unmarked open data: the
    lowest level, releasable to exactly this audience (no broader claim is made)."""
    return Marking(
        scale.lowest, audience.members, frozenset(), frozenset({"unknown"}),
        frozenset({UNMARKED_LICENCE}),
    )


# --------------------------------------------------------------------------- decisions


def admits(marking: Marking, audience: Audience, *, scale: Scale = Scale()) -> bool:
    """Whether every member of the audience may see a scene with this marking."""
    if not audience.members or not audience.members <= marking.releasable_to:
        return False
    if audience.clearance is not None:
        return scale.rank(marking.classification) <= scale.rank(audience.clearance)
    return True


def high_water_mark(markings: Iterable[Marking], *, scale: Scale = Scale()) -> Label:
    """Highest classification, intersection of ``releasable_to``, union of caveats, licences and
    owners. Raises ValueError for no markings (an empty product has no label)."""
    items = list(markings)
    if not items:
        raise ValueError("high_water_mark of no markings")
    m = combine(items, scale=scale)
    return Label(m.classification, m.releasable_to, m.caveats, m.licences, m.owners)


# --------------------------------------------------------------------------- configuration


def scale_from(levels: Sequence[str] | None) -> Scale:
    """A scale from a workflow's ``classification_scale`` (lowest first), or the default."""
    if not levels:
        return Scale()
    if len(set(levels)) != len(levels) or not all(isinstance(x, str) and x for x in levels):
        raise ValueError("classification_scale must list distinct level names, lowest first")
    return Scale(tuple(levels))


def audience_from(
    releasable_to: Sequence[str] | None = None,
    *,
    group: str | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    clearance: str | None = None,
    scale: Scale = Scale(),
) -> Audience:
    """An audience from explicit codes or a named group (``groups``: name -> codes)."""
    if (releasable_to is None) == (group is None):
        raise ValueError("an audience is given by 'releasable_to' or by 'group', not both")
    if group is not None:
        if not groups or group not in groups:
            raise ValueError(f"audience group {group!r} is not in the groups file")
        releasable_to = groups[group]
    members = _codes(list(releasable_to or ()), "audience", "audience", nonempty=True)
    if clearance is not None and clearance not in scale.levels:
        raise ValueError(f"clearance {clearance!r} is not one of {list(scale.levels)}")
    return Audience(members, clearance=clearance, name=group)


@dataclass(frozen=True)
class Releasability:
    """The workflow's audience rule, resolved once in the driver."""

    audience: Audience
    scale: Scale = Scale()
    allow_unmarked: bool = False

    def read(self, doc: ItemDoc) -> Marking:
        """The item's marking (the open-data one for an unmarked item, when allowed); raise
        MarkingError (``unmarked``, ``bad_marking``) when it cannot be known."""
        item = {"properties": doc.properties, "assets": doc.assets}
        unmarked = unmarked_open_data(self.audience, scale=self.scale)
        return parse_marking(  # an asset's own marking still raises an unmarked item's
            item, scale=self.scale, unmarked=unmarked if self.allow_unmarked else None
        )

    def decide(self, doc: ItemDoc) -> Marking:
        """The item's marking if it admits the audience; raise MarkingError (withheld) if not."""
        marking = self.read(doc)
        if not admits(marking, self.audience, scale=self.scale):
            raise MarkingError("not_releasable", "its marking does not admit the audience")
        return marking
