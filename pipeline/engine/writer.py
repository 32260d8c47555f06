"""The one writer of a chunk task, for runs and nights alike.

Cube slots arrive in increasing order as the task finishes them; they are gathered into blocks
of ``block`` time slots (the cube's time chunk: 1 for a run's cube, the store's ``time_block``
for a nightly one) and each block is written whole as soon as it is complete or a later one
starts: at most one block (block × bands × chunk² float32) is held. Blocks the plan says must
be written but that got no slot (``blocks``) are written as NaN, which equals the fill value, so
zarr deletes their chunk. The mosaic layers come last, in the same batched call
(:func:`pipeline.products.chunkio.write_all`: whole chunks encoded once, no read-modify-write).
Every write covers whole store chunks, so running a task twice writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from pipeline.engine.parts import spare_threads
from pipeline.products.chunkio import Write, write_all

Region = tuple[slice, slice]


class ChunkWriter:
    def __init__(
        self,
        cube: Sequence[Any],
        region: Region,
        *,
        block: int = 1,
        n_slots: int | None = None,
        blocks: Iterable[int] = (),
        overviews: Callable[..., list[Write]] | None = None,
        idle_threads: bool = False,
    ) -> None:
        """``cube``: the cube's band arrays (none: no cube); ``region``: the chunk's (y, x)
        slices; ``n_slots``: the cube's time length (default: the arrays'); ``overviews``: the
        writes of the overview levels that go with some full-resolution writes
        (:class:`pipeline.products.overviews.Pyramid`), written in the same call.
        ``idle_threads``: downsample and encode on the worker's idle threads too (local Zarr
        stores only: :func:`pipeline.engine.chunk.process_chunk`; the Icechunk paths, nightly
        and forks, write from the task's thread alone, as before)."""
        self.cube, self.region, self.block = list(cube), region, block
        self.n_slots = n_slots if n_slots is not None else (
            int(self.cube[0].shape[0]) if self.cube else 0)
        self.todo = set(blocks)
        self.current: tuple[int, np.ndarray] | None = None
        self.cube_slots = 0  # slots put
        self.mosaics = 0  # mosaic writes (one per mosaic product)
        self.overviews = overviews
        self.idle_threads = idle_threads

    @property
    def pixels(self) -> int:
        """Pixels written per band: every cube slot put and every mosaic."""
        h, w = (s.stop - s.start for s in self.region)
        return (self.cube_slots + self.mosaics) * h * w

    def __call__(self, slot: int, values: np.ndarray) -> None:
        """Put one finished cube slot (``values``: bands × chunk)."""
        b = slot // self.block
        if self.current is None or self.current[0] != b:
            if self.current is not None:  # the previous block is complete
                self._emit(self._held(), cube=True)
            self.current = (b, self._buffer(b))
        self.current[1][:, slot - b * self.block] = values
        self.cube_slots += 1
        if slot == min((b + 1) * self.block, self.n_slots) - 1:  # its last slot: complete
            self._emit(self._held(), cube=True)

    def finish(self, mosaic_writes: Sequence[Write] = (), *, mosaics: int = 0) -> None:
        """Write the block in hand, every block still to write (NaN) and the layers of
        ``mosaics`` mosaics (``(array, region, values)``), in one call."""
        writes = self._held()
        for b in sorted(self.todo):
            writes += self._writes(b, self._buffer(b))
        self.todo.clear()
        self.mosaics += mosaics
        self._emit([*writes, *mosaic_writes], cube=bool(writes))

    def _buffer(self, b: int) -> np.ndarray:
        t = min(self.block, self.n_slots - b * self.block)
        h, w = (s.stop - s.start for s in self.region)
        return np.full((len(self.cube), t, h, w), np.nan, np.float32)

    def _held(self) -> list[Write]:
        if self.current is None:
            return []
        b, data = self.current
        self.todo.discard(b)
        self.current = None
        return self._writes(b, data)

    def _writes(self, b: int, data: np.ndarray) -> list[Write]:
        t0 = b * self.block
        sel = (slice(t0, t0 + data.shape[1]), *self.region)
        return [(array, sel, data[k]) for k, array in enumerate(self.cube)]

    def _emit(self, writes: list[Write], *, cube: bool) -> None:
        # With idle_threads, the worker's idle threads downsample and encode too: a run's last
        # task, or a run of one big chunk, uses every core of its worker (2048 px, 11 layers
        # with 3 overview levels each: 0.5 s on one thread)
        threads = spare_threads() if writes and self.idle_threads else 1
        if self.overviews is not None and writes:
            writes = [*writes, *self.overviews(writes, threads=threads)]
        write_all(writes, threads=threads)  # (``cube``: the call writes cube blocks; tests
        # pause there)
