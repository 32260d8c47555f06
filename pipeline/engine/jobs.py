"""What a driver needs of the chunk tasks without loading them: the phase timer, the results
the tasks send back, and the job functions the executor hands to Dask.

A job function imports its task's module (:mod:`pipeline.engine.chunk`,
:mod:`pipeline.engine.fork_chunk`, :mod:`pipeline.engine.night_chunk`) when it first runs, on
the worker. The driver only names the functions (Dask pickles them by name) and reads the
results, so ``aquila run`` and ``aquila nightly`` never load numba, scipy or GDAL (rasterio)
in the driver, whose imports come before the cluster starts in every run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pipeline.io.reader import RasterReader
    from pipeline.plan.chunks import ChunkTask, Outputs
    from pipeline.plan.fuse import Block
    from pipeline.plan.increment import ChunkOrder

#: The labels of a chunk task's fine metrics, in the order the work happens: ``read`` opens
#: assets and fetches (and GDAL decompresses) pixel windows, also a night's committed cube slots;
#: ``decode`` turns quality and nodata-mask bands into masks; ``warp`` maps source pixels to the
#: chunk's grid; ``calibrate`` DN to reflectance; ``composite`` merges scenes into slots and
#: reduces slots to mosaics; ``write`` opens the output arrays and writes whole chunks.
PHASES = ("read", "decode", "warp", "calibrate", "composite", "write")


class Phases(dict[str, float]):
    """Seconds by phase. ``with phases("read"):`` adds the block's own time here (a phase nested
    in another is subtracted from the outer one, so the phases add up, as
    ``context_meter.meter`` counts them) and digests the same seconds as a Dask fine metric
    when ``distributed`` is loaded (on a worker the task's metrics go to the scheduler;
    elsewhere nothing listens). Not importing ``distributed`` here keeps a direct run light."""

    def __init__(self) -> None:
        super().__init__()
        self._open: list[float] = []  # per open phase: seconds of the phases nested in it

    @contextmanager
    def __call__(self, label: str) -> Iterator[None]:
        t = time.perf_counter()
        self._open.append(0.0)
        try:
            yield
        finally:  # a failed step's time counts too
            elapsed = time.perf_counter() - t
            own = max(0.0, elapsed - self._open.pop())
            if self._open:
                self._open[-1] += elapsed
            self[label] = self.get(label, 0.0) + own
            _digest(label, own)

    def add(self, other: dict[str, float]) -> None:
        for label, sec in other.items():
            self[label] = self.get(label, 0.0) + sec

    def ordered(self) -> dict[str, float]:
        """The phases in :data:`PHASES` order (every label, 0 for a phase that never ran)."""
        extra = sorted(set(self) - set(PHASES))
        return {label: self.get(label, 0.0) for label in (*PHASES, *extra)}


def _digest(label: str, seconds: float) -> None:
    metrics = sys.modules.get("distributed.metrics")
    if metrics is not None:  # a Dask worker (or a process that imported distributed)
        metrics.context_meter.digest_metric(label, seconds, "seconds")



@dataclass
class ChunkSummary:
    """The small result a chunk task sends back to the driver."""

    chunk: str
    scenes_read: int = 0
    used: tuple[str, ...] = ()
    failures: tuple[tuple[str, str, str], ...] = ()
    valid_pixels: int = 0
    pixels_written: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # seconds by PHASES label


@dataclass
class ForkedSummary:
    """A bucket run's task summary and its forks: the cube's (None: no cube), then each
    mosaic's (:mod:`pipeline.engine.fork_chunk`)."""

    summary: ChunkSummary
    cube_fork: Any
    mosaic_forks: tuple[Any, ...]


@dataclass
class NightChunkResult:
    """What a nightly chunk task sends back: a small summary and its fork (the writes)."""

    chunk: str
    used: tuple[str, ...] = ()
    failures: tuple[tuple[str, str, str], ...] = ()  # (scene id, reason, message)
    retries: dict[str, int] = field(default_factory=dict)  # href -> retries
    attempts: dict[str, int] = field(default_factory=dict)  # failed href -> attempts made
    cube_written: int = 0
    mosaic_written: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # seconds by PHASES label
    fork: Any = None



def chunk_job(reader: RasterReader, task: ChunkTask, outputs: Outputs) -> ChunkSummary:
    """:func:`pipeline.engine.chunk.process_chunk` as the executor calls it."""
    from pipeline.engine.chunk import process_chunk

    return process_chunk(task, outputs=outputs, reader=reader)


def run_job(
    reader: RasterReader, work: ChunkTask | Block, outputs: Outputs
) -> tuple[ChunkSummary, ...]:
    """A run's task: one chunk (:func:`pipeline.engine.chunk.process_chunk`) or a fused block of
    chunks (:func:`pipeline.engine.chunk.process_block`, :mod:`pipeline.plan.fuse`); one summary
    per chunk either way."""
    from pipeline.engine.chunk import process_block, process_chunk
    from pipeline.plan.fuse import Block

    if not isinstance(work, Block):
        return (process_chunk(work, outputs=outputs, reader=reader),)
    return process_block(work.task, work.members, outputs=outputs, reader=reader)


def fork_chunk_job(
    reader: RasterReader, task: ChunkTask, outputs: Outputs, cube_fork: Any,
    mosaic_forks: tuple[Any, ...],
) -> ForkedSummary:
    """:func:`pipeline.engine.fork_chunk.process_in_forks` as the executor calls it."""
    from pipeline.engine.fork_chunk import process_in_forks

    return process_in_forks(task, outputs=outputs, reader=reader, cube_fork=cube_fork,
                            mosaic_forks=mosaic_forks)


def night_job(
    reader: RasterReader,
    order: ChunkOrder,
    outputs: Outputs,
    groups: Sequence[str],
    fork: Any,
    base: Any,
) -> NightChunkResult:
    """:func:`pipeline.engine.night_chunk.run_order` as the executor calls it (``groups``: the
    mosaic group names, in ``outputs.mosaics`` order)."""
    from pipeline.engine.night_chunk import run_order

    return run_order(order, outputs=outputs, groups=groups, reader=reader, fork=fork, base=base)
