"""Step 6 of normalisation, where an asset's pixels are: its grid from ``proj:*`` (asset, then
item; ``proj:code``/``proj:epsg``/``proj:wkt2``/``proj:projjson``), else the local file's header
(``no_crs`` / ``bad_crs`` / ``no_grid`` / ``bad_transform`` / ``grid_mismatch``); then the item's
footprint must lie in the raster's bounds (``footprint_mismatch``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from pipeline.catalog.footprint import inside_fraction, raster_footprint
from pipeline.catalog.items.links import can_read_header, check_exists, is_local
from pipeline.catalog.items.options import reject, shared_grid
from pipeline.catalog.scene import RasterGrid
from pipeline.catalog.stacdoc import ItemDoc

MIN_FOOTPRINT_INSIDE = 0.8
"""Share of an item footprint that must lie inside its raster's bounds (else footprint_mismatch)."""


def _crs_of(fields: Mapping[str, Any]) -> str | None:
    if fields.get("proj:code"):
        return str(fields["proj:code"])
    epsg = fields.get("proj:epsg")
    if epsg not in (None, ""):
        try:
            return f"EPSG:{int(epsg)}"
        except (TypeError, ValueError):
            return str(epsg)
    if fields.get("proj:wkt2"):
        return str(fields["proj:wkt2"])
    if fields.get("proj:projjson"):
        import json

        return json.dumps(fields["proj:projjson"], sort_keys=True)
    return None


@lru_cache(maxsize=1024)
def _crs_error(crs: str) -> str | None:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        CRS.from_user_input(crs)
    except CRSError as exc:
        return str(exc)
    return None


def asset_grid(doc, key, asset, href, mirrored, options, notes) -> RasterGrid:
    props = doc.properties
    crs = _crs_of(asset) or _crs_of(props)
    transform = asset.get("proj:transform") or props.get("proj:transform")
    shape = asset.get("proj:shape") or props.get("proj:shape")
    stated = _stated_grid(doc, key, crs, transform, shape) if crs and transform and shape else None
    if stated is not None and not (mirrored and is_local(href)):
        return stated
    if not can_read_header(href, options):
        if not crs:
            raise reject(
                doc,
                "no_crs",
                f"asset {key!r}: no CRS anywhere (proj:code/proj:epsg/proj:wkt2/proj:projjson on "
                "the asset or the item) and the file is not read at ingest; add proj:code",
            )
        raise reject(
            doc,
            "no_grid",
            f"asset {key!r}: CRS {crs[:40]!r} but no proj:shape/proj:transform, and the file is "
            "not read at ingest (remote); add proj:shape and proj:transform to the item",
        )
    check_exists(doc, key, href, options)
    header = file_header(doc, key, href)[0]
    if stated is not None and not _same_extent(stated, header):
        raise reject(
            doc,
            "grid_mismatch",
            f"asset {key!r}: the file {href} covers {_bounds(header)} in {header.crs} but the item "
            f"says {_bounds(stated)} in {stated.crs}; the mirror holds another product",
        )
    if stated is None:
        notes.setdefault("grid", "from the file header (the item has no proj:shape/transform)")
    return header


def _stated_grid(doc, key, crs, transform, shape) -> RasterGrid:
    try:
        cache_key = (crs, tuple(transform), tuple(shape))
        found = _STATED.get(cache_key)
    except TypeError:  # unhashable parts: not numbers; validated (and refused) below
        cache_key, found = None, None
    if found is not None:
        return found
    grid = _validated_grid(doc, key, crs, transform, shape)
    if cache_key is not None:
        if len(_STATED) > 100_000:
            _STATED.clear()
        _STATED[cache_key] = grid
    return grid


_STATED: dict = {}


def _validated_grid(doc, key, crs, transform, shape) -> RasterGrid:
    problem = _crs_error(crs)
    if problem:
        raise reject(
            doc,
            "bad_crs",
            f"asset {key!r}: CRS {crs[:60]!r} is not one pyproj knows ({problem[:120]}); "
            "fix proj:code/proj:epsg",
        )
    try:
        t = [float(v) for v in transform]
        hw = (int(shape[0]), int(shape[1]))
    except (TypeError, ValueError, IndexError):
        raise reject(
            doc, "bad_transform", f"asset {key!r}: proj:transform/proj:shape are not numbers"
        ) from None
    if len(t) not in (6, 9) or (len(t) == 9 and t[6:] != [0.0, 0.0, 1.0]) or min(hw) <= 0:
        raise reject(
            doc,
            "bad_transform",
            f"asset {key!r}: proj:transform {t} / proj:shape {list(hw)} do not describe a grid "
            "(6 affine coefficients a, b, c, d, e, f, optionally with 0, 0, 1)",
        )
    return shared_grid(crs, tuple(t[:6]), hw)  # type: ignore[arg-type]


def _same_extent(a: RasterGrid, b: RasterGrid) -> bool:
    if _crs_key(a.crs) != _crs_key(b.crs):
        return False
    tol = 2.0 * max(
        abs(b.transform[0]), abs(b.transform[4]), abs(a.transform[0]), abs(a.transform[4])
    )
    return all(abs(x - y) <= tol for x, y in zip(_bounds(a), _bounds(b), strict=True))


@lru_cache(maxsize=1024)
def _crs_key(crs: str) -> str:
    from pyproj import CRS

    c = CRS.from_user_input(crs)
    epsg = c.to_epsg()
    return f"EPSG:{epsg}" if epsg else c.to_wkt()


def _bounds(g: RasterGrid) -> tuple[float, float, float, float]:
    a, b, c, d, e, f = g.transform
    h, w = g.shape
    xs = [c, c + a * w + b * h, c + a * w, c + b * h]
    ys = [f, f + d * w + e * h, f + d * w, f + e * h]
    return (round(min(xs), 3), round(min(ys), 3), round(max(xs), 3), round(max(ys), 3))


def file_header(doc: ItemDoc, key: str, href: str) -> tuple[RasterGrid, str]:
    """(grid, dtype) from the file itself; cached per href."""
    try:
        found = _read_header(href)
    except OSError as exc:
        raise reject(doc, "asset_unreadable", f"asset {key!r} ({href}): {exc}") from None
    if found is None:
        raise reject(
            doc,
            "no_crs",
            f"asset {key!r} has no CRS in the item (proj:*) nor a geotransform and CRS in the file "
            f"{href}; add proj:code, proj:shape and proj:transform to the item",
        )
    return found


@lru_cache(maxsize=4096)
def _read_header(href: str) -> tuple[RasterGrid, str] | None:
    import numpy as np
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        # GTiff only, as the reader: a VRT (or any other format) named .tif can point anywhere
        with rasterio.open(href, driver="GTiff") as ds:
            if ds.crs is None or ds.transform.is_identity:
                return None
            t = ds.transform
            grid = RasterGrid(
                ds.crs.to_string(), (t.a, t.b, t.c, t.d, t.e, t.f), (ds.height, ds.width)
            )
            return grid, str(np.dtype(ds.dtypes[0]))
    except RasterioIOError as exc:
        raise OSError(str(exc)) from exc


def check_footprint(
    doc: ItemDoc, footprint, grids: Sequence[RasterGrid], notes: dict[str, str]
) -> dict[RasterGrid, RasterGrid]:
    """The item footprint must (mostly) lie inside each distinct raster's bounds.

    A ``proj:transform`` written in GDAL order (c, a, b, f, d, e) instead of the affine order
    (a, b, c, d, e, f) — as sat-api's Landsat items did — places the raster nowhere; if the
    reordered transform fits the footprint it is used (returned as a fix) and noted.
    """
    fixes: dict[RasterGrid, RasterGrid] = {}
    for grid in dict.fromkeys(grids):
        share, why = _inside(footprint, grid)
        if share >= MIN_FOOTPRINT_INSIDE:
            continue
        t = grid.transform
        if t[2] == 0.0 and t[4] == 0.0 and t[1] != 0.0 and t[5] != 0.0:
            reordered = RasterGrid(grid.crs, (t[1], t[2], t[0], t[4], t[5], t[3]), grid.shape)
            if _inside(footprint, reordered)[0] >= MIN_FOOTPRINT_INSIDE:
                fixes[grid] = reordered
                notes["transform"] = (
                    "proj:transform was in GDAL order (c, a, b, f, d, e); reordered"
                )
                continue
        raise reject(
            doc,
            "footprint_mismatch",
            f"only {share:.0%} of the item geometry lies inside the raster bounds "
            f"{_bounds(grid)} ({grid.crs[:40]}) that proj:transform/proj:shape (or the file) "
            "give"
            + (f" (those bounds cannot be placed in lon/lat: {why})" if why else "")
            + "; the item's geometry or its projection fields are wrong",
        )
    return fixes


def _inside(footprint, grid: RasterGrid) -> tuple[float, str | None]:
    """(share of ``footprint`` inside the raster's lon/lat footprint, None), or (0, why) for a
    grid that cannot be placed in lon/lat (it then matches nothing; the reject says why)."""
    from pyproj.exceptions import ProjError
    from shapely.errors import ShapelyError

    try:
        return inside_fraction(footprint, _raster_lonlat(grid)), None
    except (ProjError, ShapelyError, ValueError) as exc:  # CRSError is a ProjError
        return 0.0, f"{type(exc).__name__}: {exc}"


@lru_cache(maxsize=4096)
def _raster_lonlat(grid: RasterGrid):
    return raster_footprint(grid.crs, grid.transform, grid.shape)
