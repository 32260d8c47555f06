"""What file format an asset holds, by its media type (else its link's suffix), and an account of
an item's formats for the rejects that say why nothing of it can be read.

Aquila reads rasters through GDAL's GTiff and JP2OpenJPEG drivers only: Cloud-Optimised GeoTIFF,
plain GeoTIFF or JPEG 2000 (:data:`READS`; the driver is chosen by the link's suffix,
:func:`pipeline.io.hrefs.raster_driver`). NetCDF, HDF, Zarr, GRIB, PNG/JPEG previews and VRTs are
named here so that an item made only of them is rejected with the formats it does hold, not a
riddle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

READS = (
    "Cloud-Optimised GeoTIFF, GeoTIFF or JPEG 2000 (.jp2; read with GDAL's GTiff and "
    "JP2OpenJPEG drivers)"
)
"""What Aquila reads, in the words every format reject uses."""

GEOTIFF = "GeoTIFF"
JPEG2000 = "JPEG 2000"
_READABLE = frozenset({GEOTIFF, JPEG2000})


@dataclass(frozen=True)
class AssetFormat:
    """An asset's format: a short name, the evidence (media type or suffix), and whether Aquila
    reads it (None: unknown — no media type and no suffix it knows)."""

    name: str
    evidence: str
    readable: bool | None


# media type (lower-case, before any ';' parameter) → format name
_MEDIA: Mapping[str, str] = {
    **dict.fromkeys(
        ("image/tiff", "image/geotiff", "image/vnd.stac.geotiff", "image/x.geotiff"), GEOTIFF
    ),
    **dict.fromkeys(("image/jp2", "image/jpx", "image/jpm", "image/j2c"), "JPEG 2000"),
    **dict.fromkeys(
        (
            "application/netcdf",
            "application/x-netcdf",
            "application/x-netcdf4",
            "application/netcdf4",
        ),
        "NetCDF",
    ),
    **dict.fromkeys(
        ("application/x-hdf", "application/x-hdf4", "application/x-hdf5", "application/x-hdf-eos"),
        "HDF",
    ),
    **dict.fromkeys(("application/vnd+zarr", "application/vnd.zarr", "application/zarr"), "Zarr"),
    **dict.fromkeys(("application/x-grib", "application/wmo-grib", "application/grib"), "GRIB"),
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WebP",
    "application/x-ogc-vrt": "VRT",
    **dict.fromkeys(("application/xml", "text/xml"), "XML"),
    **dict.fromkeys(("application/json", "application/geo+json"), "JSON"),
    "text/plain": "text",
    "text/html": "HTML",
}
# link suffix (lower-case) → format name, when the asset states no media type
_SUFFIX: Mapping[str, str] = {
    **dict.fromkeys((".tif", ".tiff", ".gtiff"), GEOTIFF),
    **dict.fromkeys((".jp2", ".j2k", ".jpx"), "JPEG 2000"),
    **dict.fromkeys((".nc", ".nc4", ".cdf"), "NetCDF"),
    **dict.fromkeys((".h5", ".hdf", ".hdf5", ".he5", ".h4", ".hdf4"), "HDF"),
    ".zarr": "Zarr",
    **dict.fromkeys((".grib", ".grib2", ".grb", ".grb2"), "GRIB"),
    ".png": "PNG",
    **dict.fromkeys((".jpg", ".jpeg"), "JPEG"),
    ".webp": "WebP",
    ".vrt": "VRT",
    ".xml": "XML",
    **dict.fromkeys((".json", ".geojson"), "JSON"),
    ".txt": "text",
    **dict.fromkeys((".html", ".htm"), "HTML"),
}
_PREVIEW_ROLES = frozenset({"thumbnail", "overview", "visual"})


def asset_format(asset: Mapping[str, Any]) -> AssetFormat:
    """The format of one asset: its media type wins; else the suffix of its link."""
    media = str(asset.get("type") or "").strip().lower()
    if media:
        base = media.split(";")[0].strip()
        name = _MEDIA.get(base)
        if name is None and "zarr" in media:
            name = "Zarr"
        if name is None and "geotiff" in media:
            name = GEOTIFF
        if name is not None:
            return AssetFormat(_preview(name, asset), media, name in _READABLE)
        return AssetFormat(base, media, False)
    path = str(asset.get("href") or "").split("?")[0].split("#")[0].rstrip("/").lower()
    for suffix, name in _SUFFIX.items():
        if path.endswith(suffix):
            return AssetFormat(_preview(name, asset), suffix, name in _READABLE)
    return AssetFormat("unknown", "no media type, no known suffix", None)


def _preview(name: str, asset: Mapping[str, Any]) -> str:
    roles = set(asset.get("roles") or ())
    if name in ("PNG", "JPEG", "WebP") and roles & _PREVIEW_ROLES:
        return f"{name} preview"
    return name


def has_readable_asset(assets: Mapping[str, Any]) -> bool:
    """Some asset is a GeoTIFF or JPEG 2000, or of a format that cannot be told (never claim
    what we don't know)."""
    return any(
        asset_format(a).readable is not False for a in assets.values() if isinstance(a, dict)
    )


def formats_found(assets: Mapping[str, Any]) -> dict[str, list[str]]:
    """'format (evidence)' → the asset keys that hold it, in the item's order."""
    found: dict[str, list[str]] = {}
    for key, asset in assets.items():
        if isinstance(asset, dict):
            f = asset_format(asset)
            found.setdefault(f"{f.name} ({f.evidence})", []).append(key)
    return found


def format_account(assets: Mapping[str, Any], keys: list[str] | None = None) -> str:
    """'JPEG 2000 (image/jp2): B02, B03, B04; XML (application/xml): metadata' for the given
    asset keys (default: all), each format's keys cut after four."""
    chosen = {k: assets[k] for k in (keys if keys is not None else list(assets)) if k in assets}
    parts = []
    for what, names in formats_found(chosen).items():
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        parts.append(f"{what}: {shown}")
    return "; ".join(parts) or "no assets"
