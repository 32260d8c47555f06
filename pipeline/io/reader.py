"""Read a window of an asset with rasterio. No dask here.

:class:`RasterReader` keeps datasets open per thread so that the tasks of one worker share GDAL's
(process-wide, capped) block cache: a source tile that several output chunks need is decoded once
per worker, not once per chunk. Errors become :class:`ReadError` naming the href; they are never
turned into nodata.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.env import set_gdal_config
from rasterio.windows import Window

from pipeline.errors import HrefNotAllowed, ReadError, ReadRefused
from pipeline.io.hrefs import HrefPolicy, preflight

GDAL_OPTIONS = {
    # never list a COG's folder to find sidecar files: one request per open instead of many
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff",
    "GDAL_HTTP_MAX_RETRY": "0",  # retries are ours (issue: nightly runs), not GDAL's
    "VSI_CACHE": "FALSE",
}


@dataclass(frozen=True)
class ReaderSettings:
    """Per-process reader settings, resolved once in the driver."""

    gdal_cache_mb: int = 256
    max_open: int = 512  # open datasets per thread; closing one drops its cached blocks
    policy: HrefPolicy | None = None  # checked again before a URL is opened (see preflight)


def configure_gdal(settings: ReaderSettings) -> None:
    """Set GDAL's process-wide options (cache cap, no directory listing, GeoTIFF only).

    Process-wide on purpose: the block cache is shared by all threads of a worker. Must run
    before the first read in the process for the cache cap to take effect.
    """
    set_gdal_config("GDAL_CACHEMAX", int(settings.gdal_cache_mb))  # MB
    for key, value in GDAL_OPTIONS.items():
        set_gdal_config(key, value)


class RasterReader:
    """Open-once, read-many access to rasters; safe to share between threads of one process."""

    def __init__(self, settings: ReaderSettings | None = None) -> None:
        self.settings = settings or ReaderSettings()
        self._local = threading.local()
        configure_gdal(self.settings)

    def _cache(self) -> OrderedDict:
        cache = getattr(self._local, "datasets", None)
        if cache is None:
            cache = self._local.datasets = OrderedDict()
        return cache

    def dataset(self, href: str):
        cache = self._cache()
        ds = cache.get(href)
        if ds is not None:
            cache.move_to_end(href)
            return ds
        if self.settings.policy is not None or "://" in href:
            try:
                preflight(href, self.settings.policy)
            except HrefNotAllowed as exc:
                raise ReadRefused(href, exc.message) from None
        try:
            # GTiff only: VRT and other drivers can point anywhere (COGs are read by GTiff)
            ds = rasterio.open(href, driver="GTiff")
        except rasterio.errors.RasterioIOError as exc:
            raise ReadError(href, str(exc)) from None
        cache[href] = ds
        while len(cache) > self.settings.max_open:
            _, old = cache.popitem(last=False)
            old.close()
        return ds

    def read(
        self, href: str, indexes: Sequence[int], window: tuple[int, int, int, int]
    ) -> np.ndarray:
        """Read bands ``indexes`` (1-based) in window (row0, col0, height, width) → (b, h, w)."""
        row0, col0, height, width = window
        ds = self.dataset(href)
        try:
            return ds.read(list(indexes), window=Window(col0, row0, width, height))
        except (rasterio.errors.RasterioIOError, rasterio.errors.RasterioError) as exc:
            raise ReadError(href, f"window {window}: {exc}") from None

    def close(self) -> None:
        cache = self._cache()
        while cache:
            cache.popitem()[1].close()
