"""Items and options → the run's plan, before any pixel is read: what :func:`pipeline.load` and
:func:`pipeline.mosaic` build their lazy graphs from.

The steps are the engine's, in a run's order: the spec (:mod:`pipeline.api.options`), the
discovery (:mod:`pipeline.api.items`), the grid (:func:`pipeline.engine.steps.target_grid`), the
outputs (:func:`pipeline.engine.steps.outputs_of`) and the plan
(:func:`pipeline.plan.chunks.make_plan`, limits included). What was rejected, dropped as a
duplicate or withheld is kept in a :class:`LoadReport`, never dropped unseen.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pipeline.api.items import discover_items, item_source
from pipeline.api.options import LoadOptions, spec_for
from pipeline.catalog.discover import Discovery, href_policy, releasability_of
from pipeline.catalog.markings import MarkingConflict
from pipeline.catalog.scene import Reject
from pipeline.engine.steps import audience_dict, outputs_of, target_grid
from pipeline.errors import NoScenesError, PlanTooLarge
from pipeline.io.settings import ReaderSettings
from pipeline.plan.chunks import Plan, make_plan
from pipeline.spec.workflow import WorkflowSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadReport:
    """What the items held for this load, as a run report would say it.

    ``rejected`` and ``duplicates`` are the audience's to see (also in the dataset's attributes);
    ``withheld`` and ``conflicts`` name items the audience may not see (operator only: the
    dataset's attributes carry only the count)."""

    items_found: int
    scenes: tuple[str, ...]  # planned scene ids (touching the grid), in merge order
    rejected: tuple[Reject, ...]
    duplicates: tuple[dict[str, Any], ...]
    withheld: tuple[Reject, ...] = ()
    conflicts: tuple[MarkingConflict, ...] = ()
    notes: tuple[str, ...] = ()
    audience: Mapping[str, Any] | None = None

    def attrs(self) -> dict[str, Any]:
        """The audience-safe part, as dataset attributes (JSON-safe values)."""
        out: dict[str, Any] = {
            "aquila:items_found": self.items_found,
            "aquila:scenes_planned": list(self.scenes),
            "aquila:rejected": [r.as_dict() for r in self.rejected],
            "aquila:duplicates": [dict(d) for d in self.duplicates],
            "aquila:withheld": len(self.withheld),
        }
        if self.notes:
            out["aquila:notes"] = list(self.notes)
        if self.audience is not None:
            out["aquila:audience"] = dict(self.audience)
        return out


@dataclass(frozen=True)
class Prepared:
    """A load's plan: the validated spec, the plan (grid, time slots, one task per chunk with
    scenes), the reader settings every chunk task uses, and the report."""

    spec: WorkflowSpec
    plan: Plan
    reader: ReaderSettings
    report: LoadReport


def prepare(
    items: Any, options: LoadOptions, *, mosaic: Mapping[str, Any] | None = None
) -> Prepared:
    """Discover, grid and plan (no pixel read). ``mosaic`` (a workflow's mosaic product keys:
    method, q, priority, key, best_pixel, blend) plans a mosaic instead of the cube."""
    source = item_source(items)
    spec = spec_for(source.catalog, options, mosaic=mosaic)
    found = discover_items(source, spec)
    report = _report(found, spec)
    _log(report)
    if not found.scenes:
        reasons = sorted({r.reason for r in found.rejects})
        raise NoScenesError(
            f"no usable scene among {found.items_found} item(s) for bands {list(spec.bands)}"
            f" ({len(found.rejects)} rejected: {', '.join(reasons) or 'none'}; "
            f"{len(found.withheld)} withheld). The rejects name the reason and the fix: "
            "pipeline.api.prepare(...).report.rejected"
        )
    grid = target_grid(spec, found.scenes)
    outputs = replace(outputs_of(spec), cube_store=None)
    if mosaic is None:
        outputs = replace(outputs, mosaics=())
    plan = make_plan(found.scenes, grid=grid, outputs=outputs,
                     limits=spec.limits.plan_limits())
    if not plan.tasks:
        raise NoScenesError("no scene footprint touches the grid; check bounds and bbox")
    if mosaic is None:
        _check_block_memory(plan, spec)
    report = replace(report, scenes=tuple(s.id for s in plan.scenes))
    ident = (plan.grid, plan.outputs, [(s.id, [b.href for b in s.bands]) for s in plan.scenes])
    token = hashlib.sha256(repr(ident).encode()).hexdigest()
    reader = ReaderSettings(policy=href_policy(spec), session=f"load-{token[:16]}")
    return Prepared(spec, plan, reader, report)


def _report(found: Discovery, spec: WorkflowSpec) -> LoadReport:
    audience = None
    if spec.audience is not None:
        rule = releasability_of(spec)
        audience = audience_dict(rule.audience) if rule is not None else None
    return LoadReport(
        items_found=found.items_found,
        scenes=tuple(s.id for s in found.scenes),
        rejected=found.rejects,
        duplicates=tuple(d.as_dict() for d in found.duplicates),
        withheld=found.withheld,
        conflicts=found.conflicts,
        notes=found.notes,
        audience=audience,
    )


def _log(report: LoadReport) -> None:
    log.info("%d item(s) found: %d usable, %d rejected, %d duplicate(s), %d withheld",
             report.items_found, len(report.scenes), len(report.rejected),
             len(report.duplicates), len(report.withheld))
    for r in report.rejected:
        log.warning("item %s rejected [%s]: %s", r.item_id, r.reason, r.message)


def _check_block_memory(plan: Plan, spec: WorkflowSpec) -> None:
    """A cube chunk holds every time slot: (T, B, chunk, chunk) float32 per task."""
    c = plan.grid.chunk
    need = len(plan.slots) * len(plan.outputs.bands) * c * c * 4
    limit = spec.limits.max_task_memory
    if need > limit:
        raise PlanTooLarge(
            f"one chunk of the cube holds {len(plan.slots)} time slots × "
            f"{len(plan.outputs.bands)} bands × {c} × {c} px float32 = {need / 2**20:,.0f} MiB, "
            f"above limits max_task_memory = {limit / 2**20:,.0f} MiB. Use smaller chunks "
            "(chunks=512), fewer bands or a shorter datetime, or raise "
            "limits={'max_task_memory': '8GiB'}"
        )
