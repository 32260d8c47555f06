"""What the products say about their inputs: lineage attributes, the ``sources`` table of mosaics,
and releasability labels. Computed once from the plan and the scenes that contributed pixels, and
shared by ``aquila run`` (plain Zarr) and ``aquila nightly`` (Icechunk), so both write the same.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.catalog.markings import Label, Marking, Scale, SceneKey, high_water_mark
from pipeline.catalog.scene import Scene
from pipeline.errors import RunError
from pipeline.plan.calibration import radiometry_attrs
from pipeline.plan.chunks import Plan


@dataclass(frozen=True)
class Lineage:
    """The attributes each product gets. ``mosaics`` follows ``plan.outputs.mosaics``."""

    cube: dict[str, Any]
    mosaics: tuple[dict[str, Any], ...]
    label: dict[str, Any] | None
    slot_labels: tuple[dict[str, Any] | None, ...]
    times: tuple[str, ...]  # acquisition times of the scenes used, ISO 8601 UTC
    bbox: tuple[float, float, float, float]  # lon/lat


def contributors(plan: Plan, used: Iterable[str]) -> list[Scene]:
    """The plan's scenes that may have given a pixel. Chunk tasks report scene ids, which cannot
    tell two scenes of one id (in two collections) apart: every scene with a used id counts
    (labelling too high is safe, too low is the leak)."""
    used = set(used)
    return [s for s in plan.scenes if s.id in used]


def label_of(
    scenes: Iterable[Scene], markings: Mapping[SceneKey, Marking] | None, scale: Scale
) -> dict[str, Any] | None:
    """The high-water mark of ``scenes``, each by its identity (:attr:`Scene.key`); None: not
    enforced, or no scene. A scene without a marking is a bug upstream: refuse to guess."""
    if markings is None:
        return None
    chosen = list(scenes)
    if not chosen:
        return None
    missing = [s for s in chosen if s.key not in markings]
    if missing:
        s = missing[0]
        raise RunError(f"scene {s.collection}/{s.id} has no marking: the product cannot be "
                       "labelled", reason="no_marking")
    label: Label = high_water_mark((markings[s.key] for s in chosen), scale=scale)
    return label.as_dict()


def lineage(
    plan: Plan,
    used: Iterable[str],
    *,
    complete: bool,
    audience: dict[str, Any] | None,
    markings: Mapping[SceneKey, Marking] | None = None,
    scale: Scale | None = None,
    created: str | None = None,
) -> Lineage:
    """Lineage of the products of ``plan`` given the ids of the scenes that contributed;
    ``markings`` by :attr:`Scene.key`."""
    scale = scale or Scale()
    used = set(used)
    scenes = contributors(plan, used)
    by_id: dict[str, list[Scene]] = {}
    for s in scenes:
        by_id.setdefault(s.id, []).append(s)
    label = label_of(scenes, markings, scale)
    slot_labels = tuple(
        label_of((s for i in slot.scene_ids for s in by_id.get(i, ())), markings, scale)
        for slot in plan.slots
    )
    common = {
        "aquila:status": "complete" if complete else "incomplete",
        "aquila:scenes": [s.id for s in scenes],
        "aquila:providers": sorted({s.provider for s in scenes}),
        "aquila:collections": sorted({s.collection for s in scenes}),
        "aquila:created": created or dt.datetime.now(dt.UTC).isoformat(),
        "aquila:label": label,
        "aquila:audience": audience,
        "aquila:radiometry": radiometry_attrs(plan.outputs, scenes),
    }
    sources = [
        {
            "index": slot.index,
            "time": slot.time.isoformat(),
            "collection": slot.collection,
            "provider": slot.provider,
            "scenes": [sid for sid in slot.scene_ids if sid in used],
            "label": slot_labels[slot.index] if slot.index < len(slot_labels) else None,
        }
        for slot in plan.slots
    ]
    mosaics = []
    for m in plan.outputs.mosaics:
        params = {
            "q": m.q,
            "priority": list(m.priority),
            "key": m.key,
            "weights": dict(m.weights),
            "target": m.target,
            "blend_width": m.blend_width,
        }
        params = {k: v for k, v in params.items() if v not in (None, [], {}, 0)}
        mosaics.append(
            common | {"aquila:method": m.method, "aquila:parameters": params, "sources": sources}
        )
    b = plan.grid.geobox.geographic_extent.boundingbox
    return Lineage(
        cube=common | {"aquila:slot_labels": list(slot_labels)},
        mosaics=tuple(mosaics),
        label=label,
        slot_labels=slot_labels,
        times=tuple(s.datetime.isoformat() for s in scenes),
        bbox=(b.left, b.bottom, b.right, b.top),
    )
