"""Open a source of STAC items and yield them lazily, as plain documents.

Sources: a static catalog or collection (local path or http(s) ``.json``, children followed),
an item collection (GeoJSON FeatureCollection), an NDJSON file of items (``.ndjson``/``.jsonl``,
streamed line by line), a single item file, or a STAC API root (searched through pystac-client,
one page in memory at a time). A broken item is yielded as a :class:`Reject` and the walk goes
on; only a source that cannot be opened at all raises :class:`CatalogError`.

The source itself is named by the operator; every document it leads to is checked by the href
policy as a link (:meth:`HrefPolicy.check_link`: inside the allowed roots or the catalog's own
folder or origin, a regular file, each redirect hop too) and read bounded
(:mod:`pipeline.io.documents`). A refused link is a :class:`Reject` with reason
``href_not_allowed``. STAC API requests (the pages' ``next`` links, redirects) must stay inside
the same roots -- by default the API's own origin.

Search terms are applied by the API where it can, and here otherwise: a static source is
filtered in this process, and so are ``query`` / ``filter`` against an API that does not
declare the STAC API Query / Filter conformance classes (the rustac in-memory server, for one).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pystac

from pipeline.catalog.footprint import footprint_from_geojson
from pipeline.catalog.scene import Reject
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.errors import CatalogError, DocumentTooLarge, HrefNotAllowed
from pipeline.io.documents import folder_files, is_remote, read_document, read_lines
from pipeline.io.hrefs import HrefPolicy

try:  # 4-6x faster than the standard library on item JSON; optional
    from orjson import loads as json_loads
except ImportError:  # pragma: no cover - orjson not installed
    json_loads = json.loads

ItemOrReject = pystac.Item | Reject
DocOrReject = ItemDoc | Reject
Notify = Callable[[str], None]
NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".geojsonl", ".geojsons")
API_TIMEOUT_S = 60.0  # seconds per STAC API request (pystac-client waits forever by default)
QUERY_OPS = ("eq", "neq", "lt", "lte", "gt", "gte", "startsWith", "endsWith", "contains", "in")


@dataclass(frozen=True)
class SearchQuery:
    """What to look for; normalised once by the workflow layer. Lon/lat degrees, UTC."""

    collections: tuple[str, ...] | None = None
    bbox: tuple[float, float, float, float] | None = None  # west, south, east, north
    datetime: tuple[dt.datetime | None, dt.datetime | None] | None = None  # inclusive; None open
    intersects: Mapping[str, Any] | None = None  # GeoJSON geometry (an area of interest)
    query: Mapping[str, Mapping[str, Any]] | None = None  # STAC API Query: {prop: {op: value}}
    filter: Mapping[str, Any] | str | None = None  # CQL2 JSON (dict) or CQL2 text (str)
    page_size: int = 100  # items per API page


def is_api(source: str) -> bool:
    """An http(s) link that is not a JSON document is taken as a STAC API root."""
    lowered = source.lower().split("?")[0]
    return lowered.startswith(("http://", "https://")) and not lowered.endswith(
        (".json", *NDJSON_SUFFIXES)
    )


def iter_docs(
    source: str,
    query: SearchQuery,
    *,
    notify: Notify | None = None,
    policy: HrefPolicy | None = None,
) -> Iterator[DocOrReject]:
    """Items matching ``query`` from any supported source, lazily, as :class:`ItemDoc`. Links
    are followed inside ``policy``'s roots and the source's own folder or origin (None: only
    the latter)."""
    say = notify or (lambda message: None)
    links = (policy or HrefPolicy(())).with_catalog(source)
    if is_api(source):
        yield from _iter_api(source, query, say, links)
        return
    matcher = Matcher(query)
    for entry in _iter_static(source, query, links):
        if isinstance(entry, Reject) or matcher(entry):
            yield entry


def iter_items(source: str, query: SearchQuery) -> Iterator[ItemOrReject]:
    """Like :func:`iter_docs`, as ``pystac.Item`` (slower; for callers that want pystac)."""
    for entry in iter_docs(source, query):
        if isinstance(entry, Reject):
            yield entry
            continue
        try:
            item = pystac.Item.from_dict(_as_dict(entry), migrate=True)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a reject
            yield Reject(
                entry.id,
                entry.collection,
                "item_unreadable",
                f"not a valid STAC item: {type(exc).__name__}: {exc}",
            )
            continue
        if entry.self_href:
            item.set_self_href(entry.self_href)
        yield item


def _as_dict(doc: ItemDoc) -> dict[str, Any]:
    props = dict(doc.properties)
    return {
        "type": "Feature",
        "stac_version": doc.stac_version or "1.0.0",
        "id": doc.id,
        "collection": doc.collection,
        "properties": props,
        "geometry": doc.geometry,
        "bbox": list(doc.bbox) if doc.bbox else None,
        "assets": {k: dict(v) for k, v in doc.assets.items()},
        "links": [],
    }


# --------------------------------------------------------------------------- STAC API


def _iter_api(
    url: str, query: SearchQuery, say: Notify, links: HrefPolicy
) -> Iterator[DocOrReject]:
    from pystac_client import Client
    from pystac_client.conformance import ConformanceClasses
    from pystac_client.exceptions import APIError

    from pipeline.io.stac_api import PolicedStacApiIO

    stac_io = PolicedStacApiIO(links, timeout=API_TIMEOUT_S)  # a stalled API fails, not hangs
    try:
        client = Client.open(url, stac_io=stac_io)
    except (APIError, OSError, ValueError, pystac.STACError, HrefNotAllowed) as exc:
        raise CatalogError(f"STAC API {url}: cannot open it: {exc}") from exc
    server_filter = query.filter is not None and client.conforms_to(ConformanceClasses.FILTER)
    server_query = query.query is not None and client.conforms_to(ConformanceClasses.QUERY)
    local = SearchQuery(
        query=None if server_query else query.query,
        filter=None if server_filter else query.filter,
    )
    for name, value, served in (
        ("filter", query.filter, server_filter),
        ("query", query.query, server_query),
    ):
        if value is not None and not served:
            say(
                f"{url} does not declare the STAC API {name.title()} conformance class; "
                f"'{name}' is applied here, to each page of results"
            )
    params: dict[str, Any] = {
        "collections": list(query.collections) if query.collections else None,
        "bbox": list(query.bbox) if query.bbox else None,
        "intersects": dict(query.intersects) if query.intersects else None,
        "datetime": datetime_param(query.datetime),
        "limit": query.page_size,
    }
    if server_filter:
        params["filter"] = query.filter
        params["filter_lang"] = "cql2-text" if isinstance(query.filter, str) else "cql2-json"
    if server_query:
        params["query"] = dict(query.query or {})
    matcher = Matcher(local)
    try:
        search = client.search(**{k: v for k, v in params.items() if v is not None})
        for page in search.pages_as_dicts():  # one page in memory at a time
            for feature in page.get("features", ()):
                try:
                    doc = ItemDoc.from_dict(feature)
                except ValueError as exc:
                    yield Reject(str(feature.get("id", "?")), None, "item_unreadable", str(exc))
                    continue
                if matcher(doc, feature):
                    yield doc
    except (APIError, OSError, ValueError, HrefNotAllowed) as exc:
        refused = stac_io.refused or (exc if isinstance(exc, HrefNotAllowed) else None)
        if refused is None:
            raise CatalogError(f"STAC API {url}: search failed: {exc}") from exc
        yield Reject("(next page)", None, refused.reason, refused.message)  # the pages end here


def datetime_param(value) -> str | None:
    """A (start, end) range as the API's 'start/end' string, '..' for an open end."""
    if value is None:
        return None
    start, end = value

    def fmt(t: dt.datetime | None) -> str:
        return ".." if t is None else t.isoformat().replace("+00:00", "Z")

    return f"{fmt(start)}/{fmt(end)}"


# --------------------------------------------------------------------------- static sources


def _read_json(href: str, links: HrefPolicy, *, trusted: bool = False) -> Any:
    """A JSON document, checked as a link unless ``trusted`` (the root), read bounded."""
    return json_loads(read_document(href, policy=links, trusted=trusted))


def _iter_static(href: str, query: SearchQuery, links: HrefPolicy) -> Iterator[DocOrReject]:
    if href.lower().endswith(NDJSON_SUFFIXES):
        yield from _iter_ndjson(href, links, trusted=True)
        return
    if not is_remote(href) and Path(href).is_dir():
        yield from _iter_folder(Path(href), links)
        return
    try:
        root = _read_json(href, links, trusted=True)
    except (OSError, ValueError, HrefNotAllowed, DocumentTooLarge) as exc:
        raise CatalogError(
            f"cannot open the catalog {href}: {exc}. Point 'catalog:' at a catalog.json, "
            "collection.json, an item collection, an NDJSON file of items, or an http(s) STAC "
            "API root"
        ) from exc
    if not isinstance(root, Mapping):
        raise CatalogError(f"{href} is not a STAC document (a JSON object)")
    kind = root.get("type")
    if kind == "FeatureCollection":
        for i, feature in enumerate(root.get("features") or ()):
            yield _doc_or_reject(feature, self_href=href, fallback_id=f"{Path(href).stem}[{i}]")
        return
    if kind == "Feature":
        yield _doc_or_reject(root, self_href=href, fallback_id=Path(href).stem)
        return
    if kind not in ("Catalog", "Collection") and "links" not in root:
        raise CatalogError(
            f"{href} is neither a STAC catalog, collection, item nor item collection"
        )
    yield from _walk_catalog(href, root, query, links)


def _iter_folder(folder: Path, links: HrefPolicy) -> Iterator[DocOrReject]:
    """Every item (and item collection) JSON file under a folder, in name order; catalogs and
    collections there are skipped, since their items are files of the folder too. A file that
    is a symlink out of the allowed roots, or not a regular file, is refused like a link."""
    for path in folder_files(folder):
        suffix = path.suffix.lower()
        if suffix not in (".json", *NDJSON_SUFFIXES):
            continue
        try:
            links.check_link(str(path), what=f"file {path} of the catalog folder")
        except HrefNotAllowed as exc:
            yield Reject(path.stem, None, exc.reason, exc.message)
            continue
        if suffix in NDJSON_SUFFIXES:
            yield from _iter_ndjson(str(path), links)
            continue
        try:
            doc = _read_json(str(path), links)
        except (OSError, ValueError, HrefNotAllowed, DocumentTooLarge) as exc:
            yield Reject(path.stem, None, _reason(exc, "item_unreadable"), f"{path}: {exc}")
            continue
        if isinstance(doc, Mapping) and doc.get("type") == "Feature":
            yield _doc_or_reject(doc, self_href=str(path), fallback_id=path.stem)
        elif isinstance(doc, Mapping) and doc.get("type") == "FeatureCollection":
            for i, feature in enumerate(doc.get("features") or ()):
                yield _doc_or_reject(feature, self_href=str(path), fallback_id=f"{path.stem}[{i}]")


def _iter_ndjson(href: str, links: HrefPolicy, *, trusted: bool = False) -> Iterator[DocOrReject]:
    lines = read_lines(href, policy=links, trusted=trusted)
    n = 0
    try:
        for n, line in enumerate(lines, 1):  # noqa: B007 - n names a line that fails
            if not line.strip():
                continue
            try:
                feature = json_loads(line)
            except ValueError as exc:
                yield Reject(
                    f"{Path(href).name}:{n}",
                    None,
                    "item_unreadable",
                    f"line {n} of {href} is not JSON: {exc}",
                )
                continue
            yield _doc_or_reject(feature, self_href=href, fallback_id=f"{Path(href).name}:{n}")
    except (OSError, HrefNotAllowed) as exc:
        if trusted and n == 0:
            raise CatalogError(f"cannot open the NDJSON item file {href}: {exc}") from exc
        yield Reject(Path(href).name, None, _reason(exc, "item_unreadable"), str(exc))
    except DocumentTooLarge as exc:
        yield Reject(f"{Path(href).name}:{n + 1}", None, exc.reason, exc.message)


def _reason(exc: BaseException, default: str) -> str:
    """The reject reason for a failed read: the error's own code if it is one of ours."""
    return exc.reason if isinstance(exc, HrefNotAllowed | DocumentTooLarge) else default


def _doc_or_reject(feature: Any, *, self_href: str, fallback_id: str) -> DocOrReject:
    if not isinstance(feature, Mapping):
        return Reject(fallback_id, None, "item_unreadable", "not a JSON object")
    try:
        doc = ItemDoc.from_dict(feature)
    except ValueError as exc:
        return Reject(
            str(feature.get("id") or fallback_id),
            feature.get("collection"),
            "item_unreadable",
            f"{self_href}: {exc}",
        )
    if doc.self_href is None or not _absolute(doc.self_href):
        doc = replace(doc, self_href=self_href)
    return doc


def _absolute(href: str) -> bool:
    return "://" in href or href.startswith("/")


def _resolve(base: str, href: str) -> str:
    from pipeline.io.hrefs import resolve_href

    return resolve_href(href, base)


def _walk_catalog(
    href: str, root: Mapping[str, Any], query: SearchQuery, links: HrefPolicy
) -> Iterator[DocOrReject]:
    nodes: list[tuple[str, Mapping[str, Any]]] = [(href, root)]
    seen = {href}
    while nodes:
        node_href, node = nodes.pop(0)
        node_id = str(node.get("id", ""))
        is_collection = node.get("type") == "Collection" or "extent" in node
        wanted_here = not (query.collections and is_collection and node_id not in query.collections)
        collection = node_id if is_collection else None
        for link in node.get("links") or ():
            if not isinstance(link, Mapping) or link.get("rel") not in ("child", "item"):
                continue
            rel, raw = link["rel"], str(link.get("href", ""))
            target = _resolve(node_href, raw)
            if target in seen or (rel == "item" and not wanted_here):
                seen.add(target)
                continue
            seen.add(target)
            try:
                links.check_link(target, what=f"{rel} link {raw!r} of {node_href}")
            except HrefNotAllowed as exc:
                yield Reject(_link_id(target, rel), collection, exc.reason, exc.message)
                continue
            if rel == "child":
                child = _read_child(target, links)
                if isinstance(child, Reject):
                    yield child
                elif isinstance(child, Mapping):
                    nodes.append((target, child))
                continue
            entry = _read_item(target, links, collection)
            if (
                isinstance(entry, ItemDoc)
                and query.collections
                and entry.collection not in query.collections
            ):
                continue
            yield entry


def _link_id(target: str, rel: str) -> str:
    path = Path(urlsplit(target).path if is_remote(target) else target)
    return (path.parent.name if rel == "child" else path.stem) or target


def _read_child(target: str, links: HrefPolicy) -> Any:
    """A child catalog's document, or a Reject saying why it cannot be read."""
    try:
        return _read_json(target, links)
    except Exception as exc:  # noqa: BLE001 - any read or parse failure is a reject
        return Reject(
            _link_id(target, "child"),
            None,
            _reason(exc, "catalog_unreadable"),
            f"child catalog {target} cannot be read: {exc}",
        )


def _read_item(target: str, links: HrefPolicy, collection: str | None) -> DocOrReject:
    """An item link's document as an ItemDoc (its collection defaulting to the node's)."""
    try:
        feature = _read_json(target, links)
    except Exception as exc:  # noqa: BLE001 - any read or parse failure is a reject
        return Reject(
            _link_id(target, "item"),
            collection,
            _reason(exc, "item_unreadable"),
            f"{target} is not a readable STAC item: {type(exc).__name__}: {exc}",
        )
    entry = _doc_or_reject(feature, self_href=target, fallback_id=_link_id(target, "item"))
    if isinstance(entry, ItemDoc) and entry.collection is None and collection is not None:
        entry = replace(entry, collection=collection)
    return entry


# --------------------------------------------------------------------------- matching here


class Matcher:
    """Applies a :class:`SearchQuery` to items in this process (static sources, API fallback)."""

    def __init__(self, query: SearchQuery) -> None:
        from shapely.geometry import box, shape

        self.query = query
        self.area = None
        if query.bbox is not None:
            w, s, e, n = query.bbox
            if w <= e:
                self.area = box(w, s, e, n)
            else:  # crosses the antimeridian
                self.area = box(w, s, 180.0, n).union(box(-180.0, s, e, n))
        if query.intersects is not None:
            aoi = shape(query.intersects)
            self.area = aoi if self.area is None else self.area.intersection(aoi)
        self.cql2 = None
        if query.filter is not None:
            import cql2

            try:
                self.cql2 = cql2.Expr(query.filter)
                self.cql2.validate()
            except Exception as exc:  # noqa: BLE001 - cql2 raises its own kinds
                raise CatalogError(
                    f"the CQL2 filter {query.filter!r} is not valid: {exc}"
                ) from None

    def __call__(self, doc: ItemDoc, feature: Mapping[str, Any] | None = None) -> bool:
        q = self.query
        if q.collections and doc.collection not in q.collections:
            return False
        if q.datetime and not _in_time(doc, q.datetime):
            return False
        if self.area is not None and not self._in_area(doc):
            return False
        if q.query and not all(_query_holds(doc.prop(k), ops) for k, ops in q.query.items()):
            return False
        if self.cql2 is not None:
            item = dict(feature) if feature is not None else _as_dict(doc)
            try:
                return bool(self.cql2.matches(item))
            except Exception:  # noqa: BLE001 - a property the item lacks: no match
                return False
        return True

    def _in_area(self, doc: ItemDoc) -> bool:
        if not doc.geometry:
            return True  # normalisation rejects it with a reason
        try:
            return bool(footprint_from_geojson(doc.geometry).intersects(self.area))
        except ValueError:
            return True


def _in_time(doc: ItemDoc, window) -> bool:
    from pipeline.catalog.stacdoc import parse_time

    start, end = window
    t0 = parse_time(doc.properties.get("start_datetime")) or doc.when()
    t1 = parse_time(doc.properties.get("end_datetime")) or doc.when()
    if t0 is None or t1 is None:
        return True  # normalisation rejects it with a reason
    return not ((end is not None and t0 > end) or (start is not None and t1 < start))


_QUERY_TESTS = {
    "eq": lambda value, want: value == want,
    "neq": lambda value, want: value != want,
    "lt": lambda value, want: value < want,
    "lte": lambda value, want: value <= want,
    "gt": lambda value, want: value > want,
    "gte": lambda value, want: value >= want,
    "startsWith": lambda value, want: str(value).startswith(str(want)),
    "endsWith": lambda value, want: str(value).endswith(str(want)),
    "contains": lambda value, want: str(want) in str(value),
    "in": lambda value, want: value in want,
}


def _query_holds(value: Any, ops: Mapping[str, Any]) -> bool:
    """STAC API Query extension semantics for one property (all operators must hold)."""
    for op, want in ops.items():
        test = _QUERY_TESTS.get(op)
        if test is None:
            raise CatalogError(f"query operator {op!r} is not one of {', '.join(QUERY_OPS)}")
        if value is None:
            return False
        try:
            if not test(value, want):
                return False
        except TypeError:
            return False
    return True
