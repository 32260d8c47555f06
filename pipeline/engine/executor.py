"""The one executor: runs a run's (or a night's) chunk jobs, in this process or as one Dask task
per job, and gathers their small results.

A job is a key (its Dask task name: the product and chunk, never a scene id) and the arguments
of a worker function ``fn(reader, *args)``; the reader is the worker process's
:class:`RasterReader` for the run's settings (one per process and run, so a run's tasks share
open files and GDAL's cache, and never another run's href policy). A failed job is reported by
chunk and error and the rest go on; Ctrl-C cancels the jobs still queued on a shared cluster.
The Dask client is opened on first use only (a night with nothing to do never starts one).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pipeline.engine.cluster import ClusterOptions, open_client
from pipeline.errors import RunError
from pipeline.io.reader import RasterReader, ReaderSettings

R = TypeVar("R")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Job:
    key: str  # the Dask task name
    chunk: str  # the chunk's name, for failures
    args: tuple[Any, ...]


_READERS: dict[ReaderSettings, RasterReader] = {}


def reader_for(settings: ReaderSettings) -> RasterReader:
    """This worker process's reader for a run (settings carry the run id and href policy);
    per-process state on purpose: datasets stay open across the run's tasks. A long-lived worker
    serving many runs keeps the newest four."""
    reader = _READERS.get(settings)
    if reader is None:
        while len(_READERS) >= 4:
            _READERS.pop(next(iter(_READERS))).close()
        reader = _READERS[settings] = RasterReader(settings)
    return reader


def _task(fn: Callable[..., R], settings: ReaderSettings, *args: Any) -> R:
    """The Dask task: ``fn`` with the worker's reader for the run."""
    return fn(reader_for(settings), *args)


class Executor:
    """Where a run's chunk jobs execute: ``direct`` (this process, no Dask) or on the cluster
    ``cluster`` names. ``seconds`` receives ``cluster_start``; ``on_event('dashboard', link)``
    is called once the client is up. A caller's ``client`` (a connected
    ``distributed.Client``) is used instead of opening one from ``cluster``; it stays open."""

    def __init__(
        self,
        cluster: ClusterOptions,
        *,
        direct: bool = False,
        seconds: dict[str, float] | None = None,
        on_event: Callable[[str, Any], None] | None = None,
        client: Any = None,
    ) -> None:
        self.cluster, self.direct = cluster, direct
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
        return self._client

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
        reader = RasterReader(settings)
        results: list[R] = []
        try:
            for i, job in enumerate(jobs, 1):
                results.append(fn(reader, *job.args))  # a failure here is the caller's to see
                if progress:
                    progress(i, len(jobs))
        finally:
            reader.close()
        return results, []

    def _dask(
        self, fn: Callable[..., R], jobs: Sequence[Job], settings: ReaderSettings,
        progress: Progress | None,
    ) -> tuple[list[R], list[dict[str, str]]]:
        from distributed import as_completed

        client = self.client
        futures = {
            client.submit(_task, fn, settings, *job.args, key=job.key, pure=False, retries=1): job
            for job in jobs
        }
        results: list[R] = []
        failed: list[dict[str, str]] = []
        try:
            for done, fut in enumerate(as_completed(futures), 1):
                try:
                    results.append(fut.result())
                except Exception as exc:  # noqa: BLE001 - reported per chunk, the run goes on
                    failed.append({"chunk": futures[fut].chunk,
                                   "error": f"{type(exc).__name__}: {exc}"})
                if progress:
                    progress(done, len(futures))
        except KeyboardInterrupt:
            # a shared cluster must not start this run's queued tasks once its build
            # directories are gone (tasks already running cannot be stopped)
            with contextlib.suppress(Exception):
                client.cancel(list(futures))
            raise
        return results, failed


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
