"""A chunk whose time-slot stack is too large to hold, computed in parts from a scratch file.

Median, percentile, medoid and blending need every observation of a pixel at once: a
(T, B, Y, X) float32 stack, which grows with the chunk size and the archive's depth (36 slots ×
4 bands × 2048² px is 2.4 GB; a deep archive at 1024 px the same). Reading the chunk again for
each part (:func:`pipeline.plan.chunks.parts`) bounds that memory but decodes every source tile
once per part it touches, and a deep archive touches each part with every scene: measured 18×
the time for 4× the slots. So the chunk is read once instead:

1. **slots**: each slot is read and merged over the chunk's read grid exactly as the whole chunk
   would be (one slot plane in memory), handed to the cube writer if there is one, and its
   pieces that hold data are appended to an anonymous scratch file in the worker's temporary
   folder, one contiguous block per (part, slot): the part's read grid (its halo included) of
   every band, then its quality-mask block where a quality asset masked something;
2. **parts**: each part's stack is read back (one ``preadv`` per slot with data there, slots
   without data stay NaN), composited by the same :func:`~pipeline.engine.compose.composite_method`,
   cropped and put into the chunk's mosaics, which are written once. Parts run on the worker's
   spare threads.

Memory: one slot plane (B × chunk² float32) plus ``threads`` part stacks of at most
``outputs.stack_budget``, plus the chunk's assembled mosaics. The scratch file holds the slots'
data (at most T × B × chunk² × 4 bytes, less where scenes do not cover a part); it is unlinked at
creation, so nothing is left behind by a crash, a kill or Ctrl-C, and a full temporary folder is
a :class:`~pipeline.errors.StoreUnwritable` naming the folder and the fixes. The page cache
usually keeps it in memory the kernel can reclaim, not in the worker's own.

Results are the whole chunk's, pixel for pixel (tests/test_parts.py).
"""

from __future__ import annotations

import contextvars
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import StoreUnwritable
from pipeline.plan.chunks import ChunkTask, Outputs

if TYPE_CHECKING:
    from pipeline.engine.chunk import ChunkOutput, Phases
    from pipeline.io.reader import RasterReader


def compute_in_parts(
    task: ChunkTask,
    pieces: Sequence[ChunkTask],
    outputs: Outputs,
    reader: RasterReader,
    phases: Phases,
    on_slot: Callable[[int, np.ndarray], None] | None = None,
) -> ChunkOutput:
    """The chunk's mosaics computed part by part from the slots read once (module docstring);
    each slot with data goes to ``on_slot(slot index, (B, Y, X) cropped to the chunk)``."""
    from pipeline.engine.chunk import ChunkOutput, _crop, _empty, _merge_slot

    nb, work, c = len(outputs.bands), task.grid_read, task.chunk
    need_qa = any(m.method == "best-pixel" for m in outputs.mosaics)
    plane = np.empty((nb, work.height, work.width), np.float32)
    qa = np.empty((work.height, work.width), bool) if need_qa else None
    crop = _crop(task)
    regions = [_region(p, task) for p in pieces]
    used: list[str] = []
    failures: list[tuple[str, str, str]] = []
    windows: dict = {}
    with tempfile.TemporaryFile(prefix="aquila-stack-") as scratch:
        blocks = _Blocks(scratch.fileno(), task)
        for k, slot_scenes in enumerate(task.slots):
            plane.fill(np.nan)
            if qa is not None:
                qa.fill(False)
            filled = _merge_slot(slot_scenes, plane, qa, work, outputs, reader, windows, used,
                                 failures, phases)
            if filled and on_slot is not None:
                with phases("write"):
                    on_slot(slot_scenes.slot, plane[(slice(None), *crop)])
            with phases("write"):
                for i, (ys, xs) in enumerate(regions):
                    if filled:
                        block = plane[:, ys, xs]
                        if np.isfinite(block).any():
                            blocks.put(("v", i, k), block)
                    if qa is not None and qa[ys, xs].any():
                        blocks.put(("q", i, k), qa[ys, xs])
        mosaics = [_empty(m, nb, c) for m in outputs.mosaics]

        def one(i: int) -> tuple[int, tuple[dict[str, np.ndarray], ...], Phases]:
            from pipeline.engine.chunk import Phases, _mosaics

            own = Phases()  # Phases nest per thread; merged below
            piece, (ys, xs) = pieces[i], regions[i]
            h, w = ys.stop - ys.start, xs.stop - xs.start
            with own("read"):
                stack = np.full((len(task.slots), nb, h, w), np.nan, np.float32)
                qa_stack = np.zeros((len(task.slots), h, w), bool) if need_qa else None
                filled = False
                for k in range(len(task.slots)):
                    filled |= blocks.get(("v", i, k), stack[k])
                    if qa_stack is not None:
                        blocks.get(("q", i, k), qa_stack[k])
            with own("composite"):
                out = _mosaics(piece, outputs, stack, qa_stack, [], _crop(piece), filled)
            return i, out, own

        threads = min(_spare_threads(), len(pieces))
        with ThreadPoolExecutor(threads, thread_name_prefix="aquila-part") as pool:
            # kernels (numba, nogil) and reads run outside the GIL; results are taken in
            # order, so at most `threads` part stacks are alive at once
            done = pool.map(lambda i: contextvars.copy_context().run(one, i), range(len(pieces))) \
                if threads > 1 else map(one, range(len(pieces)))
            for i, part, own in done:
                phases.add(own)
                p = pieces[i].chunk
                at = (slice(p.y0 - c.y0, p.y0 - c.y0 + p.height),
                      slice(p.x0 - c.x0, p.x0 - c.x0 + p.width))
                with phases("composite"):
                    for whole, values in zip(mosaics, part, strict=True):
                        for layer, array in values.items():
                            whole[layer][(..., *at)] = array
    return ChunkOutput(c, (), tuple(mosaics), tuple(used), tuple(failures))


def _region(piece: ChunkTask, task: ChunkTask) -> tuple[slice, slice]:
    """The part's read grid (its halo included) within the task's read grid."""
    w, g = piece.grid_read, task.grid_read
    return (slice(w.y0 - g.y0, w.y0 - g.y0 + w.height),
            slice(w.x0 - g.x0, w.x0 - g.x0 + w.width))


class _Blocks:
    """Contiguous blocks appended to an anonymous scratch file and read back by key."""

    def __init__(self, fd: int, task: ChunkTask) -> None:
        self.fd, self.task = fd, task
        self.at: dict[tuple[str, int, int], tuple[int, int]] = {}  # key -> (offset, bytes)
        self.end = 0

    def put(self, key: tuple[str, int, int], array: np.ndarray) -> None:
        data = np.ascontiguousarray(array)
        try:
            written = os.pwrite(self.fd, data.view(np.uint8).reshape(-1), self.end)  # type: ignore[arg-type]
        except OSError as exc:
            raise self._refused(exc) from None
        if written != data.nbytes:
            raise self._refused(OSError(28, "short write"))
        self.at[key] = (self.end, data.nbytes)
        self.end += data.nbytes

    def get(self, key: tuple[str, int, int], into: np.ndarray) -> bool:
        """Fill ``into`` (contiguous) with the block; False, untouched, if there is none."""
        where = self.at.get(key)
        if where is None:
            return False
        offset, size = where
        got = os.preadv(self.fd, [into.view(np.uint8).reshape(-1)], offset)  # type: ignore[list-item]
        if got != size:
            raise OSError(5, f"scratch file: read {got} of {size} bytes at {offset}")
        return True

    def _refused(self, exc: OSError) -> StoreUnwritable:
        folder = tempfile.gettempdir()
        return StoreUnwritable(
            f"chunk {self.task.chunk.name}: the temporary folder {folder} refused its time-slot "
            f"stack after {self.end / 2**20:,.0f} MiB ({exc.strerror or exc}): free space there, "
            "point TMPDIR at a larger local disk for the workers, or use a smaller grid.chunk"
        )


def _spare_threads() -> int:
    """Threads of this Dask worker not running another task, counting the caller's (1 outside
    a worker): a chunk alone on a worker (one big chunk, the last of a run) uses them for its
    parts; a busy worker computes parts one after another."""
    worker_mod = sys.modules.get("distributed.worker")
    if worker_mod is None:
        return 1
    try:
        worker = worker_mod.get_worker()
    except ValueError:  # not inside a task
        return 1
    return max(1, worker.state.nthreads - len(worker.state.executing) + 1)
