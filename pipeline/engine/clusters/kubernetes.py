"""``kind: kubernetes``: a ``DaskCluster`` resource for the dask-kubernetes operator (which must
run in the cluster), scheduler and workers in pods of Aquila's image; deleted after the run.

:func:`cluster_spec` renders the manifest without contacting Kubernetes, so a profile can be
checked (and shown to the cluster's admins) first."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, NonNegativeInt, StrictStr

from pipeline.engine.clusters.model import Count, RemoteProfile, StrictModel, Texts, pattern

if TYPE_CHECKING:
    from distributed import Client

DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?"


def _quantity_text(value: object) -> object:
    """``cpu: 2`` as YAML writes it is the quantity '2'; strings pass through to the check."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Quantity = Annotated[
    str,
    pattern(r"\d+(\.\d+)?(m|k|[KMGTPE]i?)?", "a Kubernetes quantity, e.g. '2', '500m', '4Gi'"),
    BeforeValidator(_quantity_text),
]


class Quantities(StrictModel):
    cpu: Quantity | None = None
    memory: Quantity | None = None

    def manifest(self) -> dict[str, str]:
        return {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v is not None}


class Resources(StrictModel):
    """Each pod's requests and limits (scheduler and workers alike)."""

    requests: Quantities = Quantities()
    limits: Quantities = Quantities()

    def manifest(self) -> dict[str, dict[str, str]]:
        out = {"requests": self.requests.manifest(), "limits": self.limits.manifest()}
        return {k: v for k, v in out.items() if v}


class KubernetesProfile(RemoteProfile):
    """``n_workers`` worker pods of ``image`` (which has Aquila and its dependencies)."""

    library: ClassVar[tuple[str, str]] = ("dask_kubernetes.operator", "dask-kubernetes")

    kind: Literal["kubernetes"] = "kubernetes"
    name: Annotated[str, pattern(DNS_LABEL, "a DNS label, e.g. 'aquila-run'")] = "aquila"
    namespace: Annotated[str, pattern(DNS_LABEL, "a DNS label, e.g. 'aquila'")] | None = None
    image: Annotated[str, pattern(r"[^\s]+", "an image reference, e.g. 'reg/aquila:0.1.0'")]
    n_workers: Count = 2
    resources: Resources = Resources()
    env: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    worker_command: Texts = ("dask", "worker")
    idle_timeout: NonNegativeInt = 0  # seconds without work before the operator deletes it
    scheduler_service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"

    def describe(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"the 'kubernetes' cluster {self.name}{where}"

    def start(self) -> contextlib.AbstractContextManager[Client]:
        return _start(self)


def cluster_spec(profile: KubernetesProfile) -> dict[str, Any]:
    """The ``DaskCluster`` manifest (pure: no cluster is contacted). The scheduler's command
    is ``dask scheduler``: distributed 2026 no longer installs the ``dask-scheduler`` script
    that dask-kubernetes' template names."""
    operator = profile.require_library()
    spec: dict[str, Any] = operator.make_cluster_spec(
        name=profile.name,
        image=profile.image,
        n_workers=profile.n_workers,
        resources=profile.resources.manifest() or None,
        env=dict(profile.env) or None,
        worker_command=list(profile.worker_command),
        scheduler_service_type=profile.scheduler_service_type,
        idle_timeout=profile.idle_timeout,
    )
    for role in ("scheduler", "worker"):  # the template shares dicts (resources) between them
        pod = spec["spec"][role]["spec"]
        pod["containers"] = [copy.deepcopy(c) for c in pod["containers"]]
    for container in spec["spec"]["scheduler"]["spec"]["containers"]:
        if container.get("args", [])[:1] == ["dask-scheduler"]:
            container["args"] = ["dask", "scheduler", *container["args"][1:]]
    if profile.namespace:
        spec["metadata"]["namespace"] = profile.namespace
    return spec


@contextlib.contextmanager
def _start(profile: KubernetesProfile) -> Iterator[Client]:
    operator = profile.require_library()
    from distributed import Client

    cluster = operator.KubeCluster(
        custom_cluster_spec=cluster_spec(profile),
        namespace=profile.namespace,
        shutdown_on_close=True,
        quiet=True,
    )
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()
