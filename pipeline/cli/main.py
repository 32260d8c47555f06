"""``aquila``: a thin command line over the Python API. Parse, call, map errors to exit codes.

The commands live beside this module: ``run`` (:mod:`pipeline.cli.run`), ``nightly`` and
``history`` (:mod:`pipeline.cli.nightly`), ``validate``, ``quicklook``, ``demo-catalog`` and
``catalog inspect`` (:mod:`pipeline.cli.tools`), ``export`` (:mod:`pipeline.cli.export`),
``submit``/``status``/``logs``/``cancel`` (:mod:`pipeline.cli.submit`); what they share
(``-v``/``-q``/``--json``, the cluster and reader flags, exit-code epilogs, where text goes) in
:mod:`pipeline.cli.common`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import sys
from collections.abc import Callable
from typing import NoReturn

from rich.markup import escape as esc

from pipeline import __version__
from pipeline.cli import export, nightly, run, submit, tools
from pipeline.cli.common import (
    Output,
    configure_logging,
    exit_codes,
    failure_document,
    global_options,
    print_document,
)
from pipeline.products.report import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED

log = logging.getLogger("pipeline.cli")

EPILOG = (
    exit_codes()
    + """\
A product is built beside its store and swapped in only when complete: a run that fails or is
interrupted leaves the previous product as it was. Each command's --help lists its own codes.

output: -q/--quiet, -v/--verbose and --json go before or after the command. --json prints one
JSON document on stdout and nothing else (human text, progress and errors go to stderr).

examples:
  aquila demo-catalog catalogs/demo          # generate the bundled demo catalog
  aquila run workflows/demo.yaml             # local cluster sized from the usable cores
  aquila run workflows/demo.yaml --workers 4 --threads 2
  aquila run workflows/demo.yaml --scheduler tcp://10.0.0.5:8786
  aquila -q run workflows/demo.yaml --json > report.json   # the run report, nothing else
  aquila validate workflows/demo.yaml        # check a spec without running it
  aquila nightly workflows/demo.yaml         # incremental, atomic: append tonight's scenes
  aquila history out/demo/demo.icechunk      # the nights published to a nightly store
  aquila export out/demo/mosaic.zarr --format cog out/demo/mosaic.tif   # for GDAL/QGIS

radiometry (a workflow's 'radiometry:' section; README "Radiometry"): target reflectance |
radiance, harmonize_to a reference sensor profile (e.g. landsat-8-9-oli: HLS v2.0 for
Sentinel-2A/B), mask [nodata, saturated, cloud, shadow, cirrus, snow, water], dilate N pixels:
  aquila demo-catalog catalogs/demo-toa --providers west,centre   # DN-only providers
  aquila run workflows/demo-toa.yaml         # harmonised TOA reflectance from their DN
"""
)


class UsageError(SystemExit):
    """A command line argparse refused (exit 2, the message already on stderr)."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_BAD_INPUT)
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is raised (as a SystemExit) instead of exiting at once, so
    that ``main`` can answer ``--json`` with a document too."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="aquila",
        description="Turn many providers' STAC imagery into one calibrated Zarr cube and mosaic "
        "on a Dask cluster.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[global_options(in_subcommand=False)],
    )
    p.add_argument("--version", action="version", version=f"aquila {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = [global_options(in_subcommand=True)]
    run.add_command(sub, parents)
    tools.add_commands(sub, parents)  # validate, quicklook, demo-catalog, catalog inspect
    nightly.add_commands(sub, parents)  # nightly, history
    submit.add_parsers(sub, parents)  # submit, status, logs, cancel
    export.add_command(sub, parents)
    return p


Handler = Callable[[argparse.Namespace, Output], int]

HANDLERS: dict[str, Handler] = {
    "run": run.run,
    "nightly": nightly.main,
    "history": nightly.main,
    "validate": tools.validate,
    "quicklook": tools.quicklook,
    "demo-catalog": tools.demo_catalog,
    "catalog": tools.catalog_inspect,
    "export": export.main,
    **dict.fromkeys(submit.COMMANDS, submit.dispatch),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.verbose and args.quiet:
            parser.error("-v/--verbose and -q/--quiet contradict each other: give one of them")
    except UsageError as exc:
        if "--json" in argv:
            print_document(
                failure_document(None, "bad_input", EXIT_BAD_INPUT, exc.message, "usage")
            )
        return EXIT_BAD_INPUT
    configure_logging(verbose=args.verbose, quiet=args.quiet, log_format=args.log_format)
    log.debug("aquila %s, arguments %s", __version__, vars(args))
    try:
        return _call(args, Output.for_args(args))
    finally:
        _settle_stores()


def entry(argv: list[str] | None = None) -> int:
    """The ``aquila`` command (its console script, and ``python -m pipeline.cli.main``):
    :func:`main`, then every object the process holds moved into the garbage collector's
    permanent generation (:func:`gc.freeze`), as the interpreter is about to exit: its last
    collections then skip them (a run's driver holds numba's, zarr's and distributed's objects:
    the bench job's exit took 0.47-0.70 s after the run report was written, 0.03-0.06 s with
    this). Atexit handlers, logging's flush and stdio still run as usual; memory goes back to
    the system with the process. Not in :func:`main`, which tests and embedding code call."""
    code = main(argv)
    gc.freeze()
    return code


def _settle_stores() -> None:
    """Before the process exits: let zarr's in-flight store calls end (a failed write leaves
    its siblings running, and asyncio would print each one's error as an unretrieved traceback;
    :func:`pipeline.products.chunkio.settle`). Nothing to do where zarr was never used."""
    if "zarr.core.sync" in sys.modules:
        from pipeline.products.chunkio import settle

        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: exit with the first's line
            settle()


def _command(args: argparse.Namespace) -> str:
    return "catalog inspect" if args.command == "catalog" else str(args.command)


def _call(args: argparse.Namespace, out: Output) -> int:
    """Run the command; an error ends in one line on stderr (and a ``--json`` document)."""
    from pipeline.errors import AquilaError, InputError

    try:
        return HANDLERS[args.command](args, out)
    except InputError as exc:
        return _failed(args, out, "bad_input", "error", exc.reason, exc.message)
    except AquilaError as exc:
        return _failed(args, out, "failed", "failed", exc.reason, exc.message)
    except KeyboardInterrupt:
        return _failed(args, out, "interrupted", "interrupted", None,
                       "by Ctrl-C; nothing was written")


def _failed(args: argparse.Namespace, out: Output, status: str, word: str, reason: str | None,
            message: str) -> int:
    code = {"bad_input": EXIT_BAD_INPUT, "interrupted": EXIT_INTERRUPTED}.get(status, EXIT_FAILED)
    text = message if reason is None else f"[{reason}] {message}"
    out.err.print(f"[red]{word}[/red] {esc(text)}")
    if out.json:
        out.document(failure_document(_command(args), status, code, text, reason))
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(entry())
