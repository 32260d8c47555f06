""":func:`load`: STAC items → a lazy cube ``xarray.Dataset``, the same values ``aquila run``
writes into its cube store, computed by the same fused chunk task (one per output chunk)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from pipeline.api.dataset import cube_dataset
from pipeline.api.graph import cube_arrays
from pipeline.api.options import LoadOptions
from pipeline.api.prepare import Prepared, prepare
from pipeline.engine.blocks import ReadErrors


def load_options(
    *,
    bands: Sequence[str] | str,
    crs: str,
    resolution: float,
    bounds: Sequence[float] | None = None,
    bbox: Sequence[float] | None = None,
    chunks: int | Mapping[str, Any] | None = None,
    resampling: str = "nearest",
    anchor: Any = None,
    radiometry: Any = None,
    audience: Any = None,
    allow_unmarked: bool = False,
    classification_scale: Sequence[str] | None = None,
    groupby: str = "solar_day",
    collections: Sequence[str] | None = None,
    datetime: Any = None,
    allowed_roots: Sequence[str | Path] | None = None,
    href_mirrors: Mapping[str, str | Path] | None = None,
    quality_mask: bool = True,
    profile: str | None = None,
    limits: Mapping[str, Any] | None = None,
) -> LoadOptions:
    """The keyword arguments of :func:`load` as one value (see there)."""
    return LoadOptions(
        bands=(bands,) if isinstance(bands, str) else tuple(bands),
        crs=crs,
        resolution=resolution,
        bounds=_four(bounds, "bounds"),
        bbox=_four(bbox, "bbox"),
        chunks=chunks,
        resampling=resampling,
        anchor=anchor,
        radiometry=radiometry,
        audience=audience,
        allow_unmarked=allow_unmarked,
        classification_scale=tuple(classification_scale) if classification_scale else None,
        groupby=groupby,
        collections=tuple(collections) if collections else None,
        datetime=datetime,
        allowed_roots=tuple(str(r) for r in allowed_roots) if allowed_roots else None,
        href_mirrors={k: str(v) for k, v in href_mirrors.items()} if href_mirrors else None,
        quality_mask=quality_mask,
        profile=profile,
        limits=limits,
    )


def _four(value: Sequence[float] | None, name: str) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    values = tuple(float(v) for v in value)
    if len(values) != 4:
        from pipeline.errors import SpecError

        raise SpecError(f"{name}={value!r}: give four numbers (xmin/west, ymin/south, "
                        "xmax/east, ymax/north)")
    return values  # type: ignore[return-value]


def load(
    items: Any,
    *,
    bands: Sequence[str] | str,
    crs: str,
    resolution: float,
    bounds: Sequence[float] | None = None,
    bbox: Sequence[float] | None = None,
    chunks: int | Mapping[str, Any] | None = None,
    resampling: str = "nearest",
    radiometry: Any = None,
    audience: Any = None,
    groupby: str = "solar_day",
    read_errors: ReadErrors = "raise",
    **more: Any,
) -> xr.Dataset:
    """STAC items → a lazy ``xarray.Dataset`` (time, y, x), one float32 variable per band.

    ``items``: a catalog path or URL (static catalog, collection, item collection, NDJSON, STAC
    API root), a ``pystac.ItemCollection`` / ``Catalog``, a pystac-client ``ItemSearch``, or a
    list of ``pystac.Item`` or item dicts (these need ``allowed_roots``).

    Keyword arguments (the workflow spec's keys): ``bands`` (common names), ``crs``,
    ``resolution`` (CRS units), ``bounds`` (xmin, ymin, xmax, ymax in the CRS; whole pixels
    unless ``anchor``) and/or ``bbox`` (lon/lat: selects items; without bounds, the grid covers
    the scenes inside it), ``chunks`` (pixels, square: ``512`` or ``{'y': 512, 'x': 512}``;
    time is one chunk), ``resampling`` (nearest, bilinear, cubic, average), ``radiometry``
    ('reflectance', 'radiance' or the spec's radiometry mapping), ``audience`` (the spec's
    audience mapping) with ``allow_unmarked`` and ``classification_scale``, ``groupby``
    ('solar_day': a time slot per collection and local solar day), ``collections``,
    ``datetime``, ``allowed_roots``, ``href_mirrors``, ``quality_mask``, ``profile``,
    ``limits`` (the last ones through ``**more``). ``read_errors='skip'`` leaves scenes that
    fail to read out (logged) instead of failing the computation.

    Nothing is read until the dataset is computed (item discovery and planning run now). Its
    Dask graph has one fused task per output chunk, which reads every scene of every time slot
    of that chunk (the chunk task of ``aquila run``), and one selection task per band and chunk.
    Rejected items, duplicates and the count of withheld ones are in ``ds.attrs``
    (``aquila:rejected``...); :func:`pipeline.api.prepare` gives the whole report.
    """
    options = load_options(
        bands=bands, crs=crs, resolution=resolution, bounds=bounds, bbox=bbox, chunks=chunks,
        resampling=resampling, radiometry=radiometry, audience=audience, groupby=groupby, **more,
    )
    prepared = prepare(items, options)
    return cube_of(prepared, read_errors=read_errors)


def cube_of(prepared: Prepared, *, read_errors: ReadErrors = "raise") -> xr.Dataset:
    """The lazy cube of a prepared load."""
    plan = prepared.plan
    arrays = cube_arrays(plan, prepared.reader, read_errors)
    attrs = {"title": "Aquila cube (pipeline.load)", **prepared.report.attrs()}
    return cube_dataset(plan.grid, plan.slots, arrays, attrs)
