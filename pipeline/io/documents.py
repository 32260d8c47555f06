"""Catalog documents (JSON, NDJSON) read safely: checked like links, regular files, bounded.

The catalog root is named by the operator and trusted; what it links to is not. Every other
document -- a ``child`` or ``item`` link, a file found in a catalog folder, an NDJSON file there,
each redirect hop of a remote document -- is checked by :meth:`HrefPolicy.check_link` first.
Local files are opened without blocking (a FIFO cannot stall the walk) and read only if they
are regular files; no document is read past :data:`MAX_DOCUMENT_BYTES` (``/dev/zero`` or a
huge file stops there), and no NDJSON line past it either.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline.errors import DocumentTooLarge, HrefNotAllowed
from pipeline.io.hrefs import HrefPolicy
from pipeline.io.http import fetch_document

MAX_DOCUMENT_BYTES = 32 * 1024 * 1024  # one catalog, collection, item or NDJSON line
_LINE_CHUNK = 1024 * 1024


def is_remote(href: str) -> bool:
    return "://" in href and not href.lower().startswith("file://")


def local_path(href: str) -> str:
    """A local href (plain path or file:// URL) as a path."""
    return unquote(urlsplit(href).path) if href.lower().startswith("file://") else href


def read_document(
    href: str, *, policy: HrefPolicy, trusted: bool = False, timeout: float = 30.0
) -> bytes:
    """The bytes of a JSON document (``trusted``: the catalog root the operator named).
    Raises HrefNotAllowed, DocumentTooLarge, or OSError."""
    if is_remote(href):
        return fetch_document(
            href, policy=policy, trusted=trusted, max_bytes=MAX_DOCUMENT_BYTES, timeout=timeout
        )
    path = local_path(href) if trusted else policy.check_link(href, what=f"link {href}")
    with _open_regular(path) as fh:
        data = fh.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentTooLarge(
            f"{href} is larger than {MAX_DOCUMENT_BYTES} bytes; Aquila does not read catalog "
            "documents that large (split it, or use NDJSON)"
        )
    return data


def read_lines(href: str, *, policy: HrefPolicy, trusted: bool = False) -> Iterator[bytes]:
    """The lines of a local NDJSON file, each at most :data:`MAX_DOCUMENT_BYTES` (a longer one
    raises DocumentTooLarge: the rest of the file cannot be trusted to be lines)."""
    path = local_path(href) if trusted else policy.check_link(href, what=f"NDJSON file {href}")
    with _open_regular(path) as fh:
        n = 0
        while True:
            line = fh.readline(MAX_DOCUMENT_BYTES + 1)
            if not line:
                return
            n += 1
            if len(line) > MAX_DOCUMENT_BYTES:
                raise DocumentTooLarge(
                    f"line {n} of {href} is longer than {MAX_DOCUMENT_BYTES} bytes; the rest of "
                    "the file is not read"
                )
            yield line


def folder_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, in name order, without following symlinked folders (a
    link loop or a link out of the catalog is not walked; a symlinked file is checked by the
    caller like any link)."""
    found: list[Path] = []
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        found.extend(Path(top) / name for name in files)
    return sorted(found)


def _open_regular(path: str):
    """A binary file object for ``path`` if it is a regular file (opened without blocking,
    checked on the open descriptor, so a swap after the check changes nothing)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise HrefNotAllowed(f"{path} is not a regular file; catalog documents must be files")
        fh = os.fdopen(fd, "rb", buffering=_LINE_CHUNK)
    except BaseException:  # cleanup, then re-raised as is (KeyboardInterrupt too)
        os.close(fd)
        raise
    return fh
