"""``aquila run`` for products on object storage (``store: s3://bucket/prefix/name``).

The same steps as :func:`pipeline.engine.run.run_workflow` (discover, plan, one task per chunk,
lineage and label, publish, report), with the bucket's publication
(:mod:`pipeline.products.bucket`: each product an Icechunk repository, published by one
conditional branch move) and its lock (:mod:`pipeline.products.lease`: a conditional-write
lease beside each product, taken over from a dead or expired holder and reported). The run
report, the operator report and the STAC sidecars are objects beside the products; pictures
are not drawn (they need local files), which the report says.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.catalog.discover import href_policy, releasability_of
from pipeline.engine import events
from pipeline.engine.executor import Executor, Job, performance_note, task_key
from pipeline.engine.jobs import ForkedSummary, fork_chunk_job
from pipeline.engine.steps import (
    audience_dict,
    discover,
    grid_record,
    new_run_id,
    outputs_of,
    product_attrs,
    record_failure,
    target_grid,
)
from pipeline.errors import NoScenesError, SpecError, StoreBusy, StoreNotOurs
from pipeline.io.settings import open_files_for
from pipeline.plan.chunks import Plan, make_plan
from pipeline.plan.methods import mosaic_layers
from pipeline.products.bucket import BucketPublication, check_bucket_target
from pipeline.products.lease import bucket_lease
from pipeline.products.lineage import lineage
from pipeline.products.objectstore import (
    ObjectLocation,
    S3Settings,
    first_line,
    object_location,
    put_text,
)
from pipeline.products.report import OperatorReport, RunReport, write_finished
from pipeline.products.stac import product_stac_text, run_fields
from pipeline.products.store import create_cube, create_mosaic, write_root_attrs
from pipeline.spec.workflow import WorkflowSpec

if TYPE_CHECKING:
    from pipeline.engine.run import RunOptions

NO_PICTURES = ("no pictures drawn: the products are on object storage (the quicklook, lineage "
               "map, coverage plot and HTML report need local files); open the stores instead")


def bucket_stores(spec: WorkflowSpec) -> dict[Path, ObjectLocation] | None:
    """Each product store's bucket location, or None when every store is local; a workflow
    mixing the two is refused (one publication protocol per run)."""
    from pipeline.engine.run import product_stores

    stores = product_stores(spec)
    found = {s: object_location(s) for s in stores}
    if not any(found.values()):
        return None
    local = [str(s) for s, loc in found.items() if loc is None]
    if local:
        raise SpecError(
            f"products {', '.join(local)} are local and the others are in a bucket; put every "
            "product of a workflow on one kind of storage (or split the workflow)"
        )
    return {s: loc for s, loc in found.items() if loc is not None}


def run_in_bucket(
    spec: WorkflowSpec,
    stores: Mapping[Path, ObjectLocation],
    *,
    settings: S3Settings,
    spec_path: str,
    options: RunOptions,
    progress: Callable[[int, int], None] | None,
    on_event: Callable[[str, Any], None] | None,
    lease_seconds: float,
) -> RunReport:
    """Run ``spec`` into its bucket products; returns the report (also put beside them)."""
    from pipeline.engine.run import _check_publishable, _collect

    t0 = time.perf_counter()
    run_id, started = new_run_id()
    emit = events.logged(on_event, mode="run", workflow=spec.name, run_id=run_id)
    report = RunReport(run_id=run_id, workflow=spec.name, spec=spec_path,
                       started=started.isoformat())
    first = next(iter(stores.values()))
    report_at = first.sibling(f"{spec.name}.run-report.json")
    operator_at = first.sibling(f"{spec.name}.operator-report.json")
    rule = releasability_of(spec)
    operator: OperatorReport | None = None
    if rule is not None:
        report.audience = audience_dict(rule.audience)
        operator = OperatorReport(run_id, spec.name, report.audience)
    reader = replace(options.reader, policy=options.reader.policy or href_policy(spec),
                     session=run_id)
    locations = sorted(set(stores.values()), key=str)
    held = contextlib.ExitStack()
    pub: BucketPublication | None = None
    reraise: BaseException | None = None
    refused = False
    try:
        pub = _claim(locations, run_id=run_id, settings=settings, report=report, held=held,
                     lease_seconds=lease_seconds)
        found = discover(spec)
        scenes, rejects = list(found.scenes), list(found.rejects)
        report.withheld = len(found.withheld)
        if operator is not None:
            operator.withheld = [w.as_dict() for w in found.withheld]
            operator.conflicts = [c.as_dict() for c in found.conflicts]
            _put_operator(report, operator, operator_at, settings)
            emit("withheld", (len(found.withheld), operator_at))
        report.scenes_found = found.items_found
        report.rejected = [r.as_dict() for r in rejects]
        report.duplicates = [d.as_dict() for d in found.duplicates]
        report.notes += list(found.notes)
        report.seconds["discover"] = time.perf_counter() - t0
        emit("discovered", (len(scenes), rejects))
        if not scenes:
            raise NoScenesError(
                f"no usable scene in {spec.catalog} for collections={spec.collections}, "
                f"bbox={spec.bbox}, datetime={spec.datetime} ({len(rejects)} rejected)")
        grid = target_grid(spec, scenes)
        plan = make_plan(scenes, grid=grid, outputs=outputs_of(spec),
                         limits=spec.limits.plan_limits())
        if not plan.tasks:
            raise NoScenesError("no scene footprint touches the grid; check grid.bounds and bbox")
        report.grid = grid_record(spec, grid)
        report.tasks = len(plan.tasks)
        report.time_slots = len(plan.slots)
        emit("planned", plan)
        reader = replace(reader, max_open_local=open_files_for(plan.grid.chunk,
                                                               plan.outputs.read_side))
        attrs = product_attrs(spec, run_id)
        pub.start(lambda loc, zstore: _lay_out(plan, stores, loc, zstore, attrs))
        t1 = time.perf_counter()
        with Executor(options.cluster, direct=options.direct, seconds=report.seconds,
                      on_event=emit, client=options.client, span=("aquila", spec.name, run_id),
                      performance_report=options.performance_report) as executor:
            results, failed = executor.map(fork_chunk_job, _jobs(plan, stores, pub, spec.name),
                                           reader, progress=progress)
            report.dashboard = executor.dashboard
        performance_note(executor, report)
        report.seconds["compute"] = time.perf_counter() - t1
        _merge(plan, stores, pub, results)
        _collect(report, plan, [r.summary for r in results], failed)
        _check_publishable(report, stores=[str(s) for s in locations])
        sidecars = _commit(plan, stores, pub, report, attrs,
                           markings=dict(found.markings) if rule else None,
                           scale=rule.scale if rule else None)
        report.notes += pub.publish(sidecars, summary={"aquila:workflow": spec.name})
        _published(report, plan, stores)
        report.notes.append(NO_PICTURES)
        report.status = "partial" if (report.read_failures or failed) else "success"
    except BaseException as exc:  # noqa: BLE001 - every end is reported; see record_failure
        reraise = exc if record_failure(report, exc, stores=locations) else None
        if pub is not None and pub.published:
            done = ", ".join(map(str, pub.published))
            report.error = (f"{report.error}; already published before it failed: {done} "
                            "(the other products are unchanged)")
        refused = pub is None and isinstance(exc, StoreBusy | StoreNotOurs)
    held.close()  # the run's branches removed (main untouched unless published), leases back
    if pub is not None:
        report.notes += pub.left
    events.finished(report, mode="run")
    if refused:  # busy, or a prefix not Aquila's: it writes nothing at all
        return report
    _finish(report, t0, options.report_path, report_at, settings)
    if operator is not None and report.products.get("operator report") is None:
        _put_operator(report, operator, operator_at, settings)
    if reraise is not None:
        raise reraise
    return report


def _claim(locations: Sequence[ObjectLocation], *, run_id: str, settings: S3Settings,
           report: RunReport, held: contextlib.ExitStack, lease_seconds: float
           ) -> BucketPublication:
    """Before any work: every product prefix free or Aquila's, its lease taken (sorted), the
    branches of killed runs removed."""
    for store in locations:
        check_bucket_target(store, settings)  # before a lease object is put beside it
    leases = []
    for store in locations:
        lease, renewal = held.enter_context(
            bucket_lease(store, run_id=run_id, settings=settings, seconds=lease_seconds))
        leases.append(renewal)
        if lease.took_over is not None:
            report.notes.append(f"took over the lease of {store} left by "
                                f"{lease.took_over.describe()}, which is no longer running "
                                "(or whose lease had expired)")
    for store in locations:
        check_bucket_target(store, settings)  # again, now that no other Aquila run can change it

    def lost() -> str | None:
        return next((r.lost for r in leases if r.lost), None)

    pub = held.enter_context(BucketPublication(locations, run_id=run_id, settings=settings,
                                               lease_lost=lost))
    report.notes += pub.recover()
    return pub


def _lay_out(plan: Plan, stores: Mapping[Path, ObjectLocation], store: ObjectLocation,
             zstore: Any, attrs: dict[str, Any]) -> None:
    """The layout of the product at ``store`` (cube or mosaic), written into ``zstore``."""
    o = plan.outputs
    if o.cube_store is not None and stores[o.cube_store] == store:
        create_cube(zstore, plan.grid, o.bands, plan.slots, attrs=attrs, quantity=o.quantity,
                    zarr_format=3)
        return
    for m in o.mosaics:
        if stores[m.store] == store:
            layers = mosaic_layers(m.method, blend_width=m.blend_width)
            create_mosaic(zstore, plan.grid, o.bands, method=m.method, layers=layers,
                          attrs=attrs, quantity=o.quantity, zarr_format=3)


def _jobs(plan: Plan, stores: Mapping[Path, ObjectLocation], pub: BucketPublication,
          product: str) -> list[Job]:
    """One job per chunk task, with a fork of each product's run branch (keys as a run's on
    disk: the run id is part of the hash, so two runs never share a task)."""
    o = plan.outputs
    jobs = []
    for task in plan.tasks:
        ident = repr((task.chunk, [(s.slot, [(sc.id, [b.href for b in sc.bands])
                                             for sc in s.scenes]) for s in task.slots],
                      plan.outputs, pub.run_id))
        cube = pub.fork(stores[o.cube_store]) if o.cube_store is not None else None
        mosaics = tuple(pub.fork(stores[m.store]) for m in o.mosaics)
        jobs.append(Job(task_key(product, "chunk", task.chunk.name, ident), task.chunk.name,
                        (task, o, cube, mosaics)))
    return jobs


def _merge(plan: Plan, stores: Mapping[Path, ObjectLocation], pub: BucketPublication,
           results: Sequence[ForkedSummary]) -> None:
    o = plan.outputs
    if o.cube_store is not None:
        pub.merge(stores[o.cube_store], [r.cube_fork for r in results])
    for k, m in enumerate(o.mosaics):
        pub.merge(stores[m.store], [r.mosaic_forks[k] for r in results])


def _commit(plan: Plan, stores: Mapping[Path, ObjectLocation], pub: BucketPublication,
            report: RunReport, attrs: dict[str, Any], *, markings: Any, scale: Any
            ) -> dict[ObjectLocation, str]:
    """Lineage and label into each product's root attributes; each product's STAC Item text."""
    lin = lineage(plan, report.scenes_used, complete=not report.chunk_failures,
                  audience=report.audience, markings=markings, scale=scale)
    o = plan.outputs
    sidecars: dict[ObjectLocation, str] = {}
    fields = run_fields(plan, report)
    products = ([(o.cube_store, "cube", lin.cube)] if o.cube_store is not None else []) + [
        (m.store, f"mosaic ({m.method})", a) for m, a in zip(o.mosaics, lin.mosaics, strict=True)]
    for path, kind, product_attrs_ in products:
        store = stores[path]
        write_root_attrs(pub.zarr_store(store), product_attrs_)
        sidecars[store] = product_stac_text(
            Path(store.name), kind=kind, bbox=lin.bbox, times=lin.times, label=lin.label,
            slot_labels=lin.slot_labels if kind == "cube" else (), icechunk=True,
            in_bucket=True, **fields)
        report.labels[kind] = lin.label
    if o.mosaics and report.audience is not None:
        report.labels["slots"] = list(lin.slot_labels)
    return sidecars


def _published(report: RunReport, plan: Plan, stores: Mapping[Path, ObjectLocation]) -> None:
    o = plan.outputs
    if o.cube_store:
        report.products["cube"] = str(stores[o.cube_store])
    for m in o.mosaics:
        report.products[f"mosaic ({m.method})"] = str(stores[m.store])


def _put_operator(report: RunReport, operator: OperatorReport, where: ObjectLocation,
                  settings: S3Settings) -> None:
    try:
        put_text(where, json.dumps(asdict(operator), indent=2, default=str), settings)
    except Exception as exc:  # noqa: BLE001 - said in the report, never fails the run
        report.report_error = f"operator report not put at {where}: {first_line(exc)}"
        return
    report.products["operator report"] = str(where)


def _finish(report: RunReport, t0: float, local: Path | None, where: ObjectLocation,
            settings: S3Settings) -> None:
    """The report at ``--report`` (a local file) if given, else beside the products; where the
    bucket refuses, in the temporary folder (``report_error`` says so)."""
    if local is not None:
        write_finished(report, t0, local)
        return
    import datetime as dt
    import tempfile

    report.finished = dt.datetime.now(dt.UTC).isoformat()
    report.seconds["total"] = time.perf_counter() - t0
    report.products.setdefault("report", str(where))
    try:
        put_text(where, json.dumps(asdict(report), indent=2, default=str), settings)
    except Exception as exc:  # noqa: BLE001 - the report must land somewhere
        fallback = Path(tempfile.gettempdir()) / f"aquila-{report.run_id}.run-report.json"
        report.products["report"] = str(fallback)
        report.report_error = (f"run report not put at {where}: {first_line(exc)}; written to "
                               f"{fallback}")
        report.write(fallback)
