"""Static sources of STAC items, read as plain documents: a catalog or collection (local path or
http(s) ``.json``, children followed), an item collection (GeoJSON FeatureCollection), an NDJSON
file of items (``.ndjson``/``.jsonl``, streamed line by line; a file of another name whose content
is one JSON object per line is NDJSON too), a single item file, or a folder of item files.

A broken item is yielded as a :class:`Reject` and the walk goes on; only a source that cannot be
opened at all raises :class:`CatalogError`. Every document the source leads to is checked by the
href policy as a link and read bounded (see :mod:`pipeline.catalog.source`). Search terms are
applied by the caller (:class:`pipeline.catalog.source.Matcher`), except ``collections``, which
also prunes the catalog walk.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator, Mapping
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orjson import loads as json_loads  # 4-6x faster than json on item JSON

from pipeline.catalog.query import SearchQuery
from pipeline.catalog.scene import Reject
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.errors import CatalogError, DocumentTooLarge, HrefNotAllowed
from pipeline.io.documents import folder_files, is_remote, read_document, read_lines
from pipeline.io.hrefs import HrefPolicy

DocOrReject = ItemDoc | Reject
NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".geojsonl", ".geojsons")
# what reading and parsing a linked JSON document can raise: the file system or the network
# (http.client's protocol errors are not OSErrors), JSON or UTF-8 decoding (ValueError), and the
# href policy and size cap (pipeline.io.documents)
READ_ERRORS = (OSError, http.client.HTTPException, ValueError, HrefNotAllowed, DocumentTooLarge)


def _read_json(href: str, links: HrefPolicy, *, trusted: bool = False) -> Any:
    """A JSON document, checked as a link unless ``trusted`` (the root), read bounded."""
    return json_loads(read_document(href, policy=links, trusted=trusted))


def iter_static(href: str, query: SearchQuery, links: HrefPolicy) -> Iterator[DocOrReject]:
    if href.lower().endswith(NDJSON_SUFFIXES):
        yield from _iter_ndjson(href, links, trusted=True)
        return
    if not is_remote(href) and Path(href).is_dir():
        yield from _iter_folder(Path(href), links)
        return
    try:
        root, lines = _json_or_lines(href, links, trusted=True)
    except READ_ERRORS as exc:
        raise CatalogError(
            f"cannot open the catalog {href}: {exc}. Point 'catalog:' at a catalog.json, "
            "collection.json, an item collection, an NDJSON file of items, or an http(s) STAC "
            "API root"
        ) from exc
    if lines is not None:
        yield from _iter_ndjson(href, links, trusted=True, lines=lines)
        return
    if not isinstance(root, Mapping):
        raise CatalogError(f"{href} is not a STAC document (a JSON object)")
    kind = root.get("type")
    if kind == "FeatureCollection":
        for i, feature in enumerate(root.get("features") or ()):
            yield _doc_or_reject(feature, self_href=href, fallback_id=f"{Path(href).stem}[{i}]",
                                 several=True)
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
            doc, lines = _json_or_lines(str(path), links)
        except READ_ERRORS as exc:
            yield Reject(path.stem, None, _reason(exc, "item_unreadable"), f"{path}: {exc}")
            continue
        if lines is not None:
            yield from _iter_ndjson(str(path), links, lines=lines)
            continue
        if isinstance(doc, Mapping) and doc.get("type") == "Feature":
            yield _doc_or_reject(doc, self_href=str(path), fallback_id=path.stem)
        elif isinstance(doc, Mapping) and doc.get("type") == "FeatureCollection":
            for i, feature in enumerate(doc.get("features") or ()):
                yield _doc_or_reject(feature, self_href=str(path), fallback_id=f"{path.stem}[{i}]",
                                     several=True)


def _json_or_lines(
    href: str, links: HrefPolicy, *, trusted: bool = False
) -> tuple[Any, Iterator[bytes] | None]:
    """(the JSON document, None), or (None, its lines) when the file is NDJSON whatever its name:
    not one JSON document, but its first non-blank line is a JSON object. A local file too large
    for one document is looked at the same way and then streamed line by line."""
    try:
        data = read_document(href, policy=links, trusted=trusted)
    except DocumentTooLarge:
        if is_remote(href):
            raise
        lines = _ndjson_start(read_lines(href, policy=links, trusted=trusted))
        if lines is None:
            raise
        return None, lines
    try:
        return json_loads(data), None
    except ValueError:
        lines = _ndjson_start(iter(data.splitlines()))
        if lines is None:
            raise
        return None, lines


def _ndjson_start(lines: Iterator[bytes]) -> Iterator[bytes] | None:
    """The lines again if the first non-blank one is a JSON object, else None."""
    seen: list[bytes] = []
    for line in lines:
        seen.append(line)
        if line.strip():
            try:
                first = json_loads(line)
            except ValueError:
                return None
            return chain(seen, lines) if isinstance(first, Mapping) else None
    return None


def _iter_ndjson(
    href: str,
    links: HrefPolicy,
    *,
    trusted: bool = False,
    lines: Iterator[bytes] | None = None,
) -> Iterator[DocOrReject]:
    if lines is None:
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
            yield _doc_or_reject(feature, self_href=href, fallback_id=f"{Path(href).name}:{n}",
                                 several=True)
    except (OSError, HrefNotAllowed) as exc:
        if trusted and n == 0:
            raise CatalogError(f"cannot open the NDJSON item file {href}: {exc}") from exc
        yield Reject(Path(href).name, None, _reason(exc, "item_unreadable"), str(exc))
    except DocumentTooLarge as exc:
        yield Reject(f"{Path(href).name}:{n + 1}", None, exc.reason, exc.message)


def _reason(exc: BaseException, default: str) -> str:
    """The reject reason for a failed read: the error's own code if it is one of ours."""
    return exc.reason if isinstance(exc, HrefNotAllowed | DocumentTooLarge) else default


def _doc_or_reject(feature: Any, *, self_href: str, fallback_id: str,
                   several: bool = False) -> DocOrReject:
    """``several``: ``self_href`` is a file holding several items (FeatureCollection, NDJSON)."""
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
        doc = replace(doc, self_href=self_href, shared_file=several)
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
    except READ_ERRORS as exc:
        return Reject(
            _link_id(target, "child"),
            None,
            _reason(exc, "catalog_unreadable"),
            f"child catalog {target} cannot be read: {type(exc).__name__}: {exc}",
        )


def _read_item(target: str, links: HrefPolicy, collection: str | None) -> DocOrReject:
    """An item link's document as an ItemDoc (its collection defaulting to the node's)."""
    try:
        feature = _read_json(target, links)
    except READ_ERRORS as exc:
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
