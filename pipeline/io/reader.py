"""Read a window of an asset with rasterio. No dask here.

:class:`RasterReader` keeps datasets open per thread so that the tasks of one worker share GDAL's
(process-wide, capped) block cache: a source tile that several output chunks need is decoded once
per worker, not once per chunk. Errors become :class:`ReadError` naming the href; they are never
turned into nodata.

Retries (:mod:`pipeline.io.retry`): a transient failure (HTTP 5xx, a timeout, a short read from an
intact file) is retried with capped exponential backoff and jitter; a permanent one (404, 403, a
corrupt or truncated file) is raised after one attempt. For URLs the preflight ``HEAD`` is part
of every attempt, so most faults are judged before GDAL opens anything; GDAL's own retries are
off, and its cached answer for a failed URL is dropped before the next attempt. A final failure
is remembered for the rest of the run (``ReaderSettings.session``), so other chunks of the same
scene do not try again.
"""

from __future__ import annotations

import ctypes
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import rasterio
from rasterio.env import set_gdal_config
from rasterio.windows import Window

from pipeline.errors import HrefNotAllowed, ReadError, ReadRefused
from pipeline.io.hrefs import HrefPolicy, preflight
from pipeline.io.retry import (
    Exhausted,
    Failure,
    RetryPolicy,
    call_with_retries,
    classify_gdal,
    from_status,
    gdal_text,
)

GDAL_OPTIONS = {
    # never list a COG's folder to find sidecar files: one request per open instead of many
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff",
    "GDAL_HTTP_MAX_RETRY": "0",  # retries are ours (pipeline.io.retry), counted, not GDAL's
    "VSI_CACHE": "FALSE",
}


@dataclass(frozen=True)
class ReaderSettings:
    """Per-process reader settings, resolved once in the driver."""

    gdal_cache_mb: int = 256
    max_open: int = 512  # open datasets per thread; closing one drops its cached blocks
    policy: HrefPolicy | None = None  # checked again before a URL is opened (see preflight)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    http_timeout_s: float = 30.0  # per HTTP request (preflight HEAD and GDAL's requests)
    session: str = ""  # the run id: one run's open files and failures are not another's


def configure_gdal(settings: ReaderSettings) -> None:
    """Set GDAL's process-wide options (cache cap, no directory listing, GeoTIFF only).

    Process-wide on purpose: the block cache is shared by all threads of a worker. Must run
    before the first read in the process for the cache cap to take effect.
    """
    set_gdal_config("GDAL_CACHEMAX", int(settings.gdal_cache_mb))  # MB
    for key, value in GDAL_OPTIONS.items():
        set_gdal_config(key, value)
    timeout = str(max(1, math.ceil(settings.http_timeout_s)))  # GDAL takes whole seconds
    set_gdal_config("GDAL_HTTP_TIMEOUT", timeout)
    set_gdal_config("GDAL_HTTP_CONNECTTIMEOUT", timeout)


class RasterReader:
    """Open-once, read-many access to rasters; safe to share between threads of one process."""

    def __init__(self, settings: ReaderSettings | None = None) -> None:
        self.settings = settings or ReaderSettings()
        self._local = threading.local()
        self._failed: dict[str, ReadError] = {}  # href -> its final failure in this run
        self._rng = random.Random()
        self._sleep = time.sleep
        configure_gdal(self.settings)

    def _cache(self) -> OrderedDict:
        cache = getattr(self._local, "datasets", None)
        if cache is None:
            cache = self._local.datasets = OrderedDict()
        return cache

    # ------------------------------------------------------------------ public

    def dataset(self, href: str):
        """The open dataset for ``href`` (opened with retries); raises :class:`ReadError`."""
        return self._with_retries(href, lambda: self._open(href))

    def read(
        self, href: str, indexes: Sequence[int], window: tuple[int, int, int, int]
    ) -> np.ndarray:
        """Read bands ``indexes`` (1-based) in window (row0, col0, height, width) → (b, h, w)."""
        row0, col0, height, width = window

        def attempt() -> np.ndarray:
            ds = self._open(href)
            try:
                return ds.read(list(indexes), window=Window(col0, row0, width, height))
            except (rasterio.errors.RasterioIOError, rasterio.errors.RasterioError) as exc:
                failure = self._judge_read(href, ds, exc)
                self._forget(href)  # a retry opens afresh
                raise Failure(
                    failure.transient, failure.reason, f"window {window}: {failure.message}"
                ) from None

        return self._with_retries(href, attempt)

    def failed(self) -> dict[str, ReadError]:
        """The final failure of every href that failed in this run (this process)."""
        return dict(self._failed)

    def take_retries(self) -> dict[str, int]:
        """Retries made by this thread since the last call, by href (then reset)."""
        counts = getattr(self._local, "retries", None) or {}
        self._local.retries = {}
        return counts

    def close(self) -> None:
        cache = self._cache()
        while cache:
            cache.popitem()[1].close()

    # ------------------------------------------------------------------ attempts

    def _with_retries(self, href: str, attempt):
        known = self._failed.get(href)
        if known is not None:
            raise known
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
            self._failed[href] = err
            raise err from None
        return value

    def _count_retry(self, href: str) -> None:
        counts = getattr(self._local, "retries", None)
        if counts is None:
            counts = self._local.retries = {}
        counts[href] = counts.get(href, 0) + 1

    def _open(self, href: str):
        cache = self._cache()
        ds = cache.get(href)
        if ds is not None:
            cache.move_to_end(href)
            return ds
        remote = "://" in href
        if self.settings.policy is not None or remote:
            self._preflight(href)
        try:
            # GTiff only: VRT and other drivers can point anywhere (COGs are read by GTiff)
            ds = rasterio.open(href, driver="GTiff")
        except rasterio.errors.RasterioIOError as exc:
            clear_gdal_url_cache(href)  # GDAL remembers a failed URL; the next try must ask
            raise classify_gdal(gdal_text(exc), remote=remote) from None
        cache[href] = ds
        while len(cache) > self.settings.max_open:
            _, old = cache.popitem(last=False)
            old.close()
        return ds

    def _preflight(self, href: str):
        try:
            answer = preflight(href, self.settings.policy, timeout=self.settings.http_timeout_s)
        except HrefNotAllowed as exc:
            raise ReadRefused(href, exc.message) from None
        if answer.error is not None:
            raise Failure(True, "asset_unavailable", answer.error)
        if answer.status is not None:
            failure = from_status(answer.status, f"HEAD {href}")
            if failure is not None:
                raise failure
        return answer

    def _judge_read(self, href: str, ds, exc: BaseException) -> Failure:
        """A failed window read: transient (retry) or permanent. A short read from a URL is
        transient only if the server is healthy and the file is as long as its own tiles say;
        a file shorter than that is truncated (permanent)."""
        remote = "://" in href
        failure = classify_gdal(gdal_text(exc), remote=remote)
        if not (remote and failure.transient):
            return failure
        answer = self._preflight(href)  # raises the server's failure, if it has one now
        need = tiles_end(ds)
        if answer.length is not None and need is not None and need > answer.length:
            return Failure(
                False,
                "asset_corrupt",
                f"{href} is {answer.length} bytes but its tile index needs {need}: a truncated "
                "file (re-upload it)",
            )
        return failure

    def _forget(self, href: str) -> None:
        ds = self._cache().pop(href, None)
        if ds is not None:
            ds.close()
        clear_gdal_url_cache(href)


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


@lru_cache(maxsize=1)
def _libgdal():
    """The GDAL library rasterio loaded into this process (None where it cannot be found)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if line.strip() else ""
                if path.rsplit("/", 1)[-1].startswith("libgdal"):
                    lib = ctypes.CDLL(path)
                    lib.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
                    lib.VSICurlPartialClearCache.restype = None
                    return lib
    except (OSError, AttributeError):
        return None
    return None


def clear_gdal_url_cache(href: str) -> None:
    """Drop what GDAL's /vsicurl/ remembers about ``href`` (its size, its last error), so that a
    retry really asks the server again. A no-op for local files."""
    if "://" not in href:
        return
    lib = _libgdal()
    if lib is not None:
        lib.VSICurlPartialClearCache(f"/vsicurl/{href}".encode())
