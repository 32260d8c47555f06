"""``aquila nightly``: append what the catalog gained since the last night, atomically.

The whole night, as a table of contents (:meth:`_Night.run`):

1. take the store's lock (one writer; a dead run's lock is taken over);
2. open the Icechunk store, drop branches left by killed runs, read the committed ledger;
3. list the catalog, normalising only items the ledger does not hold unchanged, and take every
   asset's content identity (a file rewritten under an unchanged item is re-read);
4. plan tonight as a full run would (duplicates resolved, slots numbered), re-make the
   committed plan from the ledger, and diff the two (:mod:`pipeline.plan.increment`);
5. nothing to do: say so and commit nothing;
6. otherwise, on a private branch: prepare the layout, run one task per chunk order in forks,
   merge; a scene that failed to read permanently (or after its retries) is dropped and the
   transaction rebuilt without it from the same base, so no slot is ever filled with nodata;
7. add lineage and the new ledger, commit, and publish by moving ``main`` in one step;
8. write the run report (always, also for failed and busy runs).

See :mod:`pipeline.products.transaction` for the store protocol and README "Nightly runs" for the
guarantees and how to open past nights.

Why one module of ~500 lines: it is the night's driver, one class whose methods are the steps
above in order, and reads best whole. Everything else is elsewhere: what a night shares with a
run in :mod:`pipeline.engine.steps` and :mod:`pipeline.engine.executor`, the pure bookkeeping in
:mod:`pipeline.plan.tonight`, the store's side in :mod:`pipeline.products.store` and
:mod:`pipeline.products.transaction`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.catalog.dedupe import carry_markings
from pipeline.catalog.discover import href_policy, releasability_of
from pipeline.catalog.scene import Scene
from pipeline.engine import events
from pipeline.engine.cluster import ClusterOptions
from pipeline.engine.executor import (
    Executor,
    Job,
    chunks_failed,
    performance_note,
    task_key,
    timed,
)
from pipeline.engine.jobs import Phases, night_job
from pipeline.engine.steps import (
    audience_dict,
    new_run_id,
    outputs_of,
    product_attrs,
    record_failure,
    target_grid,
)
from pipeline.errors import RunError, SpecError, StoreNotOurs
from pipeline.io.identity import IdentityProbe
from pipeline.io.settings import ReaderSettings
from pipeline.plan.changes import Listing, ingest_fingerprint, list_catalog
from pipeline.plan.chunks import Plan, make_plan
from pipeline.plan.increment import Increment, diff, plan_digest
from pipeline.plan.ledger import LedgerEntry, StoreState, Tokens
from pipeline.plan.methods import can_fold
from pipeline.plan.tonight import (
    Tonight,
    account,
    ledger_entries,
    ledger_facts,
    order_key,
    plan_tonight,
    read_rejects,
    slot_record,
    used_in,
)
from pipeline.products.lease import LEASE_SECONDS
from pipeline.products.lineage import lineage
from pipeline.products.nightplace import NightPlace, night_place
from pipeline.products.objectstore import object_location
from pipeline.products.report import NightReport, OperatorReport
from pipeline.products.stac import night_fields, product_stac_text, sidecar_texts
from pipeline.products.store import (
    NIGHTLY_CUBE,
    create_nightly_groups,
    nightly_layout,
    resize_nightly_cube,
    write_group_attrs,
)
from pipeline.products.transaction import Transaction, write_state
from pipeline.spec.workflow import WorkflowSpec

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class NightOptions:
    store: Path | None = None  # default: <cube store folder>/<workflow name>.icechunk
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    direct: bool = False  # run the chunk orders in this process, without Dask
    reader: ReaderSettings = field(default_factory=ReaderSettings)
    report_path: Path | None = None  # default: <store>.night-report.json
    operator_report_path: Path | None = None
    rebuild: bool = False  # ignore the committed state: rebuild every chunk (one commit still)
    time_block: int = 8  # cube slots per store chunk (a new store's layout; see cube/slots.py)
    # an HTML file recording the night's use of Dask (distributed.performance_report); Dask only
    performance_report: Path | None = None
    lease_seconds: float = LEASE_SECONDS  # a store in a bucket: its lease's term


def store_path(spec: WorkflowSpec, store: Path | None = None) -> Path:
    """The store given, else ``<cube store folder>/<workflow>.icechunk``; an ``s3://`` one
    (``s3:/bucket/key`` as a Path, see :mod:`pipeline.products.objectstore`) stays as it is."""
    if store is not None:
        path = Path(store)
        return path if object_location(path) is not None else path.resolve()
    cube = spec.products.cube
    if cube is None:
        raise SpecError("a nightly run appends time slots to a cube: add products.cube")
    return cube.store.parent / f"{spec.name}.icechunk"


def mosaic_groups(spec: WorkflowSpec) -> tuple[str, ...]:
    """The Icechunk group of each mosaic: its store's name without suffix (``mosaic.zarr`` →
    ``mosaic``)."""
    names = tuple(m.store.stem for m in spec.products.all_mosaics)
    bad = [n for n in names if n == NIGHTLY_CUBE or n.startswith("_")]
    if bad or len(set(names)) != len(names):
        raise SpecError(
            f"nightly stores name each mosaic's group after its store ({list(names)}): they must "
            f"be distinct and not '{NIGHTLY_CUBE}' or start with '_'; rename the mosaic stores"
        )
    return names


def run_nightly(
    spec: WorkflowSpec,
    *,
    spec_path: str = "",
    options: NightOptions | None = None,
    progress: Progress | None = None,
    on_event: Callable[[str, Any], None] | None = None,
) -> NightReport:
    """One night end to end; returns its report (also written as JSON)."""
    options = options or NightOptions()
    t0 = time.perf_counter()
    run_id, started = new_run_id()
    place = night_place(store_path(spec, options.store), report_path=options.report_path,
                        lease_seconds=options.lease_seconds)
    report = NightReport(run_id, spec.name, spec_path, place.label, started.isoformat())
    try:
        night = _Night(spec, place, options, report, on_event, progress, t0)
        night.check_spec()
        try:
            place.check()  # a file, or someone else's folder or prefix: refused untouched
        except StoreNotOurs as exc:  # and nothing written beside it either (no report)
            report.status, report.error = "bad_input", f"[{exc.reason}] {exc.message}"
            return report
        with place.lock(run_id) as lock:
            report.lock = lock.record
            if lock.took_over:
                report.notes.append(
                    f"took over the lock left by {lock.took_over}, which is no longer running"
                )
            night.lease_lost = lock.lost
            night.run()
    except BaseException as exc:  # noqa: BLE001 - every end is reported; see record_failure
        kept = "the last published night is unchanged"
        reraise = record_failure(report, exc, stores=[place.label], kept=kept)
        place.put_report(report, t0)
        events.finished(report, mode="nightly")
        if reraise:
            raise
        return report
    place.put_report(report, t0)  # also kept under <store>.reports/<run id>.json
    events.finished(report, mode="nightly")
    return report


class _Night:
    def __init__(self, spec, place: NightPlace, options, report, on_event, progress, t0) -> None:
        self.spec, self.place, self.options, self.report = spec, place, options, report
        self.store_dir = place.label  # as printed
        self.lease_lost: Callable[[], str | None] = lambda: None
        self.progress = progress
        self.t0 = t0
        self.run_id = report.run_id
        self.emit = events.logged(on_event, mode="nightly", workflow=spec.name,
                                  run_id=self.run_id)
        self.rule = releasability_of(spec)
        self.groups = mosaic_groups(spec)
        self.reader = replace(
            options.reader, policy=options.reader.policy or href_policy(spec), session=self.run_id
        )
        self.outputs = outputs_of(spec)  # the same products as ``aquila run``
        self.chunks: dict[str, list[tuple[int, int]]] = {}  # scene token -> chunks it touches
        self.token = Tokens()  # scene tokens, each computed once this run
        self.executor = Executor(options.cluster, direct=options.direct,
                                 seconds=report.seconds, on_event=self.emit,
                                 span=("aquila", spec.name, self.run_id),
                                 performance_report=options.performance_report)
        self.phases = Phases()  # the chunk tasks' seconds by phase, over every pass
        self.published: StoreState | None = None  # the state of the night this run commits
        self.operator: tuple[OperatorReport, str] | None = None  # with audience: report, path

    # ------------------------------------------------------------------ the night

    def check_spec(self) -> None:
        g = self.spec.grid
        if g.bounds is None:
            raise SpecError(
                "a nightly cube needs a fixed grid: give grid.bounds (without it the "
                "grid would follow tonight's footprints)"
            )
        self.grid = target_grid(self.spec, ())  # bounds exact or anchored; spec.limits
        self.layout = nightly_layout(self.grid, self.outputs, self.groups) | {
            "time_block": self.options.time_block
        }
        self.ingest = ingest_fingerprint(self.spec)

    def run(self) -> None:
        self.open_store()
        listing = self.list_catalog()
        committed = self.committed_plan()
        excluded: set[str] = set()  # tokens of scenes that failed to read tonight
        with self.executor:
            while True:
                self.report.passes += 1
                with self.timed("plan"):
                    tonight = self.plan(listing, excluded)
                    inc = diff(
                        committed,
                        tonight.plan,
                        reuse_cube=self.reuse_cube,
                        block=self.options.time_block,
                        token=self.token,
                        changed=self.rewritten(listing),
                        fold=can_fold(self.outputs.mosaics),
                    )
                    self.describe(tonight, inc, listing)
                if inc.empty and not self.ledger_changed(tonight, listing):
                    self.nothing_new(excluded)
                    break
                txn = self.store.begin(self.run_id, self.report.passes)
                try:
                    session, results = self.execute(txn, tonight.plan, inc, committed)
                    failed = self.read_failures(results, tonight, excluded)
                    if failed:
                        excluded |= failed
                        continue  # rebuild from the same base without them
                    with self.timed("commit"):
                        snapshot = self.commit(txn, session, tonight, inc, results, listing)
                    with self.timed("publish"):
                        lost = self.lease_lost()
                        if lost is not None:  # another run may hold the store now
                            raise RunError(f"{lost}: nothing was published, rerun",
                                           reason="publish_conflict")
                        txn.publish(snapshot)
                    self.report.snapshot = snapshot
                finally:
                    txn.close()
                break
        performance_note(self.executor, self.report)
        self.write_sidecar()

    # ------------------------------------------------------------------ steps

    def open_store(self) -> None:
        self.store = self.place.open()
        stale = self.store.remove_stale_branches()
        if stale:
            self.report.notes.append(
                f"removed {len(stale)} unpublished branch(es) of killed runs: {', '.join(stale)}"
            )
        self.base = self.store.tip()
        self.state = None if self.options.rebuild else self.store.state()
        self.report.base_snapshot = self.base if self.state else None
        for e in self.state.entries if self.state else ():
            if e.chunks is not None:
                self.chunks[e.token] = list(e.chunks)
        if self.state is not None and dict(self.state.layout) != self.layout:
            changed = sorted(k for k in self.layout if self.state.layout.get(k) != self.layout[k])
            raise SpecError(
                f"{self.store_dir} was built with another {', '.join(changed)}; a nightly run "
                "only appends. Rebuild it from the catalog with --rebuild, or use a new --store"
            )

    def list_catalog(self) -> Listing:
        t = time.perf_counter()
        state = self.state
        known = state.by_key() if state and state.extra.get("ingest") == self.ingest else {}
        if state is not None and not known:
            self.report.notes.append("normalisation settings changed: every item normalised again")
        recorded = {e.key: e.assets for e in state.entries} if state else {}
        probe = IdentityProbe(self.reader.policy, timeout_s=self.reader.http_timeout_s)
        listing = list_catalog(self.spec, known, recorded=recorded, probe=probe)
        r = self.report
        r.items_found, r.reused, r.withheld = (
            listing.items_found,
            listing.reused,
            len(listing.withheld),
        )
        r.rejected = [{"stage": "ingest", **x.as_dict()} for x in listing.rejects]
        r.notes.extend(listing.notes)
        if self.rule is not None:
            r.audience = audience_dict(self.rule.audience)
            operator = OperatorReport(self.run_id, self.spec.name, r.audience)
            where = str(self.options.operator_report_path or self.place.operator_at(self.run_id))
            operator.withheld = [w.as_dict() for w in listing.withheld]
            operator.conflicts = [c.as_dict() for c in listing.conflicts]
            self.place.put_operator(operator, where)  # before any pixel is read
            self.emit("withheld", (len(listing.withheld), where))
            self.operator = (operator, where)  # dedupe's marking conflicts are added at commit
            r.products["operator report"] = where
        r.seconds["discover"] = time.perf_counter() - t
        self.emit("discovered", (len(listing.scenes), listing))
        return listing

    def committed_plan(self) -> Plan | None:
        """The committed night's plan, re-made from its ledger and checked against its digest
        (a mismatch, e.g. after an upgrade that slots differently, rebuilds every chunk)."""
        if self.state is None:
            return None
        scenes = [e.scene for e in self.state.ingested()]
        plan = self.make_plan(scenes)
        if plan_digest(plan, self.token) != self.state.plan_digest:
            self.report.notes.append(
                "the committed plan could not be re-made from the ledger: every chunk is rebuilt"
            )
            self.state = replace(self.state, plan_digest="")
            return None
        return plan

    def rewritten(self, listing: Listing) -> frozenset[str]:
        """Tokens of tonight's scenes whose assets were rewritten in place since the ledger
        recorded their identities: the diff re-reads them as it would reprocessed scenes."""
        moved = listing.changed_in_place
        return frozenset(self.token(s) for s in listing.scenes if (s.collection, s.id) in moved)

    @property
    def reuse_cube(self) -> bool:
        """Unchanged slots may be read back from the committed cube: exact when no mosaic needs
        a halo or the quality masks (the cube stores the chunk's pixels, not its masks)."""
        return self.outputs.halo == 0 and not any(
            m.method == "best-pixel" for m in self.outputs.mosaics
        )

    def plan(self, listing: Listing, excluded: set[str]) -> Tonight:
        return plan_tonight(listing, self.state, excluded, self.token, self.make_plan)

    def make_plan(self, scenes: list[Scene]) -> Plan:
        """:func:`make_plan`, with the chunks each known scene touches taken from the ledger
        (measured: the footprint-to-tiles query is ~7 ms a scene, O(archive) every night)."""
        plan = make_plan(
            scenes,
            grid=self.grid,
            outputs=self.outputs,
            known_chunks=lambda s: self.chunks.get(self.token(s)),
            limits=self.spec.limits.plan_limits(),
        )
        touched: dict[str, list[tuple[int, int]]] = {s.id: [] for s in scenes}
        for task in plan.tasks:
            for ss in task.slots:
                for sc in ss.scenes:
                    touched[sc.id].append((task.chunk.iy, task.chunk.ix))
        for sc in scenes:
            self.chunks[self.token(sc)] = sorted(touched[sc.id])
        return plan

    def describe(self, tonight: Tonight, inc: Increment, listing: Listing) -> None:
        acc = account(self.state, tonight, inc, listing, self.token)
        r = self.report
        r.new, r.changed, r.changed_in_place = acc.new, acc.changed, acc.changed_in_place
        r.replaced, r.removed, r.removed_withheld = acc.replaced, acc.removed, acc.removed_withheld
        r.duplicates, r.slots, r.chunks = acc.duplicates, acc.slots, acc.chunks
        r.notes += [n for n in acc.notes if n not in r.notes]  # once, whatever the passes
        self.emit("planned", (tonight.plan, inc))

    def ledger_changed(self, tonight: Tonight, listing: Listing) -> bool:
        before = ledger_facts(self.state.entries) if self.state else set()
        return before != ledger_facts(self.entries(tonight, listing, used={}))

    def nothing_new(self, excluded: set[str]) -> None:
        r = self.report
        failed = [x for x in r.rejected if x["stage"] == "read"]
        r.status = "partial" if failed else "nothing_new"
        r.notes.append(
            "nothing new: no commit"
            + (f" ({len(failed)} new scene(s) could not be read)" if failed else "")
        )
        self.emit("nothing_new", r)

    def execute(self, txn: Transaction, plan: Plan, inc: Increment, committed: Plan | None):
        """Prepare the layout, run every chunk order in a fork, merge the forks."""
        fresh = committed is None
        with self.timed("prepare"):
            if fresh:  # the groups must exist before anything forks: their own commit
                txn.prepare(
                    lambda zstore: self.write_layout(zstore, plan, fresh=True), run_id=self.run_id
                )
            session = txn.writer()
        t = time.perf_counter()
        base = self.store.readonly(self.base) if not fresh else None
        orders = inc.orders
        self.emit("executing", len(orders))
        jobs = [
            Job(task_key(self.spec.name, "night", o.chunk.name, order_key(o, plan, self.token)),
                o.chunk.name, (o, plan.outputs, self.groups, session.fork(), base))
            for o in orders
        ]
        results, failed = self.executor.map(night_job, jobs, self.reader,
                                            progress=self.progress)
        self.report.dashboard = self.executor.dashboard or self.report.dashboard
        if failed:
            raise chunks_failed(failed, len(jobs), "nothing was published")
        self.add_seconds("tasks", time.perf_counter() - t)
        with self.timed("merge"):
            if results:
                session.merge(*(r.fork for r in results))
        for r in results:  # where worker time went, summed over tasks
            for step, sec in r.seconds.items():
                self.add_seconds(f"tasks_{step}", sec)
            self.phases.add(r.phases)
        self.report.seconds_by_phase = self.phases.ordered()
        return session, results

    def read_failures(self, results, tonight: Tonight, excluded: set[str]) -> set[str]:
        """Tokens of scenes that failed to read for the first time tonight; each is reported
        (rejected, with its reason and attempts) and the night is rebuilt without it."""
        new, rejects, retries = read_rejects(results, tonight, excluded, self.token)
        for sid, n in retries.items():
            self.report.retries[sid] = self.report.retries.get(sid, 0) + n
        self.report.rejected += rejects
        return new

    def write_layout(self, zstore: Any, plan: Plan, *, fresh: bool) -> None:
        """Tonight's layout: created when the store is new (or rebuilt), else the cube's time
        axis resized and its coordinates rewritten (chunks are the tasks' business)."""
        if fresh:
            create_nightly_groups(
                zstore, self.grid, plan.outputs, self.groups, plan.slots,
                time_block=self.options.time_block,
                attrs=product_attrs(self.spec, self.run_id, nightly=True),
            )
        else:
            resize_nightly_cube(zstore, self.grid, plan.outputs.bands, plan.slots)

    def entries(self, tonight: Tonight, listing: Listing, *, used) -> list[LedgerEntry]:
        return ledger_entries(tonight, listing, self.state, chunks=self.chunks,
                              token=self.token, used=used)

    def markings(self, listing: Listing, tonight: Tonight) -> dict | None:
        """Markings by Scene.key, each kept scene's raised to the stricter of the publications
        dedupe dropped for it; those conflicts are added to the operator report."""
        if listing.markings is None or self.rule is None:
            return None
        markings, conflicts = carry_markings(
            listing.markings, tonight.duplicates, scale=self.rule.scale
        )
        if conflicts and self.operator is not None:
            operator, where = self.operator
            operator.conflicts.extend(c.as_dict() for c in conflicts)
            self.place.put_operator(operator, where)
        return markings

    def commit(self, txn, session, tonight: Tonight, inc: Increment, results, listing) -> str:

        r = self.report
        used = used_in(self.state, tonight, inc, {r.chunk: r.used for r in results},
                       self.token)
        plan = tonight.plan
        lin = lineage(
            plan,
            [sid for sid, chunks in used.items() if chunks],
            complete=True,
            audience=r.audience,
            markings=self.markings(listing, tonight),
            scale=self.rule.scale if self.rule else None,
        )
        base = product_attrs(self.spec, self.run_id, nightly=True, complete=True)
        self.write_layout(session.store, plan, fresh=False)  # time axis and coordinates
        write_group_attrs(session.store, {NIGHTLY_CUBE: base | lin.cube} | {
            name: base | attrs for name, attrs in zip(self.groups, lin.mosaics, strict=True)})
        r.labels = {"cube": lin.label} | {
            f"mosaic ({m.method})": lin.label for m in plan.outputs.mosaics
        }
        state = StoreState(
            run_id=self.run_id,
            fingerprint=self.ingest,
            layout=self.layout,
            slots=tuple(slot_record(s) for s in plan.slots),
            plan_digest=plan_digest(plan, self.token),
            entries=tuple(self.entries(tonight, listing, used=used)),
            extra={
                "ingest": self.ingest,
                "stac": {
                    "bbox": lin.bbox,
                    "times": lin.times,
                    "label": lin.label,
                    "slot_labels": lin.slot_labels,
                },
            },
        )
        self.published = state  # main points at it once published (see write_sidecar)
        write_state(session.store, state)
        r.status = "partial" if any(x["stage"] == "read" for x in r.rejected) else "success"
        message = (
            f"aquila night {self.run_id}: {len(r.new)} new, {len(r.replaced)} replaced, "
            f"{len(r.rejected)} rejected, {inc.slots_after} slots"
        )
        return txn.commit(session, run_id=self.run_id, message=message, metadata=r.summary())

    def write_sidecar(self) -> None:
        """``<store>.stac.json``: extent, time range and label of the published night."""
        # The state this run committed, if it published one: reading it back would decode the
        # whole ledger again (~0.1 s at 260 scenes).
        state = self.published or self.store.state()
        stac = state.extra.get("stac") if state is not None else None
        if state is None or stac is None:
            return
        place = self.place
        item = product_stac_text(
            place.stac_store,
            kind="nightly cube and mosaics",
            bbox=stac["bbox"],
            times=stac["times"],
            label=stac["label"],
            slot_labels=stac["slot_labels"],
            in_bucket=place.in_bucket,
            **night_fields(self, state),
        )
        place.put_sidecars({p.name: t for p, t in sidecar_texts(place.stac_store, item).items()})

    def timed(self, step: str) -> contextlib.AbstractContextManager[None]:
        return timed(self.report.seconds, step)

    def add_seconds(self, step: str, seconds: float) -> None:
        self.report.seconds[step] = self.report.seconds.get(step, 0.0) + seconds
