"""What the engine is told about its cluster: a frozen :class:`ClusterOptions`. Light on
purpose (no pydantic, no dask): the CLI parser imports it for its argument types."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.engine.clusters.model import RemoteProfile


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for mutual TLS: the CA that signs every peer, and this peer's cert and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def security(self):
        from distributed.security import Security

        return Security(
            tls_ca_file=str(self.ca_file),
            tls_client_cert=str(self.cert_file),
            tls_client_key=str(self.key_file),
            tls_scheduler_cert=str(self.cert_file),
            tls_scheduler_key=str(self.key_file),
            tls_worker_cert=str(self.cert_file),
            tls_worker_key=str(self.key_file),
            require_encryption=True,
        )


#: At most this many threads per local worker: Aquila's kernels and GDAL's decoders release the
#: GIL, but the Python between them (planning a part, merging a slot) does not.
MAX_THREADS_PER_WORKER = 4


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS says, e.g. a
    container's ``--cpuset-cpus``), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_shape(
    workers: int | None = None, threads: int | None = None, *, cores: int | None = None
) -> tuple[int, int]:
    """(worker processes, threads per worker) of a local cluster; what is not given is sized
    from the usable cores: few workers with up to :data:`MAX_THREADS_PER_WORKER` threads each,
    because the threads of one worker share its GDAL block cache and tile cache (a tile decoded
    for one chunk task serves the next) and every worker process costs its own ~250 MiB of
    imported libraries. 2 cores: 1 worker x 2 threads; 8: 2 x 4; 16: 4 x 4. Measured on the
    peer benchmark (36 scenes, 2000^2 x 4 bands, chunk 1024, 2-core machine, idle): 1 x 2 took
    12.1 s and 1.01 GiB (whole process tree) against 13.9 s and 1.25 GiB for 2 x 1."""
    n = usable_cores() if cores is None else max(1, cores)
    if workers is None and threads is None:
        workers = max(1, (n + 2) // MAX_THREADS_PER_WORKER)
    if threads is None:
        threads = max(1, n // max(1, workers or 1))
    if workers is None:
        workers = max(1, n // threads)
    return workers, threads


def _default_workers() -> int:
    return local_shape()[0]


def _default_threads() -> int:
    return local_shape()[1]


@dataclass(frozen=True)
class ClusterOptions:
    """How to get workers. ``backend`` (an ``ssh``, ``slurm``, ``pbs``, ``kubernetes`` or
    ``gateway`` profile) wins when given; else ``scheduler`` (an existing scheduler); else a
    LocalCluster of the given sizes."""

    scheduler: str | None = None
    n_workers: int = field(default_factory=_default_workers)  # see local_shape
    threads_per_worker: int = field(default_factory=_default_threads)
    memory_limit: str = "auto"
    dashboard_address: str = "127.0.0.1:8787"  # loopback by default: the dashboard is not public
    tls: TLSFiles | None = None  # mutual TLS for every connection; plain TCP refused
    backend: RemoteProfile | None = None  # a cluster started elsewhere (docs/clusters.md)
    #: a local cluster's workers forked from a server that has imported the chunk tasks'
    #: modules (pipeline.engine.clusters.warm_start); the CLI's runs and nights ask for it
    warm_start: bool = False

    def __post_init__(self) -> None:
        for name in ("n_workers", "threads_per_worker"):
            problem = count_problem(getattr(self, name))
            if problem:
                from pipeline.errors import SpecError

                raise SpecError(f"cluster {name}: {problem}")

    @property
    def kind(self) -> str:
        """The profile kind these options stand for (``local``, ``address``, ``slurm``...)."""
        if self.backend is not None:
            return self.backend.kind
        return "address" if self.scheduler else "local"


def count_problem(value: object) -> str | None:
    """Why ``value`` is not a usable count (workers, threads, cache MB), or None. Zero or a
    negative number of workers starts a cluster that never runs a task: the run would hang."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{value!r} is not a whole number"
    if value < 1:
        return f"{value} is too small: give a whole number of at least 1"
    return None
