"""Read committed cube slots of one chunk back, fast: what a nightly mosaic refresh reads most.

A nightly chunk task recomposes its mosaics from every slot touching the chunk, and most of those
slots come back from the committed cube rather than from their scenes. Two measured choices make
that cheap:

* the nightly cube stores ``block`` slots per store chunk (``(block, chunk, chunk)``), so a
  chunk's history costs one read per band per block instead of one per slot;
* through zarr-python each chunk read costs ~1.1 ms of per-chunk machinery for a 200 × 200
  float32 chunk whose lz4 decode takes ~0.05 ms (80 chunks: 87 ms through ``Array.__getitem__``,
  the same through ``get_orthogonal_selection``, 25 ms fetched concurrently from the store and
  decoded with numcodecs). So when the arrays have exactly the layout this project writes
  (little-endian float32, Blosc, default ``c/`` chunk keys, NaN fill), the chunks of a block are
  fetched with one concurrent store call and decoded directly; any other layout falls back to
  zarr's own reads (identical values, tested).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np


class CubeSlots:
    """The committed values of cube slots on one chunk, read a block at a time. Slots are
    expected in increasing order (a block is dropped once a later one is read)."""

    def __init__(
        self, arrays: Sequence, region: tuple[slice, slice], chunk_index: tuple[int, int]
    ) -> None:
        self.arrays = list(arrays)  # one per band, in band order
        self.region, self.chunk_index = region, chunk_index
        self.block = int(self.arrays[0].chunks[0])
        self.length = int(self.arrays[0].shape[0])
        self.fast = all(_plain_layout(a) for a in self.arrays)
        self._cached: tuple[int, list[np.ndarray | None]] | None = None

    def get(self, slot: int) -> np.ndarray:
        """(bands, y, x) float32 of committed slot ``slot`` (NaN where it has no data)."""
        out = np.empty((len(self.arrays), *(r.stop - r.start for r in self.region)), np.float32)
        self.fill(slot, out)
        return out

    def fill(self, slot: int, plane: np.ndarray) -> None:
        """Copy committed slot ``slot`` into ``plane`` (bands, y, x) (NaN where no data)."""
        b = slot // self.block
        if self._cached is None or self._cached[0] != b:
            self._cached = (b, self._read_block(b))
        k = slot - b * self.block
        for band, data in enumerate(self._cached[1]):
            if data is None:
                plane[band] = np.nan
            else:
                plane[band] = data[k]

    def _read_block(self, b: int) -> list[np.ndarray | None]:
        """Per band: (slots of block b, y, x), or None where the block has no data."""
        t0, t1 = b * self.block, min((b + 1) * self.block, self.length)
        if not self.fast:
            return [np.asarray(a[(slice(t0, t1), *self.region)]) for a in self.arrays]
        return _read_raw(self.arrays, b, t1 - t0, self.region, self.chunk_index)


def _plain_layout(array) -> bool:
    from zarr.codecs import BloscCodec, BytesCodec

    meta = array.metadata
    try:
        codecs = meta.codecs
        encoding = meta.chunk_key_encoding
    except AttributeError:
        return False
    return (
        len(codecs) == 2
        and isinstance(codecs[0], BytesCodec)
        and str(getattr(codecs[0].endian, "value", codecs[0].endian)) == "little"
        and isinstance(codecs[1], BloscCodec)
        and getattr(encoding, "name", "") == "default"
        and getattr(encoding, "separator", "") == "/"
        and array.dtype == np.float32
        and np.isnan(array.fill_value)
        and len(array.chunks) == 3
    )


def _read_raw(arrays, b: int, n: int, region, chunk_index) -> list[np.ndarray | None]:
    import numcodecs
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    iy, ix = chunk_index
    ys, xs = region
    ny, nx = ys.stop - ys.start, xs.stop - xs.start
    store = arrays[0].store
    keys = [f"{a.path}/c/{b}/{iy}/{ix}" for a in arrays]

    async def fetch():
        proto = default_buffer_prototype()
        return await asyncio.gather(*(store.get(k, prototype=proto) for k in keys))

    raws = sync(fetch())
    shape = tuple(int(v) for v in arrays[0].chunks)
    blosc = numcodecs.Blosc()
    return [
        None
        if raw is None  # absent: the fill value (NaN)
        else np.frombuffer(blosc.decode(raw.to_bytes()), dtype="<f4").reshape(shape)[:n, :ny, :nx]
        for raw in raws
    ]
