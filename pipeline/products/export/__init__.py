"""Export a product to the formats other tools read: a Cloud-Optimized GeoTIFF, a plain tiled
GeoTIFF, or CF netCDF-4 (``aquila export``; docs/export.md).

Why: GDAL (and so QGIS) cannot read Zarr v3 and ``to_netcdf`` fails on nested attributes, so a
product opened in xarray only. The export reads a run's store (cube or mosaic) or one group of a
nightly Icechunk store (the latest night, or the night ``at`` names), on disk or published to a
bucket (``s3://bucket/prefix/name``: :func:`open_bucket`), checks it is complete, and
writes one file: values as stored (no rescaling), the product's CRS and transform, its
releasability label (``aquila:label``) in the file's metadata. GeoTIFFs are written window by
window (never the whole product in memory) and the netCDF chunk by chunk through Dask. The file
appears at ``out`` in one step at the end, from a temporary name beside it that a failure or
Ctrl-C removes; an existing ``out`` is never replaced.

Here: the request, opening the product, choosing variables and slot, the temporary file. The
writers: :mod:`pipeline.products.export.tiff` (COG and GeoTIFF) and
:mod:`pipeline.products.export.netcdf`.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.errors import (
    InputError,
    ProductNotFound,
    RunError,
    SpecError,
    StoreUnwritable,
)
from pipeline.products.objectstore import ObjectLocation, first_line, object_location
from pipeline.products.publish import is_marked, nightly_store_problem

Format = Literal["cog", "geotiff", "netcdf"]
FORMATS: tuple[Format, ...] = ("cog", "geotiff", "netcdf")
TIFF_FORMATS = ("cog", "geotiff")


@dataclass(frozen=True)
class Exported:
    """What :func:`export_product` wrote: the file and where its pixels came from."""

    path: Path
    format: Format
    source: str  # the store, and for a nightly store its group and snapshot
    bands: tuple[str, ...]
    label: Any
    snapshot: str | None = None
    time: str | None = None  # the cube slot exported (ISO 8601), None: all or a mosaic


@dataclass(frozen=True)
class Source:
    """A product opened for export: root-level variables as stored (no masking, no scaling),
    its attributes, and a name for messages."""

    ds: Any  # xarray.Dataset
    name: str
    snapshot: str | None = None


def export(
    store: Path | str,
    out: Path | str,
    *,
    format: Format,  # noqa: A002  (the option's own name)
    bands: Sequence[str] | None = None,
    at: str | dt.datetime | None = None,
    time: int | str | dt.date | None = None,
    group: str | None = None,
) -> Path:
    """Write ``store`` (a run's product, or ``group`` of a nightly store as of ``at``) to
    ``out`` as ``format``; return ``out``. See :func:`export_product`."""
    return export_product(store, out, format=format, bands=bands, at=at, time=time,
                          group=group).path


def export_product(
    store: Path | str,
    out: Path | str,
    *,
    format: Format,  # noqa: A002
    bands: Sequence[str] | None = None,
    at: str | dt.datetime | None = None,
    time: int | str | dt.date | None = None,
    group: str | None = None,
) -> Exported:
    """The export, step by step: check the request, open the product, choose variables and
    time slot, write to a temporary file, put it at ``out``."""
    fmt = _check_format(format)
    out = Path(out)
    _refuse_existing(out)
    lazy = fmt == "netcdf"
    loc = bucket_of(store)  # s3://bucket/prefix/name: a product published to a bucket
    src = (open_product(Path(store), at=at, group=group, lazy_chunks=lazy) if loc is None
           else open_bucket(loc, at=at, group=group, lazy_chunks=lazy))
    require_complete(src)
    names = select_bands(src, bands, fmt)
    ds, slot = select_time(src, time, fmt)
    ds = ds[list(names)]
    from pipeline.products.export.netcdf import write_netcdf
    from pipeline.products.export.tiff import tiff_tags, write_tiff

    with staged(out) as tmp:
        if fmt == "netcdf":
            write_netcdf(ds, tmp, source=src.name, slot=slot)
        else:
            write_tiff(ds, tmp, tags=tiff_tags(src, slot), cog=fmt == "cog", source=src.name)
    return Exported(out, fmt, src.name, names, src.ds.attrs.get("aquila:label"),
                    src.snapshot, None if slot is None else slot[1])


# --------------------------------------------------------------------------- checks


def _check_format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; give one of {', '.join(FORMATS)}",
                         reason="usage")
    return fmt  # type: ignore[return-value]


def _refuse_existing(out: Path) -> None:
    if os.path.lexists(out):
        raise InputError(f"{out} exists; export never replaces a file: give a new path, or "
                         "remove it first", reason="output_exists")


def require_complete(src: Source) -> None:
    """Only a complete product may leave: a partial one would travel without saying so."""
    status = src.ds.attrs.get("aquila:status")
    if status != "complete":
        raise InputError(
            f"{src.name} is not a complete product (aquila:status = {status!r}); export only "
            "what a finished run or night published: rerun it, then export",
            reason="product_incomplete",
        )


# --------------------------------------------------------------------------- opening


def open_product(store: Path, *, at: str | dt.datetime | None, group: str | None,
                 lazy_chunks: bool) -> Source:
    """A run's store (a Zarr group Aquila marked) or a nightly store's group. ``lazy_chunks``:
    Dask arrays in the store's chunks (netCDF streams them); otherwise lazily indexed arrays
    (a GeoTIFF window reads only its own chunks)."""
    if not os.path.lexists(store):
        raise ProductNotFound(f"no product at {store}; give a store written by 'aquila run' "
                              "(e.g. out/demo/mosaic.zarr) or 'aquila nightly'")
    chunks: dict[str, int] | None = {} if lazy_chunks else None
    if (store / "zarr.json").is_file() or (store / ".zgroup").is_file():
        if at is not None or group is not None:
            raise InputError(f"{store} is a run's product (one state, one product): --at and "
                             "--group are for nightly stores; drop them", reason="usage")
        _require_marked(store)
        return Source(_open_zarr(str(store), None, chunks), str(store))
    return _open_nightly(store, at=at, group=group, chunks=chunks)


def _require_marked(store: Path) -> None:
    import zarr

    try:
        attrs = dict(zarr.open_group(str(store), mode="r").attrs)
    except (FileNotFoundError, ValueError, KeyError, zarr.errors.NodeTypeValidationError):
        attrs = {}
    if not is_marked(attrs):
        raise ProductNotFound(f"{store} is not an Aquila product (no Aquila attributes at its "
                              "root); give a store written by 'aquila run'",
                              reason="not_a_product")


def _open_zarr(store: Any, group: str | None, chunks: dict[str, int] | None) -> Any:
    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no consolidated metadata: fine
        return xr.open_zarr(store, group=group, chunks=chunks, mask_and_scale=False,
                            consolidated=False if group is not None else None)


def bucket_of(store: Path | str) -> ObjectLocation | None:
    """The bucket location ``store`` names, or None for a local path: ``s3://…``, or a path
    folded to ``s3:/…`` (``Path("s3://b/k")``) where nothing local has that name. A local
    folder that happens to be called ``s3:`` stays local."""
    text = str(store)
    if not text.startswith("s3://") and os.path.lexists(text):
        return None
    try:
        return object_location(text)
    except SpecError:
        if text.startswith("s3://"):
            raise
        return None


def store_name(store: Path | str) -> str:
    """How messages and the CLI's JSON name ``store``: its ``s3://`` URL, or the local path."""
    loc = bucket_of(store)
    return str(loc) if loc is not None else str(Path(store))


def open_bucket(loc: ObjectLocation, *, at: str | dt.datetime | None, group: str | None,
                lazy_chunks: bool) -> Source:
    """A product in a bucket: what a run published there (``main``), or a nightly store's
    ``group`` as of ``at``; only read. Both are Icechunk repositories, told apart by their
    commits (``aquila:kind``); one with commits Aquila did not make is refused, as on disk. A
    storage failure (endpoint, credentials, a damaged repository) is one :class:`RunError`
    line (exit 1), never "no product"."""
    from zarr.errors import BaseZarrError

    from pipeline.products.transaction import _icechunk

    try:
        return _open_bucket(loc, at=at, group=group, chunks={} if lazy_chunks else None)
    except (_icechunk().IcechunkError, BaseZarrError, OSError) as exc:  # the storage failed
        raise RunError(f"could not read {loc}: {first_line(exc)}; check the bucket's name, "
                       "the S3 settings (AWS_ENDPOINT_URL, AWS_REGION, credentials) and that "
                       "the product is whole", reason="store_unreachable") from exc


def _open_bucket(loc: ObjectLocation, *, at: str | dt.datetime | None, group: str | None,
                 chunks: dict[str, int] | None) -> Source:
    from pipeline.products.bucket import RUN
    from pipeline.products.objectstore import icechunk_storage, s3_settings
    from pipeline.products.transaction import (
        MAIN,
        NIGHT,
        NightlyStore,
        _icechunk,
        main_history,
        not_ours,
    )

    ic = _icechunk()
    storage = icechunk_storage(loc, s3_settings())
    if not ic.Repository.exists(storage):
        raise ProductNotFound(f"no product at {loc}; give a store an 'aquila run' or 'aquila "
                              "nightly' published there (s3://bucket/prefix/mosaic.zarr)",
                              reason="product_missing")
    repo = ic.Repository.open(storage)
    commits = main_history(repo)
    foreign = not_ours(commits)
    if foreign:
        raise ProductNotFound(f"{loc} is an Icechunk repository with commits Aquila did not "
                              f"make ({foreign[0]}…); give a store an 'aquila run' or 'aquila "
                              "nightly' published there", reason="not_a_product")
    kinds = [meta.get("aquila:kind") for _, meta in commits]  # newest first
    if NIGHT in kinds:
        return _night_source(NightlyStore.open(Path(str(loc)), create=False), str(loc), at=at,
                             group=group, chunks=chunks)
    if not kinds or kinds[0] != RUN:
        raise ProductNotFound(f"{loc} holds no published product yet (a run started there has "
                              "not published); rerun it, then export", reason="product_missing")
    if at is not None or group is not None:
        raise InputError(f"{loc} is a run's product (one state, one product): --at and "
                         "--group are for nightly stores; drop them", reason="usage")
    session = repo.readonly_session(MAIN)
    return Source(_open_zarr(session.store, None, chunks), str(loc), str(session.snapshot_id))


def _open_nightly(store: Path, *, at: str | dt.datetime | None, group: str | None,
                  chunks: dict[str, int] | None) -> Source:
    from pipeline.products.transaction import NightlyStore

    problem = nightly_store_problem(store) if store.is_dir() and any(store.iterdir()) else (
        "is neither a Zarr product nor a nightly store")
    if problem is not None:  # a file, a foreign folder or repository: read nothing there
        raise ProductNotFound(f"{store} {problem}; give a store written by 'aquila run' "
                              "(e.g. out/demo/mosaic.zarr) or 'aquila nightly'",
                              reason="not_a_product")
    return _night_source(NightlyStore.open(store, create=False), str(store), at=at, group=group,
                         chunks=chunks)


def _night_source(nightly: Any, store: str, *, at: str | dt.datetime | None,
                  group: str | None, chunks: dict[str, int] | None) -> Source:
    """``group`` of a nightly store as of the night ``at`` names."""
    from pipeline.products.transaction import iter_groups

    snapshot = night_at(nightly, at)
    session = nightly.readonly(snapshot)
    groups = sorted(iter_groups(session))
    if group not in groups:
        given = "no --group" if group is None else f"--group {group}, which it does not hold"
        raise InputError(f"{store} is a nightly store of {len(groups)} products "
                         f"({', '.join(groups)}) and you gave {given}; pick one, e.g. "
                         "--group cube", reason="group_missing")
    return Source(_open_zarr(session.store, group, chunks), f"{store} ({group}, {snapshot})",
                  snapshot)


def night_at(nightly: Any, at: str | dt.datetime | None) -> str:
    """The snapshot of the published night ``at`` names: a snapshot or run id, or a date or
    time (the newest night committed then or before; a date means the end of that day, UTC).
    Why not Icechunk's ``as_of``: it stops at any commit on ``main``, a night's unpublished
    "prepare" commit included; only the nights are states a reader was ever shown."""
    nights = nightly.nights()  # newest first
    if not nights:
        raise ProductNotFound(f"{nightly.path} has no night published yet; run 'aquila "
                              "nightly' first", reason="product_missing")
    if at is None:
        return str(nights[0].snapshot)
    when = at if isinstance(at, dt.datetime) else _instant(at)
    if when is None:
        for n in nights:
            if at in (n.snapshot, n.run_id):
                return str(n.snapshot)
        raise InputError(f"{nightly.path} has no night {at!r}; give a snapshot or run id that "
                         f"'aquila history {nightly.path}' lists, or a date",
                         reason="night_missing")
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    for n in nights:
        if n.written_at <= when:
            return str(n.snapshot)
    raise InputError(f"{nightly.path} has no night published by {when.isoformat()} (the first "
                     f"is from {nights[-1].written_at.isoformat()}); give a later --at",
                     reason="night_missing")


def _instant(text: str) -> dt.datetime | None:
    """``2025-06-03`` → the end of that day; ``2025-06-03T10:00`` → that time; else None."""
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        try:
            return dt.datetime.fromisoformat(text)
        except ValueError:
            return None
    return dt.datetime.combine(day, dt.time.max)


# --------------------------------------------------------------------------- selection


def select_bands(src: Source, bands: Sequence[str] | None, fmt: Format) -> tuple[str, ...]:
    """The variables to export: ``bands``, or by default every variable (netCDF) or the
    workflow's bands (a GeoTIFF holds one dtype: lineage layers go in a file of their own)."""
    have = [str(v) for v in src.ds.data_vars]
    if bands:
        missing = [b for b in bands if b not in have]
        if missing:
            raise InputError(f"{src.name} has no variable {missing[0]!r}; it has "
                             f"{', '.join(have)}: give --bands from those",
                             reason="band_missing")
        names = tuple(dict.fromkeys(bands))
    elif fmt == "netcdf":
        names = tuple(have)
    else:
        workflow = src.ds.attrs.get("aquila:workflow") or {}
        wanted = workflow.get("bands") if isinstance(workflow, Mapping) else None
        names = tuple(b for b in (wanted or have) if b in have)
    if fmt in TIFF_FORMATS:
        _one_dtype(src, names)
    return names


def _one_dtype(src: Source, names: Sequence[str]) -> None:
    """A GeoTIFF has one data type and one nodata value for all its bands; exact values
    matter more than one file, so mixed variables are refused rather than converted."""
    kinds = {n: (str(src.ds[n].dtype), _nodata(src.ds[n])) for n in names}
    if len({k[0] for k in kinds.values()}) > 1:
        listed = ", ".join(f"{n} {k[0]}" for n, k in kinds.items())
        raise InputError(f"a GeoTIFF holds one data type and these differ ({listed}); "
                         "export each type separately with --bands", reason="mixed_dtypes")
    if len({repr(k[1]) for k in kinds.values()}) > 1:
        listed = ", ".join(f"{n} {k[1]}" for n, k in kinds.items())
        raise InputError(f"a GeoTIFF holds one nodata value and these differ ({listed}); "
                         "export them separately with --bands", reason="mixed_nodata")


def _nodata(var: Any) -> float | int | None:
    value = var.attrs.get("_FillValue", var.encoding.get("fill_value"))
    if value is None and var.name == "source":  # format: zarr2 keeps integer layers unfilled
        return -1  # and the lineage layer's "no observation" is -1 all the same
    return None if value is None else np.asarray(value).item()


def select_time(src: Source, time: int | str | dt.date | None,
                fmt: Format) -> tuple[Any, tuple[int, str] | None]:
    """The dataset to write and the cube slot chosen (index, ISO time): a GeoTIFF holds one
    slot of a cube; a netCDF holds all of them, or the one ``time`` names."""
    ds = src.ds
    if "time" not in ds.dims:
        if time is not None:
            raise InputError(f"{src.name} is a mosaic (no time axis): drop --time",
                             reason="usage")
        return ds, None
    times = [str(np.datetime_as_string(t, unit="s")) for t in ds["time"].values]
    if time is None:
        if fmt in TIFF_FORMATS:
            raise InputError(
                f"{src.name} is a cube of {len(times)} time slots and a GeoTIFF holds one: give "
                f"--time INDEX (0..{len(times) - 1}) or --time DATE (e.g. {times[0][:10]}), or "
                "export the whole cube with --format netcdf", reason="time_required")
        return ds, None
    index = slot_index(times, time, src.name)
    return ds.isel(time=[index] if fmt == "netcdf" else index), (index, times[index])


def slot_index(times: Sequence[str], time: int | str | dt.date, name: str) -> int:
    """A slot by index (negative counts from the end), date (the one slot that day) or time."""
    n = len(times)
    if isinstance(time, str) and time.lstrip("-").isdigit():
        time = int(time)
    if isinstance(time, int):
        if not -n <= time < n:
            raise InputError(f"{name} has {n} time slots (0..{n - 1}); --time {time} is not "
                             "one", reason="time_out_of_range")
        return time % n
    if isinstance(time, dt.datetime) and time.tzinfo is not None:
        time = time.astimezone(dt.UTC).replace(tzinfo=None)  # the slots' times are UTC
    text = time.isoformat() if isinstance(time, dt.date) else str(time)
    matches = [i for i, t in enumerate(times) if t.startswith(text[:19])]
    if len(matches) == 1:
        return matches[0]
    listed = ", ".join(f"{i}: {t}" for i, t in enumerate(times))
    what = "several" if matches else "no"
    raise InputError(f"{name} has {what} time slots at {text} ({listed}); give --time INDEX "
                     "or a time that names one slot", reason="time_out_of_range")


# --------------------------------------------------------------------------- the temporary file


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A temporary path beside ``out``; put at ``out`` when the block ends well, removed
    (with anything a library made beside it, e.g. GDAL's overview file) when it does not."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnwritable.from_os_error(exc, doing=f"making the folder of {out}") from exc
    stem = f".{out.name}.{os.getpid()}-{os.urandom(4).hex()}"
    tmp = out.with_name(stem + ".tmp")
    try:
        try:
            yield tmp
        except OSError as exc:
            raise StoreUnwritable.from_os_error(exc, doing=f"exporting to {out}") from exc
        _place(tmp, out)
    finally:
        for entry in os.listdir(out.parent):
            if entry.startswith(stem):  # our pid and random bytes: only this call made it
                (out.parent / entry).unlink(missing_ok=True)


def _place(tmp: Path, out: Path) -> None:
    """``tmp`` → ``out`` without replacing what appeared there meanwhile (a hard link fails on
    an existing name; where links are refused, a check then a rename)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    try:
        os.link(tmp, out)
    except FileExistsError:
        _refuse_existing(out)
    except OSError:
        _refuse_existing(out)
        os.replace(tmp, out)
