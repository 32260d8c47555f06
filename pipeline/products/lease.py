"""One writer per bucket product: a lease object ``<store>.lock`` beside it, taken and renewed
by conditional writes.

Object storage has no ``flock``. S3 (and MinIO, and moto) answers a PUT with ``If-None-Match: *``
only if no object is there, and one with ``If-Match: <etag>`` only if the object is still the one
read: so exactly one of two runs that race for the lease wins, and a run can renew, hand back or
take over a lease only if nobody changed it since it looked.

The lease records who holds it (pid, host, pid namespace, run id) and until when (``expires``,
the holder's clock plus :data:`LEASE_SECONDS`). A live run renews it every third of that. A
lease is free when it is absent, handed back (``released``), expired, or held by a process of
this host and pid namespace that no longer exists (a killed driver on this machine: taken over
at once, as the kernel frees a dead process's ``flock``). A takeover is reported. A run whose
renewal fails (it was paused past the expiry and another run took over) stops before it
publishes; even then Icechunk's conditional branch move keeps the product one whole version
(see :mod:`pipeline.products.bucket`). The lease object is never deleted: handing it back is a
conditional overwrite, so a late release can never remove the next holder's lease.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.errors import StoreBusy, StoreNotOurs, StoreUnwritable
from pipeline.products.objectstore import ObjectLocation, S3Settings, bucket_store

LEASE_SECONDS = 120.0  # a killed driver on another host blocks its product this long at most
_MAX_LEASE_BYTES = 4096


@dataclass(frozen=True)
class LeaseHolder:
    pid: int
    host: str
    pidns: str  # the holder's pid namespace (containers on one host have their own pids)
    run_id: str
    since: str  # ISO 8601 UTC
    expires: str  # ISO 8601 UTC, by the holder's clock

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host}, since {self.since})"

    def expired(self, now: dt.datetime) -> bool:
        return now >= dt.datetime.fromisoformat(self.expires)

    def dead_here(self) -> bool:
        """A process of this host and pid namespace that no longer exists."""
        if self.host != socket.gethostname() or self.pidns != _pidns():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


@dataclass(frozen=True)
class Lease:
    """A held lease; ``took_over``: the holder whose lease this run took (dead or expired)."""

    location: ObjectLocation
    holder: LeaseHolder
    took_over: LeaseHolder | None = None


def lease_location(store: ObjectLocation) -> ObjectLocation:
    return store.sibling(store.name + ".lock")


def _pidns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Held:
    """The lease while it is held: renewed by a daemon thread; ``lost`` says why it is not."""

    def __init__(self, store: Any, key: str, me: LeaseHolder, etag: str, seconds: float) -> None:
        self.store, self.key, self.me, self.etag, self.seconds = store, key, me, etag, seconds
        self.lost: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                        name=f"aquila-lease-{key}")
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            record = _holder_record(self.me, self.seconds)
            with self._lock:
                try:
                    self.etag = _put(self.store, self.key, record, etag=self.etag)
                except Exception as exc:  # noqa: BLE001 - any failure: the lease is not ours
                    self.lost = f"the lease {self.key} could not be renewed ({exc})"
                    return

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.lost is None:
            released = {"released": True, "run_id": self.me.run_id,
                        "at": _now().isoformat(timespec="seconds")}
            # a failure: taken over meanwhile (it is not ours to hand back now)
            with contextlib.suppress(Exception):
                _put(self.store, self.key, json.dumps(released).encode(), etag=self.etag)


def _holder_record(me: LeaseHolder, seconds: float) -> bytes:
    expires = (_now() + dt.timedelta(seconds=seconds)).isoformat(timespec="seconds")
    return json.dumps(asdict(me) | {"expires": expires}).encode()


def _put(store: Any, key: str, data: bytes, *, etag: str | None) -> str:
    """A conditional PUT (create when ``etag`` is None, else replace that version); its ETag."""
    import obstore

    mode: Any = "create" if etag is None else {"e_tag": etag}
    return str(obstore.put(store, key, data, mode=mode)["e_tag"])


def _parse(raw: bytes) -> LeaseHolder | dict | None:
    """A holder, a released record (dict), or None: not a lease Aquila wrote."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("released") is True:
        return data
    try:
        return LeaseHolder(**data) if isinstance(data, dict) else None
    except TypeError:
        return None


@contextmanager
def bucket_lease(
    store: ObjectLocation, *, run_id: str, settings: S3Settings, seconds: float = LEASE_SECONDS
) -> Iterator[tuple[Lease, _Held]]:
    """Hold the lease of ``store`` for the block (:class:`StoreBusy` at once if another live run
    holds it; :class:`StoreNotOurs` if ``<store>.lock`` holds something else)."""
    import obstore

    where = lease_location(store)
    client = bucket_store(where.bucket, settings)
    me = LeaseHolder(os.getpid(), socket.gethostname(), _pidns(), run_id,
                     _now().isoformat(timespec="seconds"), "")
    took_over: LeaseHolder | None = None
    try:
        try:
            got = obstore.get(client, where.key)
        except FileNotFoundError:
            etag = _put(client, where.key, _holder_record(me, seconds), etag=None)
        else:
            raw = bytes(got.bytes())[:_MAX_LEASE_BYTES + 1]
            found = _parse(raw) if len(raw) <= _MAX_LEASE_BYTES else None
            if found is None:
                raise StoreNotOurs(
                    f"{where} is not a lease Aquila wrote (it holds something else); Aquila "
                    "changed nothing. Move it away: Aquila keeps its lease for a bucket product "
                    "in <store>.lock", reason="store_not_aquila")
            if isinstance(found, LeaseHolder):
                if not (found.expired(_now()) or found.dead_here()):
                    raise _busy(store, found.describe())
                took_over = found
            etag = _put(client, where.key, _holder_record(me, seconds),
                        etag=str(got.meta["e_tag"]))
    except (obstore.exceptions.AlreadyExistsError, obstore.exceptions.PreconditionError):
        raise _busy(store, "another run that took the lease just now") from None
    except (OSError, obstore.exceptions.BaseError) as exc:
        raise StoreUnwritable(f"cannot take the lease {where}: {exc}; check the credentials "
                              "and that the bucket exists") from exc
    held = _Held(client, where.key, me, etag, seconds)
    try:
        yield Lease(where, me, took_over), held
    finally:
        held.release()


def _busy(store: ObjectLocation, who: str) -> StoreBusy:
    return StoreBusy(
        f"{store} is being written by {who}; one run at a time per store. This run exits "
        "without changing anything: let the other run finish (a killed run's lease expires "
        f"within {LEASE_SECONDS:.0f} s, at once on its own host) and run again"
    )
