"""``aquila run``: a thin command over :func:`pipeline.engine.run.run_workflow`."""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.markup import escape as esc

from pipeline.cli.common import (
    Output,
    add_cluster_flags,
    add_reader_flags,
    exit_codes,
    failure_document,
    performance_report,
    publish_metrics,
    reader_settings,
)
from pipeline.cli.progress import ChunkBar
from pipeline.products.report import EXIT_INTERRUPTED, fused_tasks

log = logging.getLogger("pipeline.cli")

RUN_EPILOG = (
    exit_codes()
    + """
A product is built beside its store and swapped in only when complete: a run that fails or is
interrupted leaves the previous product as it was. With --json, stdout holds the run report
(as written beside the products, plus exit_code); the progress bar and messages go to stderr.
"""
)


def add_command(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        parents=parents,
        help="run a workflow spec (YAML) and write its products",
        description="Run a workflow: search the catalog, normalise items, plan "
        "one task per output chunk, compute on Dask, write Zarr products and a "
        "run report (JSON, next to the products).",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("spec", type=Path, help="workflow spec file, e.g. workflows/demo.yaml")
    add_cluster_flags(run)
    add_reader_flags(run)
    run.add_argument("--report", type=Path, metavar="FILE",
                     help="where to write the run report (default: beside the products)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-pictures", action="store_true",
                     help="skip the quicklook, lineage map, coverage plot and HTML report "
                     "(drawn beside the run report by default; ~1-2 s)")


def report_document(report: Any) -> dict[str, Any]:
    """A run's or a night's report as its ``--json`` document (with ``exit_code``)."""
    doc = report.as_dict() if hasattr(report, "as_dict") else asdict(report)
    return {**doc, "exit_code": report.exit_code}


def run(args: argparse.Namespace, out: Output) -> int:
    from pipeline.engine.cluster import cluster_from_cli, warm_started

    perf = performance_report(args)  # a usage error before anything is read
    # a local cluster's workers start importing now, while this process imports, reads, plans
    with warm_started(cluster_from_cli(args), direct=args.direct) as cluster:
        from pipeline.engine.run import RunOptions, report_location, run_workflow
        from pipeline.spec.workflow import load_spec

        spec = load_spec(args.spec)
        options = RunOptions(
            cluster=cluster,
            direct=args.direct,
            reader=reader_settings(args),
            report_path=args.report,
            performance_report=perf,
        )
        log.debug("run %s: %s", args.spec, options)
        publish_metrics(args, options.cluster, "run", spec.name)  # runs started
        try:
            with ChunkBar(out.human, disable=args.no_progress or out.quiet) as bar:
                report = run_workflow(spec, spec_path=str(args.spec), options=options,
                                      progress=bar,
                                      on_event=lambda kind, value: _event(out, kind, value))
        except KeyboardInterrupt:  # run_workflow removed its builds and wrote the report first
            where = options.report_path or report_location(spec)
            message = ("interrupted by Ctrl-C: nothing was published, the previous products "
                       f"are unchanged (report: {where})")
            out.err.print(f"[red]interrupted[/red] {esc(message.removeprefix('interrupted '))}")
            if out.json:
                out.document(failure_document("run", "interrupted", EXIT_INTERRUPTED, message)
                             | {"report": str(where)})
            return EXIT_INTERRUPTED
    publish_metrics(args, options.cluster, "run", spec.name, report)
    if not args.no_pictures:
        draw_pictures(report)
    if out.json:
        out.document(report_document(report))
    else:
        summary(out, report)
    say_failure(report, out)
    return int(report.exit_code)


#: the pictures' names among a report's products (``aquila run`` lists them with the stores)
PICTURE_PRODUCTS = {"quicklook": "quicklook", "lineage": "lineage map",
                    "coverage": "coverage plot", "html": "html report"}


def draw_pictures(report: Any) -> None:
    """After a run that published (success or partial): the quicklook, lineage map, coverage
    plot and HTML report beside the run report, listed in its ``products`` (and the report
    written again so that the file says so too). A picture that cannot be drawn is a note,
    never a failure of the run; a report that is not in its folder gets no pictures (they
    would land in the temporary folder)."""
    where = report.products.get("report")
    if report.status not in ("success", "partial") or where is None:
        return
    if "://" in where:  # a bucket product's report: its run already noted no pictures
        return
    if report.report_error:
        report.notes.append("no pictures drawn: the run report is not in its folder")
        return
    try:
        from pipeline.products.pictures import make_pictures

        pictures = make_pictures(Path(where), report.products)
    except Exception as exc:  # a picture must never fail a run that published
        report.notes.append(f"no pictures drawn: {type(exc).__name__}: {exc}")
        return
    for name, path in pictures.written.items():
        report.products[PICTURE_PRODUCTS[name]] = str(path)
    for name, reason in pictures.not_drawn.items():
        report.notes.append(f"no {PICTURE_PRODUCTS[name]} drawn: {reason}")
    try:
        report.write(Path(where))
    except OSError as exc:
        report.notes.append(f"the run report does not list its pictures: {exc.strerror}")


def _event(out: Output, kind: str, value: Any) -> None:
    """The engine's running commentary, for a human (ids of withheld items are never shown)."""
    log.debug("event: %s", kind)
    console = out.human
    if kind == "discovered":
        n, rejects = value
        console.print(f"scenes: {n} usable, {len(rejects)} rejected")
        for r in rejects:
            console.print(
                f"  [yellow]rejected[/yellow] {esc(f'{r.item_id}: [{r.reason}] {r.message}')}"
            )
    elif kind == "withheld":
        count, path = value  # ids are never printed: they are for the operator only
        console.print(f"releasability: {count} item(s) withheld from the audience "
                      f"(operator report: {esc(str(path))})")
    elif kind == "planned":
        console.print(f"plan: {esc(value.summary())}")
    elif kind == "dashboard":
        console.print(f"dashboard: [link={value}]{value}[/link]")


def say_failure(report: Any, out: Output | None = None) -> None:
    """On stderr, last: one line saying what went wrong and what to do (the summary above it,
    on stdout, has the details). With ``-q`` a partial run says so here too, its summary being
    silent."""
    from rich.console import Console

    err = out.err if out is not None else Console(stderr=True, highlight=False, soft_wrap=True)
    if getattr(report, "report_error", None):  # a run's report that went elsewhere
        err.print(f"[yellow]report[/yellow] {esc(report.report_error)}")
    if report.status not in ("success", "partial", "nothing_new") and report.error:
        word = {"bad_input": "error", "busy": "busy"}.get(report.status, "failed")
        err.print(f"[red]{word}[/red] {esc(report.error)}")
    elif report.status == "partial" and out is not None and out.quiet and not out.json:
        where = report.products.get("report", "the run report")
        err.print("[yellow]partial[/yellow] products written without the scenes that could not "
                  f"be read: see {esc(str(where))}")


def summary(out: Output, report: Any) -> None:
    console = out.human
    colour = {"success": "green", "partial": "yellow"}.get(report.status, "red")
    console.print(
        f"[{colour}]{report.status}[/{colour}] run {report.run_id} "
        f"in {report.seconds.get('total', 0):.1f} s"
    )
    if report.error:
        console.print(f"  error: {esc(report.error)}")
    console.print(
        f"  scenes: {report.scenes_found} found, {len(report.scenes_used)} used, "
        f"{len(report.rejected)} rejected, {len(report.read_failures)} failed to read"
        + (f", {report.withheld} withheld" if report.audience is not None else "")
    )
    for product, label in report.labels.items():
        if isinstance(label, dict):
            console.print(
                f"  label ({esc(product)}): {label['classification']} releasable to "
                f"{', '.join(label['releasable_to'])}"
                + (f", caveats {', '.join(label['caveats'])}" if label["caveats"] else "")
            )
    for f in report.read_failures:
        console.print(f"  [yellow]read failed[/yellow] {esc(f['item'] + ': ' + f['error'])}")
    for f in report.chunk_failures:
        console.print(f"  [red]chunk failed[/red] {esc(f['chunk'] + ': ' + f['error'])}")
    if report.tasks:
        fused = fused_tasks(report.tasks, report.compute_tasks)
        console.print(
            f"  {report.tasks} chunks"
            + (f" (computed in {fused} tasks: small chunks 2 × 2 per task)" if fused else "")
            + f", {report.time_slots} time slots, "
            f"{report.pixels_written:,} pixels written per band"
        )
    for name, path in report.products.items():
        console.print(f"  {name}: {esc(path)}")
    for note in report.notes:
        if note.startswith("no ") and " drawn: " in note:  # draw_pictures's
            console.print(f"  [yellow]picture[/yellow] {esc(note)}")
