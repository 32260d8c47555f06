"""Aquila's series on the Dask scheduler's own ``/metrics`` (where Prometheus scrapes a Dask
deployment), and the driver's side: :func:`publish_run_started`, :func:`publish_run_metrics`.

distributed's ``/metrics`` handler serves ``prometheus_client.REGISTRY``, the default registry of
the scheduler's process (``distributed/http/scheduler/prometheus/core.py``: its collectors are
registered there, ``generate_latest()`` with no argument). :class:`AquilaMetricsPlugin`, a
scheduler plugin the driver registers (idempotent: the first one stays, with its totals),
registers one collector there on start and adds each ``aquila-metrics`` event the driver logs
(``Client.log_event``: a call answered after the plugins' ``log_event`` hooks ran) to its
running :class:`~pipeline.products.metrics.Tally`. Totals accumulate over every run the
scheduler serves and start again with a new scheduler process (Prometheus handles the reset).

The scheduler must be able to import ``pipeline`` (Aquila installed where it runs). Everything
here is best effort: a scheduler that cannot take the plugin, an event refused, or a scrape that
fails is logged and never fails a run. Events carry counts and reason codes, never a scene id
(they also stay in the scheduler's event log, ``Client.get_events("aquila-metrics")``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from pipeline.products.metrics import (
    Mode,
    RunMetrics,
    Tally,
    TallyCollector,
    run_metrics,
    started_event,
    write_textfile,
)

log = logging.getLogger(__name__)

TOPIC = "aquila-metrics"
PLUGIN_NAME = "aquila-metrics"


class _Totals:
    """This process's totals, served by one collector registered once (as distributed does for
    its own collectors: one set per process, following the newest scheduler's plugin)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.plugin: AquilaMetricsPlugin | None = None
        self.registered = False

    def current(self) -> Tally:
        plugin = self.plugin
        return plugin.tally if plugin is not None else Tally()

    def install(self, plugin: AquilaMetricsPlugin) -> None:
        import prometheus_client

        with self.lock:
            self.plugin = plugin
            if not self.registered:
                prometheus_client.REGISTRY.register(TallyCollector(self.current))
                self.registered = True


_TOTALS = _Totals()


class AquilaMetricsPlugin(SchedulerPlugin):
    """Keeps Aquila's running totals in the scheduler and serves them on its ``/metrics``."""

    name = PLUGIN_NAME
    idempotent = True  # registered by every run; the first one (and its totals) stays

    def __init__(self) -> None:
        self.tally = Tally()

    async def start(self, scheduler: Any) -> None:
        try:
            _TOTALS.install(self)
        except Exception:  # noqa: BLE001 - without /metrics the run still runs
            log.warning("aquila metrics: collector not registered", exc_info=True)

    def log_event(self, topic: str, msg: Any) -> None:
        if topic != TOPIC:
            return
        try:
            self.tally = apply_event(self.tally, msg)
        except Exception:  # noqa: BLE001 - a malformed event is dropped, never raised
            log.warning("aquila metrics: event dropped", exc_info=True)


def apply_event(tally: Tally, msg: Any) -> Tally:
    """One driver event (``started`` or ``finished``) added to ``tally``."""
    if msg.get("kind") == "started":
        metrics = RunMetrics.from_event({**msg, "status": "success"})  # validates mode
        return tally.started(metrics.mode, metrics.workflow)
    if msg.get("kind") == "finished":
        return tally.plus(RunMetrics.from_event(msg))
    raise ValueError(f"unknown aquila-metrics event kind {msg.get('kind')!r}")


# --------------------------------------------------------------------------- the driver's side


def register_metrics(client: Any) -> bool:
    """Register the plugin on ``client``'s scheduler (a no-op if it has it); False if refused."""
    try:
        client.register_plugin(AquilaMetricsPlugin())
        return True
    except Exception:  # noqa: BLE001 - e.g. a scheduler without Aquila installed
        log.warning("aquila metrics: the scheduler did not take the plugin", exc_info=True)
        return False


def publish_run_started(
    target: Any, mode: Mode, workflow: str, *, security: Any = None, timeout: str | None = None
) -> bool:
    """Count a run as started on the scheduler ``target`` (a connected ``distributed.Client``,
    a scheduler address, or None: nothing). True when the scheduler took it."""
    return _publish(target, started_event(mode, workflow), security=security, timeout=timeout)


def publish_run_metrics(
    target: Any,
    report: Any,
    mode: Mode,
    *,
    textfile: Path | None = None,
    security: Any = None,
    timeout: str | None = None,
) -> bool:
    """Add a finished run's (``mode="run"``) or night's (``"nightly"``) report to Aquila's
    series: on the scheduler ``target`` (a connected ``distributed.Client``, a scheduler address
    such as ``tcp://host:8786`` connected within ``timeout`` (:func:`side_timeout`), or None),
    and to the node_exporter
    ``textfile`` (start and end of the run at once, counters carried on from the file). Never
    raises; True when every destination asked for took it."""
    try:
        metrics = run_metrics(report, mode)
    except Exception:  # noqa: BLE001 - a report we cannot read is not the run's failure
        log.warning("aquila metrics: report not readable as metrics", exc_info=True)
        return False
    ok = True
    if textfile is not None:
        try:
            write_textfile(Path(textfile), metrics)
        except Exception:  # noqa: BLE001
            log.warning("aquila metrics: textfile %s not written", textfile, exc_info=True)
            ok = False
    if target is not None:
        ok = _publish(target, metrics.as_event(), security=security, timeout=timeout) and ok
    return ok


def side_timeout() -> str:
    """How long a metrics side connection tries: 10 s, or Dask's connect timeout
    (``distributed.comm.timeouts.connect``) when that is shorter."""
    import dask
    from dask.utils import parse_timedelta

    connect = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")
    return f"{min(10.0, float(connect)):g}s"


def _publish(target: Any, msg: dict[str, Any], *, security: Any, timeout: str | None) -> bool:
    if target is None:
        return True
    try:
        if isinstance(target, str):
            from pipeline.engine.clusters.local import connect_scheduler

            with connect_scheduler(target, timeout=timeout or side_timeout(), security=security,
                                   set_as_default=False) as c:
                return register_metrics(c) and _log(c, msg)
        return register_metrics(target) and _log(target, msg)
    except Exception as exc:  # noqa: BLE001 - e.g. the scheduler is gone
        # one line for the operator (the run's own failure line says what went wrong with the
        # cluster); the traceback only with -v
        log.warning("aquila metrics: not sent to the scheduler (%s: %s)",
                    type(exc).__name__, exc)
        log.debug("aquila metrics: traceback", exc_info=True)
        return False


def _log(client: Any, msg: dict[str, Any]) -> bool:
    try:
        client.log_event(TOPIC, msg)
        return True
    except Exception:  # noqa: BLE001
        log.warning("aquila metrics: event not logged", exc_info=True)
        return False
