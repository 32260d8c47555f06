"""Discovery: search → normalise → drop duplicates, with every reject and duplicate reported.

This is the whole ingest side of a run, in one call::

    found = discover(spec)
    found.scenes      # usable scenes, in discovery order
    found.rejects     # items that cannot be used, each with a reason code and a fix
    found.duplicates  # publications of an already-kept acquisition, and the rule that chose
    found.items_found # every item the source yielded (rejects and duplicates included)
    found.withheld    # items whose marking does not admit the workflow's audience (operator only)
    found.markings    # (Scene.key, marking) of each kept scene: the stricter of all its copies'
    found.conflicts   # copies of one scene marked differently, and what applied (operator only)

Releasability is decided first, on the item's ``aquila:marking`` alone: a withheld item never
reaches normalisation, so none of its assets is resolved, checked, or opened (not even a header).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.catalog.dedupe import (
    Copies,
    Duplicate,
    carry_markings,
    drop_duplicates,
    withhold_acquisitions_of,
)
from pipeline.catalog.geoparquet import catalog_home
from pipeline.catalog.items.normalise import normalise_doc
from pipeline.catalog.items.options import NormaliseOptions
from pipeline.catalog.markings import (
    Audience,
    Marking,
    MarkingConflict,
    Releasability,
    SceneKey,
    audience_from,
    scale_from,
)
from pipeline.catalog.query import SearchQuery
from pipeline.catalog.scene import Reject, Scene
from pipeline.catalog.sensors.context import RadiometryTarget
from pipeline.catalog.sensors.profiles import load_profiles
from pipeline.catalog.source import iter_docs
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.errors import SceneRejected, SpecError
from pipeline.io.hrefs import HrefPolicy

MAX_GROUPS_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Discovery:
    """What a source held for a workflow."""

    scenes: tuple[Scene, ...]
    rejects: tuple[Reject, ...]
    duplicates: tuple[Duplicate, ...]
    items_found: int
    notes: tuple[str, ...] = ()  # e.g. "the API has no Filter conformance: filter applied here"
    withheld: tuple[Reject, ...] = ()  # never shown to the audience: operator report only
    markings: tuple[tuple[SceneKey, Marking], ...] = ()  # Scene.key -> marking, kept scenes only
    conflicts: tuple[MarkingConflict, ...] = ()  # copies of one scene marked differently (operator)


def releasability_of(spec: Any) -> Releasability | None:
    """The spec's audience rule, or None when the workflow names no audience (not enforced)."""
    a = getattr(spec, "audience", None)
    if a is None:
        return None
    try:
        scale = scale_from(getattr(spec, "classification_scale", None))
        groups = _load_groups(a.groups_file) if a.group is not None else None
        audience = audience_from(
            a.releasable_to, group=a.group, groups=groups, clearance=a.clearance, scale=scale
        )
    except ValueError as exc:
        raise SpecError(f"audience: {exc}") from None
    return Releasability(audience, scale, bool(getattr(spec, "allow_unmarked", False)))


def _load_groups(path) -> dict[str, list[str]]:
    """``{groups: {NAME: [codes]}}`` from a small YAML file: the spec's own loader (regular
    files only, size-capped, no aliases, duplicate keys or deep nesting; SpecError if not)."""
    from pipeline.io.yamlfile import load_yaml_file

    data = load_yaml_file(path, limit=MAX_GROUPS_FILE_BYTES, what="groups_file")
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, dict) or not all(
        isinstance(v, list) and all(isinstance(c, str) for c in v) for v in groups.values()
    ):
        raise ValueError(f"groups_file {path} must hold {{groups: {{NAME: [codes]}}}}")
    return {str(k): list(v) for k, v in groups.items()}


def search_query(spec: Any) -> SearchQuery:
    """The spec's search terms as one canonical value."""
    return SearchQuery(
        collections=spec.collections,
        bbox=spec.bbox,
        datetime=spec.datetime,
        intersects=getattr(spec, "intersects", None),
        query=getattr(spec, "query", None),
        filter=getattr(spec, "filter", None),
    )


def href_policy(spec: Any) -> HrefPolicy:
    """Catalog folder (or allowed_roots), plus mirror targets: where asset links may point."""
    policy = HrefPolicy.for_catalog(catalog_home(spec.catalog), spec.allowed_roots)
    targets = tuple((getattr(spec, "href_mirrors", None) or {}).values())
    if targets:
        policy = HrefPolicy(policy.roots + HrefPolicy.for_catalog("x", targets).roots)
    return policy


def normalise_options(spec: Any, *, check_files: bool = True) -> NormaliseOptions:
    """Href policy (catalog folder or allowed_roots, plus mirror targets), profiles, mirrors."""
    mirrors = tuple((getattr(spec, "href_mirrors", None) or {}).items())
    policy = href_policy(spec)
    profiles = load_profiles()
    forced = getattr(spec, "profile", None)
    if forced:
        profiles.get(forced)  # fail early, naming the profiles there are
    return NormaliseOptions(
        policy=policy,
        profiles=profiles,
        profile=forced,
        mirrors=mirrors,
        check_files=check_files,
        quality_mask=getattr(spec, "quality_mask", True),
        radiometry=radiometry_target(spec),
        signers=dict(getattr(spec, "signers", None) or {}),
    )


def radiometry_target(spec: Any) -> RadiometryTarget:
    """The spec's target quantity and reference sensor, as normalisation needs them."""
    r = getattr(spec, "radiometry", None)
    if r is None:
        return RadiometryTarget()
    return RadiometryTarget(quantity=r.target, harmonize_to=r.harmonize_to)


def discover(
    spec: Any, *, notify: Callable[[str], None] | None = None, check_files: bool = True
) -> Discovery:
    """Search the spec's catalog, normalise every item, drop duplicate publications."""
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        if notify:
            notify(message)

    options = normalise_options(spec, check_files=check_files)
    rule = releasability_of(spec)
    withheld: list[Reject] = []
    markings: dict[SceneKey, Marking] = {}
    conflicts: list[MarkingConflict] = []
    scenes, rejects, found = collect(
        iter_docs(spec.catalog, search_query(spec), notify=note, policy=options.policy),
        bands=spec.bands,
        options=options,
        releasability=rule,
        withheld=withheld,
        markings=markings,
        conflicts=conflicts,
    )
    kept, duplicates = drop_duplicates(scenes)
    if rule is not None:
        markings, merged = carry_markings(markings, duplicates, scale=rule.scale)
        conflicts += merged
        note(f"releasability: audience {_audience_text(rule.audience)}, "
             f"{len(withheld)} item(s) withheld (see the operator report)")
    return Discovery(
        tuple(kept), tuple(rejects), tuple(duplicates), found, tuple(notes), tuple(withheld),
        tuple((s.key, markings[s.key]) for s in kept if s.key in markings), tuple(conflicts),
    )


def _audience_text(a: Audience) -> str:
    return a.name or "[" + ", ".join(sorted(a.members)) + "]"


def collect(
    entries,
    *,
    bands: Sequence[str],
    options: NormaliseOptions,
    releasability: Releasability | None = None,
    withheld: list[Reject] | None = None,
    markings: dict[SceneKey, Marking] | None = None,
    conflicts: list[MarkingConflict] | None = None,
    reuse: Callable[[ItemDoc], Scene | None] | None = None,
):
    """(scenes, rejects, count) from a stream of item documents and rejects.

    With a releasability rule, each item's marking is decided before anything else; an item
    that is withheld (or unreadable, so its marking is unknown) goes to ``withheld`` only.
    Copies of one (collection, id) share the stricter of their markings (into ``markings``,
    keyed by :attr:`Scene.key`): one withheld copy withholds all; differing copies go to
    ``conflicts``. A copy admitted before a later one withholds it may have been normalised
    (its own asset headers checked), but no pixel is read and the audience never sees it.
    ``reuse(doc)`` may return the scene an unchanged item normalised to before (nightly runs'
    ledger), which is then not normalised again.
    """
    scenes: list[Scene] = []
    rejects: list[Reject] = []
    found = 0
    seen: set[SceneKey] = set()
    book = Copies(releasability) if releasability is not None else None
    held_back: list[ItemDoc] = []  # withheld items: what they look like, to compare scenes to
    for entry in entries:
        found += 1
        if isinstance(entry, Reject):
            (rejects if releasability is None or withheld is None else withheld).append(entry)
            continue
        refused = book.admit(entry) if book is not None else None
        if refused is not None:
            if withheld is not None:
                withheld.append(Reject(entry.id, entry.collection, refused.reason, str(refused)))
            held_back.append(entry)
            continue
        key = (entry.collection or "", entry.id)  # Scene.key: "" when the item names none
        if key in seen:
            rejects.append(
                Reject(
                    entry.id,
                    entry.collection,
                    "duplicate_id",
                    "the same collection/id appears twice in the source; the first is used",
                )
            )
            continue
        seen.add(key)
        known = reuse(entry) if reuse is not None else None
        if known is not None:
            scenes.append(known)
            continue
        try:
            scenes.append(normalise_doc(entry, bands=bands, options=options))
        except SceneRejected as exc:
            rejects.append(Reject(entry.id, entry.collection, exc.reason, exc.message))
    if book is not None:
        book.withhold_late(scenes, rejects, withheld if withheld is not None else [])
        scenes = withhold_acquisitions_of(held_back, scenes, withheld, conflicts)
        if markings is not None:
            markings.update(book.markings())
        if conflicts is not None:
            conflicts.extend(book.conflicts())
    return scenes, rejects, found
