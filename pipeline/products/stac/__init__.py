"""A product's STAC metadata: an Item beside each store (``<store>.stac.json``) and the product's
Collection beside it (``<store>.collection.json``), linked both ways.

The Item carries the product's extent and time range, its grid (``proj``), its arrays (``raster``
per variable asset, ``datacube`` dimensions and variables), how it was made (``processing``), the
store's size (``file``), the scenes it was made from (``aquila:sources``, ``derived_from``) and its
releasability label (the high-water mark of the scenes it used) under ``aquila:label`` of Aquila's
marking extension, so a catalog of products can be filtered by audience without opening a store.
Its id names the product and the run (a night: the Icechunk snapshot), so products of different
runs and workflows never collide. The Collection is a pure function of the Item
(:func:`collection_text`): both are written from one text, the same bytes on every rerun.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline._version import __version__
from pipeline.catalog.markings import EXTENSION_URL
from pipeline.catalog.scene import Scene
from pipeline.plan.grid import TargetGrid
from pipeline.products.publish import write_text_atomic
from pipeline.products.stac.zarrmeta import (
    ITEM_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    Variable,
    band_variables,
    media_type,
    store_size,
    store_variables,
)

STAC_VERSION = "1.0.0"  # the version of the vendored core schemas (catalogs/schemas/SOURCES.md)
PROJ_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER_EXT = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
DATACUBE_EXT = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json"
PROCESSING_EXT = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
FILE_EXT = "https://stac-extensions.github.io/file/v2.1.0/schema.json"


# raster v1.1.0's data_type enum; anything else is "other"
_RASTER_TYPES = frozenset({
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "cint16", "cint32", "cfloat32", "cfloat64",
})
_LICENCE = re.compile(r"^[\w\-.+]+$")  # STAC 1.0 collection 'license'


def stac_path(store: Path) -> Path:
    """The product's Item: ``<store>.stac.json`` (read by metrics and by labels' readers)."""
    return store.with_name(store.name + ".stac.json")


def collection_path(store: Path) -> Path:
    """The product's Collection: ``<store>.collection.json``."""
    return store.with_name(store.name + ".collection.json")


def sidecar_paths(store: Path) -> tuple[Path, Path]:
    """Every STAC file beside ``store``, in the order they are put in place (the Item, which
    carries the label a reader filters on, last)."""
    return (collection_path(store), stac_path(store))


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """A scene a product used: its identity and, where known, its STAC item's href."""

    collection: str
    id: str
    href: str | None = None


def sources_of(scenes: Iterable[Scene], hrefs: Mapping[tuple[str, str], str] | None = None
               ) -> tuple[Source, ...]:
    """The product's sources from the scenes that gave it pixels (never a withheld scene: those
    are not in the plan). Each links to its item (:attr:`Scene.item_href`, or ``hrefs`` by
    :attr:`Scene.key`); one whose item had no link is named but not linked."""
    hrefs = hrefs or {}
    return tuple(Source(s.collection, s.id, hrefs.get(s.key) or s.item_href) for s in scenes)


def _relative(href: str, base: Path) -> str:
    """``href`` as a link from a file in ``base``: URLs stay, local paths become relative (a
    sidecar names no host path, and stays valid when its folder moves with the catalog)."""
    scheme = urlsplit(href).scheme
    if scheme == "file":
        href = urlsplit(href).path
    elif len(scheme) > 1:  # http(s), s3, ...; one letter is a Windows drive
        return href
    rel = Path(os.path.relpath(Path(href).absolute(), base.absolute())).as_posix()
    return rel if rel.startswith("../") else f"./{rel}"


def _absolute(href: str) -> str:
    """``href`` as a link from a bucket: URLs stay, a local path becomes its ``file://`` URL."""
    if len(urlsplit(href).scheme) > 1:
        return href
    return Path(href).absolute().as_uri()


# --------------------------------------------------------------------------- the Item


def product_ids(store: Path, *, workflow: str | None, version: str | None) -> tuple[str, str]:
    """(collection id, item id): the product (workflow and store), and that plus the run id or
    snapshot id, so two runs', two products' or two workflows' items never share an id."""
    # only the last suffix goes: s2.best.zarr and s2.median.zarr stay apart
    stem = Path(store.name).stem or store.name
    product = f"{workflow}-{stem}" if workflow and workflow != stem else stem
    return product, f"{product}-{version}" if version else store.name


def write_product_stac(store: Path, **fields: Any) -> Path:
    """Write the product's Collection and Item (:func:`product_stac_text`'s fields), each
    replaced in one rename; returns the Item's path."""
    for path, text in sidecar_texts(store, product_stac_text(store, **fields)).items():
        write_text_atomic(path, text)
    return stac_path(store)


def product_stac_text(
    store: Path,
    *,
    kind: str,
    bbox: Sequence[float],
    times: Sequence[str],
    label: Mapping[str, Any] | None,
    slot_labels: Sequence[Mapping[str, Any] | None] = (),
    properties: Mapping[str, Any] | None = None,
    grid: TargetGrid | None = None,
    workflow: str | None = None,
    run_id: str | None = None,
    snapshot: str | None = None,
    bands: Sequence[str] = (),
    sources: Sequence[Source] = (),
    source_store: Path | None = None,
    icechunk: bool = False,
    quantity: str = "reflectance",
    in_bucket: bool = False,
) -> str:
    """The text of ``<store>.stac.json``: a STAC 1.0 Item (``times``: ISO 8601 UTC strings).
    ``source_store``: where the store's metadata is read now (a run's build directory; default
    ``store``); ``icechunk``: the store is a nightly Icechunk repository (its arrays are then
    described from ``bands``); ``in_bucket``: the store is in a bucket (``store`` is then its
    name alone): no local folder is measured for its size, and a source on a local disk is
    linked by its absolute ``file://`` URL, since no relative path leads from a bucket to it."""
    here = source_store or store
    _, item_id = product_ids(store, workflow=workflow, version=snapshot or run_id)
    collection_id, _ = product_ids(store, workflow=workflow, version=None)
    variables = (band_variables(bands, ("time", "y", "x"), quantity) if icechunk
                 else store_variables(here))
    props = _time_fields(times, run_id or snapshot) | {
        "aquila:product": kind,
        "aquila:label": label,
        "aquila:sources": [{"collection": s.collection, "id": s.id} for s in sources],
    }
    if run_id:
        props["aquila:run_id"] = run_id
    if snapshot:
        props["aquila:snapshot"] = snapshot
    if slot_labels:
        props["aquila:slot_labels"] = list(slot_labels)
    props |= _processing(kind, sources, grid, run_id or snapshot)
    extensions = [EXTENSION_URL, PROCESSING_EXT, FILE_EXT]
    if grid is not None:
        props |= _proj(grid)
        if variables:
            props |= _datacube(grid, variables, times, bands)
            extensions.append(DATACUBE_EXT)
        extensions.append(PROJ_EXT)
    props.update(properties or {})
    assets = _assets(store, None if in_bucket else here, variables, bands, icechunk=icechunk)
    if any("raster:bands" in a for a in assets.values()):
        extensions.append(RASTER_EXT)
    w, s, e, n = (float(v) for v in bbox)
    item = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": sorted(extensions),
        "id": item_id,
        "collection": collection_id,
        "bbox": [w, s, e, n],
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]],
        },
        "properties": props,
        "assets": assets,
        "links": _item_links(store, sources, in_bucket=in_bucket),
    }
    # Sorted keys: the same bytes whether written from the state just committed or from the
    # one read back from the store (a rerun after a crash between publish and sidecar).
    return json.dumps(item, indent=2, default=str, sort_keys=True)


def _time_fields(times: Sequence[str], run: str | None) -> dict[str, Any]:
    """A range over the scenes' times; without any, the run's own time (STAC needs one)."""
    if times:
        return {"datetime": None, "start_datetime": min(times), "end_datetime": max(times)}
    found = re.match(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z", run or "")
    when = "{}-{}-{}T{}:{}:{}Z".format(*found.groups()) if found else "1970-01-01T00:00:00Z"
    return {"datetime": when}


def _processing(kind: str, sources: Sequence[Source], grid: TargetGrid | None,
                run: str | None) -> dict[str, Any]:
    collections = sorted({s.collection for s in sources})
    on = f" on a {grid.crs} grid of {abs(grid.transform[0]):g} units" if grid else ""
    return {
        "processing:software": {"aquila": __version__},
        "processing:level": "L3",  # composites of calibrated scenes on one grid
        "processing:lineage": (
            f"{kind} of {len(sources)} scene(s) from {', '.join(collections) or 'no collection'}"
            f"{on}, made by Aquila {__version__}" + (f" (run {run})" if run else "")
        ),
    }


def _proj(grid: TargetGrid) -> dict[str, Any]:
    return {
        "proj:code": grid.crs,
        "proj:shape": [int(v) for v in grid.shape],
        "proj:transform": [float(v) for v in grid.transform],
        "proj:bbox": [float(v) for v in grid.bounds],
    }


def _reference_system(crs: str) -> int | str:
    found = re.fullmatch(r"EPSG:(\d+)", crs, flags=re.IGNORECASE)
    return int(found.group(1)) if found else crs


def _datacube(grid: TargetGrid, variables: Sequence[Variable], times: Sequence[str],
              bands: Sequence[str]) -> dict[str, Any]:
    """``cube:dimensions`` (pixel centres, as the x and y coordinates hold them) and
    ``cube:variables`` (the bands as data, the rest auxiliary)."""
    a, _, c, _, e, f = grid.transform
    ny, nx = grid.shape
    ref = _reference_system(grid.crs)
    xs = sorted((c + a / 2, c + a * (nx - 0.5)))
    ys = sorted((f + e / 2, f + e * (ny - 0.5)))
    dims: dict[str, Any] = {
        "x": {"type": "spatial", "axis": "x", "extent": xs, "step": a, "reference_system": ref},
        "y": {"type": "spatial", "axis": "y", "extent": ys, "step": e, "reference_system": ref},
    }
    if any("time" in v.dims for v in variables):
        dims["time"] = {"type": "temporal",
                        "extent": [min(times), max(times)] if times else [None, None]}
    cube_vars = {}
    for v in variables:
        entry: dict[str, Any] = {"dimensions": list(v.dims),
                                 "type": "data" if v.name in bands else "auxiliary"}
        if v.description:
            entry["description"] = v.description
        if v.unit:
            entry["unit"] = v.unit
        cube_vars[v.name] = entry
    return {"cube:dimensions": dims, "cube:variables": cube_vars}


def _nodata(v: Variable) -> float | int | str | None:
    """The no-data value: NaN for float arrays filled with it; for integer layers a non-zero
    fill is a sentinel (``source`` -1: no observation), whereas 0 fills a real count."""
    if v.dtype.startswith("float"):
        fill = v.fill
        is_nan = fill == "NaN" or (isinstance(fill, float) and math.isnan(fill))
        return "nan" if is_nan else None
    if isinstance(v.fill, int) and not isinstance(v.fill, bool) and v.fill != 0:
        return v.fill
    if v.name == "source" and v.fill is None:  # format: zarr2 keeps integer layers unfilled
        return -1
    return None


def _raster_band(v: Variable) -> dict[str, Any]:
    band: dict[str, Any] = {"data_type": v.dtype if v.dtype in _RASTER_TYPES else "other"}
    nodata = _nodata(v)
    if nodata is not None:
        band["nodata"] = nodata
    if v.unit:
        band["unit"] = v.unit
    return band


def _assets(store: Path, here: Path | None, variables: Sequence[Variable],
            bands: Sequence[str], *, icechunk: bool) -> dict[str, Any]:
    """The whole store (``data``), and for a plain Zarr store one asset per array on the grid
    (its path inside the store), each with its ``raster:bands``. An Icechunk repository is
    opened as a whole: its bands are described on its one asset, in band order."""
    kind = media_type(store if here is None else here, icechunk=icechunk)
    data: dict[str, Any] = {"href": f"./{store.name}", "type": kind, "roles": ["data"],
                            "title": f"the product store ({store.name})"}
    size = None if here is None else store_size(here)
    if size is not None:
        data["file:size"] = size
    if icechunk:
        if variables:
            data["raster:bands"] = [_raster_band(v) for v in variables]
            data["description"] = ("Icechunk repository; the 'cube' group holds the bands "
                                   + ", ".join(v.name for v in variables) + " in this order")
        return {"data": data}
    assets = {"data": data}
    for v in variables:
        if v.name == "data":
            continue  # the store's own key
        assets[v.name] = {
            "href": f"./{store.name}/{v.name}",
            "type": kind,
            "roles": ["data"] if v.name in bands else ["data", "auxiliary"],
            "title": v.description or v.name,
            "raster:bands": [_raster_band(v)],
        }
    return assets


def _item_links(store: Path, sources: Sequence[Source], *, in_bucket: bool = False
                ) -> list[dict[str, Any]]:
    coll = f"./{collection_path(store).name}"
    links: list[dict[str, Any]] = [
        {"rel": rel, "href": coll, "type": JSON_MEDIA_TYPE} for rel in ("collection", "parent")
    ]
    for s in sources:
        if s.href:
            href = _absolute(s.href) if in_bucket else _relative(s.href, store.parent)
            links.append({"rel": "derived_from", "href": href,
                          "type": ITEM_MEDIA_TYPE, "title": f"{s.collection}/{s.id}"})
    return links


# --------------------------------------------------------------------------- the Collection


def sidecar_texts(store: Path, item_text: str) -> dict[Path, str]:
    """Every sidecar file of ``store`` by path, in the order to put them in place: the
    Collection (when ``item_text`` is an Aquila product Item) and the Item."""
    collection = collection_text(store, item_text)
    out = {collection_path(store): collection} if collection is not None else {}
    return out | {stac_path(store): item_text}


def collection_text(store: Path, item_text: str) -> str | None:
    """The product's Collection, made from its Item alone (None: not an Aquila product Item):
    extent, label, dimensions and licence as the Item says, and links to the Item."""
    try:
        item = json.loads(item_text)
        props = item["properties"]
        kind, cid = props["aquila:product"], item["collection"]
    except (ValueError, KeyError, TypeError):
        return None
    label = props.get("aquila:label")
    start = props.get("start_datetime") or props.get("datetime")
    end = props.get("end_datetime") or props.get("datetime")
    doc: dict[str, Any] = {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [EXTENSION_URL],
        "id": cid,
        "title": f"Aquila {kind}: {cid}",
        "description": (f"The {kind} product {cid} made by Aquila; each item is one run's (or "
                        "night's) version of it. " + str(props.get("processing:lineage", ""))),
        "license": _licence(label),
        "aquila:product": kind,
        "aquila:label": label,
        "extent": {"spatial": {"bbox": [item["bbox"]]}, "temporal": {"interval": [[start, end]]}},
        "links": [
            {"rel": "root", "href": f"./{collection_path(store).name}", "type": JSON_MEDIA_TYPE},
            {"rel": "item", "href": f"./{stac_path(store).name}", "type": ITEM_MEDIA_TYPE,
             "title": item["id"]},
        ],
    }
    if "cube:dimensions" in props:
        doc["stac_extensions"].append(DATACUBE_EXT)
        doc["cube:dimensions"] = props["cube:dimensions"]
        doc["cube:variables"] = props.get("cube:variables", {})
    return json.dumps(doc, indent=2, default=str, sort_keys=True)


def _licence(label: Mapping[str, Any] | None) -> str:
    """One licence over all the scenes: their one licence, 'various', or 'proprietary' when
    the product carries no label to say (STAC 1.0's choices for a collection)."""
    licences = list((label or {}).get("licences") or [])
    if len(licences) > 1:
        return "various"
    if licences and _LICENCE.match(str(licences[0])):
        return str(licences[0])
    return "proprietary"


# --------------------------------------------------------------------------- call sites


def run_fields(plan: Any, report: Any) -> dict[str, Any]:
    """:func:`product_stac_text`'s fields that a run's plan and report give: grid, workflow,
    run id, bands, and the sources (the plan's scenes among the report's ``scenes_used``)."""
    from pipeline.products.lineage import contributors

    return {
        "grid": plan.grid,
        "workflow": report.workflow,
        "run_id": report.run_id,
        "bands": tuple(plan.outputs.bands),
        "sources": sources_of(contributors(plan, report.scenes_used)),
    }


def night_fields(night: Any, state: Any) -> dict[str, Any]:
    """:func:`product_stac_text`'s fields for a nightly repository at the published ``state``:
    grid, workflow, snapshot (the tip of ``main``, which ``state`` is), bands, and the sources
    (the ledger's scenes that gave pixels to some chunk)."""
    from pipeline.plan.ledger import INGESTED

    used = [e.scene for e in state.entries if e.status == INGESTED and e.used_in]
    return {
        "grid": night.grid,
        "workflow": night.spec.name,
        "run_id": state.run_id,
        "snapshot": night.store.tip(),
        "bands": tuple(night.outputs.bands),
        "sources": sources_of(used),
        "icechunk": True,
        "quantity": night.outputs.quantity,
    }
