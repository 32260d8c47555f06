""":func:`mosaic`: a lazy mosaic ``xarray.Dataset`` with its lineage layers (``count``, and
``source`` / ``score`` / ``weight`` where the method writes them), as a run's mosaic store.

From items, the mosaic is planned as a workflow's mosaic product: one fused chunk task reads
the chunk's scenes (and the halo and quality masks best-pixel and seam blending need) and
composites them; the values are those ``aquila run`` writes. From a dataset that
:func:`pipeline.load` returned, the loaded cube's chunks are composited by the same method
function (one task per chunk); methods that need quality masks or a halo need the items.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from pydantic import ValidationError

from pipeline.api.cube import load_options
from pipeline.api.dataset import mosaic_dataset
from pipeline.api.graph import composite_arrays, mosaic_arrays
from pipeline.api.prepare import prepare
from pipeline.engine.blocks import ReadErrors
from pipeline.errors import InputError, SpecError
from pipeline.plan.chunks import MosaicOutput, SlotScenes, TimeSlot
from pipeline.plan.grid import TargetGrid
from pipeline.plan.methods import mosaic_layers
from pipeline.spec.sections import MosaicProduct


def mosaic(
    items_or_dataset: Any,
    method: str = "median",
    *,
    q: float | None = None,
    priority: list[str] | tuple[str, ...] | None = None,
    key: str | None = None,
    best_pixel: Any = None,
    blend: Any = None,
    read_errors: ReadErrors = "raise",
    **load_kwargs: Any,
) -> xr.Dataset:
    """A lazy mosaic: (y, x) per band, ``count`` (valid observations) and the method's lineage
    layers. ``method`` and its parameters are a workflow mosaic's (``q`` for percentile,
    ``priority`` for priority and best-pixel, ``key`` for quality, ``best_pixel`` weights,
    ``blend={'width': N}``).

    ``items_or_dataset``: the items (anything :func:`pipeline.load` takes, with its keyword
    arguments: bands, crs, resolution, bounds...) or a dataset :func:`pipeline.load` returned
    (every method but best-pixel and blending, which need the scenes' quality masks and a halo).
    """
    product = _product(method, q=q, priority=priority, key=key, best_pixel=best_pixel,
                       blend=blend)
    if isinstance(items_or_dataset, xr.Dataset):
        if load_kwargs:
            raise InputError(f"mosaic of a loaded dataset takes no load arguments (got "
                             f"{sorted(load_kwargs)}); pass them to pipeline.load")
        return _of_dataset(items_or_dataset, product)
    prepared = prepare(items_or_dataset, load_options(**load_kwargs),
                       mosaic=product.model_dump(mode="json", exclude={"store"},
                                                 exclude_none=True))
    plan = prepared.plan
    m = plan.outputs.mosaics[0]
    layers = mosaic_layers(m.method, blend_width=m.blend_width)
    arrays = mosaic_arrays(plan, prepared.reader, layers, read_errors)
    attrs = {"title": f"Aquila {m.method} mosaic (pipeline.mosaic)", "aquila:method": m.method,
             **prepared.report.attrs()}
    return mosaic_dataset(plan.grid, plan.outputs.bands, m.method, layers, arrays, attrs)


def _product(method: str, **params: Any) -> MosaicProduct:
    """The method and its parameters, checked by the workflow spec's own model."""
    given = {k: v for k, v in params.items() if v is not None}
    for name in ("best_pixel", "blend"):
        if hasattr(given.get(name), "model_dump"):
            given[name] = given[name].model_dump()
    try:
        return MosaicProduct.model_validate({"store": "unused.zarr", "method": method, **given})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'method'}: {e['msg']}"
                             for e in exc.errors())
        raise SpecError(f"pipeline.mosaic(method={method!r}): {problems}") from None


def _of_dataset(ds: xr.Dataset, product: MosaicProduct) -> xr.Dataset:
    """Composite a loaded cube (dims time, y, x; a ``collection`` coordinate on time)."""
    if product.method == "best-pixel" or product.blend is not None:
        raise InputError(
            f"method {product.method!r}{' with blend' if product.blend else ''} needs the "
            "scenes' quality masks and a halo around each chunk, which a loaded cube does not "
            "hold: call pipeline.mosaic(items, method=..., bands=..., crs=..., ...) instead"
        )
    bands = tuple(str(n) for n, v in ds.data_vars.items() if v.dims == ("time", "y", "x"))
    if not bands or "collection" not in ds.coords:
        raise InputError("pipeline.mosaic needs a dataset from pipeline.load (variables "
                         "(time, y, x) and a 'collection' coordinate on time)")
    if product.key is not None:
        need = ("red", "nir") if product.key == "ndvi" else (product.key,)
        missing = [b for b in need if b not in bands]
        if missing:
            raise SpecError(f"mosaic key {product.key!r} needs band(s) {missing} in the "
                            f"dataset (it has {list(bands)})")
    grid = _grid_of(ds)
    chunked = ds[list(bands)]
    if not all(v.chunks for v in chunked.data_vars.values()):
        chunked = chunked.chunk({"time": -1, "y": grid.chunk, "x": grid.chunk})
    elif any(len(v.chunks[0]) > 1 for v in chunked.data_vars.values()):  # type: ignore[index]
        chunked = chunked.chunk({"time": -1})
    chunked = chunked.unify_chunks()
    method = MosaicOutput(store=Path("unused.zarr"), method=product.method, q=product.q,
                          priority=tuple(product.priority or ()), key=product.key)
    layers = mosaic_layers(method.method)
    arrays = composite_arrays({b: chunked[b].data for b in bands}, method, _slots(ds),
                              layers, grid)
    attrs = {k: v for k, v in ds.attrs.items() if k != "title"}
    attrs.update({"title": f"Aquila {method.method} mosaic (pipeline.mosaic)",
                  "aquila:method": method.method})
    out = mosaic_dataset(grid, bands, method.method, layers, arrays, attrs)
    return out.assign_coords(y=ds["y"], x=ds["x"])  # the dataset's own (a subset keeps them)


def _slots(ds: xr.Dataset) -> tuple[SlotScenes, ...]:
    """The cube's time slots as the compositing methods see them (time and collection: what
    latest, earliest, priority, medoid and quality break ties by)."""
    times = ds["time"].values.astype("datetime64[s]").astype(np.int64)
    out = []
    for i, (seconds, collection) in enumerate(zip(times, ds["collection"].values, strict=True)):
        when = dt.datetime.fromtimestamp(int(seconds), tz=dt.UTC)
        meta = TimeSlot(i, str(collection), when.date(), when, ())
        out.append(SlotScenes(i, (), meta))
    return tuple(out)


def _grid_of(ds: xr.Dataset) -> TargetGrid:
    t = ds.rio.transform(recalc=True)  # from the coordinates: right for a subset too
    chunk = 1024
    for v in ds.data_vars.values():
        if v.chunks:
            chunk = int(v.chunks[-1][0])
            break
    return TargetGrid(str(ds.rio.crs), (t.a, t.b, t.c, t.d, t.e, t.f),
                      (ds.sizes["y"], ds.sizes["x"]), chunk)
