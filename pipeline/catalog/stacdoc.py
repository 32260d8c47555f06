"""A STAC item as plain data, whatever STAC version (0.7 → 1.1) wrote it.

Normalisation reads items as dicts, not ``pystac.Item``: building a pystac object costs ~2 ms for
a 25-asset Earth Search item (measured here), which alone would be 200 s for 100 000 items. This
module answers the few questions normalisation asks, each in one place, across versions:

* legacy names: ``eo:platform``/``eo:instrument``/``eo:sun_elevation``/``eo:off_nadir``/
  ``eo:epsg`` (STAC ≤ 0.9) are read as ``platform``/``instruments``/``view:*``/``proj:epsg``;
* asset ``eo:bands`` given as indices into the item-level ``eo:bands`` (STAC 0.x, 1.0-beta);
* STAC 1.1 ``bands`` with ``eo:common_name`` / ``raster:*`` / ``data_type`` per band;
* a date-only ``datetime`` ("2020-10-31", USGS STAC 0.7) is midnight UTC of that day.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_LEGACY_PROPS = {
    "eo:platform": "platform",
    "eo:constellation": "constellation",
    "eo:instrument": "instruments",
    "eo:sun_elevation": "view:sun_elevation",
    "eo:sun_azimuth": "view:sun_azimuth",
    "eo:off_nadir": "view:off_nadir",
    "eo:epsg": "proj:epsg",
}


@dataclass(frozen=True)
class ItemDoc:
    """The parts of a STAC item normalisation reads. ``self_href`` anchors relative asset links."""

    id: str
    collection: str | None
    properties: Mapping[str, Any]
    assets: Mapping[str, Mapping[str, Any]]
    geometry: Mapping[str, Any] | None
    bbox: tuple[float, ...] | None
    self_href: str | None
    stac_version: str = ""
    # self_href is a file of several items (a FeatureCollection, NDJSON), not the item's own
    # document: products do not link to it (it lists other items, withheld ones too)
    shared_file: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, self_href: str | None = None) -> ItemDoc:
        """Wrap a parsed item JSON; ``self_href`` defaults to its ``self`` link."""
        if d.get("type") != "Feature" or "id" not in d:
            raise ValueError("not a STAC item (needs type 'Feature' and an 'id')")
        props = dict(d.get("properties") or {})
        for old, new in _LEGACY_PROPS.items():
            if old in props and new not in props:
                value = props[old]
                props[new] = [value] if new == "instruments" and isinstance(value, str) else value
        if self_href is None:
            for link in d.get("links") or ():
                if isinstance(link, dict) and link.get("rel") == "self":
                    self_href = link.get("href")
                    break
        assets = d.get("assets") or {}
        bbox = d.get("bbox")
        return cls(
            id=str(d["id"]),
            collection=d.get("collection") or props.get("collection"),
            properties=props,
            assets=assets if isinstance(assets, dict) else {},
            geometry=d.get("geometry"),
            bbox=tuple(float(v) for v in bbox) if isinstance(bbox, list | tuple) else None,
            self_href=self_href,
            stac_version=str(d.get("stac_version", "")),
        )

    @classmethod
    def from_pystac(cls, item: Any) -> ItemDoc:
        """Wrap a ``pystac.Item`` without serialising it (no link resolution, no network)."""
        assets = {}
        for key, a in item.assets.items():
            fields = dict(a.extra_fields)
            fields["href"] = a.href
            if a.media_type:
                fields["type"] = a.media_type
            if a.roles is not None:
                fields["roles"] = list(a.roles)
            assets[key] = fields
        props = dict(item.properties)
        if item.datetime is not None:
            props["datetime"] = item.datetime
        return cls.from_dict(
            {
                "type": "Feature",
                "id": item.id,
                "collection": item.collection_id,
                "properties": props,
                "assets": assets,
                "geometry": item.geometry,
                "bbox": item.bbox,
                "stac_version": getattr(item, "stac_version", ""),
            },
            self_href=item.get_self_href(),
        )

    # ------------------------------------------------------------------ properties

    def prop(self, key: str) -> Any:
        """A property, or ``id``/``collection`` for those names (used by profile facts)."""
        if key == "id":
            return self.id
        if key == "collection":
            return self.collection
        return self.properties.get(key)

    def when(self) -> dt.datetime | None:
        """Nominal acquisition time, UTC: ``datetime``, else ``start_datetime``."""
        for key in ("datetime", "start_datetime"):
            value = parse_time(self.properties.get(key))
            if value is not None:
                return value
        return None

    def item_bands(self) -> list[Mapping[str, Any]]:
        """Item-level ``eo:bands`` (STAC 0.x/1.0-beta list assets refer to by index)."""
        bands = self.properties.get("eo:bands")
        return [b for b in bands if isinstance(b, dict)] if isinstance(bands, list) else []

    def band_infos(self, asset: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """Per-band descriptions of an asset, in band order (index i → band i + 1)."""
        raw = asset.get("eo:bands")
        if raw is None:
            raw = asset.get("bands")
        if not isinstance(raw, list):
            return []
        item_level = None
        out: list[Mapping[str, Any]] = []
        for entry in raw:
            if isinstance(entry, dict):
                out.append(entry)
            elif isinstance(entry, int) and not isinstance(entry, bool):
                item_level = self.item_bands() if item_level is None else item_level
                if 0 <= entry < len(item_level):
                    out.append(item_level[entry])
                else:
                    out.append({})
        return out


def common_name(info: Mapping[str, Any]) -> str:
    """The band's common name (STAC 1.0 ``common_name``, 1.1 ``eo:common_name``), lower-case."""
    name = info.get("common_name") or info.get("eo:common_name") or ""
    return str(name).lower()


def raster_band(asset: Mapping[str, Any], index0: int) -> Mapping[str, Any]:
    """``raster:bands[i]`` (STAC 1.0) or the raster fields of ``bands[i]`` (STAC 1.1)."""
    rb = asset.get("raster:bands")
    if isinstance(rb, list) and index0 < len(rb) and isinstance(rb[index0], dict):
        return rb[index0]
    bands = asset.get("bands")
    if isinstance(bands, list) and index0 < len(bands) and isinstance(bands[index0], dict):
        b = bands[index0]
        out = {k.removeprefix("raster:"): v for k, v in b.items() if k.startswith("raster:")}
        for key in ("data_type", "nodata", "unit"):
            if key in b:
                out[key] = b[key]
        for key in ("data_type", "nodata", "unit"):
            if key not in out and key in asset:
                out[key] = asset[key]
        return out
    return {k: asset[k] for k in ("data_type", "nodata", "unit") if k in asset}


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 datetime, a bare date (midnight UTC) or a datetime object, as aware UTC."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            d = dt.date.fromisoformat(text)
            return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


_LEVEL_PATTERNS = (
    ("processing:level", re.compile(r"(?i)^L?([0-4])")),
    ("s2:product_type", re.compile(r"(?i)MSI([12])")),
    ("landsat:correction", re.compile(r"(?i)^L([12])")),
    ("id", re.compile(r"(?i)_L([12])[A-Z]{1,2}(?:_|$)")),
)
_GENERATED_KEYS = ("s2:generation_time", "landsat:product_generated", "processing:datetime")
_PRODUCED_IN_ID = (
    re.compile(r"_\d{8}_(\d{8})_\d{2}_T[12RT]"),  # Landsat: ..._ACQDATE_PROCDATE_CC_TX
    re.compile(r"_(\d{8}T\d{6})\.SAFE$"),  # Sentinel-2 product URI: ..._GENERATION.SAFE
)


def production_facts(doc: ItemDoc) -> dict[str, str]:
    """What distinguishes two publications of one acquisition (see :mod:`dedupe`):
    processing ``level`` ("1", "2"), ``version`` (baseline / collection), ``generated`` (when the
    product was made) and ``updated`` (when the record was written). Absent facts are left out."""
    out: dict[str, str] = {}
    for key, pattern in _LEVEL_PATTERNS:
        found = pattern.search(str(doc.prop(key) or ""))
        if found:
            out["level"] = found.group(1)
            break
    for key in ("s2:processing_baseline", "processing:version", "landsat:collection_number"):
        if doc.prop(key):
            out["version"] = str(doc.prop(key))
            break
    for key in _GENERATED_KEYS:
        when = parse_time(doc.prop(key))
        if when:
            out["generated"] = when.isoformat()
            break
    else:
        for source in (str(doc.prop("s2:product_uri") or ""), doc.id):
            for pattern in _PRODUCED_IN_ID:
                found = pattern.search(source)
                if found:
                    text = found.group(1)
                    out["generated"] = (
                        f"{text[:4]}-{text[4:6]}-{text[6:8]}T{text[9:11] or '00'}:"
                        f"{text[11:13] or '00'}:{text[13:15] or '00'}+00:00"
                    )
                    break
            if "generated" in out:
                break
    for key in ("updated", "created"):
        when = parse_time(doc.prop(key))
        if when:
            out["updated"] = when.isoformat()
            break
    return out


def number_or_none(value: Any) -> float | None:
    """A STAC field as a float, or None when it is absent, a boolean or not a number (the
    caller then falls back to another source of the value)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
