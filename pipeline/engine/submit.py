"""Workflows handed to a running Dask cluster: submit, status, logs, cancel.

``aquila run`` drives a run from the machine it is typed on and waits. A submission moves the
driver onto the cluster, so the engineer may disconnect: :func:`submit` validates the spec here,
then hands it to the scheduler as one long-running *driver* task (``fire_and_forget``). On a
worker the driver ``secede``\\ s from the worker's thread pool (it only waits on its chunk
tasks) and runs :func:`pipeline.engine.run.run_workflow` with the worker's own client (so the
cluster's address and TLS settings are reused), exactly as ``aquila run --scheduler`` would:
same plan, same products, same report.

Nothing new runs beside Dask. The state lives on the scheduler, in structures it already has:

* ``client.set_metadata(["aquila", "runs", ID])``: the submission's state (queued, running,
  then the run's status), its progress in chunks, the products and the report's path. Any
  machine that reaches the scheduler reads it with :func:`status`.
* the scheduler's event log, topic ``aquila-run-ID``: one line per step, read by :func:`logs`.
  Lines carry counts and the plan, never a scene id (restricted ids stay in the operator
  report).
* ``["aquila", "cancel", ID]``: set by :func:`cancel`; the driver checks it as each chunk task
  finishes and stops the run as Ctrl-C would (queued chunk tasks cancelled, build directories
  removed, the previous products untouched, status ``interrupted``).

The spec travels as the mapping read (and validated) here, its relative paths resolved against
the spec file's folder, so the spec file need not exist on the workers; the catalog and the
product stores must be reachable from the workers at the paths the spec gives (a shared file
system or object storage), as for any run on a cluster. The state lasts as long as the
scheduler; the run report, written beside the products, lasts longer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.engine.cluster import ClusterOptions, open_client
from pipeline.errors import InputError, RunError

log = logging.getLogger(__name__)

NAMESPACE = "aquila"
FINAL_STATES = frozenset({"success", "partial", "failed", "bad_input", "busy", "interrupted",
                          "cancelled", "lost"})


class Cancelled(KeyboardInterrupt):
    """Raised in the driver when the submission was cancelled: the run ends as on Ctrl-C."""


@dataclass(frozen=True)
class Submission:
    """What :func:`submit` returns at once: the id to ask about, and where."""

    id: str
    workflow: str
    scheduler: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "workflow": self.workflow, "scheduler": self.scheduler}


def topic(sub_id: str) -> str:
    """The scheduler event topic of one submission's log."""
    return f"aquila-run-{sub_id}"


def driver_key(sub_id: str) -> str:
    """The driver task's key: readable on the dashboard, no scene id in it."""
    return f"aquila-driver-{sub_id}"


def new_submission_id() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _require_scheduler(cluster: ClusterOptions) -> str:
    if not cluster.scheduler:
        raise InputError(
            "a submission needs a running cluster to hand the workflow to: give --scheduler "
            "ADDRESS or a --cluster-profile of kind 'address' (a cluster this command started "
            "would end with it; use `aquila run` for local, ssh, slurm, pbs, kubernetes and "
            "gateway profiles)",
            reason="no_scheduler",
        )
    return cluster.scheduler


def submit(spec_path: str | Path, cluster: ClusterOptions) -> Submission:
    """Validate the spec here, hand it to the scheduler, return at once."""
    from distributed import fire_and_forget

    from pipeline.io.yamlfile import load_yaml_file
    from pipeline.spec.workflow import MAX_SPEC_BYTES, load_spec

    address = _require_scheduler(cluster)
    spec = load_spec(spec_path)  # a bad spec is refused here, before anything is sent
    data = load_yaml_file(Path(spec_path), limit=MAX_SPEC_BYTES, what="workflow spec")
    sub_id = new_submission_id()
    with _client(cluster) as client:
        client.set_metadata([NAMESPACE, "runs", sub_id], {
            "id": sub_id, "workflow": spec.name, "spec": str(Path(spec_path).resolve()),
            "state": "queued", "submitted": dt.datetime.now(dt.UTC).isoformat(),
        })
        client.log_event(topic(sub_id), f"submitted {spec.name} from {Path(spec_path).name}")
        future = client.submit(
            drive, sub_id, data, str(Path(spec_path).resolve()), key=driver_key(sub_id),
            pure=False,
        )
        fire_and_forget(future)
    log.info("submitted %s as %s to %s", spec.name, sub_id, address)
    return Submission(sub_id, spec.name, address)


def status(cluster: ClusterOptions, sub_id: str | None = None) -> dict[str, Any]:
    """One submission's state, or every submission's (by id) when ``sub_id`` is None."""
    _require_scheduler(cluster)
    with _client(cluster) as client:
        runs = dict(client.get_metadata([NAMESPACE, "runs"], default={}))
        if sub_id is None:
            return {k: _checked(client, k, v) for k, v in sorted(runs.items())}
        if sub_id not in runs:
            raise InputError(_unknown(sub_id, runs), reason="unknown_submission")
        return _checked(client, sub_id, runs[sub_id])


def logs(cluster: ClusterOptions, sub_id: str) -> list[tuple[float, str]]:
    """The submission's log lines, oldest first, as (unix time, text)."""
    _require_scheduler(cluster)
    with _client(cluster) as client:
        runs = client.get_metadata([NAMESPACE, "runs"], default={})
        if sub_id not in runs:
            raise InputError(_unknown(sub_id, runs), reason="unknown_submission")
        return [(float(t), str(msg)) for t, msg in client.get_events(topic(sub_id))]


def cancel(cluster: ClusterOptions, sub_id: str) -> dict[str, Any]:
    """Ask a submission to stop; returns its state. A queued driver is cancelled outright; a
    running one stops as its next chunk task finishes (the previous products are kept)."""
    from distributed import Future

    _require_scheduler(cluster)
    with _client(cluster) as client:
        runs = client.get_metadata([NAMESPACE, "runs"], default={})
        if sub_id not in runs:
            raise InputError(_unknown(sub_id, runs), reason="unknown_submission")
        state = dict(runs[sub_id])
        if state.get("state") in FINAL_STATES:
            return state
        client.set_metadata([NAMESPACE, "cancel", sub_id], True)
        client.log_event(topic(sub_id), "cancel requested")
        if state.get("state") == "queued":
            client.cancel([Future(driver_key(sub_id), client)], force=True)
            state.update(state="cancelled", finished=dt.datetime.now(dt.UTC).isoformat())
            client.set_metadata([NAMESPACE, "runs", sub_id], state)
        else:
            state["cancel_requested"] = True
        return state


# --------------------------------------------------------------------------- on the cluster


def drive(sub_id: str, spec_data: Mapping[str, Any], spec_path: str) -> str:
    """The driver task: run the workflow from a worker, keeping the scheduler's state current."""
    from distributed import get_client, get_worker, secede

    from pipeline.engine.run import RunOptions, run_workflow
    from pipeline.spec.workflow import spec_from_dict

    secede()  # it only waits on its chunk tasks: give the worker's thread back
    client = get_client()
    runs = [NAMESPACE, "runs", sub_id]
    state = dict(client.get_metadata(runs, default={}))

    def update(**values: Any) -> None:
        state.update(values)
        client.set_metadata(runs, state)

    def say(text: str) -> None:
        client.log_event(topic(sub_id), text)

    if client.get_metadata([NAMESPACE, "cancel", sub_id], default=False):
        update(state="cancelled", finished=dt.datetime.now(dt.UTC).isoformat())
        return "cancelled"
    worker = get_worker()
    update(state="running", started=dt.datetime.now(dt.UTC).isoformat(),
           driver=worker.address)
    say(f"running on {worker.address}")

    def progress(done: int, total: int) -> None:
        update(done=done, total=total)
        if client.get_metadata([NAMESPACE, "cancel", sub_id], default=False):
            say(f"cancelled after {done} of {total} chunk tasks")
            raise Cancelled

    def on_event(kind: str, value: Any) -> None:
        if kind == "discovered":
            n, rejects = value
            say(f"scenes: {n} usable, {len(rejects)} rejected")
        elif kind == "withheld":
            say(f"releasability: {value[0]} item(s) withheld from the audience")
        elif kind == "planned":
            say(f"plan: {value.summary()}")
        elif kind == "dashboard":
            update(dashboard=value)

    try:
        spec = spec_from_dict(dict(spec_data), base_dir=Path(spec_path).parent, source=spec_path)
        options = RunOptions(client=client)  # the worker's own client: its address and TLS
        report = run_workflow(spec, spec_path=spec_path, options=options, progress=progress,
                              on_event=on_event)
    except Cancelled:
        update(state="cancelled", finished=dt.datetime.now(dt.UTC).isoformat(),
               error="cancelled: nothing was published, the previous products are unchanged")
        return "cancelled"
    except BaseException as exc:  # noqa: BLE001 - the state must say how the driver ended
        update(state="failed", finished=dt.datetime.now(dt.UTC).isoformat(),
               error=f"{type(exc).__name__}: {exc}")
        say(f"failed: {type(exc).__name__}: {exc}")
        raise
    from pipeline.engine.run import default_report_path

    update(state=report.status, finished=dt.datetime.now(dt.UTC).isoformat(),
           exit_code=report.exit_code, run_id=report.run_id, products=dict(report.products),
           report=str(default_report_path(spec)), error=report.error)
    say(f"{report.status}: run {report.run_id}"
        + (f" ({report.error})" if report.error else ""))
    return report.status


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _client(cluster: ClusterOptions) -> Iterator[Any]:
    """A client of the submission's scheduler; one error line when it cannot be reached."""
    stack = contextlib.ExitStack()
    try:
        client = stack.enter_context(open_client(cluster))
    except OSError as exc:  # distributed: OSError("Timed out trying to connect ...")
        raise RunError(
            f"could not connect to the scheduler {cluster.scheduler}: {exc}; check --scheduler "
            "(or the profile's address) and that the cluster is up",
            reason="cluster_unreachable",
        ) from exc
    with stack:
        yield client


def _checked(client: Any, sub_id: str, state: Mapping[str, Any]) -> dict[str, Any]:
    """``state``, marked ``lost`` when it says running but the scheduler no longer knows its
    driver (the scheduler was restarted, or the driver's task was forgotten)."""
    out = dict(state)
    if out.get("state") in ("queued", "running"):
        known = client.run_on_scheduler(_task_known, driver_key(sub_id))
        if not known:
            out["state"] = "lost"
            out["error"] = ("the scheduler no longer has this submission's driver task; "
                            "see the run report beside the products, and submit again")
    return out


def _task_known(key: str, dask_scheduler: Any = None) -> bool:
    return dask_scheduler is not None and key in dask_scheduler.tasks


def _unknown(sub_id: str, runs: Mapping[str, Any]) -> str:
    known = ", ".join(sorted(runs)[-5:]) or "none"
    return (f"no submission {sub_id!r} on this scheduler (latest: {known}); check the id "
            "(`aquila status` lists them) and the --scheduler address")
