"""Aquila's Prometheus series: what a finished run or night adds to them (:func:`run_metrics`),
the running totals (:class:`Tally`), their families for a collector (:func:`families`), and the
node_exporter textfile of a single-host job (:func:`write_textfile`).

Pure bookkeeping and one file write; the scheduler side (a plugin serving these series on the
scheduler's own ``/metrics``) is :mod:`pipeline.engine.metrics_plugin`.

Labels are bounded by design: ``mode`` (run | nightly), ``workflow`` (the spec's name),
``status``, ``reason`` (a reason code) and ``collection`` (the provider's collection). A scene id
is never a label value, nor in any event sent to the scheduler.

Not exported: bytes read (no report or chunk summary carries it); read retries of ``aquila run``
(its report has none: only a night's report counts them, ``NightReport.retries``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from pipeline.products.publish import write_text_atomic
from pipeline.products.report import error_reason
from pipeline.products.stac import stac_path

log = logging.getLogger(__name__)

Mode = Literal["run", "nightly"]
MODES: tuple[Mode, ...] = ("run", "nightly")
# every end a report can have (RunReport's and NightReport's statuses), each series made at 0
# as soon as a workflow is seen, so increase() sees a first failure (a new series would not)
STATUSES = ("success", "partial", "nothing_new", "failed", "bad_input", "busy", "interrupted")
GOOD = frozenset({"success", "partial", "nothing_new"})  # ended with exit code 0 or 3
UNKNOWN = "unknown"

Kind = Literal["counter", "gauge"]


@dataclass(frozen=True)
class Series:
    """One family: its name (a counter's samples add ``_total``), kind, help and label names."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ("mode", "workflow")

    @property
    def sample(self) -> str:
        return f"{self.name}_total" if self.kind == "counter" else self.name


SERIES: tuple[Series, ...] = (
    Series("aquila_runs_started", "counter", "Runs and nights started"),
    Series("aquila_runs", "counter", "Runs and nights finished, by how they ended",
           ("mode", "workflow", "status")),
    Series("aquila_chunks_written", "counter", "Chunk tasks whose output was published"),
    Series("aquila_scenes_read", "counter",
           "Scenes read: a run's scenes used, a night's scenes ingested (new or changed)"),
    Series("aquila_scenes_withheld", "counter",
           "Items withheld from the workflow's audience (releasability)"),
    Series("aquila_scenes_rejected", "counter", "Catalog items rejected, by reason code",
           ("mode", "workflow", "reason", "collection")),
    Series("aquila_read_failures", "counter", "Scenes that failed to read, by reason code",
           ("mode", "workflow", "reason", "collection")),
    Series("aquila_read_retries", "counter", "Reads retried (nights only: runs do not count them)"),
    Series("aquila_run_seconds", "counter", "Wall time of finished runs and nights"),
    Series("aquila_last_run_timestamp_seconds", "gauge",
           "When the last run or night finished (any status), Unix time"),
    Series("aquila_last_success_timestamp_seconds", "gauge",
           "When the last run or night that ended well (success, partial, nothing_new) finished"),
    Series("aquila_newest_scene_timestamp_seconds", "gauge",
           "Acquisition time of the newest scene in the products after the last good run"),
    Series("aquila_lag_seconds", "gauge",
           "Last good run's finish minus the newest scene it published (data latency)"),
)
BY_NAME: Mapping[str, Series] = {s.name: s for s in SERIES}


def metric_names() -> frozenset[str]:
    """Every sample name Aquila exports (counters with ``_total``)."""
    return frozenset(s.sample for s in SERIES)


# --------------------------------------------------------------------------- one run's worth


@dataclass(frozen=True)
class RunMetrics:
    """What one finished run or night adds: counts only (no scene id)."""

    mode: Mode
    workflow: str
    status: str
    chunks_written: int = 0
    scenes_read: int = 0
    scenes_withheld: int = 0
    rejected: tuple[tuple[str, str, int], ...] = ()  # (reason, collection, count)
    read_failures: tuple[tuple[str, str, int], ...] = ()
    read_retries: int | None = None  # None: the report does not count them
    seconds: float = 0.0
    finished: float | None = None  # Unix time
    newest_scene: float | None = None  # Unix time

    def as_event(self) -> dict[str, Any]:
        """A msgpack-able message for the scheduler's event log."""
        return {
            "kind": "finished", "mode": self.mode, "workflow": self.workflow,
            "status": self.status, "chunks_written": self.chunks_written,
            "scenes_read": self.scenes_read, "scenes_withheld": self.scenes_withheld,
            "rejected": [list(r) for r in self.rejected],
            "read_failures": [list(r) for r in self.read_failures],
            "read_retries": self.read_retries, "seconds": self.seconds,
            "finished": self.finished, "newest_scene": self.newest_scene,
        }

    @classmethod
    def from_event(cls, msg: Mapping[str, Any]) -> RunMetrics:
        def triples(key: str) -> tuple[tuple[str, str, int], ...]:
            return tuple((_code(r), _code(c), int(n)) for r, c, n in msg.get(key) or ())

        retries = msg.get("read_retries")
        return cls(
            mode=_mode(msg["mode"]), workflow=str(msg["workflow"]), status=_status(msg["status"]),
            chunks_written=int(msg.get("chunks_written", 0)),
            scenes_read=int(msg.get("scenes_read", 0)),
            scenes_withheld=int(msg.get("scenes_withheld", 0)),
            rejected=triples("rejected"), read_failures=triples("read_failures"),
            read_retries=None if retries is None else int(retries),
            seconds=float(msg.get("seconds", 0.0)),
            finished=_float_or_none(msg.get("finished")),
            newest_scene=_float_or_none(msg.get("newest_scene")),
        )


def started_event(mode: Mode, workflow: str) -> dict[str, Any]:
    return {"kind": "started", "mode": mode, "workflow": workflow}


def run_metrics(report: Any, mode: Mode, *, newest_scene: float | None = None) -> RunMetrics:
    """A finished :class:`~pipeline.products.report.RunReport` (``mode="run"``) or
    :class:`~pipeline.products.report.NightReport` (``"nightly"``) as series increments.
    ``newest_scene`` (Unix time) defaults to the newest ``end_datetime`` of the products' STAC
    sidecars, read only after a run that ended well."""
    status = _status(report.status)
    published = status in ("success", "partial")
    rejected: list[tuple[str, str]] = []
    failures: list[tuple[str, str]] = []
    for r in report.rejected:
        pair = (_code(r.get("reason")), _code(r.get("collection")))
        (failures if r.get("stage") == "read" else rejected).append(pair)
    if mode == "run":
        chunks = report.tasks if published else 0
        scenes = len(report.scenes_used)
        failures += [(_bracket_code(f.get("error", "")), UNKNOWN) for f in report.read_failures]
        retries = None
    else:
        chunks = int(report.chunks.get("tasks", 0)) if report.snapshot else 0
        scenes = len(report.new) + len(report.changed) + len(report.changed_in_place)
        retries = sum(int(n) for n in report.retries.values())
    if newest_scene is None and status in GOOD:
        newest_scene = newest_scene_of(report)
    return RunMetrics(
        mode=mode, workflow=str(report.workflow), status=status, chunks_written=int(chunks),
        scenes_read=scenes, scenes_withheld=int(report.withheld), rejected=_count(rejected),
        read_failures=_count(failures), read_retries=retries,
        seconds=float(report.seconds.get("total", 0.0)),
        finished=_timestamp(report.finished), newest_scene=newest_scene,
    )


def newest_scene_of(report: Any) -> float | None:
    """The newest ``end_datetime`` among the STAC sidecars of the report's products (a night's:
    its store's), Unix time; None when there is none to read."""
    stores = [Path(report.store)] if getattr(report, "store", None) else []
    stores += [Path(p) for k, p in report.products.items() if k != "report"]
    newest: float | None = None
    for store in stores:
        try:
            props = json.loads(stac_path(store).read_text())["properties"]
            t = _timestamp(props.get("end_datetime"))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if t is not None and (newest is None or t > newest):
            newest = t
    return newest


# --------------------------------------------------------------------------- running totals

Key = tuple[str, tuple[tuple[str, str], ...]]  # family name, label pairs in the family's order


@dataclass(frozen=True)
class Tally:
    """Counter and gauge values by family and labels; :meth:`started` and :meth:`plus` return a
    new tally (the old one is never changed, so a scrape reads one consistent state)."""

    values: Mapping[Key, float] = field(default_factory=dict)

    def started(self, mode: Mode, workflow: str) -> Tally:
        v = dict(self.values)
        _seen(v, mode, workflow)
        _add(v, "aquila_runs_started", 1, mode=mode, workflow=workflow)
        return Tally(v)

    def plus(self, m: RunMetrics) -> Tally:
        v = dict(self.values)
        ids = {"mode": m.mode, "workflow": m.workflow}
        _seen(v, m.mode, m.workflow)
        _add(v, "aquila_runs", 1, status=m.status, **ids)
        _add(v, "aquila_chunks_written", m.chunks_written, **ids)
        _add(v, "aquila_scenes_read", m.scenes_read, **ids)
        _add(v, "aquila_scenes_withheld", m.scenes_withheld, **ids)
        for reason, collection, n in m.rejected:
            _add(v, "aquila_scenes_rejected", n, reason=reason, collection=collection, **ids)
        for reason, collection, n in m.read_failures:
            _add(v, "aquila_read_failures", n, reason=reason, collection=collection, **ids)
        if m.read_retries is not None:
            _add(v, "aquila_read_retries", m.read_retries, **ids)
        _add(v, "aquila_run_seconds", m.seconds, **ids)
        if m.finished is not None:
            _set(v, "aquila_last_run_timestamp_seconds", m.finished, **ids)
            if m.status in GOOD:
                _set(v, "aquila_last_success_timestamp_seconds", m.finished, **ids)
                if m.newest_scene is not None:
                    _set(v, "aquila_newest_scene_timestamp_seconds", m.newest_scene, **ids)
                    _set(v, "aquila_lag_seconds", max(0.0, m.finished - m.newest_scene), **ids)
        return Tally(v)

    def value(self, name: str, **labels: str) -> float | None:
        """The value of one series (tests, tools); None if it has none."""
        return self.values.get(_key(name, labels))


def families(tally: Tally) -> Iterator[Metric]:
    """The tally as prometheus_client metric families (for a collector's ``collect``)."""
    by_family: dict[str, list[tuple[tuple[str, ...], float]]] = {}
    for (name, labels), value in sorted(tally.values.items()):
        by_family.setdefault(name, []).append((tuple(v for _, v in labels), value))
    for name, rows in by_family.items():
        s = BY_NAME[name]
        fam: Metric = (CounterMetricFamily if s.kind == "counter" else GaugeMetricFamily)(
            s.name, s.help, labels=list(s.labels))
        for label_values, value in rows:
            fam.add_metric(list(label_values), value)  # type: ignore[attr-defined]
        yield fam


class TallyCollector(Collector):
    """A prometheus_client collector over a tally source (called at each scrape). A failing
    source gives no Aquila series for that scrape, never a failed scrape."""

    def __init__(self, source: Any) -> None:  # source: () -> Tally
        self.source = source

    def describe(self) -> Iterable[Metric]:
        return ()  # no names claimed up front: registered once, whatever the tally holds

    def collect(self) -> Iterable[Metric]:
        try:
            return list(families(self.source()))
        except Exception:  # noqa: BLE001 - a scrape must not fail for our series
            log.warning("aquila metrics: collecting failed", exc_info=True)
            return []


def render_text(tally: Tally) -> str:
    """The tally in Prometheus' text exposition format."""
    from prometheus_client.exposition import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(TallyCollector(lambda: tally))
    return generate_latest(registry).decode()


def parse_text(text: str) -> Tally:
    """Aquila's series back from exposition text (other families are ignored)."""
    v: dict[Key, float] = {}
    for fam in text_string_to_metric_families(text):
        s = BY_NAME.get(fam.name)
        if s is None:
            continue
        for sample in fam.samples:
            if sample.name == s.sample:
                v[_key(s.name, sample.labels)] = float(sample.value)
    return Tally(v)


# --------------------------------------------------------------------------- textfile


def write_textfile(path: Path, metrics: RunMetrics, *, started: bool = True) -> Path:
    """Add one run (and its start, unless ``started`` is False) to the node_exporter textfile
    at ``path`` and replace the file in one rename. The counters go on from the file's previous
    values (an unreadable file starts them again, as a restarted exporter would)."""
    tally = Tally()
    try:
        tally = parse_text(path.read_text())
    except FileNotFoundError:
        pass
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.warning("aquila metrics: %s unreadable (%s): counters start again", path, exc)
    if started:
        tally = tally.started(metrics.mode, metrics.workflow)
    return write_text_atomic(path, render_text(tally.plus(metrics)))


# --------------------------------------------------------------------------- helpers

_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _code(value: Any) -> str:
    """A reason code or collection as a label value: short and plain, else ``unknown``."""
    text = str(value) if value is not None else ""
    return text if _CODE.fullmatch(text) else UNKNOWN


def _bracket_code(error: str) -> str:
    """``"[reason] message"`` (a run's read failure) → ``reason`` as a label value."""
    reason = error_reason(error)
    return _code(reason) if reason else UNKNOWN


def _status(value: Any) -> str:
    return value if value in STATUSES else "failed"


def _mode(value: Any) -> Mode:
    if value == "run":
        return "run"
    if value == "nightly":
        return "nightly"
    raise ValueError(f"mode must be run or nightly, not {value!r}")


def _count(pairs: list[tuple[str, str]]) -> tuple[tuple[str, str, int], ...]:
    counts: dict[tuple[str, str], int] = {}
    for p in pairs:
        counts[p] = counts.get(p, 0) + 1
    return tuple((r, c, n) for (r, c), n in sorted(counts.items()))


def _timestamp(text: Any) -> float | None:
    if not text:
        return None
    t = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _key(name: str, labels: Mapping[str, str]) -> Key:
    s = BY_NAME[name]
    return name, tuple((k, str(labels[k])) for k in s.labels)


def _add(v: dict[Key, float], name: str, n: float, **labels: str) -> None:
    k = _key(name, labels)
    v[k] = v.get(k, 0.0) + n


def _set(v: dict[Key, float], name: str, value: float, **labels: str) -> None:
    v[_key(name, labels)] = value


def _seen(v: dict[Key, float], mode: Mode, workflow: str) -> None:
    """Every run counter of a workflow exists from its first event on (at 0)."""
    for status in STATUSES:
        v.setdefault(_key("aquila_runs", {"mode": mode, "workflow": workflow, "status": status}),
                     0.0)
    for name in ("aquila_runs_started", "aquila_chunks_written", "aquila_scenes_read",
                 "aquila_scenes_withheld", "aquila_run_seconds"):
        v.setdefault(_key(name, {"mode": mode, "workflow": workflow}), 0.0)
    if mode == "nightly":
        v.setdefault(_key("aquila_read_retries", {"mode": mode, "workflow": workflow}), 0.0)
