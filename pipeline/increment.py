"""What a nightly run must rewrite: the committed plan and tonight's plan → work orders.

Pure data, no I/O, no Dask. Both plans come from :func:`pipeline.plan.make_plan` (the committed
one re-made from the ledger's scenes, checked against its stored digest), so "identical to one full
run over all scenes" holds by construction: every chunk the diff leaves alone already holds what
a full run would write there, and every chunk it lists is rewritten as a full run would.

For one chunk ``c`` and cube slot index ``j``, the *content* is the tuple of scene tokens of slot
``j`` that touch ``c`` (empty: the slot has no data there). Then:

* a cube chunk ``(j, c)`` is written when its content tonight differs from the committed content
  at the same index (a new or changed slot, or a slot renumbered by a late arrival); its values
  come from the committed cube when the same content sat at some old index ``i`` (a copy: no
  source read), otherwise from the scenes;
* a cube chunk whose index has no data tonight but had some before is cleared;
* a mosaic chunk is recomputed when anything it depends on differs: the slot indices, slot
  metadata or contents of the slots touching it, or the mosaic parameters (a best-pixel mosaic
  without ``target_date`` targets the median slot time, which moves every night);
* slots the mosaic needs but the cube does not rewrite are read back from the committed cube
  when that is exact (no halo, no quality mask needed: the cube stores neither), else from the
  scenes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from pipeline.catalog.scene import Scene
from pipeline.cube.ledger import scene_token
from pipeline.grid import ChunkGrid, TargetGrid
from pipeline.plan import ChunkTask, Plan, TimeSlot

Content = tuple[str, ...]
ChunkKey = tuple[int, int]


@dataclass(frozen=True)
class SlotOrder:
    """One slot of one chunk task: where its values come from and whether the cube gets them."""

    slot: int  # tonight's cube index
    origin: Literal["scenes", "cube"]
    cube_index: int | None = None  # committed index to read when origin == "cube"
    write: bool = True  # write cube chunk (slot, chunk)


@dataclass(frozen=True)
class ChunkOrder:
    """Everything one nightly chunk task does. ``task`` lists only the slots it needs."""

    chunk: ChunkGrid
    task: ChunkTask | None  # None: nothing touches the chunk tonight (clears only)
    slots: tuple[SlotOrder, ...] = ()  # aligned with task.slots
    clear: tuple[int, ...] = ()  # cube indices with data before and none tonight
    mosaic: bool = False  # recompute and write the mosaics of this chunk
    clear_mosaic: bool = False  # the chunk had mosaic data and has none tonight
    n_slots: int = 0  # the cube's time length tonight (each fork resizes to it: see night_chunk)

    @property
    def n_reads(self) -> int:
        return sum(1 for s in self.slots if s.origin == "scenes")

    @property
    def sourced(self) -> tuple[Scene, ...]:
        """The scenes this order reads from their assets."""
        if self.task is None:
            return ()
        return tuple(
            sc
            for o, ss in zip(self.slots, self.task.slots, strict=True)
            if o.origin == "scenes"
            for sc in ss.scenes
        )


@dataclass(frozen=True)
class Increment:
    orders: tuple[ChunkOrder, ...]
    slots_before: int
    slots_after: int
    first_moved: int | None  # lowest cube index whose slot changed identity (None: none)
    added_slots: tuple[int, ...]  # tonight's indices of slots that are new
    removed_slots: tuple[int, ...]  # committed indices of slots that are gone

    @property
    def cube_writes(self) -> int:
        return sum(sum(s.write for s in o.slots) + len(o.clear) for o in self.orders)

    @property
    def mosaic_writes(self) -> int:
        return sum(o.mosaic or o.clear_mosaic for o in self.orders)

    @property
    def empty(self) -> bool:
        return not self.orders and self.slots_before == self.slots_after


# --------------------------------------------------------------------------- contents


def slot_key(slot: TimeSlot) -> tuple[str, str]:
    return (slot.collection, slot.solar_day.isoformat())


def slot_meta(slot: TimeSlot) -> tuple[str, ...]:
    """What a mosaic reads of a slot besides its pixels (floats by repr: NaN equals NaN)."""
    return (
        slot.time.isoformat(),
        slot.collection,
        slot.provider,
        repr(slot.sun_elevation),
        repr(slot.off_nadir),
        slot.solar_day.isoformat(),
    )


def contents(plan: Plan) -> dict[ChunkKey, dict[int, Content]]:
    """Per chunk, per slot index: the tokens of the slot's scenes touching it."""
    tokens: dict[str, str] = {}

    def token(s: Scene) -> str:
        if s.id not in tokens:
            tokens[s.id] = scene_token(s)
        return tokens[s.id]

    return {
        (t.chunk.iy, t.chunk.ix): {ss.slot: tuple(token(s) for s in ss.scenes) for ss in t.slots}
        for t in plan.tasks
    }


def mosaic_signature(plan: Plan, chunk: Mapping[int, Content]) -> tuple:
    return (
        tuple((j, slot_meta(plan.slots[j]), chunk[j]) for j in sorted(chunk)),
        repr(plan.outputs.mosaics),
    )


def plan_digest(plan: Plan) -> str:
    """A digest of everything the committed store's arrays depend on."""
    c = contents(plan)
    text = repr(
        (
            [slot_meta(s) for s in plan.slots],
            [(k, mosaic_signature(plan, c[k])) for k in sorted(c)],
            plan.grid,
            plan.outputs.bands,
            plan.outputs.resampling,
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- the diff


def diff(old: Plan | None, new: Plan, *, reuse_cube: bool) -> Increment:
    """The work orders that turn the committed store (plan ``old``; None: empty store) into
    tonight's (plan ``new``). ``reuse_cube``: slots may be read back from the committed cube."""
    grid = new.grid
    old_c = contents(old) if old is not None else {}
    new_c = contents(new)
    tasks = {(t.chunk.iy, t.chunk.ix): t for t in new.tasks}
    orders = []
    for key in sorted(set(old_c) | set(new_c)):
        order = _order(
            grid,
            key,
            old,
            new,
            old_c.get(key, {}),
            new_c.get(key, {}),
            tasks.get(key),
            reuse_cube=reuse_cube,
        )
        if order is not None:
            orders.append(order)
    old_slots = old.slots if old is not None else ()
    old_keys = [slot_key(s) for s in old_slots]
    new_keys = [slot_key(s) for s in new.slots]
    pairs = enumerate(zip(old_keys, new_keys, strict=False))
    first = next((j for j, (a, b) in pairs if a != b), None)
    if first is None and len(new_keys) < len(old_keys):
        first = len(new_keys)
    return Increment(
        orders=tuple(orders),
        slots_before=len(old_slots),
        slots_after=len(new.slots),
        first_moved=first,
        added_slots=tuple(j for j, k in enumerate(new_keys) if k not in set(old_keys)),
        removed_slots=tuple(i for i, k in enumerate(old_keys) if k not in set(new_keys)),
    )


def _order(
    grid: TargetGrid,
    key: ChunkKey,
    old: Plan | None,
    new: Plan,
    before: Mapping[int, Content],
    tonight: Mapping[int, Content],
    task: ChunkTask | None,
    *,
    reuse_cube: bool,
) -> ChunkOrder | None:
    chunk = grid.chunk_grid(*key)
    clear = tuple(j for j in sorted(before) if j < len(new.slots) and j not in tonight)
    mosaic_before = mosaic_signature(old, before) if old is not None and before else None
    mosaic_tonight = mosaic_signature(new, tonight) if tonight else None
    mosaic = mosaic_tonight is not None and mosaic_tonight != mosaic_before
    clear_mosaic = mosaic_tonight is None and mosaic_before is not None
    if task is None:
        if not clear and not clear_mosaic:
            return None
        return ChunkOrder(chunk, None, (), clear, False, clear_mosaic, len(new.slots))
    where = {content: i for i, content in before.items()}
    wanted, kept = [], []
    for ss in task.slots:
        content = tonight[ss.slot]
        write = before.get(ss.slot) != content
        if not (write or mosaic):
            continue
        i = where.get(content) if reuse_cube else None
        origin: Literal["scenes", "cube"] = "cube" if i is not None else "scenes"
        wanted.append(SlotOrder(ss.slot, origin, i, write))
        kept.append(ss)
    if not wanted and not clear and not mosaic:
        return None
    return ChunkOrder(
        chunk,
        replace(task, slots=tuple(kept)),
        tuple(wanted),
        clear,
        mosaic,
        False,
        len(new.slots),
    )


def scenes_by_id(scenes: Iterable[Scene]) -> dict[str, Scene]:
    return {s.id: s for s in scenes}
