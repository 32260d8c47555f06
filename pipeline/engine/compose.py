"""From a mosaic spec and the chunk's slot stack to the kernels' calls. Pure NumPy, no I/O.

Each method returns a dict of 2-D/3-D arrays on the chunk's (haloed) work grid:
``bands`` (B, Y, X) float32 and ``count`` always; ``source`` (the cube's slot index) for
methods that pick one observation; ``score`` for best-pixel; ``weight`` (the main source's
share) when seams are blended.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import pipeline.kernels.reduce as km
from pipeline.kernels import blend as kblend
from pipeline.kernels import order as korder
from pipeline.kernels import scored as kscored
from pipeline.kernels import stream as ks
from pipeline.kernels.median import composite_latest, composite_median
from pipeline.plan.chunks import MosaicOutput, SlotScenes
from pipeline.plan.methods import FOLDABLE_METHODS, SINGLE_SOURCE_METHODS

SUN_ELEVATION_UNKNOWN = 45.0  # degrees: a neutral value where a provider publishes none
OFF_NADIR_UNKNOWN = 0.0


def slot_times(slots: Sequence[SlotScenes]) -> np.ndarray:
    """Acquisition times (int64 seconds) for tie-breaking: later wins, whatever the order."""
    return np.array([int(s.meta.time.timestamp()) if s.meta else i for i, s in
                     enumerate(slots)], dtype=np.int64)


def provider_ranks(slots: Sequence[SlotScenes], priority: Sequence[str]) -> np.ndarray:
    """Rank per slot: its collection's position in ``priority``; unlisted ones come last."""
    pos = {c: i for i, c in enumerate(priority)}
    return np.array(
        [pos.get(s.meta.collection if s.meta else "", len(pos)) for s in slots], dtype=np.int64
    )


def composite_method(
    spec: MosaicOutput,
    stack: np.ndarray,
    slots: Sequence[SlotScenes],
    *,
    bands: Sequence[str],
    qa_masked: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """Run one mosaic method over the (T, B, Y, X) stack; ``source`` holds cube slot indices."""
    m = spec.method
    time = slot_times(slots)
    local: np.ndarray | None = None
    extra: dict[str, np.ndarray] = {}
    if m == "median":
        out, count = composite_median(stack)
    elif m == "latest":
        out, local, count = composite_latest(stack)
    elif m == "earliest":
        out, local, count = km.composite_earliest(stack)
    elif m == "priority":
        out, local, count = km.composite_priority(
            stack, provider_ranks(slots, spec.priority), time=time
        )
    elif m in ("mean", "min", "max"):
        out, count = getattr(km, f"composite_{m}")(stack)
    elif m == "percentile":
        out, count = korder.composite_percentile(stack, float(spec.q))  # type: ignore[arg-type]
    elif m == "quality":
        out, local, count = kscored.composite_quality(stack, quality_key(spec, stack, bands),
                                                 time=time)
    elif m == "medoid":
        out, local, count = korder.composite_medoid(stack, time=time)
    elif m == "best-pixel":
        out, local, count, score = _best_pixel(spec, stack, slots, qa_masked, time)
        extra["score"] = score
    else:  # pragma: no cover - the spec model restricts methods
        raise ValueError(f"unknown mosaic method {m!r}")
    if local is not None and spec.blend_width:
        weights = kblend.blend_weights(_valid(stack), float(spec.blend_width))
        out, extra["weight"] = kblend.composite_blend(stack, local, weights)
    result = {"bands": out, "count": count, **extra}
    if local is not None:
        index = np.array([s.slot for s in slots], dtype=np.int32)
        result["source"] = np.where(local >= 0, index[np.maximum(local, 0)], -1).astype(
            np.int32
        )
    return result


def quality_key(spec: MosaicOutput, stack: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    if spec.key == "ndvi":
        return kscored.ndvi(stack, bands.index("red"), bands.index("nir"))
    return np.ascontiguousarray(stack[:, bands.index(str(spec.key))])


def _valid(stack: np.ndarray) -> np.ndarray:
    return np.isfinite(stack).all(axis=1)


def _best_pixel_metadata(spec: MosaicOutput, slots: Sequence[SlotScenes]):
    """(T,) sun elevation, off-nadir (degrees), days from the target, provider rank."""
    if spec.target is None:  # the plan sets a run-wide default
        raise ValueError("best-pixel needs a target time")
    sun = np.array([_known(s.meta.sun_elevation if s.meta else None, SUN_ELEVATION_UNKNOWN)
                    for s in slots])
    view = np.array([_known(s.meta.off_nadir if s.meta else None, OFF_NADIR_UNKNOWN)
                     for s in slots])
    days = (slot_times(slots) - spec.target.timestamp()) / 86400.0
    ranks = provider_ranks(slots, spec.priority) if spec.priority else np.zeros(
        len(slots), dtype=np.int64)
    return sun, view, days, ranks


def _best_pixel(spec, stack, slots, qa_masked, time):
    w = dict(spec.weights)
    weights = kscored.BestPixelWeights(**w) if w else kscored.BestPixelWeights()
    masked = qa_masked if qa_masked is not None else np.zeros(
        (stack.shape[0], *stack.shape[2:]), dtype=bool)
    distance = kblend.cloud_distance(masked)
    sun, view, days, ranks = _best_pixel_metadata(spec, slots)
    return kscored.composite_best_pixel(stack, distance, weights, sun, view, days, ranks, time=time)


def _known(value: float | None, default: float) -> float:
    return default if value is None or not np.isfinite(value) else float(value)


# --------------------------------------------------------------------------- streaming

class StreamState:
    """One mosaic folded one slot at a time: O(B·Y·X) memory whatever the number of slots.
    Gives the same bytes as :func:`composite_method` over the whole stack (tested)."""

    def __init__(self, spec: MosaicOutput, slots: Sequence[SlotScenes], bands: Sequence[str],
                 shape: tuple[int, int, int]) -> None:
        self.spec, self.slots, self.bands = spec, slots, bands
        nb, ny, nx = shape
        self.out = np.full(shape, np.nan, dtype=np.float32)
        self.count = np.zeros((ny, nx), dtype=np.uint16)
        self.source = np.full((ny, nx), -1, dtype=np.int32)
        self.best = np.zeros((ny, nx), dtype=np.float64)
        self.key = np.zeros((ny, nx), dtype=np.float64)
        self.acc = np.full(shape, -0.0, dtype=np.float64) if spec.method == "mean" else None
        if spec.method == "priority":
            self.ranks = provider_ranks(slots, spec.priority)
        if spec.method == "best-pixel":
            self.obs, self.w_cloud, self.d_max = _best_pixel_terms(spec, slots)

    def update(self, k: int, slot: np.ndarray, qa_masked: np.ndarray | None) -> None:
        """Fold slot k ((B, Y, X) float32, NaN = invalid) of the task into the state."""
        m = self.spec.method
        if m in ("mean", "min", "max"):
            if m == "mean":
                assert self.acc is not None  # made for 'mean'
                ks.stream_sum(slot, self.acc, self.count)
            else:
                ks.stream_extreme(slot, self.out, self.count, m == "max")
            return
        key = self.key
        if m == "latest":
            key[:] = 0.0
        elif m == "earliest":
            key[:] = -k
        elif m == "priority":
            key[:] = -float(self.ranks[k])
        elif m == "quality":
            key[:] = quality_key(self.spec, slot[None], self.bands)[0]
        elif m == "best-pixel":
            masked = qa_masked if qa_masked is not None else np.zeros(slot.shape[1:], bool)
            distance = kblend.cloud_distance(np.ascontiguousarray(masked[None]))[0]
            ks.best_pixel_key(distance, self.w_cloud, self.d_max, float(self.obs[k]), key)
        ks.stream_pick(slot, key, k, self.out, self.source, self.count, self.best)

    def result(self) -> dict[str, np.ndarray]:
        m = self.spec.method
        if m == "mean":
            assert self.acc is not None  # made for 'mean'
            ks.finish_mean(self.acc, self.count, self.out)
        result: dict[str, np.ndarray] = {"bands": self.out, "count": self.count}
        if m == "best-pixel":
            result["score"] = np.where(self.source >= 0, self.best, np.nan).astype(np.float32)
        if m in SINGLE_SOURCE_METHODS:
            index = np.array([s.slot for s in self.slots], dtype=np.int32)
            result["source"] = np.where(
                self.source >= 0, index[np.maximum(self.source, 0)], -1).astype(np.int32)
        return result


def _best_pixel_terms(spec: MosaicOutput, slots: Sequence[SlotScenes]):
    """Per-slot part of the best-pixel score, and the cloud weight and distance cap."""
    w = dict(spec.weights)
    weights = kscored.BestPixelWeights(**w) if w else kscored.BestPixelWeights()
    sun, view, days, ranks = _best_pixel_metadata(spec, slots)
    obs = kscored._best_pixel_observation_score(weights, sun, view, days, ranks)
    return obs, float(weights.cloud), float(weights.cloud_distance_max)


# --------------------------------------------------------------------------- folding


class FoldState:
    """A committed mosaic chunk taken up again as a running state, for a night's new slots to be
    folded in (:data:`~pipeline.plan.methods.FOLDABLE_METHODS`). The committed ``bands``,
    ``count`` and ``source`` are what :class:`StreamState` holds after the committed slots: min,
    max and count do not depend on the order of the slots, and latest (earliest) keeps the valid
    observation of the highest (lowest) cube index, which ``source`` records (renumbered by
    ``moved``, committed index -> tonight's, when a late arrival moved the slots). So
    :meth:`update` with each new slot, in any order, then :meth:`result` give a full run's bytes
    (tested against the stack kernels)."""

    def __init__(
        self,
        spec: MosaicOutput,
        committed: dict[str, np.ndarray],
        moved: Sequence[tuple[int, int]] = (),
    ) -> None:
        if spec.method not in FOLDABLE_METHODS or spec.blend_width:
            raise ValueError(f"a {spec.method} mosaic cannot be folded (see FOLDABLE_METHODS)")
        self.method = spec.method
        self.out = np.array(committed["bands"], dtype=np.float32, order="C")
        self.count = np.array(committed["count"], dtype=np.uint16, order="C")
        if self.method in SINGLE_SOURCE_METHODS:
            source = np.array(committed["source"], dtype=np.int32, order="C")
            if moved:
                renumber = np.arange(max(max(i for i, _ in moved), int(source.max())) + 1,
                                     dtype=np.int32)
                for i, j in moved:
                    renumber[i] = j
                source = np.where(source >= 0, renumber[np.maximum(source, 0)], -1).astype(
                    np.int32)
            self.source = source
            self.sign = 1.0 if self.method == "latest" else -1.0  # the later or the earlier wins
            self.best = self.sign * source.astype(np.float64)
            self.key = np.empty(source.shape, np.float64)

    def update(self, slot_index: int, slot: np.ndarray) -> None:
        """Fold cube slot ``slot_index`` (tonight's index; (B, Y, X) float32 on the chunk, NaN =
        invalid)."""
        m = self.method
        if m in ("min", "max"):
            ks.stream_extreme(slot, self.out, self.count, m == "max")
            return
        self.key[:] = self.sign * slot_index
        ks.stream_pick(slot, self.key, slot_index, self.out, self.source, self.count, self.best)

    def result(self) -> dict[str, np.ndarray]:
        result: dict[str, np.ndarray] = {"bands": self.out, "count": self.count}
        if self.method in SINGLE_SOURCE_METHODS:
            result["source"] = self.source
        return result
