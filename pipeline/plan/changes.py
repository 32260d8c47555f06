"""Discovery for nightly runs: list the catalog, normalise only what the ledger does not know.

Every night lists the catalog as a full run would (so items that vanished, changed, or are now
withheld from the audience leave the cube exactly as a full run over the catalog would leave
them), but an item whose document checksum matches its ledger entry is not normalised again:
its stored :class:`Scene` is reused. Listing costs a JSON parse and a hash per item; the
normalisation (and any asset check) scales with the new and changed items only.

An unchanged item does not prove unchanged pixels (a provider may re-upload a COG under the same
href): every asset's content identity (:mod:`pipeline.io.identity`: its ``file:checksum``, else
a ``stat`` or a ``HEAD``) is taken every night and compared with the ledger's, and a scene whose
assets changed in place is re-read by the caller like a reprocessed one.

Duplicates are resolved by the caller (:func:`pipeline.catalog.dedupe.drop_duplicates`) over all
normalised scenes, because a scene that fails to read tonight must leave the acquisition to the
publication it would have replaced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.catalog.discover import (
    _audience_text,
    collect,
    href_policy,
    normalise_options,
    releasability_of,
    search_query,
)
from pipeline.catalog.markings import Marking, MarkingConflict, SceneKey
from pipeline.catalog.scene import Reject, Scene
from pipeline.catalog.source import iter_docs
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.io.identity import (
    AssetIds,
    IdentityProbe,
    compare,
    declared_checksum,
    identities,
    weak,
)
from pipeline.plan.ledger import LedgerEntry, item_checksum


@dataclass(frozen=True)
class Listing:
    """Tonight's catalog as the nightly run sees it."""

    scenes: tuple[Scene, ...]  # every item that normalised (duplicates not yet resolved)
    checksums: Mapping[tuple[str, str], str]  # (collection, id) -> item checksum
    reused: int  # scenes taken from the ledger without normalising
    rejects: tuple[Reject, ...]
    items_found: int
    withheld: tuple[Reject, ...] = ()  # operator report only
    markings: Mapping[SceneKey, Marking] | None = None  # by Scene.key; None: not enforced
    conflicts: tuple[MarkingConflict, ...] = ()  # one collection/id marked twice (operator)
    notes: tuple[str, ...] = ()
    # (collection, id) -> its assets' content identities to record (see asset_identities)
    assets: Mapping[tuple[str, str], AssetIds | None] = field(default_factory=dict)
    # (collection, id) -> hrefs rewritten in place since the ledger recorded them
    changed_in_place: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)


def ingest_fingerprint(spec: Any) -> str:
    """What normalisation depends on besides the item: a change re-normalises every item."""
    from pipeline._version import __version__
    from pipeline.catalog.sensors.profiles import DEFAULT_PROFILE_DIR

    o = normalise_options(spec, check_files=True)
    h = hashlib.sha256(
        repr(
            (
                __version__,
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


def list_catalog(
    spec: Any,
    known: Mapping[tuple[str, str], LedgerEntry],
    *,
    recorded: Mapping[tuple[str, str], AssetIds | None] | None = None,
    probe: IdentityProbe | None = None,
) -> Listing:
    """Search the spec's catalog; normalise the items the ledger ``known`` does not hold as is.
    With a ``probe``, every scene's asset identities are taken and compared with the ledger's
    ``recorded`` ones (all entries', also when normalisation settings changed)."""
    notes: list[str] = []
    rule = releasability_of(spec)
    withheld: list[Reject] = []
    markings: dict[SceneKey, Marking] = {}
    conflicts: list[MarkingConflict] = []
    checksums: dict[tuple[str, str], str] = {}
    declared: dict[tuple[str, str], dict[str, str]] = {}  # key -> asset -> file:checksum
    reused = 0

    def reuse(doc: ItemDoc) -> Scene | None:
        nonlocal reused
        key = (doc.collection or "", doc.id)
        checksums[key] = digest = item_checksum(doc)
        declared[key] = {
            name: c
            for name, asset in doc.assets.items()
            if isinstance(asset, Mapping) and (c := declared_checksum(asset))
        }
        entry = known.get(key)
        if entry is not None and entry.checksum == digest:
            reused += 1
            return entry.scene
        return None

    scenes, rejects, found = collect(
        iter_docs(spec.catalog, search_query(spec), notify=notes.append, policy=href_policy(spec)),
        bands=spec.bands,
        options=normalise_options(spec),
        releasability=rule,
        withheld=withheld,
        markings=markings,
        conflicts=conflicts,
        reuse=reuse,
    )
    if rule is not None:
        notes.append(
            f"releasability: audience {_audience_text(rule.audience)}, "
            f"{len(withheld)} item(s) withheld (see the operator report)"
        )
    assets: dict[tuple[str, str], AssetIds | None] = {}
    changed: dict[tuple[str, str], tuple[str, ...]] = {}
    if probe is not None:
        assets, changed = asset_identities(scenes, declared, recorded or {}, probe, notes)
    return Listing(
        scenes=tuple(scenes),
        checksums=checksums,
        reused=reused,
        rejects=tuple(rejects),
        items_found=found,
        withheld=tuple(withheld),
        markings=markings if rule is not None else None,
        conflicts=tuple(conflicts),
        notes=tuple(notes),
        assets=assets,
        changed_in_place=changed,
    )


def asset_identities(
    scenes: list[Scene],
    declared: Mapping[tuple[str, str], Mapping[str, str]],
    recorded: Mapping[tuple[str, str], AssetIds | None],
    probe: IdentityProbe,
    notes: list[str],
) -> tuple[dict[tuple[str, str], AssetIds | None], dict[tuple[str, str], tuple[str, ...]]]:
    """Tonight's content identity of every asset of ``scenes`` (``file:checksum`` where the
    item ``declared`` one, else a stat or a HEAD) against the ledger's ``recorded`` ones: per
    scene, what to record and the hrefs rewritten in place. Taken before any task reads, so a
    file replaced during the night differs from what is recorded and is re-read next night."""
    hrefs = {(s.collection, s.id): _asset_hrefs(s) for s in scenes}
    by_href = {
        href: declared[key][name]
        for key, pairs in hrefs.items()
        for name, href in pairs
        if name is not None and name in declared.get(key, {})
    }
    tonight = identities((h for pairs in hrefs.values() for _, h in pairs), probe, declared=by_href)
    assets, changed, baseline = {}, {}, 0
    for key, pairs in hrefs.items():
        c = compare(recorded.get(key), tonight, [h for _, h in pairs])
        assets[key] = c.assets
        baseline += c.baseline and key in recorded  # an entry from before identities were kept
        if c.changed:
            changed[key] = c.changed
    unknown = sum(v is None for v in tonight.values())
    if baseline:
        notes.append(
            f"{baseline} scene(s) had no recorded asset identity (a store from before they were "
            "kept): tonight's is their baseline; a file rewritten before tonight is not noticed "
            "(--rebuild re-reads everything)"
        )
    if unknown:
        notes.append(
            f"{unknown} asset(s) could not be identified tonight (HEAD refused or failed, or no "
            "such file): their recorded identity is kept, a change is noticed once they answer"
        )
    if any(weak(v) for v in tonight.values()):
        notes.append(
            f"{sum(weak(v) for v in tonight.values())} asset(s) are served without ETag or "
            "Last-Modified and have no file:checksum: only a change of size is noticed"
        )
    return assets, changed


def _asset_hrefs(scene: Scene) -> tuple[tuple[str | None, str], ...]:
    """(asset key, href) of every file a read of the scene opens (a band's mask: key None)."""
    pairs: list[tuple[str | None, str]] = []
    for b in scene.bands:
        pairs.append((b.asset, b.href))
        if b.mask is not None:
            pairs.append((None, b.mask[0]))
    pairs.extend((q.asset, q.href) for q in scene.quality)
    return tuple(dict.fromkeys(pairs))
