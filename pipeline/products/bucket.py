"""Products on object storage: each product store ``s3://bucket/prefix/name`` is an Icechunk
repository, and a run publishes it by one conditional branch move.

Why Icechunk and not plain Zarr through an object store: S3 has no rename, so a plain Zarr
product can only be rewritten key by key in place, and a reader (or a killed run) would see a
mix of two versions. An Icechunk commit is a snapshot, and ``main`` moves to it in one
conditional reference update: a reader of ``main`` sees the old product or the new, never half.
A run uses the nightly protocol (:mod:`pipeline.products.transaction`): a private branch
``aquila-run-<run id>`` from ``main``, the layout in a commit of its own (Icechunk forks only from
a session without uncommitted changes), one fork per chunk task merged by the driver, lineage
and label, one commit, then ``main`` moved only if it still points where the run started. A run
killed anywhere before that leaves ``main`` as it was; the next run removes the dead run's
branch (its chunk objects stay unreferenced until ``garbage_collect``).

What may be replaced (:func:`bucket_product_problem`): nothing under ``<key>/``, or an Icechunk
repository (only Icechunk's own top-level entries) whose every commit on ``main`` is Aquila's.
Anything else, and a ``<store>.stac.json`` / ``<store>.collection.json`` beside it that is not an
Aquila sidecar, is refused before any work and left untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from pipeline.errors import RunError, StoreNotOurs
from pipeline.products.objectstore import (
    ObjectLocation,
    S3Settings,
    bucket_store,
    delete,
    exists,
    get_bytes,
    icechunk_storage,
    put_text,
)
from pipeline.products.publish import _is_our_sidecar
from pipeline.products.transaction import (
    MAIN,
    PREPARE,
    RUN_BRANCH,
    _icechunk,
    json_safe,
    main_history,
    not_ours,
)

# what Icechunk 1.1 keeps at a repository's top level (checked: a created, committed repository)
ICECHUNK_ENTRIES = frozenset(
    {"refs", "snapshots", "manifests", "chunks", "transactions", "overwritten", "config.yaml",
     "repo"}
)
RUN = "run"  # commit metadata aquila:kind of a published run
_MAX_SIDECAR = 64 * 2**20


def open_bucket_product(url: str, *, snapshot: str | None = None,
                        settings: S3Settings | None = None) -> Any:
    """A read-only session of the bucket product at ``url`` (``s3://bucket/prefix/name``): the
    published version (``main``), or ``snapshot``. Open it with ``xarray.open_zarr(
    session.store, consolidated=False)``."""
    from pipeline.products.objectstore import object_location, s3_settings

    loc = object_location(url)
    if loc is None:
        raise ValueError(f"{url} is not an s3:// product")
    repo = _icechunk().Repository.open(icechunk_storage(loc, settings or s3_settings()))
    if snapshot is not None:
        return repo.readonly_session(snapshot_id=snapshot)
    return repo.readonly_session(MAIN)


def sidecars_of(store: ObjectLocation) -> tuple[ObjectLocation, ObjectLocation]:
    """The Collection and the Item beside a bucket product, in the order they are put."""
    return (store.sibling(store.name + ".collection.json"),
            store.sibling(store.name + ".stac.json"))


def bucket_product_problem(store: ObjectLocation, settings: S3Settings) -> str | None:
    """Why a run may not replace what is at ``store`` (None: nothing, or a product Aquila
    wrote)."""
    import obstore

    listing = obstore.list_with_delimiter(bucket_store(store.bucket, settings),
                                          prefix=store.key + "/")
    top = [p.rstrip("/").rsplit("/", 1)[-1] for p in listing["common_prefixes"]]
    top += [str(o["path"]).rsplit("/", 1)[-1] for o in listing["objects"]]
    if not top:
        return None
    foreign = sorted(e for e in top if e not in ICECHUNK_ENTRIES)
    if foreign:
        return f"holds objects Aquila did not write ({', '.join(foreign[:5])})"
    ic = _icechunk()
    storage = icechunk_storage(store, settings)
    if not ic.Repository.exists(storage):
        return "holds objects that are not an Icechunk repository"
    others = not_ours(main_history(ic.Repository.open(storage)))
    if others:
        return f"is an Icechunk repository with commits Aquila did not make ({others[0]}…)"
    return None


def sidecar_problem(path: ObjectLocation, settings: S3Settings) -> str | None:
    raw = get_bytes(path, settings, limit=_MAX_SIDECAR)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not _is_our_sidecar(doc):
        return f"has {path.name} beside it, which is not a STAC sidecar Aquila wrote"
    return None


def check_bucket_target(store: ObjectLocation, settings: S3Settings) -> None:
    """Raise :class:`StoreNotOurs` unless a run may replace ``store`` and its sidecars."""
    problem = bucket_product_problem(store, settings) or next(
        filter(None, (sidecar_problem(p, settings) for p in sidecars_of(store))), None)
    if problem is not None:
        raise StoreNotOurs(
            f"product store {store} {problem}. Aquila replaces only products it wrote and has "
            "changed nothing: move that away, or point the workflow's 'store:' at a new prefix"
        )


@dataclass
class _Build:
    repo: Any
    base: str  # the snapshot ``main`` pointed at when the run began
    branch: str
    session: Any = None  # the writable session the chunk tasks fork from (never pickled)


class BucketPublication:
    """One run's builds of its bucket products: :meth:`recover`, :meth:`start` (branch and
    layout), forks for the tasks, :meth:`merge`, :meth:`publish` (commit and conditional move),
    :meth:`discard` (the run's branches, whatever ended it). Hold the products' leases
    throughout; ``lease_lost`` says why one is no longer held (None: all are)."""

    def __init__(self, stores: Sequence[ObjectLocation], *, run_id: str, settings: S3Settings,
                 lease_lost: Callable[[], str | None] = lambda: None) -> None:
        self.stores = tuple(stores)
        self.run_id, self.settings, self.lease_lost = run_id, settings, lease_lost
        self._builds: dict[ObjectLocation, _Build] = {}
        self.published: list[ObjectLocation] = []
        self.left: list[str] = []  # what discard() could not remove

    def _repo(self, store: ObjectLocation) -> Any:
        return _icechunk().Repository.open_or_create(icechunk_storage(store, self.settings))

    def recover(self) -> list[str]:
        """Remove the branches of killed runs (under the lease: no live run owns one)."""
        notes = []
        for store in self.stores:
            repo = self._repo(store)
            for branch in sorted(b for b in repo.list_branches() if b.startswith(RUN_BRANCH)):
                repo.delete_branch(branch)
                notes.append(f"removed {store} branch {branch}, left by a killed run")
        return notes

    def start(self, layout: Callable[[ObjectLocation, Any], None]) -> None:
        """For each product: a branch from ``main``, emptied and laid out by ``layout(store,
        zarr store)`` in a commit of its own; the session the tasks fork from."""
        from zarr.core.sync import sync

        for store in self.stores:
            repo = self._repo(store)
            build = _Build(repo, repo.lookup_branch(MAIN), f"{RUN_BRANCH}{self.run_id}")
            repo.create_branch(build.branch, build.base)
            self._builds[store] = build
            session = repo.writable_session(build.branch)
            sync(session.store.clear())  # a run replaces the whole product
            layout(store, session.store)
            session.commit(f"aquila: lay out run {self.run_id}",
                           metadata={"aquila:kind": PREPARE, "aquila:run_id": self.run_id})
            build.session = repo.writable_session(build.branch)

    def fork(self, store: ObjectLocation) -> Any:
        return self._builds[store].session.fork()

    def merge(self, store: ObjectLocation, forks: Sequence[Any]) -> None:
        if forks:
            self._builds[store].session.merge(*forks)

    def zarr_store(self, store: ObjectLocation) -> Any:
        """The run's writable store of ``store`` (the driver's, for attributes)."""
        return self._builds[store].session.store

    def publish(self, sidecars: Mapping[ObjectLocation, str], *, summary: Mapping[str, Any]
                ) -> list[str]:
        """Commit every product, then for each: the old Item goes, ``main`` moves (only if it
        still points at the run's base), the new Collection and Item are put. Every target is
        checked again and every product committed before the first move."""
        for store in self.stores:
            check_bucket_target(store, self.settings)
        snapshots = {
            store: b.session.commit(
                f"aquila run {self.run_id}",
                metadata={"aquila:kind": RUN, "aquila:run_id": self.run_id, **json_safe(summary)})
            for store, b in self._builds.items()
        }
        for store in self.stores:
            self._move_main(store, snapshots[store], sidecars.get(store))
        return []

    def _move_main(self, store: ObjectLocation, snapshot: str, item_text: str | None) -> None:
        from pipeline.products.stac import collection_text  # stac imports publish

        lost = self.lease_lost()
        if lost is not None:
            raise RunError(f"{lost}: another run may be writing {store}; nothing more was "
                           "published, rerun", reason="publish_conflict")
        build = self._builds[store]
        collection, item = sidecars_of(store)
        if exists(item, self.settings):  # the old label goes before the old product (as on disk)
            delete(item, self.settings)
        try:
            build.repo.reset_branch(MAIN, snapshot, from_snapshot_id=build.base)
        except _icechunk().IcechunkError as exc:
            raise RunError(
                f"could not publish {store}: its main branch moved under us ({exc}); nothing "
                "was published there, rerun", reason="publish_conflict") from exc
        self.published.append(store)
        if item_text is not None:
            text = collection_text(PurePosixPath(store.name), item_text)  # type: ignore[arg-type]
            if text is not None:
                put_text(collection, text, self.settings)
            put_text(item, item_text, self.settings)

    def discard(self) -> None:
        """Remove this run's branches (its unpublished builds). A branch that cannot be removed
        (the bucket refused) is left for the next run's :meth:`recover` and named in
        :attr:`left` for the report."""
        for store, build in self._builds.items():
            try:
                if build.branch in build.repo.list_branches():
                    build.repo.delete_branch(build.branch)
            except (OSError, _icechunk().IcechunkError) as exc:  # said; recover() removes it
                self.left.append(f"branch {build.branch} of {store} not removed ({exc}); the "
                                 "next run removes it")
        self._builds.clear()

    def __enter__(self) -> BucketPublication:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()
