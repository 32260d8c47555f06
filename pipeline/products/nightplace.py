"""Where a nightly store lives, and what goes beside it: on a file system or in a bucket.

A night does the same steps wherever its store is (:mod:`pipeline.engine.nightly`); only five
things differ, and each place does them its own way:

=================  ==================================  ========================================
                   :class:`OnDisk` (a folder)           :class:`InBucket` (``s3://b/prefix/x``)
=================  ==================================  ========================================
whose store        :func:`check_nightly_store`          :func:`check_bucket_target`
one writer         ``flock`` (:mod:`.lock`)             a conditional-write lease (:mod:`.lease`)
the repository     Icechunk local storage               Icechunk S3 storage
reports            files, each replaced in one rename   objects, each one PUT
STAC sidecars      files beside the store               objects beside the store
=================  ==================================  ========================================

The latest report is ``<store>.night-report.json``, every night's also
``<store>.reports/<run id>.json`` and the operator report (restricted audiences)
``<store>.reports/<run id>.operator-report.json``, in both places. A report that cannot be put
where it belongs is written to the temporary folder and ``report_error`` says so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline.products.lease import bucket_lease
from pipeline.products.lock import store_lock
from pipeline.products.objectstore import ObjectLocation, S3Settings, first_line, put_text
from pipeline.products.publish import check_nightly_store
from pipeline.products.report import NightReport, OperatorReport, write_finished
from pipeline.products.transaction import NightlyStore


@dataclass(frozen=True)
class Held:
    """The store's lock or lease while a night holds it: who holds it, whose dead lock it took
    over (a record for the report, and a line for its notes), and ``lost()``: why it is no
    longer held (None: it is; a ``flock`` is never lost, a lease may be)."""

    record: dict[str, Any]
    took_over: str | None
    lost: Callable[[], str | None]


class NightPlace(Protocol):
    in_bucket: bool

    @property
    def label(self) -> str: ...  # the store as printed and reported

    @property
    def stac_store(self) -> Path: ...  # the store as product_stac_text takes it

    def check(self) -> None: ...
    def lock(self, run_id: str) -> contextlib.AbstractContextManager[Held]: ...
    def open(self) -> NightlyStore: ...
    def operator_at(self, run_id: str) -> str: ...
    def put_operator(self, operator: OperatorReport, where: str) -> None: ...
    def put_report(self, report: NightReport, t0: float) -> None: ...
    def put_sidecars(self, texts: Mapping[str, str]) -> None: ...


def _report_names(run_id: str) -> tuple[str, str]:
    """The latest report's name suffix and the history copy's, relative to the store's name."""
    return ".night-report.json", f".reports/{run_id}.json"


@dataclass(frozen=True)
class OnDisk:
    """A nightly store in a folder (local, or NFSv4 where ``flock`` is honoured)."""

    store: Path
    report_path: Path | None = None  # --report (default <store>.night-report.json)
    in_bucket = False

    @property
    def label(self) -> str:
        return str(self.store)

    @property
    def stac_store(self) -> Path:
        return self.store

    def check(self) -> None:
        check_nightly_store(self.store)  # a file, or someone else's folder: refused untouched

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[Held]:
        with store_lock(self.store, run_id=run_id) as lock:
            yield Held(
                {"holder": asdict(lock.holder),
                 "took_over": asdict(lock.took_over) if lock.took_over else None},
                lock.took_over.describe() if lock.took_over else None,
                lambda: None,
            )

    def open(self) -> NightlyStore:
        return NightlyStore.open(self.store)

    def operator_at(self, run_id: str) -> str:
        return str(Path(self.label + ".reports") / f"{run_id}.operator-report.json")

    def put_operator(self, operator: OperatorReport, where: str) -> None:
        operator.write(Path(where))

    def put_report(self, report: NightReport, t0: float) -> None:
        latest, history = _report_names(report.run_id)
        path = self.report_path or Path(self.label + latest)
        write_finished(report, t0, path, also=(Path(self.label + history),))

    def put_sidecars(self, texts: Mapping[str, str]) -> None:
        from pipeline.products.publish import write_text_atomic

        for name, text in texts.items():  # the Collection, then the Item
            write_text_atomic(self.store.with_name(name), text)


@dataclass(frozen=True)
class InBucket:
    """A nightly store in a bucket: an Icechunk repository on S3 (or MinIO, Ceph…)."""

    location: ObjectLocation
    settings: S3Settings
    report_path: Path | None = None  # --report: a local file instead of the object beside it
    lease_seconds: float | None = None  # default: the lease module's
    in_bucket = True

    @property
    def label(self) -> str:
        return str(self.location)

    @property
    def stac_store(self) -> Path:
        return Path(self.location.name)  # links and assets are relative to its prefix

    def check(self) -> None:
        from pipeline.products.bucket import check_bucket_target

        check_bucket_target(self.location, self.settings)

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[Held]:
        from pipeline.products.bucket import check_bucket_target

        extra = {} if self.lease_seconds is None else {"seconds": self.lease_seconds}
        with bucket_lease(self.location, run_id=run_id, settings=self.settings,
                          **extra) as (lease, renewal):
            check_bucket_target(self.location, self.settings)  # again, now nobody else can write
            t = lease.took_over
            yield Held(
                {"holder": asdict(lease.holder), "took_over": asdict(t) if t else None,
                 "lease": str(lease.location)},
                f"{t.describe()} (or whose lease had expired)" if t else None,
                lambda: renewal.lost,
            )

    def open(self) -> NightlyStore:
        return NightlyStore.open(Path(self.label), settings=self.settings)

    def _beside(self, suffix: str) -> ObjectLocation:
        return self.location.sibling(self.location.name + suffix)

    def operator_at(self, run_id: str) -> str:
        return str(self._beside(f".reports/{run_id}.operator-report.json"))

    def put_operator(self, operator: OperatorReport, where: str) -> None:
        """Beside the store, or a local file (``--operator-report``)."""
        from pipeline.products.objectstore import object_location

        loc = object_location(where)
        if loc is None:
            operator.write(Path(where))
            return
        put_text(loc, json.dumps(asdict(operator), indent=2, default=str), self.settings)

    def put_report(self, report: NightReport, t0: float) -> None:
        """Beside the store (or at ``--report``); where the bucket refuses, in the temporary
        folder, and ``report_error`` says so."""
        if self.report_path is not None:
            write_finished(report, t0, self.report_path)
            return
        latest, history = (self._beside(s) for s in _report_names(report.run_id))
        report.finished = dt.datetime.now(dt.UTC).isoformat()
        report.seconds["total"] = time.perf_counter() - t0
        report.products.setdefault("report", str(latest))
        text = json.dumps(report.as_dict(), indent=2, default=str)
        import obstore

        try:
            put_text(history, text, self.settings)
            put_text(latest, text, self.settings)
        except (OSError, obstore.exceptions.BaseError) as exc:  # the bucket refused: kept local
            fallback = Path(tempfile.gettempdir()) / f"aquila-{report.run_id}.night-report.json"
            report.products["report"] = str(fallback)
            report.report_error = (f"night report not put at {latest}: {first_line(exc)}; "
                                   f"written to {fallback}")
            report.write(fallback)

    def put_sidecars(self, texts: Mapping[str, str]) -> None:
        for name, text in texts.items():  # the Collection, then the Item: one PUT each
            put_text(self.location.sibling(name), text, self.settings)


def night_place(store: Path, *, report_path: Path | None = None,
                settings: S3Settings | None = None,
                lease_seconds: float | None = None) -> NightPlace:
    """The place of the store at ``store`` (a folder, or an ``s3://`` location as
    :func:`~pipeline.products.objectstore.object_location` reads it)."""
    from pipeline.products.objectstore import object_location, s3_settings

    loc = object_location(store)
    if loc is None:
        return OnDisk(store, report_path)
    return InBucket(loc, settings or s3_settings(), report_path, lease_seconds)
