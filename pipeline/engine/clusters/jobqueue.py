"""``kind: slurm`` and ``kind: pbs``: workers as batch jobs (dask-jobqueue's ``SLURMCluster``,
``PBSCluster``); the scheduler runs inside the ``aquila`` process, on the login node.

:func:`job_script` renders the script a job would run without a scheduler or a queue, so a
profile can be checked (and shown to the site's admins) before anything is submitted."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import StrictBool, StrictStr

from pipeline.engine.clusters.model import (
    Count,
    HostPort,
    Memory,
    RemoteProfile,
    Texts,
    Walltime,
    Word,
)

if TYPE_CHECKING:
    from distributed import Client

CLUSTER_CLASSES = {"slurm": "SLURMCluster", "pbs": "PBSCluster"}


class JobqueueProfile(RemoteProfile):
    """One batch job = ``processes`` workers sharing ``cores`` and ``memory``; ``jobs`` of
    them are submitted. Compute nodes need Aquila installed (``python`` or the prologue)."""

    library: ClassVar[tuple[str, str]] = ("dask_jobqueue", "dask-jobqueue")

    queue: Word | None = None  # SLURM partition (-p) / PBS queue (-q)
    account: Word | None = None  # -A: the project the hours are charged to
    cores: Count  # per job
    memory: Memory  # per job
    processes: Count = 1  # worker processes per job (each gets cores/processes threads)
    walltime: Walltime
    jobs: Count = 1  # jobs submitted for the run
    job_name: Word = "aquila-worker"
    job_extra_directives: Texts = ()  # more #SBATCH / #PBS lines, e.g. "--exclusive"
    job_script_prologue: Texts = ()  # shell lines before the worker starts
    python: StrictStr | None = None  # Aquila's python on the compute nodes; default this one
    interface: Word | None = None  # network interface of scheduler and workers, e.g. ib0
    local_directory: StrictStr | None = None  # node-local scratch for spilling
    log_directory: StrictStr | None = None  # where the jobs' stdout/stderr go
    dashboard_address: HostPort = "127.0.0.1:8787"  # the scheduler's, on the login node
    tls: StrictBool = False  # temporary TLS certificates (written to shared_temp_directory)
    shared_temp_directory: StrictStr | None = None  # a folder the compute nodes can read

    def describe(self) -> str:
        where = f" (queue {self.queue})" if self.queue else ""
        return f"the '{self.kind}' cluster{where}"

    def job_kwargs(self) -> dict[str, Any]:
        """The per-job arguments of dask-jobqueue (pure: nothing is submitted)."""
        kwargs: dict[str, Any] = {
            "cores": self.cores,
            "memory": self.memory,
            "processes": self.processes,
            "walltime": self.walltime,
            "job_name": self.job_name,
            "job_extra_directives": list(self.job_extra_directives),
            "job_script_prologue": list(self.job_script_prologue),
        }
        for name in ("queue", "account", "python", "interface", "local_directory",
                     "log_directory"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        return kwargs

    def cluster_kwargs(self) -> dict[str, Any]:
        """The arguments given to ``SLURMCluster`` / ``PBSCluster``."""
        kwargs = self.job_kwargs()
        kwargs["scheduler_options"] = {"dashboard_address": self.dashboard_address}
        if self.tls:
            kwargs["security"] = True  # dask-jobqueue makes temporary certificates
            if self.shared_temp_directory:
                kwargs["shared_temp_directory"] = self.shared_temp_directory
        return kwargs

    def start(self) -> contextlib.AbstractContextManager[Client]:
        return _start(self)


class SLURMProfile(JobqueueProfile):
    kind: Literal["slurm"] = "slurm"


class PBSProfile(JobqueueProfile):
    kind: Literal["pbs"] = "pbs"
    resource_spec: StrictStr | None = None  # -l, e.g. select=1:ncpus=8:mem=16GB (default: derived)

    def job_kwargs(self) -> dict[str, Any]:
        kwargs = super().job_kwargs()
        if self.resource_spec:
            kwargs["resource_spec"] = self.resource_spec
        return kwargs


def job_script(profile: JobqueueProfile, scheduler: str = "tcp://scheduler:8786") -> str:
    """The batch script one job would run, for a scheduler at ``scheduler`` (none is started)."""
    jobqueue = profile.require_library()
    job_class = getattr(jobqueue, CLUSTER_CLASSES[profile.kind]).job_cls
    kwargs = profile.job_kwargs()
    kwargs.pop("job_name", None)
    job = job_class(scheduler=scheduler, name=profile.job_name, job_name=profile.job_name,
                    **kwargs)
    return str(job.job_script())


@contextlib.contextmanager
def _start(profile: JobqueueProfile) -> Iterator[Client]:
    jobqueue = profile.require_library()
    from distributed import Client

    cluster = getattr(jobqueue, CLUSTER_CLASSES[profile.kind])(**profile.cluster_kwargs())
    try:
        cluster.scale(jobs=profile.jobs)
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()
