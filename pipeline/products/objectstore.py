"""Where a product lives when its ``store:`` is ``s3://bucket/prefix/name``, and the few object
operations Aquila needs there (put, get, list, conditional put), through obstore.

A location is parsed once from the spec's store path (:func:`object_location`). The workflow
model keeps stores as paths, which fold ``s3://b/k`` into ``s3:/b/k`` (and a relative one is put
under the spec's folder): the first path segment ``s3:`` marks an object location, whatever
stands before it, so ``Path`` arithmetic (``parent``, ``with_name``) keeps working on it and
only the last step, here, turns it into a bucket and key.

Endpoint, region and plain-HTTP permission are resolved once, in the driver, from the standard
environment (:func:`s3_settings`: ``AWS_ENDPOINT_URL[_S3]``, ``AWS_REGION``,
``AWS_ALLOW_HTTP`` or the endpoint's scheme); credentials are never read by Aquila at all:
obstore and Icechunk take them from the environment of the process that makes the request (the
driver, or a worker), so they never travel in a pickled task. No Aquila-only setting exists.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.errors import RunError, SpecError

SCHEME = "s3"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectLocation:
    """An object (or a prefix of objects) in a bucket: ``s3://<bucket>/<key>``."""

    bucket: str
    key: str  # no leading or trailing slash

    @property
    def url(self) -> str:
        return f"{SCHEME}://{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def sibling(self, name: str) -> ObjectLocation:
        """The object ``name`` beside this one (``<prefix>/name``)."""
        head = self.key.rsplit("/", 1)[0] if "/" in self.key else ""
        return ObjectLocation(self.bucket, f"{head}/{name}" if head else name)

    def __str__(self) -> str:
        return self.url


def object_location(path: Path | str) -> ObjectLocation | None:
    """The bucket location a store path names (None: a local path). ``s3://b/k``, ``s3:/b/k``
    and ``<folder>/s3:/b/k`` (a relative ``s3://`` store resolved by the spec) all name
    ``s3://b/k``; a bucket without a key is refused."""
    text = str(path)
    if text.startswith(f"{SCHEME}://"):
        parts = [p for p in text[len(SCHEME) + 3:].split("/") if p]
    else:
        segments = PurePosixPath(text).parts
        if f"{SCHEME}:" not in segments:
            return None
        parts = list(segments[segments.index(f"{SCHEME}:") + 1:])
    if len(parts) < 2 or any(p in (".", "..") for p in parts):
        raise SpecError(
            f"store {text}: an object-storage store is s3://bucket/prefix/name (a bucket and a "
            "key, no '.' or '..'); give the product's full key"
        )
    return ObjectLocation(parts[0], "/".join(parts[1:]))


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3 (or MinIO, Ceph…): resolved once in the driver, passed to every call."""

    endpoint_url: str | None = None
    region: str | None = None
    allow_http: bool = False
    force_path_style: bool = False


def s3_settings(environ: Mapping[str, str] | None = None) -> S3Settings:
    """The standard variables: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (a custom endpoint
    is addressed path-style, as the AWS SDKs do, unless ``AWS_VIRTUAL_HOSTING=TRUE``),
    ``AWS_REGION`` or ``AWS_DEFAULT_REGION``, and plain HTTP when ``AWS_ALLOW_HTTP`` is true or
    the endpoint's scheme is ``http``."""
    env = os.environ if environ is None else environ
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    allow = env.get("AWS_ALLOW_HTTP", "").lower() in ("1", "true", "yes")
    return S3Settings(
        endpoint_url=endpoint,
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        allow_http=allow or bool(endpoint and endpoint.lower().startswith("http://")),
        force_path_style=bool(endpoint)
        and env.get("AWS_VIRTUAL_HOSTING", "").upper() != "TRUE",
    )


def bucket_store(bucket: str, settings: S3Settings) -> Any:
    """An obstore S3 store for ``bucket`` (credentials from this process's environment)."""
    from obstore.store import S3Store

    config: dict[str, Any] = {"virtual_hosted_style_request": not settings.force_path_style}
    if settings.endpoint_url:
        config["endpoint"] = settings.endpoint_url
    if settings.region:
        config["region"] = settings.region
    # S3Config is a TypedDict: these keys are among its own
    return S3Store(bucket, config=config,  # type: ignore[arg-type]
                   client_options={"allow_http": settings.allow_http})


def icechunk_storage(location: ObjectLocation, settings: S3Settings) -> Any:
    """Icechunk's storage for the repository at ``location`` (credentials from the environment
    of whichever process opens it)."""
    from pipeline.products.transaction import _icechunk

    return _icechunk().s3_storage(
        bucket=location.bucket, prefix=location.key, region=settings.region,
        endpoint_url=settings.endpoint_url, allow_http=settings.allow_http,
        force_path_style=settings.force_path_style, from_env=True,
    )


def put_text(location: ObjectLocation, text: str, settings: S3Settings) -> None:
    """One PUT: a reader sees the old object or the new one, never a part (S3 guarantees it)."""
    import obstore

    obstore.put(bucket_store(location.bucket, settings), location.key, text.encode())


def get_bytes(location: ObjectLocation, settings: S3Settings, *, limit: int) -> bytes | None:
    """The object's first ``limit`` bytes at most (None: no such object)."""
    import obstore

    store = bucket_store(location.bucket, settings)
    try:
        size = int(obstore.head(store, location.key)["size"])
    except FileNotFoundError:
        return None
    if size == 0:
        return b""
    try:
        return bytes(obstore.get_range(store, location.key, start=0, length=min(size, limit)))
    except FileNotFoundError:  # removed meanwhile
        return None


def list_keys(location: ObjectLocation, settings: S3Settings, *, limit: int = 1000) -> list[str]:
    """Keys under ``<key>/`` (relative to it), at most ``limit``."""
    import obstore

    store = bucket_store(location.bucket, settings)
    out: list[str] = []
    for batch in obstore.list(store, prefix=location.key + "/", chunk_size=limit):
        out += [str(o["path"])[len(location.key) + 1:] for o in batch]
        if len(out) >= limit:
            break
    return out[:limit]


def exists(location: ObjectLocation, settings: S3Settings) -> bool:
    import obstore

    try:
        obstore.head(bucket_store(location.bucket, settings), location.key)
    except FileNotFoundError:
        return False
    return True


def delete(location: ObjectLocation, settings: S3Settings) -> None:
    import obstore

    obstore.delete(bucket_store(location.bucket, settings), location.key)


def storage_failure(exc: BaseException, stores: Sequence[object]) -> RunError | None:
    """An error raised by obstore or Icechunk while a run or a night works on products in a
    bucket (``stores``: at least one ``s3://`` location; an endpoint that cannot be reached,
    credentials refused, a bucket that does not exist) as one :class:`RunError` line
    (``store_unreachable``, exit 1) naming the stores and the settings to check; None for any
    other error, or stores on disk. Told apart by the exception's module, so neither library is
    imported to ask. The whole error (the libraries' multi-line traces) is logged at debug
    level."""
    module = type(exc).__module__ or ""
    names = [str(s) for s in stores]
    if (module.split(".", 1)[0] not in ("obstore", "icechunk")
            or not any(n.startswith(f"{SCHEME}://") for n in names)):
        return None
    log.debug("object store error", exc_info=exc)
    where = ", ".join(names)
    return RunError(
        f"the object store failed for {where}: {first_line(exc)}; check the bucket's name and "
        "the S3 settings (AWS_ENDPOINT_URL, AWS_REGION, credentials), and that the endpoint "
        "can be reached from here", reason="store_unreachable")


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (Icechunk's and obstore's carry multi-line traces)."""
    for line in str(exc).splitlines():
        line = line.strip().removeprefix("x ").strip()
        if line:
            return line
    return type(exc).__name__
