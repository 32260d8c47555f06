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
   every band, then its quality-mask block where a quality asset masked something. A chunk
   larger than ``outputs.read_side`` (and no cube to write) is read in regions of whole parts
   (:func:`read_regions`, at most ``read_side`` tall and twice that wide), one region after
   another. Without a cube, the worker's spare threads read each region together, each thread
   every n-th slot with a slot plane of its own: a source tile is then decoded once per region,
   where side-by-side regions each decode the tiles on their shared edge. A single 2048 px chunk
   on a worker of two threads is read in two halves, both threads on each (the benchmark's job,
   measured against four 1024 px squares side by side: read phase 5.1-6.2 -> 3.3-4.5 task-s in
   alternating runs; in-process on two threads 6.8-8.6 -> 6.3-7.2 s);
2. **parts**: each part's stack is read back (one ``preadv`` per slot with data there, slots
   without data stay NaN), composited by the same :func:`~pipeline.engine.compose.composite_method`,
   cropped and put into the chunk's mosaics, which are written once. Parts run on the worker's
   spare threads.

Memory: one slot plane per thread reading (B × region float32; the region at most
``read_side`` × 2 ``read_side`` unless a cube is written) plus ``threads`` part stacks of at most
``outputs.stack_budget``, plus the chunk's assembled mosaics. The scratch file holds the slots'
data (at most T × B × chunk² × 4 bytes, less where scenes do not cover a part); it is unlinked at
creation, so nothing is left behind by a crash, a kill or Ctrl-C, and a full temporary folder is
a :class:`~pipeline.errors.StoreUnwritable` naming the folder and the fixes. The page cache
usually keeps it in memory the kernel can reclaim, not in the worker's own.

Results are the whole chunk's, pixel for pixel (tests/test_parts.py).
"""

from __future__ import annotations

import contextvars
import ctypes
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from pipeline.engine.heap import release_free_memory
from pipeline.engine.memo import ChunkMemo
from pipeline.errors import StoreUnwritable
from pipeline.io.libc import libc_function
from pipeline.plan.chunks import ChunkTask, Outputs
from pipeline.plan.grid import ChunkGrid

T = TypeVar("T")

if TYPE_CHECKING:
    from pipeline.engine.chunk import ChunkOutput
    from pipeline.engine.jobs import Phases
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
    from pipeline.engine.chunk import ChunkOutput, _empty, _merged, _merged_failures

    nb, c = len(outputs.bands), task.chunk
    need_qa = any(m.method == "best-pixel" for m in outputs.mosaics)
    if on_slot is None:  # a chunk in regions: each read by the spare threads, slots shared out
        regions = read_regions(task, pieces, outputs)
        # (a chunk read whole keeps to its own thread: at the start of a run a second task may
        # not have taken the other thread yet, and sharing then oversubscribes the cores;
        # measured at 1024 px: +1 s)
        n = max(1, min(spare_threads(), len(task.slots))) if len(regions) > 1 else 1
        jobs = [(region, range(j, len(task.slots), n)) for region in regions for j in range(n)]
    else:  # the cube writer takes the slots in order, over the whole chunk
        jobs = [(_whole(task, pieces), range(len(task.slots)))]
    with tempfile.TemporaryFile(prefix="aquila-stack-") as scratch:
        blocks = _Blocks(scratch.fileno(), task)

        def read(g: int) -> tuple[list[str], list[tuple[str, str, str]], Phases]:
            region, slots = jobs[g]
            return _read_region(task, pieces, region, slots, outputs, reader, blocks, need_qa,
                                on_slot)

        useds, fails = [], []
        for used_g, failures_g, own in _on_spare_threads(read, len(jobs), "aquila-region"):
            phases.add(own)
            useds.append(used_g)
            fails.append(failures_g)
        used = useds[0] if len(jobs) == 1 else list(_merged(task, *useds))
        failures = fails[0] if len(jobs) == 1 else list(_merged_failures(task, *fails))
        mosaics = [_empty(m, nb, c) for m in outputs.mosaics]

        def one(i: int) -> tuple[int, tuple[dict[str, np.ndarray], ...], Phases]:
            from pipeline.engine.chunk import _crop, _mosaics
            from pipeline.engine.jobs import Phases

            own = Phases()  # Phases nest per thread; merged below
            piece = pieces[i]
            h, w = piece.grid_read.height, piece.grid_read.width
            with own("read"):
                # written once: a slot's block, or NaN / False where the slot has none here
                stack = np.empty((len(task.slots), nb, h, w), np.float32)
                qa_stack = np.empty((len(task.slots), h, w), bool) if need_qa else None
                filled = False
                for k in range(len(task.slots)):
                    if blocks.get(("v", i, k), stack[k]):
                        filled = True
                    else:
                        stack[k].fill(np.nan)
                    if qa_stack is not None and not blocks.get(("q", i, k), qa_stack[k]):
                        qa_stack[k].fill(False)
            with own("composite"):
                out = _mosaics(piece, outputs, stack, qa_stack, [], _crop(piece), filled)
            return i, out, own

        for i, part, own in _on_spare_threads(one, len(pieces), "aquila-part"):
            phases.add(own)
            p = pieces[i].chunk
            at = (slice(p.y0 - c.y0, p.y0 - c.y0 + p.height),
                  slice(p.x0 - c.x0, p.x0 - c.x0 + p.width))
            with phases("composite"):
                for whole, values in zip(mosaics, part, strict=True):
                    for layer, array in values.items():
                        whole[layer][(..., *at)] = array
    # the parts' stacks and the region planes are free now, in the heaps of the threads that
    # held them: give those pages back before the mosaics' overviews and encodes allocate
    release_free_memory()
    return ChunkOutput(c, (), tuple(mosaics), tuple(used), tuple(failures))


def _on_spare_threads(fn: Callable[[int], T], n: int, name: str) -> Iterator[T]:
    """fn(0), ..., fn(n - 1), in order, on this Dask worker's spare threads (on this thread
    alone when there are none). Kernels (numba, nogil) and reads run outside the GIL; results
    are taken in order, so at most that many results (part stacks, region planes) are alive at
    once. Each call runs in a copy of the caller's context, so Dask's fine metrics reach the
    task."""
    threads = min(spare_threads(), n)
    if threads <= 1:
        yield from map(fn, range(n))
        return
    with ThreadPoolExecutor(threads, thread_name_prefix=name) as pool:
        yield from pool.map(lambda i: contextvars.copy_context().run(fn, i), range(n))


Region = tuple[ChunkGrid, tuple[int, ...]]  # a read grid and the parts (indices) inside it
#: A region is ``read_side`` tall and ``WIDE`` times that wide, read by the worker's spare
#: threads together (one slot plane each): half as many tile edges decoded twice as with
#: ``read_side`` squares, for twice a square's plane per thread.
WIDE = 2


def read_regions(task: ChunkTask, pieces: Sequence[ChunkTask], outputs: Outputs) -> list[Region]:
    """The chunk's read grid cut into regions of whole parts, each at most
    ``outputs.read_side`` pixels tall and twice that wide (plus the parts' halo), read one after
    another: a slot plane, a scene's values and its index maps then follow the region, not the
    chunk the user picked. One region (the task's read grid) when the chunk is no
    larger, or when a band is resampled by GDAL's warper (bilinear, cubic...), whose
    approximate transformer depends on the window it is given, so only the whole chunk's
    window gives the whole chunk's pixels; nearest-neighbour maps are per pixel, anchored to
    the grid (:mod:`pipeline.engine.warp`), so a region's pixels are the chunk's."""
    work, side = task.grid_read, outputs.read_side
    if max(task.chunk.height, task.chunk.width) <= side or not _nearest_only(task, outputs):
        return [_whole(task, pieces)]
    ys = sorted({p.chunk.y0 for p in pieces})
    xs = sorted({p.chunk.x0 for p in pieces})
    sy, sx = pieces[0].chunk.height, pieces[0].chunk.width
    gy, gx = max(1, side // sy), max(1, WIDE * side // sx)  # parts per region along y and x
    regions: list[Region] = []
    for ry in range(0, len(ys), gy):
        for rx in range(0, len(xs), gx):
            rows, cols = set(ys[ry:ry + gy]), set(xs[rx:rx + gx])
            members = tuple(i for i, p in enumerate(pieces)
                            if p.chunk.y0 in rows and p.chunk.x0 in cols)
            grids = [pieces[i].grid_read for i in members]
            y0, x0 = min(g.y0 for g in grids), min(g.x0 for g in grids)
            y1 = max(g.y0 + g.height for g in grids)
            x1 = max(g.x0 + g.width for g in grids)
            regions.append((work.part(y0, x0, y1 - y0, x1 - x0), members))
    return regions


def _whole(task: ChunkTask, pieces: Sequence[ChunkTask]) -> Region:
    """The task's whole read grid as one region holding every part."""
    return task.grid_read, tuple(range(len(pieces)))


def _nearest_only(task: ChunkTask, outputs: Outputs) -> bool:
    """Whether every band of every scene of the task is resampled by nearest neighbour."""
    return all((b.resampling or outputs.resampling) == "nearest"
               for slot in task.slots for scene in slot.scenes for b in scene.bands)


def _read_region(task: ChunkTask, pieces: Sequence[ChunkTask], region: Region,
                 slots: range, outputs: Outputs, reader: RasterReader, blocks: _Blocks,
                 need_qa: bool, on_slot: Callable[[int, np.ndarray], None] | None,
                 ) -> tuple[list[str], list[tuple[str, str, str]], Phases]:
    """Step 1 of the module docstring over one region and the task's ``slots`` (indices): each
    slot read and merged into one plane of the region's grid, the blocks of its parts appended
    to the scratch file."""
    from pipeline.engine.chunk import _crop, _merge_slot
    from pipeline.engine.jobs import Phases

    grid, members = region
    own = Phases()
    plane = np.empty((len(outputs.bands), grid.height, grid.width), np.float32)
    qa = np.empty((grid.height, grid.width), bool) if need_qa else None
    crop = _crop(task)  # on_slot: only with the task's read grid as the one region
    cuts = [(i, _within(pieces[i].grid_read, grid)) for i in members]
    used: list[str] = []
    failures: list[tuple[str, str, str]] = []
    windows = ChunkMemo()  # index maps and sun factors, bounded (pipeline.engine.memo)
    for k in slots:
        slot_scenes = task.slots[k]
        plane.fill(np.nan)
        if qa is not None:
            qa.fill(False)
        filled = _merge_slot(slot_scenes, plane, qa, grid, outputs, reader, windows, used,
                             failures, own, empty=True, clip=task.clip)
        if filled and on_slot is not None:
            with own("write"):
                on_slot(slot_scenes.slot, plane[(slice(None), *crop)])
        with own("write"):
            for i, (ys, xs) in cuts:
                # a merged plane's pixel is finite in every band or in none: band 0 tells
                if filled and np.isfinite(plane[0, ys, xs]).any():
                    blocks.put(("v", i, k), plane[:, ys, xs])
                if qa is not None and qa[ys, xs].any():
                    blocks.put(("q", i, k), qa[ys, xs])
    return used, failures, own


def _within(inner: ChunkGrid, outer: ChunkGrid) -> tuple[slice, slice]:
    """``inner``'s pixels within ``outer`` (both on the same grid)."""
    return (slice(inner.y0 - outer.y0, inner.y0 - outer.y0 + inner.height),
            slice(inner.x0 - outer.x0, inner.x0 - outer.x0 + inner.width))


#: The scratch file's space is reserved this many bytes at a time, ahead of its writes.
PREALLOCATE = 16 * 2**20


_FALLOCATE_TYPES = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)


def _fallocate() -> Callable[[int, int, int, int], int] | None:
    """Linux's ``fallocate(fd, mode, offset, length)`` from the C library (0, or -1 where the
    file system cannot reserve the space); None elsewhere. Not ``os.posix_fallocate``: where a
    file system cannot reserve, glibc emulates it by writing into every block, which would
    add writes, not save them."""
    return (libc_function("fallocate64", _FALLOCATE_TYPES, ctypes.c_int)
            or libc_function("fallocate", _FALLOCATE_TYPES, ctypes.c_int))


class _Blocks:
    """Contiguous blocks appended to an anonymous scratch file and read back by key.

    The file's space is reserved ahead of the writes, :data:`PREALLOCATE` bytes at a time
    (:func:`_fallocate`): appending to an ext4 file without it allocated its blocks write by
    write, at 0.4-1.1 GiB/s against 5.1-5.8 GiB/s into reserved space (1 800 blocks of 1 MiB,
    alternating runs; 16 and 64 MiB steps alike), and the 2048 px bench job appends 1.8 GB. At
    most one step is reserved beyond what is written (on tmpfs, where reserving takes memory,
    that is at most 16 MiB more than the data the file holds there anyway); a file system that
    cannot reserve (or has less than a step free) is written without, and its writes say
    whether the data fit."""

    def __init__(self, fd: int, task: ChunkTask) -> None:
        self.fd, self.task = fd, task
        self.at: dict[tuple[str, int, int], tuple[int, int]] = {}  # key -> (offset, bytes)
        self.end = 0
        self.reserved = 0  # bytes of the file whose space is reserved; -1: cannot reserve
        self._lock = threading.Lock()  # regions are read on several threads

    def _reserve(self, upto: int) -> None:
        """Reserve the file's space up to ``upto`` bytes, a step at a time (or up to ``upto``
        where one block is larger than a step), if it can."""
        if self.reserved < 0 or upto <= self.reserved:
            return
        size = max(PREALLOCATE, upto - self.reserved)
        fallocate = _fallocate()
        if fallocate is None or fallocate(self.fd, 0, self.reserved, size) != 0:
            self.reserved = -1  # full, over a limit, not supported: written without
            return
        self.reserved += size

    def put(self, key: tuple[str, int, int], array: np.ndarray) -> None:
        data = np.ascontiguousarray(array)
        with self._lock:
            self._reserve(self.end + data.nbytes)
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


def spare_threads() -> int:
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
