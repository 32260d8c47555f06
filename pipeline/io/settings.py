"""How a run reads its assets, as the driver decides it and ships it to the workers: the reader's
settings and the number of local files a worker keeps open. Apart from
:mod:`pipeline.io.reader` (which reads, with rasterio) so that a driver, which only resolves
these, does not load GDAL.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.io.hrefs import HrefPolicy
from pipeline.io.retry import RetryPolicy

__all__ = ["OPEN_FILES", "OPEN_FILES_BIG_CHUNKS", "ReaderSettings", "open_files_for"]


@dataclass(frozen=True)
class ReaderSettings:
    """Per-process reader settings, resolved once in the driver."""

    #: GDAL's block cache per worker process, MB (the CLI's --gdal-cache-mb, same default).
    #: GTiff window reads bypass it (pipeline.io.tilecache); JPEG 2000 and others use it
    gdal_cache_mb: int = 256
    tile_cache_mb: int = 0  # decoded source tiles per worker (pipeline.io.tilecache); 0: off
    max_open: int = 512  # open remote datasets per thread; closing one drops its cached blocks
    #: local files kept open per process between reads, shared by its threads
    #: (:class:`OpenFiles`): GDAL keeps ~0.31 MiB of buffers per open dataset, and a file
    #: closed and opened again for the next chunk costs 1-4 ms of opening (with two threads
    #: opening) and its first read. The run sets it from its plan (:func:`open_files_for`):
    #: :data:`OPEN_FILES` where its tasks are many and small, :data:`OPEN_FILES_BIG_CHUNKS`
    #: where a chunk is read in regions (its own buffers are large and it is read once)
    max_open_local: int = 16
    policy: HrefPolicy | None = None  # checked again at every request (pipeline.io.http)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    http_timeout_s: float = 30.0  # per HTTP request (the HEAD and each range GET)
    session: str = ""  # the run id: one run's open files and failures are not another's


OPEN_FILES = 256
"""Local files a worker keeps open for a plan of small chunks: the benchmark's tasks read 180
assets (~56 MiB held open); measured there at 512 px (alternating runs, 16 -> 256): the read
phase 17.4 / 12.8 -> 8.6 / 8.0 task-seconds, wall 23.3 / 18.6 -> 17.4 / 16.2 s."""

OPEN_FILES_BIG_CHUNKS = 16
"""... and for a plan with a chunk read in regions (larger than ``read_side``): at 2048 px the
benchmark's peak was 0.87-0.89 GiB with 16 and 0.93-1.0 GiB with 256, against a 1.0 GiB
target, for 0.4 s."""


def open_files_for(chunk_side: int, read_side: int) -> int:
    """``max_open_local`` for a run whose largest chunk is ``chunk_side`` px and whose chunks
    are read in regions of at most ``read_side``."""
    return OPEN_FILES if chunk_side <= read_side else OPEN_FILES_BIG_CHUNKS
