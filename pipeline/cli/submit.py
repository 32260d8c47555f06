"""``aquila submit``, ``status``, ``logs``, ``cancel``: workflows handed to a running cluster.

A thin layer over :mod:`pipeline.engine.submit`: parse, call, print through the shared
:class:`~pipeline.cli.common.Output` (``--json``: one document on stdout, human text on
stderr; ``-q``: no human text). Errors are mapped to exit codes by ``pipeline.cli.main``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any

from pipeline.cli.common import Output
from pipeline.products.report import EXIT_CODES, EXIT_FAILED, EXIT_OK

COMMANDS = ("submit", "status", "logs", "cancel")

EPILOG = """\
The driver runs on the cluster: the spec is validated and read here, and the catalog and the
product stores must be reachable from the workers at the paths the spec gives (a shared file
system or object storage). State lives on the scheduler (Dask's metadata and event log) and the
run report beside the products.

exit codes: submit, logs, cancel: 0 done · 1 scheduler unreachable · 2 bad spec or unknown id.
status: 0 reported · 1 scheduler unreachable · 2 unknown id; with --wait, the run's own exit
code (0 success, 1 failed, 2 bad input, 3 partial, 75 busy, 130 interrupted or cancelled).

examples:
  aquila submit workflows/demo.yaml --scheduler tcp://10.0.0.5:8786
  aquila status --scheduler tcp://10.0.0.5:8786                 # every submission
  aquila status 20261205T080000Z-1a2b3c4d --scheduler tcp://10.0.0.5:8786 --wait
  aquila logs 20261205T080000Z-1a2b3c4d --scheduler tcp://10.0.0.5:8786
  aquila cancel 20261205T080000Z-1a2b3c4d --scheduler tcp://10.0.0.5:8786
"""


def add_parsers(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register the four commands on the ``aquila`` subparsers ``sub`` (``parents``: the
    global -v/-q/--json options)."""
    helps = {
        "submit": "hand a workflow to a running cluster and return its id at once",
        "status": "state of one submission (or all) on a cluster; --wait to follow it",
        "logs": "a submission's log lines, from the scheduler",
        "cancel": "stop a submission (queued: at once; running: after its current chunks)",
    }
    for name in COMMANDS:
        p = sub.add_parser(name, help=helps[name], description=helps[name] + ".",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                           parents=parents)
        if name == "submit":
            p.add_argument("spec", help="workflow spec (YAML)")
        elif name == "status":
            p.add_argument("id", nargs="?", help="submission id (default: every submission)")
            p.add_argument("--wait", action="store_true",
                           help="poll until the submission ends; exit with the run's exit code")
            p.add_argument("--interval", type=float, default=2.0,
                           help="seconds between polls with --wait (default 2)")
        else:
            p.add_argument("id", help="submission id (as `aquila submit` printed it)")
        _cluster_args(p)


def _cluster_args(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="the running cluster's scheduler, e.g. tcp://10.0.0.5:8786 (tried "
                       "for Dask's connect timeout, 30 s; "
                       "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s to give up sooner)")
    where.add_argument("--cluster-profile", metavar="YAML",
                       help="a cluster profile with the scheduler's address (and TLS files)")
    # the local-cluster sizes of `aquila run` do not apply: a submission needs a running cluster
    p.set_defaults(workers=1, threads=1, memory_limit="auto", dashboard="127.0.0.1:0")


def dispatch(args: argparse.Namespace, out: Output) -> int:
    from pipeline.engine import submit as engine
    from pipeline.engine.cluster import cluster_from_cli

    cluster = cluster_from_cli(args)
    if args.command == "submit":
        done = engine.submit(args.spec, cluster)
        _out(out, done.as_dict(),
             f"submitted {done.workflow} as {done.id} to {done.scheduler}\n"
             f"follow it: aquila status {done.id} --scheduler {done.scheduler} --wait")
        return EXIT_OK
    if args.command == "status":
        return _status(args, out, cluster, engine)
    if args.command == "logs":
        lines = engine.logs(cluster, args.id)
        _out(out, {"id": args.id, "lines": [{"time": t, "text": m} for t, m in lines]},
             "\n".join(f"{_when(t)}  {m}" for t, m in lines) or "(no log lines yet)")
        return EXIT_OK
    state = engine.cancel(cluster, args.id)
    _out(out, state, f"{args.id}: {_describe(state)}")
    return EXIT_OK


def _status(args: argparse.Namespace, out: Output, cluster: Any, engine: Any) -> int:
    if args.id is None:
        runs = engine.status(cluster)
        _out(out, runs, "\n".join(f"{k}  {v.get('workflow', '?'):<16} {_describe(v)}"
                                  for k, v in runs.items()) or "no submissions")
        return EXIT_OK
    state = engine.status(cluster, args.id)
    while args.wait and state.get("state") not in engine.FINAL_STATES:
        time.sleep(max(0.1, args.interval))
        state = engine.status(cluster, args.id)
    _out(out, state, f"{args.id}: {_describe(state)}")
    if not args.wait:
        return EXIT_OK
    if state.get("state") == "cancelled":
        return EXIT_CODES["interrupted"]
    return int(state.get("exit_code", EXIT_CODES.get(state.get("state", ""), EXIT_FAILED)))


def _describe(state: dict[str, Any]) -> str:
    text = str(state.get("state", "?"))
    if state.get("total"):
        text += f" ({state.get('done', 0)}/{state['total']} chunks)"
    if state.get("cancel_requested") and text.startswith("running"):
        text += ", cancel requested"
    if state.get("products"):
        text += "; products: " + ", ".join(str(v) for v in state["products"].values())
    if state.get("error"):
        text += f"; {state['error']}"
    return text


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _out(out: Output, data: Any, human: str) -> None:
    """``--json``: the data on stdout (the human text on stderr); else the human text."""
    if out.json:
        out.document(data)
    out.text(human)
