"""Asset links are checked against allowed roots before any I/O.

A catalog is untrusted input: an asset href must not be able to make a worker read a local file
outside the catalog, go through GDAL's virtual file systems, or open a VRT (which can point
anywhere). The policy is resolved once in the driver and passed down as a value.

What is enforced where (see README "Safe inputs"):

* :meth:`HrefPolicy.check` (driver, during normalisation, before any I/O): scheme, allowed roots
  (folders; URL roots match by exact origin -- scheme, host, port -- and path prefix), no
  ``/vsi…``, no VRT or other non-GeoTIFF suffix, no ``..``, no userinfo (``user@host``) or
  backslashes, no non-canonical numeric hosts (``2130706433``, ``0x7f.1``). A URL root that names
  a host (``http://127.0.0.1:8080/``) trusts exactly that origin, loopback included; a scheme-wide
  root (``https://``) admits public hosts only: loopback, private, link-local (the
  169.254.169.254 metadata service), multicast, reserved and their IPv6 forms, names such as
  ``localhost`` or ``*.internal``, and names that resolve to such addresses are refused.
* :func:`preflight` (worker, just before GDAL opens a URL): the same check again, then one
  ``HEAD`` request that does not follow redirects; a 3xx answer is refused, because GDAL's curl
  would follow it wherever it points (GDAL has no option to stop that). Its status tells the
  reader whether a failure is transient or permanent before GDAL is involved.
* the reader opens assets with the GTiff driver only, and GDAL's /vsicurl/ is limited to
  ``.tif``/``.tiff`` (:data:`pipeline.io.reader.GDAL_OPTIONS`).

Not covered: DNS answers that change between the check and GDAL's own lookup (rebinding); a
deployment that needs that guarantee puts workers behind an egress proxy or firewall.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import SplitResult, unquote, urljoin, urlparse, urlsplit

from pipeline.errors import HrefNotAllowed

_ALLOWED_SUFFIXES = (".tif", ".tiff", ".gtiff")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REFUSED_NAMES = ("localhost", "metadata", "metadata.google.internal", "instance-data")
_REFUSED_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain")
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")


@dataclass(frozen=True)
class HrefPolicy:
    """Which roots asset links may point into: absolute folders and http(s) URL prefixes."""

    roots: tuple[str, ...]

    @classmethod
    def for_catalog(cls, catalog: str, extra_roots: tuple[str, ...] | None = None) -> HrefPolicy:
        """Default policy: the catalog's own folder (or URL folder), unless roots are given."""
        if extra_roots:
            return cls(tuple(_normalise_root(r) for r in extra_roots))
        if "://" in catalog and not catalog.startswith("file://"):
            parsed = urlparse(catalog)
            return cls((f"{parsed.scheme}://{parsed.netloc}/",))
        path = Path(catalog.removeprefix("file://"))
        folder = path if path.is_dir() else path.parent
        return cls((_normalise_root(str(folder)),))

    def check(self, href: str, *, item_id: str = "?", asset: str = "?") -> str:
        """Return the href in canonical form, or raise HrefNotAllowed saying why and what to do."""
        where = f"item {item_id!r} asset {asset!r}"
        lowered = href.lower()
        if lowered.startswith("/vsi") or "/vsi" in lowered.split("://")[-1][:8]:
            raise HrefNotAllowed(f"{where}: GDAL virtual file system links ({href}) are refused")
        parsed = urlparse(href)
        scheme = parsed.scheme.lower() if len(parsed.scheme) > 1 else ""
        if scheme in ("", "file"):
            raw = unquote(parsed.path) if scheme == "file" else href
            canonical = os.path.realpath(raw)
            if not _suffix_ok(canonical):
                raise HrefNotAllowed(
                    f"{where}: {href} is not a GeoTIFF (.tif/.tiff); VRT and other formats can "
                    "point anywhere and are refused for assets"
                )
            if not any(_inside(canonical, r) for r in self.roots if "://" not in r):
                raise HrefNotAllowed(
                    f"{where}: {href} is outside the allowed roots {list(self.roots)}; "
                    "add its folder to the workflow's allowed_roots if it is trusted"
                )
            return canonical
        if scheme in ("http", "https"):
            self._check_url(href, where)
            return href
        raise HrefNotAllowed(f"{where}: scheme {parsed.scheme!r} of {href} is not allowed")

    def check_metadata(self, href: str, *, item_id: str = "?", asset: str = "?") -> str:
        """A vendor metadata file (MTL, MTD, XML: not a GeoTIFF) that the driver may read: a
        local file inside the allowed roots (canonical path returned). URLs are returned as
        they are: metadata is never fetched, so they cannot be abused."""
        where = f"item {item_id!r} asset {asset!r}"
        parsed = urlparse(href)
        scheme = parsed.scheme.lower() if len(parsed.scheme) > 1 else ""
        if scheme not in ("", "file"):
            return href
        if href.lower().startswith("/vsi"):
            raise HrefNotAllowed(f"{where}: GDAL virtual file system links ({href}) are refused")
        raw = unquote(parsed.path) if scheme == "file" else href
        canonical = os.path.realpath(raw)
        if not any(_inside(canonical, r) for r in self.roots if "://" not in r):
            raise HrefNotAllowed(
                f"{where}: {href} is outside the allowed roots {list(self.roots)}; "
                "add its folder to the workflow's allowed_roots if it is trusted"
            )
        return canonical

    def _check_url(self, href: str, where: str) -> None:
        url = urlsplit(href)
        if "@" in url.netloc or "\\" in href or any(ord(c) < 33 for c in href):
            raise HrefNotAllowed(f"{where}: {href} has userinfo, backslashes or control characters")
        if not _suffix_ok(url.path):
            raise HrefNotAllowed(f"{where}: {href} is not a GeoTIFF (.tif/.tiff)")
        if ".." in unquote(url.path).replace("\\", "/").split("/"):
            raise HrefNotAllowed(f"{where}: {href} contains a '..' segment")
        host = _host(url)
        if host is None:
            raise HrefNotAllowed(f"{where}: {href} has no valid host and port")
        named = None
        for root in (r for r in self.roots if "://" in r):
            named = _root_match(url, host, root)
            if named is not None:
                break
        if named is None:
            raise HrefNotAllowed(
                f"{where}: {href} is outside the allowed roots {list(self.roots)}; "
                "add its URL prefix to the workflow's allowed_roots if it is trusted"
            )
        if not named:  # a scheme-wide root: public hosts only
            why = refused_host(host)
            if why:
                raise HrefNotAllowed(
                    f"{where}: {href}: host {host} {why}; name its origin in allowed_roots "
                    "if this deployment trusts it"
                )


def resolve_href(href: str, base: str | None) -> str:
    """Make an asset href absolute against the item's own location."""
    if "://" in href or href.startswith("/") or base is None:
        return href
    if "://" in base and not base.startswith("file://"):
        return urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(base.removeprefix("file://")), href))


def _normalise_root(root: str) -> str:
    if "://" in root and not root.startswith("file://"):
        return root if root.endswith("/") else root + "/"
    return os.path.realpath(root.removeprefix("file://"))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _suffix_ok(path: str) -> bool:
    return path.lower().endswith(_ALLOWED_SUFFIXES)


# --------------------------------------------------------------------------- hosts


def _host(url: SplitResult) -> str | None:
    try:
        port = url.port
    except ValueError:
        return None
    host = (url.hostname or "").lower().rstrip(".")
    if not host or (port is not None and not 0 < port < 65536):
        return None
    return host


def _port(url: SplitResult) -> int:
    return url.port or _DEFAULT_PORTS.get(url.scheme.lower(), 0)


def _root_match(url: SplitResult, host: str, root: str) -> bool | None:
    """None: the URL is not under the root; True: under a root that names its origin;
    False: under a scheme-wide root (``https://``)."""
    r = urlsplit(root)
    if r.scheme.lower() != url.scheme.lower():
        return None
    if not r.netloc:
        return False
    if _host(r) != host or _port(r) != _port(url):
        return None
    prefix = r.path if r.path.endswith("/") else r.path + "/"
    return True if (url.path + "/").startswith(prefix) or prefix == "/" else None


def refused_host(host: str, *, resolve: bool = True) -> str | None:
    """Why a host may not be read from a scheme-wide root, or None if it is public."""
    host = host.strip("[]").lower().rstrip(".")
    if host in _REFUSED_NAMES or host.endswith(_REFUSED_SUFFIXES):
        return "is an internal name"
    try:
        return _refused_address(ipaddress.ip_address(host))
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        return "is a non-canonical numeric address"
    if not resolve:
        return None
    for address in _resolve(host):
        why = _refused_address(ipaddress.ip_address(address))
        if why:
            return f"resolves to {address}, which {why.removeprefix('is ')}"
    return None


def _refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if mapped is not None:
            return _refused_address(mapped)
    if ip.is_loopback:
        return "is a loopback address"
    if ip.is_link_local:
        return "is a link-local address (cloud metadata services live there)"
    if not ip.is_global or ip.is_multicast:
        return "is not a public address (private, reserved or multicast)"
    return None


@lru_cache(maxsize=1024)
def _resolve(host: str) -> tuple[str, ...]:
    """The host's addresses; () if it does not resolve (then the read fails on its own)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return ()
    return tuple(sorted({str(info[4][0]).split("%")[0] for info in infos}))


@dataclass(frozen=True)
class HeadAnswer:
    """What the preflight ``HEAD`` got: a status and length, or the network error instead."""

    status: int | None = None
    length: int | None = None  # Content-Length (bytes), when given
    error: str | None = None  # e.g. a timeout or a refused connection (status is then None)


def preflight(href: str, policy: HrefPolicy | None, *, timeout: float = 10.0) -> HeadAnswer:
    """Just before GDAL opens a URL: check it again, then ask once (HEAD, redirects not
    followed) and refuse a 3xx answer. Raises :class:`HrefNotAllowed`; any other answer (or a
    network error) is returned for the reader to judge (:mod:`pipeline.io.retry`)."""
    import http.client

    if policy is not None:
        policy.check(href)
    url = urlsplit(href)
    if url.scheme.lower() not in _DEFAULT_PORTS:
        return HeadAnswer()
    conn_type = (
        http.client.HTTPSConnection if url.scheme.lower() == "https" else http.client.HTTPConnection
    )
    conn = conn_type(url.hostname or "", url.port, timeout=timeout)
    target = url.path + (f"?{url.query}" if url.query else "")
    try:
        conn.request("HEAD", target or "/")
        response = conn.getresponse()
        status, location = response.status, response.getheader("Location")
        length = response.getheader("Content-Length")
    except (OSError, http.client.HTTPException) as exc:
        return HeadAnswer(error=f"HEAD {href}: {type(exc).__name__}: {exc}")
    finally:
        conn.close()
    if 300 <= status < 400:
        raise HrefNotAllowed(
            f"{href} answers {status} redirecting to {location!r}; redirects are not followed "
            "(GDAL would follow them anywhere): point the catalog at the final URL"
        )
    return HeadAnswer(status, int(length) if length and length.isdigit() else None)
