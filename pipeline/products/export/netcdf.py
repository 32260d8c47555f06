"""Write a product as CF netCDF-4: the ``spatial_ref`` grid mapping, values as stored, structured
attributes as JSON strings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import RunError


def write_netcdf(ds: Any, path: Path, *, source: str, slot: tuple[int, str] | None) -> None:
    """netCDF-4 with CF conventions: the ``spatial_ref`` grid mapping (``crs_wkt``), values as
    stored, structured attributes as JSON strings (netCDF holds only strings and numbers)."""
    import dask

    out = ds.copy()
    for name in list(out.variables):
        out[name] = _cf_variable(out[name])
    for axis in ("x", "y"):
        out[axis].attrs.setdefault("standard_name", f"projection_{axis}_coordinate")
        out[axis].attrs.setdefault("axis", axis.upper())
    out.attrs = {k: _attr(v) for k, v in ds.attrs.items()} | {
        "Conventions": "CF-1.8", "aquila:exported_from": source}
    if slot is not None:
        out.attrs["aquila:time_index"] = slot[0]
    encoding = {name: _netcdf_encoding(out[name], ds[name]) for name in out.data_vars}
    try:
        # one thread: with several, a chunk that fails to decode ends the write while other
        # tasks still run, and one of them reopens the file (xarray's file manager) after the
        # temporary file was removed, leaving it behind
        with dask.config.set(scheduler="synchronous"):
            out.to_netcdf(path, engine="netcdf4", format="NETCDF4", encoding=encoding)
    except (RuntimeError, ValueError) as exc:  # a damaged chunk, or netCDF refusing a value
        raise RunError(f"exporting {source} to netCDF failed: {exc}",
                       reason="export_failed") from exc


def _cf_variable(var: Any) -> Any:
    """One variable without its Zarr encoding, fill in ``encoding`` (set by the caller),
    attributes netCDF can hold, strings as plain Python strings (netCDF4 has no StringDType)."""
    attrs = {k: _attr(v) for k, v in var.attrs.items() if k != "_FillValue"}
    if var.dtype.kind in "TO":  # small 1-D labels (a cube's collection per slot): loaded
        var = var.copy(data=np.array([str(v) for v in np.ravel(var.values)]).reshape(var.shape))
    var = var.copy(deep=False)
    var.attrs, var.encoding = attrs, {}
    return var


def _netcdf_encoding(var: Any, original: Any) -> dict[str, Any]:
    """Deflate in the Dask chunks; ``_FillValue`` only where the store declares one, so the
    netCDF decodes as the store does (an integer layer without one stays integer)."""
    enc: dict[str, Any] = {"zlib": True, "complevel": 4,
                           "_FillValue": original.attrs.get("_FillValue")}
    if var.chunks:
        enc["chunksizes"] = tuple(c[0] for c in var.chunks)
    return enc


def _attr(value: Any) -> Any:
    """Strings and numbers as they are; anything else (dict, list, None, bool) as JSON."""
    if isinstance(value, str | int | float | np.number) and not isinstance(value, bool):
        return value
    return json.dumps(value, default=str)
