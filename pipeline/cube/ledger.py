"""The ledger: every scene a nightly store has ingested, kept inside the store's own commits.

For each item that normalised, the ledger keeps its key (collection, id), the checksum of the item
document as normalisation read it, the normalised :class:`Scene` itself (so an unchanged item is
never normalised again), a token of that scene (what the cube's pixels depend on), its status
(``ingested``, or ``duplicate`` when another publication of the acquisition won), its processing
version facts, and the chunks whose products it contributed pixels to (the ``used`` lineage).

It is stored as one zlib-compressed JSON document in the Icechunk repository
(``/_aquila/state``), written in the same commit as the pixels: the ledger and the cube can never
disagree, whatever moment a run is killed at.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
import shapely

from pipeline.catalog.scene import BandSource, QualitySource, RasterGrid, Scene
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

    @property
    def key(self) -> tuple[str, str]:
        return (self.collection, self.id)

    @property
    def token(self) -> str:
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
    plan_digest: str  # digest of the committed plan (see pipeline.increment.plan_digest)
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
    """A short digest of everything a scene's pixels depend on (its whole normalised record)."""
    return hashlib.sha256(scene_json(scene)).hexdigest()[:20]


# --------------------------------------------------------------------------- scenes as JSON


def scene_to_dict(s: Scene) -> dict[str, Any]:
    """A scene as plain JSON values; :func:`scene_from_dict` gives back an equal scene
    (floats round-trip exactly, the footprint as WKB)."""
    return {
        "id": s.id,
        "collection": s.collection,
        "provider": s.provider,
        "datetime": s.datetime.isoformat(),
        "footprint": shapely.to_wkb(s.footprint, hex=True),
        "bands": [_band_to_dict(b) for b in s.bands],
        "quality": [_quality_to_dict(q) for q in s.quality],
        "platform": s.platform,
        "sun_elevation": s.sun_elevation,
        "off_nadir": s.off_nadir,
        "cloud_cover": s.cloud_cover,
        "extra": [list(kv) for kv in s.extra],
    }


def scene_from_dict(d: Mapping[str, Any]) -> Scene:
    return Scene(
        id=d["id"],
        collection=d["collection"],
        provider=d["provider"],
        datetime=dt.datetime.fromisoformat(d["datetime"]),
        footprint=shapely.from_wkb(d["footprint"]),
        bands=tuple(_band_from_dict(b) for b in d["bands"]),
        quality=tuple(_quality_from_dict(q) for q in d["quality"]),
        platform=d["platform"],
        sun_elevation=d["sun_elevation"],
        off_nadir=d["off_nadir"],
        cloud_cover=d["cloud_cover"],
        extra=tuple((str(k), str(v)) for k, v in d["extra"]),
    )


def _grid_to_dict(g: RasterGrid) -> dict[str, Any]:
    return {"crs": g.crs, "transform": list(g.transform), "shape": list(g.shape)}


def _grid_from_dict(d: Mapping[str, Any]) -> RasterGrid:
    t = tuple(float(v) for v in d["transform"])
    return RasterGrid(d["crs"], t, (int(d["shape"][0]), int(d["shape"][1])))  # type: ignore[arg-type]


def _band_to_dict(b: BandSource) -> dict[str, Any]:
    return {
        "band": b.band,
        "asset": b.asset,
        "href": b.href,
        "index": b.index,
        "dtype": b.dtype,
        "nodata": b.nodata,
        "scale": b.scale,
        "offset": b.offset,
        "grid": _grid_to_dict(b.grid),
        "resampling": b.resampling,
    }


def _band_from_dict(d: Mapping[str, Any]) -> BandSource:
    return BandSource(
        band=d["band"],
        asset=d["asset"],
        href=d["href"],
        index=int(d["index"]),
        dtype=d["dtype"],
        nodata=d["nodata"],
        scale=d["scale"],
        offset=d["offset"],
        grid=_grid_from_dict(d["grid"]),
        resampling=d["resampling"],
    )


def _quality_to_dict(q: QualitySource) -> dict[str, Any]:
    return {
        "asset": q.asset,
        "href": q.href,
        "index": q.index,
        "dtype": q.dtype,
        "grid": _grid_to_dict(q.grid),
        "masked_values": list(q.masked_values),
        "bitfields": [[o, n, list(v)] for o, n, v in q.bitfields],
        "resampling": q.resampling,
    }


def _quality_from_dict(d: Mapping[str, Any]) -> QualitySource:
    return QualitySource(
        asset=d["asset"],
        href=d["href"],
        index=int(d["index"]),
        dtype=d["dtype"],
        grid=_grid_from_dict(d["grid"]),
        masked_values=tuple(int(v) for v in d["masked_values"]),
        bitfields=tuple((int(o), int(n), tuple(int(x) for x in v)) for o, n, v in d["bitfields"]),
        resampling=d["resampling"],
    )


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
    )
