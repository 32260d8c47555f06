"""``kind: gateway``: a cluster asked of a Dask Gateway server (dask-gateway's ``Gateway``),
which starts the scheduler and workers where its backend says (Kubernetes, YARN, a batch
queue, local processes) and always talks TLS to them; shut down after the run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from pipeline.engine.clusters.model import (
    Count,
    RemoteProfile,
    StrictModel,
    Word,
    pattern,
    require,
)
from pipeline.errors import SpecError

if TYPE_CHECKING:
    from distributed import Client

URL = pattern(r"https?://[^\s/]+(/[^\s]*)?", "'https://gateway.example.org' (http or https)")
PROXY = pattern(r"(gateway|tls)://[^\s/]+:\d{1,5}", "'gateway://gateway.example.org:8786'")


class GatewayAuth(StrictModel):
    """How the client proves who it is. ``basic``: a user name, the password (if the server
    wants one) read from the environment variable ``password_env``, never from the profile;
    ``kerberos``: the current ticket; ``jupyterhub``: ``JUPYTERHUB_API_TOKEN``."""

    type: Literal["basic", "kerberos", "jupyterhub"] = "basic"
    username: Word | None = None
    password_env: Annotated[str, pattern(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable "
                                          "name, e.g. AQUILA_GATEWAY_PASSWORD")] | None = None

    @model_validator(mode="after")
    def _basic_only(self) -> GatewayAuth:
        if self.type != "basic" and (self.username or self.password_env):
            raise ValueError(f"username and password_env are for type: basic, not {self.type}")
        return self

    def client_auth(self) -> Any:
        """dask-gateway's auth object (the library is optional: imported through require)."""
        auth = require("dask_gateway.auth", kind="gateway", package="dask-gateway")
        if self.type == "kerberos":
            return auth.KerberosAuth()
        if self.type == "jupyterhub":
            return auth.JupyterHubAuth()
        password = None
        if self.password_env:
            password = os.environ.get(self.password_env)
            if password is None:
                raise SpecError(
                    f"the gateway profile reads its password from ${self.password_env}, which "
                    "is not set; export it (or drop password_env if the server needs none)"
                )
        return auth.BasicAuth(username=self.username, password=password)


class Adapt(StrictModel):
    minimum: Annotated[int, Field(ge=0)] = 0
    maximum: Count


class GatewayProfile(RemoteProfile):
    """One new cluster of the gateway at ``address`` per run: ``workers`` of them (or
    ``adapt`` between two counts), with the server's ``cluster_options``."""

    library: ClassVar[tuple[str, str]] = ("dask_gateway", "dask-gateway")

    kind: Literal["gateway"] = "gateway"
    address: Annotated[str, URL]
    proxy_address: Annotated[str, PROXY] | None = None  # default: the address's host and port
    public_address: Annotated[str, URL] | None = None  # where the dashboard links point
    auth: GatewayAuth = GatewayAuth()
    cluster_options: dict[StrictStr, StrictStr | StrictInt | StrictFloat | StrictBool] = Field(
        default_factory=dict
    )
    workers: Count = 2
    adapt: Adapt | None = None  # instead of a fixed number of workers

    def describe(self) -> str:
        return f"the 'gateway' cluster of {self.address}"

    def gateway_kwargs(self) -> dict[str, Any]:
        """``Gateway``'s arguments except ``auth`` (pure: nothing is contacted)."""
        kwargs = {"address": self.address}
        for name in ("proxy_address", "public_address"):
            if getattr(self, name):
                kwargs[name] = getattr(self, name)
        return kwargs

    def start(self) -> contextlib.AbstractContextManager[Client]:
        return _start(self)


@contextlib.contextmanager
def _start(profile: GatewayProfile) -> Iterator[Client]:
    library = profile.require_library()
    # GatewayCluster makes (and closes, once) its own Gateway client: a Gateway closed by hand
    # is closed again by its __del__, which fails noisily with distributed 2026's LoopRunner
    cluster = library.GatewayCluster(
        **profile.gateway_kwargs(), auth=profile.auth.client_auth(), shutdown_on_close=True,
        **profile.cluster_options,
    )
    try:
        if profile.adapt:
            cluster.adapt(minimum=profile.adapt.minimum, maximum=profile.adapt.maximum)
        else:
            cluster.scale(profile.workers)
        client = cluster.get_client()  # the default client, as the others: as_completed uses it
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.shutdown()
