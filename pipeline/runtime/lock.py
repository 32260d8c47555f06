"""One writer per store: an exclusive ``flock`` on ``<store>.lock``.

The kernel holds the lock for the process and drops it when the process ends, however it ends
(SIGKILL and power loss included), so a lock is never left behind by a dead run: the next run
simply takes it. The file also records who holds it (pid, host, run id, since when) so that a
refused run can say who is writing; a run that finds such a record while getting the lock knows
the previous holder died without releasing it, and reports the takeover.

``flock`` is reliable on local file systems and on NFSv4 (Linux maps it to byte-range locks);
on other network file systems use the scheduler's own exclusion (cron's ``flock``, Kubernetes'
``concurrencyPolicy: Forbid``) as well.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import StoreBusy


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a store's lock."""

    pid: int
    host: str
    run_id: str
    since: str  # ISO 8601 UTC

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host}, since {self.since})"


@dataclass(frozen=True)
class Lock:
    """A held lock. ``took_over`` is the record a dead holder left behind, if any."""

    path: Path
    holder: LockHolder
    took_over: LockHolder | None = None


def lock_path(store: Path) -> Path:
    return store.with_name(store.name + ".lock")


@contextlib.contextmanager
def store_lock(store: Path, *, run_id: str) -> Iterator[Lock]:
    """Hold the store's lock for the block; raise :class:`StoreBusy` at once if another process
    holds it (no waiting: a nightly job that finds its store busy should exit and say so)."""
    path = lock_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            who = holder.describe() if holder else "another process"
            raise StoreBusy(
                f"{store} is being written by {who}; one run at a time per store. This run "
                "exits without changing anything: let the other run finish (or kill it; its "
                "lock goes with it) and run again"
            ) from None
        previous = _read(fd)
        me = LockHolder(
            os.getpid(),
            socket.gethostname(),
            run_id,
            dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        _write(fd, me)
        try:
            yield Lock(path, me, took_over=previous)
        finally:
            os.ftruncate(fd, 0)  # released cleanly: no record left to look stale
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _read(fd: int) -> LockHolder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        data = json.loads(raw) if raw.strip() else None
        return LockHolder(**data) if isinstance(data, dict) else None
    except (ValueError, TypeError):
        return None


def _write(fd: int, holder: LockHolder) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(holder.__dict__).encode())
    os.fsync(fd)
