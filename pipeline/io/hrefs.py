"""Links are checked against allowed roots before any I/O, and again at every request.

A catalog is untrusted input: an asset href or a catalog link must not be able to make Aquila
read a local file outside the allowed roots, go through GDAL's virtual file systems, open a VRT
(which can point anywhere), or reach an internal address. The policy is resolved once in the
driver and passed down as a value.

What is enforced where (see README "Safe inputs"):

* :meth:`HrefPolicy.check` (assets; driver during normalisation, and worker before every
  request): scheme, allowed roots, no ``/vsi…``, no suffix but a GeoTIFF's or a JPEG 2000's
  (:func:`raster_driver`: GTiff and JP2OpenJPEG, never VRT or another driver), no ``..``
  (also percent-encoded), no userinfo (``user@host``), backslashes or control characters, no
  non-canonical numeric hosts (``2130706433``, ``0x7f.1``).
* Object storage (``s3://bucket/key``, ``gs://``, ``az://``; :mod:`pipeline.io.objectstore`
  reads them through GDAL's ``/vsis3/`` and kin, which only Aquila may name): a root such as
  ``s3://bucket/prefix/`` admits the keys below it by whole segments, nothing else does (a
  scheme-wide ``s3://`` root admits no bucket); the href must be plain: a valid bucket name, a
  key of non-empty segments without ``.``/``..``, and no ``%``, ``?``, ``#``, ``@``, backslashes,
  spaces, control or non-ASCII characters (credentials come from the environment, never from a
  link). Refused before any request.
* :meth:`HrefPolicy.check_link` (catalog ``child``/``item`` links, folder and NDJSON entries,
  remote JSON and each of its redirect hops): the same roots and host rules without the GeoTIFF
  rule; a local link must be a regular file once symlinks are resolved.
* Roots match by parsed scheme, host, port and whole path segments (:func:`relative_to`), never
  by string prefix: ``http://h/data`` does not admit ``http://h/database/x.tif``. A URL root that
  names a host (``http://127.0.0.1:8080/``) trusts exactly that origin, loopback included; a
  scheme-wide root (``https://``) admits public hosts only: loopback, private, unique- and
  site-local, link-local (the 169.254.169.254 metadata service), multicast, reserved and
  unspecified addresses, the IPv4 embedded in IPv4-mapped, -compatible and -translated, NAT64,
  6to4 and Teredo IPv6 forms, names such as ``localhost`` or ``*.internal``, and names that
  resolve to such addresses are refused.
* :meth:`HrefPolicy.addresses` gives the addresses that were judged, and
  :mod:`pipeline.io.http` connects to those, not to a second DNS answer.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import stat
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import SplitResult, unquote, urljoin, urlparse, urlsplit

from pipeline.errors import HrefNotAllowed

RASTER_DRIVERS = {".tif": "GTiff", ".tiff": "GTiff", ".gtiff": "GTiff", ".jp2": "JP2OpenJPEG"}
"""The only raster drivers an asset is opened with, by its link's suffix: GeoTIFF (COG) and
JPEG 2000. Never VRT or another driver, whose files can point anywhere."""
_ALLOWED_SUFFIXES = tuple(RASTER_DRIVERS)
OBJECT_SCHEMES = ("s3", "gs", "az")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]$")
_OBJECT_REFUSED = frozenset("%?#@\\;")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REFUSED_NAMES = ("localhost", "metadata", "metadata.google.internal", "instance-data")
_REFUSED_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain")
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class HrefPolicy:
    """Which roots links may point into: absolute folders and http(s) URL prefixes."""

    roots: tuple[str, ...]

    @classmethod
    def for_catalog(cls, catalog: str, extra_roots: tuple[str, ...] | None = None) -> HrefPolicy:
        """Default policy: the catalog's own folder (or URL origin), unless roots are given."""
        if extra_roots:
            return cls(tuple(_normalise_root(r) for r in extra_roots))
        if _is_url(catalog):
            parsed = urlparse(catalog)
            return cls((f"{parsed.scheme}://{parsed.netloc}/",))
        path = Path(catalog.removeprefix("file://"))
        folder = path if path.is_dir() else path.parent
        return cls((_normalise_root(str(folder)),))

    def with_catalog(self, catalog: str) -> HrefPolicy:
        """These roots plus the catalog's own folder or origin (where its links may point)."""
        extra = HrefPolicy.for_catalog(catalog).roots
        return HrefPolicy(self.roots + tuple(r for r in extra if r not in self.roots))

    def check(self, href: str, *, item_id: str = "?", asset: str = "?") -> str:
        """An asset link in canonical form, or HrefNotAllowed saying why and what to do."""
        return self._check(href, f"item {item_id!r} asset {asset!r}", geotiff=True)

    def check_link(self, href: str, *, what: str = "link") -> str:
        """A catalog link (a JSON document: child, item, folder or NDJSON entry, redirect hop) in
        canonical form: inside the roots, a local one a regular file after symlinks."""
        canonical = self._check(href, what, geotiff=False)
        if _is_url(canonical):
            return canonical
        try:
            mode = os.stat(canonical).st_mode
        except OSError:
            return canonical  # reading it fails with its own message
        if not stat.S_ISREG(mode):
            raise HrefNotAllowed(f"{what}: {href} is not a regular file; links must name files")
        return canonical

    def check_metadata(self, href: str, *, item_id: str = "?", asset: str = "?") -> str:
        """A vendor metadata file (MTL, MTD, XML: not a GeoTIFF) that the driver may read: a
        local file inside the allowed roots (canonical path returned). URLs are returned as
        they are: metadata is never fetched, so they cannot be abused."""
        if _is_url(href):
            return href
        return self._check(href, f"item {item_id!r} asset {asset!r}", geotiff=False)

    def plainly_allows(self, href: str) -> bool:
        """A fast yes for the common asset link, never a yes that :meth:`check` would refuse:
        an http(s) GeoTIFF URL without query, fragment, escapes, userinfo or '..', under a root
        that names its origin (a scheme-wide root always needs the full host check)."""
        if not href.startswith(("https://", "http://")) or any(c in href for c in "?#;%\\@"):
            return False
        if not _suffix_ok(href) or ".." in href.split("/") or any(ord(c) < 33 for c in href):
            return False
        url = urlsplit(href)
        host = _host(url)
        return host is not None and any(_url_root_match(url, host, r) for r in self.url_roots)

    @property
    def url_roots(self) -> tuple[str, ...]:
        return tuple(r for r in self.roots if _is_url(r))

    def addresses(self, href: str) -> tuple[str, ...] | None:
        """Where a request for a checked URL may connect: None under a root that names its
        origin (trusted by name), else every address the host resolves to, each judged public
        (HrefNotAllowed otherwise); () if the name does not resolve."""
        url = urlsplit(href)
        host = _host(url)
        if host is None:
            raise HrefNotAllowed(f"{href} has no valid host and port")
        if any(_url_root_match(url, host, r) for r in self.url_roots):
            return None
        try:
            found: tuple[str, ...] = (str(ipaddress.ip_address(host.strip("[]"))),)
        except ValueError:
            found = _resolve(host)
        for address in found:
            why = _refused_address(ipaddress.ip_address(address))
            if why:
                raise HrefNotAllowed(f"{href}: host {host} resolves to {address}, which {why[3:]}")
        return found

    # ------------------------------------------------------------------ internals

    def _check(self, href: str, where: str, *, geotiff: bool) -> str:
        lowered = href.lower()
        if lowered.startswith("/vsi") or "/vsi" in lowered.split("://")[-1][:8]:
            raise HrefNotAllowed(
                f"{where}: GDAL virtual file system links ({href}) are refused; link the file "
                "or URL itself"
            )
        parsed = urlparse(href)
        scheme = parsed.scheme.lower() if len(parsed.scheme) > 1 else ""
        if scheme in ("", "file"):
            return self._check_path(href, unquote(parsed.path) if scheme else href, where, geotiff)
        if scheme in _DEFAULT_PORTS:
            self._check_url(href, where, geotiff)
            return href
        if scheme in OBJECT_SCHEMES:
            if not geotiff:
                raise HrefNotAllowed(
                    f"{where}: {href}: catalog documents are not read from object storage; "
                    "serve the catalog from a folder or over http(s)"
                )
            return self._check_object(href, where)
        raise HrefNotAllowed(f"{where}: scheme {parsed.scheme!r} of {href} is not allowed")

    def _check_path(self, href: str, raw: str, where: str, geotiff: bool) -> str:
        if "\x00" in raw:
            raise HrefNotAllowed(f"{where}: {href!r} contains a NUL byte")
        canonical = os.path.realpath(raw)
        if geotiff and not _suffix_ok(canonical):
            raise HrefNotAllowed(
                f"{where}: {href} is not a GeoTIFF (.tif/.tiff) or JPEG 2000 (.jp2); VRT and "
                "other formats can point anywhere and are refused for assets"
            )
        if not any(_inside(canonical, r) for r in self.roots if not _is_url(r)):
            raise HrefNotAllowed(
                f"{where}: {href} is outside the allowed roots {list(self.roots)}; "
                "add its folder to the workflow's allowed_roots if it is trusted"
            )
        return canonical

    def _check_url(self, href: str, where: str, geotiff: bool) -> None:
        url = urlsplit(href)
        if "@" in url.netloc or "\\" in href or any(not 33 <= ord(c) < 127 for c in href):
            raise HrefNotAllowed(
                f"{where}: {href} has userinfo, backslashes, spaces, control or non-ASCII "
                "characters; links must be percent-encoded URLs (RFC 3986)"
            )
        if geotiff and not _suffix_ok(url.path):
            raise HrefNotAllowed(
                f"{where}: {href} is not a GeoTIFF (.tif/.tiff) or JPEG 2000 (.jp2)"
            )
        if ".." in unquote(url.path).replace("\\", "/").split("/"):
            raise HrefNotAllowed(f"{where}: {href} contains a '..' segment")
        host = _host(url)
        if host is None:
            raise HrefNotAllowed(f"{where}: {href} has no valid host and port")
        matches = [_url_root_match(url, host, r) for r in self.url_roots]
        if not any(m is not None for m in matches):
            raise HrefNotAllowed(
                f"{where}: {href} is outside the allowed roots {list(self.roots)}; "
                "add its URL prefix to the workflow's allowed_roots if it is trusted"
            )
        if not any(matches):  # only scheme-wide roots admit it: public hosts only
            why = refused_host(host)
            if why:
                raise HrefNotAllowed(
                    f"{where}: {href}: host {host} {why}; name its origin in allowed_roots "
                    "if this deployment trusts it"
                )

    def _check_object(self, href: str, where: str) -> str:
        """An object-storage href, canonical (lower-case scheme), inside a bucket root."""
        scheme, _, rest = href.partition("://")
        if any(c in _OBJECT_REFUSED or not 33 <= ord(c) < 127 for c in href):
            raise HrefNotAllowed(
                f"{where}: {href} has '%', '?', '#', '@', ';', backslashes, spaces, control or "
                "non-ASCII characters; an object link is scheme://bucket/key, plain, and "
                "credentials come from the environment (AWS_PROFILE...), never from a link"
            )
        bucket, _, key = rest.partition("/")
        segments = key.split("/")
        if not _BUCKET.match(bucket) or not key or any(s in ("", ".", "..") for s in segments):
            raise HrefNotAllowed(
                f"{where}: {href} is not a plain {scheme}://bucket/key link (a valid bucket "
                "name, then a key without empty, '.' or '..' segments)"
            )
        if not _suffix_ok(key):
            raise HrefNotAllowed(
                f"{where}: {href} is not a GeoTIFF (.tif/.tiff) or JPEG 2000 (.jp2)"
            )
        canonical = f"{scheme.lower()}://{bucket}/{key}"
        if not any(_object_root_match(canonical, r) for r in self.roots):
            raise HrefNotAllowed(
                f"{where}: {href} is outside the allowed roots {list(self.roots)}; add its "
                f"bucket and prefix ({scheme.lower()}://{bucket}/...) to the workflow's "
                "allowed_roots if it is trusted"
            )
        return canonical


def raster_driver(path: str) -> str | None:
    """The GDAL driver an asset path (or URL path, or object key) is opened with, by suffix:
    ``GTiff`` or ``JP2OpenJPEG``; None for any other file (refused)."""
    lowered = path.lower()
    for suffix, driver in RASTER_DRIVERS.items():
        if lowered.endswith(suffix):
            return driver
    return None


def is_object_href(href: str) -> bool:
    """An object-storage link (``s3://``, ``gs://``, ``az://``)."""
    return href.partition("://")[0].lower() in OBJECT_SCHEMES and "://" in href


def _object_root_match(href: str, root: str) -> bool:
    """A canonical object href below an object root that names its bucket, by whole segments:
    ``s3://b/data/`` admits ``s3://b/data/x.tif``, not ``s3://b/database/x.tif``."""
    scheme, _, rest = root.partition("://")
    if scheme.lower() not in OBJECT_SCHEMES or not href.startswith(f"{scheme.lower()}://"):
        return False
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket):
        return False  # a scheme-wide root (s3://) admits no bucket
    h_bucket, _, key = href.partition("://")[2].partition("/")
    return h_bucket == bucket and _rest(key, prefix, "/") is not None


def resolve_href(href: str, base: str | None) -> str:
    """Make an asset href absolute against the item's own location."""
    if "://" in href or href.startswith("/") or base is None:
        return href
    if _is_url(base):
        return urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(base.removeprefix("file://")), href))


def relative_to(href: str, prefix: str) -> str | None:
    """The part of ``href`` below ``prefix`` ('' for the prefix itself), or None if it is not
    below it. URLs compare by scheme, host, port and whole path segments, local paths by whole
    segments: ``http://h/data`` is not a prefix of ``http://h/database/x.tif``, nor
    ``http://h:8000`` of ``http://h:80001/``, nor ``/data/img`` of ``/data/imgX/a.tif``."""
    if _is_url(href) != _is_url(prefix):
        return None
    if not _is_url(href):
        return _rest(href.removeprefix("file://"), prefix.removeprefix("file://"), os.sep)
    h, p = urlsplit(href), urlsplit(prefix)
    host = _host(h)
    if not p.netloc or host is None or h.scheme.lower() != p.scheme.lower():
        return None
    if _host(p) != host or _port(p) != _port(h):
        return None
    rest = _rest(h.path, p.path, "/")
    if rest is None:
        return None
    return rest + (f"?{h.query}" if h.query else "")


def _rest(path: str, root: str, sep: str) -> str | None:
    segments = [s for s in path.split(sep) if s]
    head = [s for s in root.split(sep) if s]
    if segments[: len(head)] != head:
        return None
    return sep.join(segments[len(head) :])


def _is_url(href: str) -> bool:
    return "://" in href and not href.lower().startswith("file://")


def _normalise_root(root: str) -> str:
    if _is_url(root):
        return root if root.endswith("/") else root + "/"
    return os.path.realpath(root.removeprefix("file://"))


def _inside(path: str, root: str) -> bool:
    return _rest(path, root, os.sep) is not None


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
    try:
        return url.port or _DEFAULT_PORTS.get(url.scheme.lower(), 0)
    except ValueError:
        return -1


def _url_root_match(url: SplitResult, host: str, root: str) -> bool | None:
    """None: the URL is not under the root; True: under a root that names its origin;
    False: under a scheme-wide root (``https://``)."""
    r = _split_root(root)
    if r.scheme.lower() != url.scheme.lower():
        return None
    if not r.netloc:
        return False
    if _host(r) != host or _port(r) != _port(url):
        return None
    return True if _rest(url.path, r.path, "/") is not None else None


@lru_cache(maxsize=256)
def _split_root(root: str) -> SplitResult:
    return urlsplit(root)


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


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 is the last 32 bits
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: a local translator
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765: ::ffff:0:a.b.c.d
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries (mapped, translated, compatible, NAT64, 6to4,
    Teredo server and client): a connection to it may reach them."""
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip in _TRANSLATED or ip in _NAT64 or (ip in _COMPATIBLE and int(ip) > 1):
        return (low,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    return ()


def _refused_address(ip: IPAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return "is a local-use NAT64 address (it may reach any internal IPv4 host)"
        embedded = embedded_ipv4(ip)
        for v4 in embedded:
            why = _refused_address(v4)
            if why:
                return f"{why} (embedded in the IPv6 address {ip})"
        if embedded:
            return None
        if ip.is_site_local:
            return "is a site-local address (fec0::/10, private)"
    if ip.is_loopback:
        return "is a loopback address"
    if ip.is_link_local:
        return "is a link-local address (cloud metadata services live there)"
    if not ip.is_global or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "is not a public address (private, reserved or multicast)"
    return None


_DNS_TTL_S = 300.0  # a long-lived worker asks again after this; a failure is never cached
_DNS: dict[str, tuple[float, tuple[str, ...]]] = {}
_DNS_LOCK = threading.Lock()


def _resolve(host: str) -> tuple[str, ...]:
    """The host's addresses; () if it does not resolve (then the request fails on its own).
    Answers are kept a few minutes, so that the check and the connection see the same ones."""
    now = time.monotonic()
    with _DNS_LOCK:
        known = _DNS.get(host)
    if known is not None and now - known[0] < _DNS_TTL_S:
        return known[1]
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return ()
    found = tuple(sorted({str(info[4][0]).split("%")[0] for info in infos}))
    with _DNS_LOCK:
        if len(_DNS) > 4096:
            _DNS.clear()
        _DNS[host] = (now, found)
    return found
