"""The run report: what a run used, rejected and wrote, as one JSON document.

Two documents when a workflow names an audience: the run report is audience-facing (withheld
items only counted, never named); the operator report (``<name>.operator-report.json``, mode
0600) names every withheld item and why. Keep the operator report with the operator.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    scenes_found: int = 0
    scenes_used: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # dropped, kept, why
    notes: list[str] = field(default_factory=list)
    read_failures: list[dict[str, Any]] = field(default_factory=list)
    chunk_failures: list[dict[str, Any]] = field(default_factory=list)
    grid: dict[str, Any] = field(default_factory=dict)
    tasks: int = 0
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
