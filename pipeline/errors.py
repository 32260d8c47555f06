"""One error tree for Aquila.

Every error carries a stable ``reason`` code (used in run reports and tests) and a message that
says what went wrong, where (item/asset/key), and what to change. Errors are grouped by what the
caller should do: fix the input (:class:`InputError`), or look at the system (:class:`RunError`).
"""

from __future__ import annotations

import re


class AquilaWarning(UserWarning):
    """Warnings raised by Aquila itself (tests turn them into errors)."""


class AquilaError(Exception):
    """Base of every Aquila error. ``reason`` is a stable, machine-readable code."""

    reason = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InputError(AquilaError):
    """The user's input is wrong: a spec, a catalog, an item. Fix the input and rerun."""

    reason = "bad_input"


class SpecError(InputError):
    """The workflow spec is not valid (unknown key, wrong type, unsafe YAML, missing file)."""

    reason = "spec_invalid"


class CatalogError(InputError):
    """The catalog or STAC API cannot be opened or searched at all."""

    reason = "catalog_unreadable"


class SceneRejected(InputError):
    """One item cannot be used; the run goes on without it and the report names it."""

    reason = "scene_rejected"

    def __init__(self, item_id: str, reason: str, message: str) -> None:
        super().__init__(f"item {item_id!r}: {message}", reason=reason)
        self.item_id = item_id


class HrefNotAllowed(InputError):
    """An asset link points outside the allowed roots or uses a forbidden scheme."""

    reason = "href_not_allowed"


class DocumentTooLarge(InputError):
    """A catalog document (JSON, an NDJSON line) is larger than Aquila reads
    (:data:`pipeline.io.documents.MAX_DOCUMENT_BYTES`)."""

    reason = "document_too_large"


class NoScenesError(InputError):
    """Nothing usable was found for the spec's collections/bbox/datetime."""

    reason = "no_scenes"


class PlanTooLarge(InputError):
    """The grid, the number of tasks or time slots, or a task's memory would exceed a limit of
    the workflow's ``limits:`` section; refused before anything of that size is built."""

    reason = "plan_too_large"


class RunError(AquilaError):
    """The run itself failed (cluster, storage, a bug): not the input's fault."""

    reason = "run_failed"


class ReadError(RunError):
    """Reading an asset failed. Never turned into nodata: the scene is reported as failed.

    ``reason`` says what kind of failure (``asset_unavailable`` after retries, ``asset_not_found``,
    ``asset_forbidden``, ``asset_corrupt``...; see :mod:`pipeline.io.retry`), ``attempts`` how many
    tries were made."""

    reason = "read_failed"

    def __init__(
        self, href: str, message: str, *, reason: str | None = None, attempts: int = 1
    ) -> None:
        super().__init__(f"reading {href}: {message}", reason=reason)
        self.href = href
        self.attempts = attempts


def window_note(window: object) -> str:
    """The prefix a window read's failure message carries: which source window failed."""
    return f"window {window}: "


_WINDOW_NOTE = re.compile(r"window \(\d+, \d+, \d+, \d+\): ")


def without_window(message: str) -> str:
    """``message`` without its :func:`window_note`: the same failure as another window's."""
    return _WINDOW_NOTE.sub("", message, count=1)


class ReadRefused(ReadError):
    """A read was refused before any byte: the asset link redirects, or resolves to a refused
    address (the check repeated where the read happens)."""

    reason = "href_not_allowed"


class StoreBusy(RunError):
    """Another run holds the store's lock: one writer per store. Try again later."""

    reason = "store_busy"


class StoreNotOurs(InputError):
    """A product path holds something Aquila did not write (a user's folder or file, a symbolic
    link, a foreign Icechunk repository). Aquila replaces only its own products: it refuses
    before any work and leaves the path untouched."""

    reason = "store_not_aquila"


class ProductNotFound(InputError):
    """A command that reads a product (``quicklook``, ``history``) was given a path where no
    product is."""

    reason = "product_missing"


class StoreUnwritable(RunError):
    """The file system refused a write: full (ENOSPC, EDQUOT, EFBIG), read-only (EROFS), or no
    permission (EACCES, EPERM). Nothing was published; the previous products are unchanged."""

    reason = "store_unwritable"

    #: errno values that mean "the storage refused", not "a bug"
    ERRNOS = frozenset({28, 122, 27, 30, 13, 1, 5})  # ENOSPC EDQUOT EFBIG EROFS EACCES EPERM EIO

    @classmethod
    def from_os_error(cls, exc: OSError, *, doing: str) -> StoreUnwritable:
        """``doing``: what was being written, e.g. "creating the build of out/mosaic.zarr"."""
        hint = {
            28: "free space on that file system",
            122: "free space (the disk quota is exhausted)",
            27: "raise the file size limit (ulimit -f) or free space",
            30: "the file system is read-only: point the product's 'store:' at a writable folder",
        }.get(exc.errno or 0, "give Aquila write access there, or choose a writable folder")
        where = f" ({exc.filename})" if exc.filename else ""
        return cls(f"{doing}: {exc.strerror or exc}{where}; {hint}, then run again")
