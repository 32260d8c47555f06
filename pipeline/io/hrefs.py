"""Asset links are checked against allowed roots before any I/O.

A catalog is untrusted input: an asset href must not be able to make a worker read a local file
outside the catalog, go through GDAL's virtual file systems, or open a VRT (which can point
anywhere). The policy is resolved once in the driver and passed down as a value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

from pipeline.errors import HrefNotAllowed

_ALLOWED_SUFFIXES = (".tif", ".tiff", ".gtiff")


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
            if not _suffix_ok(parsed.path):
                raise HrefNotAllowed(f"{where}: {href} is not a GeoTIFF (.tif/.tiff)")
            if ".." in parsed.path.split("/"):
                raise HrefNotAllowed(f"{where}: {href} contains a '..' segment")
            if not any(href.startswith(r) for r in self.roots if "://" in r):
                raise HrefNotAllowed(
                    f"{where}: {href} is outside the allowed roots {list(self.roots)}; "
                    "add its URL prefix to the workflow's allowed_roots if it is trusted"
                )
            return href
        raise HrefNotAllowed(f"{where}: scheme {parsed.scheme!r} of {href} is not allowed")


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
