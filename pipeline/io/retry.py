"""Transient or permanent: what a failed read means, and how long to wait before the next try.

A read error is never turned into nodata. It is either

* **transient** (HTTP 408/425/429/5xx, a timeout, a dropped connection, a short read from a server
  whose file is intact): retried with capped exponential backoff and full jitter, up to
  :attr:`RetryPolicy.attempts` tries in all; or
* **permanent** (HTTP 404/410 ``asset_not_found``, 401/403 ``asset_forbidden``, a file that is
  not a GeoTIFF or whose tiles do not decode, a file shorter than its own tile index says
  ``asset_corrupt``): raised after that one attempt.

GDAL's own HTTP retries are off (``GDAL_HTTP_MAX_RETRY=0`` in :mod:`pipeline.io.reader`), so every
attempt counted here is one we chose to make. The policy is resolved in the driver and travels
to the workers inside :class:`pipeline.io.reader.ReaderSettings`; nothing here reads the
environment.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Failure reasons that depend on the window read, not the asset: a corrupt file's bad tile
#: spoils only the windows that reach it, so such a failure is not remembered for the asset
#: (:class:`pipeline.io.reader.RasterReader`)
PER_WINDOW = frozenset({"asset_corrupt"})
NOT_FOUND_STATUS = frozenset({404, 410})
FORBIDDEN_STATUS = frozenset({401, 403})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient read failure.

    The wait before try ``n + 1`` (``n`` = 1, 2, ...) is drawn uniformly from
    ``[0, min(cap_s, base_s * 2 ** (n - 1))]`` ("full jitter": workers that failed together do not
    retry together)."""

    attempts: int = 5  # tries in all, the first included
    base_s: float = 0.5
    cap_s: float = 20.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        return rng.uniform(0.0, self.ceiling(attempt))

    def ceiling(self, attempt: int) -> float:
        """The largest wait after failed try ``attempt``: exponential, then capped."""
        return min(self.cap_s, self.base_s * 2.0 ** max(attempt - 1, 0))


class Failure(Exception):
    """One failed try, classified. ``reason`` is a stable code for the run report."""

    def __init__(self, transient: bool, reason: str, message: str) -> None:
        super().__init__(transient, reason, message)
        self.transient, self.reason, self.message = transient, reason, message

    def __str__(self) -> str:
        return f"[{self.reason}] {self.message}"


def transient(message: str) -> Failure:
    return Failure(True, "asset_unavailable", message)


def from_status(status: int, what: str) -> Failure | None:
    """The failure an HTTP status means (None: not a failure, or not ours to judge)."""
    if 200 <= status < 300:
        return None
    if status in TRANSIENT_STATUS or status >= 500:
        return Failure(True, "asset_unavailable", f"{what}: HTTP {status}")
    if status in NOT_FOUND_STATUS:
        return Failure(False, "asset_not_found", f"{what}: HTTP {status} (not found)")
    if status in FORBIDDEN_STATUS:
        return Failure(False, "asset_forbidden", f"{what}: HTTP {status} (access refused)")
    if status in (405, 501):  # HEAD not supported: let the read itself decide
        return None
    return Failure(False, "asset_unreadable", f"{what}: HTTP {status}")


_HTTP_CODE = re.compile(r"HTTP response code: (\d{3})")
_SHORT_READ = re.compile(
    r"got \d+ bytes, expected \d+|Read error|unexpected end|short read", re.IGNORECASE
)
_NETWORK = re.compile(
    r"CURL error|timed out|Connection|resolve host|SSL|reset by peer", re.IGNORECASE
)
_MISSING = re.compile(r"No such file|does not exist", re.IGNORECASE)


def gdal_text(exc: BaseException) -> str:
    """Every message on the exception's chain (rasterio keeps GDAL's real error as a cause)."""
    parts, seen = [], 0
    e: BaseException | None = exc
    while e is not None and seen < 8:
        parts.append(str(e))
        e = e.__cause__ or e.__context__
        seen += 1
    return " <- ".join(parts)


def classify_gdal(text: str, *, remote: bool) -> Failure:
    """A GDAL error message, classified. A short read from a remote file is returned as
    transient here; the reader then checks the file's size to tell a flaky server from a
    truncated file (:func:`pipeline.io.reader.RasterReader`)."""
    code = _HTTP_CODE.search(text)
    if code:
        failure = from_status(int(code.group(1)), "GDAL")
        if failure is not None:
            return Failure(failure.transient, failure.reason, text)
    if remote and _NETWORK.search(text):
        return Failure(True, "asset_unavailable", text)
    if remote and _SHORT_READ.search(text):
        return Failure(True, "asset_unavailable", text)
    if not remote and _MISSING.search(text):
        return Failure(False, "asset_not_found", text)
    return Failure(False, "asset_corrupt", text)


def call_with_retries(
    attempt: Callable[[], T],
    *,
    policy: RetryPolicy,
    rng: random.Random,
    sleep: Callable[[float], None],
    on_retry: Callable[[Failure, int, float], None] | None = None,
) -> tuple[T, int]:
    """``(attempt(), tries used)``. A :class:`Failure` raised by ``attempt`` is retried while it
    is transient and tries remain; the last one is raised as :class:`Exhausted`."""
    tries = 0
    while True:
        tries += 1
        try:
            return attempt(), tries
        except Failure as failure:
            if not failure.transient or tries >= policy.attempts:
                raise Exhausted(failure, tries) from None
            wait = policy.delay(tries, rng)
            if on_retry is not None:
                on_retry(failure, tries, wait)
            sleep(wait)


class Exhausted(Exception):
    """The last failure of a read, after ``tries`` attempts."""

    def __init__(self, failure: Failure, tries: int) -> None:
        super().__init__(str(failure))
        self.failure, self.tries = failure, tries
