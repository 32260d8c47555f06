"""Tonight, as data: which scenes a night plans with, what the report says changed, the new
ledger and which chunks each scene fed. Pure functions, no I/O and no Dask; the nightly driver
(:mod:`pipeline.engine.nightly`) calls them between its steps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.catalog.dedupe import Duplicate, drop_duplicates
from pipeline.catalog.scene import Scene
from pipeline.plan.changes import Listing
from pipeline.plan.chunks import Plan, TimeSlot
from pipeline.plan.increment import ChunkOrder, Increment
from pipeline.plan.ledger import DUPLICATE, INGESTED, LedgerEntry, StoreState

OUTSIDE = "outside"  # a ledger status: normalised, but touches no chunk of the grid
Token = Callable[[Scene], str]


@dataclass
class Tonight:
    """Tonight's scenes and plan (for one pass: the scenes that failed to read are out)."""

    plan: Plan
    kept: list[Scene]
    duplicates: list[Duplicate]
    normalised: list[Scene]
    fallbacks: dict[str, Scene]  # id -> the ledger's previous version used instead


def plan_tonight(
    listing: Listing,
    state: StoreState | None,
    excluded: set[str],
    token: Token,
    make_plan: Callable[[list[Scene]], Plan],
) -> Tonight:
    """Tonight as a full run over the catalog would plan it, without the scenes that failed to
    read (a changed item that fails keeps its previous version from the ledger)."""
    previous = {e.id: e.scene for e in state.ingested()} if state else {}
    normalised, fallbacks = [], {}
    for s in listing.scenes:
        if token(s) not in excluded:
            normalised.append(s)
        elif s.id in previous and token(previous[s.id]) not in excluded:
            normalised.append(previous[s.id])
            fallbacks[s.id] = previous[s.id]
    kept, duplicates = drop_duplicates(normalised)
    return Tonight(make_plan(kept), kept, duplicates, normalised, fallbacks)


@dataclass
class Account:
    """What the night report says tonight changes (fields of the same names)."""

    new: list[str]
    changed: list[str]
    changed_in_place: list[str]
    replaced: list[dict[str, str]]
    removed: list[str]
    removed_withheld: int
    duplicates: list[dict[str, Any]]
    slots: dict[str, Any]
    chunks: dict[str, int]
    notes: list[str] = field(default_factory=list)


def account(
    state: StoreState | None, tonight: Tonight, inc: Increment, listing: Listing, token: Token
) -> Account:
    before = {e.key: e for e in state.ingested()} if state else {}
    in_plan = {(s.collection, s.id): s for s in tonight.plan.scenes}
    in_place = [  # the item alone did not change: its assets' content did
        s.id
        for k, s in in_plan.items()
        if k in listing.changed_in_place and k in before and before[k].token == token(s)
    ]
    replaced = {(d.dropped_collection, d.dropped) for d in tonight.duplicates}
    withheld = {(w.collection or "", w.item_id) for w in listing.withheld}
    gone = [k for k in before if k not in in_plan and k not in replaced]
    notes = []
    if in_place:
        notes.append(
            f"{len(in_place)} scene(s) rewritten in place (same href, item "
            f"unchanged: {', '.join(in_place[:10])}): re-read, as if reprocessed"
        )
    notes += [f"{sid}: its changed item failed to read; the previous version is kept until it "
              "reads" for sid in tonight.fallbacks]
    return Account(
        new=[s.id for k, s in in_plan.items() if k not in before],
        changed=[s.id for k, s in in_plan.items() if k in before and before[k].token != token(s)],
        changed_in_place=in_place,
        replaced=[
            {"old": d.dropped, "new": d.kept, "rule": d.rule}
            for d in tonight.duplicates
            if (d.dropped_collection, d.dropped) in before
            and (d.kept_collection, d.kept) in in_plan
        ],
        removed=sorted(k[1] for k in gone if k not in withheld),
        removed_withheld=sum(k in withheld for k in gone),
        duplicates=[d.as_dict() for d in tonight.duplicates],
        slots={
            "before": inc.slots_before,
            "after": inc.slots_after,
            "added": len(inc.added_slots),
            "removed": len(inc.removed_slots),
            "first_renumbered": inc.first_moved,
        },
        chunks={
            "tasks": len(inc.orders),
            "cube": inc.cube_writes,
            "mosaic": inc.mosaic_writes,
            "mosaic_folds": sum(o.fold is not None for o in inc.orders),
            "slot_reads": sum(o.n_reads for o in inc.orders),
            "slot_copies": sum(len(o.slots) - o.n_reads for o in inc.orders),
        },
        notes=notes,
    )


def ledger_entries(
    tonight: Tonight,
    listing: Listing,
    state: StoreState | None,
    *,
    chunks: Mapping[str, Sequence[tuple[int, int]]],
    token: Token,
    used: Mapping[str, Iterable[str]],
) -> list[LedgerEntry]:
    """The ledger tonight commits: every normalised scene with its status, checksum, asset
    identities, the chunks it touches (``chunks`` by token) and those it fed (``used``)."""
    in_plan = {s.id for s in tonight.plan.scenes}
    kept = {s.id for s in tonight.kept}
    out = []
    for s in tonight.normalised:
        status = INGESTED if s.id in in_plan else DUPLICATE if s.id not in kept else OUTSIDE
        checksum = listing.checksums[(s.collection, s.id)]
        assets = listing.assets.get((s.collection, s.id))
        if s.id in tonight.fallbacks and state is not None:  # keep what it was read as
            old = state.by_key()[(s.collection, s.id)]  # id alone may be two scenes
            checksum, assets = old.checksum, old.assets
        touched = chunks.get(token(s))
        out.append(
            LedgerEntry(
                s.collection,
                s.id,
                checksum,
                s,
                status,
                tuple(sorted(used.get(s.id, ()))),
                None if touched is None else tuple(touched),
                assets,
            )
        )
    return out


def ledger_facts(entries: Iterable[LedgerEntry]) -> set[tuple[Any, ...]]:
    """What makes two ledgers differ (asset identities too: a new baseline is recorded)."""
    return {(e.key, e.checksum, e.status, e.assets) for e in entries}


def used_in(
    state: StoreState | None,
    tonight: Tonight,
    inc: Increment,
    used_by_chunk: Mapping[str, Iterable[str]],
    token: Token,
) -> dict[str, set[str]]:
    """Per scene, the chunks it contributed pixels to: the committed record, updated for every
    (slot, chunk) read from the scenes tonight (``used_by_chunk``: chunk -> scene ids used)."""
    before = {e.id: e for e in state.entries} if state else {}
    used: dict[str, set[str]] = {}
    for s in tonight.plan.scenes:
        e = before.get(s.id)
        used[s.id] = set(e.used_in) if e is not None and e.token == token(s) else set()
    for order in inc.orders:
        now = set(used_by_chunk.get(order.chunk.name, ()))
        for s in order.sourced:
            used[s.id].discard(order.chunk.name)
            if s.id in now:
                used[s.id].add(order.chunk.name)
    return used


def read_rejects(
    results: Iterable[Any], tonight: Tonight, excluded: set[str], token: Token
) -> tuple[set[str], list[dict[str, Any]], dict[str, int]]:
    """From the chunk tasks' results (``failures``, ``attempts``, ``retries``, ``chunk``): the
    tokens of scenes that failed to read for the first time tonight, a read reject for each
    (reason, message, attempts made, the chunk) and the retries per scene id."""
    results = list(results)
    by_id = {s.id: s for s in tonight.plan.scenes}
    attempts: dict[str, int] = {}
    retries: dict[str, int] = {}
    for r in results:
        attempts.update(r.attempts)
        for href, n in r.retries.items():
            sid = scene_of(href, tonight.plan.scenes)
            if sid:
                retries[sid] = retries.get(sid, 0) + n
    new: set[str] = set()
    rejects: list[dict[str, Any]] = []
    for r in results:
        for sid, reason, message in r.failures:
            scene = by_id[sid]
            if token(scene) in excluded or token(scene) in new:
                continue
            new.add(token(scene))
            tries = max((n for h, n in attempts.items() if scene_of(h, [scene]) is not None),
                        default=1)
            rejects.append({"stage": "read", "item": sid, "collection": scene.collection,
                            "reason": reason, "message": message, "attempts": tries,
                            "chunk": r.chunk})
    return new, rejects, retries


def slot_record(s: TimeSlot) -> dict[str, Any]:
    return {
        "index": s.index,
        "collection": s.collection,
        "solar_day": s.solar_day.isoformat(),
        "time": s.time.isoformat(),
        "scenes": list(s.scene_ids),
    }


def order_key(order: ChunkOrder, plan: Plan, token: Token) -> str:
    """A night task's name: the chunk and a hash of its inputs (scene tokens, never ids)."""
    ident = repr(
        (
            order.chunk,
            order.slots,
            order.blocks,
            order.n_slots,
            order.mosaic,
            order.clear_mosaic,
            [token(s) for s in order.sourced],
            plan.outputs.mosaics,
        )
    )
    return f"night-{order.chunk.name}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def scene_of(href: str, scenes: Iterable[Scene]) -> str | None:
    """The id of the scene one of whose assets is ``href``."""
    for s in scenes:
        if any(b.href == href for b in s.bands) or any(q.href == href for q in s.quality):
            return s.id
    return None
