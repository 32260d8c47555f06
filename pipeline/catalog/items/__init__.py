"""Normalisation: one STAC item becomes a :class:`~pipeline.catalog.scene.Scene`, or a reject
with a reason code. The walk is :mod:`pipeline.catalog.items.normalise`; the other modules
here are its steps."""
