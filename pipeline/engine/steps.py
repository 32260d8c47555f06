"""The steps every run and every night share: the spec's grid and outputs, the attributes a
product starts with, the audience, the operator report and how a run ended. A run
(:mod:`pipeline.engine.run`) and a night (:mod:`pipeline.engine.nightly`) differ only in how they
plan and publish; everything here is written once for both.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.catalog.discover import Discovery
from pipeline.catalog.discover import discover as discover_items
from pipeline.catalog.markings import Audience, MarkingConflict
from pipeline.catalog.scene import Reject, Scene
from pipeline.errors import AquilaError, InputError, SpecError, StoreBusy, StoreUnwritable
from pipeline.plan.calibration import radiometry_outputs
from pipeline.plan.chunks import MosaicOutput, Outputs
from pipeline.plan.grid import TargetGrid
from pipeline.products.objectstore import storage_failure
from pipeline.products.report import NightReport, OperatorReport, RunReport
from pipeline.spec.sections import BestPixelSpec, MosaicProduct
from pipeline.spec.workflow import WorkflowSpec, spec_as_given


def new_run_id() -> tuple[str, dt.datetime]:
    """A run's id (UTC start time and a random suffix) and its start time."""
    started = dt.datetime.now(dt.UTC)
    return f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}", started


def discover(spec: WorkflowSpec) -> Discovery:
    """Search the catalog, normalise every item, drop duplicate publications (rule in
    pipeline/catalog/dedupe.py); every reject and duplicate keeps its reason."""
    return discover_items(spec)


def target_grid(spec: WorkflowSpec, scenes: Sequence[Scene]) -> TargetGrid:
    """The spec's grid: its bounds kept exactly (or snapped by grid.anchor), else the scenes'
    footprints snapped outward; refused beyond spec.limits before anything grid-sized is built.
    """
    g = spec.grid
    limits = spec.limits.plan_limits()
    if g.bounds is not None:
        return TargetGrid.from_bounds(
            g.bounds, crs=g.crs, resolution=g.resolution, chunk=g.chunk, anchor=g.anchor,
            limits=limits,
        )
    return TargetGrid.covering(
        (s.footprint for s in scenes),
        crs=g.crs,
        resolution=g.resolution,
        chunk=g.chunk,
        bbox=spec.bbox,
        anchor=g.anchor,
        limits=limits,
    )


def grid_record(spec: WorkflowSpec, grid: TargetGrid) -> dict[str, Any]:
    """The run report's ``grid``: the grid written, its final bounds and where they came from
    (a grid that moved from what the spec says says so here)."""
    g = spec.grid
    if g.bounds is None:
        origin = f"the scenes' footprints, snapped outward (anchor {g.anchor or 'edge'})"
    elif g.anchor is not None:
        origin = f"grid.bounds, snapped outward (grid.anchor {g.anchor})"
    else:
        origin = "grid.bounds, exactly"
    return {
        "crs": grid.crs,
        "transform": list(grid.transform),
        "shape": list(grid.shape),
        "chunk": grid.chunk,
        "bounds": list(grid.bounds),
        "bounds_from": origin,
    }


def outputs_of(spec: WorkflowSpec) -> Outputs:
    p = spec.products
    return Outputs(
        bands=spec.bands,
        resampling=spec.grid.resampling,
        cube_store=p.cube.store if p.cube else None,
        cube_format=p.cube.format if p.cube else "zarr3",
        mosaics=tuple(mosaic_output(m, spec) for m in p.all_mosaics),
        stack_budget=spec.limits.stack_memory,
        **radiometry_outputs(spec.radiometry),
    )


def mosaic_output(m: MosaicProduct, spec: WorkflowSpec) -> MosaicOutput:
    """The plan's view of one mosaic product; checks what needs the spec's bands."""
    if m.key is not None:
        need = ("red", "nir") if m.key == "ndvi" else (m.key,)
        missing = [b for b in need if b not in spec.bands]
        if missing:
            raise SpecError(
                f"mosaic {m.store.name}: key {m.key!r} needs band(s) {missing} in 'bands' "
                f"(it has {list(spec.bands)})"
            )
    weights: tuple[tuple[str, float], ...] = ()
    target = None
    if m.method == "best-pixel":
        bp = m.best_pixel or BestPixelSpec()
        weights = tuple(bp.model_dump(exclude={"target_date"}).items())
        if bp.target_date is not None:
            target = dt.datetime.combine(bp.target_date, dt.time(12), tzinfo=dt.UTC)
        elif spec.datetime and spec.datetime[0] and spec.datetime[1]:
            target = spec.datetime[0] + (spec.datetime[1] - spec.datetime[0]) / 2
    return MosaicOutput(
        store=m.store, method=m.method, q=m.q, priority=tuple(m.priority or ()), key=m.key,
        weights=weights, target=target, blend_width=m.blend.width if m.blend else 0,
        format=m.format,
    )



def record_failure(
    report: RunReport | NightReport, exc: BaseException, *, stores: Sequence[object],
    kept: str = "nothing was published, the previous products are unchanged",
) -> bool:
    """Put how the run ended into the report; True if ``exc`` must be raised again (Ctrl-C, and
    errors that are not Aquila's or the storage's: bugs keep their traceback)."""
    if isinstance(exc, OSError) and exc.errno in StoreUnwritable.ERRNOS:
        doing = f"writing {', '.join(map(str, stores))}"
        exc = StoreUnwritable.from_os_error(exc, doing=doing)
    exc = storage_failure(exc, stores) or exc  # a bucket's endpoint, credentials, ...: one line
    if isinstance(exc, StoreBusy):
        report.status = "busy"
    elif isinstance(exc, InputError):
        report.status = "bad_input"
    elif isinstance(exc, AquilaError):
        report.status = "failed"
    elif isinstance(exc, KeyboardInterrupt):
        report.status = "interrupted"
        report.error = f"[interrupted] stopped by Ctrl-C; {kept}"
        return True
    else:
        report.status = "failed"
        report.error = f"{type(exc).__name__}: {exc}"
        return True
    report.error = f"[{exc.reason}] {exc.message}"
    return False



def record_withheld(
    operator: OperatorReport,
    path: Path,
    withheld: Sequence[Reject],
    conflicts: Sequence[MarkingConflict],
    emit: Callable[[str, Any], None],
) -> None:
    """Name the withheld items and the marking conflicts in the operator report and write it,
    before any pixel is read (the audience's report only counts them)."""
    operator.withheld = [w.as_dict() for w in withheld]
    operator.conflicts = [c.as_dict() for c in conflicts]
    operator.write(path)
    emit("withheld", (len(withheld), path))


def write_operator(report: RunReport | NightReport, operator: OperatorReport, path: Path) -> None:
    try:
        operator.write(path)
    except OSError as exc:
        report.report_error = f"operator report not written to {path}: {exc.strerror}"
        return
    report.products.setdefault("operator report", str(path))



def product_attrs(
    spec: WorkflowSpec, run_id: str, *, nightly: bool = False, complete: bool = False
) -> dict[str, Any]:
    """The attributes every product starts with (runs and nights alike); ``aquila:status``
    says "incomplete" until the commit step sets it (``complete``: leave it out)."""
    attrs = {
        "title": f"Aquila {spec.name}" + (" (nightly)" if nightly else ""),
        "aquila:run_id": run_id,
        # as written (paths relative to the spec file): no absolute path of this machine
        "aquila:workflow": spec_as_given(spec),
    }
    if not complete:
        attrs["aquila:status"] = "incomplete"  # set to "complete" by the commit step
    return attrs


def audience_dict(audience: Audience) -> dict[str, Any]:
    return {"releasable_to": sorted(audience.members), "group": audience.name,
            "clearance": audience.clearance}


