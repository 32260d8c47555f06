"""``aquila``: a thin command line over the Python API. Parse, call, map errors to exit codes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.markup import escape as esc

from pipeline.cli.progress import ChunkBar
from pipeline.engine.cluster import positive_int
from pipeline.products.report import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

EPILOG = """\
exit codes: 0 success · 1 failure (cluster, storage, bug; nothing published) · 2 bad input
(spec, catalog, no scenes, a product path that is not Aquila's) · 3 partial (products written
without the scenes that could not be read: see the report) · 75 busy (another run holds a
store's lock; try again later) · 130 interrupted (Ctrl-C; nothing published)
A product is built beside its store and swapped in only when complete: a run that fails or is
interrupted leaves the previous product as it was.

examples:
  aquila demo-catalog catalogs/demo          # generate the bundled demo catalog
  aquila run workflows/demo.yaml             # local cluster: 2 worker processes × 1 thread
  aquila run workflows/demo.yaml --workers 4 --threads 2
  aquila run workflows/demo.yaml --scheduler tcp://10.0.0.5:8786
  aquila validate workflows/demo.yaml        # check a spec without running it
  aquila nightly workflows/demo.yaml         # incremental, atomic: append tonight's scenes
  aquila history out/demo/demo.icechunk      # the nights published to a nightly store

radiometry (a workflow's 'radiometry:' section; README "Radiometry"): target reflectance |
radiance, harmonize_to a reference sensor profile (e.g. landsat-8-9-oli: HLS v2.0 for
Sentinel-2A/B), mask [nodata, saturated, cloud, shadow, cirrus, snow, water], dilate N pixels:
  aquila demo-catalog catalogs/demo-toa --providers west,centre   # DN-only providers
  aquila run workflows/demo-toa.yaml         # harmonised TOA reflectance from their DN
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aquila",
        description="Turn many providers' STAC imagery into one calibrated Zarr cube and mosaic "
        "on a Dask cluster.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a workflow spec (YAML) and write its products",
        description="Run a workflow: search the catalog, normalise items, plan "
        "one task per output chunk, compute on Dask, write Zarr products and a "
        "run report (JSON, next to the products).",
    )
    run.add_argument("spec", type=Path, help="workflow spec file, e.g. workflows/demo.yaml")
    where = run.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="use an existing Dask scheduler (tcp://host:8786) instead of starting a local cluster",
    )
    where.add_argument(
        "--direct",
        action="store_true",
        help="run every chunk in this process without Dask (debugging)",
    )
    run.add_argument(
        "--workers",
        type=positive_int,
        default=2,
        metavar="N",
        help="local cluster: worker processes (default 2)",
    )
    run.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        metavar="N",
        help="local cluster: threads per worker (default 1)",
    )
    run.add_argument(
        "--memory-limit",
        default="auto",
        metavar="SIZE",
        help="local cluster: memory per worker, e.g. 4GiB (default: auto)",
    )
    run.add_argument(
        "--dashboard",
        default="127.0.0.1:8787",
        metavar="HOST:PORT",
        help="local cluster: dashboard address (default 127.0.0.1:8787, loopback)",
    )
    run.add_argument(
        "--cluster-profile",
        type=Path,
        metavar="FILE",
        help="cluster profile YAML (sizes, dashboard, TLS), e.g. cluster/tls-local.yaml; "
        "--scheduler still picks the scheduler",
    )
    run.add_argument(
        "--gdal-cache-mb",
        type=positive_int,
        default=256,
        metavar="MB",
        help="GDAL block cache per worker process (default 256)",
    )
    run.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="where to write the run report (default: beside the products)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    val = sub.add_parser(
        "validate",
        help="check a workflow spec and exit",
        description="Load and validate a workflow spec; print it resolved.",
    )
    val.add_argument("spec", type=Path)

    ql = sub.add_parser(
        "quicklook",
        help="render a mosaic (or a cube slot) as a true-colour PNG",
        description="Write a PNG of a product: red/green/blue, reflectance 0..--max → 0..255.",
    )
    ql.add_argument("store", type=Path, help="a mosaic.zarr or cube.zarr")
    ql.add_argument("png", type=Path, help="output PNG path")
    ql.add_argument("--max", type=float, default=0.3, help="reflectance shown as white (0.3)")
    ql.add_argument("--step", type=int, default=1, help="keep every N-th pixel (default 1)")
    ql.add_argument("--time", type=int, default=None, help="cube: time index (default: last)")

    demo = sub.add_parser(
        "demo-catalog",
        help="generate the synthetic multi-provider catalog",
        description="Write a deterministic static STAC catalog of real COGs "
        "from three synthetic providers (different CRS, resolution, nodata, "
        "scale/offset, band layout), with known true reflectance.",
    )
    demo.add_argument("root", type=Path, help="output folder, e.g. catalogs/demo")
    demo.add_argument("--preset", default="demo", help="tiny | demo | medium (default demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--providers", metavar="C,C", default=None,
        help="collections to generate (default north,south,east; the DN-only west "
        "(Sentinel-2-L1C-like + MTD_MSIL1C.xml) and centre (Landsat-L1-like + MTL.txt) "
        "serve workflows/demo-toa.yaml)",
    )

    cat = sub.add_parser(
        "catalog",
        help="look at a catalog before trusting it (catalog inspect SOURCE)",
        description="Catalog tools. 'inspect' searches and normalises like a run, reads no pixel.",
    )
    cat_sub = cat.add_subparsers(dest="catalog_command", required=True, metavar="SUBCOMMAND")
    ins = cat_sub.add_parser(
        "inspect",
        help="per collection: items found, how many normalise, bands/calibration, every reject",
        description="Search SOURCE(s) (static catalog, item collection, NDJSON, folder of item "
        "files, or STAC API root), normalise every item as 'aquila run' would, and print per "
        "collection: items found, how many normalise, the asset, dtype, scale, offset and "
        "nodata each band resolves to (and where that calibration came from), every reject "
        "with its reason, and duplicate publications with the rule that chose.",
    )
    ins.add_argument("sources", nargs="+", metavar="SOURCE", help="catalog path/URL or API root")
    ins.add_argument("--bands", metavar="B,B", help="common names (default blue,green,red,nir)")
    ins.add_argument("--collections", metavar="C,C", help="only these collections")
    ins.add_argument("--bbox", metavar="W,S,E,N", help="lon/lat degrees")
    ins.add_argument(
        "--datetime", metavar="RANGE", help="e.g. 2020-01-01/2020-12-31 or 2020-01-01/.."
    )
    ins.add_argument(
        "--filter", metavar="CQL2", help="CQL2-text filter, e.g. \"eo:cloud_cover < 20\""
    )
    ins.add_argument("--profile", metavar="NAME", help="force a sensor profile (catalogs/profiles)")
    ins.add_argument(
        "--allowed-root", action="append", default=[], metavar="ROOT",
        help="folder or URL prefix asset links may point into (repeatable; default: the source's)",
    )
    ins.add_argument(
        "--mirror", action="append", default=[], metavar="PREFIX=TARGET",
        help="read asset links starting with PREFIX from TARGET (folder or URL); repeatable",
    )
    ins.add_argument("--json", action="store_true", help="print JSON instead of text")

    from pipeline.cli.nightly import add_commands

    add_commands(sub)  # nightly, history
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    from pipeline.errors import AquilaError, InputError

    try:
        if args.command == "run":
            return _run(args, console)
        if args.command in ("nightly", "history"):
            from pipeline.cli.nightly import main as nightly_main

            return nightly_main(args, console)
        if args.command == "validate":
            from pipeline.spec.workflow import grid_summary, load_spec

            spec = load_spec(args.spec)
            console.print(f"[green]ok[/green] {esc(str(args.spec))}: workflow {spec.name!r}")
            console.print(f"grid: {esc(grid_summary(spec))}")
            console.print_json(spec.model_dump_json())
            return EXIT_OK
        if args.command == "quicklook":
            from pipeline.products.quicklook import quicklook

            png = quicklook(
                args.store, args.png, max_reflectance=args.max, step=args.step,
                time_index=args.time,
            )
            console.print(f"wrote {esc(str(png))}")
            return EXIT_OK
        if args.command == "catalog":
            from pipeline.catalog.inspect import inspect_command

            print(
                inspect_command(
                    args.sources, bands=args.bands, collections=args.collections,
                    bbox=args.bbox, datetime=args.datetime, cql2_filter=args.filter,
                    profile=args.profile, allowed_roots=args.allowed_root,
                    mirrors=args.mirror, as_json=args.json,
                )
            )
            return EXIT_OK
        if args.command == "demo-catalog":
            from pipeline.demo import generate_catalog

            providers = args.providers.split(",") if args.providers else None
            cat = generate_catalog(args.root, preset=args.preset, seed=args.seed,
                                   providers=providers)
            console.print(f"wrote {len(cat.scenes)} scenes to {esc(str(cat.catalog_href))}")
            return EXIT_OK
    except InputError as exc:
        err.print(f"[red]error[/red] {esc(f'[{exc.reason}] {exc.message}')}")
        return EXIT_BAD_INPUT
    except AquilaError as exc:
        err.print(f"[red]failed[/red] {esc(f'[{exc.reason}] {exc.message}')}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red] by Ctrl-C; nothing was written")
        return EXIT_INTERRUPTED
    return EXIT_FAILED  # pragma: no cover


def _run(args, console) -> int:

    from rich.console import Console

    from pipeline.engine.cluster import cluster_from_cli
    from pipeline.engine.run import RunOptions, default_report_path, run_workflow
    from pipeline.io.reader import ReaderSettings
    from pipeline.spec.workflow import load_spec

    spec = load_spec(args.spec)
    cluster = cluster_from_cli(args)
    options = RunOptions(
        cluster=cluster,
        direct=args.direct,
        reader=ReaderSettings(gdal_cache_mb=args.gdal_cache_mb),
        report_path=args.report,
    )
    bar = ChunkBar(console, disable=args.no_progress)

    def on_event(kind: str, value) -> None:
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

    try:
        report = run_workflow(
            spec, spec_path=str(args.spec), options=options, progress=bar, on_event=on_event
        )
    except KeyboardInterrupt:  # run_workflow removed its builds and wrote the report first
        bar.stop()
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            "[red]interrupted[/red] by Ctrl-C: nothing was published, the previous products "
            f"are unchanged (report: {esc(str(options.report_path or default_report_path(spec)))})"
        )
        return EXIT_INTERRUPTED
    finally:
        bar.stop()
    _summary(console, report)
    say_failure(report)
    return report.exit_code


def say_failure(report) -> None:
    """On stderr, last: one line saying what went wrong and what to do (the summary above it,
    on stdout, has the details)."""
    from rich.console import Console

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if getattr(report, "report_error", None):  # a run's report that went elsewhere
        err.print(f"[yellow]report[/yellow] {esc(report.report_error)}")
    if report.status not in ("success", "partial", "nothing_new") and report.error:
        word = {"bad_input": "error", "busy": "busy"}.get(report.status, "failed")
        err.print(f"[red]{word}[/red] {esc(report.error)}")


def _summary(console, report) -> None:
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
        console.print(
            f"  {report.tasks} chunk tasks, {report.time_slots} time slots, "
            f"{report.pixels_written:,} pixels written per band"
        )
    for name, path in report.products.items():
        console.print(f"  {name}: {esc(path)}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
