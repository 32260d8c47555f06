"""The nightly run report: what a night found, ingested, replaced, rejected and rewrote.

Written for every run, failed or not (also when the store was busy), as JSON: the latest one at
``<store>.night-report.json`` and every one under ``<store>.reports/<run id>.json``. A summary of
each published night is also kept in the store itself (the commit's metadata, listed by
``aquila history STORE``). Withheld items are counted, never named (operator report).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.products.report import EXIT_CODES, EXIT_FAILED, EXIT_OK

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
    labels: dict[str, Any] = field(default_factory=dict)
    audience: dict[str, Any] | None = None
    dashboard: str | None = None
    products: dict[str, str] = field(default_factory=dict)

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
        from pipeline.products.publish import write_text_atomic  # unique temp file, synced, renamed

        return write_text_atomic(path, json.dumps(self.as_dict(), indent=2, default=str))
