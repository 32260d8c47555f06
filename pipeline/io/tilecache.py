"""Decoded source tiles, kept per reader (one per worker process and run) so that a tile several
windows need is decoded once, not once per window.

Why our own cache and not GDAL's block cache: GDAL's GTiff driver decodes a window read straight
into the caller's buffer, without going through its block cache, so every window that touches a
tile decodes the whole tile again (measured with GDAL 3.10: 768 windows of 256 px over twelve
512 px-tiled deflate COGs cost 1.2 s, the same after the tiles had been read whole, and
``GDAL_CACHEMAX`` made no difference). Neighbouring output chunks and a chunk's parts
(:func:`pipeline.plan.chunks.parts`) all share source tiles, so at 512 px chunks the same tile
was decoded up to four times.

Here a window is served from whole tiles: the tiles it needs that are not cached are read with
tile-aligned windows (one decode each, all requested bands at once), kept least recently used
first out under a byte cap shared by the threads of the worker, and the window copied out of
them. Only tiled rasters whose tiles are small enough are served this way; a striped or
untiled file, or a window outside the raster, is read directly.

Keys name the run (``session``), the href and the band, so a worker that serves several runs
never hands one run a tile of a file another run saw.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

#: Tiles larger than this are read directly (a whole-image "tile" would defeat the cap).
MAX_TILE_PIXELS = 1024 * 1024

Key = tuple[str, str, int, int, int]  # (session, href, band index, tile row, tile col)
RawRead = Callable[[Sequence[int], tuple[int, int, int, int]], np.ndarray]


class TileCache:
    """Decoded tiles of one process, capped at ``budget`` bytes (least recently used out)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._tiles: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.decoded = 0

    def read(self, ds, session: str, href: str, indexes: Sequence[int],
             window: tuple[int, int, int, int], raw: RawRead) -> np.ndarray:
        """Bands ``indexes`` of ``window`` (row0, col0, height, width) as (b, h, w), from whole
        tiles; ``raw(indexes, window)`` reads a window from the file (GDAL)."""
        tile = _tile_shape(ds, indexes)
        row0, col0, height, width = window
        if (tile is None or self.budget <= 0 or row0 < 0 or col0 < 0 or height <= 0
                or width <= 0 or row0 + height > ds.height or col0 + width > ds.width):
            return raw(indexes, window)
        th, tw = tile
        rows = range(row0 // th, (row0 + height - 1) // th + 1)
        cols = range(col0 // tw, (col0 + width - 1) // tw + 1)
        out = np.empty((len(indexes), height, width), dtype=ds.dtypes[indexes[0] - 1])
        for tr in rows:
            for tc in cols:
                planes = self._tile(ds, session, href, indexes, tr, tc, th, tw, raw)
                y0, x0 = tr * th, tc * tw  # the tile's first pixel in the raster
                ys = slice(max(row0, y0), min(row0 + height, y0 + th))
                xs = slice(max(col0, x0), min(col0 + width, x0 + tw))
                for k, plane in enumerate(planes):
                    out[k, ys.start - row0:ys.stop - row0, xs.start - col0:xs.stop - col0] = \
                        plane[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        return out

    def _tile(self, ds, session, href, indexes, tr, tc, th, tw,
              raw: RawRead) -> Sequence[np.ndarray]:
        """The tile's planes, one per band of ``indexes`` (decoded now if not cached)."""
        keys = [(session, href, int(b), tr, tc) for b in indexes]
        with self._lock:
            found = [self._tiles.get(k) for k in keys]
            if all(f is not None for f in found):
                for k in keys:
                    self._tiles.move_to_end(k)
                self.hits += 1
                return found  # type: ignore[return-value]
        y0, x0 = tr * th, tc * tw
        h, w = min(th, ds.height - y0), min(tw, ds.width - x0)
        planes = raw(indexes, (y0, x0, h, w))  # outside the lock: decoding releases the GIL
        with self._lock:
            self.decoded += 1
            for k, plane in zip(keys, planes, strict=True):
                old = self._tiles.pop(k, None)
                if old is not None:
                    self._bytes -= old.nbytes
                self._tiles[k] = plane
                self._bytes += plane.nbytes
            while self._bytes > self.budget and self._tiles:
                _, dropped = self._tiles.popitem(last=False)
                self._bytes -= dropped.nbytes
        return list(planes)

    def forget(self, session: str, href: str) -> None:
        """Drop ``href``'s tiles (a failed read: a retry decodes afresh)."""
        with self._lock:
            for k in [k for k in self._tiles if k[0] == session and k[1] == href]:
                self._bytes -= self._tiles.pop(k).nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes


def _tile_shape(ds, indexes: Sequence[int]) -> tuple[int, int] | None:
    """(tile height, tile width) shared by the bands, or None to read directly: untiled or
    striped files, and tiles above :data:`MAX_TILE_PIXELS`."""
    try:
        shapes = {ds.block_shapes[i - 1] for i in indexes}
    except (IndexError, AttributeError):
        return None
    if len(shapes) != 1:
        return None
    (th, tw), = shapes
    if th <= 1 or tw >= ds.width and th >= ds.height or th * tw > MAX_TILE_PIXELS:
        return None
    return int(th), int(tw)
