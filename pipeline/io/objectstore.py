"""Assets on object storage (``s3://``, ``gs://``, ``az://``) read through GDAL's ``/vsis3/``,
``/vsigs/`` and ``/vsiaz/``.

Only Aquila names a ``/vsi…`` path: a link must be a plain ``s3://bucket/key`` that the href
policy admitted (:meth:`pipeline.io.hrefs.HrefPolicy.check`), and is mapped here. Credentials and
endpoints come from the process's environment or profile, as GDAL and the AWS tools read them
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and
``~/.aws``, instance roles; ``AWS_S3_ENDPOINT``, ``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING``,
``AWS_REGION``; ``GOOGLE_APPLICATION_CREDENTIALS``; ``AZURE_STORAGE_ACCOUNT``...), never from a
catalog, and with no Aquila-only setting. rasterio's own AWS session (boto3) is not used:
GDAL reads the environment itself, on the worker.

GDAL 3.10 (rasterio 1.4.4's wheels) does not read ``AWS_ENDPOINT_URL`` (checked: with only it
set, ``/vsis3/`` still asks ``bucket.s3.<region>.amazonaws.com``), so when it (or
``AWS_ENDPOINT_URL_S3``) is set and ``AWS_S3_ENDPOINT`` is not, :func:`gdal_options` translates
it: host[:port][/path] → ``AWS_S3_ENDPOINT``, the scheme → ``AWS_HTTPS``, and path-style
requests (``AWS_VIRTUAL_HOSTING=FALSE``, as the AWS SDKs use for a custom endpoint) unless those
two are set.

Process-wide, :mod:`pipeline.io.reader` forbids every ``/vsicurl/``-based file
(``CPL_VSIL_CURL_ALLOWED_FILENAME``); an object is opened and read inside a ``rasterio.Env``
whose thread-local ``CPL_VSIL_CURL_ALLOWED_FILENAME`` names exactly that object, so GDAL can
reach no other file (no sidecar, no second key) while doing so. ``CPL_VSIL_CURL_NON_CACHED``
keeps no file's size or existence between opens: a key uploaded after a miss is seen.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urlsplit

from pipeline.io.hrefs import raster_driver
from pipeline.io.retry import Failure, classify_gdal, gdal_text

VSI_PREFIXES = {"s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}  # one per OBJECT_SCHEMES
# GDAL's words for a missing object: its own, or the store's error (S3's <Message>)
_MISSING = re.compile(r"does not exist|NoSuchKey|NoSuchBucket|Not Found", re.IGNORECASE)
NON_CACHED = ":".join(VSI_PREFIXES.values())


def vsi_path(href: str) -> str:
    """``s3://bucket/key`` → ``/vsis3/bucket/key`` (the href already checked by the policy)."""
    scheme, sep, rest = href.partition("://")
    prefix = VSI_PREFIXES.get(scheme.lower())
    if not sep or prefix is None:
        raise ValueError(f"{href} is not an object-storage link ({', '.join(VSI_PREFIXES)})")
    return prefix + rest


def gdal_options(href: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The thread-local GDAL options for opening or reading ``href``: that object alone
    allowed, and ``AWS_ENDPOINT_URL`` translated for GDAL when only it names the endpoint
    (see the module docstring). ``environ``: the environment (default: this process's)."""
    env = os.environ if environ is None else environ
    options = {"CPL_VSIL_CURL_ALLOWED_FILENAME": vsi_path(href)}
    if href.lower().startswith("s3://"):
        options.update(endpoint_options(env))
    return options


def endpoint_options(environ: Mapping[str, str]) -> dict[str, str]:
    """GDAL's endpoint options from the AWS SDKs' ``AWS_ENDPOINT_URL(_S3)``, when GDAL's own
    ``AWS_S3_ENDPOINT`` is not set; {} otherwise."""
    url = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if not url or environ.get("AWS_S3_ENDPOINT"):
        return {}
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return {}
    options = {"AWS_S3_ENDPOINT": parts.netloc + parts.path.rstrip("/")}
    if "AWS_HTTPS" not in environ:
        options["AWS_HTTPS"] = "YES" if parts.scheme.lower() == "https" else "NO"
    if "AWS_VIRTUAL_HOSTING" not in environ:
        options["AWS_VIRTUAL_HOSTING"] = "FALSE"
    return options


@contextmanager
def object_env(href: str) -> Iterator[None]:
    """GDAL's thread-local options for ``href`` (:func:`gdal_options`), credentials left to
    GDAL (rasterio's boto3 session is not made)."""
    import rasterio
    from rasterio.session import DummySession

    with rasterio.Env(session=DummySession(), **gdal_options(href)):
        yield


def open_object(href: str):
    """A rasterio dataset over ``href`` (GTiff or JP2OpenJPEG, by its suffix); raises
    RasterioIOError. Reads of it go through :func:`object_env` too."""
    import rasterio

    driver = raster_driver(href)
    if driver is None:  # the policy refuses these first; never open one unchecked
        raise ValueError(f"{href} is not a GeoTIFF or JPEG 2000 object")
    with object_env(href):
        return rasterio.open(vsi_path(href), driver=driver)


def judge_object_error(href: str, exc: BaseException) -> Failure:
    """A failed open or read of an object, classified: a missing key (or one these
    credentials may not read: S3 answers 403 for a missing key without s3:ListBucket) is
    permanent and says so; the network and 5xx are transient."""
    text = gdal_text(exc)
    failure = classify_gdal(text, remote=True)
    if failure.reason == "asset_corrupt" and _MISSING.search(text):
        bucket = href.partition("://")[2].partition("/")[0]
        return Failure(
            False,
            "asset_not_found",
            f"{href}: no such object in bucket {bucket!r}, or the credentials of this "
            "environment may not read it (check the key, AWS_PROFILE or AWS_ACCESS_KEY_ID, and "
            "the endpoint: AWS_S3_ENDPOINT / AWS_ENDPOINT_URL)",
        )
    return failure
