"""``kind: ssh``: a scheduler and workers started over SSH on named hosts (distributed's
``SSHCluster``, which needs asyncssh). Host keys are always checked against ``known_hosts``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field, StrictStr

from pipeline.engine.clusters.model import (
    Count,
    HostPort,
    MemoryOrAuto,
    Port,
    RemoteProfile,
    StrictModel,
    Texts,
    Word,
)

if TYPE_CHECKING:
    from distributed import Client


class SSHConnect(StrictModel):
    """How to log in to every host: a safe subset of asyncssh's ``connect`` options (host key
    checking cannot be switched off here)."""

    username: Word | None = None
    port: Port = 22
    known_hosts: StrictStr | None = None  # a known_hosts file; default ~/.ssh/known_hosts
    client_keys: Texts = ()  # private key files; default: the SSH agent and ~/.ssh/id_*

    def asyncssh_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"port": self.port}
        if self.username:
            options["username"] = self.username
        if self.known_hosts:
            options["known_hosts"] = str(Path(self.known_hosts).expanduser())
        if self.client_keys:
            options["client_keys"] = [str(Path(k).expanduser()) for k in self.client_keys]
        return options


class SSHProfile(RemoteProfile):
    """The scheduler on ``scheduler_host``, ``workers_per_host`` worker processes on each of
    ``worker_hosts``; every host needs Aquila installed at ``remote_python``."""

    library: ClassVar[tuple[str, str]] = ("asyncssh", "asyncssh")

    kind: Literal["ssh"] = "ssh"
    scheduler_host: Word
    worker_hosts: Annotated[tuple[Word, ...], Field(strict=False, min_length=1)]
    connect_options: SSHConnect = SSHConnect()
    workers_per_host: Count = 1
    threads_per_worker: Count = 1
    memory_limit: MemoryOrAuto = "auto"
    scheduler_port: Port = 8786
    dashboard_address: HostPort = "127.0.0.1:8787"  # on the scheduler host; reach it by ssh -L
    remote_python: StrictStr | None = None  # default: this interpreter's path

    def describe(self) -> str:
        return f"the 'ssh' cluster (scheduler on {self.scheduler_host})"

    def cluster_kwargs(self) -> dict[str, Any]:
        """The arguments given to ``distributed.SSHCluster`` (pure: nothing is contacted)."""
        return {
            "hosts": [self.scheduler_host, *self.worker_hosts],
            "connect_options": self.connect_options.asyncssh_options(),
            "worker_options": {
                "n_workers": self.workers_per_host,
                "nthreads": self.threads_per_worker,
                "memory_limit": self.memory_limit,
            },
            "scheduler_options": {
                "port": self.scheduler_port,
                "dashboard_address": self.dashboard_address,
            },
            "remote_python": self.remote_python,
        }

    def start(self) -> contextlib.AbstractContextManager[Client]:
        return _start(self)


@contextlib.contextmanager
def _start(profile: SSHProfile) -> Iterator[Client]:
    profile.require_library()
    from distributed import Client, SSHCluster

    cluster = SSHCluster(**profile.cluster_kwargs())
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()
