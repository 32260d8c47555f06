"""The run report: what a run used, rejected and wrote, as one JSON document.

Two documents when a workflow names an audience: the run report is audience-facing (withheld
items only counted, never named); the operator report (``<name>.operator-report.json``, mode
0600) names every withheld item and why. Keep the operator report with the operator.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3  # products written, but some scene reads or chunks failed: see the report
EXIT_BUSY = 75  # another run holds the store's lock (EX_TEMPFAIL: try again later)


@dataclass
class RunReport:
    run_id: str
    workflow: str
    spec: str
    started: str
    status: str = "running"  # success | partial | failed | bad_input
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

    @property
    def exit_code(self) -> int:
        return {"success": EXIT_OK, "partial": EXIT_PARTIAL, "bad_input": EXIT_BAD_INPUT}.get(
            self.status, EXIT_FAILED
        )

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=str))
        tmp.replace(path)
        return path


@dataclass
class OperatorReport:
    """For the operator only: the items withheld from the audience, and why."""

    run_id: str
    workflow: str
    audience: dict[str, Any] | None
    withheld: list[dict[str, Any]] = field(default_factory=list)

    def write(self, path: Path) -> Path:
        """Write with mode 0600 (created so, never world-readable even for a moment)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(self), indent=2, default=str))
        os.chmod(tmp, 0o600)
        tmp.replace(path)
        return path
