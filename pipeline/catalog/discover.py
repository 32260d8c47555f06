"""Discovery: search → normalise → drop duplicates, with every reject and duplicate reported.

This is the whole ingest side of a run, in one call::

    found = discover(spec)
    found.scenes      # usable scenes, in discovery order
    found.rejects     # items that cannot be used, each with a reason code and a fix
    found.duplicates  # publications of an already-kept acquisition, and the rule that chose
    found.items_found # every item the source yielded (rejects and duplicates included)
    found.withheld    # items whose marking does not admit the workflow's audience (operator only)

Releasability is decided first, on the item's ``aquila:marking`` alone: a withheld item never
reaches normalisation, so none of its assets is resolved, checked, or opened (not even a header).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.catalog.dedupe import Duplicate, drop_duplicates
from pipeline.catalog.normalise import NormaliseOptions, normalise_doc
from pipeline.catalog.profiles import load_profiles
from pipeline.catalog.radiometry import RadiometryTarget
from pipeline.catalog.scene import Reject, Scene
from pipeline.catalog.source import SearchQuery, iter_docs
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.errors import SceneRejected, SpecError
from pipeline.io.hrefs import HrefPolicy
from pipeline.releasability import (
    Audience,
    Marking,
    MarkingError,
    Scale,
    admits,
    audience_from,
    parse_marking,
    scale_from,
    unmarked_open_data,
)

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
    markings: tuple[tuple[str, Marking], ...] = ()  # scene id -> marking, admitted scenes only


@dataclass(frozen=True)
class Releasability:
    """The workflow's audience rule, resolved once in the driver."""

    audience: Audience
    scale: Scale = Scale()
    allow_unmarked: bool = False

    def decide(self, doc: ItemDoc) -> Marking:
        """The item's marking if it admits the audience; raise MarkingError (withheld) if not."""
        try:
            marking = parse_marking({"properties": doc.properties, "assets": doc.assets},
                                    scale=self.scale)
        except MarkingError as exc:
            if exc.reason == "unmarked" and self.allow_unmarked:
                return unmarked_open_data(self.audience, scale=self.scale)
            raise
        if not admits(marking, self.audience, scale=self.scale):
            raise MarkingError("not_releasable", "its marking does not admit the audience")
        return marking


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
    """``{groups: {NAME: [codes]}}`` from a small YAML file (safe loader, no aliases)."""
    import yaml

    from pipeline.workflow import _NoAliasSafeLoader

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read groups_file {path}: {exc}") from None
    if len(raw) > MAX_GROUPS_FILE_BYTES:
        raise ValueError(f"groups_file {path} is larger than {MAX_GROUPS_FILE_BYTES} bytes")
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_NoAliasSafeLoader)  # noqa: S506 (safe)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"groups_file {path} is not safe YAML: {exc}") from None
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
    policy = HrefPolicy.for_catalog(spec.catalog, spec.allowed_roots)
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
    markings: dict[str, Marking] = {}
    scenes, rejects, found = collect(
        iter_docs(spec.catalog, search_query(spec), notify=note),
        bands=spec.bands,
        options=options,
        releasability=rule,
        withheld=withheld,
        markings=markings,
    )
    kept, duplicates = drop_duplicates(scenes)
    if rule is not None:
        note(f"releasability: audience {_audience_text(rule.audience)}, "
             f"{len(withheld)} item(s) withheld (see the operator report)")
    return Discovery(
        tuple(kept), tuple(rejects), tuple(duplicates), found, tuple(notes), tuple(withheld),
        tuple((s.id, markings[s.id]) for s in kept if s.id in markings),
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
    markings: dict[str, Marking] | None = None,
    reuse: Callable[[ItemDoc], Scene | None] | None = None,
):
    """(scenes, rejects, count) from a stream of item documents and rejects.

    With a releasability rule, each item's marking is decided before anything else; an item
    that is withheld (or unreadable, so its marking is unknown) goes to ``withheld`` only.
    ``reuse(doc)`` may return the scene an unchanged item normalised to before (nightly runs'
    ledger), which is then not normalised again.
    """
    scenes: list[Scene] = []
    rejects: list[Reject] = []
    found = 0
    seen: set[tuple[str | None, str]] = set()
    for entry in entries:
        found += 1
        if isinstance(entry, Reject):
            (rejects if releasability is None or withheld is None else withheld).append(entry)
            continue
        if releasability is not None:
            try:
                marking = releasability.decide(entry)
            except MarkingError as exc:
                if withheld is not None:
                    withheld.append(Reject(entry.id, entry.collection, exc.reason, str(exc)))
                continue
            if markings is not None:
                markings[entry.id] = marking
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
        known = reuse(entry) if reuse is not None else None
        if known is not None:
            scenes.append(known)
            continue
        try:
            scenes.append(normalise_doc(entry, bands=bands, options=options))
        except SceneRejected as exc:
            rejects.append(Reject(entry.id, entry.collection, exc.reason, exc.message))
    return scenes, rejects, found
