"""What every ``aquila`` command shares: the global options (``-v``, ``-q``, ``--json``), the
cluster and reader flags of ``run`` and ``nightly``, the exit-code epilogs, and :class:`Output`,
which decides where each kind of text goes.

Streams: a command's result goes to stdout (human text, or with ``--json`` exactly one JSON
document and nothing else); progress, messages and errors go to stderr whenever stdout holds
JSON. ``-q`` keeps warnings and errors only (no progress bar, no summary); ``-v`` adds the
``pipeline`` logger's debug records on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from rich.console import Console

from pipeline.engine.cluster import local_shape, positive_int
from pipeline.products.report import (
    EXIT_BAD_INPUT,
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
)

log = logging.getLogger("pipeline.cli")

# --------------------------------------------------------------------------- exit codes

#: What each exit code means for a command that publishes products (run, nightly).
EXIT_MEANINGS: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILED: "failure (cluster, storage, bug; nothing published)",
    EXIT_BAD_INPUT: "bad input (spec, catalog, no scenes, a path that is not Aquila's) or a "
    "usage error",
    EXIT_PARTIAL: "partial (products written without the scenes that could not be read: see "
    "the report)",
    EXIT_BUSY: "busy (another run holds a store's lock; try again later)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C; nothing published)",
}


def exit_codes(**meanings: str) -> str:
    """An epilog block: ``exit codes:`` then one line per code. Keyword ``c<code>=meaning``
    overrides (or adds) a code's meaning; ``c<code>=""`` drops it (a code the command never
    returns). Codes are the EXIT_* constants of :mod:`pipeline.products.report`."""
    table = dict(EXIT_MEANINGS)
    for key, text in meanings.items():
        code = int(key.removeprefix("c"))
        if text:
            table[code] = text
        else:
            table.pop(code, None)
    lines = [f"  {code:<4} {text}" for code, text in sorted(table.items())]
    return "exit codes:\n" + "\n".join(lines) + "\n"


# the codes of the commands that publish nothing: no partial, no lock
NO_PUBLISH = {f"c{EXIT_PARTIAL}": "", f"c{EXIT_BUSY}": "",
              f"c{EXIT_INTERRUPTED}": "interrupted (Ctrl-C)"}

# --------------------------------------------------------------------------- global options


def global_options(*, in_subcommand: bool) -> argparse.ArgumentParser:
    """``-v``, ``-q`` and ``--json``: accepted before the command (``aquila -q run ...``) and
    after it (``aquila run ... -q``). In a subcommand they default to SUPPRESS, so a flag given
    before the command is not reset by the subcommand's default."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")

    def default(value: object) -> Any:
        return argparse.SUPPRESS if in_subcommand else value

    g.add_argument("-v", "--verbose", action="store_true", default=default(False),
                   help="debug messages (the 'pipeline' logger) on stderr")
    g.add_argument("-q", "--quiet", action="store_true", default=default(False),
                   help="warnings and errors only: no progress bar, no summary")
    g.add_argument("--log-format", choices=("text", "json"), default=default("text"),
                   help="log lines on stderr: text, or json (one object per line with run_id, "
                   "workflow, mode, event, chunk: for log shippers)")
    g.add_argument("--json", action="store_true", default=default(False),
                   help="print one JSON document on stdout (nothing else); human text, "
                   "progress and errors go to stderr")
    return p


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    """Where chunks run: a local cluster (sized here), an existing scheduler, or in-process."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler", metavar="ADDRESS",
        help="use an existing Dask scheduler (tcp://host:8786) instead of starting a local "
        "cluster; Aquila tries to connect for Dask's connect timeout (30 s; "
        "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s to give up sooner)",
    )
    where.add_argument("--direct", action="store_true",
                       help="run every chunk in this process without Dask (debugging)")
    workers, threads = local_shape()
    parser.add_argument("--workers", type=positive_int, metavar="N",
                        help="local cluster: worker processes (default: about one per 4 usable "
                        f"cores, at least one: {workers} here), forked from a server that "
                        "loads the chunk tasks' libraries while the command plans")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="local cluster: threads per worker; a chunk alone on its worker "
                        f"uses them all (default: the usable cores / workers: {threads} here)")
    parser.add_argument("--memory-limit", default="auto", metavar="SIZE",
                        help="local cluster: memory per worker, e.g. 4GiB (default: auto)")
    parser.add_argument("--dashboard", default="127.0.0.1:8787", metavar="HOST:PORT",
                        help="local cluster: dashboard address (default 127.0.0.1:8787, loopback)")
    parser.add_argument(
        "--cluster-profile", type=Path, metavar="FILE",
        help="cluster profile YAML (sizes, dashboard, TLS), e.g. cluster/tls-local.yaml; "
        "--scheduler still picks the scheduler",
    )
    parser.add_argument(
        "--performance-report", type=Path, metavar="FILE.html",
        help="write Dask's performance report (task stream, worker profiles, fine metrics) of "
        "this run to FILE.html; needs Dask (not with --direct)",
    )
    parser.add_argument(
        "--metrics-textfile", type=Path, metavar="FILE.prom",
        help="add this run's aquila_* series to a node_exporter textfile collector file "
        "(Prometheus text format, replaced atomically), e.g. "
        "/var/lib/node_exporter/textfile/aquila.prom; with --scheduler they also go to the "
        "scheduler's /metrics",
    )


def publish_metrics(args: argparse.Namespace, cluster: Any, mode: Literal["run", "nightly"],
                    workflow: str,
                    report: Any = None) -> None:
    """Aquila's ``aquila_*`` series: to a long-lived scheduler's ``/metrics`` (``--scheduler``
    or an address profile; a cluster this run starts ends with it) and, with
    ``--metrics-textfile``, into a node_exporter textfile. ``report`` None: the run starts.
    Never fails the run (the publishers log a warning instead)."""
    textfile: Path | None = getattr(args, "metrics_textfile", None)
    if cluster.scheduler is None and (report is None or textfile is None):
        return  # nothing to publish to: keep a plain run from importing the publishers
    from pipeline.engine.metrics_plugin import publish_run_metrics, publish_run_started

    security = cluster.tls.security() if cluster.tls else None
    if report is None:
        publish_run_started(cluster.scheduler, mode, workflow, security=security)
        return
    scheduler = cluster.scheduler
    from pipeline.products.report import error_reason

    if error_reason(report.error) == "cluster_unreachable":
        scheduler = None  # the run could not reach it: no second wait for a warning
    publish_run_metrics(scheduler, report, mode, textfile=textfile, security=security)


def performance_report(args: argparse.Namespace) -> Path | None:
    """``--performance-report``, refused with ``--direct`` (nothing would run on Dask to
    record): a usage error, exit 2, before anything is read or written."""
    path: Path | None = getattr(args, "performance_report", None)
    if path is not None and args.direct:
        from pipeline.errors import InputError

        raise InputError(
            "--performance-report records the tasks Dask runs and --direct runs none: drop "
            "--direct (a local cluster is started) or drop --performance-report",
            reason="usage",
        )
    return path


def add_reader_flags(parser: argparse.ArgumentParser) -> None:
    """How assets are read: GDAL's cache, retries of transient failures, HTTP timeout."""
    parser.add_argument("--gdal-cache-mb", type=positive_int, default=256, metavar="MB",
                        help="GDAL block cache per worker process, as the Python API's "
                        "ReaderSettings (default 256; GeoTIFF window reads do not use it, "
                        "JPEG 2000 and other formats do)")
    parser.add_argument("--retries", type=positive_int, default=5, metavar="N",
                        help="tries per asset read for transient errors, the first included "
                        "(default 5)")
    parser.add_argument("--http-timeout", type=positive_float, default=30.0, metavar="S",
                        help="seconds per HTTP request (default 30)")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a timeout of 0 or less would fail every read)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number; give seconds, e.g. 30"
        ) from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number above 0, e.g. 30")
    return value


def reader_settings(args: argparse.Namespace):
    """The ReaderSettings the reader flags ask for."""
    from pipeline.io.retry import RetryPolicy
    from pipeline.io.settings import ReaderSettings

    return ReaderSettings(
        gdal_cache_mb=args.gdal_cache_mb,
        retry=RetryPolicy(attempts=args.retries),
        http_timeout_s=args.http_timeout,
    )


# --------------------------------------------------------------------------- output


@dataclass
class Output:
    """Where a command's text goes. ``human``: the human-readable result and messages (stdout;
    stderr with ``--json``; silent with ``-q``). ``err``: warnings and errors (always stderr).
    :meth:`document`: the ``--json`` result, the only thing on stdout then."""

    json: bool
    quiet: bool
    human: Console
    err: Console

    @classmethod
    def for_args(cls, args: argparse.Namespace) -> Output:
        as_json, quiet = bool(getattr(args, "json", False)), bool(getattr(args, "quiet", False))
        human = Console(stderr=as_json, quiet=quiet, highlight=False, soft_wrap=True)
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        return cls(json=as_json, quiet=quiet, human=human, err=err)

    def text(self, text: str) -> None:
        """Plain text (no markup) for a human, where :attr:`human` prints."""
        if not self.quiet:
            stream: TextIO = sys.stderr if self.json else sys.stdout
            stream.write(text + "\n")

    def document(self, doc: Any) -> None:
        """The one JSON document of a ``--json`` command, on stdout."""
        print_document(doc)


def print_document(doc: Any) -> None:
    """``doc`` as JSON on stdout (``default=str``: paths, dates)."""
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    sys.stdout.flush()


def failure_document(command: str | None, status: str, code: int, error: str,
                     reason: str | None = None) -> dict[str, Any]:
    """The ``--json`` document of a command that ended before it had a result."""
    return {"command": command, "status": status, "exit_code": code, "error": error,
            "reason": reason}


# --------------------------------------------------------------------------- logging

_handler: logging.Handler | None = None


def configure_logging(*, verbose: bool, quiet: bool, log_format: str = "text") -> None:
    """The ``pipeline`` logger → stderr, once per process (a second call, e.g. ``main()`` run
    twice in one process, replaces the handler instead of adding one). ``-v``: DEBUG;
    ``-q``: WARNING; otherwise INFO. ``log_format`` ``json``: one JSON object per line."""
    global _handler
    logger = logging.getLogger("pipeline")
    if _handler is not None:
        logger.removeHandler(_handler)
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(JsonLines() if log_format == "json" else TextLines())
    logger.addHandler(_handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    # the event lines (pipeline.engine.events) repeat what the console already prints: for a
    # log shipper (json) or with -v only
    quiet_events = log_format == "text" and not verbose
    logging.getLogger("pipeline.events").setLevel(logging.WARNING if quiet_events
                                                  else logging.NOTSET)


def _context(record: logging.LogRecord) -> dict[str, Any]:
    from pipeline.engine.events import CONTEXT_FIELDS

    return {k: getattr(record, k) for k in CONTEXT_FIELDS if getattr(record, k, None) is not None}


class TextLines(logging.Formatter):
    """``LEVEL logger: message [run_id=… workflow=… …]``: the event context at the end."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname} {record.name}: {record.getMessage()}"
        context = _context(record)
        if context:
            line += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonLines(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the context."""

    def format(self, record: logging.LogRecord) -> str:
        import datetime as dt

        doc: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)
