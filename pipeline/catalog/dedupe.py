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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.catalog.markings import Marking, MarkingConflict, Scale, SceneKey, combine
from pipeline.catalog.scene import Scene
from pipeline.catalog.sensors.profiles import version_tuple
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
