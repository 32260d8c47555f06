"""Read a window of an asset with rasterio. No dask here.

:class:`RasterReader` keeps datasets open per thread so that the tasks of one worker share GDAL's
(process-wide, capped) block cache: a source tile that several output chunks need is decoded once
per worker, not once per chunk. Errors become :class:`ReadError` naming the href; they are never
turned into nodata.

URLs are not read by GDAL's /vsicurl/ (its curl follows redirects anywhere) but through
:mod:`pipeline.io.remote`: every request -- the ``HEAD`` before an open, each range ``GET``, each
retry -- is checked by the href policy, goes to a judged address, and a redirect is refused
(:class:`ReadRefused`, ``href_not_allowed``).

Retries (:mod:`pipeline.io.retry`): a transient failure (HTTP 5xx, a timeout, a short read from an
intact file) is retried with capped exponential backoff and jitter; a permanent one (404, 403, a
corrupt or truncated file) is raised after one attempt. For URLs the ``HEAD`` is part of every
attempt, so most faults are judged before GDAL opens anything, and a request's own failure is
kept on the asset (GDAL sees only a short read). A final failure is remembered for the rest of
the run (``ReaderSettings.session``), so other chunks of the same scene do not try again; but
not a corrupt file's (``asset_corrupt``): a bad tile spoils only the windows that reach it, so
each window then fails or reads on its own, and a chunk's pixels do not depend on which chunks
this process happened to read before it (one try each: a corrupt file is never retried).

Formats: GeoTIFF (COG) with GDAL's GTiff driver and JPEG 2000 with JP2OpenJPEG, chosen by the
link's suffix (:func:`pipeline.io.hrefs.raster_driver`); no other driver ever opens an asset.
Object storage (``s3://``...) is read by GDAL's ``/vsis3/`` and kin
(:mod:`pipeline.io.objectstore`), the href checked by the policy first. A ``signer`` (the band
source's, :mod:`pipeline.io.signing`) signs an http(s) href just before it is opened, again
at each open, and once more when a read is refused with 401/403 (an expired signature).
"""

from __future__ import annotations

import http.client
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any, TypeVar

import numpy as np
import rasterio
from rasterio.env import set_gdal_config
from rasterio.windows import Window

from pipeline.errors import HrefNotAllowed, ReadError, ReadRefused, window_note
from pipeline.io.hrefs import is_object_href, raster_driver
from pipeline.io.http import head, refuse_redirect
from pipeline.io.objectstore import NON_CACHED, judge_object_error, object_env, open_object
from pipeline.io.remote import RemoteAsset, RequestSettings, open_remote, share_opener_state
from pipeline.io.retry import (
    PER_WINDOW,
    Exhausted,
    Failure,
    call_with_retries,
    classify_gdal,
    from_status,
    gdal_text,
)
from pipeline.io.settings import ReaderSettings
from pipeline.io.signing import redact, sign
from pipeline.io.tilecache import TileCache

T = TypeVar("T")

GDAL_OPTIONS = {
    # never list a COG's folder to find sidecar files: one request per open instead of many
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.jp2",
    "GDAL_HTTP_MAX_RETRY": "0",  # retries are ours (pipeline.io.retry), counted, not GDAL's
    "VSI_CACHE": "FALSE",
    # URLs are read through pipeline.io.remote, never by GDAL's curl (which follows redirects
    # anywhere): /vsicurl/ and the handlers built on it open no file at all in this process;
    # an object-storage read allows its one object in a thread-local rasterio.Env
    # (pipeline.io.objectstore)
    "CPL_VSIL_CURL_ALLOWED_FILENAME": "/vsicurl/(none: Aquila reads URLs itself)",
    "CPL_VSIL_CURL_NON_CACHED": NON_CACHED,  # no stale size or "missing" kept between opens
}


def configure_gdal(settings: ReaderSettings) -> None:
    """Set GDAL's options for this process, through rasterio's public ``set_gdal_config``.

    Process-wide, and not a per-read ``rasterio.Env``, because none of them can be per read:
    GDAL has one raster block cache per process, shared by every thread of a worker, whose cap
    (``GDAL_CACHEMAX``) is read when the cache is first used; the others (:data:`GDAL_OPTIONS`)
    are the same for every run of this version, so a worker serving several runs sees no
    difference. (HTTP timeouts are not GDAL's: URLs are read by :mod:`pipeline.io.remote`,
    which applies ``http_timeout_s`` itself.) Must run before the first read in the process.
    """
    set_gdal_config("GDAL_CACHEMAX", int(settings.gdal_cache_mb))  # MB
    for key, value in GDAL_OPTIONS.items():
        set_gdal_config(key, value)


class OpenFiles:
    """The local datasets of a process not in use at the moment, shared by its threads: a
    thread takes one for a read and gives it back after (a GDAL dataset is used by one thread
    at a time, never by two at once). A file read by two threads at once is open twice for that
    while: one dataset per file is kept idle, the other closed as it is given back (each costs
    ~0.31 MiB). At most ``cap`` are kept: once full, a dataset given back for another file is
    closed (the files already kept stay: chunk after chunk reads the same files in the same
    order, which an LRU would turn into no reuse at all once they outnumber ``cap``)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._idle: dict[str, Any] = {}  # href -> its idle dataset, in the order kept

    def take(self, href: str):
        """The idle dataset of ``href``, now this thread's, or None."""
        with self._lock:
            return self._idle.pop(href, None)

    def give(self, href: str, ds) -> None:
        """``ds`` (of ``href``) is idle again: kept unless ``href`` has an idle dataset already
        or ``cap`` are kept (then closed)."""
        with self._lock:
            keep = href not in self._idle and len(self._idle) < self.cap
            if keep:
                self._idle[href] = ds
        if not keep:
            _close_all([ds])

    def drop(self, href: str) -> None:
        """Close the idle dataset of ``href`` (it failed: the next read opens it afresh)."""
        with self._lock:
            ds = self._idle.pop(href, None)
        _close_all([] if ds is None else [ds])

    def clear(self) -> None:
        """Close every idle dataset."""
        with self._lock:
            handles = list(self._idle.values())
            self._idle.clear()
        _close_all(handles)

    def hrefs(self) -> list[str]:
        """The hrefs with an idle dataset, in the order they were kept (for tests)."""
        with self._lock:
            return list(self._idle)


def _close_all(handles: Sequence) -> None:
    for ds in handles:
        share_opener_state()
        ds.close()


def _is_local(href: str) -> bool:
    return not is_object_href(href) and "://" not in href


class RasterReader:
    """Open-once, read-many access to rasters; safe to share between threads of one process.
    Remote datasets are kept open per thread; local files in one :class:`OpenFiles` per reader,
    shared by the threads."""

    def __init__(self, settings: ReaderSettings | None = None) -> None:
        self.settings = settings or ReaderSettings()
        self._local = threading.local()
        self._failed: dict[str, ReadError] = {}  # href -> its final failure in this run
        self._rng = random.Random()
        self._sleep = time.sleep
        self._tiles = TileCache(self.settings.tile_cache_mb * 2**20)
        self._files = OpenFiles(self.settings.max_open_local)
        configure_gdal(self.settings)

    def _cache(self) -> OrderedDict:
        cache = getattr(self._local, "datasets", None)
        if cache is None:
            cache = self._local.datasets = OrderedDict()
        return cache

    # ------------------------------------------------------------------ public

    def dataset(self, href: str, *, signer: str | None = None):
        """The open dataset for ``href`` (opened with retries); raises :class:`ReadError`.
        ``signer``: the band source's signer name (``package.module:callable``), or None. A
        local file's dataset is back among the idle ones when this returns: look at its
        metadata, do not read from it (:meth:`read` does, safely between threads)."""
        ds = self._with_retries(href, lambda: self._open(href, signer), signer=signer)
        if _is_local(href):
            self._files.give(href, ds)
        return ds

    def read(
        self,
        href: str,
        indexes: Sequence[int],
        window: tuple[int, int, int, int],
        *,
        signer: str | None = None,
    ) -> np.ndarray:
        """Read bands ``indexes`` (1-based) in window (row0, col0, height, width) → (b, h, w).
        ``signer``: the band source's signer name; None reads ``href`` as it is."""
        row0, col0, height, width = window

        local = _is_local(href)

        def attempt() -> np.ndarray:
            ds = self._open(href, signer)  # a local file's: this thread's until given back
            asset = None if local else self._assets().get(href)
            done = False
            try:
                if asset is not None:
                    share_opener_state()
                    self._prefetch(asset, ds, indexes, window)

                def raw(bands: Sequence[int], win: tuple[int, int, int, int]) -> np.ndarray:
                    r0, c0, h, w = win
                    with object_env(href) if is_object_href(href) else nullcontext():
                        return ds.read(list(bands), window=Window(c0, r0, w, h))

                try:
                    data = self._tiles.read(ds, self.settings.session, href, indexes, window,
                                            raw)
                finally:
                    if asset is not None:
                        asset.reraise_interrupt()  # a Ctrl-C inside GDAL's read callback
                done = True
                return data
            except (rasterio.errors.RasterioIOError, rasterio.errors.RasterioError) as exc:
                failure = self._judge_read(href, ds, exc)  # raises ReadRefused for a refusal
                raise Failure(
                    failure.transient, failure.reason, window_note(window) + failure.message
                ) from None
            finally:
                if local and done:
                    self._files.give(href, ds)
                elif local:  # a retry opens afresh
                    _close_all([ds])
                    self._files.drop(href)
                    self._tiles.forget(self.settings.session, href)
                elif not done:
                    self._forget(href)  # a retry opens afresh
                    self._tiles.forget(self.settings.session, href)

        return self._with_retries(href, attempt, signer=signer)

    def failed(self) -> dict[str, ReadError]:
        """The final failure of every href that failed in this run (this process)."""
        return dict(self._failed)

    def take_retries(self) -> dict[str, int]:
        """Retries made by this thread since the last call, by href (then reset)."""
        counts = getattr(self._local, "retries", None) or {}
        self._local.retries = {}
        return counts

    def release_idle(self) -> None:
        """Close the local files kept open between reads (another run started in this
        process: this one's have likely ended; a read after this opens them again)."""
        self._files.clear()

    def close(self) -> None:
        """Close this thread's open remote datasets and the idle local ones."""
        cache = self._cache()
        while cache:
            self._forget(next(iter(cache)))
        self._files.clear()

    # ------------------------------------------------------------------ attempts

    def _with_retries(self, href: str, attempt: Callable[[], T], *, signer: str | None = None) -> T:
        known = self._failed.get(href)
        if known is not None:
            raise known
        if signer is not None:
            attempt = self._resigning(href, attempt)
        try:
            value, _ = call_with_retries(
                attempt,
                policy=self.settings.retry,
                rng=self._rng,
                sleep=self._sleep,
                on_retry=lambda failure, tries, wait: self._count_retry(href),
            )
        except Exhausted as exc:
            f = exc.failure
            kind = "transient, retries exhausted" if f.transient else "permanent"
            err = ReadError(
                href,
                f"{f.message} ({kind}; {exc.tries} attempt(s))",
                reason=f.reason,
                attempts=exc.tries,
            )
            if f.reason not in PER_WINDOW:  # window by window (module docstring)
                self._failed[href] = err
            raise err from None
        except ReadRefused as err:  # never retried; other chunks of the scene do not ask again
            self._failed[href] = err
            raise
        return value

    def _resigning(self, href: str, attempt: Callable[[], T]) -> Callable[[], T]:
        """``attempt``, made once more at once (with a fresh signature: the asset is opened
        afresh, so signed again) when the server refuses the signed URL (401/403)."""
        resigned = False

        def again() -> T:
            nonlocal resigned
            try:
                return attempt()
            except Failure as failure:
                if failure.reason != "asset_forbidden" or resigned:
                    raise
                resigned = True
                self._forget(href)
                return attempt()

        return again

    def _count_retry(self, href: str) -> None:
        counts = getattr(self._local, "retries", None)
        if counts is None:
            counts = self._local.retries = {}
        counts[href] = counts.get(href, 0) + 1

    def _open(self, href: str, signer: str | None = None):
        """The dataset of ``href``: a local file's taken from the idle ones (or opened; the
        caller gives it back), a remote one's from this thread's cache (or opened into it)."""
        if _is_local(href):
            return self._files.take(href) or self._open_local(href)
        cache = self._cache()
        ds = cache.get(href)
        if ds is not None:
            cache.move_to_end(href)
            return ds
        ds = self._open_object(href) if is_object_href(href) else self._open_remote(href, signer)
        cache[href] = ds
        while len(cache) > self.settings.max_open:
            self._forget(next(iter(cache)))  # the least recently used
        return ds

    def _open_local(self, href: str):
        path = href
        if self.settings.policy is not None:
            try:
                path = self.settings.policy.check(href)  # canonical: symlinks resolved, checked
            except HrefNotAllowed as exc:
                raise ReadRefused(href, exc.message) from None
        driver = raster_driver(path)
        if driver is None:
            raise ReadRefused(href, f"{href} is not a GeoTIFF or JPEG 2000; no other driver")
        try:
            # GTiff or JP2OpenJPEG only, by suffix: VRT and other drivers can point anywhere;
            # the path that was checked is the path opened
            return rasterio.open(path, driver=driver)
        except rasterio.errors.RasterioIOError as exc:
            raise classify_gdal(gdal_text(exc), remote=False) from None

    def _open_object(self, href: str):
        """``s3://`` (and kin) through GDAL's /vsis3/, the href checked first: a refusal
        makes no request at all."""
        try:
            checked = self._checked(href)
            return open_object(checked)
        except HrefNotAllowed as exc:
            raise ReadRefused(href, exc.message) from None
        except ValueError as exc:  # not an object link GDAL could be given
            raise ReadRefused(href, str(exc)) from None
        except rasterio.errors.RasterioIOError as exc:
            raise judge_object_error(href, exc) from None

    def _checked(self, href: str) -> str:
        """``href`` in the policy's canonical form (HrefNotAllowed if refused; as it is when
        there is no policy)."""
        policy = self.settings.policy
        return href if policy is None else policy.check(href)

    def _open_remote(self, href: str, signer: str | None = None):
        url = self._signed(href, signer)
        answer = self._head(href, url)
        asset = RemoteAsset(href, self._requests(), size=answer.length(), url=url)
        try:
            ds = open_remote(asset)
        except HrefNotAllowed as exc:
            raise ReadRefused(href, exc.message) from None
        except rasterio.errors.RasterioIOError as exc:
            raise self._problem(asset) or classify_gdal(gdal_text(exc), remote=True) from None
        self._assets()[href] = asset
        return ds

    def _signed(self, href: str, signer: str | None) -> str:
        """The URL to request for ``href``: itself, or signed by ``signer`` after the policy
        judged the unsigned href (the signature may change the query only)."""
        if signer is None:
            return href
        try:
            self._checked(href)
            return sign(href, signer)
        except HrefNotAllowed as exc:
            raise ReadRefused(href, exc.message) from None

    def _requests(self) -> RequestSettings:
        return RequestSettings(self.settings.policy, self.settings.http_timeout_s)

    def _assets(self) -> dict[str, RemoteAsset]:
        assets = getattr(self._local, "assets", None)
        if assets is None:
            assets = self._local.assets = {}
        return assets

    def _head(self, href: str, url: str | None = None):
        """The checked ``HEAD`` of every attempt: a refusal, or the server's failure, before
        GDAL opens anything. ``url``: what to ask (a signed URL, never shown), default href."""
        url = url or href
        try:
            answer = head(url, policy=self.settings.policy, timeout=self.settings.http_timeout_s)
        except HrefNotAllowed as exc:
            raise ReadRefused(href, redact(exc.message, url, href)) from None
        except (OSError, http.client.HTTPException) as exc:
            text = redact(f"{type(exc).__name__}: {exc}", url, href)
            raise Failure(True, "asset_unavailable", f"HEAD {href}: {text}") from None
        if answer.redirect:
            raise ReadRefused(href, refuse_redirect(href, answer).message)
        failure = from_status(answer.status, f"HEAD {href}")
        if failure is not None:
            raise failure
        return answer

    def _prefetch(self, asset: RemoteAsset, ds, indexes: Sequence[int], window) -> None:
        """Fetch the tiles of ``window`` in as few checked requests as /vsicurl/ would."""
        try:
            asset.prefetch(*window_tiles(ds, indexes, window))
        except HrefNotAllowed as exc:
            raise ReadRefused(asset.href, exc.message) from None
        except (OSError, http.client.HTTPException) as exc:
            raise Failure(True, "asset_unavailable", f"{asset.href}: {exc}") from None

    def _problem(self, asset: RemoteAsset | None) -> Failure | None:
        """What a request of ``asset`` met (a refusal is raised), or None."""
        if asset is None:
            return None
        if isinstance(asset.problem, HrefNotAllowed):
            raise ReadRefused(asset.href, asset.problem.message)
        return asset.problem

    def _judge_read(self, href: str, ds, exc: BaseException) -> Failure:
        """A failed window read: transient (retry) or permanent. A short read from a URL is
        transient only if the server is healthy and the file is as long as its own tiles say;
        a file shorter than that is truncated (permanent)."""
        if is_object_href(href):
            return judge_object_error(href, exc)
        remote = "://" in href
        asset = self._assets().get(href)
        failure = self._problem(asset) if remote else None
        if failure is None:
            failure = classify_gdal(gdal_text(exc), remote=remote)
        if not (remote and failure.transient):
            return failure
        url = asset.url if asset is not None else None
        length = self._head(href, url).length()  # raises the server's failure, if any now
        need = tiles_end(ds)
        if length is not None and need is not None and need > length:
            return Failure(
                False,
                "asset_corrupt",
                f"{href} is {length} bytes but its tile index needs {need}: a truncated "
                "file (re-upload it)",
            )
        return failure

    def _forget(self, href: str) -> None:
        ds = self._cache().pop(href, None)
        if _is_local(href):
            self._files.drop(href)
        asset = self._assets().pop(href, None)
        if asset is not None:
            asset.release()
        if ds is not None:
            share_opener_state()
            ds.close()


def window_tiles(ds, indexes: Sequence[int], window: tuple[int, int, int, int]):
    """(needed, ahead): (offset, size) in the file of every tile or strip that reading
    ``window`` (row0, col0, height, width) of bands ``indexes`` at full resolution needs, and of
    the tiles after them along the same tile rows (read ahead). ([], []) if the file says none."""
    row0, col0, height, width = window
    try:
        bh, bw = ds.block_shapes[0]
        rows = range(max(row0, 0) // bh, math.ceil(min(row0 + height, ds.height) / bh))
        last = math.ceil(min(col0 + width, ds.width) / bw)
        cols = range(max(col0, 0) // bw, last)
        later = range(last, math.ceil(ds.width / bw))
        bands = [1] if ds.profile.get("interleave") == "pixel" else list(indexes)
        needed = [_tile(ds, b, r, c) for b in bands for r in rows for c in cols]
        ahead = [_tile(ds, b, r, c) for b in bands for r in rows for c in later]
        return [t for t in needed if t], [t for t in ahead if t]
    except (rasterio.errors.RasterioError, ValueError, TypeError):
        return [], []


def _tile(ds, bidx: int, row: int, col: int) -> tuple[int, int] | None:
    offset = ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=bidx)
    size = ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=bidx)
    return (int(offset), int(size)) if offset and size else None


def tiles_end(ds) -> int | None:
    """The byte just past the last tile or strip of a GeoTIFF (from its own tile index)."""
    try:
        bh, bw = ds.block_shapes[0]
        end = 0
        for bidx in range(1, ds.count + 1):
            for r in range(math.ceil(ds.height / bh)):
                for c in range(math.ceil(ds.width / bw)):
                    offset = ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=bidx)
                    size = ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=bidx)
                    if offset and size:
                        end = max(end, int(offset) + int(size))
            if ds.profile.get("interleave") == "pixel":
                break  # one tile holds every band
        return end or None
    except (rasterio.errors.RasterioError, ValueError, TypeError):
        return None
