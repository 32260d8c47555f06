"""Open a Dask client: a LocalCluster of worker processes by default, or an existing scheduler.

Only this module knows how clusters are made; nothing else reaches for a global client.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from distributed import Client, LocalCluster


@dataclass(frozen=True)
class ClusterOptions:
    """How to get workers. ``scheduler`` wins over the local-cluster sizes when given."""

    scheduler: str | None = None
    n_workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    dashboard_address: str = "127.0.0.1:8787"  # loopback by default: the dashboard is not public


@contextlib.contextmanager
def open_client(options: ClusterOptions) -> Iterator[Client]:
    """Yield a connected client; closes what it started (never a cluster it did not start)."""
    if options.scheduler:
        client = Client(options.scheduler, timeout="30s")
        try:
            yield client
        finally:
            client.close()
        return
    # distributed logs a warning when 8787 is taken and picks another port: that is fine
    logging.getLogger("distributed.node").setLevel(logging.ERROR)
    cluster = LocalCluster(
        n_workers=options.n_workers,
        threads_per_worker=options.threads_per_worker,
        processes=True,
        memory_limit=options.memory_limit,
        dashboard_address=options.dashboard_address,
        host="127.0.0.1",
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
