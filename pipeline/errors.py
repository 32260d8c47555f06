"""One error tree for Aquila.

Every error carries a stable ``reason`` code (used in run reports and tests) and a message that
says what went wrong, where (item/asset/key), and what to change. Errors are grouped by what the
caller should do: fix the input (:class:`InputError`), or look at the system (:class:`RunError`).
"""

from __future__ import annotations


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


class NoScenesError(InputError):
    """Nothing usable was found for the spec's collections/bbox/datetime."""

    reason = "no_scenes"


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


class ReadRefused(ReadError):
    """A read was refused before any byte: the asset link redirects, or resolves to a refused
    address (the check repeated where the read happens)."""

    reason = "href_not_allowed"


class StoreBusy(RunError):
    """Another run holds the store's lock: one writer per store. Try again later."""

    reason = "store_busy"
