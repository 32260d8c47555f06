"""Open a Dask client: the one entry point (:func:`open_client`) for every cluster Aquila uses.

A LocalCluster of worker processes by default, an existing scheduler (``--scheduler``), or a
cluster profile (YAML, ``--cluster-profile``) whose ``kind:`` says where workers come from:
``local``, ``address``, ``ssh``, ``slurm``, ``pbs``, ``kubernetes`` or ``gateway``
(docs/clusters.md). The per-kind models and how each starts live in
:mod:`pipeline.engine.clusters`; nothing else in the package makes clusters or reaches for a
global client. A local or address profile may ask for TLS: every connection (client, scheduler,
workers) then uses distributed's ``Security`` with ``require_encryption``, so a plain-TCP peer
is refused. Dashboards bind to loopback unless a profile says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.engine.clusters.options import ClusterOptions, TLSFiles, count_problem, local_shape

if TYPE_CHECKING:  # dask is imported where a cluster is made: the CLI parser imports this module
    from distributed import Client

__all__ = [
    "ClusterOptions",
    "TLSFiles",
    "cluster_from_cli",
    "count_problem",
    "load_cluster_profile",
    "local_shape",
    "open_client",
    "positive_int",
    "warm_started",
]


def positive_int(text: str) -> int:
    """argparse ``type`` for --workers, --threads and --gdal-cache-mb of every command."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    problem = count_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def cluster_from_cli(args: Any) -> ClusterOptions:
    """The cluster a CLI command asked for: a profile (``--scheduler`` still picks the scheduler
    of a local or address one) or the sizing flags (``--workers``, ``--threads``,
    ``--memory-limit``, ``--dashboard``). A profile whose cluster library is missing is refused
    here, before any work, with the ``pip install`` to run."""
    if args.cluster_profile:
        cluster = load_cluster_profile(args.cluster_profile)
        if cluster.backend is not None:
            if args.scheduler:
                from pipeline.errors import SpecError

                raise SpecError(
                    f"--scheduler {args.scheduler} and the '{cluster.kind}' cluster profile "
                    f"{args.cluster_profile} both say where the scheduler is; give one of them"
                )
            cluster.backend.require_library()
            return cluster
        return replace(cluster, scheduler=args.scheduler) if args.scheduler else cluster
    workers, threads = local_shape(args.workers, args.threads)
    return ClusterOptions(
        scheduler=args.scheduler,
        n_workers=workers,
        threads_per_worker=threads,
        memory_limit=args.memory_limit,
        dashboard_address=args.dashboard,
    )


def load_cluster_profile(path: str | Path) -> ClusterOptions:
    """A cluster profile file (any kind), validated strictly; see
    :func:`pipeline.engine.clusters.profile.load_profile`."""
    from pipeline.engine.clusters.profile import load_profile

    return load_profile(path)


@contextlib.contextmanager
def warm_started(options: ClusterOptions, *, direct: bool = False) -> Iterator[ClusterOptions]:
    """``options`` with ``warm_start`` where they start a local cluster (not ``direct``), their
    fork server started now and stopped when the block ends (if this started it): a command
    enters this first thing, so that the server imports the chunk tasks' modules while the
    driver reads its spec and catalog and plans (:mod:`pipeline.engine.clusters.warm_start`).
    Other options are yielded as they are."""
    if direct or options.kind != "local":
        yield options
        return
    from pipeline.engine.clusters import warm_start
    from pipeline.engine.clusters.worker_env import worker_environ

    with warm_start.held(worker_environ()):
        yield replace(options, warm_start=True)


@contextlib.contextmanager
def open_client(options: ClusterOptions) -> Iterator[Client]:
    """Yield a connected client; closes what it started (never a cluster it did not start).
    A profile's cluster that cannot be started is one :class:`RunError` line
    (``cluster_unreachable``) naming it."""
    from pipeline.engine.clusters import local

    if options.backend is None:
        opener = local.connect_address if options.scheduler else local.start_local
        with opener(options) as client:
            yield client
        return
    with contextlib.ExitStack() as stack:
        try:
            client = stack.enter_context(options.backend.start())
        except (OSError, TimeoutError) as exc:
            from pipeline.errors import RunError

            raise RunError(
                f"could not start {options.backend.describe()}: {exc}; check the cluster "
                "profile (docs/clusters.md). Nothing was published",
                reason="cluster_unreachable",
            ) from exc
        yield client
