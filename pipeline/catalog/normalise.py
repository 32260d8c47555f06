"""Turn a STAC item into a :class:`Scene`, or reject it with a reason code.

Bands are matched by ``eo:bands`` common name (STAC 1.0) or ``bands``/``eo:common_name``
(STAC 1.1); scale/offset/nodata/dtype come from ``raster:bands``; the grid from the projection
extension at asset level, then item level, then (only if both lack it) the file header.
Quality assets are recognised by the classification extension.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pystac
from shapely.geometry import shape as shapely_shape

from pipeline.catalog.scene import BandSource, QualitySource, RasterGrid, Scene
from pipeline.errors import HrefNotAllowed, SceneRejected
from pipeline.io.hrefs import HrefPolicy, resolve_href

SUPPORTED_DTYPES = frozenset(
    {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"}
)
# Classification class names that mean "do not use this pixel". Exact names, lower-case.
MASK_CLASS_NAMES = frozenset(
    {
        "no_data", "nodata", "fill", "saturated_or_defective", "saturated", "defective",
        "cloud", "clouds", "cloud_shadow", "cloud_shadows", "shadow",
        "cloud_medium_probability", "cloud_high_probability", "thin_cirrus", "cirrus",
    }
)
# Bit-field names whose non-zero value masks a pixel (Landsat QA_PIXEL style).
MASK_FIELD_NAMES = frozenset({"fill", "cloud", "cloud_shadow", "dilated_cloud", "cirrus"})


def normalise_item(
    item: pystac.Item,
    *,
    bands: Sequence[str],
    policy: HrefPolicy,
    check_files: bool = True,
) -> Scene:
    """Normalise one item; raise :class:`SceneRejected` (with a reason code) if unusable."""
    iid = item.id

    def reject(reason: str, message: str) -> SceneRejected:
        return SceneRejected(iid, reason, message)

    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise reject("no_datetime", "has neither 'datetime' nor 'start_datetime'")
    if item.geometry is None:
        raise reject("no_footprint", "has no geometry, so it cannot be placed on the grid")
    try:
        footprint = shapely_shape(item.geometry)
    except Exception as exc:  # noqa: BLE001 - any malformed GeoJSON
        raise reject("bad_footprint", f"geometry is not valid GeoJSON: {exc}") from None
    if footprint.is_empty:
        raise reject("bad_footprint", "geometry is empty")

    base = item.get_self_href()
    found: dict[str, BandSource] = {}
    quality: list[QualitySource] = []
    problems: list[str] = []
    for key, asset in item.assets.items():
        fields = asset.extra_fields
        cls_classes, cls_bits = _classification(fields)
        band_infos = _band_infos(fields)
        roles = set(asset.roles or ())
        if cls_classes is not None or cls_bits is not None:
            if not ({"data-mask", "cloud", "cloud-shadow", "snow-ice", "water"} & roles or
                    "data" not in roles):
                continue
            try:
                href = _checked(asset, key, iid, base, policy, check_files)
                grid = _grid(item, asset, key, href)
            except SceneRejected as exc:
                problems.append(exc.message)
                continue
            except HrefNotAllowed as exc:
                raise reject("href_not_allowed", exc.message) from None
            masked, bits = _masked_values(cls_classes, cls_bits)
            dtype = _dtype(fields, 0) or "uint16"
            quality.append(QualitySource(key, href, 1, dtype, grid, masked, bits))
            continue
        if "data" not in roles and roles and not band_infos:
            continue
        for index, info in enumerate(band_infos, start=1):
            name = (info.get("common_name") or info.get("eo:common_name") or "").lower()
            if name not in bands or name in found:
                continue
            try:
                href = _checked(asset, key, iid, base, policy, check_files)
            except HrefNotAllowed as exc:
                raise reject("href_not_allowed", exc.message) from None
            dtype = _dtype(fields, index - 1)
            if dtype is None:
                dtype = _header_dtype(href, iid, key)
            if dtype not in SUPPORTED_DTYPES:
                raise reject(
                    "unsupported_dtype",
                    f"asset {key!r} stores {dtype!r}; supported: {sorted(SUPPORTED_DTYPES)}",
                )
            raster = _raster_band(fields, index - 1)
            nodata = raster.get("nodata", info.get("nodata"))
            found[name] = BandSource(
                band=name,
                asset=key,
                href=href,
                index=index,
                dtype=dtype,
                nodata=None if nodata is None else float(nodata),
                scale=float(raster.get("scale", 1.0)),
                offset=float(raster.get("offset", 0.0)),
                grid=_grid(item, asset, key, href),
            )
    missing = [b for b in bands if b not in found]
    if missing:
        if problems:
            raise reject("asset_missing", "; ".join(problems))
        have = sorted({n for n in _all_common_names(item)})
        raise reject(
            "missing_band",
            f"has no asset for band(s) {missing} (by eo:bands common_name); "
            f"it offers {have or 'no named bands'}",
        )
    if problems:
        raise reject("asset_missing", "; ".join(problems))
    props = item.properties
    return Scene(
        id=iid,
        collection=item.collection_id or "",
        provider=str(props.get("constellation") or item.collection_id or "unknown"),
        datetime=when,
        footprint=footprint,
        bands=tuple(found[b] for b in bands),
        quality=tuple(quality),
        platform=props.get("platform"),
        sun_elevation=_float_or_none(props.get("view:sun_elevation")),
        off_nadir=_float_or_none(props.get("view:off_nadir")),
        cloud_cover=_float_or_none(props.get("eo:cloud_cover")),
    )


# --------------------------------------------------------------------------- helpers


def _checked(asset, key, iid, base, policy: HrefPolicy, check_files: bool) -> str:
    href = resolve_href(asset.href, base)
    href = policy.check(href, item_id=iid, asset=key)
    if check_files and "://" not in href and not os.path.isfile(href):
        raise SceneRejected(iid, "asset_missing", f"asset {key!r}: file {href} does not exist")
    return href


def _band_infos(fields: dict[str, Any]) -> list[dict[str, Any]]:
    if "eo:bands" in fields:
        return [b for b in fields["eo:bands"] if isinstance(b, dict)]
    if "bands" in fields:  # STAC 1.1
        return [b for b in fields["bands"] if isinstance(b, dict)]
    return []


def _all_common_names(item: pystac.Item) -> Iterable[str]:
    for asset in item.assets.values():
        for info in _band_infos(asset.extra_fields):
            name = info.get("common_name") or info.get("eo:common_name")
            if name:
                yield str(name)


def _raster_band(fields: dict[str, Any], i: int) -> dict[str, Any]:
    rb = fields.get("raster:bands")
    if isinstance(rb, list) and i < len(rb) and isinstance(rb[i], dict):
        return rb[i]
    bands = fields.get("bands")
    if isinstance(bands, list) and i < len(bands) and isinstance(bands[i], dict):
        b = bands[i]
        return {k.removeprefix("raster:"): v for k, v in b.items()} | {
            "data_type": b.get("data_type", fields.get("data_type"))
        }
    return {}


def _dtype(fields: dict[str, Any], i: int) -> str | None:
    dtype = _raster_band(fields, i).get("data_type") or fields.get("data_type")
    return str(dtype) if dtype else None


def _classification(fields: dict[str, Any]):
    classes = fields.get("classification:classes")
    bits = fields.get("classification:bitfields")
    rb = _raster_band(fields, 0)
    classes = classes if classes is not None else rb.get("classification:classes")
    bits = bits if bits is not None else rb.get("classification:bitfields")
    return classes, bits


def _masked_values(classes, bitfields) -> tuple[tuple[int, ...], tuple]:
    masked: list[int] = []
    for c in classes or ():
        name = str(c.get("name", "")).lower()
        if c.get("nodata") or name in MASK_CLASS_NAMES:
            masked.append(int(c["value"]))
    bits = []
    for f in bitfields or ():
        name = str(f.get("name", "")).lower()
        if name not in MASK_FIELD_NAMES:
            continue
        length = int(f.get("length", 1))
        values = [
            int(c["value"])
            for c in f.get("classes", ())
            if int(c["value"]) != 0 and not str(c.get("name", "")).lower().startswith("not")
        ]
        if not values:
            values = list(range(1, 1 << length))
        bits.append((int(f["offset"]), length, tuple(values)))
    return tuple(sorted(set(masked))), tuple(bits)


def _crs_of(fields: dict[str, Any]) -> str | None:
    if fields.get("proj:code"):
        return str(fields["proj:code"])
    if fields.get("proj:epsg"):
        return f"EPSG:{int(fields['proj:epsg'])}"
    if fields.get("proj:wkt2"):
        return str(fields["proj:wkt2"])
    if fields.get("proj:projjson"):
        import json

        return json.dumps(fields["proj:projjson"])
    return None


def _grid(item: pystac.Item, asset: pystac.Asset, key: str, href: str) -> RasterGrid:
    a, p = asset.extra_fields, item.properties
    crs = _crs_of(a) or _crs_of(p)
    transform = a.get("proj:transform") or p.get("proj:transform")
    shape = a.get("proj:shape") or p.get("proj:shape")
    if crs and transform and shape and len(transform) in (6, 9) and len(shape) == 2:
        return RasterGrid(crs, tuple(float(v) for v in transform[:6]), (int(shape[0]), int(shape[1])))
    return _header_grid(href, item.id, key)


def _open_header(href: str, iid: str, key: str):
    import rasterio

    try:
        return rasterio.open(href)
    except rasterio.errors.RasterioIOError as exc:
        raise SceneRejected(iid, "asset_unreadable", f"asset {key!r} ({href}): {exc}") from None


def _header_grid(href: str, iid: str, key: str) -> RasterGrid:
    with _open_header(href, iid, key) as ds:
        if ds.crs is None:
            raise SceneRejected(
                iid, "no_crs", f"asset {key!r} has no CRS in the item (proj:*) nor in the file"
            )
        t = ds.transform
        return RasterGrid(ds.crs.to_string(), (t.a, t.b, t.c, t.d, t.e, t.f), (ds.height, ds.width))


def _header_dtype(href: str, iid: str, key: str) -> str:
    with _open_header(href, iid, key) as ds:
        return str(np.dtype(ds.dtypes[0]))


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
