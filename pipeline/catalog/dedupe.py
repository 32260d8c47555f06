"""One acquisition published twice (reprocessed, another baseline, another collection) is kept once.

**Same acquisition**: same platform (or, if either lacks one, same provider), nominal times at
most :data:`MAX_SECONDS_APART` apart, and footprints that overlap by at least
:data:`MIN_OVERLAP` (intersection over union, lon/lat). Adjacent tiles or WRS rows of one pass
share platform and nearly the time but not the footprint, so they are never duplicates.

**Which one is kept** — the first of these that differs decides:

1. the higher processing level (Level-2 surface reflectance over Level-1 top of atmosphere);
2. the newer processing version (Sentinel-2 processing baseline, Landsat collection number);
3. the later product generation time (``s2:generation_time``, ``landsat:product_generated``,
   ``processing:datetime``, or the processing date in the product id);
4. the later metadata record (``updated``, else ``created``);
5. the greater (collection, id), so that the choice never depends on the order of discovery.

The dropped scene is reported with the rule that decided, never silently discarded. Its marking
is not: the kept scene carries the stricter of both (:func:`carry_markings`), since the pixels it
gives are the same acquisition's.

**Copies and withheld items**: copies of one (collection, id) share the stricter of their
markings, and one withheld copy withholds them all (:class:`Copies`); a scene that is the same
acquisition as a withheld item is withheld too (:func:`withhold_acquisitions_of`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.catalog.markings import (
    Marking,
    MarkingConflict,
    MarkingError,
    Releasability,
    Scale,
    SceneKey,
    admits,
    combine,
)
from pipeline.catalog.scene import Reject, Scene
from pipeline.catalog.sensors.profiles import version_tuple
from pipeline.catalog.stacdoc import ItemDoc
from pipeline.errors import RunError

MAX_SECONDS_APART = 2.0
MIN_OVERLAP = 0.8


@dataclass(frozen=True)
class Duplicate:
    """A scene left out because another publication of the same acquisition was kept."""

    kept: str
    dropped: str
    kept_collection: str
    dropped_collection: str
    rule: str  # which rule decided, e.g. "processing level 2 > 1"

    @property
    def kept_key(self) -> SceneKey:
        return (self.kept_collection, self.kept)

    @property
    def dropped_key(self) -> SceneKey:
        return (self.dropped_collection, self.dropped)

    def as_dict(self) -> dict[str, str]:
        return {
            "kept": self.kept,
            "dropped": self.dropped,
            "kept_collection": self.kept_collection,
            "dropped_collection": self.dropped_collection,
            "rule": self.rule,
        }


def drop_duplicates(scenes: Sequence[Scene]) -> tuple[list[Scene], list[Duplicate]]:
    """Scenes with duplicates removed (order kept), and what was dropped and why.

    Sorted by time, each scene is compared only with those a few seconds before it, so this is
    O(n log n) for n scenes."""
    order = sorted(range(len(scenes)), key=lambda i: scenes[i].datetime)
    winner = list(range(len(scenes)))  # each scene's representative
    duplicates: list[Duplicate] = []
    window: list[int] = []
    for i in order:
        s = scenes[i]
        window = [
            j
            for j in window
            if (s.datetime - scenes[j].datetime).total_seconds() <= MAX_SECONDS_APART
        ]
        for j in window:
            if winner[j] != j or not same_acquisition(scenes[j], s):
                continue
            keep, drop, rule = choose(scenes[j], s)
            k, d = (j, i) if keep is scenes[j] else (i, j)
            winner[d] = k
            duplicates.append(Duplicate(keep.id, drop.id, keep.collection, drop.collection, rule))
            if d == i:
                break
        window.append(i)
    kept = [s for n, s in enumerate(scenes) if winner[n] == n]
    return kept, duplicates


def carry_markings(
    markings: Mapping[SceneKey, Marking],
    duplicates: Sequence[Duplicate],
    *,
    scale: Scale,
) -> tuple[dict[SceneKey, Marking], list[MarkingConflict]]:
    """``markings`` with each kept scene's raised to the stricter of every publication it
    replaced (also through a chain: A dropped for B, B for C), and the acquisitions whose
    publications were marked differently. All were admitted, so their combination still admits
    the audience (the intersection keeps it, the highest level is one of theirs).

    Raises RunError naming a scene of ``duplicates`` that has no marking (a caller's bug)."""
    parent = {d.dropped_key: d.kept_key for d in duplicates}

    def final(key: SceneKey) -> SceneKey:
        for _ in range(len(parent) + 1):  # a scene is dropped at most once: no cycle
            if key not in parent:
                return key
            key = parent[key]
        raise RunError(f"duplicates form a cycle through {key[0]}/{key[1]}")

    groups: dict[SceneKey, list[SceneKey]] = {}
    for key in parent:
        groups.setdefault(final(key), []).append(key)
    out = dict(markings)
    conflicts = []
    for kept, dropped in groups.items():
        own = tuple(_marking(markings, k) for k in (kept, *dropped))
        out[kept] = combine(own, scale=scale)
        if any(m != own[0] for m in own):
            conflicts.append(MarkingConflict(
                "same_acquisition", kept, tuple(dropped), own, out[kept], withheld=False
            ))
    return out, conflicts


def _marking(markings: Mapping[SceneKey, Marking], key: SceneKey) -> Marking:
    try:
        return markings[key]
    except KeyError:
        raise RunError(
            f"scene {key[0]}/{key[1]} has no marking: its label cannot be known",
            reason="no_marking",
        ) from None


def same_acquisition(a: Scene, b: Scene) -> bool:
    """Same platform (or provider), within seconds, with footprints that mostly coincide."""
    if a.platform and b.platform:
        if _norm(a.platform) != _norm(b.platform):
            return False
    elif _norm(a.provider) != _norm(b.provider):
        return False
    if abs((a.datetime - b.datetime).total_seconds()) > MAX_SECONDS_APART:
        return False
    union = a.footprint.union(b.footprint).area
    return union > 0 and a.footprint.intersection(b.footprint).area / union >= MIN_OVERLAP


def choose(a: Scene, b: Scene) -> tuple[Scene, Scene, str]:
    """(kept, dropped, rule) by the documented rules."""
    fa, fb = dict(a.extra), dict(b.extra)
    for key, label, as_key in (
        ("level", "processing level", version_tuple),
        ("version", "processing version", version_tuple),
        ("generated", "product generated", str),
        ("updated", "metadata updated", str),
    ):
        va, vb = fa.get(key), fb.get(key)
        if va is None or vb is None or va == vb:
            continue
        ka: Any = as_key(va)
        kb: Any = as_key(vb)
        if ka == kb:
            continue
        if ka > kb:
            return a, b, f"{label} {va} > {vb}"
        return b, a, f"{label} {vb} > {va}"
    if (a.collection, a.id) >= (b.collection, b.id):
        return (
            a,
            b,
            f"tie on level/version/times; greater (collection, id) kept: {a.collection}/{a.id}",
        )
    return b, a, f"tie on level/version/times; greater (collection, id) kept: {b.collection}/{b.id}"


def _norm(value: str | None) -> str:
    return "".join(ch for ch in str(value or "").lower() if ch.isalnum())


# ------------------------------------------------------------------ copies and withheld items


CONFLICT = "marking_conflict"  # a withheld reason: another copy of the scene is withheld


@dataclass
class Copies:
    """The marking of every copy of each (collection, id) as the item stream goes. Copies of
    one scene share its marking, the stricter of theirs: so one copy that is withheld (marking
    unknown, or not admitting the audience) withholds every copy, whatever came first."""

    rule: Releasability
    seen: dict[SceneKey, list[Marking | None]] = field(default_factory=dict)
    blocked: set[SceneKey] = field(default_factory=set)

    def admit(self, doc: ItemDoc) -> MarkingError | None:
        """None if this copy may be normalised; else why it is withheld."""
        key = (doc.collection or "", doc.id)
        copies = self.seen.setdefault(key, [])
        try:
            marking = self.rule.read(doc)
        except MarkingError as exc:
            copies.append(None)
            self.blocked.add(key)
            return exc
        copies.append(marking)
        if not admits(marking, self.rule.audience, scale=self.rule.scale):
            self.blocked.add(key)
            return MarkingError("not_releasable", "its marking does not admit the audience")
        if key in self.blocked:
            return MarkingError(CONFLICT, "another item with this collection/id is withheld")
        return None

    def markings(self) -> dict[SceneKey, Marking]:
        """Each admitted (collection, id)'s marking: the stricter of all its copies'. Every
        copy admits the audience, so their combination does too (intersection, maximum)."""
        return {
            k: combine([m for m in copies if m is not None], scale=self.rule.scale)
            for k, copies in self.seen.items()
            if k not in self.blocked  # so every copy's marking is known
        }

    def conflicts(self) -> list[MarkingConflict]:
        """The (collection, id)s listed more than once with different markings."""
        out = []
        for key, copies in self.seen.items():
            if len(copies) < 2 or all(m == copies[0] for m in copies):
                continue
            known = [m for m in copies if m is not None]
            resolved = None if len(known) < len(copies) else combine(known, scale=self.rule.scale)
            out.append(MarkingConflict("duplicate_id", key, (), tuple(copies), resolved,
                                       withheld=key in self.blocked))
        return out

    def withhold_late(self, scenes: list[Scene], rejects: list[Reject], withheld: list[Reject]):
        """Move the copies admitted before a later copy of theirs was withheld (kept scenes,
        normalisation rejects, ``duplicate_id`` rejects) to ``withheld``: the audience's report
        must not name them either."""
        def late(item_id: str, collection: str | None) -> bool:
            return (collection or "", item_id) in self.blocked

        for s in scenes:
            if late(s.id, s.collection):
                withheld.append(Reject(s.id, s.collection or None, CONFLICT, _LATE))
        for r in rejects:
            if late(r.item_id, r.collection):
                withheld.append(Reject(r.item_id, r.collection, CONFLICT, _LATE))
        scenes[:] = [s for s in scenes if not late(s.id, s.collection)]
        rejects[:] = [r for r in rejects if not late(r.item_id, r.collection)]


_LATE = "another item with this collection/id is withheld; the stricter marking applies to both"


def withhold_acquisitions_of(
    held_back: Sequence[ItemDoc],
    scenes: list[Scene],
    withheld: list[Reject] | None,
    conflicts: list[MarkingConflict] | None,
) -> list[Scene]:
    """Scenes that are not another publication of a withheld item's acquisition. The same
    acquisition published twice is one scene (pipeline/catalog/dedupe.py); when one copy is
    withheld, every copy is (``marking_conflict``). Judged on the withheld item's JSON alone
    (time, platform, footprint: its assets are never touched), conservatively: a missing
    platform on either side counts as the same platform. O((n + w) log w)."""
    if not held_back or not scenes:
        return scenes
    from bisect import bisect_left, bisect_right

    from pipeline.catalog.footprint import footprint_from_geojson

    shapes = []
    for doc in held_back:
        when = doc.when()
        try:
            shape = footprint_from_geojson(doc.geometry) if doc.geometry else None
        except ValueError:
            shape = None
        if when is not None and shape is not None:
            shapes.append((when.timestamp(), doc, shape))
    shapes.sort(key=lambda t: t[0])
    times = [t for t, _, _ in shapes]
    kept: list[Scene] = []
    for scene in scenes:
        t = scene.datetime.timestamp()
        lo = bisect_left(times, t - MAX_SECONDS_APART)
        hi = bisect_right(times, t + MAX_SECONDS_APART)
        twin = next(
            (doc for _, doc, shape in shapes[lo:hi]
             if _same_platform(scene.platform, doc.properties.get("platform"))
             and _overlap(scene.footprint, shape) >= MIN_OVERLAP),
            None,
        )
        if twin is None:
            kept.append(scene)
            continue
        if withheld is not None:
            withheld.append(Reject(scene.id, scene.collection, "marking_conflict",
                                   f"the same acquisition as withheld item {twin.collection}/"
                                   f"{twin.id}: one copy withheld withholds every copy"))
        if conflicts is not None:
            conflicts.append(MarkingConflict(
                "same_acquisition", scene.key, ((twin.collection or "", twin.id),), (), None,
                True,
            ))
    return kept


def _same_platform(a: Any, b: Any) -> bool:
    def norm(v: Any) -> str:
        return "".join(ch for ch in str(v or "").lower() if ch.isalnum())

    return not a or not b or norm(a) == norm(b)


def _overlap(a: Any, b: Any) -> float:
    union = a.union(b).area
    return a.intersection(b).area / union if union > 0 else 0.0
