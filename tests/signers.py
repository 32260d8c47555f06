"""Signers for tests (``tests.signers:append_token`` ...): what a workflow's ``signers`` names.

:data:`TOKEN` is the secret the test server (:mod:`tests.asset_server`, ``token=``) requires;
the tests check that it never appears in an error, a report or a log.
"""

from __future__ import annotations

import itertools
from urllib.parse import urlsplit, urlunsplit

TOKEN = "tok-S3CR3T-5d1c9e"
_CALLS = itertools.count()


def append_token(href: str) -> str:
    """The href with ``?token=TOKEN`` (the test server's signature)."""
    return f"{href}?token={TOKEN}"


def stale_then_fresh(href: str) -> str:
    """An expired signature first (the server answers 403), then a good one."""
    return f"{href}?token={'expired' if next(_CALLS) == 0 else TOKEN}"


def reset() -> None:
    global _CALLS
    _CALLS = itertools.count()


def other_host(href: str) -> str:
    """A signer that sends the read elsewhere: refused."""
    parts = urlsplit(href)
    return urlunsplit(parts._replace(netloc="169.254.169.254", query=f"token={TOKEN}"))


def other_path(href: str) -> str:
    return href.replace(".tif", "-copy.tif") + f"?token={TOKEN}"


def broken(href: str) -> str:
    raise ConnectionError(f"token service down (token {TOKEN} expired)")


not_callable = 42
