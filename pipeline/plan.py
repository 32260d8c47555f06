"""Spec + scenes → a plan: pure data, hashable, printable. No I/O, no dask.

The plan groups scenes into time slots (one collection, one local solar day) and lists one task
per output chunk, each with the slots and scenes whose footprints touch it. The number of tasks is
the number of chunks that any scene touches; it does not grow with the number of scenes.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.catalog.scene import Scene
from pipeline.grid import ChunkGrid, TargetGrid


@dataclass(frozen=True)
class TimeSlot:
    """One time step of the cube: the scenes of one collection on one local solar day."""

    index: int
    collection: str
    solar_day: dt.date
    time: dt.datetime  # mean acquisition time of its scenes, UTC
    scene_ids: tuple[str, ...]


@dataclass(frozen=True)
class SlotScenes:
    """The scenes of one slot that touch one chunk, in merge order (earliest first, then id)."""

    slot: int
    scenes: tuple[Scene, ...]


@dataclass(frozen=True)
class ChunkTask:
    """Everything one fused chunk task needs: its grid and the scenes touching it, by slot."""

    chunk: ChunkGrid
    slots: tuple[SlotScenes, ...]

    @property
    def n_scenes(self) -> int:
        return sum(len(s.scenes) for s in self.slots)


@dataclass(frozen=True)
class MosaicOutput:
    store: Path
    method: str


@dataclass(frozen=True)
class Outputs:
    """Where the products go and how they are computed. All mosaics share one read."""

    bands: tuple[str, ...]
    resampling: str
    cube_store: Path | None
    mosaics: tuple[MosaicOutput, ...] = ()


@dataclass(frozen=True)
class Plan:
    grid: TargetGrid
    slots: tuple[TimeSlot, ...]
    tasks: tuple[ChunkTask, ...]
    scenes: tuple[Scene, ...]
    outputs: Outputs

    def summary(self) -> str:
        ny, nx = self.grid.shape
        cy, cx = self.grid.chunk_counts
        return (
            f"{len(self.scenes)} scenes in {len(self.slots)} time slots → grid {ny}×{nx} px "
            f"({self.grid.crs}, {abs(self.grid.transform[0]):g} m), {cy * cx} chunks of "
            f"{self.grid.chunk} px, {len(self.tasks)} tasks"
        )


def time_slots(scenes: Sequence[Scene]) -> tuple[TimeSlot, ...]:
    """Group scenes by (collection, local solar day); order slots by mean time, then collection."""
    groups: dict[tuple[str, dt.date], list[Scene]] = defaultdict(list)
    for s in scenes:
        groups[(s.collection, s.solar_day)].append(s)
    rows = []
    for (collection, day), members in groups.items():
        members.sort(key=lambda s: (s.datetime, s.id))
        epoch = sum(m.datetime.timestamp() for m in members) / len(members)
        mean = dt.datetime.fromtimestamp(round(epoch), tz=dt.UTC)
        rows.append((mean, collection, day, tuple(m.id for m in members)))
    rows.sort(key=lambda r: (r[0], r[1]))
    slots = []
    previous = None
    for i, (mean, collection, day, ids) in enumerate(rows):
        if previous is not None and mean <= previous:  # keep time strictly increasing
            mean = previous + dt.timedelta(seconds=1)
        previous = mean
        slots.append(TimeSlot(i, collection, day, mean, ids))
    return tuple(slots)


def make_plan(scenes: Sequence[Scene], *, grid: TargetGrid, outputs: Outputs) -> Plan:
    """Assign every scene to its slot and to the chunks its footprint touches.

    Scenes that touch no chunk of the grid are left out (``Plan.scenes`` lists those used).
    """
    touching = {s.id: grid.chunks_touching(s.footprint) for s in scenes}
    used = [s for s in scenes if touching[s.id]]
    slots = time_slots(used)
    slot_of = {sid: slot.index for slot in slots for sid in slot.scene_ids}
    ordered = sorted(used, key=lambda s: (slot_of[s.id], s.datetime, s.id))
    per_chunk: dict[tuple[int, int], dict[int, list[Scene]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for scene in ordered:
        for key in touching[scene.id]:
            per_chunk[key][slot_of[scene.id]].append(scene)
    tasks = tuple(
        ChunkTask(
            grid.chunk_grid(*key),
            tuple(SlotScenes(i, tuple(ss)) for i, ss in sorted(per_chunk[key].items())),
        )
        for key in sorted(per_chunk)
    )
    return Plan(grid, slots, tasks, tuple(ordered), outputs)
