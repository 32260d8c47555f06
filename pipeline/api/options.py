"""The keyword arguments of :func:`pipeline.load` / :func:`pipeline.mosaic` as a workflow spec.

A notebook call and a workflow file mean the same thing: the arguments are written into a spec
mapping and validated by the spec's own model (:func:`pipeline.spec.workflow.spec_from_dict`),
so a wrong CRS, bounds that are not whole pixels, an unknown radiometry key or an audience
without codes fail with the same message a workflow file would get. Relative paths are taken
from the current directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.errors import SpecError
from pipeline.spec.workflow import WorkflowSpec, spec_from_dict

IN_MEMORY = "python://items"
"""The spec's ``catalog`` when the items were given as Python objects (nothing is opened
there: the items come from the caller, see :mod:`pipeline.api.items`)."""

_UNUSED_STORE = "aquila-api-in-memory.zarr"  # a load writes nothing; the spec model wants one


@dataclass(frozen=True)
class LoadOptions:
    """Everything :func:`pipeline.load` is told besides the items; see its docstring."""

    bands: tuple[str, ...]
    crs: str
    resolution: float
    bounds: tuple[float, float, float, float] | None = None
    bbox: tuple[float, float, float, float] | None = None
    chunks: int | Mapping[str, Any] | None = None
    resampling: str = "nearest"
    anchor: Any = None
    radiometry: Any = None
    audience: Any = None
    allow_unmarked: bool = False
    classification_scale: tuple[str, ...] | None = None
    groupby: str = "solar_day"
    collections: tuple[str, ...] | None = None
    datetime: Any = None
    allowed_roots: tuple[str, ...] | None = None
    href_mirrors: Mapping[str, str] | None = None
    quality_mask: bool = True
    profile: str | None = None
    limits: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # more spec keys, as a workflow has


GROUPBY = ("solar_day",)
"""Time grouping: the engine's one rule, a time slot per collection and local solar day (the
same as odc-stac's ``groupby="solar_day"``, kept per collection)."""


def chunk_edge(chunks: int | Mapping[str, Any] | None) -> int:
    """The square chunk edge the engine tiles the grid with (one task per chunk)."""
    if chunks is None:
        return 1024
    if isinstance(chunks, bool):
        raise SpecError(f"chunks={chunks!r}: give a whole number of pixels, e.g. chunks=512")
    if isinstance(chunks, int):
        return chunks
    if isinstance(chunks, Mapping):
        unknown = set(chunks) - {"x", "y", "time"}
        if unknown:
            raise SpecError(f"chunks: unknown dimension(s) {sorted(unknown)}; the dimensions "
                            "are time, y and x")
        if chunks.get("time", -1) not in (-1, None):
            raise SpecError(
                f"chunks['time']={chunks['time']!r}: every time slot of a chunk is read by one "
                "task, so time is one chunk (-1); rechunk the result if you need another"
            )
        y, x = chunks.get("y"), chunks.get("x")
        if y is None or x is None or y != x or isinstance(y, bool) or not isinstance(y, int):
            raise SpecError(
                f"chunks={dict(chunks)!r}: the engine's chunks are square; give "
                "{'y': N, 'x': N} with the same whole number (or chunks=N)"
            )
        return y
    raise SpecError(f"chunks={chunks!r}: give a whole number of pixels or {{'y': N, 'x': N}}")


def _section(value: Any, name: str, shorthand: str | None = None) -> Any:
    """A spec section given as a mapping, the spec's own model, or a one-word shorthand."""
    if value is None:
        return None
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, str) and shorthand is not None:
        return {shorthand: value}
    if isinstance(value, Mapping):
        return dict(value)
    raise SpecError(f"{name}={value!r}: give a mapping of the workflow spec's {name} keys")


def spec_for(
    catalog: str, options: LoadOptions, *, mosaic: Mapping[str, Any] | None = None
) -> WorkflowSpec:
    """The workflow spec that means what the call means (validated by the spec model)."""
    if options.groupby not in GROUPBY:
        raise SpecError(
            f"groupby={options.groupby!r} is not supported: Aquila's time slots are one per "
            "collection and local solar day (groupby='solar_day'); group the result with "
            "xarray (ds.groupby(...)) for another grouping"
        )
    if options.bounds is None and options.bbox is None:
        raise SpecError("give bounds=(xmin, ymin, xmax, ymax) in the CRS, or bbox=(west, "
                        "south, east, north) in degrees, for the area to load")
    grid: dict[str, Any] = {
        "crs": options.crs,
        "resolution": options.resolution,
        "chunk": chunk_edge(options.chunks),
        "resampling": options.resampling,
    }
    if options.bounds is not None:
        grid["bounds"] = list(options.bounds)
    if options.anchor is not None:
        grid["anchor"] = options.anchor
    products: dict[str, Any] = (
        {"mosaic": {"store": _UNUSED_STORE, **mosaic}} if mosaic is not None
        else {"cube": {"store": _UNUSED_STORE}}
    )
    data: dict[str, Any] = {
        "version": 1,
        "name": "python-api",
        "catalog": catalog,
        "bands": list(_names(options.bands)),
        "grid": grid,
        "products": products,
        "allow_unmarked": options.allow_unmarked,
        "quality_mask": options.quality_mask,
    }
    optional = {
        "bbox": list(options.bbox) if options.bbox is not None else None,
        "collections": list(options.collections) if options.collections else None,
        "datetime": options.datetime,
        "allowed_roots": [str(r) for r in options.allowed_roots] if options.allowed_roots
        else None,
        "href_mirrors": {k: str(v) for k, v in options.href_mirrors.items()}
        if options.href_mirrors else None,
        "profile": options.profile,
        "radiometry": _section(options.radiometry, "radiometry", shorthand="target"),
        "audience": _section(options.audience, "audience"),
        "classification_scale": list(options.classification_scale)
        if options.classification_scale else None,
        "limits": _section(options.limits, "limits"),
    }
    data.update({k: v for k, v in optional.items() if v is not None})
    data.update(options.extra)
    return spec_from_dict(data, base_dir=Path.cwd(), source="pipeline.load arguments")


def _names(bands: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(bands, str):
        return (bands,)
    return tuple(bands)
