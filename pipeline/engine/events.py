"""One log line per step of a run or night, for an operator's log stack.

Every line goes to the ``pipeline.events`` logger with the context a log shipper indexes on as
record attributes (``run_id``, ``workflow``, ``mode``, ``event``, and ``chunk`` / ``status`` /
``exit_code`` where they apply); ``aquila --log-format json`` writes them as one JSON object per
line. What a line says is built here from counts, the plan and links only: a scene id never
appears (a withheld one is only in the operator report; the others are in the run report).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("pipeline.events")

Emit = Callable[[str, Any], None]

#: the record attributes Aquila sets on its event lines (the JSON log format writes them)
CONTEXT_FIELDS = ("event", "run_id", "workflow", "mode", "chunk", "status", "exit_code")


def logged(emit: Emit | None, *, mode: str, workflow: str, run_id: str) -> Emit:
    """``emit`` (the caller's event callback), plus one INFO line per event."""
    context = {"mode": mode, "workflow": workflow, "run_id": run_id}

    def both(kind: str, value: Any) -> None:
        if emit is not None:
            emit(kind, value)
        log.info("%s: %s", kind, describe(kind, value), extra={**context, "event": kind})

    return both


def finished(report: Any, *, mode: str) -> None:
    """The run's last lines: one WARNING per failed chunk task, then how it ended."""
    context = {"mode": mode, "workflow": report.workflow, "run_id": report.run_id}
    for failure in getattr(report, "chunk_failures", None) or ():
        log.warning("chunk %s failed: %s", failure.get("chunk"), failure.get("error"),
                    extra={**context, "event": "chunk_failed", "chunk": failure.get("chunk")})
    log.info("finished: %s (exit %s)%s", report.status, report.exit_code,
            f": {report.error}" if report.error else "",
            extra={**context, "event": "finished", "status": report.status,
                   "exit_code": report.exit_code})


def describe(kind: str, value: Any) -> str:
    """The text of one event: counts, the plan, a link; never an item id."""
    if kind == "discovered":
        usable, rest = value
        rejects = getattr(rest, "rejects", rest)
        return f"{usable} usable scenes, {len(rejects)} rejected{_by_reason(rejects)}"
    if kind == "withheld":
        return f"{value[0]} item(s) withheld from the audience (see the operator report)"
    if kind == "planned":
        plan = value[0] if isinstance(value, tuple) else value
        return str(plan.summary())
    if kind == "dashboard":
        return str(value)
    if kind == "executing":
        return f"{value} chunk orders"
    return ""  # other events: the name says it, and a value could hold an id


def _by_reason(rejects: Any) -> str:
    counts: dict[str, int] = {}
    for r in rejects:
        reason = r.get("reason") if isinstance(r, Mapping) else getattr(r, "reason", "?")
        counts[str(reason)] = counts.get(str(reason), 0) + 1
    return f" ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})" if counts else ""
