"""Publish a product directory atomically, and only ever replace what Aquila itself wrote.

A run builds each product in a sibling directory it owns, ``.<name>.aquila-build-<run id>``,
and publishes it only once every chunk and attribute is written, by exchanging the two
directories in one ``renameat2(RENAME_EXCHANGE)``: a reader of ``<name>`` finds the old product
or the new one, never a half-written or missing one. The old product, now under the build name,
is then removed. A run that fails or is interrupted removes its own build and leaves the old
product as it was.

What Aquila may replace (:func:`product_problem`): nothing at the path, an empty directory, or a
directory whose root ``zarr.json`` carries Aquila's marker attribute ``aquila:product`` (written
when the store is created; products of earlier versions are recognised by ``aquila:run_id`` and
``aquila:workflow``) and which holds nothing but zarr nodes. A user's folder, a file, or a
symbolic link is refused untouched.

A reader that opened the old product's metadata just before the exchange and reads a chunk just
after it reads the new product's chunk (paths, not snapshots): nightly Icechunk stores, whose
sessions are snapshots, do not have that limit (README "Why Icechunk").

Why one module of ~440 lines: what may be replaced, the build, the swap and the recovery of
killed runs' builds are one protocol whose invariants (never touch what is not ours, keep the
last good product until the new one is complete) are checked against each other; apart, each
half would be unsafe to change.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import json
import os
import re
import shutil
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import StoreNotOurs
from pipeline.io.libc import libc_function

PRODUCT_MARKER = "aquila:product"  # root attribute of every store Aquila creates: its kind
BUILD_TAG = ".aquila-build-"  # .<name>.aquila-build-<run id>: a run's product being built
DISCARDED = "-discarded"  # .<name>.aquila-build-<run id>-discarded: one being removed
ASIDE_TAG = ".aquila-old-"  # .<name>.aquila-old-<run id>: the old product, fallback swap only
_MAX_ROOT_JSON = 256 * 2**20  # a product's root zarr.json (consolidated metadata) is far smaller

_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2  # linux/fs.h
_AT_FDCWD = -100


# --------------------------------------------------------------------------- is it ours?


def product_problem(path: Path) -> str | None:
    """Why a new product may not replace what is at ``path`` (None: nothing there, an empty
    directory, or a product Aquila wrote)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return f"cannot be a folder: {_first_file_above(path)} is a file"
    if stat.S_ISLNK(st.st_mode):
        return (
            f"is a symbolic link (to {os.readlink(path)}); a product is replaced by renaming, "
            "which would replace the link and not what it points to"
        )
    if not stat.S_ISDIR(st.st_mode):
        return "is a file, not a product folder"
    entries = sorted(os.listdir(path))
    if not entries:
        return None
    if not is_marked(root_attrs(path)):
        return f"is a folder Aquila did not write (it holds {_some(entries)})"
    foreign = [e for e in entries if e not in _ROOT_FILES and not _is_zarr_node(path / e)]
    if foreign:
        return f"is an Aquila product, but also holds files Aquila did not write ({_some(foreign)})"
    return None


def check_target(store: Path) -> None:
    """Raise :class:`StoreNotOurs` unless a new product may replace what is at ``store`` and
    its STAC sidecars ``<store>.stac.json`` and ``<store>.collection.json`` (nothing there, or
    sidecars Aquila wrote)."""
    problem = product_problem(store) or next(
        filter(None, (sidecar_problem(p) for p in _sidecars_of(store))), None)
    if problem is not None:
        raise StoreNotOurs(
            f"product store {store} {problem}. Aquila replaces only products it wrote and has "
            "changed nothing: move that away, or point the workflow's 'store:' at a new path"
        )


def sidecar_problem(path: Path) -> str | None:
    """Why the file at a product's sidecar path is not Aquila's to replace (None: nothing
    there, a STAC Item whose properties carry ``aquila:product``, or a STAC Collection that
    carries it at its top level)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None  # the store's own check names the file above
    if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_ROOT_JSON:
        return f"has {path.name} beside it, which is not a STAC sidecar Aquila wrote"
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        doc = None
    if not _is_our_sidecar(doc):
        return f"has {path.name} beside it, which is not a STAC sidecar Aquila wrote"
    return None


def _is_our_sidecar(doc: Any) -> bool:
    """A product Item (``aquila:product`` in its properties) or Collection (at its top)."""
    if not isinstance(doc, dict):
        return False
    if doc.get("type") == "Collection":
        return "aquila:product" in doc
    props = doc.get("properties")
    return isinstance(props, dict) and "aquila:product" in props


# a product's own files at its root: v3 metadata, or v2's group, attributes and consolidated
# metadata (``format: zarr2``)
_ROOT_FILES = frozenset({"zarr.json", ".zgroup", ".zattrs", ".zmetadata"})


def _small_json(meta: Path) -> Any:
    """A regular file's JSON (None: absent, not a regular file, too big, or not JSON)."""
    try:
        st = os.lstat(meta)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_ROOT_JSON:
            return None  # a FIFO would block, a link could point anywhere
        return json.loads(meta.read_bytes())
    except (OSError, ValueError):
        return None


def root_attrs(path: Path) -> Mapping[str, Any] | None:
    """The attributes of the zarr group at ``path`` (None: no readable zarr v3 or v2 group)."""
    doc = _small_json(path / "zarr.json")
    if isinstance(doc, dict):
        attrs = doc.get("attributes") if doc.get("node_type") == "group" else None
        return attrs if isinstance(attrs, dict) else None
    group = _small_json(path / ".zgroup")
    if not isinstance(group, dict) or group.get("zarr_format") != 2:
        return None
    attrs = _small_json(path / ".zattrs")
    return attrs if isinstance(attrs, dict) else None


def is_marked(attrs: Mapping[str, Any] | None) -> bool:
    """Attributes only Aquila writes: the marker, or (earlier versions) run id and workflow."""
    if not attrs:
        return False
    return PRODUCT_MARKER in attrs or ("aquila:run_id" in attrs and "aquila:workflow" in attrs)


def _is_zarr_node(path: Path) -> bool:
    """A real directory holding a ``zarr.json`` (v3) or ``.zarray``/``.zgroup`` (v2): an array
    or group of the product."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    for name in ("zarr.json", ".zarray", ".zgroup"):
        try:
            if stat.S_ISREG(os.lstat(path / name).st_mode):
                return True
        except OSError:
            continue
    return False


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _first_file_above(path: Path) -> Path:
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return path.parent


def check_nightly_store(path: Path, *, sidecars: bool = True) -> None:
    """Raise :class:`StoreNotOurs` unless ``path`` may hold a nightly store: nothing there, an
    empty folder, or an Icechunk repository whose commits are all Aquila's (or only the one a
    new repository starts with). Icechunk would otherwise write its files among someone
    else's, or commit into a repository another program keeps. ``sidecars``: also refuse a
    ``<store>.stac.json`` or ``<store>.collection.json`` beside it that Aquila did not write
    (a night replaces them)."""
    problem = nightly_store_problem(path) or (next(
        filter(None, (sidecar_problem(p) for p in _sidecars_of(path))), None) if sidecars else None)
    if problem is not None:
        raise StoreNotOurs(
            f"nightly store {path} {problem}. Aquila changed nothing there: give --store a new "
            "path, or the path of a store 'aquila nightly' made"
        )


def nightly_store_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used as a nightly store (None: it can)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return f"cannot be a folder: {_first_file_above(path)} is a file"
    if not stat.S_ISDIR(st.st_mode):
        return "is a file, not an Icechunk repository folder"
    if not any(os.scandir(path)):
        return None
    from pipeline.products.transaction import _icechunk, main_history, not_ours

    ic = _icechunk()
    storage = ic.local_filesystem_storage(str(path))
    if not ic.Repository.exists(storage):
        return f"is a folder that is not an Icechunk repository (it holds {_some(_names(path))})"
    foreign = not_ours(main_history(ic.Repository.open(storage)))
    if foreign:
        return f"is an Icechunk repository with commits Aquila did not make ({_some(foreign)})"
    return None


def _names(path: Path) -> list[str]:
    return sorted(os.listdir(path))


# --------------------------------------------------------------------------- build and swap


class Publication:
    """The build directories of one run, one per product store: made empty by :meth:`start`,
    swapped in by :meth:`publish`, removed by :meth:`discard` (also on leaving the ``with``
    block, whatever ends it) unless published. Hold the stores' locks throughout."""

    def __init__(self, stores: Sequence[Path], *, run_id: str) -> None:
        self.stores = tuple(stores)
        self.run_id = run_id
        self._made: list[Path] = []  # build directories this object created
        self.published: list[Path] = []  # stores swapped in so far

    def build_of(self, store: Path) -> Path:
        return store.with_name(f".{store.name}{BUILD_TAG}{self.run_id}")

    def start(self) -> None:
        """Create each build directory (empty; ``os.mkdir`` fails rather than reuse a path)."""
        for store in self.stores:
            store.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(self.build_of(store))
            self._made.append(self.build_of(store))

    def publish(self, sidecars: Mapping[Path, str]) -> list[str]:
        """Swap each build in for its store and put its sidecars (``sidecars``: store → the
        STAC Item's text; the Collection beside it is made from it) in place; returns notes on
        what could not be tidied after a swap (the product is published then). Every target is
        checked and every sidecar written and synced first, so a refusal or a full disk stops
        before the first swap. ``published`` lists the stores swapped so far (a failure
        part-way leaves the earlier ones new)."""
        for store in self.stores:
            check_target(store)  # again, under the lock: what we remove must be ours
        staged: dict[Path, list[tuple[Path, Path]]] = {}
        try:
            for store in self.stores:
                if sidecars.get(store) is not None:
                    staged[store] = []  # filled as staged: a failure removes what was
                    for path, text in _sidecar_texts(store, sidecars[store]).items():
                        staged[store].append((stage_text(path, text), path))
            notes = [self._swap_in(store, staged.pop(store, [])) for store in self.stores]
        finally:
            for pairs in staged.values():
                for tmp, _ in pairs:
                    tmp.unlink(missing_ok=True)  # our staging files (unique, O_EXCL)
        return [n for n in notes if n]

    def _swap_in(self, store: Path, staged: list[tuple[Path, Path]]) -> str | None:
        """``staged``: (staging file, sidecar path) in the order to put them in place."""
        build = self.build_of(store)
        try:
            # the old label goes before the old product: a crash from here until the new
            # sidecars are renamed in leaves a product without a sidecar (nothing to filter
            # on), never a product beside a lower label (check_target proved them Aquila's)
            for sidecar in reversed(_sidecars_of(store)):  # the Item (the label) first
                if os.path.lexists(sidecar):
                    # safe: check_target refused the run unless each sidecar path held
                    # nothing or a STAC sidecar Aquila wrote (sidecar_problem)
                    os.unlink(sidecar)
            replaced = _swap(build, store, aside=_aside_of(store, self.run_id))
        except BaseException:  # cleanup, then re-raised as is (KeyboardInterrupt too)
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)  # our staging files (see stage_text)
            raise
        self._made.remove(build)
        self.published.append(store)
        for tmp, sidecar in staged:  # the Collection, then the Item that carries the label
            os.replace(tmp, sidecar)
        _fsync_dir(store.parent)
        if replaced is None:
            return None
        try:
            remove_replaced(replaced)
        except OSError as exc:
            return f"published {store}; the product it replaced ({replaced}) stays: {exc}"
        return None

    def discard(self) -> None:
        """Remove this run's unpublished build directories."""
        for build in self._made:
            # a directory this object created with os.mkdir under a name carrying this run's
            # id, beside a store whose lock we hold: only this run has written into it. Renamed
            # away first, in one step: a chunk task still computing for this run (cancelled on
            # a shared cluster) then finds its build gone and writes nothing
            # (chunkio.require_roots), instead of recreating folders while they are removed
            gone = build.with_name(build.name + DISCARDED)
            try:  # RENAME_NOREPLACE: never onto a path that exists (os.rename would replace
                # an empty folder of that name, someone else's); then the build itself is
                # removed in place. Either way the removed folder is this run's build, renamed
                moved = _renameat2(build, gone, _RENAME_NOREPLACE)
            except OSError:  # EEXIST, or the build already gone: remove (at most) the build
                moved = False
            # never a user's store, folder or /: the path is the build (or the name it was just
            # moved to), and rmtree refuses a symlink put in its place (ignored, nothing removed)
            shutil.rmtree(gone if moved else build, ignore_errors=True)
        self._made.clear()

    def __enter__(self) -> Publication:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()


def _sidecar_of(store: Path) -> Path:
    from pipeline.products.stac import stac_path  # stac imports this module

    return stac_path(store)


def _sidecars_of(store: Path) -> tuple[Path, ...]:
    """Every STAC file beside ``store`` (Collection, Item)."""
    from pipeline.products.stac import sidecar_paths  # stac imports this module

    return sidecar_paths(store)


def _sidecar_texts(store: Path, item_text: str) -> dict[Path, str]:
    """Sidecar path → text for ``store`` from its Item's text (the Collection made from it)."""
    from pipeline.products.stac import sidecar_texts  # stac imports this module

    return sidecar_texts(store, item_text)


def stage_text(path: Path, text: str, *, mode: int = 0o644) -> Path:
    """Write ``text`` to a new, uniquely named file beside ``path``, synced; return it. Created
    with ``mode`` (less the umask: never more open than asked, even for a moment); removed again
    if writing fails, so no empty or partial temporary file is left behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(text.encode())
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:  # cleanup, then re-raised as is (KeyboardInterrupt too)
        os.close(fd)
        tmp.unlink(missing_ok=True)  # created just above with O_EXCL: ours
        raise
    os.close(fd)
    return tmp


def write_text_atomic(path: Path, text: str, *, mode: int = 0o644) -> Path:
    """Replace ``path`` by ``text`` in one rename (a reader sees the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = stage_text(path, text, mode=mode)
    try:
        os.replace(tmp, path)
    except BaseException:  # cleanup, then re-raised as is (KeyboardInterrupt too)
        tmp.unlink(missing_ok=True)  # our staging file (see stage_text)
        raise
    return path


def _aside_of(store: Path, run_id: str) -> Path:
    return store.with_name(f".{store.name}{ASIDE_TAG}{run_id}")


def _swap(build: Path, store: Path, *, aside: Path) -> Path | None:
    """Put ``build`` at ``store``; return where the replaced product now is (None: there was
    none). One atomic exchange where the kernel and file system allow it."""
    if not os.path.lexists(store):
        if not _renameat2(build, store, _RENAME_NOREPLACE):
            os.rename(build, store)  # a directory never replaces a non-empty one or a file
        return None
    if _renameat2(build, store, _RENAME_EXCHANGE):
        return build  # the old product, now under the build's name
    # No RENAME_EXCHANGE here (not Linux, or a file system without it): rename the old product
    # aside, then the build in. Between the two renames (microseconds) the store path is absent
    # and a reader opening it then fails; a crash there leaves the old product at ``aside``,
    # which the next run puts back (recover_stale).
    os.rename(store, aside)
    try:
        os.rename(build, store)
    except BaseException:  # cleanup, then re-raised as is (KeyboardInterrupt too)
        os.rename(aside, store)
        raise
    return aside


def remove_replaced(old: Path) -> None:
    """Remove a replaced product (or the empty directory it replaced), checked to be Aquila's
    again right here; anything else is left where it is."""
    if not os.path.lexists(old) or product_problem(old) is not None:
        return
    if not any(old.iterdir()):
        os.rmdir(old)  # rmdir removes only an empty directory: never anyone's data
    else:
        # product_problem just confirmed a real directory whose root zarr.json carries
        # Aquila's marker and which holds only zarr nodes: a product Aquila wrote
        shutil.rmtree(old)


def recover_stale(store: Path) -> list[str]:
    """Builds and set-aside products left beside ``store`` by killed runs (call holding the
    store's lock: no live run can own them). A set-aside product whose store is missing is put
    back; the rest is removed if it is Aquila's, else left and named. Returns report notes."""
    notes = []
    for sidecar in _sidecars_of(store):
        for staged in sorted(store.parent.glob(f".{glob.escape(sidecar.name)}.*-*.tmp")):
            # stage_text's own naming (.<sidecar>.<pid>-<hex>.tmp); under the store's lock no
            # live run is staging one, so it was left by a killed run
            ours = re.fullmatch(rf"\.{re.escape(sidecar.name)}\.\d+-[0-9a-f]{{8}}\.tmp",
                                staged.name)
            if ours and staged.is_file() and not staged.is_symlink():
                staged.unlink()
                notes.append(f"removed {staged.name}, left by a killed run")
    pattern = f".{glob.escape(store.name)}.aquila-*"
    for leftover in sorted(store.parent.glob(pattern)):
        if BUILD_TAG not in leftover.name and ASIDE_TAG not in leftover.name:
            continue
        if product_problem(leftover) is not None:
            notes.append(f"left {leftover}: not recognisably Aquila's; remove it by hand")
        elif ASIDE_TAG in leftover.name and not os.path.lexists(store):
            os.rename(leftover, store)
            notes.append(f"restored {store} from {leftover.name}, set aside by a killed run")
        else:
            remove_replaced(leftover)
            notes.append(f"removed {leftover.name}, left by a killed run")
    return notes


# --------------------------------------------------------------------------- renameat2
# Python's os module has no renameat2 (nor RENAME_EXCHANGE / RENAME_NOREPLACE), and no library
# this project depends on wraps it; libc's symbol is called through ctypes
# (pipeline/io/libc.py), and where it is
# missing (not Linux, old glibc) or the file system refuses the flag, the publish falls back to
# two renames (see publish()). ctypes here reaches libc's documented system call wrapper, not
# any library's internals.


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False where this system cannot (no such call, or the file
    system does not support ``flags``), OSError for a real failure."""
    fn = _libc_renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


_LIBC: list[Any] = []


def _libc_renameat2():
    if not _LIBC:  # (a test puts [None] here: a system without renameat2)
        _LIBC.append(libc_function("renameat2", (ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                                 ctypes.c_char_p, ctypes.c_uint), ctypes.c_int))
    return _LIBC[0]


def _fsync_dir(path: Path) -> None:
    """Make renames in ``path`` durable (best effort: some file systems refuse a directory
    fsync)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
