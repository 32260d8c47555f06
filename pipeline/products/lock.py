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
import errno
import fcntl
import json
import os
import socket
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import StoreBusy, StoreNotOurs, StoreUnwritable


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
    """``<store>.lock`` in the store's real folder (symbolic links in the folder's path
    resolved), so every spelling of one store path names one lock file."""
    return canonical(store).with_name(store.name + ".lock")


def canonical(store: Path) -> Path:
    """``store`` absolute, its folder's symbolic links resolved (not the store's own name: a
    link there is refused, never followed; see pipeline/products/publish.py)."""
    store = Path(os.path.abspath(store))
    return store.parent.resolve() / store.name


@contextlib.contextmanager
def store_locks(stores: Iterable[Path], *, run_id: str) -> Iterator[list[Lock]]:
    """Hold the locks of several stores (taken in sorted order, so two runs that share stores
    cannot each hold one the other waits for; they do not wait anyway: the second is busy)."""
    with contextlib.ExitStack() as stack:
        ordered = sorted({canonical(s) for s in stores})
        yield [stack.enter_context(store_lock(s, run_id=run_id)) for s in ordered]


@contextlib.contextmanager
def store_lock(store: Path, *, run_id: str) -> Iterator[Lock]:
    """Hold the store's lock for the block; raise :class:`StoreBusy` at once if another process
    holds it (no waiting: a nightly job that finds its store busy should exit and say so)."""
    path = lock_path(store)
    fd = _open(path)
    try:
        _check_ours(fd, path)  # before it is locked or truncated: it may be someone's file
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
        try:
            _write(fd, me)
        except OSError as exc:
            raise StoreUnwritable.from_os_error(exc, doing=f"writing the lock file {path}") from exc
        try:
            yield Lock(path, me, took_over=previous)
        finally:
            os.ftruncate(fd, 0)  # released cleanly: no record left to look stale
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _open(path: Path) -> int:
    """The lock file, created (and its folder) if needed; a clear error if it cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a symbolic link at the lock's name is refused, never followed to a file
        # that would then be truncated
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR):
            raise StoreNotOurs(
                f"the lock file {path} is a symbolic link or a folder; Aquila changed nothing. "
                "Move it away (a lock file is Aquila's own, next to the store)",
                reason="store_not_aquila",
            ) from exc
        if not isinstance(exc, NotADirectoryError | FileExistsError):
            doing = f"creating the lock file {path}"
            raise StoreUnwritable.from_os_error(exc, doing=doing) from exc
        raise StoreNotOurs(
            f"cannot make the lock file {path}: a file stands where a folder of that path "
            f"should be ({exc.filename}); point the workflow's 'store:' at a folder path",
            reason="store_path_invalid",
        ) from exc


def _check_ours(fd: int, path: Path) -> None:
    """Refuse a lock path that holds something Aquila did not write there: not a regular file,
    or a file whose content is not a lock record (empty, or one holder's JSON)."""
    st = os.fstat(fd)
    raw = os.pread(fd, 4097, 0) if stat.S_ISREG(st.st_mode) else b""
    if stat.S_ISREG(st.st_mode) and (not raw.strip() or _holder(raw) is not None):
        return
    raise StoreNotOurs(
        f"{path} is not a lock file Aquila wrote (it holds something else); Aquila changed "
        "nothing. Move it away: Aquila keeps its lock for a store in <store>.lock",
        reason="store_not_aquila",
    )


def _holder(raw: bytes) -> LockHolder | None:
    try:
        data = json.loads(raw) if raw.strip() else None
        return LockHolder(**data) if isinstance(data, dict) else None
    except (ValueError, TypeError):
        return None


def _read(fd: int) -> LockHolder | None:
    return _holder(os.pread(fd, 4096, 0))


def _write(fd: int, holder: LockHolder) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(holder.__dict__).encode())
    os.fsync(fd)
