"""Open a source of STAC items and yield them lazily, as plain documents.

Sources: a static catalog or collection (local path or http(s) ``.json``, children followed),
an item collection (GeoJSON FeatureCollection), an NDJSON file of items (``.ndjson``/``.jsonl``,
streamed line by line), a single item file, a local stac-geoparquet file, folder or glob of
parts (``.parquet``, one record batch at a time, the search pushed down:
:mod:`pipeline.catalog.geoparquet`), or a STAC API root (searched through pystac-client, one page
in memory at a time). A broken item is yielded as a :class:`Reject` and the walk goes on; only
a source that cannot be opened at all raises :class:`CatalogError`. Static sources are read by
:mod:`pipeline.catalog.static`; the search terms are :mod:`pipeline.catalog.query`'s.

The source itself is named by the operator; every document it leads to is checked by the href
policy as a link (:meth:`HrefPolicy.check_link`: inside the allowed roots or the catalog's own
folder or origin, a regular file, each redirect hop too) and read bounded
(:mod:`pipeline.io.documents`). A refused link is a :class:`Reject` with reason
``href_not_allowed``. STAC API requests (the pages' ``next`` links, redirects) must stay inside
the same roots -- by default the API's own origin.

Search terms are applied by the API where it can, and here otherwise: a static source is
filtered in this process, and so are ``query`` / ``filter`` against an API that does not
declare the STAC API Query / Filter conformance classes (the rustac in-memory server, for one).
An item on which a CQL2 filter cannot be evaluated here (a property it lacks, a value of another
type) is a :class:`Reject` with reason ``filter_unevaluable``, never dropped unseen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pystac

from pipeline.catalog.footprint import footprint_from_geojson
from pipeline.catalog.geoparquet import (
    PARQUET_SUFFIXES,
    catalog_home,
    is_geoparquet,
    iter_geoparquet,
)
from pipeline.catalog.query import SearchQuery, parse_filter, unevaluated
from pipeline.catalog.scene import Reject
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.catalog.static import NDJSON_SUFFIXES, DocOrReject, iter_static
from pipeline.errors import CatalogError, HrefNotAllowed
from pipeline.io.hrefs import HrefPolicy

if TYPE_CHECKING:
    import cql2


ItemOrReject = pystac.Item | Reject
Notify = Callable[[str], None]
API_TIMEOUT_S = 60.0  # seconds per STAC API request (pystac-client waits forever by default)
QUERY_OPS = ("eq", "neq", "lt", "lte", "gt", "gte", "startsWith", "endsWith", "contains", "in")


def is_api(source: str) -> bool:
    """An http(s) link that is not a JSON (or Parquet) document is taken as a STAC API root."""
    lowered = source.lower().split("?")[0]
    return lowered.startswith(("http://", "https://")) and not lowered.endswith(
        (".json", *NDJSON_SUFFIXES, *PARQUET_SUFFIXES)
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
    links = (policy or HrefPolicy(())).with_catalog(catalog_home(source))
    if is_api(source):
        yield from _iter_api(source, query, say, links)
        return
    matcher = Matcher(query)
    entries = (
        iter_geoparquet(source, query, links, say=say)  # search pushed down, then judged here
        if is_geoparquet(source)
        else iter_static(source, query, links)
    )
    for entry in entries:
        judged = entry if isinstance(entry, Reject) else matcher.judge(entry)
        if judged is not None:
            yield judged


def iter_items(source: str, query: SearchQuery) -> Iterator[ItemOrReject]:
    """Like :func:`iter_docs`, as ``pystac.Item`` (slower; for callers that want pystac)."""
    for entry in iter_docs(source, query):
        if isinstance(entry, Reject):
            yield entry
            continue
        try:
            item = pystac.Item.from_dict(_as_dict(entry), migrate=True)
        except Exception as exc:  # noqa: BLE001 - per item: pystac raises any kind on a bad one
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
                judged = matcher.judge(doc, feature)
                if judged is not None:
                    yield judged
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
        self.cql2: cql2.Expr | None = None
        if query.filter is not None:
            try:
                self.cql2 = parse_filter(query.filter)
            except ValueError as exc:
                raise CatalogError(f"the CQL2 filter {query.filter!r} is not valid: {exc}") from exc

    def judge(self, doc: ItemDoc, feature: Mapping[str, Any] | None = None) -> DocOrReject | None:
        """``doc`` if it matches the query, None if it does not, and a :class:`Reject`
        (``filter_unevaluable``) if the CQL2 filter cannot be evaluated on it."""
        q = self.query
        if q.collections and doc.collection not in q.collections:
            return None
        if q.datetime and not _in_time(doc, q.datetime):
            return None
        if self.area is not None and not self._in_area(doc):
            return None
        if q.query and not all(_query_holds(doc.prop(k), ops) for k, ops in q.query.items()):
            return None
        if self.cql2 is None:
            return doc
        item = dict(feature) if feature is not None else _as_dict(doc)
        try:
            return doc if self.cql2.matches(item) else None
        except Exception as exc:  # noqa: BLE001 - cql2 raises a bare Exception: report the item
            return _unevaluable(self.cql2, self.query.filter, doc, item, exc)

    def _in_area(self, doc: ItemDoc) -> bool:
        if not doc.geometry:
            return True  # normalisation rejects it with a reason
        try:
            return bool(footprint_from_geojson(doc.geometry).intersects(self.area))
        except ValueError:
            return True


def _unevaluable(
    expr: cql2.Expr,
    text: Mapping[str, Any] | str | None,
    doc: ItemDoc,
    item: Mapping[str, Any],
    exc: Exception,
) -> Reject:
    """The reject of an item the CQL2 filter ``expr`` (as the spec wrote it: ``text``) cannot be
    evaluated on -- a property the item lacks, a value of another type -- with cql2's error and
    the part of the filter left unevaluated."""
    left = unevaluated(expr, item)
    return Reject(
        doc.id,
        doc.collection,
        "filter_unevaluable",
        f"the CQL2 filter {text!r} cannot be evaluated on this item ({type(exc).__name__}: "
        f"{exc}){f'; left unevaluated: {left}' if left else ''}. Give the item the properties "
        "the filter names, or write the filter so that it holds or fails without them",
    )


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
