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
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.catalog.dedupe import Duplicate, carry_markings, drop_duplicates
from pipeline.catalog.discover import href_policy, releasability_of
from pipeline.catalog.scene import Scene
from pipeline.engine.cluster import ClusterOptions, open_client
from pipeline.engine.night_chunk import CUBE, NightChunkResult, Pause, night_chunk_task, run_order
from pipeline.errors import (
    AquilaError,
    InputError,
    RunError,
    SpecError,
    StoreBusy,
    StoreNotOurs,
)
from pipeline.io.identity import IdentityProbe
from pipeline.io.reader import RasterReader, ReaderSettings
from pipeline.plan.changes import Listing, ingest_fingerprint, list_catalog
from pipeline.plan.chunks import Plan, make_plan
from pipeline.plan.grid import TargetGrid
from pipeline.plan.increment import Increment, diff, plan_digest
from pipeline.plan.ledger import DUPLICATE, INGESTED, LedgerEntry, StoreState, Tokens
from pipeline.products.lineage import lineage
from pipeline.products.lock import store_lock
from pipeline.products.night_report import NightReport
from pipeline.products.publish import check_nightly_store
from pipeline.products.report import OperatorReport
from pipeline.products.stac import write_product_stac
from pipeline.products.store import create_group, cube_layout, mosaic_layout
from pipeline.products.transaction import STATE_ARRAY, NightlyStore, Transaction, json_safe
from pipeline.spec.methods import mosaic_layers
from pipeline.spec.workflow import WorkflowSpec

Progress = Callable[[int, int], None]
OUTSIDE = "outside"  # a ledger status: normalised, but touches no chunk of the grid


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
    pause: Pause | None = None  # test-only crash points (pipeline.engine.night_chunk.Pause)


def store_path(spec: WorkflowSpec, store: Path | None = None) -> Path:
    if store is not None:
        return Path(store).resolve()
    cube = spec.products.cube
    if cube is None:
        raise SpecError("a nightly run appends time slots to a cube: add products.cube")
    return cube.store.parent / f"{spec.name}.icechunk"


def mosaic_groups(spec: WorkflowSpec) -> tuple[str, ...]:
    """The Icechunk group of each mosaic: its store's name without suffix (``mosaic.zarr`` →
    ``mosaic``)."""
    names = tuple(m.store.stem for m in spec.products.all_mosaics)
    bad = [n for n in names if n == CUBE or n.startswith("_")]
    if bad or len(set(names)) != len(names):
        raise SpecError(
            f"nightly stores name each mosaic's group after its store ({list(names)}): they must "
            f"be distinct and not '{CUBE}' or start with '_'; rename the mosaic stores"
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
    started = dt.datetime.now(dt.UTC)
    run_id = f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    store = store_path(spec, options.store)
    report = NightReport(run_id, spec.name, spec_path, str(store), started.isoformat())
    report_path = options.report_path or store.with_name(store.name + ".night-report.json")
    try:
        night = _Night(spec, store, options, report, on_event, progress, t0)
        night.check_spec()
        try:
            check_nightly_store(store)  # a file, or someone else's folder: refused untouched
        except StoreNotOurs as exc:  # and nothing written beside it either (no report)
            report.status, report.error = "bad_input", f"[{exc.reason}] {exc.message}"
            return report
        with store_lock(store, run_id=run_id) as lock:
            report.lock = {
                "holder": asdict(lock.holder),
                "took_over": asdict(lock.took_over) if lock.took_over else None,
            }
            if lock.took_over:
                report.notes.append(
                    f"took over the lock left by {lock.took_over.describe()}, "
                    "which is no longer running"
                )
            night.run()
    except StoreBusy as exc:
        report.status, report.error = "busy", f"[{exc.reason}] {exc.message}"
    except InputError as exc:
        report.status, report.error = "bad_input", f"[{exc.reason}] {exc.message}"
    except AquilaError as exc:
        report.status, report.error = "failed", f"[{exc.reason}] {exc.message}"
    except KeyboardInterrupt:
        # nothing is visible before the publish; the next run removes this run's branch
        report.status = "interrupted"
        report.error = "[interrupted] stopped by Ctrl-C; the last published night is unchanged"
        _finish(report, t0, report_path)
        raise
    except Exception as exc:  # noqa: BLE001 - an honest failure report, then re-raise
        report.status, report.error = "failed", f"{type(exc).__name__}: {exc}"
        _finish(report, t0, report_path)
        raise
    _finish(report, t0, report_path)
    return report


def _finish(report: NightReport, t0: float, path: Path) -> None:
    report.finished = dt.datetime.now(dt.UTC).isoformat()
    report.seconds["total"] = time.perf_counter() - t0
    report.write(path)
    report.write(Path(report.store + ".reports") / f"{report.run_id}.json")
    report.products.setdefault("report", str(path))


@dataclass
class _Tonight:
    """Tonight's scenes and plan (for one pass: the scenes that failed to read are out)."""

    plan: Plan
    kept: list[Scene]
    duplicates: list[Duplicate]
    normalised: list[Scene]
    fallbacks: dict[str, Scene]  # id -> the ledger's previous version used instead


class _Night:
    def __init__(self, spec, store, options, report, on_event, progress, t0) -> None:
        self.spec, self.store_dir, self.options, self.report = spec, store, options, report
        self.emit = on_event or (lambda kind, value: None)
        self.progress = progress
        self.t0 = t0
        self.run_id = report.run_id
        self.rule = releasability_of(spec)
        self.groups = mosaic_groups(spec)
        self.reader = replace(
            options.reader, policy=options.reader.policy or href_policy(spec), session=self.run_id
        )
        from pipeline.engine.run import outputs_of  # the same products as ``aquila run``

        self.outputs = outputs_of(spec)
        self.pause = options.pause
        self.chunks: dict[str, list[tuple[int, int]]] = {}  # scene token -> chunks it touches
        self.token = Tokens()  # scene tokens, each computed once this run
        self._client_stack = contextlib.ExitStack()
        self._client = None
        self.published: StoreState | None = None  # the state of the night this run commits
        self.operator: tuple[OperatorReport, Path] | None = None  # with audience: report, path

    # ------------------------------------------------------------------ the night

    def check_spec(self) -> None:
        g = self.spec.grid
        if g.bounds is None:
            raise SpecError(
                "a nightly cube needs a fixed grid: give grid.bounds (without it the "
                "grid would follow tonight's footprints)"
            )
        from pipeline.engine.run import target_grid  # bounds exact or anchored; spec.limits

        self.grid = target_grid(self.spec, ())
        self.layout = _layout(self.grid, self.outputs, self.groups) | {
            "time_block": self.options.time_block
        }
        self.ingest = ingest_fingerprint(self.spec)

    def run(self) -> None:
        self.open_store()
        listing = self.list_catalog()
        committed = self.committed_plan()
        excluded: set[str] = set()  # tokens of scenes that failed to read tonight
        with self._client_stack:
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
                    self.pause_at("merged")
                    with self.timed("commit"):
                        snapshot = self.commit(txn, session, tonight, inc, results, listing)
                    self.pause_at("committed")
                    with self.timed("publish"):
                        txn.publish(snapshot)
                    self.report.snapshot = snapshot
                    self.pause_at("published")
                finally:
                    txn.close()
                break
        self.write_sidecar()

    # ------------------------------------------------------------------ steps

    def open_store(self) -> None:
        self.store = NightlyStore.open(self.store_dir)
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
            r.audience = {
                "releasable_to": sorted(self.rule.audience.members),
                "group": self.rule.audience.name,
                "clearance": self.rule.audience.clearance,
            }
            operator = OperatorReport(
                self.run_id, self.spec.name, r.audience, [w.as_dict() for w in listing.withheld],
                [c.as_dict() for c in listing.conflicts],
            )
            path = (
                self.options.operator_report_path
                or Path(r.store + ".reports") / f"{self.run_id}.operator-report.json"
            )
            operator.write(path)  # before any pixel is read
            self.operator = (operator, path)  # dedupe's marking conflicts are added at commit
            r.products["operator report"] = str(path)
            self.emit("withheld", (len(listing.withheld), path))
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

    def plan(self, listing: Listing, excluded: set[str]) -> _Tonight:
        """Tonight as a full run over the catalog would plan it, without the scenes that failed
        to read (a changed item that fails keeps its previous version from the ledger)."""
        previous = {e.id: e.scene for e in self.state.ingested()} if self.state else {}
        normalised, fallbacks = [], {}
        for s in listing.scenes:
            if self.token(s) not in excluded:
                normalised.append(s)
            elif s.id in previous and self.token(previous[s.id]) not in excluded:
                normalised.append(previous[s.id])
                fallbacks[s.id] = previous[s.id]
        kept, duplicates = drop_duplicates(normalised)
        plan = self.make_plan(kept)
        return _Tonight(plan, kept, duplicates, normalised, fallbacks)

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

    def describe(self, tonight: _Tonight, inc: Increment, listing: Listing) -> None:
        r = self.report
        before = {e.key: e for e in self.state.ingested()} if self.state else {}
        in_plan = {(s.collection, s.id): s for s in tonight.plan.scenes}
        r.new = [s.id for k, s in in_plan.items() if k not in before]
        r.changed = [
            s.id for k, s in in_plan.items() if k in before and before[k].token != self.token(s)
        ]
        r.changed_in_place = [  # the item alone did not change: its assets' content did
            s.id
            for k, s in in_plan.items()
            if k in listing.changed_in_place and k in before and before[k].token == self.token(s)
        ]
        note = (
            f"{len(r.changed_in_place)} scene(s) rewritten in place (same href, item "
            f"unchanged: {', '.join(r.changed_in_place[:10])}): re-read, as if reprocessed"
        )
        if r.changed_in_place and note not in r.notes:  # once, whatever the passes
            r.notes.append(note)
        r.replaced = [
            {"old": d.dropped, "new": d.kept, "rule": d.rule}
            for d in tonight.duplicates
            if (d.dropped_collection, d.dropped) in before
            and (d.kept_collection, d.kept) in in_plan
        ]
        replaced = {(d.dropped_collection, d.dropped) for d in tonight.duplicates}
        withheld = {(w.collection or "", w.item_id) for w in listing.withheld}
        gone = [k for k in before if k not in in_plan and k not in replaced]
        r.removed = sorted(k[1] for k in gone if k not in withheld)
        r.removed_withheld = sum(k in withheld for k in gone)
        r.duplicates = [d.as_dict() for d in tonight.duplicates]
        r.slots = {
            "before": inc.slots_before,
            "after": inc.slots_after,
            "added": len(inc.added_slots),
            "removed": len(inc.removed_slots),
            "first_renumbered": inc.first_moved,
        }
        r.chunks = {
            "tasks": len(inc.orders),
            "cube": inc.cube_writes,
            "mosaic": inc.mosaic_writes,
            "slot_reads": sum(o.n_reads for o in inc.orders),
            "slot_copies": sum(len(o.slots) - o.n_reads for o in inc.orders),
        }
        for sid in tonight.fallbacks:
            r.notes.append(
                f"{sid}: its changed item failed to read; the previous version is "
                "kept until it reads"
            )
        self.emit("planned", (tonight.plan, inc))

    def ledger_changed(self, tonight: _Tonight, listing: Listing) -> bool:
        def facts(entries) -> set:  # asset identities too: a new baseline is recorded
            return {(e.key, e.checksum, e.status, e.assets) for e in entries}

        before = facts(self.state.entries) if self.state else set()
        return before != facts(self.entries(tonight, listing, used={}))

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
        if self.options.direct or not orders:
            reader = RasterReader(self.reader)
            try:
                results = []
                for i, order in enumerate(orders, 1):
                    results.append(
                        run_order(
                            order,
                            outputs=plan.outputs,
                            groups=self.groups,
                            reader=reader,
                            fork=session.fork(),
                            base=base,
                            pause=self.pause,
                        )
                    )
                    if self.progress:
                        self.progress(i, len(orders))
            finally:
                reader.close()
        else:
            results = self.execute_dask(orders, plan, session, base)
        self.add_seconds("tasks", time.perf_counter() - t)
        with self.timed("merge"):
            if results:
                session.merge(*(r.fork for r in results))
        for r in results:  # where worker time went, summed over tasks
            for step, sec in r.seconds.items():
                self.add_seconds(f"tasks_{step}", sec)
        return session, results

    def execute_dask(self, orders, plan: Plan, session, base) -> list[NightChunkResult]:
        from distributed import as_completed

        client = self.client()
        futures = {}
        for order in orders:
            key = f"night-{order.chunk.name}-{_order_hash(order, plan, self.token)}"
            futures[
                client.submit(
                    night_chunk_task,
                    order,
                    plan.outputs,
                    self.groups,
                    self.reader,
                    session.fork(),
                    base,
                    self.pause,
                    key=key,
                    pure=False,
                    retries=1,
                )
            ] = order
        results, failed = [], []
        for done, fut in enumerate(as_completed(futures), 1):
            try:
                results.append(fut.result())
            except Exception as exc:  # noqa: BLE001 - the night fails, nothing is published
                failed.append(f"{futures[fut].chunk.name}: {type(exc).__name__}: {exc}")
            if self.progress:
                self.progress(done, len(futures))
        if failed:
            raise RunError(
                f"{len(failed)} chunk task(s) failed, nothing was published: "
                + "; ".join(failed[:5]),
                reason="chunk_failed",
            )
        return results

    def client(self):
        if self._client is None:
            t = time.perf_counter()
            self._client = self._client_stack.enter_context(open_client(self.options.cluster))
            self.report.seconds["cluster_start"] = time.perf_counter() - t
            self.report.dashboard = self._client.dashboard_link
            self.emit("dashboard", self._client.dashboard_link)
        return self._client

    def read_failures(self, results, tonight: _Tonight, excluded: set[str]) -> set[str]:
        """Tokens of scenes that failed to read for the first time tonight; each is reported
        (rejected, with its reason and attempts) and the night is rebuilt without it."""
        by_id = {s.id: s for s in tonight.plan.scenes}
        attempts: dict[str, int] = {}
        for r in results:
            attempts.update(r.attempts)
            for href, n in r.retries.items():
                sid = _scene_of(href, tonight.plan.scenes)
                if sid:
                    self.report.retries[sid] = self.report.retries.get(sid, 0) + n
        new: set[str] = set()
        for r in results:
            for sid, reason, message in r.failures:
                token = self.token(by_id[sid])
                if token in excluded or token in new:
                    continue
                new.add(token)
                tries = max(
                    (
                        n
                        for h, n in attempts.items()
                        if any(b.href == h for b in _assets(by_id[sid]))
                    ),
                    default=1,
                )
                self.report.rejected.append(
                    {
                        "stage": "read",
                        "item": sid,
                        "collection": by_id[sid].collection,
                        "reason": reason,
                        "message": message,
                        "attempts": tries,
                        "chunk": r.chunk,
                    }
                )
        return new

    def write_layout(self, zstore, plan: Plan, *, fresh: bool) -> None:
        """Tonight's layout: created when the store is new (or rebuilt), else the cube's time
        axis resized and its coordinates rewritten (chunks are the tasks' business)."""
        import zarr

        base = {
            "title": f"Aquila {self.spec.name} (nightly)",
            "aquila:run_id": self.run_id,
            "aquila:workflow": self.spec.model_dump(mode="json"),
            "aquila:status": "incomplete",
        }
        o = plan.outputs
        if fresh:
            ds, enc = cube_layout(self.grid, o.bands, plan.slots)
            for name in ("time", "collection"):  # one chunk for years of nights
                enc.setdefault(name, {})["chunks"] = (4096,)
            t, c = self.options.time_block, self.grid.chunk
            ds = ds.assign({b: ds[b].chunk({"time": t}) for b in o.bands})
            for b in o.bands:  # a chunk's history is read back a block at a time
                enc[b]["chunks"] = (t, c, c)
            create_group(zstore, CUBE, (ds, enc), self.grid, base)
            for m, name in zip(o.mosaics, self.groups, strict=True):
                layers = mosaic_layers(m.method, blend_width=m.blend_width)
                layout = mosaic_layout(self.grid, o.bands, method=m.method, layers=layers)
                create_group(zstore, name, layout, self.grid, base)
            return
        group = zarr.open_group(zstore, path=CUBE, mode="r+")
        cube = {name: _array(group, name) for name in (*o.bands, "time", "collection")}
        n = len(plan.slots)
        ny, nx = self.grid.shape
        for b in o.bands:
            if cube[b].shape[0] != n:
                cube[b].resize((n, ny, nx))
        cube["time"].resize((n,))
        cube["time"][:] = np.array([int(s.time.timestamp()) for s in plan.slots], np.int64)
        cube["collection"].resize((n,))
        cube["collection"][:] = np.array([s.collection for s in plan.slots], dtype=object)

    def entries(self, tonight: _Tonight, listing: Listing, *, used) -> list[LedgerEntry]:
        in_plan = {s.id for s in tonight.plan.scenes}
        kept = {s.id for s in tonight.kept}
        out = []
        for s in tonight.normalised:
            status = INGESTED if s.id in in_plan else DUPLICATE if s.id not in kept else OUTSIDE
            checksum = listing.checksums[(s.collection, s.id)]
            assets = listing.assets.get((s.collection, s.id))
            if s.id in tonight.fallbacks and self.state is not None:  # keep what it was read as
                old = self.state.by_key()[(s.collection, s.id)]  # id alone may be two scenes
                checksum, assets = old.checksum, old.assets
            chunks = self.chunks.get(self.token(s))
            out.append(
                LedgerEntry(
                    s.collection,
                    s.id,
                    checksum,
                    s,
                    status,
                    tuple(sorted(used.get(s.id, ()))),
                    None if chunks is None else tuple(chunks),
                    assets,
                )
            )
        return out

    def used_in(self, tonight: _Tonight, inc: Increment, results) -> dict[str, set[str]]:
        """Per scene, the chunks it contributed pixels to: the committed record, updated for
        every (slot, chunk) read from the scenes tonight."""
        before = {e.id: e for e in self.state.entries} if self.state else {}
        used: dict[str, set[str]] = {}
        for s in tonight.plan.scenes:
            e = before.get(s.id)
            used[s.id] = set(e.used_in) if e is not None and e.token == self.token(s) else set()
        by_chunk = {r.chunk: set(r.used) for r in results}
        for order in inc.orders:
            now = by_chunk.get(order.chunk.name, set())
            for s in order.sourced:
                used[s.id].discard(order.chunk.name)
                if s.id in now:
                    used[s.id].add(order.chunk.name)
        return used

    def markings(self, listing: Listing, tonight: _Tonight) -> dict | None:
        """Markings by Scene.key, each kept scene's raised to the stricter of the publications
        dedupe dropped for it; those conflicts are added to the operator report."""
        if listing.markings is None or self.rule is None:
            return None
        markings, conflicts = carry_markings(
            listing.markings, tonight.duplicates, scale=self.rule.scale
        )
        if conflicts and self.operator is not None:
            operator, path = self.operator
            operator.conflicts.extend(c.as_dict() for c in conflicts)
            operator.write(path)
        return markings

    def commit(self, txn, session, tonight: _Tonight, inc: Increment, results, listing) -> str:
        import zarr

        r = self.report
        used = self.used_in(tonight, inc, results)
        plan = tonight.plan
        lin = lineage(
            plan,
            [sid for sid, chunks in used.items() if chunks],
            complete=True,
            audience=r.audience,
            markings=self.markings(listing, tonight),
            scale=self.rule.scale if self.rule else None,
        )
        base = {
            "title": f"Aquila {self.spec.name} (nightly)",
            "aquila:run_id": self.run_id,
            "aquila:workflow": self.spec.model_dump(mode="json"),
        }
        self.write_layout(session.store, plan, fresh=False)  # time axis and coordinates
        root = zarr.open_group(session.store, mode="r+")
        # One metadata write per group: ``attrs.update`` writes the group's zarr.json once per
        # key (40 writes, 0.12 s a night, rebuilds included).
        root[CUBE].update_attributes(json_safe(base | lin.cube))
        for name, attrs in zip(self.groups, lin.mosaics, strict=True):
            root[name].update_attributes(json_safe(base | attrs))
        r.labels = {"cube": lin.label} | {
            f"mosaic ({m.method})": lin.label for m in plan.outputs.mosaics
        }
        state = StoreState(
            run_id=self.run_id,
            fingerprint=self.ingest,
            layout=self.layout,
            slots=tuple(_slot_dict(s) for s in plan.slots),
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
        blob = np.frombuffer(state.to_bytes(), dtype=np.uint8)
        array = zarr.create_array(
            session.store,
            name=STATE_ARRAY,
            shape=blob.shape,
            dtype="uint8",
            chunks=(max(1, min(blob.size, 1 << 22)),),
            compressors=None,
            fill_value=0,
            overwrite=True,
        )
        array[:] = blob
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
        write_product_stac(
            self.store_dir,
            kind="nightly cube and mosaics",
            bbox=stac["bbox"],
            times=stac["times"],
            label=stac["label"],
            slot_labels=stac["slot_labels"],
            properties={"aquila:run_id": state.run_id},
        )

    @contextlib.contextmanager
    def timed(self, step: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add_seconds(step, time.perf_counter() - t)

    def add_seconds(self, step: str, seconds: float) -> None:
        self.report.seconds[step] = self.report.seconds.get(step, 0.0) + seconds

    def pause_at(self, point: str) -> None:
        if self.pause is not None:
            self.pause.at(point)


def _layout(grid: TargetGrid, outputs, groups) -> dict[str, Any]:
    """What the store's arrays are laid out by: a change needs a rebuild."""
    return json_safe(
        {
            "grid": {
                "crs": grid.crs,
                "transform": list(grid.transform),
                "shape": list(grid.shape),
                "chunk": grid.chunk,
            },
            "bands": list(outputs.bands),
            "resampling": outputs.resampling,
            "radiometry": {
                "quantity": outputs.quantity,
                "harmonize_to": outputs.harmonize_to,
                "mask": list(outputs.masking.classes),
                "dilate": outputs.masking.dilate,
            },
            "mosaics": [
                {
                    "group": g,
                    "method": m.method,
                    "q": m.q,
                    "priority": list(m.priority),
                    "key": m.key,
                    "weights": dict(m.weights),
                    "blend_width": m.blend_width,
                }
                for g, m in zip(groups, outputs.mosaics, strict=True)
            ],
        }
    )


def _slot_dict(s) -> dict[str, Any]:
    return {
        "index": s.index,
        "collection": s.collection,
        "solar_day": s.solar_day.isoformat(),
        "time": s.time.isoformat(),
        "scenes": list(s.scene_ids),
    }


def _order_hash(order, plan: Plan, token: Callable[[Any], str]) -> str:
    """Deterministic task names from the inputs (scene tokens, never scene ids)."""
    ident = repr(
        (
            order.chunk,
            order.slots,
            order.blocks,
            order.n_slots,
            order.mosaic,
            order.clear_mosaic,
            [token(s) for s in order.sourced],
            plan.outputs.mosaics,
        )
    )
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def _assets(scene: Scene):
    return (*scene.bands, *scene.quality)


def _scene_of(href: str, scenes) -> str | None:
    for s in scenes:
        if any(b.href == href for b in _assets(s)):
            return s.id
    return None


def _array(group, name: str):
    import zarr

    node = group[name]
    assert isinstance(node, zarr.Array), f"{name} in the nightly cube is not an array"
    return node
