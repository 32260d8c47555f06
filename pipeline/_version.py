"""The package version, in a module of its own: a lower layer that records it (the ingest
fingerprint in :mod:`pipeline.plan.changes`) imports this, not the root package, whose lazy
attributes lead to the top-level API (:mod:`pipeline.api`)."""

__version__ = "0.1.0"
