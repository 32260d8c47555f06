"""What the engine is told about its cluster: a frozen :class:`ClusterOptions`. Light on
purpose (no pydantic, no dask): the CLI parser imports it for its argument types."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class ClusterOptions:
    """How to get workers. ``backend`` (an ``ssh``, ``slurm``, ``pbs``, ``kubernetes`` or
    ``gateway`` profile) wins when given; else ``scheduler`` (an existing scheduler); else a
    LocalCluster of the given sizes."""

    scheduler: str | None = None
    n_workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    dashboard_address: str = "127.0.0.1:8787"  # loopback by default: the dashboard is not public
    tls: TLSFiles | None = None  # mutual TLS for every connection; plain TCP refused
    backend: RemoteProfile | None = None  # a cluster started elsewhere (docs/clusters.md)

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
