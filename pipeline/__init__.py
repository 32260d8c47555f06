"""Aquila: many providers' STAC imagery into one calibrated Zarr cube and mosaic, on Dask.

``pipeline.load``, ``pipeline.mosaic`` and ``pipeline.run`` are the Python API
(:mod:`pipeline.api`, docs/python-api.md), imported on first use: importing a lower layer
(``import pipeline.kernels``) does not import xarray or Dask.
"""

from __future__ import annotations

from typing import Any

from pipeline._version import __version__ as __version__

_API = ("load", "mosaic", "run")


def __getattr__(name: str) -> Any:
    if name in _API:
        import pipeline.api as api

        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
