"""``kind: local`` (a LocalCluster of worker processes on this machine, the default) and
``kind: address`` (an existing scheduler), both with optional mutual TLS; how each opens."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import StrictStr, field_validator, model_validator

from pipeline.engine.clusters.model import Count, HostPort, MemoryOrAuto, StrictModel
from pipeline.engine.clusters.options import ClusterOptions, TLSFiles, local_shape

if TYPE_CHECKING:
    from distributed import Client

SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")


class TLSPaths(StrictModel):
    """``tls: {ca_file, cert_file, key_file}``: PEM paths, relative to the profile."""

    ca_file: StrictStr
    cert_file: StrictStr
    key_file: StrictStr

    def files(self, base: Path) -> TLSFiles:
        return TLSFiles(*((base / p).resolve() for p in (self.ca_file, self.cert_file,
                                                          self.key_file)))


class LocalProfile(StrictModel):
    """Worker processes on this machine; the dashboard on loopback unless said otherwise."""

    kind: Literal["local"] = "local"
    n_workers: Count | None = None  # None: sized from the usable cores (local_shape)
    threads_per_worker: Count | None = None
    memory_limit: MemoryOrAuto = "auto"
    dashboard_address: HostPort = "127.0.0.1:8787"
    tls: TLSPaths | None = None

    def options(self, base: Path) -> ClusterOptions:
        workers, threads = local_shape(self.n_workers, self.threads_per_worker)
        return ClusterOptions(
            n_workers=workers,
            threads_per_worker=threads,
            memory_limit=self.memory_limit,
            dashboard_address=self.dashboard_address,
            tls=self.tls.files(base) if self.tls else None,
        )


class AddressProfile(StrictModel):
    """A scheduler somebody else started (``dask scheduler``, a site's shared cluster)."""

    kind: Literal["address"] = "address"
    scheduler: StrictStr
    tls: TLSPaths | None = None

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep:
            scheme, rest = "tcp", value
        if scheme not in SCHEMES or not rest or any(c.isspace() for c in value):
            raise ValueError(
                f"must look like tcp://host:8786 or tls://host:8786 (got {value!r})"
            )
        return value

    @model_validator(mode="after")
    def _tls_needs_tls_scheme(self) -> AddressProfile:
        if self.tls and not self.scheduler.startswith("tls://"):
            raise ValueError(
                f"scheduler: {self.scheduler!r} is not a tls:// address but the profile "
                "gives tls files; write tls://host:port (or drop tls)"
            )
        return self

    def options(self, base: Path) -> ClusterOptions:
        return ClusterOptions(
            scheduler=self.scheduler, tls=self.tls.files(base) if self.tls else None
        )


@contextlib.contextmanager
def connect_address(options: ClusterOptions) -> Iterator[Client]:
    """A client of an existing scheduler; the scheduler is left running."""
    security = options.tls.security() if options.tls else None
    with connect_scheduler(str(options.scheduler), security=security) as client:
        yield client


@contextlib.contextmanager
def connect_scheduler(
    address: str, *, security: Any = None, timeout: str | None = None,
    set_as_default: bool = True,
) -> Iterator[Client]:
    """A client of the scheduler at ``address`` (``security``: distributed's ``Security``), closed
    on exit; the scheduler is left running. Also for short side connections (metrics), which
    pass ``set_as_default=False`` so they never replace a run's default client.

    ``timeout``: how long to keep trying to connect; by default Dask's
    ``distributed.comm.timeouts.connect`` (30 s unless configured, e.g.
    ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s`` to give up on a wrong address sooner)."""
    import dask
    from distributed import Client

    if timeout is None:
        timeout = dask.config.get("distributed.comm.timeouts.connect")
    client = Client(address, timeout=timeout, security=security, set_as_default=set_as_default)
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def start_local(options: ClusterOptions) -> Iterator[Client]:
    """A LocalCluster of worker processes on loopback, closed with its client."""
    import dask
    from distributed import Client, LocalCluster

    from pipeline.engine.clusters.ctrl_c import DriverHandlesCtrlC
    from pipeline.engine.clusters.quick_exit import FreezeOnClose
    from pipeline.engine.clusters.worker_env import worker_environ

    security = options.tls.security() if options.tls else None
    # distributed logs a warning when 8787 is taken and picks another port: that is fine
    logging.getLogger("distributed.node").setLevel(logging.ERROR)
    environ = worker_environ()
    config: dict[str, Any] = {"distributed.nanny.pre-spawn-environ": environ}
    with contextlib.ExitStack() as stack:  # closed in reverse: client, cluster, config, server
        if options.warm_start:
            config["distributed.worker.multiprocessing-method"] = "forkserver"
            stack.enter_context(_warm_start(environ))
        # for the cluster's whole life: a worker the nanny restarts starts as the first did
        stack.enter_context(dask.config.set(config))
        cluster = LocalCluster(
            n_workers=options.n_workers,
            threads_per_worker=options.threads_per_worker,
            processes=True,
            memory_limit=options.memory_limit,
            dashboard_address=options.dashboard_address,
            host="127.0.0.1",
            # its workers exit without a last walk of their heaps, and leave Ctrl-C to the driver
            plugins={FreezeOnClose(), DriverHandlesCtrlC()},
            **({"protocol": "tls://", "security": security} if security else {}),
        )
        stack.callback(cluster.close)
        client = Client(cluster, security=security)
        stack.callback(client.close)
        yield client


def _warm_start(environ: dict[str, str]) -> contextlib.AbstractContextManager[None]:
    """Workers forked from Aquila's fork server (:mod:`pipeline.engine.clusters.warm_start`),
    held for the cluster's life (started here unless the CLI started it earlier, and then left
    to the CLI to stop). distributed, the first time it is asked for a fork server's context,
    imports its own list of modules into this process (pandas among them: +64 MiB in the
    driver) to preload them in a server that is already running; its flag for "done" is set
    first (a private name of distributed, bounded in pyproject.toml; without it the driver only
    loads those modules)."""
    import distributed.utils

    from pipeline.engine.clusters import warm_start

    held = warm_start.held(environ)
    if hasattr(distributed.utils, "_forkserver_preload_set"):
        distributed.utils._forkserver_preload_set = True
    return held
