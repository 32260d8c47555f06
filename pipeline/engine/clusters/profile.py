"""Read a cluster profile: safe strict YAML (:mod:`pipeline.io.yamlfile`), ``kind:`` picks the
model, and every problem is one :class:`SpecError` line naming the file, the field and the fix.

A profile without ``kind`` is a ``local`` one (an ``address`` one if it names a ``scheduler``),
as profiles were before kinds existed."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline.engine.clusters.model import RemoteProfile
from pipeline.engine.clusters.options import ClusterOptions
from pipeline.errors import SpecError

MAX_PROFILE_BYTES = 64 * 1024

KINDS: dict[str, str] = {
    "local": "pipeline.engine.clusters.local:LocalProfile",
    "address": "pipeline.engine.clusters.local:AddressProfile",
    "ssh": "pipeline.engine.clusters.ssh:SSHProfile",
    "slurm": "pipeline.engine.clusters.jobqueue:SLURMProfile",
    "pbs": "pipeline.engine.clusters.jobqueue:PBSProfile",
    "kubernetes": "pipeline.engine.clusters.kubernetes:KubernetesProfile",
    "gateway": "pipeline.engine.clusters.gateway:GatewayProfile",
}
"""Every kind and its model (``module:Class``); the models import no cluster library."""

FIX = "fix the profile (examples: cluster/*.yaml, docs/clusters.md)"


def model_for(kind: str) -> type[BaseModel]:
    module, name = KINDS[kind].split(":")
    model: type[BaseModel] = getattr(importlib.import_module(module), name)
    return model


def load_profile(path: str | Path) -> ClusterOptions:
    """The :class:`ClusterOptions` a profile file asks for; relative paths (TLS files) are
    relative to the profile. Nothing is started or imported beyond the kind's model."""
    from pipeline.io.yamlfile import load_yaml_file

    path = Path(path)
    data: Any = load_yaml_file(path, limit=MAX_PROFILE_BYTES, what="cluster profile")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(
            f"cluster profile {path}: the file is a {type(data).__name__}, not a mapping of "
            f"keys; start it with 'kind: local' (or one of {', '.join(KINDS)}) and the kind's "
            "keys"
        )
    kind = data.get("kind", "address" if "scheduler" in data else "local")
    if not isinstance(kind, str) or kind not in KINDS:
        raise SpecError(
            f"cluster profile {path}: kind: {kind!r} is not a cluster kind; write one of "
            f"{', '.join(KINDS)}"
        )
    model = model_for(kind)
    try:
        profile = model.model_validate({**data, "kind": kind})
    except ValidationError as exc:
        raise SpecError(f"cluster profile {path}: {problems(model, kind, exc)}; {FIX}") from None
    if isinstance(profile, RemoteProfile):
        return ClusterOptions(backend=profile)
    options: ClusterOptions = profile.options(path.parent)  # type: ignore[attr-defined]
    return options


def problems(model: type[BaseModel], kind: str, exc: ValidationError) -> str:
    """pydantic's errors as one line: ``field: what is wrong (and what to write)``."""
    return "; ".join(_problem(model, kind, e) for e in exc.errors(include_url=False))


def _problem(model: type[BaseModel], kind: str, error: Any) -> str:
    loc = [str(p) for p in error["loc"]]
    field = ".".join(loc)
    value = error.get("input")
    kind_of = error["type"]
    if kind_of == "extra_forbidden":
        allowed = ", ".join(sorted(_fields_at(model, loc[:-1])))
        return (f"unknown key '{field}': remove it or fix its spelling (allowed here: "
                f"{allowed})")
    if kind_of == "missing":
        return f"{field}: missing; a '{kind}' profile needs it (see cluster/{kind}.yaml)"
    message = str(error["msg"]).removeprefix("Value error, ")
    expected = {
        "string_type": "a string (quote it)", "int_type": "a whole number",
        "bool_type": "true or false", "dict_type": "a mapping of keys",
        "model_type": "a mapping of keys", "tuple_type": "a list", "list_type": "a list",
        "float_type": "a number",
    }.get(kind_of)
    if expected:
        message = f"must be {expected} (got {value!r})"
    elif kind_of.endswith(("_than_equal", "_than")):
        message = f"{message[0].lower()}{message[1:]} (got {value!r})"
    return f"{field}: {message}" if field else message


def _fields_at(model: type[BaseModel], loc: list[str]) -> set[str]:
    """The keys allowed in the mapping at ``loc`` (a nested model's, or the profile's)."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return set()
        current = _model_in(fields[part].annotation)
    return set(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X | None`` (or ``X`` itself)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
