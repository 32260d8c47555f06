"""Lazy arrays → an ``xarray.Dataset`` laid out as the run's stores are: the store's own layout
(:func:`pipeline.products.store.cube_layout` / ``mosaic_layout``: coordinates, variable names
and attributes) with the placeholders replaced by the lazy arrays, and the CRS as a CF
``spatial_ref`` coordinate (``ds.rio.crs`` reads it; ``crs_wkt`` as the store writes it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine

from pipeline.plan.chunks import TimeSlot
from pipeline.plan.grid import TargetGrid
from pipeline.products.store import cube_layout, mosaic_layout


def cube_dataset(
    grid: TargetGrid,
    slots: Sequence[TimeSlot],
    arrays: Mapping[str, Any],
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """(time, y, x) per band, with the cube store's ``time`` and ``collection`` coordinates."""
    layout, _ = cube_layout(grid, tuple(arrays), slots)
    return _filled(layout, arrays, grid, attrs)


def mosaic_dataset(
    grid: TargetGrid,
    bands: Sequence[str],
    method: str,
    layers: Sequence[str],
    arrays: Mapping[str, Any],
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """(y, x) per band, ``count`` and the lineage ``layers``, as the mosaic store has them."""
    layout, _ = mosaic_layout(grid, bands, method=method, layers=layers)
    return _filled(layout, arrays, grid, attrs)


def _filled(
    layout: xr.Dataset, arrays: Mapping[str, Any], grid: TargetGrid, attrs: Mapping[str, Any]
) -> xr.Dataset:
    ds = layout.assign({
        name: (layout[name].dims, arrays[str(name)], layout[name].attrs)
        for name in layout.data_vars
    })
    ds = ds.rio.write_crs(grid.crs)
    ds = ds.rio.write_transform(Affine(*grid.transform))
    for name in ds.data_vars:
        ds[name].attrs["grid_mapping"] = "spatial_ref"
    ds.attrs.update(attrs)
    return ds
