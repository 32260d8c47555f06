"""``aquila nightly`` and ``aquila history``: thin commands over :mod:`pipeline.engine.nightly`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from rich.markup import escape as esc

from pipeline.cli.common import (
    NO_PUBLISH,
    Output,
    add_cluster_flags,
    add_reader_flags,
    exit_codes,
    performance_report,
    publish_metrics,
    reader_settings,
)
from pipeline.cli.progress import ChunkBar
from pipeline.products.report import (
    EXIT_BAD_INPUT,
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
)

log = logging.getLogger("pipeline.cli")

NIGHTLY_HELP = """\
Append the scenes the catalog gained since the last night to an Icechunk store (cube + mosaics),
bring the mosaic chunks they touch up to date (latest, earliest, min and max are updated from
their committed values; the others are recomposed), and publish it all in one atomic commit.
Idempotent and crash-safe: a night with nothing new commits nothing; a killed run, rerun, gives
the same store.
One run per store at a time: a second one exits at once with code 75.
"""

NIGHTLY_EPILOG = exit_codes(**{
    f"c{EXIT_OK}": "success or nothing new",
    f"c{EXIT_FAILED}": "failure (nothing published)",
    f"c{EXIT_PARTIAL}": "partial (published without the scenes that could not be read: see "
    "the report)",
    f"c{EXIT_BUSY}": "busy (another run holds the store's lock; try again later)",
    f"c{EXIT_INTERRUPTED}": "interrupted (Ctrl-C; nothing published, the next run removes its "
    "branch)",
}) + """
With --json, stdout holds the night report (as written beside the store, with exit_code); the
progress bar and messages go to stderr.
"""


def add_commands(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    night = sub.add_parser(
        "nightly",
        parents=parents,
        help="incremental run: append tonight's new scenes to a nightly store, atomically",
        description=NIGHTLY_HELP,
        epilog=NIGHTLY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    night.add_argument("spec", type=Path, help="workflow spec (needs grid.bounds and a cube)")
    night.add_argument(
        "--store",
        type=Path,
        metavar="STORE",
        help="the Icechunk store: a folder, or s3://bucket/prefix/name (endpoint and "
        "credentials from the standard AWS variables; its lock is then a lease object "
        "<store>.lock and its reports are objects beside it) (default: <cube store "
        "folder>/<workflow name>.icechunk)",
    )
    add_cluster_flags(night)
    add_reader_flags(night)
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
    night.add_argument("--no-progress", action="store_true", help="no progress bar")

    hist = sub.add_parser(
        "history",
        parents=parents,
        help="list the nights published to a nightly store (from the store itself)",
        description="List the published nights of a nightly store, newest first: run id, "
        "snapshot id (open it with 'open_night(store, run=...)'), time, and what it did. "
        "With --json: a JSON list of the nights (empty when none is published yet).",
        epilog=exit_codes(**(NO_PUBLISH | {
            f"c{EXIT_OK}": "listed (also when no night is published yet)",
            f"c{EXIT_FAILED}": "failure (the store could not be read; a bug)",
            f"c{EXIT_BAD_INPUT}": "bad input (no nightly store there) or a usage error",
        })),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hist.add_argument("store", type=Path,
                      help="a nightly store (an .icechunk folder, or s3://bucket/prefix/name)")


def main(args: argparse.Namespace, out: Output) -> int:
    if args.command == "history":
        return _history(args, out)
    return _nightly(args, out)


def _nightly(args: argparse.Namespace, out: Output) -> int:
    from pipeline.cli.run import report_document, say_failure
    from pipeline.engine.cluster import cluster_from_cli, warm_started

    perf = performance_report(args)  # a usage error before anything is read
    # a local cluster's workers start importing now, while this process imports, reads, plans
    with warm_started(cluster_from_cli(args), direct=args.direct) as cluster:
        from pipeline.engine.nightly import NightOptions, run_nightly
        from pipeline.spec.workflow import load_spec

        spec = load_spec(args.spec)
        options = NightOptions(
            store=args.store,
            cluster=cluster,
            direct=args.direct,
            reader=reader_settings(args),
            report_path=args.report,
            rebuild=args.rebuild,
            performance_report=perf,
        )
        log.debug("nightly %s: %s", args.spec, options)
        publish_metrics(args, options.cluster, "nightly", spec.name)  # runs started
        with ChunkBar(out.human, disable=args.no_progress or out.quiet) as bar:
            report = run_nightly(spec, spec_path=str(args.spec), options=options, progress=bar,
                                 on_event=lambda kind, value: _event(out.human, kind, value))
    publish_metrics(args, options.cluster, "nightly", spec.name, report)
    if out.json:
        out.document(report_document(report))
    else:
        _summary(out.human, report)
    say_failure(report, out)  # last, on stderr: what went wrong, what to do
    return int(report.exit_code)


def _event(console: Any, kind: str, value: Any) -> None:
    """The night's running commentary (ids of withheld items are never shown)."""
    log.debug("event: %s", kind)
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


def _summary(console: Any, r: Any) -> None:
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
            + (f" ({r.chunks['mosaic_folds']} updated from their committed values)"
               if r.chunks.get("mosaic_folds") else "")
        )
    if r.snapshot:
        console.print(f"  published snapshot {r.snapshot}")
    for note in r.notes:
        console.print(f"  note: {esc(note)}")
    for name, path in r.products.items():
        console.print(f"  {name}: {esc(path)}")


def _history(args: argparse.Namespace, out: Output) -> int:
    from pipeline.products.objectstore import object_location, storage_failure
    from pipeline.products.publish import check_nightly_store
    from pipeline.products.transaction import NightlyStore, _icechunk

    loc = object_location(args.store)
    if loc is None:
        # a file or a foreign folder: one line, not a panic (history writes no sidecar)
        check_nightly_store(args.store, sidecars=False)
        _require_store(args.store)
    try:
        nights = NightlyStore.open(args.store, create=False).nights()
    except _icechunk().IcechunkError as exc:  # the storage's (NightlyStore reads Icechunk)
        failure = storage_failure(exc, [loc]) if loc is not None else None
        if failure is None:  # a store on disk: its error keeps its traceback
            raise
        raise failure from exc  # an endpoint nobody answers at: one line naming the store
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
    if out.json:
        out.document(rows)
        return EXIT_OK
    console = out.human
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


def _require_store(store: Path) -> None:
    """History reads a store that exists: nothing there, or an empty folder, is one line (exit 2)
    rather than Icechunk's "repository doesn't exist" traceback."""
    from pipeline.errors import ProductNotFound

    if not store.is_dir() or not any(store.iterdir()):
        raise ProductNotFound(
            f"no nightly store at {store} (nothing there, or an empty folder); give the folder "
            "'aquila nightly' wrote, e.g. out/nightly/nightly.icechunk"
        )
