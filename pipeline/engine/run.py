"""Spec → scenes → plan → one Dask task per output chunk → products and a run report.

Reads like a table of contents: :func:`run_workflow` calls a few named steps. The heavy arrays
never travel: each task reads, computes and writes its own chunk, and returns a small summary.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.catalog.discover import Discovery, href_policy, releasability_of
from pipeline.catalog.discover import discover as discover_items
from pipeline.catalog.markings import Marking, Scale
from pipeline.catalog.scene import Scene
from pipeline.engine.chunk import ChunkSummary, process_chunk
from pipeline.engine.cluster import ClusterOptions, open_client
from pipeline.errors import (
    AquilaError,
    InputError,
    NoScenesError,
    RunError,
    SpecError,
    StoreBusy,
    StoreNotOurs,
    StoreUnwritable,
)
from pipeline.io.reader import RasterReader, ReaderSettings
from pipeline.plan.calibration import radiometry_outputs
from pipeline.plan.chunks import ChunkTask, MosaicOutput, Outputs, Plan, make_plan
from pipeline.plan.grid import TargetGrid
from pipeline.products.lineage import lineage
from pipeline.products.lock import canonical, store_locks
from pipeline.products.publish import Publication, check_target, recover_stale
from pipeline.products.report import OperatorReport, RunReport
from pipeline.products.stac import product_stac_text
from pipeline.products.store import create_cube, create_mosaic, write_attrs
from pipeline.spec.methods import mosaic_layers
from pipeline.spec.workflow import BestPixelSpec, MosaicProduct, WorkflowSpec

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RunOptions:
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    direct: bool = False  # run the chunk function in this process, without Dask
    reader: ReaderSettings = field(default_factory=ReaderSettings)
    report_path: Path | None = None
    operator_report_path: Path | None = None  # default: beside the run report


# --------------------------------------------------------------------------- steps


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
        mosaics=tuple(mosaic_output(m, spec) for m in p.all_mosaics),
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
    )


def create_stores(plan: Plan, attrs: dict[str, Any]) -> None:
    o = plan.outputs
    if o.cube_store is not None:
        create_cube(o.cube_store, plan.grid, o.bands, plan.slots, attrs=attrs)
    for m in o.mosaics:
        layers = mosaic_layers(m.method, blend_width=m.blend_width)
        create_mosaic(m.store, plan.grid, o.bands, method=m.method, layers=layers, attrs=attrs)


def task_key(task: ChunkTask, outputs: Outputs) -> str:
    """Readable task name: the chunk and a hash of its inputs and outputs (no scene ids). The
    outputs are the run's build directories, so two runs never share a task key."""
    ident = repr(
        (
            task.chunk,
            [
                (s.slot, [(sc.id, [b.href for b in sc.bands]) for sc in s.scenes])
                for s in task.slots
            ],
            outputs,
        )
    )
    return f"chunk-{task.chunk.name}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


_PROCESS_READERS: dict[ReaderSettings, RasterReader] = {}


def _chunk_task(task: ChunkTask, outputs: Outputs, settings: ReaderSettings) -> ChunkSummary:
    """The Dask task: one reader per worker process and settings (which carry the run's href
    policy), so a run's tasks share open files and cache, and never another run's policy."""
    reader = _PROCESS_READERS.get(settings)  # per-process state on purpose: datasets stay open
    if reader is None:
        while len(_PROCESS_READERS) >= 4:  # a long-lived worker serving many runs
            _PROCESS_READERS.pop(next(iter(_PROCESS_READERS)))
        reader = _PROCESS_READERS[settings] = RasterReader(settings)
    return process_chunk(task, outputs=outputs, reader=reader)


def execute_direct(
    plan: Plan, settings: ReaderSettings, progress: Progress | None = None
) -> list[ChunkSummary]:
    """The same chunk function, in this process, no Dask."""
    reader = RasterReader(settings)
    out = []
    try:
        for i, task in enumerate(plan.tasks, 1):
            out.append(process_chunk(task, outputs=plan.outputs, reader=reader))
            if progress:
                progress(i, len(plan.tasks))
    finally:
        reader.close()
    return out


def execute_dask(
    client, plan: Plan, settings: ReaderSettings, progress: Progress | None = None
) -> tuple[list[ChunkSummary], list[dict]]:
    """Submit one task per chunk and gather the summaries as they complete."""
    from distributed import as_completed

    futures = {
        client.submit(
            _chunk_task,
            task,
            plan.outputs,
            settings,
            key=task_key(task, plan.outputs),
            pure=False,
            retries=1,
        ): task
        for task in plan.tasks
    }
    summaries: list[ChunkSummary] = []
    failed: list[dict] = []
    try:
        for done, fut in enumerate(as_completed(futures), 1):
            task = futures[fut]
            try:
                summaries.append(fut.result())
            except Exception as exc:  # noqa: BLE001 - reported per chunk, the run goes on
                failed.append({"chunk": task.chunk.name, "error": f"{type(exc).__name__}: {exc}"})
            if progress:
                progress(done, len(futures))
    except KeyboardInterrupt:
        # a shared cluster must not start this run's queued tasks once its build directories
        # are gone (tasks already running cannot be stopped); the interrupt is what matters
        with contextlib.suppress(Exception):
            client.cancel(list(futures))
        raise
    return summaries, failed


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
    emit = on_event or (lambda kind, value: None)
    t0 = time.perf_counter()
    started = dt.datetime.now(dt.UTC)
    run_id = f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    report = RunReport(
        run_id=run_id, workflow=spec.name, spec=spec_path, started=started.isoformat()
    )
    report_path = options.report_path or default_report_path(spec)
    rule = releasability_of(spec)
    operator: OperatorReport | None = None
    if rule is not None:
        report.audience = _audience_dict(rule.audience)
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
            operator.withheld = [w.as_dict() for w in found.withheld]
            operator.conflicts = [c.as_dict() for c in found.conflicts]
            operator.write(operator_path)  # before any pixel is read
            emit("withheld", (len(found.withheld), operator_path))
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
        markings = dict(found.markings)
        attrs = _product_attrs(spec, plan, run_id)
        work = replace(plan, outputs=_in_builds(plan.outputs, pub))  # written beside, swapped in
        pub.start()
        create_stores(work, attrs)
        t1 = time.perf_counter()
        failed: list[dict] = []
        if options.direct:
            summaries = execute_direct(work, reader, progress)
        else:
            with _client(options.cluster) as client:
                report.seconds["cluster_start"] = time.perf_counter() - t1
                report.dashboard = client.dashboard_link
                emit("dashboard", client.dashboard_link)
                summaries, failed = execute_dask(client, work, reader, progress)
        report.seconds["compute"] = time.perf_counter() - t1
        _collect(report, plan, summaries, failed)
        _check_publishable(report, stores=pub.stores)
        sidecars = _commit(work, report, attrs, markings=markings if rule else None,
                           scale=rule.scale if rule else None, final=_final_of(pub))
        report.notes += pub.publish(sidecars)
        _published(report, plan)
        report.status = "partial" if (report.read_failures or failed) else "success"
    except BaseException as exc:  # noqa: BLE001 - every end is reported; see _record_failure
        reraise = exc if _record_failure(report, exc, stores=product_stores(spec)) else None
        if pub is not None and pub.published:  # failed part-way through publishing: say so
            report.products.update({f"published before the failure: {s.name}": str(s)
                                    for s in pub.published})
            report.error = (f"{report.error}; already published before it failed: "
                            f"{', '.join(map(str, pub.published))} (the other products are "
                            "unchanged)")
        refused = pub is None and isinstance(exc, StoreBusy | StoreNotOurs)
    held.close()  # unpublished builds removed (the old products untouched), locks released
    if refused:  # before it started (busy, a path not Aquila's): it writes nothing at all
        return report
    _finish(report, t0, report_path)
    if operator is not None:
        _write_operator(report, operator, operator_path)
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


@contextlib.contextmanager
def _client(cluster: ClusterOptions):
    """:func:`open_client`, with a scheduler that cannot be reached said in one line."""
    stack = contextlib.ExitStack()
    try:
        client = stack.enter_context(open_client(cluster))
    except OSError as exc:  # distributed: OSError("Timed out trying to connect ...")
        where = f"the scheduler {cluster.scheduler}" if cluster.scheduler else "a local cluster"
        raise RunError(
            f"could not connect to {where}: {exc}; check --scheduler (or run without it "
            "for a local cluster). Nothing was published",
            reason="cluster_unreachable",
        ) from exc
    with stack:
        yield client


def _check_publishable(report: RunReport, *, stores: Sequence[Path]) -> None:
    """Publish only a product as good as its inputs allow: a failed chunk task would leave a
    hole of NaN, and no scene read would leave an empty product, either replacing a good one.
    Scenes that failed to read (the rest read fine) give a ``partial`` product, published."""
    kept = f"nothing was published ({', '.join(map(str, stores))} unchanged)"
    if report.chunk_failures:
        first = report.chunk_failures[0]
        raise RunError(
            f"{len(report.chunk_failures)} of {report.tasks} chunk tasks failed (first: chunk "
            f"{first['chunk']}: {first['error']}); {kept}: fix the cause and run again",
            reason="chunks_failed",
        )
    if report.read_failures and not report.scenes_used:  # (all masked, all read: a result)
        raise RunError(
            f"no scene could be used: {len(report.read_failures)} failed to read and the rest "
            f"gave no valid pixel (see read_failures in the report); {kept}",
            reason="nothing_read",
        )


def _record_failure(report: RunReport, exc: BaseException, *, stores: Sequence[Path]) -> bool:
    """Put how the run ended into the report; True if ``exc`` must be raised again (Ctrl-C, and
    errors that are not Aquila's or the storage's: bugs keep their traceback)."""
    if isinstance(exc, OSError) and exc.errno in StoreUnwritable.ERRNOS:
        doing = f"writing {', '.join(map(str, stores))}"
        exc = StoreUnwritable.from_os_error(exc, doing=doing)
    if isinstance(exc, StoreBusy):
        report.status = "busy"
    elif isinstance(exc, InputError):
        report.status = "bad_input"
    elif isinstance(exc, AquilaError):
        report.status = "failed"
    elif isinstance(exc, KeyboardInterrupt):
        report.status = "interrupted"
        report.error = ("[interrupted] stopped by Ctrl-C; nothing was published, the previous "
                        "products are unchanged")
        return True
    else:
        report.status = "failed"
        report.error = f"{type(exc).__name__}: {exc}"
        return True
    report.error = f"[{exc.reason}] {exc.message}"
    return False


def _write_operator(report: RunReport, operator: OperatorReport, path: Path) -> None:
    try:
        operator.write(path)
    except OSError as exc:
        report.report_error = f"operator report not written to {path}: {exc.strerror}"
        return
    report.products.setdefault("operator report", str(path))


def default_report_path(spec: WorkflowSpec) -> Path:
    p = spec.products
    store = p.all_mosaics[0].store if p.all_mosaics else p.cube.store  # type: ignore[union-attr]
    return store.parent / f"{spec.name}.run-report.json"


def _finish(report: RunReport, t0: float, path: Path) -> None:
    """Write the report; where its folder refuses (full, read-only), write it to the temporary
    folder instead and say so in ``report_error`` (the CLI prints it)."""
    report.finished = dt.datetime.now(dt.UTC).isoformat()
    report.seconds["total"] = time.perf_counter() - t0
    try:
        report.write(path)
    except OSError as exc:
        report.report_error = f"run report not written to {path}: {exc.strerror}"
        try:  # gettempdir itself probes by writing, so it may fail too
            fallback = Path(tempfile.gettempdir()) / f"aquila-{report.run_id}.run-report.json"
            report.write(fallback)
        except OSError as again:
            report.report_error += f", nor to a temporary folder: {again.strerror}"
            return
        report.report_error += f"; written to {fallback} instead"
        path = fallback
    report.products.setdefault("report", str(path))


def _collect(
    report: RunReport, plan: Plan, summaries: Iterable[ChunkSummary], failed: list[dict]
) -> None:
    used: set[str] = set()
    failures: dict[tuple[str, str], list[str]] = {}
    for s in summaries:
        used.update(s.used)
        report.pixels_written += s.pixels_written
        for step, sec in s.seconds.items():  # summed over tasks: where worker time went
            report.seconds[f"tasks_{step}"] = report.seconds.get(f"tasks_{step}", 0.0) + sec
        for scene_id, reason, message in s.failures:
            failures.setdefault((scene_id, f"[{reason}] {message}"), []).append(s.chunk)
    order = {s.id: i for i, s in enumerate(plan.scenes)}
    report.scenes_used = sorted(used, key=lambda i: order.get(i, 0))
    report.read_failures = [
        {"item": sid, "error": msg, "chunks": sorted(ch)}
        for (sid, msg), ch in sorted(failures.items())
    ]
    report.chunk_failures = failed


def _published(report: RunReport, plan: Plan) -> None:
    """List the products once they are in place (a failed run lists none: nothing changed)."""
    o = plan.outputs
    if o.cube_store:
        report.products["cube"] = str(o.cube_store)
    for m in o.mosaics:
        report.products[f"mosaic ({m.method})"] = str(m.store)


def _product_attrs(spec: WorkflowSpec, plan: Plan, run_id: str) -> dict[str, Any]:
    return {
        "title": f"Aquila {spec.name}",
        "aquila:run_id": run_id,
        "aquila:workflow": spec.model_dump(mode="json"),
        "aquila:status": "incomplete",  # set to "complete" by the commit step
    }


def _audience_dict(audience) -> dict[str, Any]:
    return {"releasable_to": sorted(audience.members), "group": audience.name,
            "clearance": audience.clearance}


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
                                            label=lin.label, slot_labels=lin.slot_labels)
        report.labels["cube"] = lin.label
    for m, mosaic_attrs in zip(o.mosaics, lin.mosaics, strict=True):
        write_attrs(m.store, mosaic_attrs)
        store = final(m.store)
        sidecars[store] = product_stac_text(store, kind=f"mosaic ({m.method})", bbox=lin.bbox,
                                            times=lin.times, label=lin.label)
        report.labels[f"mosaic ({m.method})"] = lin.label
    if o.mosaics and report.audience is not None:
        report.labels["slots"] = list(lin.slot_labels)
    return sidecars
