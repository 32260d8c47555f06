"""A nightly store is an Icechunk repository; every night is one atomic publication.

Why Icechunk (README "Nightly runs"): its commits are snapshots, so a reader holds one complete
version however long it reads and whatever a writer does meanwhile; history comes for free
(every past night stays openable); and its fork/merge protocol lets Dask workers write their own
chunks into one transaction without the driver copying any pixel.

The protocol of one night, all on a private branch ``aquila-run-<run id>`` made from ``main``:

1. **write**: a writable session on the branch is forked once per chunk task; each worker
   resizes the cube's time axis to tonight's length in its fork (the same definition in every
   fork merges cleanly) and writes whole chunks; the driver merges the forks of the tasks that
   finished (a task Dask ran twice is merged once), writes the time coordinates, lineage and the
   ledger, and commits: **one snapshot per night**. (Only when a store is created or rebuilt do
   its groups get a commit of their own first, since Icechunk forks only from a session without
   uncommitted changes.)
2. **publish**: ``main`` is moved to that commit in one conditional reference update (only if it
   still points at the night's base). Readers of ``main`` see the previous night or this one.

A run killed before step 2 leaves ``main`` untouched; its branch and unreferenced chunk files are
removed or ignored by the next run. Writable sessions never travel: only forks (built for it) and
read-only sessions are pickled.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import RunError
from pipeline.plan.ledger import StoreState

MAIN = "main"
RUN_BRANCH = "aquila-run-"
STATE_ARRAY = "_aquila/state"
NIGHT = "night"
PREPARE = "prepare"


def main_history(repo: Any) -> list[tuple[str, dict[str, Any]]]:
    """The commits on ``main`` of an Icechunk repository, newest first: (snapshot id,
    metadata)."""
    return [(c.id, dict(c.metadata or {})) for c in repo.ancestry(branch=MAIN)]


def not_ours(history: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """The snapshot ids in ``history`` (:func:`main_history`) that Aquila did not commit: each
    of its commits carries ``aquila:kind``, and Icechunk's first one ``__root``."""
    return [sid for sid, meta in history if not {"aquila:kind", "__root"} & set(meta)]


def _icechunk():
    import icechunk

    # One writer per store is guaranteed by our lock (pipeline/products/lock.py), so Icechunk's
    # warning that the local file system is not safe for *concurrent* commits does not apply
    # (it is printed when a local storage object is made: every open, read-only ones too).
    # S3 storage never prints it (conditional writes make its commits safe), and a bucket
    # product has its own one-writer lease (pipeline/products/lease.py). The filter is
    # process-wide; Icechunk's other warnings stay on.
    icechunk.set_logs_filter("icechunk::storage::object_store=error,warn")
    return icechunk


@dataclass(frozen=True)
class Night:
    """One published night: its commit on ``main`` and what the run recorded there."""

    snapshot: str
    run_id: str
    written_at: dt.datetime
    message: str
    metadata: Mapping[str, Any]


class NightlyStore:
    """An Icechunk repository holding a nightly cube and its mosaics: on the local file system,
    or in a bucket (S3's conditional writes make its commits safe there too)."""

    def __init__(self, path: Any, repo: Any) -> None:
        self.path, self.repo = path, repo  # a Path, or an ObjectLocation (printed as s3://…)

    @classmethod
    def open(cls, path: Path, *, create: bool = True, settings: Any = None) -> NightlyStore:
        """The store at ``path``: a local folder, or an ``s3://`` location (as
        :func:`pipeline.products.objectstore.object_location` reads it; ``settings``: how to
        reach the bucket, default the standard environment)."""
        from pipeline.products.objectstore import icechunk_storage, object_location, s3_settings

        ic = _icechunk()
        loc = object_location(path)
        if loc is not None:
            storage = icechunk_storage(loc, settings or s3_settings())
            if not create and not ic.Repository.exists(storage):
                raise RunError(f"no nightly store at {loc}", reason="store_missing")
            repo = (ic.Repository.open_or_create if create else ic.Repository.open)(storage)
            return cls(loc, repo)
        storage = ic.local_filesystem_storage(str(path))
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            repo = ic.Repository.open_or_create(storage)
        else:
            if not path.exists():
                raise RunError(f"no nightly store at {path}", reason="store_missing")
            repo = ic.Repository.open(storage)
        return cls(path, repo)

    # ------------------------------------------------------------------ reading

    def tip(self) -> str:
        return self.repo.lookup_branch(MAIN)

    def readonly(self, snapshot: str | None = None):
        """A read-only session (picklable) at ``snapshot`` (default: the tip of ``main``)."""
        if snapshot is None:
            return self.repo.readonly_session(MAIN)
        return self.repo.readonly_session(snapshot_id=snapshot)

    def state(self, snapshot: str | None = None) -> StoreState | None:
        """The ledger and layout committed with ``snapshot`` (None: an empty store)."""
        import zarr

        session = self.readonly(snapshot)
        try:
            array = zarr.open_array(session.store, path=STATE_ARRAY, mode="r")
        except (FileNotFoundError, KeyError, zarr.errors.NodeTypeValidationError):
            return None
        return StoreState.from_bytes(np.asarray(array[:]).tobytes())

    def nights(self) -> list[Night]:
        """Every published night on ``main``, newest first (prepare commits left out)."""
        out = []
        for info in self.repo.ancestry(branch=MAIN):
            meta = dict(info.metadata or {})
            if meta.get("aquila:kind") == NIGHT:
                out.append(
                    Night(
                        info.id,
                        str(meta.get("aquila:run_id", "")),
                        info.written_at,
                        info.message,
                        meta,
                    )
                )
        return out

    def night(self, run_id: str) -> Night:
        for n in self.nights():
            if n.run_id == run_id or n.snapshot == run_id:
                return n
        raise RunError(
            f"{self.path} has no night {run_id!r}; 'aquila history {self.path}' lists them",
            reason="night_missing",
        )

    # ------------------------------------------------------------------ writing

    def stale_branches(self) -> list[str]:
        return sorted(b for b in self.repo.list_branches() if b.startswith(RUN_BRANCH))

    def remove_stale_branches(self) -> list[str]:
        """Branches left by killed runs (call with the store's lock held)."""
        stale = self.stale_branches()
        for branch in stale:
            self.repo.delete_branch(branch)
        return stale

    def begin(self, run_id: str, attempt: int = 1) -> Transaction:
        base = self.tip()
        branch = f"{RUN_BRANCH}{run_id}-{attempt}"
        self.repo.create_branch(branch, base)
        return Transaction(self, base, branch)


class Transaction:
    """One night's private branch, from its base on ``main`` to the publication."""

    def __init__(self, store: NightlyStore, base: str, branch: str) -> None:
        self.store, self.base, self.branch = store, base, branch

    @property
    def repo(self):
        return self.store.repo

    def prepare(self, write: Callable[[Any], None], *, run_id: str) -> str:
        """Layout changes (resize, coordinates) in their own commit on the run branch."""
        session = self.repo.writable_session(self.branch)
        write(session.store)
        return session.commit(
            f"aquila: prepare run {run_id}",
            metadata={"aquila:kind": PREPARE, "aquila:run_id": run_id},
        )

    def writer(self):
        """The writable session the chunk tasks fork from (never pickled itself)."""
        return self.repo.writable_session(self.branch)

    def commit(self, session, *, run_id: str, message: str, metadata: Mapping[str, Any]) -> str:
        meta = {"aquila:kind": NIGHT, "aquila:run_id": run_id, **json_safe(metadata)}
        return session.commit(message, metadata=meta)

    def publish(self, snapshot: str) -> None:
        """Move ``main`` to ``snapshot``, only if it still points at this night's base."""
        ic = _icechunk()
        try:
            self.repo.reset_branch(MAIN, snapshot, from_snapshot_id=self.base)
        except ic.IcechunkError as exc:  # what icechunk raises, a moved branch included
            raise RunError(
                f"could not publish the night: {self.store.path} moved under us ({exc}); "
                "nothing was published, rerun",
                reason="publish_conflict",
            ) from exc

    def close(self) -> None:
        if self.branch in self.repo.list_branches():
            self.repo.delete_branch(self.branch)


def write_state(zstore: Any, state: StoreState) -> None:
    """Put the night's ledger and layout (:class:`StoreState`) into the transaction's store,
    as the uint8 array :data:`STATE_ARRAY` that :meth:`NightlyStore.state` reads back."""
    import zarr

    blob = np.frombuffer(state.to_bytes(), dtype=np.uint8)
    array = zarr.create_array(
        zstore,
        name=STATE_ARRAY,
        shape=blob.shape,
        dtype="uint8",
        chunks=(max(1, min(blob.size, 1 << 22)),),
        compressors=None,
        fill_value=0,
        overwrite=True,
    )
    array[:] = blob


def json_safe(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def open_night(store: str | Path, *, run: str | None = None):
    """A read-only session of a nightly store: the current night, or the night of run id (or
    snapshot id) ``run``. Open products with ``xarray.open_zarr(session.store, group="cube",
    consolidated=False)`` (``group`` = ``cube`` or a mosaic's name)."""
    s = NightlyStore.open(Path(store), create=False)
    return s.readonly(s.night(run).snapshot if run else None)


def iter_groups(session) -> Iterator[str]:
    import zarr

    root = zarr.open_group(session.store, mode="r")
    for name, _ in root.groups():
        if not name.startswith("_"):
            yield name
