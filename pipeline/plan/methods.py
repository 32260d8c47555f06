"""Mosaic methods and the lineage layers each writes. Plain constants, no dependencies."""

from __future__ import annotations

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
