"""Footprints in lon/lat (EPSG:4326), handled deliberately at the antimeridian and the poles.

* A ring that jumps across ±180° (e.g. 179.5 → -179.8) is unwrapped into continuous longitudes
  and split into a MultiPolygon at 180°, so it never becomes a 359°-wide band around the globe.
  Footprints already split by the publisher (Sentinel-2 T01KAB) pass through unchanged.
* A ring whose unwrapped longitudes drift by a full 360° encloses a pole: it is closed along
  the pole's parallel (±90°), which is the polygon that the ring bounds on the sphere.
* Raster bounds are turned into the same kind of footprint by transforming their densified
  edges, so an item's footprint can be compared with the raster it describes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from shapely import box, contains, prepare
from shapely.affinity import translate
from shapely.errors import ShapelyError
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

_WEST = box(-540.0, -90.0, 180.0, 90.0)
_EAST = box(180.0, -90.0, 540.0, 90.0)
EDGE_POINTS = 8
"""Points per raster edge when its bounds are transformed to lon/lat (corners included)."""


def footprint_from_geojson(geometry: Mapping[str, Any]) -> BaseGeometry:
    """A valid lon/lat footprint from GeoJSON; raises ValueError saying what is wrong."""
    kind = geometry.get("type") if isinstance(geometry, Mapping) else None
    coords = geometry.get("coordinates") if isinstance(geometry, Mapping) else None
    try:
        if kind == "Polygon" and coords:
            geom = lonlat_polygon(coords[0], holes=coords[1:])
        elif kind == "MultiPolygon" and coords:
            geom = unary_union([lonlat_polygon(p[0], holes=p[1:]) for p in coords if p])
        else:
            geom = shape(geometry)
    except ValueError:
        raise
    # what shapely and the ring arithmetic raise for a mapping that is not GeoJSON (coordinates
    # that are not numbers or not nested as they should be; measured by fuzzing)
    except (ShapelyError, AttributeError, IndexError, KeyError, TypeError) as exc:
        raise ValueError(f"geometry is not valid GeoJSON: {type(exc).__name__}: {exc}") from exc
    if geom.is_empty:
        raise ValueError("geometry is empty")
    if not geom.is_valid:
        geom = geom.buffer(0)
    if geom.is_empty or geom.area == 0.0:
        raise ValueError("geometry has no area (a point, a line, or a degenerate polygon)")
    minx, miny, maxx, maxy = geom.bounds
    if miny < -90.0 or maxy > 90.0:
        raise ValueError(f"latitudes {miny:.3f}..{maxy:.3f} are outside -90..90")
    return geom


def lonlat_polygon(
    ring: Sequence[Sequence[float]], holes: Sequence[Sequence[Sequence[float]]] = ()
) -> BaseGeometry:
    """A lon/lat ring made antimeridian- and pole-safe (see the module docstring)."""
    if len(ring) < 4:
        raise ValueError(f"a polygon ring needs at least 4 positions, this one has {len(ring)}")
    lons = [float(p[0]) for p in ring]
    lats = [float(p[1]) for p in ring]
    if not any(abs(b - a) > 180.0 for a, b in zip(lons, lons[1:], strict=False)) and (
        min(lons) >= -180.0 and max(lons) <= 180.0
    ):
        return Polygon(list(zip(lons, lats, strict=True)), holes or None)
    unwrapped = [lons[0]]
    for prev, x in zip(lons, lons[1:], strict=False):
        step = (x - prev + 180.0) % 360.0 - 180.0  # shortest way round, in (-180, 180]
        unwrapped.append(unwrapped[-1] + step)
    drift = unwrapped[-1] - unwrapped[0]
    if abs(drift) > 180.0:  # the ring goes once around a pole
        pole = 90.0 if sum(lats) > 0 else -90.0
        start = unwrapped[0]
        coords = list(zip(unwrapped, lats, strict=True)) + [
            (start + drift, pole),
            (start, pole),
        ]
        shifted = Polygon(coords).buffer(0)
    else:
        shifted = Polygon(list(zip(unwrapped, lats, strict=True))).buffer(0)
    return _fold(shifted)


def _fold(geom: BaseGeometry) -> BaseGeometry:
    """Cut continuous-longitude geometry into pieces inside -180..180."""
    pieces = []
    for offset in (-360.0, 0.0, 360.0):
        window = box(-180.0 + offset, -90.0, 180.0 + offset, 90.0)
        part = geom.intersection(window)
        if not part.is_empty and part.area > 0:
            pieces.append(translate(part, xoff=-offset))
    merged = unary_union(pieces)
    if merged.geom_type == "GeometryCollection":
        merged = MultiPolygon([g for g in merged.geoms if g.geom_type == "Polygon"])
    return merged


def raster_footprint(crs: str, transform: Sequence[float], shape_yx: Sequence[int]) -> BaseGeometry:
    """The lon/lat footprint of a raster grid (GDAL-ordered affine, shape (height, width))."""
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    h, w = int(shape_yx[0]), int(shape_yx[1])
    n = EDGE_POINTS
    cols = [w * i / n for i in range(n)]
    rows = [h * i / n for i in range(n)]
    pixel = (
        [(x, 0.0) for x in cols]
        + [(float(w), y) for y in rows]
        + [(w - x, float(h)) for x in cols]
        + [(0.0, h - y) for y in rows]
    )
    xs = [c + a * col + b * row for col, row in pixel]
    ys = [f + d * col + e * row for col, row in pixel]
    lon, lat = _to_lonlat(crs).transform(xs, ys)
    ring = [(x, y) for x, y in zip(lon, lat, strict=True) if abs(x) != float("inf")]
    if len(ring) < 4:
        raise ValueError(f"raster bounds in {crs} do not transform to lon/lat")
    ring.append(ring[0])
    out = lonlat_polygon(ring)
    if not out.is_valid:
        out = out.buffer(0)
    prepare(out)
    return out


def inside_fraction(footprint: BaseGeometry, raster: BaseGeometry) -> float:
    """Share (0–1) of the item footprint's area that lies inside the raster's footprint.

    ``raster`` may be prepared (``shapely.prepare``): the common case, a footprint wholly inside,
    is then answered without computing an intersection."""
    if footprint.area == 0.0:
        return 0.0
    if contains(raster, footprint):
        return 1.0
    return float(footprint.intersection(raster).area / footprint.area)


@lru_cache(maxsize=256)
def _to_lonlat(crs: str):
    from pyproj import Transformer

    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
