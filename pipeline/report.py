"""The run report: what a run used, rejected and wrote, as one JSON document."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3  # products written, but some scene reads or chunks failed: see the report


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
