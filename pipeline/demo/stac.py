"""STAC documents of the synthetic catalog: item footprints, items and collections.

Items carry the eo, raster, projection (v1.1.0 ``proj:epsg`` or v2.0.0 ``proj:code``, as the
provider does), view and classification extensions; every document is written with
``stac_version`` :data:`STAC_VERSION`. Footprints are the raster extent cut by the swath edge,
densified every kilometre and given in lon/lat.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pystac
import shapely
from rasterio.transform import Affine
from shapely.geometry import Polygon, box, mapping
from shapely.geometry.polygon import orient

from pipeline.demo.providers import METADATA_ASSETS, METADATA_FILES, ProviderSpec
from pipeline.demo.scenes import SyntheticScene
from pipeline.demo.truth import AREA_CRS, BANDS, to_area, transformer

__all__ = ["COG_MEDIA_TYPE", "STAC_VERSION", "StacIO", "build_collection", "build_item"]

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"

_STAC_EXT = {
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "proj-1.1.0": "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "proj-2.0.0": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "view": "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
}

# ------------------------------------------------------------------------ geometry


_FOOTPRINT_STEP_M = 1000.0
"""Densification step of item footprints (m): UTM<->lon/lat curvature error << 1 cm."""


def _valid_polygon(scene: SyntheticScene) -> Polygon:
    """Data footprint in EPSG:32632: raster extent intersected with the swath half-plane."""
    raster = box(*scene.bounds)
    if scene.crs != AREA_CRS:
        # straight 1 km edges in the neighbouring UTM zone bend by far less than 1 mm
        raster = shapely.transform(
            shapely.segmentize(raster, _FOOTPRINT_STEP_M),
            lambda c: np.column_stack(to_area(scene.crs, c[:, 0], c[:, 1])),
        )
    a, b, c = scene.swath
    # the line point nearest the raster centre, the line direction, and the valid side +(a, b)
    centre = np.array(raster.centroid.coords[0])
    p0 = centre - (a * centre[0] + b * centre[1] + c) * np.array([a, b])
    t = np.array([-b, a])
    n = np.array([a, b])
    big = 1e6
    half = Polygon([p0 - big * t, p0 + big * t, p0 + big * t + big * n, p0 - big * t + big * n])
    poly = raster.intersection(half)
    if not isinstance(poly, Polygon):  # pragma: no cover - swath never misses the raster
        raise RuntimeError(f"unexpected footprint geometry for {scene.item_id}")
    return poly


def _lonlat_geometry(poly_area: Polygon) -> tuple[dict[str, Any], list[float]]:
    """EPSG:32632 polygon -> GeoJSON polygon in lon/lat (densified) and its bbox."""
    dense = shapely.segmentize(poly_area, _FOOTPRINT_STEP_M)
    ll = shapely.transform(
        dense,
        lambda c: np.round(
            np.column_stack(transformer(AREA_CRS, "EPSG:4326").transform(c[:, 0], c[:, 1])), 9
        ),
    )
    ll = orient(ll, 1.0)
    geom = mapping(ll)
    geom = {
        "type": "Polygon",
        "coordinates": [[list(p) for p in ring] for ring in geom["coordinates"]],
    }
    return geom, [float(v) for v in ll.bounds]


# ---------------------------------------------------------------------------- STAC


def _proj_fields(spec: ProviderSpec, transform: Affine, shape: tuple[int, int]) -> dict[str, Any]:
    """``proj:shape`` [rows, cols] and ``proj:transform`` (6 or 9 affine coefficients)."""
    t = list(transform)[: spec.transform_len]
    return {"proj:shape": [shape[0], shape[1]], "proj:transform": [float(v) for v in t]}


def _qa_asset_fields(spec: ProviderSpec) -> dict[str, Any]:
    style = spec.qa_style or {"north": "scl", "south": "qa_pixel"}.get(spec.collection, "udm")
    if style == "scl":
        classes = [
            {"value": 0, "name": "no_data", "description": "No data", "nodata": True},
            {"value": 3, "name": "cloud_shadows", "description": "Cloud shadows"},
            {"value": 4, "name": "vegetation", "description": "Vegetation (clear)"},
            {"value": 8, "name": "cloud_medium_probability", "description": "Clouds, medium"},
            {"value": 9, "name": "cloud_high_probability", "description": "Clouds, high"},
        ]
        return {"title": "Scene classification map (SCL)", "classification:classes": classes}
    if style == "qa_pixel":

        def flag(name: str, offset: int, desc: str, nodata: bool = False) -> dict[str, Any]:
            yes: dict[str, Any] = {"value": 1, "name": name, "description": desc}
            if nodata:
                yes["nodata"] = True
            return {
                "name": name,
                "offset": offset,
                "length": 1,
                "description": desc,
                "classes": [{"value": 0, "name": f"not_{name}"}, yes],
            }

        bitfields = [
            flag("fill", 0, "Image or fill data", nodata=True),
            flag("cloud", 3, "High confidence cloud or not"),
            flag("cloud_shadow", 4, "High confidence cloud shadow or not"),
            flag("clear", 6, "Clear (no cloud, no dilated cloud) or not"),
        ]
        return {"title": "Pixel quality assessment band", "classification:bitfields": bitfields}
    classes = [
        {"value": 0, "name": "clear", "description": "Clear"},
        {"value": 1, "name": "cloud", "description": "Cloud"},
        {"value": 2, "name": "cloud_shadow", "description": "Cloud shadow"},
        {"value": 255, "name": "no_data", "description": "No data", "nodata": True},
    ]
    return {"title": "Usable data mask (UDM)", "classification:classes": classes}


_BAND_TITLES = {"blue": "Blue", "green": "Green", "red": "Red", "nir": "Near infrared"}

STAC_VERSION = "1.0.0"
"""``stac_version`` written into every catalog, collection and item."""


class StacIO(pystac.stac_io.DefaultStacIO):
    """Default IO writing ``stac_version`` :data:`STAC_VERSION` (pystac writes its latest)."""

    def save_json(self, dest: Any, json_dict: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        d = dict(json_dict)
        d["stac_version"] = STAC_VERSION
        super().save_json(dest, d, *args, **kwargs)


def build_item(scene: SyntheticScene, spec: ProviderSpec, cloud_fraction: float) -> pystac.Item:
    """The (unsaved) item of a written scene; ``cloud_fraction`` as rendered (0..1)."""
    poly = _valid_polygon(scene)
    geometry, bbox = _lonlat_geometry(poly)
    epsg = int(scene.crs.split(":")[1])
    props: dict[str, Any] = {
        "platform": scene.platform,
        "constellation": spec.constellation,
        "instruments": list(spec.instruments),
        "gsd": spec.resolution,
        "eo:cloud_cover": round(100.0 * cloud_fraction, 2),
        "view:sun_elevation": scene.sun_elevation,
        "view:sun_azimuth": scene.sun_azimuth,
        "view:off_nadir": scene.off_nadir,
    }
    if not spec.sun_in_item:
        del props["view:sun_elevation"], props["view:sun_azimuth"]
    if spec.proj_version == "2.0.0":
        props["proj:code"] = scene.crs
    else:
        props["proj:epsg"] = epsg
    props.update(_proj_fields(spec, scene.transform, scene.shape))
    props["proj:bbox"] = [float(v) for v in scene.bounds]
    exts = [
        _STAC_EXT["eo"],
        _STAC_EXT["raster"],
        _STAC_EXT[f"proj-{spec.proj_version}"],
        _STAC_EXT["view"],
        _STAC_EXT["classification"],
    ]
    item = pystac.Item(
        id=scene.item_id,
        geometry=geometry,
        bbox=bbox,
        datetime=scene.datetime,
        properties=props,
        stac_extensions=exts,
        collection=spec.collection,
    )
    band_raster: dict[str, Any] = {"data_type": "uint16", "nodata": spec.nodata}
    if spec.published == "raster:bands":
        band_raster.update(scale=spec.scale, offset=spec.offset)
    common = dict(spec.common_names)
    assets: dict[str, list[str]] = {}
    for band in BANDS:
        key, _ = spec.band_assets[band]
        assets.setdefault(key, []).append(band)
    for key, bands in assets.items():
        fields: dict[str, Any] = {
            "eo:bands": [
                {"name": spec.band_names[b], "common_name": common.get(b, b)} for b in bands
            ],
            "raster:bands": [dict(band_raster) for _ in bands],
        }
        title = (
            f"{_BAND_TITLES[bands[0]]} ({spec.band_names[bands[0]]})"
            if len(bands) == 1
            else "Analytic surface reflectance (" + ", ".join(bands) + ")"
        )
        item.add_asset(
            key,
            pystac.Asset(
                href=f"./{key}.tif",
                media_type=COG_MEDIA_TYPE,
                title=title,
                roles=["data"],
                extra_fields=fields,
            ),
        )
    if spec.published != "raster:bands":
        name, title = METADATA_FILES[spec.published]
        item.add_asset(
            METADATA_ASSETS[spec.published],
            pystac.Asset(
                href=f"./{name}",
                media_type="text/plain" if name.endswith(".txt") else "application/xml",
                title=title,
                roles=["metadata"],
            ),
        )
    qa_fields: dict[str, Any] = _qa_asset_fields(spec)
    title = qa_fields.pop("title")
    qa_fields["raster:bands"] = [{"data_type": spec.qa_dtype, "nodata": spec.qa_nodata}]
    if scene.qa_resolution != scene.resolution:
        qa_fields.update(_proj_fields(spec, scene.qa_transform, scene.qa_shape))
    item.add_asset(
        spec.qa_key,
        pystac.Asset(
            href=f"./{spec.qa_key}.tif",
            media_type=COG_MEDIA_TYPE,
            title=title,
            roles=["data-mask"],
            extra_fields=qa_fields,
        ),
    )
    return item


def build_collection(
    spec: ProviderSpec, mine: list[tuple[SyntheticScene, pystac.Item]]
) -> pystac.Collection:
    """The collection of ``spec`` holding the items ``mine`` (scene, item), in that order;
    its extent is the union of the items' bboxes and datetimes."""
    bboxes = np.array([it.bbox for _, it in mine])
    extent = pystac.Extent(
        pystac.SpatialExtent(
            [
                [
                    float(bboxes[:, 0].min()),
                    float(bboxes[:, 1].min()),
                    float(bboxes[:, 2].max()),
                    float(bboxes[:, 3].max()),
                ]
            ]
        ),
        pystac.TemporalExtent(
            [[min(s.datetime for s, _ in mine), max(s.datetime for s, _ in mine)]]
        ),
    )
    coll = pystac.Collection(
        id=spec.collection,
        title=spec.title,
        description=f"{spec.title}: {spec.crs}, {spec.resolution:g} m, "
        + (
            f"DN * {spec.scale:g} + {spec.offset:g}"
            if spec.published == "raster:bands"
            else f"DN only (constants in {METADATA_FILES[spec.published][0]})"
        )
        + f", nodata {spec.nodata}, QA asset '{spec.qa_key}'.",
        extent=extent,
        license="proprietary",
        summaries=pystac.Summaries(
            {
                "platform": sorted({s.platform for s, _ in mine}),
                "constellation": [spec.constellation],
                "instruments": list(spec.instruments),
                "gsd": [spec.resolution],
            }
        ),
    )
    for _, it in mine:
        coll.add_item(it)
    return coll
