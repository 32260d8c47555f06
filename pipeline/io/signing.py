"""Signed URLs: a collection's assets read through short-lived URLs (the Planetary Computer's
SAS tokens), made on the worker just before the read.

The workflow names a signer per collection (``signers: {collection: "package.module:callable"}``);
the name's shape is checked when the spec is loaded (:func:`check_signer_name`), the callable is
imported on the worker when first used (:func:`load_signer`), so the driver needs neither the
package nor its secrets. A signer turns an http(s) href into a URL that may differ only in its
query (:func:`sign` refuses another scheme, host, port or path, or a fragment): the href policy
judged the unsigned href, and the signature must not send the read anywhere else.

A signed URL is a secret: it lives only in the reader's open asset
(:class:`pipeline.io.remote.RemoteAsset`), is never logged, and never reaches an error message
(:func:`redact`), a report, a scene or a task name; scenes carry the signer's name only.
Object-storage and local assets are not signed (the environment's credentials apply).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import urlsplit

from pipeline.errors import HrefNotAllowed
from pipeline.io.retry import Failure

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
SIGNER_NAME = re.compile(rf"^{_DOTTED}:{_DOTTED}$")
Signer = Callable[[str], str]


def check_signer_name(name: str) -> str:
    """``name`` if it has the shape ``package.module:callable``; else ValueError saying so."""
    if not isinstance(name, str) or not SIGNER_NAME.match(name):
        raise ValueError(
            f"signer {name!r} must be an import path 'package.module:callable' (e.g. "
            "'planetary_computer:sign'), a function that turns an href into a signed URL"
        )
    return name


@lru_cache(maxsize=64)
def load_signer(name: str) -> Signer:
    """The signer named ``package.module:callable``, imported once per process. Raises a
    permanent :class:`Failure` (``signer_unavailable``) saying what is missing."""
    module_name, _, attr = check_signer_name(name).partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise Failure(
            False,
            "signer_unavailable",
            f"signer {name!r} cannot be imported on this worker ({type(exc).__name__}: {exc}); "
            "install its package in the workers' environment or fix the workflow's signers",
        ) from None
    if not callable(target):
        raise Failure(False, "signer_unavailable", f"signer {name!r} is not callable")
    return target  # type: ignore[return-value]


def sign(href: str, name: str) -> str:
    """``href`` signed by the signer ``name``: a URL with the same scheme, host, port and path
    (only the query may differ). A failing signer is transient (its token service may be
    down); a signer that moves the read elsewhere is refused (:class:`HrefNotAllowed`)."""
    signer = load_signer(name)
    try:
        signed = signer(href)
    except Exception as exc:  # noqa: BLE001 - a user's function: any failure is its own
        raise Failure(
            True, "signer_failed", f"signer {name!r} failed for {href}: {type(exc).__name__}"
        ) from None
    if not isinstance(signed, str):
        raise HrefNotAllowed(f"signer {name!r} returned {type(signed).__name__} for {href}")
    check_same_resource(href, signed, name)
    return signed


def check_same_resource(href: str, signed: str, name: str) -> None:
    """Refuse a signed URL that is not ``href`` with another query (the message names what
    changed, never the signed URL: it holds the secret)."""
    a, b = urlsplit(href), urlsplit(signed)
    for part, mine, theirs in (
        ("scheme", a.scheme.lower(), b.scheme.lower()),
        ("host and port", a.netloc.lower(), b.netloc.lower()),
        ("path", a.path, b.path),
    ):
        if mine != theirs:
            raise HrefNotAllowed(
                f"signer {name!r} changed the {part} of {href}; a signer may only add a query "
                "(a signature) to the URL it is given"
            )
    if b.fragment or any(not 33 <= ord(c) < 127 for c in signed):
        raise HrefNotAllowed(
            f"signer {name!r} returned a URL for {href} with a fragment, spaces, control or "
            "non-ASCII characters; a signer may only add a percent-encoded query"
        )


def redact(text: str, signed: str, href: str) -> str:
    """``text`` with the signed URL (and its query) replaced by the unsigned href."""
    if signed == href:
        return text
    text = text.replace(signed, href)
    query = urlsplit(signed).query
    return text.replace(query, "<signature>") if query else text
