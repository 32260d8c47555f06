"""Discovery for nightly runs: list the catalog, normalise only what the ledger does not know.

Every night lists the catalog as a full run would (so items that vanished, changed, or are now
withheld from the audience leave the cube exactly as a full run over the catalog would leave
them), but an item whose document checksum matches its ledger entry is not normalised again:
its stored :class:`Scene` is reused. Listing costs a JSON parse and a hash per item; the
normalisation (and any asset check) scales with the new and changed items only.

Duplicates are resolved by the caller (:func:`pipeline.catalog.dedupe.drop_duplicates`) over all
normalised scenes, because a scene that fails to read tonight must leave the acquisition to the
publication it would have replaced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.catalog.discover import (
    _audience_text,
    collect,
    normalise_options,
    releasability_of,
    search_query,
)
from pipeline.catalog.scene import Reject, Scene
from pipeline.catalog.source import iter_docs
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.cube.ledger import LedgerEntry, item_checksum
from pipeline.releasability import Marking


@dataclass(frozen=True)
class Listing:
    """Tonight's catalog as the nightly run sees it."""

    scenes: tuple[Scene, ...]  # every item that normalised (duplicates not yet resolved)
    checksums: Mapping[tuple[str, str], str]  # (collection, id) -> item checksum
    reused: int  # scenes taken from the ledger without normalising
    rejects: tuple[Reject, ...]
    items_found: int
    withheld: tuple[Reject, ...] = ()  # operator report only
    markings: Mapping[str, Marking] | None = None  # None: releasability not enforced
    notes: tuple[str, ...] = ()


def ingest_fingerprint(spec: Any) -> str:
    """What normalisation depends on besides the item: a change re-normalises every item."""
    import pipeline
    from pipeline.catalog.profiles import DEFAULT_PROFILE_DIR

    o = normalise_options(spec, check_files=True)
    h = hashlib.sha256(
        repr(
            (
                pipeline.__version__,
                tuple(spec.bands),
                o.policy,
                o.profile,
                o.mirrors,
                o.quality_mask,
                o.radiometry,  # target quantity and reference sensor: constants resolved differ
            )
        ).encode()
    )
    for path in sorted(Path(DEFAULT_PROFILE_DIR).glob("*.yaml")):  # calibration constants
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:20]


def list_catalog(spec: Any, known: Mapping[tuple[str, str], LedgerEntry]) -> Listing:
    """Search the spec's catalog; normalise the items the ledger ``known`` does not hold as is."""
    notes: list[str] = []
    rule = releasability_of(spec)
    withheld: list[Reject] = []
    markings: dict[str, Marking] = {}
    checksums: dict[tuple[str, str], str] = {}
    reused = 0

    def reuse(doc: ItemDoc) -> Scene | None:
        nonlocal reused
        key = (doc.collection or "", doc.id)
        checksums[key] = digest = item_checksum(doc)
        entry = known.get(key)
        if entry is not None and entry.checksum == digest:
            reused += 1
            return entry.scene
        return None

    scenes, rejects, found = collect(
        iter_docs(spec.catalog, search_query(spec), notify=notes.append),
        bands=spec.bands,
        options=normalise_options(spec),
        releasability=rule,
        withheld=withheld,
        markings=markings,
        reuse=reuse,
    )
    if rule is not None:
        notes.append(
            f"releasability: audience {_audience_text(rule.audience)}, "
            f"{len(withheld)} item(s) withheld (see the operator report)"
        )
    return Listing(
        scenes=tuple(scenes),
        checksums=checksums,
        reused=reused,
        rejects=tuple(rejects),
        items_found=found,
        withheld=tuple(withheld),
        markings=markings if rule is not None else None,
        notes=tuple(notes),
    )
