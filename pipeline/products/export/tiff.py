"""Write a product window by window to a tiled GeoTIFF, and make a Cloud-Optimized GeoTIFF of it
(GDAL's COG driver builds the internal overviews; rio-cogeo's validator checks the result)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import RunError
from pipeline.products.export import Source, _nodata

MAX_TILE = 512  # GeoTIFF tile side (pixels); smaller only where a product is smaller than this
WINDOW_TILES = 2  # a window read and written at once is 2×2 tiles: 1024² × bands at most
TAGS = ("aquila:label", "aquila:product", "aquila:status", "aquila:run_id", "aquila:created",
        "aquila:audience", "aquila:method", "title")


def tiff_tags(src: Source, slot: tuple[int, str] | None) -> dict[str, str]:
    """The GeoTIFF metadata: the label and what the pixels are (JSON for structured values).
    Names are ``AQUILA_LABEL`` etc.: GDAL splits a metadata item at its first ``:`` or ``=``,
    so the attributes' own names (``aquila:label``) would not survive."""
    attrs = src.ds.attrs
    tags = {tag_name(k): _text(attrs.get(k)) for k in TAGS if k in attrs or k == "aquila:label"}
    tags["AQUILA_EXPORTED_FROM"] = src.name
    if slot is not None:
        tags["AQUILA_TIME"], tags["AQUILA_TIME_INDEX"] = slot[1], str(slot[0])
        labels = attrs.get("aquila:slot_labels")
        if isinstance(labels, list) and slot[0] < len(labels):
            tags["AQUILA_SLOT_LABEL"] = _text(labels[slot[0]])
    return tags


def tag_name(attribute: str) -> str:
    """``aquila:label`` → ``AQUILA_LABEL``: the GeoTIFF metadata item of a product attribute."""
    return attribute.replace(":", "_").upper()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def grid_of(ds: Any) -> tuple[Any, Any]:
    """(CRS, affine transform) from ``spatial_ref``'s ``crs_wkt`` and the pixel-centre x/y
    coordinates (the transform's origin is the outer corner of the first pixel)."""
    from affine import Affine
    from rasterio.crs import CRS

    x, y = ds["x"].values, ds["y"].values
    if len(x) < 2 or len(y) < 2:
        gt = [float(v) for v in str(ds["spatial_ref"].attrs["GeoTransform"]).split()]
        return CRS.from_wkt(ds["spatial_ref"].attrs["crs_wkt"]), Affine.from_gdal(*gt)
    dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
    transform = Affine(dx, 0.0, float(x[0]) - dx / 2, 0.0, dy, float(y[0]) - dy / 2)
    return CRS.from_wkt(ds["spatial_ref"].attrs["crs_wkt"]), transform


def tile_size(shape: tuple[int, int]) -> int:
    """512, or the largest power of two (≥ 16) below the product's longer side: a COG gets
    overviews until the image fits one tile, so a small product still gets one level."""
    longest = max(shape)
    return max(16, min(MAX_TILE, 2 ** max(0, math.ceil(math.log2(max(longest, 2))) - 1)))


def windows(shape: tuple[int, int], step: int) -> Iterator[tuple[slice, slice]]:
    """(y, x) slices of ``step`` pixels, row by row; whole tiles so none is written twice."""
    for r in range(0, shape[0], step):
        for c in range(0, shape[1], step):
            yield slice(r, min(r + step, shape[0])), slice(c, min(c + step, shape[1]))


def write_tiff(ds: Any, path: Path, *, tags: Mapping[str, str], cog: bool,
               source: str) -> None:
    """A tiled GeoTIFF, window by window; for a COG, then copied by GDAL's COG driver (which
    builds the overviews) and validated: an invalid COG is an error."""
    import rasterio

    names = list(ds.data_vars)
    first = ds[names[0]]
    shape = (ds.sizes["y"], ds.sizes["x"])
    tile = tile_size(shape)
    plain = path.with_name(path.name + ".plain.tif") if cog else path
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        _write_tiled(ds, plain, tags=tags, tile=tile, compress="deflate" if not cog else "zstd",
                     source=source)
        if cog:
            _to_cog(plain, path, tile=tile, resampling="average"
                    if first.dtype.kind == "f" else "nearest")
            # safe: ``path`` is staged()'s temporary name (our pid and random bytes), so
            # ``plain`` beside it is a file this call just wrote, never the user's OUT
            plain.unlink()
            check_cog(path)


def _write_tiled(ds: Any, path: Path, *, tags: Mapping[str, str], tile: int,
                 compress: str, source: str) -> None:
    import rasterio
    from rasterio.windows import Window

    names = list(ds.data_vars)
    first = ds[names[0]]
    crs, transform = grid_of(ds)
    height, width = ds.sizes["y"], ds.sizes["x"]
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": len(names),
        "dtype": str(first.dtype), "crs": crs, "transform": transform,
        "nodata": _nodata(first), "tiled": True, "blockxsize": tile, "blockysize": tile,
        "compress": compress, "predictor": 3 if first.dtype.kind == "f" else 2,
        "BIGTIFF": "IF_SAFER",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.update_tags(**tags)
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
            band = {k: _text(v) for k, v in ds[name].attrs.items()
                    if k in ("long_name", "units")}
            if band:
                dst.update_tags(i, **band)
        for ys, xs in windows((height, width), tile * WINDOW_TILES):
            block = read_window(ds, names, ys, xs, source)
            dst.write(block, window=Window(xs.start, ys.start, xs.stop - xs.start,
                                           ys.stop - ys.start))


def read_window(ds: Any, names: Sequence[str], ys: slice, xs: slice, source: str) -> Any:
    """(band, y, x) values of one window; a chunk that cannot be decoded names itself."""
    try:
        return np.stack([np.asarray(ds[n].isel(y=ys, x=xs).values) for n in names])
    # what zarr's codecs raise on damaged bytes, and the store's own I/O errors (a chunk file it
    # may not read): the product is named, not OUT (the caller reports OSErrors as OUT's)
    except (RuntimeError, ValueError, OSError) as exc:
        raise RunError(f"reading {source} (y {ys.start}:{ys.stop}, x {xs.start}:{xs.stop}) "
                       f"failed: {exc}; the store may be damaged: rebuild it, then export",
                       reason="store_unreadable") from exc


def _to_cog(plain: Path, path: Path, *, tile: int, resampling: str) -> None:
    """GDAL's COG driver: overviews (into a temporary file beside ``path``), then the
    tiles in COG order; the source is read block by block."""
    from rasterio.shutil import copy

    copy(str(plain), str(path), driver="COG", BLOCKSIZE=tile, COMPRESS="DEFLATE",
         PREDICTOR="YES", OVERVIEW_RESAMPLING=resampling.upper(), BIGTIFF="IF_SAFER")


def check_cog(path: Path) -> None:
    from rio_cogeo.cogeo import cog_validate

    valid, errors, _warnings = cog_validate(str(path), quiet=True)
    if not valid:
        raise RunError(f"the COG written for export is not valid ({'; '.join(errors)}); "
                       "nothing was written: please report it", reason="cog_invalid")
