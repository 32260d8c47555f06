"""Aquila from Python, for notebooks: the same engine as ``aquila run``, as lazy xarray.

* :func:`load`: STAC items → a lazy cube ``xarray.Dataset`` (time, y, x; a variable per band),
  one fused Dask task per output chunk;
* :func:`mosaic`: items (or a loaded cube) → a lazy mosaic with its lineage layers;
* :func:`run`: a workflow spec → its products and run report, optionally on your own
  ``distributed.Client``;
* :func:`prepare`: the plan and report behind a load, before any pixel is read.

Modules, one job each: :mod:`~pipeline.api.options` (arguments → workflow spec),
:mod:`~pipeline.api.items` (the ``items`` argument → discovery), :mod:`~pipeline.api.prepare`
(discovery → plan and report), :mod:`~pipeline.api.graph` (plan → Dask arrays),
:mod:`~pipeline.api.dataset` (arrays → the stores' xarray layout), :mod:`~pipeline.api.cube`
(``load``), :mod:`~pipeline.api.composite` (``mosaic``), :mod:`~pipeline.api.workflow`
(``run``). User guide: docs/python-api.md.
"""

from pipeline.api.composite import mosaic
from pipeline.api.cube import load, load_options
from pipeline.api.prepare import LoadReport, Prepared, prepare
from pipeline.api.workflow import RunResult, run

__all__ = ["LoadReport", "Prepared", "RunResult", "load", "load_options", "mosaic", "prepare",
           "run"]
