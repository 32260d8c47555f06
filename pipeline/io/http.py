"""HTTP requests that go only where the href policy allows: one request, no redirect followed.

Every request Aquila makes for an asset or a catalog document goes through :func:`request`: the
URL is checked by the policy first (:meth:`HrefPolicy.check` for assets,
:meth:`HrefPolicy.check_link` for JSON), the connection goes to an address that was judged
(:meth:`HrefPolicy.addresses`: no second DNS answer between the check and the connection), a
3xx answer is returned to the caller and never followed here, and a body is read up to a cap.
Callers decide what a redirect means: an asset read refuses it (:mod:`pipeline.io.remote`),
a catalog fetch checks the next hop like any link (:func:`fetch_document`).

Connections are kept alive per thread and origin (a COG is read with many range requests).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache, partial
from urllib.parse import urljoin, urlsplit

from pipeline.errors import DocumentTooLarge, HrefNotAllowed
from pipeline.io.hrefs import HrefPolicy

MAX_REDIRECTS = 5  # hops a catalog document may take, each one checked
_POOL_SIZE = 32  # idle connections kept per thread
_RETRY_ON_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
class Reply:
    """One answer: its status, headers (lower-case names) and the body read (bounded)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def redirect(self) -> bool:
        return 300 <= self.status < 400

    def length(self) -> int | None:
        """The whole resource's size (bytes): Content-Range's total, else Content-Length."""
        total = (self.header("content-range") or "").rpartition("/")[2]
        if total.isdigit():
            return int(total)
        value = self.header("content-length") or ""
        return int(value) if value.isdigit() and self.status == 200 else None


def request(
    url: str,
    *,
    policy: HrefPolicy | None,
    document: bool = False,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    max_body: int = 0,
    strict: bool = True,
) -> Reply:
    """One request, checked by ``policy`` (None: a trusted URL, given by the operator), to a
    judged address; the body read up to ``max_body`` bytes (more: :class:`DocumentTooLarge`
    if ``strict``, else the rest is left unread).
    Raises :class:`HrefNotAllowed`, or ``OSError`` / ``http.client.HTTPException`` for the
    network."""
    addresses = None
    if policy is not None:
        if document:
            policy.check_link(url, what=f"{method} {url}")
        else:
            policy.check(url)
        addresses = policy.addresses(url)
    if addresses == ():
        raise OSError(f"{url}: the host name does not resolve")
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = (parts.scheme.lower(), parts.hostname or "", parts.port, addresses)
    for fresh in (False, True):
        conn, reused = _connection(key, timeout, fresh=fresh)
        try:
            conn.request(method, target, headers=dict(headers or {}))
            response = conn.getresponse()
            reply = _reply(url, response, method, max_body, strict)
        except _RETRY_ON_STALE:
            _drop(key)
            if reused and not fresh:
                continue  # an idle keep-alive connection the server had closed: once more
            raise
        except BaseException:  # cleanup, then re-raised as is (KeyboardInterrupt too)
            _drop(key)
            raise
        if response.will_close or not response.isclosed():
            _drop(key)  # the server closes it, or a body was left unread
        return reply
    raise AssertionError("unreachable")  # pragma: no cover


def head(url: str, *, policy: HrefPolicy | None, timeout: float = 30.0) -> Reply:
    """A checked ``HEAD`` (redirects not followed)."""
    return request(url, policy=policy, method="HEAD", timeout=timeout)


def get_range(
    url: str, start: int, end: int, *, policy: HrefPolicy | None, timeout: float = 30.0
) -> Reply:
    """Bytes ``start..end`` (inclusive) of an asset: a checked range ``GET``. A server that
    ignores ``Range`` (200) is answered from its body, read no further than ``end``."""
    n = end - start + 1
    reply = request(
        url,
        policy=policy,
        headers={"Range": f"bytes={start}-{end}"},
        timeout=timeout,
        max_body=end + 1,  # a 200 (whole file) is read up to the end of the range, no further
        strict=False,
    )
    if reply.status == 200:  # the whole file from byte 0: its Content-Length is the size
        return Reply(200, reply.headers, reply.body[start : end + 1])
    if reply.status == 206 and len(reply.body) > n:
        return Reply(206, reply.headers, reply.body[:n])
    return reply


def fetch_document(
    url: str, *, policy: HrefPolicy, trusted: bool, max_bytes: int, timeout: float = 30.0
) -> bytes:
    """A catalog document over http(s): ``url`` checked as a link unless ``trusted`` (the
    catalog root the operator named), every redirect hop checked as a link, at most
    :data:`MAX_REDIRECTS` hops, the body at most ``max_bytes``. Raises HrefNotAllowed,
    DocumentTooLarge, or OSError (an HTTP error status, the network)."""
    current, checked = url, not trusted
    for _ in range(MAX_REDIRECTS + 1):
        reply = request(
            current,
            policy=policy if checked else None,
            document=True,
            timeout=timeout,
            max_body=max_bytes,
        )
        if not reply.redirect:
            if not 200 <= reply.status < 300:
                raise OSError(f"GET {current}: HTTP {reply.status}")
            return reply.body
        location = reply.header("location")
        if not location:
            raise OSError(f"GET {current}: HTTP {reply.status} without a Location")
        current, checked = urljoin(current, location), True
    raise OSError(f"{url}: more than {MAX_REDIRECTS} redirects")


def refuse_redirect(url: str, reply: Reply) -> HrefNotAllowed:
    """The error for an asset request answered with a redirect (never followed)."""
    return HrefNotAllowed(
        f"{url} answers {reply.status} redirecting to {reply.header('location')!r}; asset "
        "redirects are not followed: point the catalog at the final URL, or mirror it"
    )


# --------------------------------------------------------------------------- internals


def _reply(
    url: str, response: http.client.HTTPResponse, method: str, cap: int, strict: bool
) -> Reply:
    headers = {k.lower(): v for k, v in response.getheaders()}
    if method == "HEAD" or 300 <= response.status < 400:
        return Reply(response.status, headers)  # a redirect's body is never read
    declared = headers.get("content-length", "")
    if strict and declared.isdigit() and int(declared) > cap:
        raise DocumentTooLarge(f"{url} is {declared} bytes, over the cap of {cap} bytes")
    body = response.read(cap + 1 if strict else cap)
    if strict and len(body) > cap:
        raise DocumentTooLarge(f"{url} is larger than the cap of {cap} bytes")
    return Reply(response.status, headers, body)


_LOCAL = threading.local()


def _pool() -> OrderedDict:
    pool = getattr(_LOCAL, "pool", None)
    if pool is None:
        pool = _LOCAL.pool = OrderedDict()
    return pool


def _connection(
    key: tuple, timeout: float, *, fresh: bool
) -> tuple[http.client.HTTPConnection, bool]:
    """This thread's idle connection for ``key`` (scheme, host, port, addresses), or a new one."""
    pool = _pool()
    conn = None if fresh else pool.get(key)
    if conn is not None:
        pool.move_to_end(key)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, True
    scheme, host, port, addresses = key
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=_tls())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    if addresses is not None:  # connect where the policy looked, not to a new DNS answer
        conn._create_connection = partial(_connect_any, addresses)  # type: ignore[attr-defined]
    _drop(key)
    pool[key] = conn
    while len(pool) > _POOL_SIZE:
        pool.popitem(last=False)[1].close()
    return conn, False


def _drop(key: tuple) -> None:
    conn = _pool().pop(key, None)
    if conn is not None:
        conn.close()


def _connect_any(addresses: tuple[str, ...], address, timeout=None, source_address=None):
    """socket.create_connection to each judged address in turn (the host name is ignored)."""
    error: OSError | None = None
    for ip in addresses:
        try:
            return socket.create_connection((ip, address[1]), timeout, source_address)
        except OSError as exc:
            error = exc
    raise error or OSError("no address to connect to")


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()
