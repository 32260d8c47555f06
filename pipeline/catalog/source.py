"""Open a catalog and yield its items lazily: static catalogs, item collections, STAC APIs.

A broken item (bad JSON, not a STAC item) is yielded as a :class:`Reject` and the walk goes on;
only a catalog that cannot be opened at all raises :class:`CatalogError`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pystac

from pipeline.catalog.scene import Reject
from pipeline.errors import CatalogError

ItemOrReject = pystac.Item | Reject


@dataclass(frozen=True)
class SearchQuery:
    """What to look for; normalised once by the workflow layer."""

    collections: tuple[str, ...] | None = None
    bbox: tuple[float, float, float, float] | None = None  # lon/lat
    datetime: tuple[dt.datetime | None, dt.datetime | None] | None = None


def iter_items(source: str, query: SearchQuery) -> Iterator[ItemOrReject]:
    """Items matching ``query`` from a static catalog, an item collection, or a STAC API root."""
    if source.startswith(("http://", "https://")) and not source.endswith(".json"):
        yield from _iter_api(source, query)
        return
    yield from _iter_static(source, query)


def _iter_api(url: str, query: SearchQuery) -> Iterator[ItemOrReject]:
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    try:
        client = Client.open(url)
        search = client.search(
            collections=list(query.collections) if query.collections else None,
            bbox=list(query.bbox) if query.bbox else None,
            datetime=_datetime_param(query.datetime),
        )
        yield from search.items()  # pages lazily
    except (APIError, OSError, ValueError) as exc:
        raise CatalogError(f"STAC API {url}: search failed: {exc}") from exc


def _datetime_param(value) -> str | None:
    if value is None:
        return None
    start, end = value

    def fmt(t: dt.datetime | None) -> str:
        return ".." if t is None else t.isoformat().replace("+00:00", "Z")

    return f"{fmt(start)}/{fmt(end)}"


def _iter_static(href: str, query: SearchQuery) -> Iterator[ItemOrReject]:
    try:
        root = pystac.read_file(href)
    except (OSError, json.JSONDecodeError, pystac.STACError, KeyError, TypeError) as exc:
        raise CatalogError(
            f"cannot open the catalog {href}: {exc}. Point 'catalog:' at a catalog.json, "
            "collection.json, an item collection, or an http(s) STAC API root"
        ) from exc
    if isinstance(root, pystac.ItemCollection):  # pragma: no cover - read_file gives items only
        nodes: list[pystac.STACObject] = []
        yield from (i for i in root if _matches(i, query))
        return
    if isinstance(root, pystac.Item):
        if _matches(root, query):
            yield root
        return
    nodes = [root]
    seen: set[str] = set()
    while nodes:
        node = nodes.pop(0)
        wanted_here = not (
            query.collections
            and isinstance(node, pystac.Collection)
            and node.id not in query.collections
        )
        for link in node.get_links(pystac.RelType.CHILD):
            child_href = link.get_absolute_href()
            if not child_href or child_href in seen:
                continue
            seen.add(child_href)
            try:
                child = pystac.read_file(child_href)
            except Exception as exc:  # noqa: BLE001 - any parse failure is a reject
                yield Reject(Path(child_href).parent.name, None, "catalog_unreadable",
                             f"child catalog {child_href} cannot be read: {exc}")
                continue
            if isinstance(child, pystac.Catalog):
                nodes.append(child)
        if not wanted_here:
            continue
        for link in node.get_links(pystac.RelType.ITEM):
            item_href = link.get_absolute_href()
            if not item_href:
                continue
            try:
                item = pystac.Item.from_file(item_href)
            except Exception as exc:  # noqa: BLE001 - any parse failure is a reject
                yield Reject(
                    Path(item_href).stem,
                    node.id if isinstance(node, pystac.Collection) else None,
                    "item_unreadable",
                    f"{item_href} is not a readable STAC item: {type(exc).__name__}: {exc}",
                )
                continue
            if query.collections and (item.collection_id or node.id) not in query.collections:
                continue
            if _matches(item, query):
                yield item


def _matches(item: pystac.Item, query: SearchQuery) -> bool:
    if query.collections and item.collection_id not in query.collections:
        return False
    if query.bbox and item.bbox:
        w, s, e, n = query.bbox
        iw, is_, ie, in_ = item.bbox[:2] + item.bbox[-2:] if len(item.bbox) == 6 else item.bbox
        if ie < w or iw > e or in_ < s or is_ > n:
            return False
    if query.datetime:
        start, end = query.datetime
        t0 = item.datetime or item.common_metadata.start_datetime
        t1 = item.datetime or item.common_metadata.end_datetime
        if t0 is None or t1 is None:
            return True  # normalisation rejects it with a reason
        if (end is not None and t0 > end) or (start is not None and t1 < start):
            return False
    return True
