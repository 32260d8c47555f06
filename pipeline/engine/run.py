"""Spec → scenes → plan → one Dask task per output chunk → products and a run report.

Reads like a table of contents: :func:`run_workflow` calls a few named steps. The heavy arrays
never travel: each task reads, computes and writes its own chunk, and returns a small summary.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.catalog.discover import href_policy, releasability_of
from pipeline.catalog.markings import Marking, Scale
from pipeline.engine import events
from pipeline.engine.bucket_run import bucket_stores, run_in_bucket
from pipeline.engine.cluster import ClusterOptions
from pipeline.engine.executor import (
    Executor,
    Job,
    chunks_failed,
    performance_note,
    task_key,
)
from pipeline.engine.jobs import ChunkSummary, Phases, run_job
from pipeline.engine.steps import (
    audience_dict,
    discover,
    grid_record,
    new_run_id,
    outputs_of,
    product_attrs,
    record_failure,
    record_withheld,
    target_grid,
    write_operator,
)
from pipeline.errors import (
    NoScenesError,
    RunError,
    StoreBusy,
    StoreNotOurs,
    without_window,
)
from pipeline.io.settings import ReaderSettings, open_files_for
from pipeline.plan.chunks import ChunkTask, Outputs, Plan, make_plan
from pipeline.plan.fuse import Block, fuse
from pipeline.plan.methods import mosaic_layers
from pipeline.products.lease import LEASE_SECONDS
from pipeline.products.lineage import lineage
from pipeline.products.lock import canonical, store_locks
from pipeline.products.objectstore import object_location, s3_settings
from pipeline.products.publish import Publication, check_target, recover_stale
from pipeline.products.report import OperatorReport, RunReport, write_finished
from pipeline.products.stac import product_stac_text, run_fields
from pipeline.products.store import create_cube, create_mosaic, write_attrs
from pipeline.spec.workflow import WorkflowSpec

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RunOptions:
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    direct: bool = False  # run the chunk function in this process, without Dask
    reader: ReaderSettings = field(default_factory=ReaderSettings)
    report_path: Path | None = None
    operator_report_path: Path | None = None  # default: beside the run report
    # a connected distributed.Client to run the chunk tasks on instead of opening a cluster
    # (``cluster`` is then ignored); the run never closes it
    client: Any = field(default=None, compare=False, repr=False)
    # an HTML file recording the run's use of Dask (distributed.performance_report); Dask only
    performance_report: Path | None = None
    # bucket products: how long a lease outlives its holder's last renewal (lease.py)
    lease_seconds: float = LEASE_SECONDS
    # compute small chunks 2 x 2 per task where the pixels cannot change (pipeline.plan.fuse);
    # False: one task per chunk
    fuse: bool = True


# --------------------------------------------------------------------------- steps


def create_stores(plan: Plan, attrs: dict[str, Any]) -> None:
    o = plan.outputs
    if o.cube_store is not None:
        create_cube(o.cube_store, plan.grid, o.bands, plan.slots, attrs=attrs,
                    quantity=o.quantity, zarr_format=2 if o.cube_format == "zarr2" else 3)
    for m in o.mosaics:
        layers = mosaic_layers(m.method, blend_width=m.blend_width)
        create_mosaic(m.store, plan.grid, o.bands, method=m.method, layers=layers, attrs=attrs,
                      quantity=o.quantity, zarr_format=2 if m.format == "zarr2" else 3)


# --------------------------------------------------------------------------- the run


def run_workflow(
    spec: WorkflowSpec,
    *,
    spec_path: str = "",
    options: RunOptions | None = None,
    progress: Progress | None = None,
    on_event: Callable[[str, Any], None] | None = None,
) -> RunReport:
    """Run a workflow end to end and return its report (also written as JSON)."""
    options = options or RunOptions()
    in_bucket = bucket_stores(spec)  # products on object storage: their own publication
    if in_bucket is not None:
        return run_in_bucket(spec, in_bucket, settings=s3_settings(), spec_path=spec_path,
                             options=options, progress=progress, on_event=on_event,
                             lease_seconds=options.lease_seconds)
    t0 = time.perf_counter()
    run_id, started = new_run_id()
    emit = events.logged(on_event, mode="run", workflow=spec.name, run_id=run_id)
    report = RunReport(
        run_id=run_id, workflow=spec.name, spec=spec_path, started=started.isoformat()
    )
    report_path = options.report_path or default_report_path(spec)
    rule = releasability_of(spec)
    operator: OperatorReport | None = None
    if rule is not None:
        report.audience = audience_dict(rule.audience)
        operator = OperatorReport(run_id, spec.name, report.audience)
    operator_path = options.operator_report_path or report_path.with_name(
        f"{spec.name}.operator-report.json"
    )
    reader = replace(options.reader, policy=options.reader.policy or href_policy(spec),
                     session=run_id)
    held = contextlib.ExitStack()  # the stores' locks and this run's build directories
    pub: Publication | None = None  # set once the stores are claimed: the run has started
    reraise: BaseException | None = None
    refused = False
    try:
        pub = claim_stores(spec, run_id=run_id, report=report, held=held)
        found = discover(spec)
        scenes, rejects = list(found.scenes), list(found.rejects)
        report.withheld = len(found.withheld)
        if operator is not None:
            record_withheld(operator, operator_path, found.withheld, found.conflicts, emit)
        report.scenes_found = found.items_found
        report.rejected = [r.as_dict() for r in rejects]
        report.duplicates = [d.as_dict() for d in found.duplicates]
        report.notes += list(found.notes)
        report.seconds["discover"] = time.perf_counter() - t0
        emit("discovered", (len(scenes), rejects))
        if not scenes:
            raise NoScenesError(
                f"no usable scene in {spec.catalog} for collections={spec.collections}, "
                f"bbox={spec.bbox}, datetime={spec.datetime} ({len(rejects)} rejected)"
            )
        grid = target_grid(spec, scenes)
        plan = make_plan(
            scenes, grid=grid, outputs=outputs_of(spec), limits=spec.limits.plan_limits()
        )
        if not plan.tasks:
            raise NoScenesError("no scene footprint touches the grid; check grid.bounds and bbox")
        report.grid = grid_record(spec, grid)
        report.tasks = len(plan.tasks)
        report.time_slots = len(plan.slots)
        emit("planned", plan)
        reader = replace(reader, max_open_local=open_files_for(plan.grid.chunk,
                                                               plan.outputs.read_side))
        markings = dict(found.markings)
        attrs = product_attrs(spec, run_id)
        work = replace(plan, outputs=_in_builds(plan.outputs, pub))  # written beside, swapped in
        pub.start()
        create_stores(work, attrs)
        t1 = time.perf_counter()
        with Executor(options.cluster, direct=options.direct, seconds=report.seconds,
                      on_event=emit, client=options.client, span=("aquila", spec.name, run_id),
                      performance_report=options.performance_report) as executor:
            jobs = chunk_jobs(work, spec.name,
                              threads=cluster_threads(options, executor) if options.fuse
                              else None, max_memory=spec.limits.max_task_memory)
            report.compute_tasks = len(jobs)
            results, failed = executor.map(run_job, jobs, reader, progress=progress)
            summaries = [s for r in results for s in r]
            report.dashboard = executor.dashboard
        performance_note(executor, report)
        report.seconds["compute"] = time.perf_counter() - t1
        _collect(report, plan, summaries, failed)
        _check_publishable(report, stores=pub.stores)
        sidecars = _commit(work, report, attrs, markings=markings if rule else None,
                           scale=rule.scale if rule else None, final=_final_of(pub))
        report.notes += pub.publish(sidecars)
        _published(report, plan)
        report.status = "partial" if (report.read_failures or failed) else "success"
    except BaseException as exc:  # noqa: BLE001 - every end is reported; see record_failure
        reraise = exc if record_failure(report, exc, stores=product_stores(spec)) else None
        if pub is not None and pub.published:  # failed part-way through publishing: say so
            report.products.update({f"published before the failure: {s.name}": str(s)
                                    for s in pub.published})
            report.error = (f"{report.error}; already published before it failed: "
                            f"{', '.join(map(str, pub.published))} (the other products are "
                            "unchanged)")
        refused = pub is None and isinstance(exc, StoreBusy | StoreNotOurs)
    held.close()  # unpublished builds removed (the old products untouched), locks released
    events.finished(report, mode="run")
    if refused:  # before it started (busy, a path not Aquila's): it writes nothing at all
        return report
    write_finished(report, t0, report_path)
    if operator is not None:
        write_operator(report, operator, operator_path)
    if reraise is not None:
        raise reraise
    return report


def claim_stores(
    spec: WorkflowSpec, *, run_id: str, report: RunReport, held: contextlib.ExitStack
) -> Publication:
    """Before any work: every product path must be free or a product Aquila wrote; take each
    store's lock (sorted; :class:`StoreBusy` if another run holds one); recover what killed
    runs left beside the stores. Returns the run's (not yet started) build directories."""
    stores = [canonical(s) for s in product_stores(spec)]
    for store in stores:
        check_target(store)  # before the lock file is made beside something not ours
    held.enter_context(store_locks(stores, run_id=run_id))
    for store in stores:
        check_target(store)  # again, now that no other Aquila run can change it
        report.notes += recover_stale(store)
    return held.enter_context(Publication(stores, run_id=run_id))


def product_stores(spec: WorkflowSpec) -> list[Path]:
    p = spec.products
    return [m.store for m in p.all_mosaics] + ([p.cube.store] if p.cube else [])


def _in_builds(outputs: Outputs, pub: Publication) -> Outputs:
    """The same outputs, each store redirected to its build directory."""
    def build(store: Path) -> Path:
        return pub.build_of(canonical(store))

    return replace(
        outputs,
        cube_store=build(outputs.cube_store) if outputs.cube_store is not None else None,
        mosaics=tuple(replace(m, store=build(m.store)) for m in outputs.mosaics),
    )


def _final_of(pub: Publication) -> Callable[[Path], Path]:
    finals = {pub.build_of(s): s for s in pub.stores}
    return finals.__getitem__


def chunk_jobs(plan: Plan, product: str, *, threads: int | None = None,
               max_memory: int | None = None) -> list[Job]:
    """One job per chunk task, or per fused 2 × 2 block of small chunks
    (:mod:`pipeline.plan.fuse`) where the run knows its cluster's ``threads`` and keeps at
    least twice as many jobs, each block within ``max_memory`` (the spec's
    ``limits.max_task_memory``, which the plan checked each chunk task against). A job's key
    (:func:`task_key`: ``aquila-<product>-chunk-r<row>-c<col>-<hash>``, a block's named by its
    first chunk) names the product and the chunk, with
    a hash of its inputs and outputs (never a scene id); the outputs are the run's build
    directories, so two runs never share a key."""
    def ident(task: ChunkTask) -> tuple[Any, ...]:
        return (task.chunk, [(s.slot, [(sc.id, [b.href for b in sc.bands]) for sc in s.scenes])
                             for s in task.slots])

    work = (fuse(plan.tasks, plan.grid, plan.outputs, min_tasks=2 * threads,
                 max_memory=max_memory) if threads else plan.tasks)
    jobs = []
    for w in work:
        if isinstance(w, Block):
            name = w.task.chunk.name
            key = task_key(product, "chunk", name,
                           repr(([ident(m) for m in w.members], plan.outputs)))
            jobs.append(Job(key, name, (w, plan.outputs),
                            chunks=tuple(m.chunk.name for m in w.members)))
        else:
            key = task_key(product, "chunk", w.chunk.name, repr((*ident(w), plan.outputs)))
            jobs.append(Job(key, w.chunk.name, (w, plan.outputs)))
    return jobs


def cluster_threads(options: RunOptions, executor: Executor | None = None) -> int | None:
    """The threads the run's tasks will share: one in a direct run, the caller's client's, a
    local cluster's workers × threads, an existing scheduler's (``address``: its workers as the
    ``executor`` connects; none yet gives None); None for a profile's cluster, which starts and
    scales its workers after the tasks are made (its size is not known here)."""
    c = options.cluster
    if options.direct:
        return 1
    if options.client is not None:
        client = options.client
    elif c.kind == "local":
        return c.n_workers * c.threads_per_worker
    elif c.kind == "address" and executor is not None:
        client = executor.client
    else:
        return None
    return sum(client.nthreads().values()) or None


def _check_publishable(report: RunReport, *, stores: Sequence[object]) -> None:
    """Publish only a product as good as its inputs allow: a failed chunk task would leave a
    hole of NaN, and no scene read would leave an empty product, either replacing a good one.
    Scenes that failed to read (the rest read fine) give a ``partial`` product, published."""
    kept = f"nothing was published ({', '.join(map(str, stores))} unchanged)"
    if report.chunk_failures:
        raise chunks_failed(report.chunk_failures, report.tasks, kept)
    if report.read_failures and not report.scenes_used:  # (all masked, all read: a result)
        raise RunError(
            f"no scene could be used: {len(report.read_failures)} failed to read and the rest "
            f"gave no valid pixel (see read_failures in the report); {kept}",
            reason="nothing_read",
        )


def report_location(spec: WorkflowSpec) -> Path | str:
    """Where the run report goes: :func:`default_report_path`, or its ``s3://`` URL for bucket
    products."""
    path = default_report_path(spec)
    loc = object_location(path)
    return path if loc is None else loc.url


def default_report_path(spec: WorkflowSpec) -> Path:
    p = spec.products
    store = p.all_mosaics[0].store if p.all_mosaics else p.cube.store  # type: ignore[union-attr]
    return store.parent / f"{spec.name}.run-report.json"


def _collect(
    report: RunReport, plan: Plan, summaries: Iterable[ChunkSummary], failed: list[dict]
) -> None:
    used: set[str] = set()
    failures: dict[tuple[str, str], list[str]] = {}
    phases = Phases()
    for s in summaries:
        used.update(s.used)
        phases.add(s.phases)
        report.pixels_written += s.pixels_written
        for step, sec in s.seconds.items():  # summed over tasks: where worker time went
            report.seconds[f"tasks_{step}"] = report.seconds.get(f"tasks_{step}", 0.0) + sec
        for scene_id, reason, message in s.failures:
            # one entry per scene and error, whichever chunk's window met it (a corrupt file
            # fails window by window: pipeline.io.reader)
            error = f"[{reason}] {without_window(message)}"
            failures.setdefault((scene_id, error), []).append(s.chunk)
    order = {s.id: i for i, s in enumerate(plan.scenes)}
    report.scenes_used = sorted(used, key=lambda i: order.get(i, 0))
    report.read_failures = [
        {"item": sid, "error": msg, "chunks": sorted(ch)}
        for (sid, msg), ch in sorted(failures.items())
    ]
    report.chunk_failures = failed
    report.seconds_by_phase = phases.ordered()


def _published(report: RunReport, plan: Plan) -> None:
    """List the products once they are in place (a failed run lists none: nothing changed)."""
    o = plan.outputs
    if o.cube_store:
        report.products["cube"] = str(o.cube_store)
    for m in o.mosaics:
        report.products[f"mosaic ({m.method})"] = str(m.store)


def _commit(
    plan: Plan,
    report: RunReport,
    attrs: dict[str, Any],
    *,
    markings: Mapping[tuple[str, str], Marking] | None = None,  # by Scene.key
    scale: Scale | None = None,
    final: Callable[[Path], Path] = lambda store: store,
) -> dict[Path, str]:
    """Record lineage and the releasability label in each (build) store once every chunk is
    written; return each product's STAC sidecar text by its ``final`` store path, to be put in
    place when the product is published."""
    lin = lineage(plan, report.scenes_used, complete=not report.chunk_failures,
                  audience=report.audience, markings=markings, scale=scale)
    o = plan.outputs
    sidecars: dict[Path, str] = {}
    if o.cube_store is not None:
        write_attrs(o.cube_store, lin.cube)
        store = final(o.cube_store)
        sidecars[store] = product_stac_text(store, kind="cube", bbox=lin.bbox, times=lin.times,
                                            label=lin.label, slot_labels=lin.slot_labels,
                                            source_store=o.cube_store, **run_fields(plan, report))
        report.labels["cube"] = lin.label
    for m, mosaic_attrs in zip(o.mosaics, lin.mosaics, strict=True):
        write_attrs(m.store, mosaic_attrs)
        store = final(m.store)
        sidecars[store] = product_stac_text(store, kind=f"mosaic ({m.method})", bbox=lin.bbox,
                                            times=lin.times, label=lin.label,
                                            source_store=m.store, **run_fields(plan, report))
        report.labels[f"mosaic ({m.method})"] = lin.label
    if o.mosaics and report.audience is not None:
        report.labels["slots"] = list(lin.slot_labels)
    return sidecars
