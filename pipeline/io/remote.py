"""Remote GeoTIFFs and JPEG 2000s read by Python, so that every request goes only where the
policy allows.

GDAL's /vsicurl/ follows redirects wherever they point (GDAL 3.10 has no option to stop its
curl), so an asset that answers ``HEAD`` with 200 and ``GET`` with 302 would send a worker to
another host. Instead, a URL is opened through rasterio's ``opener=`` (a GDAL file system plugin
backed by Python): GDAL asks :class:`RemoteAsset` for bytes, and every range request is made by
:func:`pipeline.io.http.get_range`, checked by the policy, to a judged address, with redirects
refused (``href_not_allowed``). The first failure of a request is kept on the asset (GDAL only
sees a short read), so the reader classifies it exactly: status, refusal, or network.

Reads: GDAL's own block cache keeps decoded tiles; here small reads (the TIFF header, IFDs,
tile index entries) are served from :data:`BLOCK_BYTES` blocks fetched whole, at most
:data:`CACHED_BLOCKS` per open file. The tiles of a window, with the tiles after it along its
tile rows (read ahead, as /vsicurl/ does), are fetched before GDAL asks for them, one request per
run of neighbouring tiles (:meth:`RemoteAsset.prefetch`), and kept in a per-process store capped
at :data:`TILE_STORE_BYTES` (least recently used out); a tile no longer there is fetched alone
when GDAL asks for it. A JPEG 2000 (or a GeoTIFF whose tile index GDAL does not expose) has no
tiles to prefetch: GDAL's reads are then answered as they come, small ones from the cached
blocks, large ones by one request each.

A signed URL (:mod:`pipeline.io.signing`) is the asset's ``url``, the one that is requested; its
``href`` (unsigned) is what GDAL, the policy and every message see.
rasterio's multi-range callback is not used: an error raised there stays pending in the
interpreter and resurfaces in a later, unrelated call (measured).
"""

from __future__ import annotations

import contextvars
import http.client
import io
import itertools
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

from pipeline.errors import HrefNotAllowed
from pipeline.io.hrefs import HrefPolicy, raster_driver
from pipeline.io.http import Reply, get_range, refuse_redirect
from pipeline.io.retry import Failure, from_status
from pipeline.io.signing import redact

BLOCK_BYTES = 16 * 1024  # as /vsicurl/: a COG header in one request; tiles are read exactly
CACHED_BLOCKS = 16  # small-read blocks per open file: 256 KiB at most
READ_AHEAD_BYTES = 4 * 1024 * 1024  # tiles fetched past a window, along its tile rows
TILE_STORE_BYTES = 32 * 1024 * 1024  # fetched, not yet decoded tiles, per process


@dataclass(frozen=True)
class RequestSettings:
    """How a remote asset is asked for its bytes: the policy (None: unchecked) and timeout."""

    policy: HrefPolicy | None
    timeout: float = 30.0


class _TileStore:
    """Tiles fetched for GDAL's reads, per process (as GDAL's /vsicurl/ region cache), by
    (open file, offset); the least recently used go past :data:`TILE_STORE_BYTES`. Kept after
    GDAL took them: GTiff decodes part of a tile for a window inside it and does not keep it in
    its block cache, so the next window of the same tile asks for its bytes again (measured)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._tiles: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, serial: int, offset: int, data: bytes) -> None:
        with self._lock:
            old = self._tiles.pop((serial, offset), None)
            self._bytes += len(data) - (len(old) if old is not None else 0)
            self._tiles[(serial, offset)] = data
            while self._bytes > self.budget and self._tiles:
                self._bytes -= len(self._tiles.popitem(last=False)[1])

    def get(self, serial: int, offset: int) -> bytes | None:
        with self._lock:
            data = self._tiles.get((serial, offset))
            if data is not None:
                self._tiles.move_to_end((serial, offset))
            return data

    def has(self, serial: int, offset: int) -> bool:
        return (serial, offset) in self._tiles

    def drop(self, serial: int) -> None:
        with self._lock:
            for key in [k for k in self._tiles if k[0] == serial]:
                self._bytes -= len(self._tiles.pop(key))


_STORE = _TileStore(TILE_STORE_BYTES)
_SERIALS = itertools.count()


class RemoteAsset:
    """One URL, read by checked range requests; remembers the first failure it met.
    ``url``: what is requested (a signed URL; default the href itself), never shown."""

    def __init__(
        self,
        href: str,
        settings: RequestSettings,
        *,
        size: int | None = None,
        url: str | None = None,
    ):
        self.href = href
        self.url = url or href
        self.settings = settings
        self.size = size
        self.problem: Failure | HrefNotAllowed | None = None
        # a Ctrl-C (or exit) that arrived inside a GDAL callback, which cannot pass it on: GDAL
        # sees a failed read, and the caller raises it again (reraise_interrupt)
        self.interrupted: BaseException | None = None
        self.requests = 0
        self._serial = next(_SERIALS)
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        weakref.finalize(self, _STORE.drop, self._serial)

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset`` (fewer at the end of the file)."""
        size = self.total_size()
        n = min(n, size - offset) if n >= 0 else size - offset
        if n <= 0:
            return b""
        stored = _STORE.get(self._serial, offset)
        if stored is not None and len(stored) >= n:
            return stored[:n]
        if n >= BLOCK_BYTES:
            data = self._fetch(offset, offset + n - 1)
            _STORE.put(self._serial, offset, data)
            return data
        return self._read_blocks(offset, n, size)

    def prefetch(self, needed: list[tuple[int, int]], ahead: list[tuple[int, int]]) -> None:
        """Fetch the (offset, size) tiles a window read will ask for, with the ``ahead`` tiles
        that follow them (up to :data:`READ_AHEAD_BYTES`), one request per run of tiles at
        most :data:`BLOCK_BYTES` apart, so that GDAL's tile by tile reads are answered here (as
        /vsicurl/ merges and reads ahead). Nothing is asked if every needed tile is stored.
        Raises the request's failure."""
        missing = [t for t in needed if t[1] > 0 and not self._known(t[0])]
        if not missing:
            return
        extra: list[tuple[int, int]] = []
        budget = READ_AHEAD_BYTES
        for tile in ahead:
            if tile[1] <= 0 or self._known(tile[0]) or tile[1] > budget:
                continue
            extra.append(tile)
            budget -= tile[1]
        run: list[tuple[int, int]] = []
        for offset, size in sorted(set(missing + extra)):
            if run and offset - (run[-1][0] + run[-1][1]) > BLOCK_BYTES:
                self._fetch_run(run)
                run = []
            run.append((offset, size))
        if run:
            self._fetch_run(run)

    def total_size(self) -> int:
        """The file's size (bytes), asked with a one-byte range request if HEAD did not say."""
        if self.size is None:
            reply = self._request(0, 0)
            self.size = reply.length()
            if self.size is None:
                raise OSError(f"{self.href}: the server says neither Content-Range nor length")
        return self.size

    def note(self, problem: BaseException) -> None:
        """Keep the first failure (GDAL sees a short read; the reader sees this)."""
        if self.problem is not None:
            return
        if isinstance(problem, Failure | HrefNotAllowed):
            self.problem = problem
        else:  # the network: a timeout, a reset, a refused connection
            self.problem = Failure(True, "asset_unavailable", f"{self.href}: {problem}")

    def reraise_interrupt(self) -> None:
        """Raise again a KeyboardInterrupt or SystemExit that a GDAL callback swallowed: a
        Ctrl-C during a read is the run's interruption, never an unreadable asset."""
        stopped, self.interrupted = self.interrupted, None
        if stopped is not None:
            raise stopped

    def release(self) -> None:
        """Drop what is stored for this file (it was closed)."""
        _STORE.drop(self._serial)

    # ------------------------------------------------------------------ requests

    def _known(self, offset: int) -> bool:
        return _STORE.has(self._serial, offset)

    def _fetch_run(self, run: list[tuple[int, int]]) -> None:
        start = run[0][0]
        end = min(max(o + n for o, n in run), self.total_size()) - 1
        data = self._fetch(start, end)
        for offset, size in run:
            _STORE.put(self._serial, offset, data[offset - start : offset - start + size])

    def _read_blocks(self, offset: int, n: int, size: int) -> bytes:
        first, last = offset // BLOCK_BYTES, (offset + n - 1) // BLOCK_BYTES
        with self._lock:
            have = {b: self._blocks[b] for b in range(first, last + 1) if b in self._blocks}
        missing = [b for b in range(first, last + 1) if b not in have]
        if missing:
            start = missing[0] * BLOCK_BYTES
            data = self._fetch(start, min(size, (missing[-1] + 1) * BLOCK_BYTES) - 1)
            for b in range(missing[0], missing[-1] + 1):
                at = (b - missing[0]) * BLOCK_BYTES
                have[b] = data[at : at + BLOCK_BYTES]
            with self._lock:
                self._blocks.update({b: have[b] for b in missing})
                while len(self._blocks) > CACHED_BLOCKS:
                    self._blocks.popitem(last=False)
        joined = b"".join(have[b] for b in range(first, last + 1))
        skip = offset - first * BLOCK_BYTES
        return joined[skip : skip + n]

    def _fetch(self, start: int, end: int) -> bytes:
        data = self._request(start, end).body
        if len(data) < end - start + 1:
            raise Failure(True, "asset_unavailable", f"{self.href}: short read at {start}")
        return data

    def _request(self, start: int, end: int) -> Reply:
        self.requests += 1
        s = self.settings
        try:
            reply = get_range(self.url, start, end, policy=s.policy, timeout=s.timeout)
        except HrefNotAllowed as exc:
            raise HrefNotAllowed(redact(exc.message, self.url, self.href)) from None
        except (OSError, http.client.HTTPException) as exc:
            if self.url == self.href:
                raise
            raise OSError(redact(f"{type(exc).__name__}: {exc}", self.url, self.href)) from None
        if reply.redirect:
            raise refuse_redirect(self.href, reply)
        failure = from_status(reply.status, f"GET {self.href} bytes {start}-{end}")
        if failure is not None:
            raise failure
        return reply


class _Handle(io.RawIOBase):
    """A file object over a :class:`RemoteAsset` for GDAL. Never raises into GDAL (rasterio's
    plugin callbacks cannot pass an exception on): a failure is noted on the asset and the read
    comes back short."""

    def __init__(self, asset: RemoteAsset) -> None:
        super().__init__()
        self._asset = asset
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        else:
            try:
                self._pos = self._asset.total_size() + offset
            except _PROBLEMS as exc:
                self._asset.note(exc)
            except (KeyboardInterrupt, SystemExit) as exc:
                self._asset.interrupted = exc
        return self._pos

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._asset.read_at(self._pos, size)
        except _PROBLEMS as exc:
            self._asset.note(exc)
            return b""
        except (KeyboardInterrupt, SystemExit) as exc:  # GDAL cannot pass it on: kept, raised
            self._asset.interrupted = exc  # again by the caller (reraise_interrupt)
            return b""
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


_PROBLEMS = (Failure, HrefNotAllowed, OSError, http.client.HTTPException, ValueError)


class AssetOpener:
    """rasterio's ``opener`` for one URL (the file system interface it adapts): that URL is
    the only file; sidecars (``.ovr``, ``.msk``, ``.aux.xml``) do not exist, and nothing can be
    written or removed."""

    def __init__(self, asset: RemoteAsset) -> None:
        self.asset = asset

    def _is_asset(self, path: str) -> bool:
        return path == self.asset.href

    def open(self, path: str, mode: str = "rb", **kwargs) -> _Handle:
        if not self._is_asset(path):
            raise FileNotFoundError(path)
        if any(c in mode for c in "wa+"):
            raise PermissionError(f"{path} is read-only")
        return _Handle(self.asset)

    def isfile(self, path: str) -> bool:
        return self._is_asset(path)

    def isdir(self, path: str) -> bool:
        return False

    def ls(self, path: str) -> list[str]:
        return []

    def size(self, path: str) -> int:
        if not self._is_asset(path):
            raise FileNotFoundError(path)
        return self.asset.total_size()

    def modified(self, path: str):
        raise NotImplementedError  # rasterio then says 0

    def rm(self, path: str) -> None:
        raise PermissionError(f"{path} is read-only")


def open_remote(asset: RemoteAsset):
    """A rasterio dataset over ``asset``, with the one driver its suffix names (GTiff or
    JP2OpenJPEG, :func:`pipeline.io.hrefs.raster_driver`); raises RasterioIOError, with the
    request's own failure kept in ``asset.problem``."""
    import rasterio

    driver = raster_driver(asset.href.split("?")[0].split("#")[0])
    if driver is None:  # the policy refuses these first; never open one unchecked
        raise HrefNotAllowed(f"{asset.href} is not a GeoTIFF or JPEG 2000")
    share_opener_state()
    try:
        ds = rasterio.open(asset.href, driver=driver, opener=AssetOpener(asset))
    finally:
        asset.reraise_interrupt()
    _close_at_exit(ds)
    return ds


_OPEN: weakref.WeakSet = weakref.WeakSet()  # remote datasets not yet closed, per process
_AT_EXIT: list[bool] = []  # [True] once _close_all is registered in this process


def _close_at_exit(ds) -> None:
    """Close ``ds`` when the interpreter exits, if nothing closed it before. A dataset still
    open at finalisation (a worker's reader cache) is otherwise closed by GDAL after the Python
    file object behind it is gone: the worker segfaults on shutdown (measured: nanny logs
    'killed by signal 11' when a cluster that read URLs closes)."""
    if not _AT_EXIT:
        import atexit

        atexit.register(_close_all)
        _AT_EXIT.append(True)
    _OPEN.add(ds)


def _close_all() -> None:
    for ds in list(_OPEN):
        try:
            ds.close()
        except Exception:  # noqa: BLE001 - the process is exiting; one close must not stop the rest
            continue


# --------------------------------------------------------------------------- rasterio's state

_SHARED: dict[str, dict] = {"_OPENER_REGISTRY": {}, "_OPEN_FILE_EXIT_STACKS": {}}
_INSTALL = threading.Lock()
_installed = False


def share_opener_state() -> None:
    """Call before opening, reading or closing a remote dataset.

    rasterio 1.4 keeps its opener registry and its open-file stacks in ContextVars without
    defaults (rasterio issues #3438, #3636). A dask task runs in a copy of the worker's context,
    so a dataset opened by one task and read or closed by the next is not found there, and the
    dict that held its file object is freed under GDAL (measured: a read from a second context
    crashed on a dangling file object). Here both variables point at one dict per process: as
    the default of the variables (a close by the garbage collector, anywhere) and as the value
    in the current context (rasterio asks ``get({})`` when it registers)."""
    global _installed
    from rasterio import _vsiopener

    if not _installed:
        with _INSTALL:
            for name, shared in _SHARED.items():
                old = getattr(_vsiopener, name, None)
                if old is not None and not _installed:
                    shared.update(old.get({}))
                    setattr(_vsiopener, name, contextvars.ContextVar(old.name, default=shared))
            _installed = True
    for name, shared in _SHARED.items():
        var = getattr(_vsiopener, name, None)
        if var is not None:
            var.set(shared)
