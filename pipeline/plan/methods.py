"""Mosaic methods and the lineage layers each writes. Plain constants, no dependencies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

METHODS = (
    "median", "latest", "earliest", "priority", "mean", "min", "max", "percentile",
    "best-pixel", "quality", "medoid",
)
SINGLE_SOURCE_METHODS = frozenset(
    {"latest", "earliest", "priority", "best-pixel", "quality", "medoid"}
)
"""Methods that pick one observation per pixel: they write ``source`` and may blend seams."""


def mosaic_layers(method: str, *, blend_width: int = 0) -> tuple[str, ...]:
    """Lineage layers a mosaic writes besides its bands and ``count``."""
    layers: list[str] = []
    if method in SINGLE_SOURCE_METHODS:
        layers.append("source")  # the cube time slot each pixel came from (-1: none)
    if method == "best-pixel":
        layers.append("score")  # the winning best-available-pixel score
    if blend_width:
        layers.append("weight")  # share of the main source in a feathered pixel
    return tuple(layers)


FOLDABLE_METHODS = frozenset({"latest", "earliest", "min", "max"})
"""Methods a nightly run updates from the committed mosaic (its bands, ``count`` and ``source``)
when tonight's slots all come after the chunk's committed ones: the committed layers are exactly
the running state a full run holds after those slots, so folding the new slots in gives a full
run's bytes. Not the others: median, percentile and medoid need every observation; blending's
weights depend on every observation; a mean's running sum is not stored (refolding rounded means
is not the rebuild's bytes); best-pixel stores its score as float32 while the running key is
float64; priority and quality could (their key follows from ``source`` or the stored bands) but
are not yet."""


class _Mosaic(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def blend_width(self) -> int: ...


def can_fold(mosaics: Sequence[_Mosaic]) -> bool:
    """True when every mosaic (at least one) is in :data:`FOLDABLE_METHODS` and unblended."""
    return bool(mosaics) and all(
        m.method in FOLDABLE_METHODS and not m.blend_width for m in mosaics
    )
