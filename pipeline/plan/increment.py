"""What a nightly run must rewrite: the committed plan and tonight's plan → work orders.

Pure data, no I/O, no Dask. Both plans come from :func:`pipeline.plan.chunks.make_plan`
(the committed
one re-made from the ledger's scenes, checked against its stored digest), so "identical to one full
run over all scenes" holds by construction: every chunk the diff leaves alone already holds what
a full run would write there, and every chunk it lists is rewritten as a full run would.

For one chunk ``c`` and cube slot index ``j``, the *content* is the tuple of scene tokens of slot
``j`` that touch ``c`` (empty: the slot has no data there). The nightly cube is chunked
``(block, chunk, chunk)``: a store chunk holds ``block`` consecutive slots of one output chunk
(reading a chunk's history back costs one store read per band per block, not per slot). Then:

* a cube block of ``c`` is written when the content of any of its slots tonight differs from the
  committed content at the same index (a new or changed slot, a slot renumbered by a late
  arrival, one that lost its data, or a block cut short when slots are removed); each of its
  slots with data comes from the committed cube when the same content sat at some old index
  ``i`` (a copy: no source read), otherwise from the scenes;
* a mosaic chunk is recomputed when anything it depends on differs: the slot indices, slot
  metadata or contents of the slots touching it, or the mosaic parameters (a best-pixel mosaic
  without ``target_date`` targets the median slot time, which moves every night);
* slots the mosaic needs but the cube does not rewrite are read back from the committed cube
  when that is exact (no halo, no quality mask needed: the cube stores neither), else from the
  scenes;
* but when every mosaic can be folded (``fold``: :data:`~pipeline.plan.methods.FOLDABLE_METHODS`)
  and tonight only adds slots to the chunk (each committed slot is still there with its content,
  in the same order, perhaps renumbered by a late arrival), the mosaic chunk is updated from its
  committed layers with the new slots alone (:class:`Fold`): no other slot is read, from the
  cube or the scenes.

A scene whose assets were rewritten in place (same item, same scene record and token, new pixels:
see :mod:`pipeline.io.identity`) is passed in ``changed``: its contents tonight count as new, so
everything it touches is re-read and rewritten as for a reprocessed scene.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from pipeline.catalog.scene import Scene
from pipeline.plan.chunks import ChunkTask, Plan, TimeSlot
from pipeline.plan.grid import ChunkGrid, TargetGrid
from pipeline.plan.ledger import scene_token

Content = tuple[str, ...]
ChunkKey = tuple[int, int]


@dataclass(frozen=True)
class SlotOrder:
    """One slot of one chunk task: where its values come from and whether the cube gets them."""

    slot: int  # tonight's cube index
    origin: Literal["scenes", "cube"]
    cube_index: int | None = None  # committed index to read when origin == "cube"
    write: bool = True  # its block of the cube is rewritten tonight


@dataclass(frozen=True)
class Fold:
    """The committed mosaics of a chunk, updated: ``new`` slots folded in (tonight's indices,
    ascending), and the ``source`` of ``moved`` slots renumbered (committed index, tonight's)."""

    new: tuple[int, ...]
    moved: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class ChunkOrder:
    """Everything one nightly chunk task does. ``task`` lists only the slots it needs."""

    chunk: ChunkGrid
    task: ChunkTask | None  # None: nothing touches the chunk tonight (clears only)
    slots: tuple[SlotOrder, ...] = ()  # aligned with task.slots
    blocks: tuple[int, ...] = ()  # cube blocks (of ``block`` slots) to write, whole
    mosaic: bool = False  # recompute and write the mosaics of this chunk
    clear_mosaic: bool = False  # the chunk had mosaic data and has none tonight
    n_slots: int = 0  # the cube's time length tonight (each fork resizes to it: see night_chunk)
    block: int = 1  # slots per cube store chunk
    fold: Fold | None = None  # update the committed mosaics (None: recompose them)

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
        """Cube store chunks written (per band): one per block of a chunk."""
        return sum(len(o.blocks) for o in self.orders)

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


def contents(
    plan: Plan, token: Callable[[Scene], str] = scene_token
) -> dict[ChunkKey, dict[int, Content]]:
    """Per chunk, per slot index: the tokens of the slot's scenes touching it (``token``:
    :func:`~pipeline.plan.ledger.scene_token`, or a memo of it such as
    :class:`~pipeline.plan.ledger.Tokens`)."""
    return {
        (t.chunk.iy, t.chunk.ix): {ss.slot: tuple(token(s) for s in ss.scenes) for ss in t.slots}
        for t in plan.tasks
    }


def mosaic_signature(
    plan: Plan, chunk: Mapping[int, Content]
) -> tuple[tuple[tuple[int, tuple[str, ...], Content], ...], str]:
    return (
        tuple((j, slot_meta(plan.slots[j]), chunk[j]) for j in sorted(chunk)),
        repr(plan.outputs.mosaics),
    )


def plan_digest(plan: Plan, token: Callable[[Scene], str] = scene_token) -> str:
    """A digest of everything the committed store's arrays depend on."""
    c = contents(plan, token)
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


def diff(
    old: Plan | None,
    new: Plan,
    *,
    reuse_cube: bool,
    block: int = 1,
    token: Callable[[Scene], str] = scene_token,
    changed: frozenset[str] = frozenset(),
    fold: bool = False,
) -> Increment:
    """The work orders that turn the committed store (plan ``old``; None: empty store) into
    tonight's (plan ``new``). ``reuse_cube``: slots may be read back from the committed cube;
    ``block``: slots per cube store chunk; ``token``: see :func:`contents`; ``changed``: tokens
    of scenes whose assets were rewritten in place (same scene record, new pixels); ``fold``:
    every mosaic can be updated from its committed layers (see the module's docstring)."""
    grid = new.grid
    old_c = contents(old, token) if old is not None else {}
    new_c = contents(new, _renewed(token, changed) if changed else token)
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
            block=block,
            fold=fold,
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


def _renewed(token: Callable[[Scene], str], changed: frozenset[str]) -> Callable[[Scene], str]:
    """``token``, with the scenes rewritten in place given a token no committed content holds:
    every slot and mosaic they touch then differs, so they are re-read exactly as a reprocessed
    scene would be (never copied from the cube). Only the diff sees it: tonight's plan digest
    keeps the scene's own token, which the next night re-makes from the ledger."""

    def renewed(scene: Scene) -> str:
        t = token(scene)
        return t + "+rewritten" if t in changed else t

    return renewed


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
    block: int,
    fold: bool = False,
) -> ChunkOrder | None:
    chunk = grid.chunk_grid(*key)
    n, n_old = len(new.slots), len(old.slots) if old is not None else 0
    changed = {
        j // block
        for j in set(before) | set(tonight)
        if j < n and before.get(j, ()) != tonight.get(j, ())
    }
    if n < n_old and n % block:  # the last block is cut short: rewrite it whole
        changed.add(n // block)
    blocks = tuple(sorted(b for b in changed if b * block < n))
    mosaic_before = mosaic_signature(old, before) if old is not None and before else None
    mosaic_tonight = mosaic_signature(new, tonight) if tonight else None
    mosaic = mosaic_tonight is not None and mosaic_tonight != mosaic_before
    clear_mosaic = mosaic_tonight is None and mosaic_before is not None
    if task is None:
        if not blocks and not clear_mosaic:
            return None
        return ChunkOrder(chunk, None, (), blocks, mosaic, clear_mosaic, n, block)
    folded = _fold(old, new, before, tonight) if fold and mosaic and old else None
    where = {content: i for i, content in before.items()}
    wanted, kept = [], []
    for ss in task.slots:
        write = ss.slot // block in changed
        if not (write or (ss.slot in folded.new if folded else mosaic)):
            continue
        i = where.get(tonight[ss.slot]) if reuse_cube else None
        origin: Literal["scenes", "cube"] = "cube" if i is not None else "scenes"
        wanted.append(SlotOrder(ss.slot, origin, i, write))
        kept.append(ss)
    if not wanted and not blocks and not mosaic:
        return None
    return ChunkOrder(
        chunk,
        replace(task, slots=tuple(kept)),
        tuple(wanted),
        blocks,
        mosaic,
        clear_mosaic,
        n,
        block,
        folded,
    )


def _fold(
    old: Plan, new: Plan, before: Mapping[int, Content], tonight: Mapping[int, Content]
) -> Fold | None:
    """How the chunk's committed mosaics become tonight's, when tonight only adds slots to the
    chunk: every committed slot is there tonight with the same content, in the same order (a
    late arrival may renumber them), and the mosaic parameters are the same. Else None
    (recompose). A slot's metadata may change (a scene joining it elsewhere moves its time):
    the foldable methods' values depend on the slots' pixels and order, not on their times."""
    if not before or repr(old.outputs.mosaics) != repr(new.outputs.mosaics):
        return None
    index = {content: j for j, content in tonight.items()}
    moved, kept, last = [], set(), -1
    for i in sorted(before):
        j = index.get(before[i])
        if j is None or j <= last:
            return None
        kept.add(j)
        last = j
        if i != j:
            moved.append((i, j))
    return Fold(tuple(sorted(set(tonight) - kept)), tuple(moved))
