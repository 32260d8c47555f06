"""A chunk task's memo of index maps (by source grid) and sun factors, bounded in bytes.

:func:`pipeline.engine.chunk.read_scene` memoises the nearest-neighbour index maps of each source
grid (the bands, mask band and quality assets of one scene share them) and
:func:`pipeline.plan.calibration.group_factor` the per-pixel sun factors, for the whole chunk
task. Unbounded, the memo kept every scene's maps until the chunk ended: a provider whose scenes
each have their own grid in another CRS (PlanetScope-like, EPSG:32633 onto a 32632 target) costs
two int32 maps of the chunk per scene, 8 MiB at 1024 px, and the peer benchmark's chunk task held
~96 MiB of maps that were never used again (measured with tracemalloc, one thread). Bounded, the
scene being read keeps its maps (the newest entry is never dropped) and older ones leave least
recently used first. Maps made with ``numpy.broadcast_to`` (axis-aligned grids: 1-D vectors
broadcast, :func:`pipeline.engine.warp.nearest_window`) cost only their vectors and count as
such, so the cheap, often shared maps of tiled providers stay.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

#: Bytes of memoised maps and factors a chunk task keeps (beyond the newest entry).
MEMO_BUDGET = 32 * 2**20


def held_bytes(value: Any) -> int:
    """Bytes ``value`` holds in arrays: a broadcast array (a zero stride) counts its base only
    once per distinct base; dataclasses, tuples and lists are walked; anything else is 0."""
    seen: set[int] = set()

    def walk(v: Any) -> int:
        if isinstance(v, np.ndarray):
            owner = v
            while isinstance(owner.base, np.ndarray):
                owner = owner.base
            if id(owner) in seen:
                return 0
            seen.add(id(owner))
            return int(owner.nbytes)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return sum(walk(getattr(v, f.name)) for f in dataclasses.fields(v))
        if isinstance(v, tuple | list):
            return sum(walk(x) for x in v)
        return 0

    return walk(value)


class ChunkMemo(dict):
    """A ``dict`` (the memo's callers test ``key in memo``, then set and get) that keeps at
    most ``budget`` bytes of entries besides the newest, dropping the least recently used."""

    def __init__(self, budget: int = MEMO_BUDGET) -> None:
        super().__init__()
        self.budget = budget
        self._sizes: dict[Any, int] = {}
        self.held = 0

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        super().__delitem__(key)  # to the end: most recently used
        super().__setitem__(key, value)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        if key in self:
            self.__delitem__(key)
        super().__setitem__(key, value)
        size = held_bytes(value)
        self._sizes[key] = size
        self.held += size
        while self.held - size > self.budget and len(self) > 1:
            self.__delitem__(next(iter(self)))

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self.held -= self._sizes.pop(key)
