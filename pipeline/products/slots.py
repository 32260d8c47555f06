"""Read committed cube slots of one chunk back, fast: what a nightly mosaic refresh reads most.

A nightly chunk task recomposes its mosaics from every slot touching the chunk, and most of those
slots come back from the committed cube rather than from their scenes. Measured choices that make
that cheap:

* the nightly cube stores ``block`` slots per store chunk (``(block, chunk, chunk)``), so a
  chunk's history costs one read per band per block instead of one per slot;
* through zarr-python each chunk read costs ~1.1 ms of per-chunk machinery for a 200 × 200
  float32 chunk whose lz4 decode takes ~0.05 ms (80 chunks: 87 ms through ``Array.__getitem__``,
  25 ms fetched concurrently from the store and decoded with numcodecs). So when the arrays have
  the layout this project writes (:func:`pipeline.products.chunkio.plain`), chunks are fetched from
  the store and decoded directly; any other layout falls back to zarr's own reads (identical
  values, tested);
* when told the slots it will be asked for, every block they need (all bands) is fetched in one
  concurrent store call, and each is decoded only when first needed (one call instead of one per
  block: each call is a hand-off to zarr's event-loop thread, costly on a busy machine).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

import pipeline.products.chunkio as chunkio


class CubeSlots:
    """The committed values of cube slots on one chunk, read a block at a time. Slots are
    expected in increasing order (a block is dropped once a later one is read)."""

    def __init__(
        self,
        arrays: Sequence,
        region: tuple[slice, slice],
        chunk_index: tuple[int, int],
        slots: Iterable[int] = (),
    ) -> None:
        self.arrays = list(arrays)  # one per band, in band order
        self.region, self.chunk_index = region, chunk_index
        self.block = int(self.arrays[0].chunks[0])
        self.length = int(self.arrays[0].shape[0])
        self.fast = all(  # an absent chunk is then NaN, as zarr would read it
            chunkio.plain(a)
            and a.ndim == 3
            and a.dtype == np.float32
            and np.isnan(a.metadata.fill_value)
            for a in self.arrays
        )
        self._cached: tuple[int, list[np.ndarray | None]] | None = None
        self._wanted = sorted({s // self.block for s in slots})  # blocks to fetch at once
        self._fetched: dict[int, list] | None = None

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
        ys, xs = self.region
        crop = (slice(0, t1 - t0), slice(0, ys.stop - ys.start), slice(0, xs.stop - xs.start))
        raws = self._raw(b)
        return [
            None if (d := chunkio.decode(a, raw)) is None else d[crop]
            for a, raw in zip(self.arrays, raws, strict=True)
        ]

    def _raw(self, b: int) -> list:
        """The stored bytes of block ``b``, per band (None: absent, the fill value)."""
        if self._fetched is None and b in self._wanted:
            blocks = self._wanted
            got = chunkio.fetch(self.arrays[0].store, [k for w in blocks for k in self._keys(w)])
            n = len(self.arrays)
            self._fetched = {w: got[i * n : (i + 1) * n] for i, w in enumerate(blocks)}
        if self._fetched is not None and b in self._fetched:
            return self._fetched.pop(b)
        return chunkio.fetch(self.arrays[0].store, self._keys(b))

    def _keys(self, b: int) -> list[str]:
        iy, ix = self.chunk_index
        return [chunkio.key(a, (b, iy, ix)) for a in self.arrays]
