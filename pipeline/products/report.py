"""The reports: what a run (:class:`RunReport`) or a night (:class:`NightReport`) used, rejected
and wrote, as one JSON document each, finished and written by one function
(:func:`write_finished`) whatever way the run ended.

Two documents when a workflow names an audience: the run report is audience-facing (withheld
items only counted, never named); the operator report (``<name>.operator-report.json``, mode
0600) names every withheld item and why. Keep the operator report with the operator.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.products.publish import write_text_atomic

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3  # products written without the scenes that could not be read: see the report
EXIT_BUSY = 75  # another run holds the store's lock (EX_TEMPFAIL: try again later)
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C (128 + SIGINT, as shells report it); nothing published

EXIT_CODES = {
    "success": EXIT_OK, "partial": EXIT_PARTIAL, "bad_input": EXIT_BAD_INPUT, "busy": EXIT_BUSY,
    "interrupted": EXIT_INTERRUPTED,
}  # any other status (failed) is EXIT_FAILED


@dataclass
class RunReport:
    run_id: str
    workflow: str
    spec: str
    started: str
    status: str = "running"  # success | partial | failed | bad_input | busy | interrupted
    finished: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    # where the chunk tasks' time went, summed over tasks: read, decode, warp, calibrate,
    # composite, write (the same labels as the Dask fine metrics; engine/chunk.py PHASES)
    seconds_by_phase: dict[str, float] = field(default_factory=dict)
    scenes_found: int = 0
    scenes_used: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # dropped, kept, why
    notes: list[str] = field(default_factory=list)
    read_failures: list[dict[str, Any]] = field(default_factory=list)
    chunk_failures: list[dict[str, Any]] = field(default_factory=list)
    grid: dict[str, Any] = field(default_factory=dict)
    tasks: int = 0
    # the tasks those chunks were computed in: fewer where small chunks were fused 2 x 2
    # (pipeline/plan/fuse.py); 0: none run
    compute_tasks: int = 0
    time_slots: int = 0
    pixels_written: int = 0
    products: dict[str, str] = field(default_factory=dict)
    dashboard: str | None = None
    error: str | None = None
    audience: dict[str, Any] | None = None  # None: the workflow names none (not enforced)
    withheld: int = 0  # items withheld by releasability: a count only (names: operator report)
    labels: dict[str, Any] = field(default_factory=dict)  # product -> high-water-mark label

    report_error: str | None = None  # why the report is not at its usual path (None: it is)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, EXIT_FAILED)

    def write(self, path: Path) -> Path:
        """Replace ``path`` in one rename (a unique temporary file, synced, removed on error)."""
        return write_text_atomic(path, json.dumps(asdict(self), indent=2, default=str))


@dataclass
class OperatorReport:
    """For the operator only: the items withheld from the audience, and why; and the scenes
    published more than once with different markings (``conflicts``: the stricter applied)."""

    run_id: str
    workflow: str
    audience: dict[str, Any] | None
    withheld: list[dict[str, Any]] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)

    def write(self, path: Path) -> Path:
        """Write with mode 0600 (created so, never world-readable even for a moment)."""
        return write_text_atomic(path, json.dumps(asdict(self), indent=2, default=str), mode=0o600)


# --------------------------------------------------------------------------- nightly


"""The nightly report is written for every run, failed or not (also when the store was busy):
the latest one at ``<store>.night-report.json`` and every one under
``<store>.reports/<run id>.json``. A summary of each published night is also kept in the store
itself (the commit's metadata, listed by ``aquila history STORE``)."""

STATUSES = ("success", "nothing_new", "partial", "failed", "bad_input", "busy", "interrupted")


@dataclass
class NightReport:
    run_id: str
    workflow: str
    spec: str
    store: str
    started: str
    status: str = "running"  # one of STATUSES
    finished: str | None = None
    error: str | None = None
    base_snapshot: str | None = None  # the night this run started from (None: empty store)
    snapshot: str | None = None  # the night it published (None: it published nothing)
    items_found: int = 0
    reused: int = 0  # items the ledger already held unchanged (not normalised again)
    new: list[str] = field(default_factory=list)  # scenes ingested for the first time
    changed: list[str] = field(default_factory=list)  # same id, a changed item document
    # same item, an asset rewritten in place (its content identity changed): re-read
    changed_in_place: list[str] = field(default_factory=list)
    replaced: list[dict[str, str]] = field(default_factory=list)  # {old, new, rule}
    removed: list[str] = field(default_factory=list)  # ingested before, not in the catalog now
    removed_withheld: int = 0  # ingested before, withheld from the audience now (count only)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {item, stage, reason, ...}
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    retries: dict[str, int] = field(default_factory=dict)  # scene id -> reads retried
    withheld: int = 0
    slots: dict[str, Any] = field(default_factory=dict)  # before, after, added, removed, moved
    chunks: dict[str, int] = field(default_factory=dict)  # tasks, cube/mosaic chunks written
    passes: int = 0  # transactions built (a permanent read failure rebuilds without the scene)
    lock: dict[str, Any] = field(default_factory=dict)  # holder; took_over (a dead run's lock)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    seconds_by_phase: dict[str, float] = field(default_factory=dict)  # as RunReport's
    labels: dict[str, Any] = field(default_factory=dict)
    audience: dict[str, Any] | None = None
    dashboard: str | None = None
    products: dict[str, str] = field(default_factory=dict)
    report_error: str | None = None  # why the report is not at its usual path (None: it is)

    @property
    def exit_code(self) -> int:
        """As a run's (:data:`pipeline.products.report.EXIT_CODES`); a night with nothing new is a
        success."""
        return EXIT_OK if self.status == "nothing_new" else EXIT_CODES.get(self.status, EXIT_FAILED)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"exit_code": self.exit_code}

    def summary(self) -> dict[str, Any]:
        """The few numbers kept in the store's commit metadata."""
        return {
            "aquila:status": self.status,
            "aquila:workflow": self.workflow,
            "aquila:started": self.started,
            "aquila:new": len(self.new),
            "aquila:changed": len(self.changed),
            "aquila:changed_in_place": len(self.changed_in_place),
            "aquila:replaced": len(self.replaced),
            "aquila:removed": len(self.removed) + self.removed_withheld,
            "aquila:rejected": len(self.rejected),
            "aquila:slots": self.slots.get("after"),
            "aquila:cube_chunks": self.chunks.get("cube", 0),
            "aquila:mosaic_chunks": self.chunks.get("mosaic", 0),
        }

    def write(self, path: Path) -> Path:
        return write_text_atomic(path, json.dumps(self.as_dict(), indent=2, default=str))


# --------------------------------------------------------------------------- finishing


def fused_tasks(tasks: int, compute_tasks: int) -> int | None:
    """How many tasks a run's ``tasks`` chunks were computed in, where small chunks were fused
    2 × 2 (``compute_tasks`` differs); None where each chunk was its own task or none ran."""
    return compute_tasks if compute_tasks and compute_tasks != tasks else None


def error_reason(error: str | None) -> str | None:
    """The reason code of an error as a report records it, ``"[reason] message"`` (a run's
    ``error``, a read failure's ``error``); None when it has none."""
    m = re.match(r"\[([^\]]+)\]", error or "")
    return m.group(1) if m else None


class Report(Protocol):
    run_id: str
    finished: str | None
    seconds: dict[str, float]
    products: dict[str, str]
    report_error: str | None

    def write(self, path: Path) -> Path: ...


def write_finished(report: Report, t0: float, path: Path, *, also: tuple[Path, ...] = ()) -> None:
    """Stamp the end time and total seconds, then write the report to ``path`` (and to each of
    ``also``). Where ``path``'s folder refuses (full, read-only), the report goes to the temporary
    folder instead and ``report_error`` says so (the CLI prints it)."""
    report.finished = dt.datetime.now(dt.UTC).isoformat()
    report.seconds["total"] = time.perf_counter() - t0
    try:
        report.write(path)
    except OSError as exc:
        report.report_error = f"run report not written to {path}: {exc.strerror}"
        try:  # gettempdir itself probes by writing, so it may fail too
            fallback = Path(tempfile.gettempdir()) / f"aquila-{report.run_id}.run-report.json"
            report.write(fallback)
        except OSError as again:
            report.report_error += f", nor to a temporary folder: {again.strerror}"
            return
        report.report_error += f"; written to {fallback} instead"
        path = fallback
    for extra in also:
        try:
            report.write(extra)
        except OSError as exc:
            report.report_error = f"report copy not written to {extra}: {exc.strerror}"
    report.products.setdefault("report", str(path))
