"""Grid extent arithmetic, done before any grid is built: the shape that bounds and a resolution
give, whether the bounds are whole pixels, and the plan-size ceilings of a workflow's ``limits:``.

Pure arithmetic on a few floats (no odc-geo, no numpy), so a 10⁶ × 10⁶ grid is refused in
microseconds, before anything proportional to it is allocated or intersected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.errors import PlanTooLarge, SpecError

Bounds = tuple[float, float, float, float]

FIT_TOLERANCE = 1e-6
"""Pixels: bounds fit the resolution when their extent is this close to a whole pixel count
(absorbs decimal round-off such as 20000.3 / 0.1, never a real offset)."""


@dataclass(frozen=True)
class PlanLimits:
    """Ceilings on a plan (the workflow's ``limits:`` section). Each keeps an absurd spec from
    running for hours or exhausting memory; a real job above one raises it in the spec."""

    max_pixels: int = 10_000_000_000  # grid y × x: 100 000² px, 1000 km square at 10 m
    max_tasks: int = 100_000  # chunk tasks; checked first against the grid's chunk count
    max_time_slots: int = 20_000  # cube time steps (collection × solar day)
    max_task_memory: int = 4 * 2**30  # bytes one chunk task holds (estimate, see plan.py)


def grid_shape(
    bounds: Bounds,
    resolution: float,
    *,
    chunk: int,
    snapped: bool,
    limits: PlanLimits,
    source: str = "grid.bounds",
) -> tuple[int, int] | None:
    """Every check a grid over ``bounds`` needs before it is built: finite and ordered bounds,
    its size against ``limits``, and (unless odc-geo will snap it) whole pixels. Returns the
    exact (y, x) shape, or None when snapping decides it (at most one pixel more a side)."""
    check_bounds(bounds, resolution, source=source)
    ny, nx = pixel_extent(bounds, resolution)
    upper = (ny + 1, nx + 1) if snapped else (ny, nx)
    where = f"{source} {fmt_bounds(bounds)} at grid.resolution {resolution:g}"
    check_grid_size(upper, chunk, limits, source=where)
    return None if snapped else exact_shape(bounds, resolution)


def check_bounds(bounds: Bounds, resolution: float, *, source: str) -> None:
    """Refuse NaN, infinite or unordered bounds, and a resolution that is not a positive finite
    number (pydantic accepts ``.inf``; footprints projected out of a CRS's domain give inf)."""
    if not (math.isfinite(resolution) and resolution > 0):
        raise SpecError(f"grid.resolution {resolution!r} must be a positive finite number")
    if not all(math.isfinite(v) for v in bounds):
        raise SpecError(
            f"{source} {fmt_bounds(bounds)} are not finite numbers in the grid CRS; give finite "
            "[xmin, ymin, xmax, ymax] (for derived bounds: a grid.crs the scenes project into)"
        )
    if not (bounds[0] < bounds[2] and bounds[1] < bounds[3]):
        raise SpecError(f"{source} {fmt_bounds(bounds)}: need xmin < xmax and ymin < ymax")


def pixel_extent(bounds: Bounds, resolution: float) -> tuple[float, float]:
    """(y, x) extent of ``bounds`` in pixels, as floats: fractional, huge or inf as they come."""
    xmin, ymin, xmax, ymax = bounds
    return (ymax - ymin) / resolution, (xmax - xmin) / resolution


def check_grid_size(
    extent: tuple[float, float], chunk: int, limits: PlanLimits, *, source: str
) -> None:
    """Refuse a grid of more than ``max_pixels`` pixels or ``max_tasks`` chunks, from its
    (y, x) pixel extent (floats: an upper bound is enough) before the grid exists."""
    ny, nx = (max(v, 1.0) for v in extent)
    pixels = ny * nx
    if pixels > limits.max_pixels:
        raise PlanTooLarge(
            f"{source}: a grid of {_count(ny)} × {_count(nx)} = {_count(pixels)} pixels, "
            f"above limits.max_pixels = {limits.max_pixels:,}. Shrink the bounds, coarsen "
            "grid.resolution, or raise limits.max_pixels in the workflow spec"
        )
    chunks = math.ceil(ny / chunk) * math.ceil(nx / chunk)
    if chunks > limits.max_tasks:
        raise PlanTooLarge(
            f"{source}: a grid of {chunks:,} chunks of {chunk} px (each may become a "
            f"task), above limits.max_tasks = {limits.max_tasks:,}. Grow grid.chunk, shrink "
            "the bounds, or raise limits.max_tasks in the workflow spec"
        )


def exact_shape(bounds: Bounds, resolution: float) -> tuple[int, int]:
    """(y, x) shape of a grid with its origin at (xmin, ymax) and exactly these bounds; refuse
    bounds that are not whole pixels, naming the nearest shrunk and grown bounds that are."""
    extent = pixel_extent(bounds, resolution)
    if all(abs(v - round(v)) <= FIT_TOLERANCE and round(v) >= 1 for v in extent):
        return round(extent[0]), round(extent[1])
    xmin, _, _, ymax = bounds
    (fy, fx), (cy, cx) = (math.floor(v) for v in extent), (math.ceil(v) for v in extent)
    grown = (xmin, ymax - cy * resolution, xmin + cx * resolution, ymax)
    options = [f"{fmt_bounds(grown)} (grown to {cy} × {cx} px)"]
    if fy >= 1 and fx >= 1:
        shrunk = (xmin, ymax - fy * resolution, xmin + fx * resolution, ymax)
        options.insert(0, f"{fmt_bounds(shrunk)} (shrunk to {fy} × {fx} px)")
    raise SpecError(
        f"grid.bounds {fmt_bounds(bounds)} are {extent[0]:.6g} × {extent[1]:.6g} pixels of "
        f"{resolution:g}: not whole pixels from the origin (xmin, ymax) = "
        f"({xmin:.12g}, {ymax:.12g}), so the grid would have to move. Give "
        + " or ".join(options)
        + ", or set grid.anchor (edge | center | [fx, fy]) to let the grid snap to the "
        "resolution"
    )


def fmt_bounds(bounds: Bounds) -> str:
    """Bounds as the user writes them: [xmin, ymin, xmax, ymax], up to 12 digits."""
    return "[" + ", ".join(f"{v:.12g}" for v in bounds) + "]"


def _count(value: float) -> str:
    return f"{int(value):,}" if value < 1e15 else f"{value:.3g}"
