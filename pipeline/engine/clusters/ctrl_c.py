"""Ctrl-C is the driver's to handle: the workers of a cluster Aquila starts ignore SIGINT.

A terminal's Ctrl-C goes to the whole foreground process group: the driver and the local
cluster's worker processes alike. A worker interrupted that way stops in the middle of its event
loop and prints a page of tracebacks (``CancelledError``, ``KeyboardInterrupt`` from Dask's
nanny and state machine) above the one line the driver prints, while the driver is already
cancelling the run's tasks and closing the cluster. :class:`DriverHandlesCtrlC` sets SIGINT to
ignored in each worker process as it starts (its event loop runs in the process's main thread,
where Python lets a handler be set), so the driver's cancel and close end the workers in order.
A worker closed that way while a task runs logs, for each, that the task "ended with
CancelledError" (Dask says this happens only in ``Worker.close``): expected when a run is
interrupted, so those two lines are dropped too (:class:`_ClosedWhileRunning`).
SIGTERM and SIGKILL still end a worker as before; the window before a worker has started (its
imports, under a second) keeps Python's default.

Only for workers Aquila starts and closes itself: a scheduler the user runs keeps its workers as
they are.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class DriverHandlesCtrlC(WorkerPlugin):
    """Ignore SIGINT in the worker process (see the module docstring)."""

    name = "aquila-driver-handles-ctrl-c"

    def setup(self, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        logging.getLogger("distributed.worker.state_machine").addFilter(_ClosedWhileRunning())


class _ClosedWhileRunning(logging.Filter):
    """Drops distributed's warning that a running task's instruction ended with
    CancelledError (its worker closing mid-task); every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING
                    and record.getMessage().endswith("ended with CancelledError"))
