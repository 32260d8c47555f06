"""``aquila nightly`` and ``aquila history``: thin commands over :mod:`pipeline.engine.nightly`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.markup import escape as esc

from pipeline.cli.progress import ChunkBar
from pipeline.engine.cluster import positive_int
from pipeline.products.report import EXIT_OK

NIGHTLY_HELP = """\
Append the scenes the catalog gained since the last night to an Icechunk store (cube + mosaics),
recompute the mosaic chunks they touch, and publish it all in one atomic commit. Idempotent and
crash-safe: a night with nothing new commits nothing; a killed run, rerun, gives the same store.
One run per store at a time: a second one exits at once with code 75.

exit codes: 0 success or nothing new · 1 failure (nothing published) · 2 bad input ·
3 partial (published without the scenes that could not be read: see the report) ·
75 busy (another run holds the store's lock; try again later)
"""


def add_commands(sub) -> None:
    night = sub.add_parser(
        "nightly",
        help="incremental run: append tonight's new scenes to a nightly store, atomically",
        description=NIGHTLY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    night.add_argument("spec", type=Path, help="workflow spec (needs grid.bounds and a cube)")
    night.add_argument(
        "--store",
        type=Path,
        metavar="DIR",
        help="the Icechunk store (default: <cube store folder>/<workflow name>.icechunk)",
    )
    where = night.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="use an existing Dask scheduler")
    where.add_argument("--direct", action="store_true", help="no Dask: run in this process")
    night.add_argument(
        "--workers",
        type=positive_int,
        default=2,
        metavar="N",
        help="local cluster: worker processes (default 2)",
    )
    night.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        metavar="N",
        help="local cluster: threads per worker (default 1)",
    )
    night.add_argument(
        "--memory-limit", default="auto", metavar="SIZE", help="local cluster: memory per worker"
    )
    night.add_argument(
        "--dashboard",
        default="127.0.0.1:8787",
        metavar="HOST:PORT",
        help="local cluster: dashboard address (default loopback)",
    )
    night.add_argument(
        "--cluster-profile", type=Path, metavar="FILE", help="cluster profile YAML (sizes, TLS)"
    )
    night.add_argument(
        "--gdal-cache-mb",
        type=positive_int,
        default=256,
        metavar="MB",
        help="GDAL block cache per worker process (default 256)",
    )
    night.add_argument(
        "--retries",
        type=int,
        default=5,
        metavar="N",
        help="tries per asset read for transient errors (default 5)",
    )
    night.add_argument(
        "--http-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds per HTTP request (default 30)",
    )
    night.add_argument(
        "--rebuild",
        action="store_true",
        help="ignore the committed state: rebuild every chunk (still one commit)",
    )
    night.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="run report path (default <store>.night-report.json)",
    )
    night.add_argument("--no-progress", action="store_true")
    night.add_argument("--json", action="store_true", help="print the run report as JSON")

    hist = sub.add_parser(
        "history",
        help="list the nights published to a nightly store (from the store itself)",
        description="List the published nights of a nightly store, newest first: run id, "
        "snapshot id (open it with 'open_night(store, run=...)'), time, and what it did.",
    )
    hist.add_argument("store", type=Path, help="a nightly store (an .icechunk folder)")
    hist.add_argument("--json", action="store_true", help="print JSON")


def main(args, console) -> int:
    if args.command == "history":
        return _history(args, console)
    return _nightly(args, console)


def _nightly(args, console) -> int:

    from pipeline.engine.cluster import cluster_from_cli
    from pipeline.engine.nightly import NightOptions, run_nightly
    from pipeline.io.reader import ReaderSettings
    from pipeline.io.retry import RetryPolicy
    from pipeline.spec.workflow import load_spec

    spec = load_spec(args.spec)
    cluster = cluster_from_cli(args)
    options = NightOptions(
        store=args.store,
        cluster=cluster,
        direct=args.direct,
        reader=ReaderSettings(
            gdal_cache_mb=args.gdal_cache_mb,
            retry=RetryPolicy(attempts=max(1, args.retries)),
            http_timeout_s=args.http_timeout,
        ),
        report_path=args.report,
        rebuild=args.rebuild,
    )
    bar = ChunkBar(console, disable=args.no_progress or args.json)

    def on_event(kind: str, value) -> None:
        if args.json:
            return
        if kind == "discovered":
            n, listing = value
            console.print(
                f"catalog: {listing.items_found} items, {n} usable "
                f"({listing.reused} known unchanged), {len(listing.rejects)} rejected"
            )
        elif kind == "withheld":
            count, path = value  # ids are never printed: they are for the operator only
            console.print(
                f"releasability: {count} item(s) withheld from the audience "
                f"(operator report: {esc(str(path))})"
            )
        elif kind == "planned":
            plan, inc = value
            console.print(
                f"plan: {esc(plan.summary())}; tonight {len(inc.orders)} chunk "
                f"orders ({inc.cube_writes} cube, {inc.mosaic_writes} mosaic chunks)"
            )
        elif kind == "dashboard":
            console.print(f"dashboard: [link={value}]{value}[/link]")

    try:
        report = run_nightly(
            spec, spec_path=str(args.spec), options=options, progress=bar, on_event=on_event
        )
    finally:
        bar.stop()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        _summary(console, report)
    from pipeline.cli.main import say_failure

    say_failure(report)  # last, on stderr: what went wrong, what to do
    return report.exit_code


def _summary(console, r) -> None:
    colour = {"success": "green", "nothing_new": "green", "partial": "yellow"}.get(r.status, "red")
    console.print(
        f"[{colour}]{r.status}[/{colour}] night {r.run_id} "
        f"in {r.seconds.get('total', 0):.1f} s (store {esc(r.store)})"
    )
    if r.error:
        console.print(f"  error: {esc(r.error)}")
    console.print(
        f"  scenes: {len(r.new)} new, {len(r.changed)} changed, "
        f"{len(r.changed_in_place)} rewritten in place, {len(r.replaced)} replaced, "
        f"{len(r.removed) + r.removed_withheld} removed, "
        f"{len(r.rejected)} rejected"
        + (f", {r.withheld} withheld" if r.audience is not None else "")
    )
    for x in r.rejected:
        console.print(
            f"  [yellow]rejected[/yellow] ({x['stage']}) "
            f"{esc(str(x['item']) + ': [' + x['reason'] + '] ' + x['message'])}"
        )
    for x in r.replaced:
        console.print(f"  replaced {esc(x['old'])} by {esc(x['new'])} ({esc(x['rule'])})")
    if r.slots:
        console.print(
            f"  time slots: {r.slots['before']} → {r.slots['after']}; chunks "
            f"written: {r.chunks.get('cube', 0)} cube, {r.chunks.get('mosaic', 0)} "
            "mosaic"
        )
    if r.snapshot:
        console.print(f"  published snapshot {r.snapshot}")
    for note in r.notes:
        console.print(f"  note: {esc(note)}")
    for name, path in r.products.items():
        console.print(f"  {name}: {esc(path)}")


def _history(args, console) -> int:
    from pipeline.products.publish import check_nightly_store
    from pipeline.products.transaction import NightlyStore

    check_nightly_store(args.store)  # a file or a foreign folder: one line, not a panic
    nights = NightlyStore.open(args.store, create=False).nights()
    rows = [
        {
            "run_id": n.run_id,
            "snapshot": n.snapshot,
            "written_at": n.written_at.isoformat(),
            "message": n.message,
            **{k.removeprefix("aquila:"): v for k, v in n.metadata.items()},
        }
        for n in nights
    ]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return EXIT_OK
    if not rows:
        console.print(f"{esc(str(args.store))}: no night published yet")
    for row in rows:
        console.print(
            f"{row['written_at'][:19]}  {row['run_id']}  {row['snapshot']}  {row.get('status')}: "
            f"{row.get('new', 0)} new, {row.get('replaced', 0)} replaced, "
            f"{row.get('rejected', 0)} rejected, {row.get('slots')} slots, "
            f"{row.get('cube_chunks', 0)} cube + {row.get('mosaic_chunks', 0)} mosaic chunks"
        )
    return EXIT_OK
