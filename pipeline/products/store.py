"""The store layout: Zarr v3 cube (time, y, x) and mosaic (y, x), one variable per band.

Stores are created by the driver (metadata and coordinates only, nothing computed) in a build
directory of the run's own (pipeline/products/publish.py);
tasks then write whole chunks of their own
region; the driver records lineage in the attributes, then publishes the build in one swap.
Every store carries its kind in the root attribute ``aquila:product``, which is how a later run
knows the folder is Aquila's to replace.
Float32 reflectance, NaN = no data (also the fill value, so chunks never written read as NaN).
Coordinates are pixel centres; the CRS is a CF ``spatial_ref`` variable so that
``xarray.open_zarr(store).rio.crs`` returns it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from pipeline.plan.chunks import TimeSlot
from pipeline.plan.grid import TargetGrid
from pipeline.plan.methods import mosaic_layers
from pipeline.products.overviews import (
    level_path,
    level_shape,
    level_transform,
    levels_for,
    multiscales,
)
from pipeline.products.publish import PRODUCT_MARKER

# lz4 measured ~15 % faster than zstd for this job at similar size (see LESSONS.md)
COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


CF_CONVENTIONS = "CF-1.8"
QUANTITIES = {  # radiometry.target -> (long name, units, CF standard_name or None)
    # reflectance: CF names the level (surface_ or toa_bidirectional_reflectance), which a
    # product mixing providers does not know per pixel; so no standard_name is claimed for it
    "reflectance": ("reflectance", "1", None),
    "radiance": ("radiance", "W m-2 sr-1 um-1", "toa_outgoing_radiance_per_unit_wavelength"),
}


def _axis_attrs(grid: TargetGrid) -> tuple[dict[str, str], dict[str, str]]:
    """CF attributes of the y and x coordinates: projected metres or geographic degrees."""
    from pyproj import CRS

    crs = CRS.from_user_input(grid.crs)
    if crs.is_geographic:
        return ({"standard_name": "latitude", "units": "degrees_north", "axis": "Y",
                 "long_name": "latitude (pixel centre)"},
                {"standard_name": "longitude", "units": "degrees_east", "axis": "X",
                 "long_name": "longitude (pixel centre)"})
    unit = crs.axis_info[0].unit_name if crs.axis_info else "metre"
    units = "m" if unit in ("metre", "meter") else unit
    return ({"standard_name": "projection_y_coordinate", "units": units, "axis": "Y",
             "long_name": "y (pixel centre)"},
            {"standard_name": "projection_x_coordinate", "units": units, "axis": "X",
             "long_name": "x (pixel centre)"})


def _band_attrs(band: str, quantity: str, what: str = "") -> dict[str, str]:
    name, units, standard = QUANTITIES.get(quantity, QUANTITIES["reflectance"])
    attrs = {"long_name": f"{band} {name}{what}", "units": units}
    if standard:
        attrs["standard_name"] = standard
    return attrs


def _base_dataset(grid: TargetGrid) -> dict[str, Any]:
    y, x = grid.coords()
    y_attrs, x_attrs = _axis_attrs(grid)
    return {"y": ("y", y, y_attrs), "x": ("x", x, x_attrs)}


def _product_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Root attributes every product has: CF's Conventions and what made it."""
    from pipeline._version import __version__

    return {"Conventions": CF_CONVENTIONS, "source": f"Aquila {__version__}", **attrs}


def _georeferenced(
    ds: xr.Dataset, grid: TargetGrid, attrs: Mapping, transform: Sequence[float] | None = None
) -> xr.Dataset:
    from affine import Affine

    ds = ds.rio.write_crs(grid.crs)
    ds = ds.rio.write_transform(Affine(*(transform or grid.transform)[:6]))
    for name in ds.data_vars:
        if name == "spatial_ref":
            continue
        ds[name].attrs["grid_mapping"] = "spatial_ref"
        ds[name].encoding.pop("grid_mapping", None)
    ds.attrs.update(attrs)
    return ds


def _write_layout(
    ds: xr.Dataset, grid: TargetGrid, store: Path | Any, encoding: dict, attrs: Mapping, *,
    kind: str, zarr_format: int = 3,
) -> None:
    """Write the layout into ``store``, which must be new or an empty directory (a run's build
    directory) or an empty zarr store object (a bucket product's run branch): mode ``w-``
    refuses to overwrite, so nothing is ever removed here. ``zarr_format`` 2 writes Zarr v2
    (numcodecs Blosc, the same settings) for GDAL < 3.11."""
    levels = levels_for(grid.shape, grid.chunk)
    pyramid = multiscales(grid.shape, grid.transform, levels) if levels else {}
    ds = _georeferenced(ds, grid, _product_attrs({**attrs, **pyramid, PRODUCT_MARKER: kind}))
    target = str(store) if isinstance(store, Path) else store
    ds.to_zarr(target, compute=False, mode="w-", encoding=_for_format(encoding, zarr_format),
               zarr_format=zarr_format, consolidated=False)
    for k in levels:
        level, level_encoding = _overview_layout(ds, encoding, grid, k)
        level.to_zarr(target, group=level_path(k), compute=False, mode="w-",
                      encoding=_for_format(level_encoding, zarr_format), zarr_format=zarr_format,
                      consolidated=False)


def _for_format(encoding: Mapping[str, Any], zarr_format: int) -> dict[str, Any]:
    """``encoding`` for ``zarr_format``: v2 takes numcodecs compressors, not v3 codecs."""
    if zarr_format == 3:
        return dict(encoding)
    import numcodecs

    v2 = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    out: dict[str, Any] = {}
    for name, e in encoding.items():
        e = dict(e)
        if "compressors" in e:
            e["compressors"] = [v2]
        if "fill_value" in e:
            # v2 has one fill value, which xarray reads as CF's _FillValue and masks (an int
            # layer would come back as floats): integer layers get none (null), so they read
            # back as the integers written; every chunk of a run's product is written whole
            e.pop("fill_value")
            e["_FillValue"] = None
        out[name] = e
    return out


def _overview_layout(
    ds: xr.Dataset, encoding: Mapping[str, Any], grid: TargetGrid, k: int
) -> tuple[xr.Dataset, dict]:
    """Level ``k`` of the pyramid (:mod:`pipeline.products.overviews`): every variable of ``ds``
    at 1/2**k resolution in chunks of ``chunk // 2**k``, its own pixel-centre coordinates."""
    f = 2**k
    ny, nx = level_shape(grid.shape, k)
    c = grid.chunk // f
    t = level_transform(grid.transform, k)
    coords: dict[str, Any] = {
        "y": ("y", t[5] + t[4] * (np.arange(ny) + 0.5), ds["y"].attrs),
        "x": ("x", t[2] + t[0] * (np.arange(nx) + 0.5), ds["x"].attrs),
    }
    for name, coord in ds.coords.items():
        if name not in ("x", "y", "spatial_ref"):
            coords[str(name)] = coord.variable
    data: dict[str, Any] = {}
    enc: dict[str, Any] = {}
    for name, var in ds.data_vars.items():
        if name == "spatial_ref":
            continue
        e = dict(encoding[str(name)])
        fill = e.get("_FillValue", e.get("fill_value", 0))
        shape = (*var.shape[:-2], ny, nx)
        chunks = (*(1,) * (var.ndim - 2), c, c)
        attrs = {a: v for a, v in var.attrs.items() if a != "grid_mapping"}
        data[str(name)] = (var.dims, da.full(shape, fill, dtype=var.dtype, chunks=chunks), attrs)
        enc[str(name)] = {**e, "chunks": chunks}
    for name in ("time",):
        if name in encoding and name in coords:
            enc[name] = dict(encoding[name])
    level = xr.Dataset(data, coords=coords)
    return _georeferenced(level, grid, {"aquila:overview_factor": f}, transform=t), enc


def create_group(
    zstore: Any, group: str, layout: tuple[xr.Dataset, dict], grid: TargetGrid, attrs: Mapping
) -> None:
    """Write a product's layout (metadata and coordinates, no data) as ``group`` of a zarr
    store object (e.g. an Icechunk session's store), replacing what the group held."""
    ds, encoding = layout
    _georeferenced(ds, grid, _product_attrs(attrs)).to_zarr(
        zstore, group=group, compute=False, mode="w", encoding=encoding, zarr_format=3,
        consolidated=False,
    )


def create_cube(
    store: Path | Any,
    grid: TargetGrid,
    bands: Sequence[str],
    slots: Sequence[TimeSlot],
    *,
    attrs: Mapping[str, Any],
    quantity: str = "reflectance",
    zarr_format: int = 3,
) -> None:
    """An empty cube: (time, y, x) float32 per band, chunks (1, chunk, chunk)."""
    ds, encoding = cube_layout(grid, bands, slots, quantity=quantity)
    _write_layout(ds, grid, store, encoding, attrs, kind="cube", zarr_format=zarr_format)


def cube_layout(
    grid: TargetGrid, bands: Sequence[str], slots: Sequence[TimeSlot], *,
    quantity: str = "reflectance",
) -> tuple[xr.Dataset, dict]:
    """The cube's dataset (lazy, nothing computed) and its encoding."""
    ny, nx = grid.shape
    c = grid.chunk
    coords = _base_dataset(grid)
    times = np.array([s.time.replace(tzinfo=None) for s in slots], dtype="datetime64[ns]")
    coords["time"] = ("time", times, {"standard_name": "time", "axis": "T",
                                      "long_name": "acquisition time of the slot's scenes"})
    coords["collection"] = ("time", np.array([s.collection for s in slots], dtype=object),
                            {"long_name": "STAC collection of the slot's scenes"})
    shape = (len(slots), ny, nx)
    data = {
        b: (
            ("time", "y", "x"),
            da.full(shape, np.nan, dtype=np.float32, chunks=(1, c, c)),
            _band_attrs(b, quantity),
        )
        for b in bands
    }
    enc = {
        b: {"chunks": (1, c, c), "compressors": [COMPRESSOR], "_FillValue": np.nan} for b in bands
    }
    enc["time"] = {"units": "seconds since 1970-01-01", "dtype": "int64"}
    return xr.Dataset(data, coords=coords), enc


_LAYERS = {  # lineage layer -> (dtype, fill value, description)
    "source": (np.int32, -1, "cube time slot index of the chosen observation (-1: none); "
               "the 'sources' attribute maps it to time, collection, provider and scene ids"),
    "score": (np.float32, np.nan, "best-available-pixel score of the chosen observation"),
    "weight": (np.float32, np.nan, "share of the main source in a seam-blended pixel (0..1)"),
}


def create_mosaic(
    store: Path | Any,
    grid: TargetGrid,
    bands: Sequence[str],
    *,
    method: str,
    layers: Sequence[str] = (),
    attrs: Mapping[str, Any],
    quantity: str = "reflectance",
    zarr_format: int = 3,
) -> None:
    """An empty mosaic: (y, x) float32 per band, ``count``, and the lineage ``layers``."""
    ds, encoding = mosaic_layout(grid, bands, method=method, layers=layers, quantity=quantity)
    _write_layout(ds, grid, store, encoding, attrs, kind=f"mosaic ({method})",
                  zarr_format=zarr_format)


def mosaic_layout(
    grid: TargetGrid, bands: Sequence[str], *, method: str, layers: Sequence[str] = (),
    quantity: str = "reflectance",
) -> tuple[xr.Dataset, dict]:
    """The mosaic's dataset (lazy, nothing computed) and its encoding."""
    ny, nx = grid.shape
    c = grid.chunk
    data: dict[str, Any] = {
        b: (
            ("y", "x"),
            da.full((ny, nx), np.nan, dtype=np.float32, chunks=(c, c)),
            {**_band_attrs(b, quantity, f" ({method} mosaic)"),
             # CF: the lineage layers that describe these values
             "ancillary_variables": " ".join(["count", *layers])},
        )
        for b in bands
    }
    enc: dict[str, Any] = {
        b: {"chunks": (c, c), "compressors": [COMPRESSOR], "_FillValue": np.nan} for b in bands
    }
    data["count"] = (
        ("y", "x"),
        da.zeros((ny, nx), dtype=np.uint16, chunks=(c, c)),
        {"long_name": "valid observations per pixel", "units": "1"},
    )
    enc["count"] = {"chunks": (c, c), "compressors": [COMPRESSOR], "fill_value": 0}
    for layer in layers:
        dtype, fill, text = _LAYERS[layer]
        data[layer] = (("y", "x"), da.full((ny, nx), fill, dtype=dtype, chunks=(c, c)),
                       {"long_name": text, "units": "1"})
        key = "_FillValue" if np.issubdtype(dtype, np.floating) else "fill_value"
        enc[layer] = {"chunks": (c, c), "compressors": [COMPRESSOR], key: fill}
    return xr.Dataset(data, coords=_base_dataset(grid)), enc


def write_attrs(store: Path, attrs: Mapping[str, Any]) -> None:
    """Record lineage and run metadata once the chunks are written (JSON-safe values), then
    consolidate the metadata so that a plain ``xarray.open_zarr(store)`` opens it in one read."""
    group = zarr.open_group(str(store), mode="r+")
    group.attrs.update(json.loads(json.dumps(attrs, default=str)))
    with warnings.catch_warnings():
        # zarr-python warns that consolidated metadata is not (yet) in the v3 spec
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        zarr.consolidate_metadata(str(store))


def write_root_attrs(zstore: Any, attrs: Mapping[str, Any]) -> None:
    """:func:`write_attrs` for a zarr store object (a bucket product's Icechunk session): one
    metadata write, no consolidated metadata (Icechunk's snapshot lists the nodes itself)."""
    zarr.open_group(zstore, mode="r+").update_attributes(
        json.loads(json.dumps(dict(attrs), default=str)))


# --------------------------------------------------------------------------- nightly stores

NIGHTLY_CUBE = "cube"  # the cube's group in a nightly store; each mosaic's is its store's stem


def create_nightly_groups(
    zstore: Any,
    grid: TargetGrid,
    outputs: Any,
    groups: Sequence[str],
    slots: Sequence[TimeSlot],
    *,
    time_block: int,
    attrs: Mapping[str, Any],
) -> None:
    """A new (or rebuilt) nightly store's layout: the cube, chunked ``time_block`` slots deep
    (a chunk's history is read back a block at a time), and one group per mosaic."""
    ds, enc = cube_layout(grid, outputs.bands, slots, quantity=outputs.quantity)
    for name in ("time", "collection"):  # one chunk for years of nights
        enc.setdefault(name, {})["chunks"] = (4096,)
    c = grid.chunk
    ds = ds.assign({b: ds[b].chunk({"time": time_block}) for b in outputs.bands})
    for b in outputs.bands:
        enc[b]["chunks"] = (time_block, c, c)
    create_group(zstore, NIGHTLY_CUBE, (ds, enc), grid, attrs)
    for m, name in zip(outputs.mosaics, groups, strict=True):
        layers = mosaic_layers(m.method, blend_width=m.blend_width)
        layout = mosaic_layout(grid, outputs.bands, method=m.method, layers=layers,
                               quantity=outputs.quantity)
        create_group(zstore, name, layout, grid, attrs)


def resize_nightly_cube(
    zstore: Any, grid: TargetGrid, bands: Sequence[str], slots: Sequence[TimeSlot]
) -> None:
    """Tonight's time axis on an existing nightly cube: every band resized, the time and
    collection coordinates rewritten (chunks are the tasks' business)."""
    group = zarr.open_group(zstore, path=NIGHTLY_CUBE, mode="r+")
    cube = {name: _array(group, name) for name in (*bands, "time", "collection")}
    n = len(slots)
    ny, nx = grid.shape
    for b in bands:
        if cube[b].shape[0] != n:
            cube[b].resize((n, ny, nx))
    cube["time"].resize((n,))
    cube["time"][:] = np.array([int(s.time.timestamp()) for s in slots], np.int64)
    cube["collection"].resize((n,))
    cube["collection"][:] = np.array([s.collection for s in slots], dtype=object)


def write_group_attrs(zstore: Any, attrs: Mapping[str, Mapping[str, Any]]) -> None:
    """Add attributes (JSON-safe values) to groups of a zarr store object, by group path: one
    metadata write per group (``attrs.update`` writes the group's zarr.json once per key: 40
    writes, 0.12 s a night)."""
    root = zarr.open_group(zstore, mode="r+")
    for name, values in attrs.items():
        root[name].update_attributes(json.loads(json.dumps(dict(values), default=str)))


def nightly_layout(grid: TargetGrid, outputs: Any, groups: Sequence[str]) -> dict[str, Any]:
    """What a nightly store's arrays are laid out by (a change needs a rebuild), JSON-safe."""
    return json.loads(json.dumps({
        "grid": {
            "crs": grid.crs,
            "transform": list(grid.transform),
            "shape": list(grid.shape),
            "chunk": grid.chunk,
        },
        "bands": list(outputs.bands),
        "resampling": outputs.resampling,
        "radiometry": {
            "quantity": outputs.quantity,
            "harmonize_to": outputs.harmonize_to,
            "mask": list(outputs.masking.classes),
            "dilate": outputs.masking.dilate,
        },
        "mosaics": [
            {
                "group": g,
                "method": m.method,
                "q": m.q,
                "priority": list(m.priority),
                "key": m.key,
                "weights": dict(m.weights),
                "blend_width": m.blend_width,
            }
            for g, m in zip(groups, outputs.mosaics, strict=True)
        ],
    }, default=str))


def _array(group: Any, name: str) -> Any:
    node = group[name]
    assert isinstance(node, zarr.Array), f"{name} in {group.store} is not an array"
    return node
