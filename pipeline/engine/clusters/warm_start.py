"""Local workers forked from a process that has already imported what a chunk task needs.

A local worker started the usual way (``spawn``) is a new interpreter: it imports distributed
(~0.4 s), then its first chunk task imports numba, rasterio and zarr (~0.5 s) and makes numba's
first cached dispatch (~0.3 s: numba sets up its CPU target), all of it on the run's critical
path, after the driver has planned. With a warm start, ``aquila run`` and ``aquila nightly``
start Python's fork server (:mod:`multiprocessing.forkserver`) first thing, before they import
the engine and read the spec and the catalog: it imports
:mod:`pipeline.engine.clusters.worker_preload` on the other core while the driver works, and the
local cluster's nanny then forks each worker from it (Dask's
``distributed.worker.multiprocessing-method: forkserver``), ready to run. Measured on the peer
benchmark's 1024 px job (1 worker x 2 threads, 2 cores, alternating ``aquila run``s, 5 pairs):
wall 8.26-9.90 s (mean 9.25) -> 6.90-8.53 s (mean 7.74); the driver's wait for the cluster
0.93-1.31 -> 0.54-0.71 s.

Memory: the server keeps its imported modules (~0.21 GiB resident, shared copy-on-write with the
workers it forks and counted again in each by a sum of RSS) and holds no data. It is stopped
when the command ends (:func:`stop`), which also makes the workers' CPU time the command's
children's, as a spawned worker's is.

What a warm start changes for workers, and why only the CLI asks for one: a forked worker has
the fork server's environment, which is the driver's as it was when the server started (plus
what :func:`pipeline.engine.clusters.worker_env.worker_environ` adds), not as it is when the
worker starts. A command's environment is fixed when it starts; a Python program that calls
the API (or a test) may change ``os.environ`` between two runs, so the API keeps spawning
fresh workers unless it sets ``ClusterOptions.warm_start`` (the server is then started as the
cluster starts, and stopped with it).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from multiprocessing import forkserver

log = logging.getLogger(__name__)

#: What the fork server imports before it forks any worker.
PRELOAD = ("distributed", "pipeline.engine.clusters.worker_preload")


def running() -> bool:
    """Whether this process's fork server is running (the standard library's private
    ``ForkServer._forkserver_pid``, read defensively: unknown reads as not running)."""
    return getattr(forkserver._forkserver, "_forkserver_pid", None) is not None


def start(environ: Mapping[str, object]) -> bool:
    """Start this process's fork server now if it is not running, importing :data:`PRELOAD` in
    the background; whether this started it. Its environment is this process's plus the keys
    of ``environ`` (the workers' allocator settings) that this process's does not set: as for
    a spawned worker, whose nanny lets the environment win over Dask's
    ``pre-spawn-environ``. This process's own environment is put back as it was."""
    if running():
        return False
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    added = {k: str(v) for k, v in environ.items() if k not in os.environ}
    os.environ.update(added)
    # SIGINT ignored from the server's first instruction (an exec keeps an ignored signal
    # ignored): a Ctrl-C during its imports would print its traceback, and the workers it forks
    # ignore it too, as DriverHandlesCtrlC has spawned ones do once started
    main = threading.current_thread() is threading.main_thread()
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        forkserver.ensure_running()
    finally:
        if main and handler is not None:  # (None: a handler not set from Python, left be)
            signal.signal(signal.SIGINT, handler)
        for k in added:
            os.environ.pop(k, None)
    return True


@contextlib.contextmanager
def held(environ: Mapping[str, object]) -> Iterator[None]:
    """This process's fork server running for the block (:func:`start`), stopped at its end
    (:func:`stop`) if the block started it: one started by a caller outside is left to it."""
    started = start(environ)
    try:
        yield
    finally:
        if started:
            stop()


def stop() -> None:
    """Stop this process's fork server, if it runs, and wait for it: once it has ended, the
    CPU time of the workers it forked (and reaped) is this process's children's, as a spawned
    worker's is, and nothing of the server outlives the cluster. Called when no worker it forked
    is left (the cluster closed, or never started): it is terminated (SIGTERM) rather than
    asked, so a command that ends early (a spec error) does not wait for the server's imports
    (2.2-2.8 s against 0.8 s for such an error). Through the standard library's own
    ``ForkServer._stop`` (private, kept since Python 3.8); where a Python lacks it the server
    ends when this process does."""
    server = forkserver._forkserver
    pid = getattr(server, "_forkserver_pid", None)
    halt = getattr(server, "_stop", None)
    if pid is None or halt is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        halt()
    except OSError as exc:  # already gone, or reaped elsewhere: nothing left to stop
        log.debug("stopping the fork server %s: %s", pid, exc)
