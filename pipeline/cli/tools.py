"""The commands that publish no product: ``validate``, ``quicklook``, ``demo-catalog`` and
``catalog inspect`` (parsers and handlers)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.markup import escape as esc

from pipeline.cli.common import NO_PUBLISH, Output, exit_codes
from pipeline.products.report import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK


def _epilog(**codes: str) -> str:
    return exit_codes(**(NO_PUBLISH | codes))


def add_commands(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    val = sub.add_parser(
        "validate", parents=parents, formatter_class=raw,
        help="check a workflow spec and exit",
        description="Load and validate a workflow spec; print it resolved.",
        epilog=_epilog(**{
            f"c{EXIT_OK}": "the spec is valid",
            f"c{EXIT_FAILED}": "failure (a bug: please report it)",
            f"c{EXIT_BAD_INPUT}": "invalid spec (the message names the key and the fix) or a "
            "usage error",
        }),
    )
    val.add_argument("spec", type=Path, help="workflow spec file, e.g. workflows/demo.yaml")
    _add_cost_options(val)

    ql = sub.add_parser(
        "quicklook", parents=parents, formatter_class=raw,
        help="render a mosaic (or a cube slot) as a true- or false-colour PNG",
        description="Write an RGB PNG of a product, read from its overview level nearest "
        "--size: each band stretched from the 2nd to the 98th percentile of its valid pixels "
        "to 0..255 (or 0..--max linearly); no data is black.",
        epilog=_epilog(**{
            f"c{EXIT_OK}": "the PNG is written",
            f"c{EXIT_FAILED}": "failure (the PNG could not be written: storage; a bug)",
            f"c{EXIT_BAD_INPUT}": "bad input (not an Aquila product, a --time it does not hold, "
            "a band it lacks) or a usage error",
        }),
    )
    ql.add_argument("store", type=Path, help="a mosaic.zarr or cube.zarr")
    ql.add_argument("png", type=Path, help="output PNG path")
    colour = ql.add_mutually_exclusive_group()
    colour.add_argument("--preset", choices=("true", "false"), default="true",
                        help="true: red,green,blue; false: nir,red,green (default true)")
    colour.add_argument("--bands", metavar="R,G,B", default=None,
                        help="three bands for the red, green and blue channels")
    ql.add_argument("--size", type=int, default=1024,
                    help="about this many pixels on the larger side (default 1024)")
    ql.add_argument("--max", type=float, default=None,
                    help="a fixed linear stretch instead: reflectance shown as white, e.g. 0.3")
    ql.add_argument("--step", type=int, default=None,
                    help="keep every N-th pixel of the level read (default: to about --size)")
    ql.add_argument("--time", default=None,
                    help="cube: time slot, an index or a date such as 2025-06-15 "
                    "(default: the last)")

    demo = sub.add_parser(
        "demo-catalog", parents=parents, formatter_class=raw,
        help="generate the synthetic multi-provider catalog",
        description="Write a deterministic static STAC catalog of real COGs "
        "from three synthetic providers (different CRS, resolution, nodata, "
        "scale/offset, band layout), with known true reflectance.",
        epilog=_epilog(**{
            f"c{EXIT_OK}": "the catalog is written",
            f"c{EXIT_FAILED}": "failure (storage; a bug)",
            f"c{EXIT_BAD_INPUT}": "bad input (an unknown preset or provider, a folder holding "
            "files Aquila did not generate) or a usage error",
        }),
    )
    demo.add_argument("root", type=Path, help="output folder, e.g. catalogs/demo")
    demo.add_argument("--preset", default="demo", help="tiny | demo | medium (default demo)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument(
        "--providers", metavar="C,C", default=None,
        help="collections to generate (default north,south,east; the DN-only west "
        "(Sentinel-2-L1C-like + MTD_MSIL1C.xml) and centre (Landsat-L1-like + MTL.txt) "
        "serve workflows/demo-toa.yaml)",
    )
    _add_catalog(sub, parents)


def _add_cost_options(val: argparse.ArgumentParser) -> None:
    """``validate --cost``: the cost model's flags (pipeline/plan/cost.py, docs/cost.md)."""
    cost = val.add_argument_group(
        "cost estimate (docs/cost.md)",
        "--cost estimates core-hours, bytes read, tasks and memory per worker from per-core "
        "rates measured by benchmarks/rates.py. Without --revisit or --scenes-per-night it "
        "searches the catalog (items only, no pixel) and counts the plan's scenes; with one "
        "of them it reads no catalog and assumes the scenes.",
    )
    cost.add_argument("--cost", action="store_true", help="print the cost estimate")
    assume = cost.add_mutually_exclusive_group()
    assume.add_argument("--revisit", type=float, metavar="DAYS", default=None,
                        help="assume each grid pixel is observed every DAYS days")
    assume.add_argument("--scenes-per-night", type=float, metavar="N", default=None,
                        help="assume N scenes (--scene-km squares) land each day")
    cost.add_argument("--scene-km", type=float, default=110.0,
                      help="assumed scene size, km (default 110: a Sentinel-2 tile)")
    cost.add_argument("--deadline", metavar="DURATION", default=None,
                      help="size the cluster that finishes within it, e.g. 1h, 90m")
    cost.add_argument("--threads", type=int, default=4,
                      help="threads per worker, for memory and cluster size (default 4)")
    cost.add_argument("--bandwidth", type=float, metavar="MB/S", default=None,
                      help="network bandwidth of one worker from object storage, MB/s "
                      "(default: not modelled)")
    cost.add_argument("--margin", type=float, default=1.5,
                      help="factor on the core-seconds for what is not modelled (default 1.5)")


def _add_catalog(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    cat = sub.add_parser(
        "catalog", parents=parents,
        help="look at a catalog before trusting it (catalog inspect SOURCE)",
        description="Catalog tools. 'inspect' searches and normalises like a run, reads no pixel.",
    )
    cat_sub = cat.add_subparsers(dest="catalog_command", required=True, metavar="SUBCOMMAND")
    ins = cat_sub.add_parser(
        "inspect", parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="per collection: items found, how many normalise, bands/calibration, every reject",
        description="Search SOURCE(s) (static catalog, item collection, NDJSON, folder of item "
        "files, or STAC API root), normalise every item as 'aquila run' would, and print per "
        "collection: items found, how many normalise, the asset, dtype, scale, offset and "
        "nodata each band resolves to (and where that calibration came from), every reject "
        "with its reason, and duplicate publications with the rule that chose.",
        epilog=_epilog(**{
            f"c{EXIT_OK}": "inspected (rejected items are reported, not an error)",
            f"c{EXIT_FAILED}": "failure (a bug: please report it)",
            f"c{EXIT_BAD_INPUT}": "bad input (an unreadable source; a bad --bbox, --datetime, "
            "--filter,\n       --mirror or --profile) or a usage error",
        }),
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


# --------------------------------------------------------------------------- handlers


def validate(args: argparse.Namespace, out: Output) -> int:
    from pipeline.spec.workflow import grid_summary, load_spec

    spec = load_spec(args.spec)
    grid = grid_summary(spec)
    cost = _cost(spec, args) if args.cost else None
    if out.json:
        doc = {"command": "validate", "status": "valid", "exit_code": EXIT_OK,
               "spec": str(args.spec), "workflow": spec.name, "grid": grid,
               "resolved": spec.model_dump(mode="json")}
        if cost is not None:
            doc["cost"] = cost.as_dict()
        out.document(doc)
        return EXIT_OK
    out.human.print(f"[green]ok[/green] {esc(str(args.spec))}: workflow {spec.name!r}")
    out.human.print(f"grid: {esc(grid)}")
    if cost is not None:
        out.human.print(esc(_cost_text(cost)))
    else:
        out.human.print_json(spec.model_dump_json())
    return EXIT_OK


def _cost(spec: Any, args: argparse.Namespace) -> Any:
    """The estimate: from the plan of the scenes the catalog search finds, or assumed."""
    from pipeline.errors import NoScenesError, SpecError
    from pipeline.plan import cost

    for name in ("threads", "scene_km", "margin", "bandwidth", "revisit", "scenes_per_night"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise SpecError(f"--{name.replace('_', '-')} {value:g} must be positive")
    try:
        deadline = cost.parse_duration(args.deadline) if args.deadline else None
    except ValueError as exc:
        raise SpecError(f"--deadline: {exc}") from None
    rates = cost.load_rates()
    if args.revisit is not None or args.scenes_per_night is not None:
        work, outputs = _assumed_work(spec, args, cost, rates)
    else:
        from pipeline.engine.steps import discover, outputs_of, target_grid
        from pipeline.plan.chunks import make_plan

        scenes = list(discover(spec).scenes)
        if not scenes:
            raise NoScenesError(f"--cost: no usable scene in {spec.catalog}; give --revisit "
                                "DAYS or --scenes-per-night N to estimate without a catalog")
        plan = make_plan(scenes, grid=target_grid(spec, scenes), outputs=outputs_of(spec),
                         limits=spec.limits.plan_limits())
        work = cost.workload_of_plan(plan, source_px=cost.source_pixels(plan), rates=rates)
        outputs = plan.outputs
    return cost.estimate(work, outputs, rates=rates, threads=args.threads, deadline_s=deadline,
                         margin=args.margin,
                         bandwidth_bytes_s=args.bandwidth * 1e6 if args.bandwidth else None)


def _assumed_work(spec: Any, args: argparse.Namespace, cost: Any, rates: Any
                  ) -> tuple[Any, Any]:
    from pipeline.engine.steps import outputs_of
    from pipeline.errors import SpecError
    from pipeline.plan.grid import TargetGrid

    g = spec.grid
    if g.bounds is None:
        raise SpecError("--revisit/--scenes-per-night need grid.bounds in the spec (without "
                        "them the grid comes from the scenes: drop the assumption to search)")
    grid = TargetGrid.from_bounds(g.bounds, crs=g.crs, resolution=g.resolution, chunk=g.chunk,
                                  anchor=g.anchor, limits=spec.limits.plan_limits())
    outputs = outputs_of(spec)
    assumption = cost.Assumption(revisit_days=args.revisit,
                                 scenes_per_night=args.scenes_per_night, scene_km=args.scene_km,
                                 source_resolution=g.resolution,
                                 quality_resolution=2 * g.resolution)
    return cost.workload_assumed(grid, outputs, assumption, rates=rates, days=_days(spec)), \
        outputs


def _days(spec: Any) -> float:
    """Days of the spec's datetime range (an open end: one night)."""
    start, end = spec.datetime or (None, None)
    if start is None or end is None:
        return 1.0
    return max(1.0, round((end - start).total_seconds() / 86400.0))


def _cost_text(est: Any) -> str:
    w = est.workload
    gib = 2**30
    lines = [
        f"cost estimate ({w.basis}; rates: {est.rates_from}):",
        f"  tasks {w.tasks:,}, scenes {w.scenes:,}, source px decoded {w.source_px:.3g}, "
        f"bytes read {est.bytes_read / 1e9:,.1f} GB",
        f"  core-hours {est.core_hours:,.2f} ({est.core_seconds:,.0f} core-s: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in est.seconds_by_phase.items()) + ")",
        f"  memory: {est.task_peak_bytes / gib:.2f} GiB per task, "
        f"{est.worker_peak_bytes / gib:.2f} GiB per worker of {est.threads} threads "
        "(GDAL cache and the worker's base included)",
    ]
    c = est.cluster
    if c is not None:
        workers = f"{c.workers} worker" + ("s" if c.workers != 1 else "")
        lines.append(f"  cluster for {c.deadline_s / 3600:g} h: {workers} × "
                     f"{c.threads} threads = {c.cores} cores ({c.bound_by}-bound, about "
                     f"{c.hours:.2f} h with the margin)")
    lines += [f"  not modelled: {limit}" for limit in est.limits]
    return "\n".join(lines)


def quicklook(args: argparse.Namespace, out: Output) -> int:
    from pipeline.products.pictures.quicklook import quicklook as render

    png = render(args.store, args.png, bands=args.bands or args.preset, time=args.time,
                 max_side=args.size, step=args.step, max_reflectance=args.max)
    if out.json:
        out.document({"command": "quicklook", "status": "success", "exit_code": EXIT_OK,
                      "store": str(args.store), "png": str(png)})
    else:
        out.human.print(f"wrote {esc(str(png))}")
    return EXIT_OK


def demo_catalog(args: argparse.Namespace, out: Output) -> int:
    from pipeline.demo import generate_catalog

    providers = args.providers.split(",") if args.providers else None
    cat = generate_catalog(args.root, preset=args.preset, seed=args.seed, providers=providers)
    if out.json:
        out.document({
            "command": "demo-catalog", "status": "success", "exit_code": EXIT_OK,
            "root": str(cat.root), "catalog": str(cat.catalog_href), "preset": cat.preset,
            "seed": cat.seed, "scenes": len(cat.scenes),
            "collections": sorted({s.collection for s in cat.scenes}),
            "area_crs": cat.area_crs, "area_bounds": list(cat.area_bounds),
        })
    else:
        out.human.print(f"wrote {len(cat.scenes)} scenes to {esc(str(cat.catalog_href))}")
    return EXIT_OK


def catalog_inspect(args: argparse.Namespace, out: Output) -> int:
    from pipeline.catalog.inspect import inspect_command

    text = inspect_command(
        args.sources, bands=args.bands, collections=args.collections,
        bbox=args.bbox, datetime=args.datetime, cql2_filter=args.filter,
        profile=args.profile, allowed_roots=args.allowed_root,
        mirrors=args.mirror, as_json=out.json,
    )
    if out.json:
        out.document(json.loads(text))  # Inspection.as_dict(), as inspect renders it
    else:
        out.text(text)
    return EXIT_OK
