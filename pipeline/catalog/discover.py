"""Discovery: search → normalise → drop duplicates, with every reject and duplicate reported.

This is the whole ingest side of a run, in one call::

    found = discover(spec)
    found.scenes      # usable scenes, in discovery order
    found.rejects     # items that cannot be used, each with a reason code and a fix
    found.duplicates  # publications of an already-kept acquisition, and the rule that chose
    found.items_found # every item the source yielded (rejects and duplicates included)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.catalog.dedupe import Duplicate, drop_duplicates
from pipeline.catalog.normalise import NormaliseOptions, normalise_doc
from pipeline.catalog.profiles import load_profiles
from pipeline.catalog.scene import Reject, Scene
from pipeline.catalog.source import SearchQuery, iter_docs
from pipeline.errors import SceneRejected
from pipeline.io.hrefs import HrefPolicy


@dataclass(frozen=True)
class Discovery:
    """What a source held for a workflow."""

    scenes: tuple[Scene, ...]
    rejects: tuple[Reject, ...]
    duplicates: tuple[Duplicate, ...]
    items_found: int
    notes: tuple[str, ...] = ()  # e.g. "the API has no Filter conformance: filter applied here"


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


def normalise_options(spec: Any, *, check_files: bool = True) -> NormaliseOptions:
    """Href policy (catalog folder or allowed_roots, plus mirror targets), profiles, mirrors."""
    mirrors = tuple((getattr(spec, "href_mirrors", None) or {}).items())
    policy = HrefPolicy.for_catalog(spec.catalog, spec.allowed_roots)
    targets = tuple(t for _, t in mirrors)
    if targets:
        policy = HrefPolicy(policy.roots + HrefPolicy.for_catalog("x", targets).roots)
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
    )


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
    scenes, rejects, found = collect(
        iter_docs(spec.catalog, search_query(spec), notify=note), bands=spec.bands, options=options
    )
    kept, duplicates = drop_duplicates(scenes)
    return Discovery(tuple(kept), tuple(rejects), tuple(duplicates), found, tuple(notes))


def collect(entries, *, bands: Sequence[str], options: NormaliseOptions):
    """(scenes, rejects, count) from a stream of item documents and rejects."""
    scenes: list[Scene] = []
    rejects: list[Reject] = []
    found = 0
    seen: set[tuple[str | None, str]] = set()
    for entry in entries:
        found += 1
        if isinstance(entry, Reject):
            rejects.append(entry)
            continue
        key = (entry.collection, entry.id)
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
        try:
            scenes.append(normalise_doc(entry, bands=bands, options=options))
        except SceneRejected as exc:
            rejects.append(Reject(entry.id, entry.collection, exc.reason, exc.message))
    return scenes, rejects, found
