"""The ledger: every scene a nightly store has ingested, kept inside the store's own commits.

For each item that normalised, the ledger keeps its key (collection, id), the checksum of the item
document as normalisation read it, the normalised :class:`Scene` itself (so an unchanged item is
never normalised again), a token of that scene (what the cube's pixels depend on), its status
(``ingested``, or ``duplicate`` when another publication of the acquisition won), its processing
version facts, the chunks whose products it contributed pixels to (the ``used`` lineage), and
the content identity of each of its assets (:mod:`pipeline.io.identity`: a file rewritten under
the same href, its item unchanged, is noticed by it and re-read).

It is stored as one zlib-compressed JSON document in the Icechunk repository
(``/_aquila/state``), written in the same commit as the pixels: the ledger and the cube can never
disagree, whatever moment a run is killed at.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import math
import types
import typing
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import orjson
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.catalog.scene import Scene
from pipeline.catalog.stacdoc import ItemDoc

STATE_FORMAT = 1

INGESTED = "ingested"
DUPLICATE = "duplicate"


@dataclass(frozen=True)
class LedgerEntry:
    """One normalised item the store knows."""

    collection: str
    id: str
    checksum: str  # of the item document (see item_checksum)
    scene: Scene
    status: str = INGESTED  # INGESTED | DUPLICATE | outside (touches no chunk)
    used_in: tuple[str, ...] = ()  # chunk names (r000-c001) it contributed pixels to
    chunks: tuple[tuple[int, int], ...] | None = None  # chunks its footprint touches (None: ?)
    # (href, content identity) of its assets when last read (pipeline.io.identity); None: a
    # ledger written before identities were kept (tonight's become the baseline)
    assets: tuple[tuple[str, str], ...] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.collection, self.id)

    @functools.cached_property
    def token(self) -> str:  # computed once per entry (a sha256 of the whole scene record)
        return scene_token(self.scene)

    @property
    def version(self) -> dict[str, str]:
        """Processing level/version/generation facts (the dedupe rule's evidence)."""
        facts = dict(self.scene.extra)
        return {k: facts[k] for k in ("level", "version", "generated", "updated") if k in facts}


@dataclass(frozen=True)
class StoreState:
    """What a nightly store holds besides its arrays: the ledger, the layout it was made with,
    and the committed slot table (so the next night can diff against it)."""

    run_id: str
    fingerprint: str  # normalisation settings + layout: a change refuses an incremental run
    layout: Mapping[str, Any]
    slots: tuple[Mapping[str, Any], ...]
    plan_digest: str  # digest of the committed plan (see pipeline.plan.increment.plan_digest)
    entries: tuple[LedgerEntry, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def by_key(self) -> dict[tuple[str, str], LedgerEntry]:
        return {e.key: e for e in self.entries}

    def ingested(self) -> list[LedgerEntry]:
        return [e for e in self.entries if e.status == INGESTED]

    def to_bytes(self) -> bytes:
        doc = {
            "format": STATE_FORMAT,
            "run_id": self.run_id,
            "fingerprint": self.fingerprint,
            "layout": self.layout,
            "slots": list(self.slots),
            "plan_digest": self.plan_digest,
            "extra": self.extra,
            "entries": [_entry_to_dict(e) for e in self.entries],
        }
        return zlib.compress(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS), 6)

    @classmethod
    def from_bytes(cls, raw: bytes) -> StoreState:
        doc = orjson.loads(zlib.decompress(raw))
        if doc.get("format") != STATE_FORMAT:
            raise ValueError(f"nightly state format {doc.get('format')!r} is not {STATE_FORMAT}")
        return cls(
            run_id=doc["run_id"],
            fingerprint=doc["fingerprint"],
            layout=doc["layout"],
            slots=tuple(doc["slots"]),
            plan_digest=doc["plan_digest"],
            entries=tuple(_entry_from_dict(e) for e in doc["entries"]),
            extra=doc.get("extra") or {},
        )


# --------------------------------------------------------------------------- checksums


def item_checksum(doc: ItemDoc) -> str:
    """SHA-256 of the item as normalisation reads it (keys sorted): a changed item, asset or
    marking changes it; the order keys were written in does not."""
    payload = {
        "id": doc.id,
        "collection": doc.collection,
        "properties": doc.properties,
        "assets": doc.assets,
        "geometry": doc.geometry,
        "bbox": doc.bbox,
        "self_href": doc.self_href,
        "stac_version": doc.stac_version,
    }
    raw = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.sha256(raw).hexdigest()


@lru_cache(maxsize=1 << 16)
def scene_json(scene: Scene) -> bytes:
    """The scene as canonical JSON (keys sorted). Cached: a night serialises every scene of the
    ledger; hashing a scene costs ~8 µs, serialising it ~70 µs."""
    return orjson.dumps(scene_to_dict(scene), option=orjson.OPT_SORT_KEYS)


def scene_token(scene: Scene) -> str:
    """A short digest of everything a scene's pixels depend on (its whole normalised record,
    less the item's own link: a catalog moved elsewhere holds the same scenes)."""
    record = scene_to_dict(scene)
    record.pop("item_href", None)
    for source in record["bands"] + record["quality"]:  # how to sign a read, not what is read
        source.pop("signer", None)
    return hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()[:20]


class Tokens:
    """:func:`scene_token` memoised by scene identity for one run (scenes are immutable; the
    memo holds the scenes it has seen until it is dropped). A nightly run asks for the token of
    each scene some fifteen times (both plans' contents and digests, the ledger, task names):
    ~0.09 ms each, 0.18 s a night at 135 scenes before this memo."""

    def __init__(self) -> None:
        self._memo: dict[int, tuple[Scene, str]] = {}

    def __call__(self, scene: Scene) -> str:
        hit = self._memo.get(id(scene))
        if hit is not None and hit[0] is scene:
            return hit[1]
        token = scene_token(scene)
        self._memo[id(scene)] = (scene, token)
        return token


# --------------------------------------------------------------------------- scenes as JSON
#
# Generic over the scene model's frozen dataclasses (field by field, from their type hints), so
# a field added to Scene, BandSource or QualitySource is kept by the ledger without a change here.
# Non-finite floats are written as strings ("nan", "inf"): JSON has no NaN, and null means None.


def scene_to_dict(s: Scene) -> dict[str, Any]:
    """A scene as plain JSON values; :func:`scene_from_dict` gives back an equal scene
    (floats round-trip exactly, the footprint as WKB)."""
    out = _encode(s)
    assert isinstance(out, dict)
    return out


def scene_from_dict(d: Mapping[str, Any]) -> Scene:
    scene: Scene = _decoder(Scene)(d)  # the decoder of the Scene type hint builds a Scene
    return scene


def _encode(v: Any) -> Any:
    if type(v) in _LEAVES:  # most values: no further test (a night encodes ~70 000 of them)
        return v if type(v) is not float or math.isfinite(v) else repr(v)
    names = _field_names(type(v))  # type: ignore[arg-type]  # types are hashable
    if names is not None:
        return {name: _encode(getattr(v, name)) for name in names}
    if isinstance(v, tuple | list):
        return [_encode(x) for x in v]
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if isinstance(v, BaseGeometry):
        return shapely.to_wkb(v, hex=True)
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)  # 'nan', 'inf', '-inf'
    return v


_LEAVES = frozenset({str, int, float, bool, type(None)})


@cache
def _field_names(cls: type) -> tuple[str, ...] | None:
    """The field names of a dataclass type, in order (None for any other type)."""
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    return None


Decoder = Callable[[Any], Any]


@cache
def _decoder(hint: Any) -> Decoder:
    """The decoding function of one type hint, built once: walking the type hints for every
    value cost ~0.35 ms a scene (95 → 20 ms for a ledger of 263 scenes, decoded every night)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        dec = _decoder(inner)
        return lambda v: None if v is None else dec(v)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a dataclass, not one's value
        hints = typing.get_type_hints(hint)
        fields = [(f.name, _decoder(hints[f.name])) for f in dataclasses.fields(hint)]

        def record(v: Mapping[str, Any]) -> Any:  # a field the entry predates keeps its default
            return hint(**{name: dec(v[name]) for name, dec in fields if name in v})

        return record
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _decoder(args[0])
            return lambda v: tuple([item(x) for x in v])
        items = [_decoder(a) for a in args]
        return lambda v: tuple([d(x) for d, x in zip(items, v, strict=True)])
    plain: dict[Any, Decoder] = {
        dt.datetime: dt.datetime.fromisoformat,
        BaseGeometry: shapely.from_wkb,
        float: float,
        int: int,
        str: str,
    }
    if hint in plain:
        return plain[hint]

    def unknown(v: Any) -> Any:
        raise TypeError(f"ledger: cannot decode a scene field of type {hint!r}")

    return unknown


def _entry_to_dict(e: LedgerEntry) -> dict[str, Any]:
    return {
        "collection": e.collection,
        "id": e.id,
        "checksum": e.checksum,
        "status": e.status,
        "token": e.token,
        "version": e.version,
        "used_in": list(e.used_in),
        "chunks": None if e.chunks is None else [list(c) for c in e.chunks],
        "assets": None if e.assets is None else [list(a) for a in e.assets],
        "scene": orjson.Fragment(scene_json(e.scene)),
    }


def _entry_from_dict(d: Mapping[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        collection=d["collection"],
        id=d["id"],
        checksum=d["checksum"],
        scene=scene_from_dict(d["scene"]),
        status=d["status"],
        used_in=tuple(d["used_in"]),
        chunks=None if d.get("chunks") is None else tuple((int(a), int(b)) for a, b in d["chunks"]),
        assets=None if d.get("assets") is None else tuple((str(h), str(i)) for h, i in d["assets"]),
    )
