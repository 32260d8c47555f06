"""The one executor: runs a run's (or a night's) chunk jobs, in this process or as one Dask task
per job, and gathers their small results.

A job is a key (its Dask task name, :func:`task_key`: ``aquila-<product>-<phase>-r<row>-c<col>-
<hash>``, never a scene id, so the dashboard groups a run's tasks as ``aquila-<product>-<phase>``)
and the arguments
of a worker function ``fn(reader, *args)``; the reader is the worker process's
:class:`RasterReader` for the run's settings (one per process and run, so a run's tasks share
open files and GDAL's cache, and never another run's href policy). A failed job is reported by
chunk and error and the rest go on; Ctrl-C cancels the jobs still queued on a shared cluster.
The Dask client is opened on first use only (a night with nothing to do never starts one).

On Dask, a run's tasks are submitted inside one span, ``distributed.span(*Executor.span)``
(``("aquila", <workflow>, <run id>)``): the dashboard's span views and the scheduler's
``spans`` extension sum the tasks' fine metrics (the chunk phases) per run. With
``performance_report``, the client's whole use is recorded into that HTML file
(``distributed.performance_report``: task stream, worker profiles, bandwidth).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.engine.cluster import ClusterOptions, open_client
from pipeline.errors import RunError
from pipeline.io.settings import ReaderSettings

if TYPE_CHECKING:  # GDAL is loaded where a reader is made: on the worker, or in a direct run
    from pipeline.io.reader import RasterReader

log = logging.getLogger(__name__)
R = TypeVar("R")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Job:
    key: str  # the Dask task name
    chunk: str  # the chunk's name, for failures
    args: tuple[Any, ...]
    # every chunk the job writes when it writes several (a fused block, pipeline.plan.fuse):
    # progress counts them, and a failure is reported for each
    chunks: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return len(self.chunks) or 1

    def failures(self, error: str) -> list[dict[str, str]]:
        return [{"chunk": name, "error": error} for name in self.chunks or (self.chunk,)]


def task_key(product: str, phase: str, chunk: str, ident: str) -> str:
    """A chunk task's Dask key: ``aquila-<product>-<phase>-<chunk>-<hash of ident>``.

    The product (a workflow name) keeps its letters only, as words (``demo_s2`` → ``demo-s``):
    Dask's task prefix (``dask.utils.key_split``, the dashboard's groups) stops at the first
    word that is not all letters, so the group is ``aquila-<product>-<phase>``. ``ident`` must
    name the task's inputs and outputs; the key shows only its hash (never a scene id)."""
    words = re.findall(r"[a-z]+", product.lower()) or ["run"]
    digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
    return f"aquila-{'-'.join(words)}-{phase}-{chunk}-{digest}"


_READERS: dict[ReaderSettings, RasterReader] = {}


def reader_for(settings: ReaderSettings) -> RasterReader:
    """This worker process's reader for a run (settings carry the run id and href policy);
    per-process state on purpose: datasets stay open across the run's tasks. A long-lived worker
    serving many runs keeps the newest four."""
    reader = _READERS.get(settings)
    if reader is None:
        from pipeline.io.reader import RasterReader

        while len(_READERS) >= 4:
            _READERS.pop(next(iter(_READERS))).close()
        for older in _READERS.values():  # their runs have likely ended: free their idle files
            older.release_idle()
        reader = _READERS[settings] = RasterReader(settings)
    return reader


def _task(fn: Callable[..., R], settings: ReaderSettings, *args: Any) -> R:
    """The Dask task: ``fn`` with the worker's reader for the run."""
    return fn(reader_for(settings), *args)


class Executor:
    """Where a run's chunk jobs execute: ``direct`` (this process, no Dask) or on the cluster
    ``cluster`` names. ``seconds`` receives ``cluster_start``; ``on_event('dashboard', link)``
    is called once the client is up. A caller's ``client`` (a connected
    ``distributed.Client``) is used instead of opening one from ``cluster``; it stays open.
    ``span``: the Dask span tags the tasks are submitted under (:attr:`span_ids` collects each
    map's span id); ``performance_report``: an HTML file recording the client's use, written
    when the executor closes (never with ``direct``: nothing runs on Dask)."""

    def __init__(
        self,
        cluster: ClusterOptions,
        *,
        direct: bool = False,
        seconds: dict[str, float] | None = None,
        on_event: Callable[[str, Any], None] | None = None,
        client: Any = None,
        span: tuple[str, ...] = ("aquila",),
        performance_report: Path | None = None,
    ) -> None:
        self.cluster, self.direct = cluster, direct
        self.span = span
        self.span_ids: list[str] = []
        self.performance_report = performance_report
        self.recording = False  # True once the performance report is started
        self.report_error: str | None = None  # why the performance report was not written
        self.seconds = seconds if seconds is not None else {}
        self.emit = on_event or (lambda kind, value: None)
        self.dashboard: str | None = None
        self._stack = contextlib.ExitStack()
        self._client: Any = None
        self._given = client  # the caller's client: used instead of opening one, never closed

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def client(self) -> Any:
        """The Dask client, opened on first use; a scheduler that cannot be reached is one
        :class:`RunError` line (``cluster_unreachable``)."""
        if self._client is None and self._given is not None:
            self._client = self._given  # not entered into the stack: the caller closes it
            self.dashboard = getattr(self._given, "dashboard_link", None)
            self.emit("dashboard", self.dashboard)
            self._record(self._client)
        if self._client is None:
            t = time.perf_counter()
            try:
                self._client = self._stack.enter_context(open_client(self.cluster))
            except OSError as exc:  # distributed: OSError("Timed out trying to connect ...")
                where = (f"the scheduler {self.cluster.scheduler}" if self.cluster.scheduler
                         else "a local cluster")
                raise RunError(
                    f"could not connect to {where}: {exc}; check --scheduler (or run without it "
                    "for a local cluster). Nothing was published",
                    reason="cluster_unreachable",
                ) from exc
            self.seconds["cluster_start"] = time.perf_counter() - t
            self.dashboard = self._client.dashboard_link
            self.emit("dashboard", self.dashboard)
            self._record(self._client)
        return self._client

    def _record(self, client: Any) -> None:
        """Start the performance report, if asked: written when the executor closes (before
        the client it opened, which the stack closes after)."""
        if self.performance_report is None:
            return
        from distributed import performance_report

        self._stack.enter_context(client.as_current())  # the report asks get_client()
        recorder = performance_report(filename=str(self.performance_report))
        recorder.__enter__()
        self._stack.callback(self._write_report, recorder)
        self.recording = True

    def _write_report(self, recorder: Any) -> None:
        """Write the performance report; a path that refuses it costs the report, not the
        run (said in the run report's notes and logged)."""
        try:
            recorder.__exit__(None, None, None)
        except OSError as exc:
            self.report_error = f"{exc.strerror or exc}"
            log.warning("performance report not written to %s: %s", self.performance_report,
                        self.report_error)

    def map(
        self,
        fn: Callable[..., R],
        jobs: Sequence[Job],
        settings: ReaderSettings,
        *,
        progress: Progress | None = None,
    ) -> tuple[list[R], list[dict[str, str]]]:
        """Run ``fn(reader, *job.args)`` for every job; returns the results (in completion
        order) and the failed jobs as ``{"chunk", "error"}``."""
        if self.direct or not jobs:
            return self._direct(fn, jobs, settings, progress)
        return self._dask(fn, jobs, settings, progress)

    def _direct(
        self, fn: Callable[..., R], jobs: Sequence[Job], settings: ReaderSettings,
        progress: Progress | None,
    ) -> tuple[list[R], list[dict[str, str]]]:
        from pipeline.io.reader import RasterReader

        reader = RasterReader(settings)
        results: list[R] = []
        done, total = 0, sum(job.size for job in jobs)
        try:
            for job in jobs:
                results.append(fn(reader, *job.args))  # a failure here is the caller's to see
                done += job.size
                if progress:
                    progress(done, total)
        finally:
            reader.close()
        return results, []

    def _dask(
        self, fn: Callable[..., R], jobs: Sequence[Job], settings: ReaderSettings,
        progress: Progress | None,
    ) -> tuple[list[R], list[dict[str, str]]]:
        from distributed import as_completed, span

        client = self.client
        with span(*self.span) as span_id:  # the tasks carry it: submitted inside
            self.span_ids.append(span_id)
            futures = {
                client.submit(_task, fn, settings, *job.args, key=job.key, pure=False,
                              retries=1): job
                for job in jobs
            }
        results: list[R] = []
        failed: list[dict[str, str]] = []
        try:
            # this client's loop, not default_client()'s: with another Client open in the
            # process (a notebook's, a test's), as_completed would track the futures on that
            # client's loop and fail them with "... bound to a different event loop"
            # (dask/distributed#4317; seen in CI)
            done, total = 0, sum(job.size for job in jobs)
            for fut in as_completed(futures, loop=client.loop):
                try:
                    results.append(fut.result())
                except Exception as exc:  # noqa: BLE001 - reported per chunk, the run goes on
                    failed += futures[fut].failures(f"{type(exc).__name__}: {exc}")
                done += futures[fut].size
                if progress:
                    progress(done, total)
        except KeyboardInterrupt:
            # a shared cluster must not start this run's queued tasks once its build
            # directories are gone (tasks already running cannot be stopped)
            with contextlib.suppress(Exception):
                client.cancel(list(futures))
            raise
        return results, failed


def performance_note(executor: Executor, report: Any) -> None:
    """Once the executor is closed: list its performance report among the report's products, or
    say in its notes why none was written (nothing ran on Dask)."""
    if executor.performance_report is None:
        return
    if executor.report_error is not None:
        report.notes.append(f"no performance report written to {executor.performance_report}: "
                            f"{executor.report_error}")
    elif executor.recording:
        report.products["performance report"] = str(executor.performance_report)
    else:
        report.notes.append(f"no performance report written to {executor.performance_report}: "
                            "no task ran on Dask")


def chunks_failed(failed: Sequence[dict[str, str]], total: int, kept: str) -> RunError:
    """The one error for failed chunk tasks: a hole of NaN is never published."""
    first = failed[0]
    return RunError(
        f"{len(failed)} of {total} chunk tasks failed (first: chunk {first['chunk']}: "
        f"{first['error']}); {kept}: fix the cause and run again",
        reason="chunks_failed",
    )


@contextlib.contextmanager
def timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    """Add the block's wall time to ``seconds[step]``."""
    t = time.perf_counter()
    try:
        yield
    finally:
        seconds[step] = seconds.get(step, 0.0) + time.perf_counter() - t
