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

What a product holds is described here (:func:`cube_arrays`, :func:`mosaic_arrays`, a
:class:`~pipeline.products.layout.Layout`) and written with zarr directly by
:mod:`pipeline.products.layout`, so the driver never imports xarray, dask.array or pandas for
it; :func:`cube_layout` and :func:`mosaic_layout` give the same description as a lazy xarray
dataset for the API (:mod:`pipeline.api.dataset`), importing xarray only then.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from pipeline.plan.chunks import TimeSlot
from pipeline.plan.grid import TargetGrid
from pipeline.plan.methods import mosaic_layers
from pipeline.products.layout import TIME_EPOCH, Layout, Variable, write_group
from pipeline.products.overviews import (
    level_path,
    level_shape,
    level_transform,
    levels_for,
    multiscales,
)
from pipeline.products.publish import PRODUCT_MARKER

if TYPE_CHECKING:
    import xarray as xr

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


def _base_coords(grid: TargetGrid) -> dict[str, Variable]:
    y, x = grid.coords()
    y_attrs, x_attrs = _axis_attrs(grid)
    return {"y": Variable.coordinate(("y",), y, y_attrs),
            "x": Variable.coordinate(("x",), x, x_attrs)}


def _product_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Root attributes every product has: CF's Conventions and what made it."""
    from pipeline._version import __version__

    return {"Conventions": CF_CONVENTIONS, "source": f"Aquila {__version__}", **attrs}


def _write_layout(
    layout: Layout, grid: TargetGrid, store: Path | Any, attrs: Mapping, *, kind: str,
    zarr_format: int = 3,
) -> None:
    """Write the layout into ``store``, which must be new or an empty directory (a run's build
    directory) or an empty zarr store object (a bucket product's run branch): mode ``w-``
    refuses to overwrite, so nothing is ever removed here. ``zarr_format`` 2 writes Zarr v2
    (numcodecs Blosc, the same settings) for GDAL < 3.11."""
    levels = levels_for(grid.shape, grid.chunk)
    pyramid = multiscales(grid.shape, grid.transform, levels) if levels else {}
    write_group(store, layout, attrs=_product_attrs({**attrs, **pyramid, PRODUCT_MARKER: kind}),
                crs=grid.crs, transform=grid.transform, zarr_format=zarr_format)
    for k in levels:
        write_group(store, _overview(layout, grid, k), attrs={"aquila:overview_factor": 2**k},
                    crs=grid.crs, transform=level_transform(grid.transform, k),
                    zarr_format=zarr_format, path=level_path(k))


def _overview(layout: Layout, grid: TargetGrid, k: int) -> Layout:
    """Level ``k`` of the pyramid (:mod:`pipeline.products.overviews`): every data variable at
    1/2**k resolution in chunks of ``chunk // 2**k`` (one slot deep), its own pixel-centre
    coordinates; the other coordinates (time, collection) as they are."""
    ny, nx = level_shape(grid.shape, k)
    c = grid.chunk // 2**k
    t = level_transform(grid.transform, k)
    coords = {
        "y": Variable.coordinate(("y",), t[5] + t[4] * (np.arange(ny) + 0.5),
                                 layout.coords["y"].attrs),
        "x": Variable.coordinate(("x",), t[2] + t[0] * (np.arange(nx) + 0.5),
                                 layout.coords["x"].attrs),
        **{name: v for name, v in layout.coords.items() if name not in ("x", "y")},
    }
    data = {
        name: replace(v, shape=(*v.shape[:-2], ny, nx), chunks=(*(1,) * (len(v.dims) - 2), c, c))
        for name, v in layout.data.items()
    }
    return Layout(coords, data)


def create_group(
    zstore: Any, group: str, layout: Layout, grid: TargetGrid, attrs: Mapping
) -> None:
    """Write a product's layout (metadata and coordinates, no data) as ``group`` of a zarr
    store object (e.g. an Icechunk session's store), replacing what the group held."""
    write_group(zstore, layout, attrs=_product_attrs(attrs), crs=grid.crs,
                transform=grid.transform, zarr_format=3, path=group, mode="w")


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
    _write_layout(cube_arrays(grid, bands, slots, quantity=quantity), grid, store, attrs,
                  kind="cube", zarr_format=zarr_format)


def cube_arrays(
    grid: TargetGrid, bands: Sequence[str], slots: Sequence[TimeSlot], *,
    quantity: str = "reflectance",
) -> Layout:
    """The cube's arrays: a float32 (time, y, x) variable per band in chunks of one slot,
    NaN = no data; ``time`` (the slot's mean acquisition time) and ``collection`` per slot."""
    ny, nx = grid.shape
    c = grid.chunk
    coords = _base_coords(grid)
    times = np.array([s.time.replace(tzinfo=None) for s in slots], dtype="datetime64[ns]")
    coords["time"] = Variable.coordinate(
        ("time",), times, {"standard_name": "time", "axis": "T",
                           "long_name": "acquisition time of the slot's scenes"})
    coords["collection"] = Variable.coordinate(
        ("time",), np.array([s.collection for s in slots], dtype=object),
        {"long_name": "STAC collection of the slot's scenes"})
    data = {
        b: Variable(("time", "y", "x"), np.dtype(np.float32), (len(slots), ny, nx),
                    _band_attrs(b, quantity), chunks=(1, c, c), fill=np.nan,
                    compressors=(COMPRESSOR,))
        for b in bands
    }
    return Layout(coords, data)


def cube_layout(
    grid: TargetGrid, bands: Sequence[str], slots: Sequence[TimeSlot], *,
    quantity: str = "reflectance",
) -> tuple[xr.Dataset, dict]:
    """The cube's dataset (lazy, nothing computed) and its encoding."""
    return _dataset(cube_arrays(grid, bands, slots, quantity=quantity))


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
    layout = mosaic_arrays(grid, bands, method=method, layers=layers, quantity=quantity)
    _write_layout(layout, grid, store, attrs, kind=f"mosaic ({method})", zarr_format=zarr_format)


def mosaic_arrays(
    grid: TargetGrid, bands: Sequence[str], *, method: str, layers: Sequence[str] = (),
    quantity: str = "reflectance",
) -> Layout:
    """The mosaic's arrays: a float32 (y, x) variable per band (NaN = no data), ``count``
    (uint16, 0) and the lineage ``layers`` (:data:`_LAYERS`), all in chunks of the grid's."""
    ny, nx = grid.shape
    c = grid.chunk
    data: dict[str, Variable] = {
        b: Variable(("y", "x"), np.dtype(np.float32), (ny, nx),
                    {**_band_attrs(b, quantity, f" ({method} mosaic)"),
                     # CF: the lineage layers that describe these values
                     "ancillary_variables": " ".join(["count", *layers])},
                    chunks=(c, c), fill=np.nan, compressors=(COMPRESSOR,))
        for b in bands
    }
    data["count"] = Variable(("y", "x"), np.dtype(np.uint16), (ny, nx),
                             {"long_name": "valid observations per pixel", "units": "1"},
                             chunks=(c, c), fill=0, compressors=(COMPRESSOR,))
    for layer in layers:
        dtype, fill, text = _LAYERS[layer]
        data[layer] = Variable(("y", "x"), np.dtype(dtype), (ny, nx),
                               {"long_name": text, "units": "1"}, chunks=(c, c), fill=fill,
                               compressors=(COMPRESSOR,))
    return Layout(_base_coords(grid), data)


def mosaic_layout(
    grid: TargetGrid, bands: Sequence[str], *, method: str, layers: Sequence[str] = (),
    quantity: str = "reflectance",
) -> tuple[xr.Dataset, dict]:
    """The mosaic's dataset (lazy, nothing computed) and its encoding."""
    return _dataset(mosaic_arrays(grid, bands, method=method, layers=layers, quantity=quantity))


def _dataset(layout: Layout) -> tuple[xr.Dataset, dict]:
    """``layout`` as a lazy xarray dataset (each data variable a dask array of its no-data
    value) and the ``to_zarr`` encoding that would write it as :func:`write_group` does: the
    API's view of a product. xarray and dask.array are imported here, for the API only."""
    import dask.array as da
    import xarray as xr

    coords = {name: (v.dims, v.values, dict(v.attrs)) for name, v in layout.coords.items()}
    data: dict[str, Any] = {}
    enc: dict[str, Any] = {}
    for name, v in layout.data.items():
        data[name] = (v.dims, da.full(v.shape, v.fill, dtype=v.dtype, chunks=v.chunks),
                      dict(v.attrs))
        key = "_FillValue" if v.dtype.kind == "f" else "fill_value"
        enc[name] = {"chunks": v.chunks, "compressors": list(v.compressors or ()), key: v.fill}
    for name, v in layout.coords.items():
        e: dict[str, Any] = {}
        if v.dtype.kind == "M":
            e.update(units=f"seconds since {TIME_EPOCH}", dtype="int64")
        if v.chunks is not None:
            e["chunks"] = v.chunks
        if e:
            enc[name] = e
    return xr.Dataset(data, coords=coords), enc


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
    cube = cube_arrays(grid, outputs.bands, slots, quantity=outputs.quantity)
    c = grid.chunk
    cube = Layout(
        # one chunk for years of nights
        {name: replace(v, chunks=(4096,)) if name in ("time", "collection") else v
         for name, v in cube.coords.items()},
        {b: replace(v, chunks=(time_block, c, c)) for b, v in cube.data.items()},
    )
    create_group(zstore, NIGHTLY_CUBE, cube, grid, attrs)
    for m, name in zip(outputs.mosaics, groups, strict=True):
        layers = mosaic_layers(m.method, blend_width=m.blend_width)
        layout = mosaic_arrays(grid, outputs.bands, method=m.method, layers=layers,
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
