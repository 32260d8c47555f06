"""A product's layout written with zarr directly: groups, arrays, attributes and coordinates,
no data (the chunk tasks write that).

Why not ``xarray.Dataset.to_zarr(compute=False)``, as before: the driver only ever writes
metadata and a few coordinate vectors, yet xarray (with pandas and pyarrow, which it imports),
dask.array and rioxarray cost it ~80 MiB of resident memory for the whole run. The stores must
stay what xarray, rioxarray and GDAL read today, byte for byte, so this module writes exactly
what ``to_zarr`` and rioxarray's ``write_crs``/``write_transform`` wrote
(tests/test_layout_bytes.py writes a layout both ways and compares every key):

- a float variable's no-data value is CF's ``_FillValue``: in Zarr v3 the array's fill value is
  NaN and the attribute holds the value as xarray encodes it (base64 of a little-endian
  float64); in Zarr v2 the array's fill value is the value itself, no attribute;
- an integer variable's no-data value is the Zarr v3 fill value only (no ``_FillValue``: xarray
  would mask it); v2 arrays get none (``null``), so they read back as the integers written;
- every data variable names ``spatial_ref`` in ``grid_mapping`` and its non-dimension
  coordinates (sorted) in ``coordinates``;
- datetime64 coordinates are int64 ``seconds since 1970-01-01`` (the coarsest of
  milliseconds, microseconds, nanoseconds that keeps every value exact when seconds do not)
  with ``calendar: proleptic_gregorian``;
- dimensions are the v3 ``dimension_names`` or the v2 ``_ARRAY_DIMENSIONS`` attribute;
- coordinates keep zarr's default chunks and codecs; data variables carry their own; an
  object (string) coordinate is variable-length UTF-8, or float64 when empty (xarray's guess);
- ``spatial_ref`` is an int64 scalar (0, so no chunk is stored) whose attributes hold the CRS
  as CF grid-mapping attributes, GDAL's WKT (``spatial_ref``, ``crs_wkt``) and ``GeoTransform``.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec

GRID_MAPPING = "spatial_ref"
TIME_EPOCH = "1970-01-01"
# requested unit first, then the finer ones a value may need (coarsest that is exact wins)
_TIME_UNITS = (("seconds", 10**9), ("milliseconds", 10**6), ("microseconds", 10**3),
               ("nanoseconds", 1))


@dataclass(frozen=True)
class Variable:
    """One array of a layout as a reader decodes it. A coordinate has ``values`` (written with
    the layout); a data variable has none, only a shape (its chunks are the tasks' business).
    ``fill`` is the no-data value (floats: NaN when None); ``chunks`` and ``compressors``
    (Zarr v3 codecs) None leave the choice to zarr, as coordinates always did."""

    dims: tuple[str, ...]
    dtype: np.dtype
    shape: tuple[int, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    values: np.ndarray | None = None
    chunks: tuple[int, ...] | None = None
    fill: float | int | None = None
    compressors: tuple[Any, ...] | None = None

    @classmethod
    def coordinate(cls, dims: tuple[str, ...], values: np.ndarray, attrs: Mapping[str, Any],
                   chunks: tuple[int, ...] | None = None) -> Variable:
        return cls(dims, values.dtype, tuple(values.shape), dict(attrs), values, chunks)


@dataclass(frozen=True)
class Layout:
    """A group's arrays: coordinates and data variables, each in the order given."""

    coords: Mapping[str, Variable]
    data: Mapping[str, Variable]


def write_group(store: Path | Any, layout: Layout, *, attrs: Mapping[str, Any], crs: str,
                transform: Sequence[float], zarr_format: int = 3, path: str | None = None,
                mode: Literal["w", "w-"] = "w-") -> None:
    """Write ``layout`` as the group ``path`` of ``store`` (a folder, or a zarr store object):
    ``mode`` ``w-`` refuses an existing group (nothing is ever removed), ``w`` replaces what the
    group held. Georeferenced by ``crs`` and the GDAL-order affine ``transform``.

    The group is created with its attributes, then its arrays, each with its attributes, all
    at once (zarr's asynchronous API, :func:`pipeline.products.chunkio.run_all`): one metadata
    write per node, concurrently (a mosaic's 37 nodes took ~0.3 s one after another)."""
    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format is 2 or 3, not {zarr_format!r}")
    from pipeline.products.chunkio import run_all

    target = str(store) if isinstance(store, Path) else store
    fmt: Literal[2, 3] = 2 if zarr_format == 2 else 3
    grid_mapping = Variable((), np.dtype(np.int64), (), grid_mapping_attrs(crs, transform),
                            np.array(0, dtype=np.int64))
    coords = {**layout.coords, GRID_MAPPING: grid_mapping}
    data = {name: Variable(v.dims, v.dtype, v.shape, {**v.attrs, "grid_mapping": GRID_MAPPING},
                           v.values, v.chunks, v.fill, v.compressors)
            for name, v in layout.data.items()}
    dims = {d for v in (*coords.values(), *data.values()) for d in v.dims}
    # every array's arguments first (an encoding problem is raised before anything is written)
    arrays = [(name, *_array_args(var, (), fmt, name=name)) for name, var in coords.items()]
    for name, var in data.items():
        # CF: the coordinates that are not dimensions, on each variable they fit
        on = sorted(c for c, v in coords.items() if c not in dims and set(v.dims) <= set(var.dims))
        arrays.append((name, *_array_args(var, tuple(on), fmt, name=name)))
    (group,) = run_all([zarr.api.asynchronous.open_group(
        target, mode=mode, path=path, zarr_format=fmt, storage_options=None,
        use_consolidated=False, attributes={k: _attr_value(v) for k, v in attrs.items()})])
    run_all([_create(group, name, kwargs, values, overwrite=mode == "w")
             for name, kwargs, values in arrays])


async def _create(group: Any, name: str, kwargs: dict[str, Any], values: np.ndarray | None, *,
                  overwrite: bool) -> None:
    """One array, created in ``group`` (a zarr ``AsyncGroup``) with ``kwargs``
    (:func:`_array_args`: as xarray's ``to_zarr`` created it, attributes included), then its
    values (if any) written."""
    array = await group.create_array(name, overwrite=overwrite, config={}, **kwargs)
    if values is not None:
        await array.setitem(Ellipsis, values)


def _array_args(var: Variable, coordinates: tuple[str, ...], zarr_format: int, *,
                name: str) -> tuple[dict[str, Any], np.ndarray | None]:
    """``create_array``'s arguments for ``var`` as xarray's ``to_zarr`` would encode it (shape,
    dtype, fill value, chunks, codecs, dimension names, attributes) and the values to write."""
    attrs = dict(var.attrs)
    if coordinates:
        attrs["coordinates"] = " ".join(coordinates)
    dtype: Any = var.dtype
    values = var.values
    fill: Any = None
    if dtype.kind == "M":
        assert values is not None, f"{name}: a datetime variable needs its values"
        values, units = encode_times(values)
        attrs["units"] = units
        attrs["calendar"] = "proleptic_gregorian"
        dtype = np.dtype(np.int64)
    elif dtype.kind == "f":
        cf_fill = np.nan if var.fill is None else var.fill
        if zarr_format == 3:
            fill = np.nan
            attrs["_FillValue"] = base64.standard_b64encode(
                struct.pack("<d", float(cf_fill))).decode()
        else:
            fill = cf_fill
    elif dtype.kind in "iu":
        fill = var.fill if zarr_format == 3 else None
    elif dtype.kind == "O" and values is not None and values.size == 0:
        # xarray infers float64 for an empty object array (a cube without a slot yet)
        dtype, fill, values = np.dtype(np.float64), np.nan if zarr_format == 3 else None, None
    elif dtype.kind == "O":
        dtype = str  # variable-length UTF-8 strings
    kwargs: dict[str, Any] = {"shape": var.shape, "dtype": dtype, "fill_value": fill,
                              "chunks": var.chunks or "auto"}
    if var.compressors is not None:
        kwargs["compressors"] = (list(var.compressors) if zarr_format == 3
                                 else [v2_compressor(c) for c in var.compressors])
    if zarr_format == 3:
        kwargs["dimension_names"] = var.dims
    else:
        attrs["_ARRAY_DIMENSIONS"] = var.dims
    kwargs["attributes"] = {k: _attr_value(v) for k, v in attrs.items()}
    return kwargs, values


def encode_times(values: np.ndarray) -> tuple[np.ndarray, str]:
    """datetime64 ``values`` as int64 counts since the epoch: in seconds where every value is
    a whole second, else in the coarsest finer unit that keeps them exact (xarray's rule)."""
    ns = values.astype("datetime64[ns]").astype(np.int64)
    for unit, per in _TIME_UNITS:
        if not np.any(ns % per):
            return ns // per, f"{unit} since {TIME_EPOCH}"
    raise AssertionError("unreachable: nanoseconds divide every value")


def v2_compressor(codec: Any) -> Any:
    """The numcodecs compressor Zarr v2 takes for a v3 Blosc codec (same settings)."""
    import numcodecs

    if not isinstance(codec, BloscCodec):
        raise TypeError(f"no Zarr v2 equivalent known for {codec!r}")
    shuffle = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
               "bitshuffle": numcodecs.Blosc.BITSHUFFLE}[codec.shuffle.value]  # type: ignore[union-attr]
    return numcodecs.Blosc(cname=codec.cname.value, clevel=codec.clevel, shuffle=shuffle,
                           blocksize=codec.blocksize)


def grid_mapping_attrs(crs: str, transform: Sequence[float]) -> dict[str, Any]:
    """The attributes of ``spatial_ref`` as rioxarray writes them: pyproj's CF grid mapping of
    the CRS (as rasterio parses it), GDAL's WKT as ``spatial_ref`` and ``crs_wkt``, and the
    GDAL-order ``GeoTransform``; ``xarray.open_zarr(store).rio.crs`` and GDAL read them."""
    import pyproj
    from affine import Affine

    parsed = _rasterio_crs(crs)
    try:
        attrs: dict[str, Any] = pyproj.CRS.from_user_input(parsed).to_cf()
    except KeyError:  # rioxarray's behaviour: no CF form, WKT only
        attrs = {}
    wkt = parsed.to_wkt()
    attrs["spatial_ref"] = wkt
    attrs["crs_wkt"] = wkt
    attrs["GeoTransform"] = " ".join(str(v) for v in Affine(*transform[:6]).to_gdal())
    return attrs


def _rasterio_crs(crs: str) -> Any:
    """rasterio's CRS of ``crs``, pyproj's WKT where rasterio cannot parse it (rioxarray's
    ``crs_from_user_input``, GDAL 3)."""
    import pyproj
    import rasterio.crs
    from rasterio.errors import CRSError

    try:
        return rasterio.crs.CRS.from_user_input(crs)
    except CRSError:
        return rasterio.crs.CRS.from_wkt(pyproj.CRS.from_user_input(crs).to_wkt())


def _attr_value(value: Any) -> Any:
    """An attribute value as xarray stores it: numpy arrays as lists, numpy scalars as Python
    scalars; anything else is zarr's JSON encoder's."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
