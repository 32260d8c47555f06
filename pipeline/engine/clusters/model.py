"""The strict base of every cluster profile model, the value checks the kinds share, and the
lazy import of a kind's cluster library (a clear ``pip install`` line when it is missing)."""

from __future__ import annotations

import importlib
import re
from contextlib import AbstractContextManager
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr

from pipeline.engine.clusters.options import count_problem
from pipeline.errors import RunError

if TYPE_CHECKING:
    from distributed import Client

INSTALL_HINT = "pip install 'aquila[clusters]'"


class StrictModel(BaseModel):
    """Frozen, unknown keys refused, no silent coercion of a number into a string."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _count(value: object) -> object:
    problem = count_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def pattern(regex: str, shape: str) -> Any:
    """A BeforeValidator: a string matching ``regex`` (``shape`` says what it should look like)."""
    compiled = re.compile(regex)

    def check(value: object) -> object:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(f"must look like {shape} (got {value!r})")
        return value

    return BeforeValidator(check)


Count = Annotated[int, BeforeValidator(_count)]
"""A whole number of at least 1 (workers, threads, cores, jobs)."""

Memory = Annotated[str, pattern(r"\d+(\.\d+)?\s?([KMGTP]i?B|[KMGTP]|B)", "'16GiB' or '4 GB'")]
"""An amount of memory as dask writes it: ``16GiB``, ``4GB``, ``512 MiB``."""

MemoryOrAuto = Annotated[
    str, pattern(r"auto|\d+(\.\d+)?\s?([KMGTP]i?B|[KMGTP]|B)?", "'auto', '16GiB' or '4 GB'")
]

Walltime = Annotated[
    str,
    pattern(r"\d{1,3}:[0-5]\d:[0-5]\d",
            "HH:MM:SS, quoted: \"02:00:00\" (unquoted, YAML reads a number)"),
]
"""A batch job's time limit."""

HostPort = Annotated[
    str, pattern(r"[A-Za-z0-9_.\-\[\]:]*:\d{1,5}", "'host:port', e.g. '127.0.0.1:8787'")
]
"""A listening address; a dashboard's ``127.0.0.1:8787`` keeps it on loopback."""

Word = Annotated[str, pattern(r"[^\s'\"`$;|&<>]+", "one word without spaces or shell characters")]
"""A name that ends up in a job script or a command line: no whitespace, no shell syntax."""


Texts = Annotated[tuple[StrictStr, ...], Field(strict=False)]
"""A YAML list of strings (kept as a tuple: the model is frozen)."""

Port = Annotated[int, Field(ge=1, le=65535)]


def require(module: str, *, kind: str, package: str) -> ModuleType:
    """Import a cluster library the first time a profile of ``kind`` is used."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RunError(
            f"a '{kind}' cluster profile needs the {package} package, which cannot be imported "
            f"({exc}); run `{INSTALL_HINT}` (or `pip install {package}`) in Aquila's environment",
            reason="cluster_library_missing",
        ) from None


class RemoteProfile(StrictModel):
    """A cluster Aquila starts elsewhere (hosts, a batch queue, Kubernetes, a gateway) and
    shuts down after the run. Subclasses name their library and say how they connect."""

    kind: str
    library: ClassVar[tuple[str, str]]  # (module to import, pip package)

    def require_library(self) -> ModuleType:
        module, package = self.library
        return require(module, kind=self.kind, package=package)

    def describe(self) -> str:
        """A few words for messages: which cluster this is."""
        return f"the '{self.kind}' cluster"

    def start(self) -> AbstractContextManager[Client]:
        """Start the cluster, yield a connected client; close both afterwards."""
        raise NotImplementedError
